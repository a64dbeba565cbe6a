"""What a load run sends and records: phases (the lab's patterns), payloads, the run's
specification and its per-request records."""

from __future__ import annotations

import base64
import io
import json
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gourmetgram.load.summary import summarize

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
    retried: bool = False  # sent again on a new connection (closed without an answer)


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

