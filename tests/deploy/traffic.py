"""Traffic for the end-to-end test (tests/deploy/test_deploy_e2e.py): image folders for
the product's own load generator (real JPEGs for the healthy stream, noise and solid
colours for the drifted one), running `gourmetgram load` from the controller, a web
trickle, the drift counters of one API instance, and the Poisson bound the false
alarms are judged by."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageEnhance

from tests.images import LARGE_PHOTO, SMALL_PHOTO, photo_bytes
from tests.procs import REPO_ROOT, child_env


def food_photos(folder: Path, n: int, seed: int = 0) -> Path:
    """Random crops (flipped, brightness changed) of the shared food photos, as JPEGs:
    one kind of traffic, so the first N of it are a fair reference for the rest."""
    sources = [Image.open(io.BytesIO(photo_bytes(large))).convert("RGB")
               for large in (False, True) if (LARGE_PHOTO if large else SMALL_PHOTO).exists()]
    sources = sources or [Image.open(io.BytesIO(photo_bytes())).convert("RGB")]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        side = rng.uniform(0.45, 1.0)
        cw, ch = int(w * side), int(h * side * rng.uniform(0.8, 1.0))
        x, y = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
        crop = im.crop((x, y, x + cw, y + ch)).resize((320, 240))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.85, 1.15))
        crop.save(folder / f"{i:04d}.jpg", "JPEG", quality=int(rng.integers(80, 95)))
    return folder


def drifted_images(folder: Path, n: int, seed: int = 1) -> Path:
    """Not photos at all: uniform pixel noise and solid colours, half each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i % 2:
            im = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), "RGB")
        else:
            im = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 256, 3)))
        im.save(folder / f"{i:04d}.jpg", "JPEG", quality=90)
    return folder


def load_argv(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "gourmetgram", "load", *argv, "--quiet"]


def run_load(runs: list[list[str]], timeout: float = 300, in_flight: str = "4") -> list[str]:
    """Runs `gourmetgram load ...` from the controller, several at once, each with at most
    ``in_flight`` requests open (no backlog left on the server); each must exit 0. Every
    process is stopped, also when one fails or the time runs out."""
    procs = [subprocess.Popen(load_argv([*argv, "--max-in-flight", in_flight,
                                         "--max-duration", str(int(timeout))]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env(), cwd=REPO_ROOT) for argv in runs]
    try:
        outs = [p.communicate(timeout=timeout + 30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for argv, p, out in zip(runs, procs, outs, strict=True):
        assert p.returncode == 0, f"gourmetgram load {' '.join(argv)}: exit {p.returncode}\n{out}"
    return outs


class BackgroundLoad:
    """`gourmetgram load` runs left going while a block runs; stopped (SIGTERM: a clean
    stop) at its end, killed if they do not stop."""

    def __init__(self, runs: list[list[str]]):
        self.runs = runs
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        self.procs = [subprocess.Popen(load_argv(argv), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=child_env(), cwd=REPO_ROOT)
                      for argv in self.runs]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class WebTrickle:
    """A page view and an upload every 2 s through Nginx, while a block runs."""

    def __init__(self, front: str, photo: bytes):
        self.front, self.photo = front, photo
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                requests.get(self.front + "/", timeout=10)
                requests.post(self.front + "/predict", timeout=30,
                              files={"file": ("dish.jpg", self.photo, "image/jpeg")})
            except requests.RequestException:
                pass
            self.stop.wait(2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(40)


def drift_sums(metrics_text: str) -> tuple[float, float]:
    """(drift_events_total, drift_samples_total) of a /metrics page, over all series."""
    sums = {"drift_events_total": 0.0, "drift_samples_total": 0.0}
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums["drift_events_total"], sums["drift_samples_total"]


def drained_drift_counts(api_url: str, timeout: float = 30) -> tuple[float, float]:
    """The instance's drift counts once its drift queue has drained (two equal reads a
    second apart)."""
    def read():
        return drift_sums(requests.get(api_url + "/metrics", timeout=10).text)
    last = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        now = read()
        if now == last:
            return now
        last = now
    return last


def poisson_upper(mean: float, p: float = 1e-4) -> int:
    """The smallest k with P(X > k) < p for X ~ Poisson(mean)."""
    k, term = 0, math.exp(-mean)
    cdf = term
    while 1 - cdf >= p:
        k += 1
        term *= mean / k
        cdf += term
    return k
