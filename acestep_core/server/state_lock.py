"""One server per state folder: an exclusive lock on `<state_dir>/server.lock`.

A server's start-up reports the last run's unfinished jobs as failed and deletes uploads no job owns;
a second server on the same folder would do that to the first one's live jobs. The lock is an OS
lock on an open file (flock on POSIX, msvcrt.locking on Windows), so a killed server never leaves it
held; the file itself stays (deleting it would let two servers lock two different files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

LOCK_NAME = "server.lock"


class StateFolderInUseError(Exception):
    """Another server holds this state folder (`serve` exits with this message; HTTP clients get
    `public`, a 503 that names no server folder)."""

    public = ("another ACE-Step server is using this server's state folder (job records and uploads); "
              "stop the other server, or give each its own output folder (ACESTEP_STATE_DIR)")


class StateLock:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StateFolderInUseError at once (never waits)."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            raise StateFolderInUseError(
                f"another ACE-Step server is using the state folder {self.path.parent} (its job records "
                "and uploads); stop it, or give this one another --output-dir (or ACESTEP_STATE_DIR)") from None
        # Who holds it, for a person looking at the folder.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _unlock(fd)
            finally:
                os.close(fd)


if os.name == "nt":
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
