"""Numbers several modules share: the audio and latent rates of ACE-Step 1.5 (docs/architecture.md).

The VAE maps 48 kHz stereo audio to 64-channel latents, one latent frame per 1920 samples (25 frames/s);
the 5 Hz LM writes one audio code per 5 latent frames.
"""

SAMPLE_RATE = 48000  # Hz, what the VAE takes and gives
AUDIO_CHANNELS = 2
HOP = 1920  # audio samples per latent frame
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 25 latent frames per second
LATENT_CHANNELS = 64
ADAPTER_SCALE_MAX = 10.0  # |LoRA / LoKr strength| the engine, the CLI and the ComfyUI LoRA node take
