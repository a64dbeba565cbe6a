"""Traffic generator: the lab's load patterns (ramp, steady, error ramp, a folder of
images) as a library, so the CLI and other tests share one implementation.

Two modes. Closed loop (the lab's): N clients each send, wait for the answer, send
again. Open loop (``rate``): requests go out on a fixed schedule whatever the server
does, and latency is measured from the *scheduled* send time, so a slow server shows
up as latency instead of silently lowering the request rate (coordinated omission).
"""

from __future__ import annotations

import http.client
import queue
import random
import threading
import time
from collections.abc import Callable

import requests
import urllib3

from gourmetgram.load.spec import NO_VARIANT, LoadResult, LoadSpec, Record
from gourmetgram.load.summary import percentile


def closed_without_answer(e: requests.ConnectionError) -> bool:
    """True when the server closed or reset the connection before any byte of an answer
    ("Connection aborted." from urllib3; a break inside an answer is a different error).
    Every weight change reloads Nginx, whose old workers close their idle keep-alive
    connections; a request sent on one at that moment gets this, unanswered. Browsers
    resend such a request on a new connection, and so does the web app's API client."""
    cause = e.args[0] if e.args else None
    return isinstance(cause, urllib3.exceptions.ProtocolError) and any(
        isinstance(a, (http.client.RemoteDisconnected, ConnectionResetError)) for a in cause.args)


