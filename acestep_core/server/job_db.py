"""Durable job records: one SQLite row per job (request, status, times, files, error).

SQLite (standard library) makes every write one atomic transaction, so a crash or SIGKILL never
leaves a half-written record, and the same table can later move to a server database. The file lives
in the server's state folder (`<output-dir>/.state/jobs.sqlite3` by default). Only the event loop
thread writes; the connection is opened with `check_same_thread=False` so shutdown can close it from
wherever the loop ends.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    task_id      TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    request      TEXT NOT NULL,
    result       TEXT,
    error        TEXT,
    error_status INTEGER NOT NULL DEFAULT 500,
    temp_files   TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


@dataclass
class JobRow:
    task_id: str
    status: str
    created_at: float
    started_at: Optional[float]
    finished_at: Optional[float]
    request: dict
    result: Optional[dict]
    error: Optional[str]
    error_status: int
    temp_files: list[str]


def _dumps(value: Any) -> str:
    # Results carry plain numbers and strings; anything else (a Path) is stored as its text.
    return json.dumps(value, ensure_ascii=False, default=str)


class JobDB:
    """A tiny repository over the `jobs` table."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False,
                                     isolation_level=None)
        # WAL: a reader never sees a half-applied write and a killed writer leaves the last commit intact.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(sql, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def insert(self, task_id: str, status: str, created_at: float, request: dict, temp_files: list[str]) -> None:
        self._write("INSERT INTO jobs (task_id, status, created_at, request, temp_files) VALUES (?, ?, ?, ?, ?)",
                    (task_id, status, created_at, _dumps(request), _dumps(temp_files)))

    def update(self, task_id: str, **values: Any) -> None:
        """Set some columns of one job in one transaction (result / temp_files are JSON-encoded)."""
        if not values:
            return
        encoded = {k: (_dumps(v) if k in ("result", "temp_files", "request") and v is not None else v)
                   for k, v in values.items()}
        columns = ", ".join(f"{k} = ?" for k in encoded)
        self._write(f"UPDATE jobs SET {columns} WHERE task_id = ?", (*encoded.values(), task_id))

    def delete(self, task_id: str) -> None:
        self._write("DELETE FROM jobs WHERE task_id = ?", (task_id,))

    def rows(self) -> Iterator[JobRow]:
        with self._lock:
            cursor = self._conn.execute(
                "SELECT task_id, status, created_at, started_at, finished_at, request, result, error, "
                "error_status, temp_files FROM jobs ORDER BY created_at")
            fetched = cursor.fetchall()
        for row in fetched:
            yield JobRow(row[0], row[1], row[2], row[3], row[4], _loads(row[5], {}), _loads(row[6], None),
                         row[7], int(row[8]), _loads(row[9], []))


def _loads(text: Optional[str], default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default
