"""How long an audio file is, found cheaply: from the container header, else by counting decoded
samples and stopping as soon as a limit is passed (an hour-long file never gets decoded in full).

The server uses it to refuse a source longer than the engine can use before it queues the job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .audio_io import declared_seconds
from .errors import InputError

# A header may round a little; a file this much over the limit by its header is still decoded to count.
HEADER_SLACK_S = 0.5


class AudioTooLong(InputError):
    """The audio is longer than the caller's limit."""

    def __init__(self, what: str, seconds: Optional[float], limit_s: float):
        length = f"{seconds:.1f} s" if seconds is not None else f"more than {limit_s:g} s"
        super().__init__(f"{what}: the audio is {length} long; this server accepts at most {limit_s:g} s "
                         f"(trim it, or cut out the part you need, before sending it)")
        self.seconds = seconds
        self.limit_s = limit_s


def audio_seconds(path: str | os.PathLike, limit_s: float, what: str = "audio") -> float:
    """Length of the audio file in seconds; raises AudioTooLong past `limit_s`, InputError if unreadable.

    A header that declares more than the limit is refused at once. Otherwise the first audio stream is
    decoded (no resampling) and its samples counted, stopping at the limit, so a lying header costs at
    most `limit_s` seconds of decoding.
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise InputError(f"{what}: the file contains no audio stream")
            declared = declared_seconds(container)
            if declared is not None and declared > limit_s + HEADER_SLACK_S:
                raise AudioTooLong(what, declared, limit_s)
            stream = container.streams.audio[0]
            samples = 0
            rate = stream.rate or stream.codec_context.sample_rate or 0
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                samples += frame.samples
                if rate and samples / rate > limit_s:
                    raise AudioTooLong(what, None, limit_s)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        # strerror leaves out the (server-side) file name FFmpeg puts in str(exc).
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{what}: could not be decoded as audio ({reason}); use wav, flac, mp3, ogg, opus "
                         f"or m4a") from None
    if not rate or samples == 0:
        raise InputError(f"{what}: the audio decoded to zero samples")
    return samples / rate