class LoadRun:
    """One run in background threads: ``start()``, then ``wait()``/``snapshot()`` for
    progress, ``stop()`` to end early (in-flight requests finish, within the timeout)."""

    def __init__(self, spec: LoadSpec):
        self.spec = spec
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._sent = 0
        self._clients_now = 0
        self._cond = threading.Condition()
        self.not_sent = 0
        self.interrupted = False
        self.stop_reason = ""
        self.started_mono = 0.0
        self.started_at = 0.0
        self.ended_mono: float | None = None
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(spec.seed)
        self._client_ids = [f"load-{self._rng.getrandbits(64):016x}" for _ in range(spec.client_ids or 0)]

    # -- control -------------------------------------------------------------------------
    def start(self) -> LoadRun:
        self.started_mono = time.perf_counter()
        self.started_at = time.time()
        runner = threading.Thread(target=self._run, name="load-runner", daemon=True)
        runner.start()
        return self

    def stop(self, interrupted: bool = True) -> None:
        if not self._done.is_set() and not self._stop.is_set():
            self.interrupted = interrupted
            self.stop_reason = self.stop_reason or ("interrupted" if interrupted else "stopped")
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def elapsed(self) -> float:
        end = self.ended_mono if self.ended_mono is not None else time.perf_counter()
        return end - self.started_mono

    def result(self) -> LoadResult:
        with self._lock:
            records = sorted(self.records, key=lambda r: r.scheduled)
        return LoadResult(
            self.spec, records, self.started_at, self.elapsed(), self.interrupted,
            self.not_sent, self.stop_reason,
        )

    def snapshot(self, window: float = 2.0) -> dict:
        """Counts so far, the rate over the last ``window`` seconds and latency quantiles."""
        now = self.elapsed()
        with self._lock:
            records = list(self.records)
        lat = sorted(r.latency for r in records)
        recent = sum(1 for r in records if r.scheduled + r.latency >= now - window)
        return {
            "elapsed": now,
            "requests": len(records),
            "errors": sum(1 for r in records if not 200 <= r.status < 300),
            "rate": recent / min(window, now) if now > 0 else 0.0,
            "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "clients": self._clients_now,
        }

    # -- sending -------------------------------------------------------------------------
    def _claim(self) -> bool:
        """Counts a request against ``max_requests``; False when the cap is reached."""
        with self._lock:
            if self.spec.max_requests is not None and self._sent >= self.spec.max_requests:
                return False
            self._sent += 1
            return True

    def _send(self, session: requests.Session, scheduled: float, body: bytes, label: str) -> None:
        headers = {"Content-Type": "application/json", **self.spec.headers}
        client_id = ""
        if self._client_ids:
            with self._lock:
                client_id = self._rng.choice(self._client_ids)
            headers["X-Client-Id"] = client_id
        sent = time.perf_counter() - self.started_mono
        status, variant, version, error, pred, prob = 0, NO_VARIANT, "", "", "", None
        retried = False
        try:
            try:
                resp = session.post(self.spec.url, data=body, headers=headers,
                                    timeout=self.spec.timeout)
            except requests.ConnectionError as e:
                if not closed_without_answer(e):
                    raise
                # Once, as a browser would; urllib3 dropped the closed connection.
                retried = True
                resp = session.post(self.spec.url, data=body, headers=headers,
                                    timeout=self.spec.timeout)
            status = resp.status_code
            variant = resp.headers.get("X-Model-Variant", NO_VARIANT)
            version = resp.headers.get("X-Model-Version", "")
            if 200 <= status < 300:
                try:
                    answer = resp.json()
                    pred = str(answer.get("prediction", ""))
                    prob = float(answer["probability"]) if "probability" in answer else None
                except (ValueError, TypeError, AttributeError):
                    error = "bad json"
        except requests.Timeout:
            error = "timeout"
        except requests.ConnectionError:
            error = "connection error"
        except requests.RequestException as e:
            error = type(e).__name__
        end = time.perf_counter() - self.started_mono
        rec = Record(
            scheduled=scheduled, sent=sent, latency=end - scheduled, status=status,
            variant=variant, model_version=version, error=error, input=label,
            prediction=pred, probability=prob, clients=self._clients_now, client_id=client_id,
            retried=retried,
        )
        with self._lock:
            self.records.append(rec)

    def _deadline_passed(self, deadline: float) -> bool:
        return time.perf_counter() - self.started_mono >= deadline

    def _run(self) -> None:
        try:
            if self.spec.open_loop:
                self._run_open()
            else:
                self._run_closed()
        finally:
            self.ended_mono = time.perf_counter()
            self._done.set()

    def _finish(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _run_closed(self) -> None:
        """Persistent client threads; client k sends while k < the phase's client count."""
        n_threads = max(p.clients for p in self.spec.phases)

        def client(k: int) -> None:
            with requests.Session() as session:
                while not self._stop.is_set():
                    with self._cond:
                        while k >= self._clients_now and not self._stop.is_set():
                            self._cond.wait()
                    if self._stop.is_set():
                        return
                    item = self.spec.payloads.next()
                    if item is None:
                        self._finish("all inputs sent")
                        return
                    if not self._claim():
                        self._finish("request count reached")
                        return
                    self._send(session, time.perf_counter() - self.started_mono, *item)

        self._threads = [
            threading.Thread(target=client, args=(k,), name=f"load-client-{k}", daemon=True)
            for k in range(n_threads)
        ]
        for t in self._threads:
            t.start()
        t0 = 0.0
        for phase in self.spec.phases:
            with self._cond:
                self._clients_now = phase.clients
                self._cond.notify_all()
            end = self.spec.max_duration if phase.seconds is None else t0 + phase.seconds
            end = min(end, self.spec.max_duration)
            while not self._stop.is_set() and not self._deadline_passed(end):
                self._stop.wait(min(0.05, max(0.0, end - self.elapsed())))
            if self._stop.is_set():
                break
            t0 = end
            if t0 >= self.spec.max_duration:
                self._finish("--max-duration reached")
                break
        self._finish("done")
        for t in self._threads:
            t.join(self.spec.timeout + 5)

    def _run_open(self) -> None:
        """A dispatcher queues each request at its due time; a pool sends them. Queued
        requests wait for a free sender, and that wait counts as latency."""
        due: queue.Queue = queue.Queue()
        # After the schedule ends, requests still queued get one timeout to go out.
        drain_until: list[float | None] = [None]

        def sender() -> None:
            with requests.Session() as session:
                while True:
                    item = due.get()
                    if item is None:
                        return
                    late = drain_until[0] is not None and self.elapsed() > drain_until[0]
                    if self._stop.is_set() or late:
                        with self._lock:
                            self.not_sent += 1
                        continue
                    self._send(session, *item)

        self._threads = [
            threading.Thread(target=sender, name=f"load-sender-{k}", daemon=True)
            for k in range(self.spec.max_in_flight)
        ]
        for t in self._threads:
            t.start()
        t0 = 0.0
        reason = "done"
        for phase in self.spec.phases:
            rate = phase.rate or 0.0
            end = self.spec.max_duration if phase.seconds is None else t0 + phase.seconds
            end = min(end, self.spec.max_duration)
            self._clients_now = round(rate)
            i = 0
            while rate > 0 and not self._stop.is_set():
                at = t0 + i / rate
                if at >= end:
                    break
                delay = at - self.elapsed()
                if delay > 0 and self._stop.wait(delay):
                    break
                item = self.spec.payloads.next()
                if item is None:
                    reason = "all inputs sent"
                    break
                if not self._claim():
                    reason = "request count reached"
                    break
                due.put((at, *item))
                i += 1
            if self._stop.is_set() or reason != "done":
                break
            if rate <= 0:
                self._stop.wait(max(0.0, end - self.elapsed()))
            t0 = end
            if t0 >= self.spec.max_duration:
                reason = "--max-duration reached"
                break
        drain_until[0] = self.elapsed() + self.spec.timeout
        for _ in self._threads:
            due.put(None)
        for t in self._threads:
            t.join(2 * self.spec.timeout + 5)
        self._finish(reason)


def run_load(spec: LoadSpec, on_progress: Callable[[LoadRun], None] | None = None,
             interval: float = 0.25) -> LoadResult:
    """Runs ``spec`` to the end (blocking) and returns every request's record."""
    run = LoadRun(spec).start()
    try:
        while not run.wait(interval):
            if on_progress:
                on_progress(run)
    except KeyboardInterrupt:
        run.stop()
        run.wait(spec.timeout + 10)
    return run.result()


# -- reports --------------------------------------------------------------------------------
