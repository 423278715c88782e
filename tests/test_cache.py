"""The result cache: durable at once, content-addressed, safe with concurrent writers, never reuses a bad file."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ropd.endpoints.cache import CacheError, ResultCache

pytestmark = pytest.mark.timeout(120)

USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "cost_usd": 0.001}
FINGERPRINT = {"model": "m", "endpoint": "http://127.0.0.1:1/v1"}


def fill(path: Path, rows: int = 300) -> None:
    with ResultCache(path) as cache:
        for i in range(rows):
            cache.put(ResultCache.make_key(i=i), "teacher", {"text": f"answer {i} " + "x" * 1000}, USAGE, FINGERPRINT)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_put_get_and_stats(tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        assert cache.get("nope") is None
        cache.put("k1", "teacher", {"text": "four"}, USAGE, FINGERPRINT)
        cache.put("k2", "judge", {"json": {"verdicts": []}}, USAGE, FINGERPRINT)
        assert cache.get("k1") == {"text": "four"}
        assert cache.get_many(["k1", "k2", "k3"]) == {"k1": {"text": "four"}, "k2": {"json": {"verdicts": []}}}
        stats = cache.stats()
    assert stats["rows"] == 2 and stats["schema_version"] == 1
    assert stats["roles"]["teacher"] == {"rows": 1, "prompt_tokens": 10, "completion_tokens": 20, "cost_usd": 0.001}


def test_keys_are_canonical_and_cover_every_part():
    assert ResultCache.make_key(a=1, b={"x": 1, "y": 2}) == ResultCache.make_key(b={"y": 2, "x": 1}, a=1)
    assert ResultCache.make_key(a=1, b=2) != ResultCache.make_key(a=1, b=3)
    assert len(ResultCache.make_key(a=1)) == 64


def test_a_put_is_durable_at_once_even_if_the_process_is_killed(tmp_path):
    path = tmp_path / "c.sqlite"
    code = (
        "import os, signal\nfrom ropd.endpoints.cache import ResultCache\n"
        f"c = ResultCache({str(path)!r})\nc.put('k', 'teacher', {{'text': 'paid for'}}, {{}}, {{}})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL
    with ResultCache(path) as cache:
        assert cache.get("k") == {"text": "paid for"}


def test_a_truncated_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "c.sqlite"
    fill(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    before = digest(path)
    with pytest.raises(CacheError, match="truncated") as caught:
        ResultCache(path)
    assert str(path) in str(caught.value) and "Move it aside" in str(caught.value)
    assert digest(path) == before


def test_garbage_and_empty_files_are_refused_and_left_untouched(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(5000))
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for path, reason in ((garbage, "not a SQLite database"), (empty, "empty")):
        before = digest(path)
        with pytest.raises(CacheError, match=reason):
            ResultCache(path)
        assert digest(path) == before
        assert not Path(f"{path}-wal").exists()


def test_damaged_pages_are_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    fill(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = os.urandom(8192)
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(CacheError, match="corrupted"):
        ResultCache(path)
    assert digest(path) == before


def test_a_sqlite_file_of_another_schema_is_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    db.close()
    with pytest.raises(CacheError, match="not a ropd cache"):
        ResultCache(foreign)
    newer = tmp_path / "newer.sqlite"
    ResultCache(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    db.close()
    with pytest.raises(CacheError, match="schema version 99"):
        ResultCache(newer)


def _writer(path: str, worker: int, rows: int) -> None:
    cache = ResultCache(path)
    for i in range(rows):
        cache.put(ResultCache.make_key(worker=worker, i=i), f"role{worker}", {"text": f"{worker}-{i}"}, USAGE, FINGERPRINT)
    cache.close()


def test_concurrent_writers_in_two_processes_and_threads_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"  # both processes also race to create it
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(path), worker, 150)) for worker in range(2)]
    for process in processes:
        process.start()
    with ResultCache(path) as cache:
        threads = [
            threading.Thread(target=lambda w=w: [cache.put(f"t{w}-{i}", "thread", {"i": i}, {}, {}) for i in range(50)]) for w in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for process in processes:
        process.join(timeout=90)
        assert process.exitcode == 0
    with ResultCache(path) as cache:
        stats = cache.stats()
        assert stats["rows"] == 2 * 150 + 3 * 50
        assert cache.get(ResultCache.make_key(worker=1, i=149)) == {"text": "1-149"}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("shared.sqlite")) == []  # no temporary files left


def test_a_transient_error_on_open_is_tried_again(tmp_path, monkeypatch):
    """Another process writing the file can make opening fail once; the cache retries instead of calling the file bad."""
    import ropd.endpoints.cache as cache_module

    path = tmp_path / "cache.sqlite"
    ResultCache(path).close()
    real_connect, failures = sqlite3.connect, []

    class Flaky:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if not failures:
                failures.append(sql)
                raise sqlite3.DatabaseError("database disk image is malformed")
            return self.db.execute(sql, *args)

        def close(self):
            self.db.close()

    def connect(*args, **kwargs):
        return real_connect(*args, **kwargs) if failures else Flaky(real_connect(*args, **kwargs))

    monkeypatch.setattr(cache_module.sqlite3, "connect", connect)
    monkeypatch.setattr(cache_module.time, "sleep", lambda seconds: None)
    with ResultCache(path) as cache:
        cache.put("k", "teacher", {"text": "x"}, {}, "fp")
    assert failures, "the first open should have failed once"
