"""Traffic generator: the lab's load patterns (ramp, steady, error ramp, a folder of
images) as a library, so the CLI and other tests share one implementation.

Two modes. Closed loop (the lab's): N clients each send, wait for the answer, send
again. Open loop (``rate``): requests go out on a fixed schedule whatever the server
does, and latency is measured from the *scheduled* send time, so a slow server shows
up as latency instead of silently lowering the request rate (coordinated omission).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

# The lab's patterns: concurrent clients per step.
RAMP_CLIENTS = (1, 2, 3, 5, 3, 2, 1)
ERROR_RAMP_CLIENTS = (1, 3, 5, 10, 5, 3, 1)
ERROR_BODIES = (b"{}", b'{"image": "bad data"}')
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
NO_VARIANT = "(no header)"


@dataclass(frozen=True)
class Phase:
    """``clients`` concurrent clients (closed loop) or ``rate`` requests/s (open loop)
    for ``seconds`` (None: until the payloads run out)."""

    seconds: float | None
    clients: int = 1
    rate: float | None = None


@dataclass
class Record:
    """One request. Times are seconds since the run started."""

    scheduled: float  # when it was due (open loop) or sent (closed loop)
    sent: float
    latency: float  # seconds from ``scheduled`` to the end of the response
    status: int  # HTTP status, 0 when no response (see ``error``)
    variant: str
    model_version: str
    error: str = ""
    input: str = ""
    prediction: str = ""
    probability: float | None = None
    clients: int = 0
    client_id: str = ""  # the X-Client-Id sent, with ``client_ids``


class Payloads:
    """Request bodies: ``next()`` gives (body, label) or None when there are no more."""

    def __init__(self, make: Callable[[], tuple[bytes, str] | None], total: int | None = None):
        self._make = make
        self._lock = threading.Lock()
        self.total = total

    def next(self) -> tuple[bytes, str] | None:
        with self._lock:
            return self._make()

    @classmethod
    def image(cls, data: bytes, label: str = "image") -> Payloads:
        body = json.dumps({"image": base64.b64encode(data).decode()}).encode()
        return cls(lambda: (body, label))

    @classmethod
    def errors(cls, seed: int | None = None) -> Payloads:
        """The lab's error ramp bodies at random: ``{}`` (422) and bad base64 (4xx)."""
        rng = random.Random(seed)

        def make():
            body = rng.choice(ERROR_BODIES)
            return body, body.decode()

        return cls(make)

    @classmethod
    def folder(cls, root: Path, loop: bool = False, seed: int | None = None) -> Payloads:
        """Every image under ``root`` (recursively), shuffled; once, or reshuffled each pass."""
        files = find_images(root)
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        rng = random.Random(seed)
        order: list[Path] = []
        passes = 0

        def make():
            nonlocal passes
            if not order:
                if passes and not loop:
                    return None
                order.extend(rng.sample(files, len(files)))
                passes += 1
            path = order.pop()
            # Read and encode per request: an evaluation set does not have to fit in memory.
            body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode()}).encode()
            return body, str(path.relative_to(root))

        return cls(make, total=None if loop else len(files))


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def default_photo() -> bytes:
    """A 400x300 JPEG made on the spot, for runs without ``--image``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((400, 300), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def stepped(clients: Sequence[int], step: float, rate: float | None = None) -> list[Phase]:
    """A ramp of client counts; with ``rate`` the same shape in requests/s, peaking at ``rate``."""
    peak = max(clients)
    return [
        Phase(step, c, None if rate is None else rate * c / peak) for c in clients
    ]


@dataclass
class LoadSpec:
    url: str  # the full endpoint, e.g. http://host/api/predict
    phases: list[Phase]
    payloads: Payloads
    scenario: str = "custom"
    timeout: float = 5.0
    max_duration: float = 1800.0
    max_requests: int | None = None
    max_in_flight: int = 64  # open loop: threads sending at once
    headers: dict[str, str] = field(default_factory=dict)
    # Send ``X-Client-Id`` picked at random from this many ids (as the web app does per
    # browser), so Nginx's sticky canary mode has users to keep on one variant.
    client_ids: int | None = None
    seed: int | None = None

    @property
    def open_loop(self) -> bool:
        return any(p.rate is not None for p in self.phases)

    @property
    def planned_seconds(self) -> float | None:
        if any(p.seconds is None for p in self.phases):
            return None
        return min(sum(p.seconds for p in self.phases), self.max_duration)


@dataclass
class LoadResult:
    spec: LoadSpec
    records: list[Record]
    started_at: float  # wall clock (epoch seconds)
    duration: float
    interrupted: bool = False
    not_sent: int = 0  # open loop: due, but never sent before the end (client overloaded)
    stop_reason: str = ""

    def summary(self) -> dict:
        return summarize(self.records, self.duration, self.not_sent)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    k = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def status_label(r: Record) -> str:
    return str(r.status) if r.status else (r.error or "no response")


def summarize(records: Sequence[Record], duration: float, not_sent: int = 0) -> dict:
    lat = sorted(r.latency for r in records)
    statuses = Counter(status_label(r) for r in records)
    ok = sum(1 for r in records if 200 <= r.status < 300)
    by_variant: dict[str, dict] = {}
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.variant, r.model_version)].append(r)
    for (variant, version), rs in sorted(groups.items()):
        probs = [r.probability for r in rs if r.probability is not None]
        vlat = sorted(r.latency for r in rs)
        by_variant[f"{variant} {version}".strip()] = {
            "variant": variant,
            "model_version": version,
            "requests": len(rs),
            "share": len(rs) / len(records),
            "ok": sum(1 for r in rs if 200 <= r.status < 300),
            "p50_ms": percentile(vlat, 50) * 1000,
            "p99_ms": percentile(vlat, 99) * 1000,
            "mean_confidence": sum(probs) / len(probs) if probs else None,
        }
    return {
        "requests": len(records),
        "ok": ok,
        "errors": len(records) - ok,
        "not_sent": not_sent,
        "duration_s": duration,
        "throughput_rps": len(records) / duration if duration > 0 else 0.0,
        "latency_ms": {
            name: percentile(lat, q) * 1000
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "status": dict(sorted(statuses.items())),
        "variants": by_variant,
    }


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
        try:
            resp = session.post(self.spec.url, data=body, headers=headers, timeout=self.spec.timeout)
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
CSV_FIELDS = [f for f in Record.__dataclass_fields__]


def write_records(records: Sequence[Record], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in records:
            row = asdict(r)
            for k in ("scheduled", "sent", "latency"):
                row[k] = f"{row[k]:.6f}"
            w.writerow(row)
    return path


def write_report(result: LoadResult, folder: Path, title: str = "") -> dict[str, Path]:
    """requests.csv (one row per request), summary.json and load.png in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "records": write_records(result.records, folder / "requests.csv"),
        "summary": folder / "summary.json",
        "plot": folder / "load.png",
    }
    summary = result.summary()
    summary.update(
        scenario=result.spec.scenario, url=result.spec.url, started_at=result.started_at,
        interrupted=result.interrupted, stop_reason=result.stop_reason,
    )
    paths["summary"].write_text(json.dumps(_nan_to_none(summary), indent=2))
    plot(result, paths["plot"], title=title)
    return paths


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    return obj


