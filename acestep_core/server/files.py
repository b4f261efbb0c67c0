"""File-system boundaries of the server: which files it may serve, read and write.

- /v1/audio serves only audio files inside the result folder: the requested path is resolved
  (symlinks followed) and must still lie inside it, no component may be `..` or a symlink, and the
  upload folder inside it is off limits.
- JSON requests may name source audio only inside the result folder (earlier results, e.g. for a
  chained repaint) or the configured input folders (ComfyUI's input directory).
- Uploads are streamed to disk with a hard size cap.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
import uuid
from pathlib import Path
from typing import Iterable, Optional

from .params import FieldError

AUDIO_MEDIA_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".aac": "audio/aac",
}
UPLOAD_SUFFIXES = {".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif"}
AUDIO_URL_PREFIX = "/v1/audio?path="


class UploadTooLarge(ValueError):
    def __init__(self, field_name: str, limit: int):
        super().__init__(f"{field_name}: upload exceeds the {limit // (1024 * 1024)} MiB limit "
                         "(ACESTEP_MAX_UPLOAD_MB)")
        self.field = field_name


def audio_url(path: Path) -> str:
    """The official relative download URL for a result file (clients prefix it with api_url)."""
    return AUDIO_URL_PREFIX + urllib.parse.quote(str(path), safe="")


def is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _has_symlink_below(path: Path, root: Path) -> bool:
    """True if any component between root (exclusive) and path (inclusive) is a symlink."""
    current = path
    while current != root and is_within(current, root):
        if current.is_symlink():
            return True
        current = current.parent
    return False


def unusable(path: Path) -> bool:
    """True when the file system cannot look this client-given name up at all: a NUL byte, a name
    too long for it. (Path methods raise then instead of answering False; callers answer 400/404.)"""
    try:
        os.lstat(path)
    except ValueError:
        return True
    except OSError as exc:
        return exc.errno not in (errno.ENOENT, errno.ENOTDIR)
    return False


def _resolve(path: Path) -> Optional[Path]:
    """path.resolve(), or None for a symlink loop or a name the file system refuses."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def resolve_served_file(raw_path: str, result_root: Path, upload_dir: Path) -> Path:
    """Map a /v1/audio `path` to a file, or raise PermissionError (403) / FileNotFoundError (404)."""
    if not raw_path or "\x00" in raw_path:
        raise PermissionError("path is empty or malformed")
    candidate = Path(raw_path)
    if ".." in candidate.parts:
        raise PermissionError("path must not contain '..'")
    root = result_root.resolve()
    lexical = candidate if candidate.is_absolute() else root / candidate
    lexical = Path(os.path.normpath(lexical))
    if not is_within(lexical, root):
        raise PermissionError("path is outside the result folder")
    if unusable(lexical):
        raise FileNotFoundError("audio file not found (it may have expired)")
    if _has_symlink_below(lexical, root):
        raise PermissionError("path is outside the result folder")
    resolved = _resolve(lexical)
    if resolved is None or not is_within(resolved, root) or is_within(resolved, upload_dir.resolve()):
        raise PermissionError("path is outside the result folder")
    if resolved.suffix.lower() not in AUDIO_MEDIA_TYPES:
        raise PermissionError("only audio files are served")
    if not resolved.is_file():
        raise FileNotFoundError("audio file not found (it may have expired)")
    return resolved


def resolve_request_audio(field_name: str, raw: str, result_root: Path, input_dirs: Iterable[Path]) -> Path:
    """Resolve src_audio_path / reference_audio_path given in a JSON or form request."""
    text = raw.strip()
    # Accept the result URL exactly as /query_result returned it, with or without a host prefix.
    marker = text.find(AUDIO_URL_PREFIX)
    if marker >= 0:
        text = urllib.parse.unquote(text[marker + len(AUDIO_URL_PREFIX):])
    candidate = Path(text)
    if ".." in candidate.parts:
        raise FieldError(field_name, "must not contain '..'")
    if "\x00" in text:
        raise FieldError(field_name, "contains a NUL byte; give the file's name as plain text")
    roots = [result_root.resolve()] + [Path(d).resolve() for d in input_dirs]
    for root in roots:
        lexical = Path(os.path.normpath(candidate if candidate.is_absolute() else root / candidate))
        if unusable(lexical):
            raise FieldError(field_name, "is not a file name this server's file system can read (a name "
                                         "too long?); upload the file as multipart field "
                                         "'src_audio' / 'reference_audio' instead")
        resolved = _resolve(lexical)
        if resolved is not None and is_within(resolved, root) and resolved.is_file():
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise FieldError(field_name, f"no such file inside the folders this server reads from ({allowed}); "
                                 "upload the file as multipart field 'src_audio' / 'reference_audio' instead")


def new_upload_path(upload_dir: Path, field_name: str, filename: Optional[str]) -> Path:
    suffix = Path(filename or "").suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        suffix = ".bin"  # the decoder sniffs the content; the name never comes from the client
    upload_dir.mkdir(parents=True, exist_ok=True)
    return upload_dir / f"{field_name}_{uuid.uuid4().hex}{suffix}"


async def stream_part_to_file(part, dest: Path, limit: int, field_name: str) -> int:
    """Copy one multipart part to dest, refusing more than `limit` bytes."""
    written = 0
    try:
        with open(dest, "wb") as fh:
            while True:
                chunk = await part.read_chunk(256 * 1024)
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(field_name, limit)
                fh.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written


def remove_quietly(paths: Iterable[str | Path]) -> None:
    for p in paths:
        try:
            Path(p).unlink(missing_ok=True)
        except OSError:
            pass
