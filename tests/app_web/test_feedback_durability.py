"""An acknowledged feedback survives SIGKILL: a real ``serve-web`` (gunicorn) takes a
stream of predictions and answers; mid-stream its worker is killed with SIGKILL, then
the whole server is; a new server on the same store must have every answer that got
its 201 (row and photo). Run on SQLite (WAL, synchronous=FULL: each commit is fsynced
before the answer goes out, so the same holds for a power cut; the photo file and its
folder are fsynced before the row) and on a real PostgreSQL cluster."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import pytest
import requests

from app_web.feedback_store import FeedbackStore
from tests.images import encode, textured


def worker_pids(master: int) -> list[int]:
    path = f"/proc/{master}/task/{master}/children"
    with open(path) as f:
        return [int(p) for p in f.read().split()]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    if request.param == "sqlite":
        return ""
    url = request.getfixturevalue("pg_cluster").url
    with FeedbackStore(url, request.getfixturevalue("tmp_path"))._tx() as cur:
        cur.execute("DELETE FROM predictions")
    return url


def test_acknowledged_feedback_survives_sigkill(upstream, start_web, feedback_dir, db_url):
    env = {"WEB_FEEDBACK_DB_URL": db_url}
    web = start_web(upstream.url, workers=1, env=env)
    acked: dict[str, str] = {}
    photos: dict[str, bytes] = {}
    stop = threading.Event()
    errors = []

    def stream():
        i = 0
        while not stop.is_set():
            i += 1
            photo = encode(textured((96, 96), seed=i), "PNG")
            try:
                r = requests.post(web.url + "/predict", files={"file": ("p.png", photo)},
                                  headers={"Accept": "application/json"}, timeout=10)
                pid = r.json()["prediction_id"]
                f = requests.post(web.url + "/feedback", timeout=10,
                                  data={"prediction_id": pid, "verdict": "wrong", "label": "Egg"},
                                  headers={"Accept": "application/json"})
            except (requests.RequestException, ValueError, KeyError) as e:
                errors.append(e)  # the worker died under this request: nothing was acked
                continue
            if f.status_code == 201:
                acked[pid] = "Egg"
                photos[pid] = photo

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in worker_pids(web.proc.pid):
        os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)  # gunicorn starts a new worker; the stream goes on
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(web.proc.pid, signal.SIGKILL)
    stop.set()
    t.join(15)
    assert len(acked) >= 30, (len(acked), errors[:3])

    again = start_web(upstream.url, workers=1, env=env)
    store = FeedbackStore(db_url, feedback_dir)
    for pid, label in acked.items():
        row = store.get(pid)
        assert row is not None, f"acknowledged {pid} was lost"
        assert (row.verdict, row.user_label, row.queue) == ("wrong", label, "flagged")
        sha = hashlib.sha256(photos[pid]).hexdigest()
        assert row.photo_sha256 == sha
        assert (feedback_dir / "photos" / sha[:2] / f"{sha}.png").read_bytes() == photos[pid]
    assert requests.get(again.url + "/healthz", timeout=5).status_code == 200