def _per_second(records: Sequence[Record], seconds: int) -> Iterator[tuple[int, list[Record]]]:
    bins: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        bins[int(r.scheduled + r.latency)].append(r)
    for s in range(seconds + 1):
        yield s, bins.get(s, [])


def _plan(result: LoadResult) -> tuple[list[float], list[float]]:
    """The planned clients (closed loop) or request rate (open loop) as a step line,
    up to where the run ended."""
    times, values, t = [], [], 0.0
    for ph in result.spec.phases:
        if t >= result.duration:
            break
        times.append(t)
        values.append(ph.rate if result.spec.open_loop else ph.clients)
        t = result.duration if ph.seconds is None else t + ph.seconds
    times.append(min(t, result.duration))
    values.append(values[-1] if values else 0)
    return times, values


def plot(result: LoadResult, path: Path, title: str = "") -> Path:
    """Latency (per-second p50 and p99, each request as a dot) and throughput over
    time, one colour per variant; non-2xx answers as red crosses and a red line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result.records
    seconds = max(1, math.ceil(result.duration))
    variants = sorted({r.variant for r in records if 200 <= r.status < 300})
    colours = dict(zip(variants, plt.get_cmap("tab10").colors, strict=False))
    fig, (ax_lat, ax_tp) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for variant in variants:
        rs = [r for r in records if r.variant == variant and 200 <= r.status < 300]
        version = next((r.model_version for r in rs if r.model_version), "")
        label = f"{variant} {version}".strip()
        c = colours[variant]
        ax_lat.scatter([r.scheduled + r.latency for r in rs], [r.latency * 1000 for r in rs],
                       s=7, alpha=0.35, color=c, linewidths=0)
        xs, p50, p99, tp = [], [], [], []
        for s, bucket in _per_second(rs, seconds):
            tp.append(len(bucket))
            if bucket:
                lat = sorted(r.latency * 1000 for r in bucket)
                xs.append(s + 0.5)
                p50.append(percentile(lat, 50))
                p99.append(percentile(lat, 99))
        ax_lat.plot(xs, p50, color=c, lw=2, label=f"{label} p50")
        ax_lat.plot(xs, p99, color=c, lw=1.2, ls="--", label=f"{label} p99")
        ax_tp.step(range(seconds + 1), tp, where="post", color=c, lw=1.8, label=f"{label} 2xx")
    bad = [r for r in records if not 200 <= r.status < 300]
    if bad:
        ax_lat.scatter([r.scheduled + r.latency for r in bad], [r.latency * 1000 for r in bad],
                       s=12, marker="x", color="tab:red", label="non-2xx / no answer")
        tp_bad = [len(b) for _, b in _per_second(bad, seconds)]
        ax_tp.step(range(seconds + 1), tp_bad, where="post", color="tab:red", lw=1.5,
                   label="non-2xx / no answer")
    if len(variants) > 1:
        total = [len(b) for _, b in _per_second([r for r in records if 200 <= r.status < 300], seconds)]
        ax_tp.step(range(seconds + 1), total, where="post", color="black", lw=1, alpha=0.7,
                   label="all 2xx")
    times, values = _plan(result)
    if result.spec.open_loop:
        ax_tp.step(times, values, where="post", color="grey", lw=1.2, ls="--", label="scheduled rate")
    elif len(set(values)) > 1:
        ax_cl = ax_tp.twinx()
        ax_cl.step(times, values, where="post", color="grey", lw=1.2, ls="--")
        ax_cl.set_ylabel("clients (dashed)", color="grey")
        ax_cl.set_ylim(0, max(values) * 1.15)
        ax_cl.yaxis.get_major_locator().set_params(integer=True)
    ax_lat.set_ylabel("latency (ms)")
    if records and max(r.latency for r in records) / max(1e-6, min(r.latency for r in records)) > 50:
        ax_lat.set_yscale("log")
    else:
        ax_lat.set_ylim(bottom=0)
    ax_lat.grid(alpha=0.3)
    if ax_lat.get_legend_handles_labels()[0]:
        ax_lat.legend(loc="upper left", fontsize=8, ncol=2)
    ax_tp.set_ylabel("responses / s")
    ax_tp.set_xlabel("time since start (s)")
    ax_tp.set_ylim(bottom=0)
    ax_tp.set_xlim(0, seconds)
    ax_tp.grid(alpha=0.3)
    if ax_tp.get_legend_handles_labels()[0]:
        ax_tp.legend(loc="upper left", fontsize=8)
    s = result.summary()
    ax_lat.set_title(
        title or f"gourmetgram load {result.spec.scenario}: {s['requests']} requests, "
        f"{s['throughput_rps']:.1f} req/s, p50 {s['latency_ms']['p50']:.0f} ms, "
        f"p99 {s['latency_ms']['p99']:.0f} ms",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# -- endpoint and summary text -----------------------------------------------------------------
class EndpointError(ValueError):
    """The URL does not lead to a model API (the message says why, in one line)."""


def _looks_like_api(resp: requests.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "ready" in body


def resolve_endpoint(url: str, path: str | None = None, timeout: float = 5.0) -> str:
    """The predict endpoint for ``url``: the URL itself when it has a path, ``url + path``
    when ``path`` is given, else ``/predict`` when ``url`` is one API instance (its
    ``/readyz`` answers) or ``/api/predict`` behind the Nginx front (``/api/readyz``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"--url {url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018 - raises on a bad port number
    except ValueError:
        raise EndpointError(f"--url {url!r} has a bad port") from None
    base = f"{parts.scheme}://{parts.netloc}"
    given = path if path is not None else (parts.path if parts.path not in ("", "/") else None)
    candidates = [given] if given is not None else ["/predict", "/api/predict"]
    last_error = ""
    for cand in candidates:
        cand = "/" + cand.lstrip("/")
        prefix = cand.rsplit("/", 1)[0]
        try:
            resp = requests.get(base + prefix + "/readyz", timeout=timeout)
        except requests.RequestException as e:
            reason = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
            raise EndpointError(f"cannot reach {base}: {reason}") from None
        if given is not None:
            return base + cand  # reachable; the user named the endpoint
        if resp.status_code == 200 and _looks_like_api(resp):
            return base + cand
        last_error = f"{prefix or ''}/readyz answered {resp.status_code}"
    raise EndpointError(
        f"no model API at {base} (neither /readyz nor /api/readyz is the API's; {last_error}); "
        "give the endpoint with --path"
    )


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f} ms"


