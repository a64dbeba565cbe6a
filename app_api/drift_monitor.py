"""The API worker's drift monitor: takes each prediction's features off the request
path and feeds the online detector (app_api/drift.py). Without a configured reference
it first bootstraps one from the instance's first predictions (app_api/drift_reference.py),
then arms itself. Its state is exported as ``drift_detector_state`` and on ``/model``.
"""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from app_api import metrics
from app_api.drift import (
    DriftReference,
    DriftReferenceError,
    OnlineMMD,
    build_reference,
    load_for_model,
)
from app_api.drift_reference import BootstrapStore
from app_api.thread_names import name_os_thread

log = logging.getLogger(__name__)
# How often a bootstrapping worker with no traffic looks for the reference another built.
POLL_S = 1.0
# After testing what had queued, the thread rests this long before it looks again, so
# under load it wakes a few dozen times a second for a group of samples instead of once
# per prediction (a futex hand-off each, and an update whose data the forward pass had
# evicted from the caches: docs/api.md). Detection is this much later at most.
GROUP_S = 0.05


class DriftMonitor:
    """Consumes features off the request path: ``submit`` (the feature sink) never
    blocks; a full queue drops the sample and counts it. One per API worker.

    Give it a ``reference`` (armed at once) or a ``bootstrap`` store and the ``build``
    function that turns the collected rows into a reference."""

    def __init__(self, labels: tuple[str, str], queue_size: int,
                 reference: DriftReference | None = None, *,
                 bootstrap: BootstrapStore | None = None, build=None, seed: int | None = None):
        if (reference is None) == (bootstrap is None):
            raise ValueError("a DriftMonitor needs a reference or a bootstrap store, not both")
        self.labels = labels
        self.seed = seed
        self.bootstrap, self.build = bootstrap, build
        self.source = "file" if reference is not None else "bootstrap"
        self.detector: OnlineMMD | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._stop = object()
        self._rest = threading.Event()  # set by stop(): no rest between groups then
        self._samples = metrics.DRIFT_SAMPLES.labels(*labels)
        self._dropped = metrics.DRIFT_DROPPED.labels(*labels)
        self._events = metrics.DRIFT_EVENTS.labels(*labels)
        self._stat = metrics.DRIFT_TEST_STAT.labels(*labels)
        self._ref_samples = metrics.DRIFT_REFERENCE_SAMPLES.labels(*labels)
        # Children created up front, so every series shows 0 before the first sample.
        self._samples.inc(0)
        self._dropped.inc(0)
        self._events.inc(0)
        metrics.DRIFT_ENABLED.labels(*labels).set(0)
        if reference is not None:
            self._arm(reference)
        else:
            existing = bootstrap.load()
            if existing is not None:
                self._arm(existing)
            else:
                self._set_state("bootstrapping")
                self._ref_samples.set(bootstrap.collected())

    @property
    def state(self) -> str:
        return "armed" if self.detector is not None else "bootstrapping"

    def status(self) -> dict:
        """What ``/model`` says about drift detection in this worker."""
        out = {"state": self.state, "source": self.source}
        if self.detector is not None:
            ref = self.detector.reference
            if self.source == "bootstrap":
                # "bootstrap", or "images" when build-drift-reference --state-dir put it there.
                out["source"] = ref.meta.get("source", "images")
            out.update(reference_samples=len(ref.features), ert=ref.ert, window=ref.window,
                       threshold=ref.stationary_threshold)
        else:
            out.update(reference_samples=self.bootstrap.collected(),
                       bootstrap_samples=self.bootstrap.target)
        if self.bootstrap is not None:
            out["reference"] = str(self.bootstrap.reference_path)
        return out

    def _set_state(self, state: str) -> None:
        for s in metrics.DRIFT_STATES:
            metrics.DRIFT_STATE.labels(*self.labels, s).set(1 if s == state else 0)

    def _arm(self, reference: DriftReference) -> None:
        self.detector = OnlineMMD(reference, seed=self.seed)
        metrics.DRIFT_THRESHOLD.labels(*self.labels).set(reference.stationary_threshold)
        metrics.DRIFT_ERT.labels(*self.labels).set(reference.ert)
        metrics.DRIFT_ENABLED.labels(*self.labels).set(1)
        self._ref_samples.set(len(reference.features))
        self._set_state("armed")
        if self.source == "bootstrap":
            log.info("drift detection armed: reference of %d samples (%s) at %s "
                     "(ERT %g samples per worker, threshold %.4g)", len(reference.features),
                     reference.meta.get("source", "images"), self.bootstrap.reference_path,
                     reference.ert, reference.stationary_threshold)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._rest.set()
        while True:
            try:
                self.queue.put_nowait(self._stop)
                break
            except queue.Full:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
        self._thread.join(timeout)

    def submit(self, features: np.ndarray) -> None:
        # A copy, so a queued row does not keep its whole batch's array alive.
        try:
            self.queue.put_nowait(np.array(features, dtype=np.float32))
        except queue.Full:
            self._dropped.inc()

    def _collect(self, item: np.ndarray | None) -> None:
        """Bootstrapping: picks up a reference another worker finished, else adds the
        sample (the append that completes the reference builds it, in this thread)."""
        ref = self.bootstrap.load()
        if ref is None and item is not None:
            try:
                count = self.bootstrap.add(item, self.build)
            except DriftReferenceError as e:
                log.warning("drift reference: the collected predictions cannot be a "
                            "reference (%s); collecting again", e)
                count = 0
            self._ref_samples.set(count)
            if count >= self.bootstrap.target:
                ref = self.bootstrap.load()
        if ref is not None:
            self._arm(ref)

    def _run(self) -> None:
        name_os_thread()
        while True:
            try:
                items = [self.queue.get(timeout=None if self.detector is not None else POLL_S)]
            except queue.Empty:
                items = [None]
            while True:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is self._stop:
                    return
                self._test(item)
            if len(items) > 1 or items[0] is not None:
                self._rest.wait(GROUP_S)

    def _test(self, item: np.ndarray | None) -> None:
        if item is not None and not np.isfinite(item).all():
            # NaN/inf would poison the window for W samples: not tested, counted.
            self._dropped.inc()
            return
        try:
            if self.detector is None:
                self._collect(item)
                return
            stat, _, alarm = self.detector.update(item)
        except Exception:  # noqa: BLE001 - a bad sample must not stop monitoring
            log.exception("drift update failed; sample skipped")
            return
        self._samples.inc()
        self._stat.observe(stat)
        if alarm:
            self._events.inc()

