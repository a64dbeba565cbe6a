"""The durable record of feedback: one row per kept prediction (who answered, what,
how sure, the photo's sha256, which review queue it is in and with what sampling
probability), the person's verdict and the operator's label.

Two backends behind the same SQL: SQLite (the default, one file under the state
directory; WAL journal and ``synchronous=FULL``, so a committed write is on disk
before the call returns and survives a killed worker or a power cut) and
PostgreSQL (``postgresql://`` URL, via psycopg; its default ``synchronous_commit``
waits for the WAL flush) for several web hosts sharing one store."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    variant TEXT NOT NULL,
    model_version TEXT NOT NULL,
    predicted TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    predicted_at DOUBLE PRECISION NOT NULL,
    photo_sha256 TEXT NOT NULL,
    photo_ext TEXT NOT NULL,
    queue TEXT NOT NULL,
    sampling_probability DOUBLE PRECISION,
    review_key DOUBLE PRECISION NOT NULL,
    verdict TEXT,
    user_label TEXT,
    note TEXT,
    verdict_at DOUBLE PRECISION,
    label TEXT,
    labelled_by TEXT,
    labelled_at DOUBLE PRECISION
)
"""
INDEX = "CREATE INDEX IF NOT EXISTS predictions_queue ON predictions (queue, label, review_key)"
COLUMNS = (
    "id", "variant", "model_version", "predicted", "confidence", "predicted_at", "photo_sha256",
    "photo_ext", "queue", "sampling_probability", "review_key", "verdict", "user_label", "note",
    "verdict_at", "label", "labelled_by", "labelled_at",
)
# Queues: "random" and "low_confidence" are probability samples (sampling_probability
# set); "flagged" (the person said wrong) and "confirmed" (right) are not.
SAMPLED_QUEUES = ("random", "low_confidence")


@dataclass(frozen=True)
class Row:
    id: str
    variant: str
    model_version: str
    predicted: str
    confidence: float
    predicted_at: float
    photo_sha256: str
    photo_ext: str
    queue: str
    sampling_probability: float | None
    review_key: float
    verdict: str | None = None
    user_label: str | None = None
    note: str | None = None
    verdict_at: float | None = None
    label: str | None = None
    labelled_by: str | None = None
    labelled_at: float | None = None