def format_summary(result: LoadResult) -> str:
    """The summary table printed at the end of a run."""
    s = result.summary()
    lines = []
    head = f"load {result.spec.scenario} -> {result.spec.url}"
    if result.interrupted:
        head += "  (interrupted: summary of what was sent)"
    elif result.stop_reason and result.stop_reason != "done":
        head += f"  ({result.stop_reason})"
    lines.append(head)
    rows = [
        ("requests", f"{s['requests']}  ({s['ok']} ok, {s['errors']} errors"
                     + (f", {s['not_sent']} due but not sent" if s["not_sent"] else "") + ")"),
        ("duration", f"{s['duration_s']:.1f} s"),
        ("throughput", f"{s['throughput_rps']:.2f} req/s"),
        ("latency", "  ".join(f"{k} {_ms(v)}" for k, v in s["latency_ms"].items())),
        ("status", "  ".join(f"{k}: {v}" for k, v in s["status"].items()) or "-"),
    ]
    lines += [f"  {k:<11} {v}" for k, v in rows]
    if s["variants"]:
        lines.append("  variants:")
        lines.append(f"    {'variant':<16} {'version':<24} {'requests':>9} {'share':>7} {'ok':>7} "
                     f"{'p50':>10} {'p99':>10} {'confidence':>10}")
        for v in s["variants"].values():
            conf = "-" if v["mean_confidence"] is None else f"{v['mean_confidence']:.3f}"
            lines.append(
                f"    {v['variant']:<16} {v['model_version'] or '-':<24} {v['requests']:>9} "
                f"{v['share'] * 100:>6.1f}% {v['ok']:>7} {_ms(v['p50_ms']):>10} "
                f"{_ms(v['p99_ms']):>10} {conf:>10}"
            )
    return "\n".join(lines)
