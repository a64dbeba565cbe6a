"""The pending store stays bounded: by age, by count, by bytes, and stray files go."""

from __future__ import annotations

import os
import time

from app_web.pending import PendingStore


def pid(i: int) -> str:
    return f"{i:032x}"


def age(store: PendingStore, prediction_id: str, seconds: float) -> None:
    t = time.time() - seconds
    for suffix in (".json", ".photo"):
        os.utime(store.dir / f"{prediction_id}{suffix}", (t, t))


def test_round_trip_and_expiry(tmp_path):
    s = PendingStore(tmp_path, ttl=60, keep=10, max_bytes=10_000)
    s.put(pid(1), {"prediction": "Soup"}, b"photo")
    assert s.get(pid(1)) == ({"prediction": "Soup"}, b"photo")
    assert s.get("../../etc/passwd") is None and s.get(pid(2)) is None
    age(s, pid(1), 61)
    assert s.get(pid(1)) is None, "expired entries are not answered"
    s.put(pid(3), {}, b"x")
    s.prune()  # puts prune every PRUNE_EVERY writes; the scan itself is what is tested
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{pid(3)}.json", f"{pid(3)}.photo"]


def test_count_and_bytes_bounds_drop_the_oldest(tmp_path):
    s = PendingStore(tmp_path, ttl=3600, keep=3, max_bytes=10_000)
    for i in range(5):
        s.put(pid(i), {}, b"x" * 100)
        age(s, pid(i), 100 - i)
    s.prune()
    assert [i for i in range(5) if s.get(pid(i))] == [2, 3, 4]
    big = PendingStore(tmp_path / "b", ttl=3600, keep=100, max_bytes=2500)
    for i in range(5):
        big.put(pid(i), {}, b"x" * 1000)
        age(big, pid(i), 100 - i)
    big.prune()
    assert [i for i in range(5) if big.get(pid(i))] == [3, 4]


def test_stray_files_are_removed(tmp_path):
    s = PendingStore(tmp_path, ttl=60, keep=10, max_bytes=10_000)
    (tmp_path / f"{pid(7)}.photo").write_bytes(b"orphan")
    (tmp_path / ".tmp-abc").write_bytes(b"half written")
    old = time.time() - 120
    os.utime(tmp_path / f"{pid(7)}.photo", (old, old))
    os.utime(tmp_path / ".tmp-abc", (old, old))
    s.prune()
    assert list(tmp_path.iterdir()) == []


def test_puts_prune_now_and_then(tmp_path):
    from app_web.pending import PRUNE_EVERY

    s = PendingStore(tmp_path, ttl=3600, keep=10, max_bytes=10**9)
    for i in range(PRUNE_EVERY + 1):
        s.put(pid(i), {}, b"x")
    assert len(list(tmp_path.glob("*.json"))) == 10, "the scan on write 26 kept the newest 10"
