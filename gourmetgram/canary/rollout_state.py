"""The controller's rollout state on disk (``<state_dir>/rollout.json``): phase, steps,
failed analyses, analyses judged (for the anytime-valid alpha), and this rollout's
weight history. Written atomically after every decision, so a restarted controller
resumes the rollout where it was: a canary judged bad stays judged bad."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ADVANCE, HOLD, PROMOTE, ROLLBACK, PAUSE, WAIT = (
    "advance", "hold", "promote", "rollback", "pause", "wait-approval")
STOPPED = "stopped"
# The shadow stage: mirror turned on, or a passing analysis that keeps it on.
SHADOW = "shadow"
# Every decision the controller takes (the canary_analysis_last_decision labels).
ACTIONS = (ADVANCE, HOLD, PROMOTE, ROLLBACK, PAUSE, WAIT, STOPPED, SHADOW)
IDLE, RUNNING, ROLLING_BACK = "idle", "running", "rolling-back"
PHASES = (IDLE, RUNNING, ROLLING_BACK)
STATE_FILE = "rollout.json"


class RolloutStateError(Exception):
    """The state file exists but cannot be read: the controller refuses to guess."""


@dataclass
class RolloutState:
    phase: str = IDLE
    # Why this rollout started ("ship v2", "gourmetgram canary start").
    cause: str = ""
    started_at: float = 0.0
    steps: int = 0
    failed: int = 0
    # Analyses judged in this rollout: the k of the k-th analysis's alpha share.
    analyses: int = 0
    # [time, weight] at the start and after every change this rollout made.
    weights: list[list[float]] = field(default_factory=list)
    # The reason of the decided rollback, retried until it succeeds.
    rollback_reason: str = ""
    # The newest routing-history entry the controller has looked at (ship detection).
    history_seen: float = 0.0
    # Shadow stage: when the mirror was turned on (0: not yet), its passing analyses,
    # and whether it is over (passed, or off in the settings).
    shadow_since: float = 0.0
    shadow_passed: int = 0
    shadow_done: bool = False

    def begin(self, cause: str, weight: int, now: float) -> None:
        keep = self.history_seen
        self.__init__(phase=RUNNING, cause=cause, started_at=now, weights=[[now, weight]],
                      history_seen=keep)

    def end(self) -> None:
        keep = self.history_seen
        self.__init__(history_seen=keep)

    def weight_changed(self, weight: int, now: float) -> None:
        self.weights.append([now, weight])

    def weight_since(self) -> float:
        """When the current weight was set (the progress deadline counts from here)."""
        return self.weights[-1][0] if self.weights else self.started_at

    def expected_share(self, now: float, window: float) -> float | None:
        """The canary's share of requests the weights asked for over ``[now - window,
        now]``, time-weighted; None before the rollout has a weight history."""
        if not self.weights or window <= 0:
            return None
        start = now - window
        total = 0.0
        for i, (t, w) in enumerate(self.weights):
            end = self.weights[i + 1][0] if i + 1 < len(self.weights) else now
            lo, hi = max(t, start), min(end, now)
            if hi > lo:
                total += (hi - lo) * w / 100.0
        # Before the first entry the weight was the first entry's (the rollout's start).
        first_t, first_w = self.weights[0]
        if first_t > start:
            total += (min(first_t, now) - start) * first_w / 100.0
        return total / window


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load(state_dir: Path) -> RolloutState:
    path = state_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return RolloutState()
    except (OSError, ValueError) as e:
        raise RolloutStateError(f"cannot read {path}: {e}") from None
    known = {f.name for f in fields(RolloutState)}
    if not isinstance(data, dict) or data.get("phase") not in PHASES:
        raise RolloutStateError(f"{path} is not a rollout state (phase {data!r:.80})")
    return RolloutState(**{k: v for k, v in data.items() if k in known})


def save(state_dir: Path, state: RolloutState) -> None:
    """Atomic: a temporary file in the same folder, fsync, rename."""
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
