"""A durable, content-addressed store of paid API results: teacher answers, rubrics, verdicts.

One SQLite file in WAL mode. Every `put` is its own committed transaction (synchronous=FULL), so a
result survives the process being killed the moment after it arrived. Several processes and
threads may write at once. The file records its schema version; a truncated or corrupted file, or
a SQLite file of another schema, raises CacheError naming the path — it is never reused or
overwritten, because it may hold results that cost money.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
APPLICATION = "ropd-result-cache"
SQLITE_MAGIC = b"SQLite format 3\x00"
OPEN_ATTEMPTS = 5  # a transient error while another process writes the file is retried
BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE results (
    key TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    value TEXT NOT NULL,
    usage TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX results_role ON results (role);
"""


def usage_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(role, recorded usage) of every result in a cache file, opened read-only (never created or changed).

    Raises sqlite3.DatabaseError when the file is not a readable cache; a row whose usage does not parse gives {}.
    """
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT role, usage FROM results").fetchall()
    finally:
        db.close()
    return [(role, _usage_dict(usage)) for role, usage in rows]


def _usage_dict(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class CacheError(RuntimeError):
    """A cache file that cannot be used safely; the message names the path and what to do."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class ResultCache:
    """Content-addressed results in one SQLite file, safe for concurrent writers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists() or self.path.is_dir():
            self._create()
        self._check_header()
        self._db = self._connect()
        self._check_schema()

    # --- keys ---------------------------------------------------------------------------------------

    @staticmethod
    def make_key(**parts: Any) -> str:
        """sha256 of the canonical JSON of the parts."""
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()

    # --- reading and writing ------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        """The stored value for `key`, or None."""
        row = self._run(lambda db: db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone())
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """Stored values for those of `keys` that are present."""
        if not keys:
            return {}
        found: dict[str, dict] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._run(lambda db, c=chunk, m=marks: db.execute(f"SELECT key, value FROM results WHERE key IN ({m})", c).fetchall())
            found.update({k: json.loads(v) for k, v in rows})
        return found

    def put(self, key: str, role: str, value: dict, usage: dict, fingerprint: dict) -> None:
        """Store a result and commit at once (a later put of the same key replaces it)."""
        record = (key, role, canonical_json(value), canonical_json(usage), canonical_json(fingerprint), time.time())

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO results (key, role, value, usage, fingerprint, created) VALUES (?,?,?,?,?,?)", record)

        self._run(write)

    def stats(self) -> dict:
        """Rows, tokens and cost per role, and the file's path and schema version."""
        rows = self._run(lambda db: db.execute("SELECT role, usage FROM results").fetchall())
        roles: dict[str, dict[str, float]] = {}
        for role, usage_json in rows:
            usage = json.loads(usage_json)
            entry = roles.setdefault(role, {"rows": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
            entry["rows"] += 1
            for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
                entry[name] += usage.get(name, 0) or 0
        return {"path": str(self.path), "schema_version": SCHEMA_VERSION, "rows": len(rows), "roles": roles}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- opening safely -------------------------------------------------------------------------------

    def _create(self) -> None:
        """Build a fresh cache in a temporary file and link it into place, so the path never holds half a cache."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise CacheError(f"cache path {self.path} is a directory; pass a file path (e.g. {self.path / 'cache.sqlite'})")
        fd, tmp = tempfile.mkstemp(prefix=".ropd-cache-", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            db = sqlite3.connect(tmp)
            with db:
                db.executescript(SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))])
            db.close()
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                os.link(tmp, self.path)
        finally:
            os.unlink(tmp)

    def _problem(self, what: str) -> CacheError:
        return CacheError(
            f"cache file {self.path} {what}. It was left untouched: it may hold paid results. "
            f"Move it aside to start a fresh cache (results in it will be fetched again), or point "
            f"--cache at another file."
        )

    def _check_header(self) -> None:
        with self.path.open("rb") as f:
            header = f.read(100)
        size = self.path.stat().st_size
        if not header:
            raise self._problem("is empty (truncated?)")
        if not header.startswith(SQLITE_MAGIC):
            raise self._problem("is not a SQLite database (corrupted or not a cache)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        wal = Path(f"{self.path}-wal")
        if len(header) < 100 or (pages and size < pages * page_size and not (wal.exists() and wal.stat().st_size)):
            raise self._problem(f"is truncated ({size} bytes; its header says {pages} pages of {page_size})")

    def _connect(self) -> sqlite3.Connection:
        """Open the database in WAL mode. Another process writing it at that moment can make the first statements fail
        with a transient error (seen as "database disk image is malformed" while two bench runs shared one cache), so a
        failed open is tried again a few times before the file is reported as unusable."""
        for attempt in range(OPEN_ATTEMPTS):
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                if attempt == OPEN_ATTEMPTS - 1:
                    raise self._problem(f"cannot be opened ({exc})") from None
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _check_schema(self) -> None:
        try:
            self._verify_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._problem(f"is corrupted ({exc})") from None
        except CacheError:
            self._db.close()
            raise

    def _verify_schema(self) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables or "results" not in tables:
            raise self._problem(f"is a SQLite database but not a ropd cache (tables: {', '.join(sorted(tables)) or 'none'})")
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise self._problem("is a SQLite database but not a ropd cache")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise self._problem(f"has schema version {meta.get('schema_version')}; this ropd reads version {SCHEMA_VERSION}")
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise self._problem(f"is corrupted (SQLite quick_check: {check})")

    def _run(self, action):
        with self._lock:
            try:
                return action(self._db)
            except sqlite3.DatabaseError as exc:
                raise self._problem(f"failed: {exc}") from None