class FeedbackStore:
    """Thread-safe: one connection per thread; every write is its own transaction."""

    def __init__(self, url: str, default_dir: Path):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        if not self.postgres:
            path = Path(url.removeprefix("sqlite:///")) if url else default_dir / "feedback.sqlite3"
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.path = path
        self._local = threading.local()
        with self._tx() as cur:
            if self.postgres:
                cur.execute("SELECT pg_advisory_xact_lock(1717017)")  # workers start together
            cur.execute(SCHEMA)
            cur.execute(INDEX)

    def _connect(self):
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, connect_timeout=10)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _sql(self, q: str) -> str:
        return q.replace("?", "%s") if self.postgres else q

    class _Tx:
        def __init__(self, store: FeedbackStore):
            self.store = store

        def __enter__(self):
            conn = self.store._conn()
            if not self.store.postgres:
                conn.execute("BEGIN IMMEDIATE")
            self.cur = conn.cursor()
            return self

        def execute(self, q: str, params=()):
            self.cur.execute(self.store._sql(q), params)
            return self.cur

        def __exit__(self, exc_type, exc, tb):
            conn = self.store._conn()
            if exc_type is None:
                conn.commit() if self.store.postgres else conn.execute("COMMIT")
            else:
                conn.rollback() if self.store.postgres else conn.execute("ROLLBACK")
            self.cur.close()
            return False

    def _tx(self) -> _Tx:
        return self._Tx(self)

    def _rows(self, q: str, params=()) -> list[Row]:
        with self._tx() as cur:
            return [Row(*r) for r in cur.execute(
                f"SELECT {', '.join(COLUMNS)} FROM predictions {q}", params).fetchall()]

    # ---- writes ----

    def insert(self, row: Row) -> bool:
        """Adds a kept prediction; False when the id is already stored (nothing changed)."""
        values = [getattr(row, c) for c in COLUMNS]
        with self._tx() as cur:
            c = cur.execute(
                f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join('?' * len(COLUMNS))}) ON CONFLICT (id) DO NOTHING", values)
            return c.rowcount == 1

    def set_verdict(self, prediction_id: str, verdict: str, user_label: str | None,
                    note: str | None, at: float) -> bool:
        """The person's answer, once: False when the prediction already has one."""
        with self._tx() as cur:
            c = cur.execute(
                "UPDATE predictions SET verdict = ?, user_label = ?, note = ?, verdict_at = ? "
                "WHERE id = ? AND verdict IS NULL", (verdict, user_label, note, at, prediction_id))
            return c.rowcount == 1

    def set_label(self, prediction_id: str, label: str, operator: str, at: float) -> bool:
        """The operator's label (a later one corrects an earlier); False for an unknown id."""
        with self._tx() as cur:
            c = cur.execute(
                "UPDATE predictions SET label = ?, labelled_by = ?, labelled_at = ? WHERE id = ?",
                (label, operator, at, prediction_id))
            return c.rowcount == 1

    # ---- reads ----

    def get(self, prediction_id: str) -> Row | None:
        rows = self._rows("WHERE id = ?", (prediction_id,))
        return rows[0] if rows else None

    def queue(self, name: str, limit: int) -> list[Row]:
        """Unlabelled items of a queue in their random review order: labelling the first
        k of a sampled queue labels a random subsample of it (the estimator relies on it)."""
        return self._rows("WHERE queue = ? AND label IS NULL ORDER BY review_key LIMIT ?",
                          (name, limit))

    def recent_labels(self, limit: int) -> list[Row]:
        return self._rows("WHERE label IS NOT NULL ORDER BY labelled_at DESC LIMIT ?", (limit,))

    def labelled(self) -> list[Row]:
        """Every row with a label from the operator or a verdict from the person."""
        return self._rows("WHERE label IS NOT NULL OR verdict IS NOT NULL ORDER BY predicted_at")

    def sampled_sums(self) -> list[tuple]:
        """Per variant, version and sampled queue: kept, labelled, and over the labelled
        sum 1/p, sum y/p, sum 1/p^2, sum y/p^2 (y = the prediction was right). The
        estimator needs only these, so a scrape costs one aggregate query, not a row
        per photo."""
        right = "CASE WHEN label = predicted THEN 1.0 ELSE 0.0 END"
        lab = "CASE WHEN label IS NOT NULL THEN 1.0 ELSE 0.0 END"
        p = "sampling_probability"
        with self._tx() as cur:
            rows = cur.execute(
                f"SELECT variant, model_version, queue, COUNT(*), SUM({lab}), "
                f"SUM({lab} / {p}), SUM({right} / {p}), SUM({lab} / ({p} * {p})), "
                f"SUM({right} / ({p} * {p})) FROM predictions "
                "WHERE queue IN ('random', 'low_confidence') "
                "GROUP BY variant, model_version, queue").fetchall()
        return [(v, m, q, int(n), int(nl), float(a), float(b), float(c), float(d))
                for v, m, q, n, nl, a, b, c, d in rows]

    def counts(self) -> list[tuple[str, str, str, str, int]]:
        """(variant, version, kind, queue, n) where kind is the verdict or 'none'."""
        with self._tx() as cur:
            return [tuple(r) for r in cur.execute(
                "SELECT variant, model_version, COALESCE(verdict, 'none'), queue, COUNT(*) "
                "FROM predictions GROUP BY variant, model_version, COALESCE(verdict, 'none'), "
                "queue").fetchall()]

    def labelled_counts(self) -> list[tuple[str, str, str, int]]:
        with self._tx() as cur:
            return [tuple(r) for r in cur.execute(
                "SELECT variant, model_version, queue, COUNT(*) FROM predictions "
                "WHERE label IS NOT NULL GROUP BY variant, model_version, queue").fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
