"""Audio files: every output format written and decoded back, input conversion, tags, atomic saves."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from acestep_core import audio_io
from acestep_core.audio_io import encode_audio_bytes, load_audio, save_audio
from acestep_core.errors import InputError
from conftest import load_golden

SR = 48000


def _tone(seconds: float = 1.0, sr: int = SR, freqs=(440.0, 660.0), amp=(0.5, 0.3)) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.stack([a * torch.sin(2 * math.pi * f * t) for f, a in zip(freqs, amp)]).float()


def _write_with_pyav(path: Path, planar: np.ndarray, sr: int, codec="pcm_f32le", sample_format="flt", container="wav"):
    """Write a test input file directly with PyAV (independent of save_audio)."""
    layout = {1: "mono", 2: "stereo", 4: "quad", 6: "5.1"}[planar.shape[0]]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        stream.format = sample_format
        stream.codec_context.options = {"strict": "experimental"}  # FFmpeg's own vorbis encoder
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _dominant_hz(signal: torch.Tensor, sr: int = SR) -> float:
    spectrum = torch.fft.rfft(signal.double() * torch.hann_window(signal.shape[-1], dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * sr / signal.shape[-1]


def _probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        tags = dict(container.metadata)
        tags.update(stream.metadata)
        return {"codec": stream.codec_context.name, "rate": stream.rate, "channels": stream.channels, "tags": tags}


# ---- lossless round trips ------------------------------------------------------------------

@pytest.mark.parametrize(
    "fmt, quality, codec, step",
    [
        ("wav", 16, "pcm_s16le", 2**-15),
        ("wav", 24, "pcm_s24le", 2**-23),
        ("wav", 32, "pcm_f32le", 0.0),
        ("flac", 16, "flac", 2**-15),
        ("flac", 24, "flac", 2**-23),
    ],
)
def test_lossless_round_trip(tmp_path, fmt, quality, codec, step):
    audio = _tone(0.5)
    path = save_audio(tmp_path / f"out.{fmt}", audio, format=fmt, quality=quality)
    assert path == tmp_path / f"out.{fmt}" and path.is_file()
    info = _probe(path)
    assert (info["codec"], info["rate"], info["channels"]) == (codec, SR, 2)
    back = load_audio(path)
    assert back.shape == audio.shape and back.dtype == torch.float32
    # Quantisation error at most one step of the bit depth (exact for 32-bit float).
    assert (back - audio).abs().max() <= step


def test_golden_source_audio_survives_float_wav(tmp_path):
    src = load_golden("source_audio")["src_a"]
    path = save_audio(tmp_path / "src.wav", src, format="wav", quality=32)
    torch.testing.assert_close(load_audio(path), src, atol=0, rtol=0)


# ---- lossy round trips ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "fmt, quality, codec",
    [("mp3", "V0", "mp3float"), ("mp3", "128k", "mp3float"), ("mp3", "320k", "mp3float"), ("opus", "128k", "opus")],
)
def test_lossy_round_trip(tmp_path, fmt, quality, codec):
    audio = _tone(1.0)
    path = save_audio(tmp_path / f"out.{fmt}", audio, format=fmt, quality=quality)
    info = _probe(path)
    assert (info["codec"], info["rate"], info["channels"]) == (codec, SR, 2)
    back = load_audio(path)
    assert back.shape[0] == 2 and abs(back.shape[1] - audio.shape[1]) <= 2048  # encoder padding at most
    n = min(back.shape[1], audio.shape[1])
    for ch in range(2):  # each channel keeps its own tone (no swap, no mix)
        corr = torch.corrcoef(torch.stack([back[ch, 2000 : n - 2000], audio[ch, 2000 : n - 2000]]))[0, 1]
        assert corr > 0.99, (ch, float(corr))


def test_aac_round_trip_keeps_each_channel_after_the_priming_delay(tmp_path):
    """Raw AAC (ADTS, the official saver's .aac): the decoder returns the encoder's 1024 priming samples."""
    audio = _tone(1.0)
    path = save_audio(tmp_path / "out.aac", audio, format="aac", metadata={"title": "not stored"})
    info = _probe(path)
    assert (info["codec"], info["rate"], info["channels"]) == ("aac", SR, 2)
    back = load_audio(path)[:, 1024:]
    n = min(back.shape[1], audio.shape[1])
    assert n >= audio.shape[1] - 1024
    for ch in range(2):
        corr = torch.corrcoef(torch.stack([back[ch, 2000 : n - 2000], audio[ch, 2000 : n - 2000]]))[0, 1]
        assert corr > 0.99, (ch, float(corr))


def test_mp3_quality_changes_the_bitrate(tmp_path):
    noise = torch.rand(2, SR * 2, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    low = save_audio(tmp_path / "low.mp3", noise, quality="128k").stat().st_size
    high = save_audio(tmp_path / "high.mp3", noise, quality="320k").stat().st_size
    assert 1.8 < high / low < 3.0  # close to 320/128


# ---- input conversion ----------------------------------------------------------------------

def test_mono_input_becomes_stereo(tmp_path):
    mono = _tone(0.5, freqs=(440.0,), amp=(0.5,))
    path = tmp_path / "mono.wav"
    _write_with_pyav(path, mono.numpy(), SR)
    back = load_audio(path)
    assert back.shape == (2, mono.shape[1])
    torch.testing.assert_close(back[0], mono[0], atol=0, rtol=0)
    torch.testing.assert_close(back[1], mono[0], atol=0, rtol=0)


def test_44k1_input_is_resampled_to_48k(tmp_path):
    sr_in = 44100
    source = _tone(1.0, sr=sr_in)
    path = tmp_path / "cd.flac"
    _write_with_pyav(path, source.numpy(), sr_in, codec="flac", sample_format="s32", container="flac")
    back = load_audio(path)
    assert back.shape[0] == 2 and abs(back.shape[1] - SR) <= 2
    expected = _tone(back.shape[1] / SR)[:, : back.shape[1]]
    # Away from the edges the resampled tones match the ideal 48 kHz tones closely.
    assert (back[:, 1000:-1000] - expected[:, 1000:-1000]).abs().max() < 1e-3


def test_more_than_two_channels_keep_the_first_two(tmp_path):
    quad = np.stack([np.full(4800, v, dtype=np.float32) for v in (0.1, -0.2, 0.3, -0.4)])
    path = tmp_path / "quad.wav"
    _write_with_pyav(path, quad, SR)
    back = load_audio(path)
    assert back.shape == (2, 4800)
    torch.testing.assert_close(back, torch.from_numpy(quad[:2]), atol=0, rtol=0)


def test_loaded_audio_is_clamped(tmp_path):
    loud = np.stack([np.full(960, 1.5, dtype=np.float32), np.full(960, -2.0, dtype=np.float32)])
    path = tmp_path / "loud.wav"
    _write_with_pyav(path, loud, SR)
    back = load_audio(path)
    assert back[0].eq(1.0).all() and back[1].eq(-1.0).all()


def test_load_from_bytes_and_encode_to_bytes():
    audio = _tone(0.25)
    data = encode_audio_bytes(audio, format="flac", quality=24)
    assert data[:4] == b"fLaC"
    back = load_audio(data)
    assert (back - audio).abs().max() <= 2**-23
    assert encode_audio_bytes(audio, format="mp3")[:3] in (b"ID3", b"\xff\xfb")


@pytest.mark.parametrize(
    "name, codec, sample_format, container",
    [("in.ogg", "vorbis", "fltp", "ogg"), ("in.m4a", "aac", "fltp", "mp4")],
)
def test_load_other_lossy_inputs(tmp_path, name, codec, sample_format, container):
    path = tmp_path / name
    _write_with_pyav(path, _tone(0.5).numpy(), SR, codec=codec, sample_format=sample_format, container=container)
    back = load_audio(path)
    assert back.shape[0] == 2 and abs(back.shape[1] - SR // 2) <= 2048
    # Encoder delay differs between codecs/containers: compare the tones, not sample positions.
    assert [_dominant_hz(back[ch]) for ch in range(2)] == pytest.approx([440.0, 660.0], abs=3.0)


# ---- metadata ------------------------------------------------------------------------------

TAGS = {"title": "Night Drive", "artist": "ACE-Step 1.5", "comment": "seed 42", "genre": "synthwave"}


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "wav"])
def test_metadata_is_written(tmp_path, fmt):
    extra = {} if fmt == "wav" else {"acestep_bpm": "120"}  # RIFF INFO has no free-form keys
    path = save_audio(tmp_path / f"tagged.{fmt}", _tone(0.2), format=fmt, metadata={**TAGS, **extra})
    tags = {k.lower(): v for k, v in _probe(path)["tags"].items()}
    for key, value in {**TAGS, **extra}.items():
        assert tags.get(key) == value, (key, tags)


def test_bad_metadata_is_refused(tmp_path):
    with pytest.raises(InputError, match="tag name"):
        save_audio(tmp_path / "x.mp3", _tone(0.1), metadata={"a=b": "c"})
    assert not any(tmp_path.iterdir())


# ---- refusals and atomic writes ------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "aiff"}, "unsupported audio format"),
        ({"format": "mp3", "quality": "999k"}, "mp3 quality"),
        ({"format": "wav", "quality": 8}, "wav bit depth"),
        ({"format": "flac", "quality": 32}, "flac bit depth"),
        ({"format": "opus", "quality": "1k"}, "opus bitrate"),
        ({"format": "opus", "sample_rate": 44100}, "48000"),
        ({"format": "mp3", "sample_rate": 96000}, "96000"),
        ({"format": "aac", "quality": "1k"}, "aac bitrate"),
        ({"format": "aac", "sample_rate": 7000}, "aac cannot store 7000 Hz"),
    ],
)
def test_unsupported_choices_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        save_audio(tmp_path / "out.bin", _tone(0.1), **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(3, 100), "channels"),
        (torch.zeros(2, 0), "no samples"),
        (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), "NaN"),
    ],
)
def test_bad_audio_is_refused(tmp_path, audio, message):
    with pytest.raises(InputError, match=message):
        save_audio(tmp_path / "out.wav", audio, format="wav")
    assert not any(tmp_path.iterdir())


def test_mono_and_clipping_on_save(tmp_path):
    path = save_audio(tmp_path / "m.wav", torch.full((480,), 3.0), format="wav", quality=32)
    info = _probe(path)
    assert info["channels"] == 1
    back = load_audio(path)
    assert back.shape == (2, 480) and back.eq(1.0).all()


def test_failed_encode_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "song.mp3"
    target.write_bytes(b"previous song")

    def broken_encode(handle, *args, **kwargs):
        handle.write(b"half an mp3")
        raise av.error.InvalidDataError(1094995529, "simulated encoder failure")

    monkeypatch.setattr(audio_io, "_encode", broken_encode)
    with pytest.raises(InputError, match="cannot encode mp3"):
        save_audio(target, _tone(0.1))
    assert target.read_bytes() == b"previous song"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mp3"]


def test_interrupted_save_cleans_up(tmp_path, monkeypatch):
    def interrupted(handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(audio_io, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_audio(tmp_path / "a.flac", _tone(0.1), format="flac")
    assert not any(tmp_path.iterdir())


def test_save_replaces_an_existing_file(tmp_path):
    target = tmp_path / "song.wav"
    target.write_bytes(b"old")
    save_audio(target, _tone(0.1), format="wav")
    assert load_audio(target).shape == (2, 4800)
    assert target.stat().st_mode & 0o777 != 0o600  # not left with mkstemp's private mode


def test_save_into_missing_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="folder does not exist"):
        save_audio(tmp_path / "nope" / "x.wav", _tone(0.1), format="wav")


# ---- load errors ---------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_load_directory(tmp_path):
    with pytest.raises(InputError, match="not an audio file"):
        load_audio(tmp_path)


def test_load_undecodable(tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InputError, match="cannot decode|no audio"):
        load_audio(junk)
    with pytest.raises(InputError, match="cannot decode|no audio"):
        load_audio(b"definitely not audio" * 20)


def test_load_empty(tmp_path):
    with pytest.raises(InputError, match="empty"):
        load_audio(b"")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        load_audio(empty)


def test_load_wav_without_samples(tmp_path):
    path = tmp_path / "silent_header.wav"
    with wave.open(str(path), "wb") as out:  # a valid header with an empty data chunk
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(b"")
    with pytest.raises(InputError, match="no audio samples"):
        load_audio(path)


def test_path_is_not_an_ffmpeg_protocol(tmp_path, monkeypatch):
    # A file whose name FFmpeg would read as its concat protocol must be read as that plain file.
    monkeypatch.chdir(tmp_path)
    for name in ("a.wav", "b.wav"):
        _write_with_pyav(tmp_path / name, _tone(0.5).numpy(), SR)
    literal = "concat:a.wav|b.wav"
    _write_with_pyav(tmp_path / literal, _tone(0.1).numpy(), SR)
    assert load_audio(literal).shape == (2, 4800)