def start_monitor(settings, info) -> DriftMonitor | None:
    """The API worker's drift monitor, or None (drift off, said in the log and in
    ``drift_detector_state``). A configured reference for another model, or a corrupt
    one, raises ``DriftReferenceError``: the API refuses to start rather than monitor
    wrongly. Without one, the first ``drift_bootstrap_samples`` predictions become the
    reference."""
    labels = (settings.variant, info.version)
    if settings.drift_reference is not None:
        ref = load_for_model(settings.drift_reference, info.sha256, info.feature_dim)
        monitor = DriftMonitor(labels, settings.drift_queue_size, ref)
        log.info(
            "drift detection on: reference %s (%d reference + %d calibration samples, %s to "
            "%d-d, window %d, ERT %g samples per worker, threshold %.4g)",
            settings.drift_reference, len(ref.ref_idx), len(ref.cal_idx),
            ref.meta.get("projection"), ref.proj_matrix.shape[1], ref.window, ref.ert,
            ref.stationary_threshold,
        )
    elif settings.drift_bootstrap_samples and info.feature_dim:
        store = BootstrapStore(settings.drift_state_dir, info.sha256, info.feature_dim,
                               settings.drift_bootstrap_samples)

        def build(rows: np.ndarray) -> DriftReference:
            log.info("drift reference: calibrating on the first %d predictions", len(rows))
            return build_reference(
                rows, model_sha256=info.sha256, model_version=info.version,
                ert=settings.drift_ert, window=settings.drift_window,
                n_streams=settings.drift_calibration_streams,
                extra_meta={"source": "bootstrap", "samples": len(rows)},
            )

        monitor = DriftMonitor(labels, settings.drift_queue_size, bootstrap=store, build=build)
        if monitor.state == "bootstrapping":
            log.info("drift detection bootstrapping: the first %d predictions of this instance "
                     "become the reference (%d collected, in %s)", store.target,
                     store.collected(), store.folder)
    else:
        why = ("this model gives no penultimate features" if settings.drift_bootstrap_samples
               else "no drift reference (FOOD11_DRIFT_REFERENCE) and bootstrapping off "
                    "(FOOD11_DRIFT_BOOTSTRAP_SAMPLES=0)")
        for s in metrics.DRIFT_STATES:
            metrics.DRIFT_STATE.labels(*labels, s).set(1 if s == "off" else 0)
        metrics.DRIFT_ENABLED.labels(*labels).set(0)
        log.info("drift detection off: %s", why)
        return None
    monitor.start()
    return monitor
