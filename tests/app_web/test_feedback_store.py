"""The feedback store on real SQLite and a real PostgreSQL cluster: the same tests,
both backends (writes, the one-verdict rule under concurrency, labels, counts)."""

from __future__ import annotations

import threading

import pytest

from app_web.feedback_store import FeedbackStore, Row


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = FeedbackStore("", tmp_path)
        assert s.path == tmp_path / "feedback.sqlite3"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        s = FeedbackStore(cluster.url, tmp_path)
        with s._tx() as cur:
            cur.execute("DELETE FROM predictions")
    yield s
    s.close()


def row(i: int, queue="random", p=0.5, **kw) -> Row:
    return Row(id=f"{i:032x}", variant="production", model_version="v1", predicted="Soup",
               confidence=0.8, predicted_at=1000.0 + i, photo_sha256="a" * 64, photo_ext="jpg",
               queue=queue, sampling_probability=p, review_key=i / 100, **kw)


def test_insert_get_and_no_overwrite(store):
    assert store.insert(row(1))
    assert not store.insert(row(1, queue="flagged")), "a second insert changes nothing"
    got = store.get(f"{1:032x}")
    assert got == row(1)
    assert store.get("f" * 32) is None


def test_one_verdict_even_when_racing(store):
    store.insert(row(2))
    results = []
    barrier = threading.Barrier(8)

    def give(i):
        barrier.wait()
        results.append(store.set_verdict(f"{2:032x}", "wrong", f"label-{i}", None, 5.0))

    threads = [threading.Thread(target=give, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.get(f"{2:032x}").user_label.startswith("label-")


def test_labels_queues_and_counts(store):
    for i in range(5):
        store.insert(row(10 + i, queue="random" if i < 3 else "low_confidence", p=0.1))
    store.insert(row(20, queue="flagged", p=None, verdict="wrong", user_label="Rice"))
    assert [r.id for r in store.queue("random", 2)] == [f"{10:032x}", f"{11:032x}"]
    assert store.set_label(f"{10:032x}", "Soup", "operator", 9.0)
    assert store.set_label(f"{13:032x}", "Rice", "operator", 9.0)
    assert not store.set_label("e" * 32, "Soup", "operator", 9.0)
    assert [r.id for r in store.queue("random", 5)] == [f"{11:032x}", f"{12:032x}"]
    sums = {q: rest for _, _, q, *rest in store.sampled_sums()}
    # random: 3 kept, 1 labelled (right, p 0.1); low_confidence: 2 kept, 1 labelled (wrong).
    assert sums["random"] == pytest.approx([3, 1, 10.0, 10.0, 100.0, 100.0])
    assert sums["low_confidence"] == pytest.approx([2, 1, 10.0, 0.0, 100.0, 0.0])
    counts = {(k, q): n for _, _, k, q, n in store.counts()}
    assert counts == {("none", "random"): 3, ("none", "low_confidence"): 2, ("wrong", "flagged"): 1}
    assert sorted(store.labelled_counts()) == [("production", "v1", "low_confidence", 1),
                                               ("production", "v1", "random", 1)]
    assert {r.id for r in store.labelled()} == {f"{10:032x}", f"{13:032x}", f"{20:032x}"}


def test_sqlite_is_wal_and_synchronous_full(tmp_path):
    s = FeedbackStore("", tmp_path)
    conn = s._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
