"""Who owns a value on the host: the deploy's three-way merge.

The inventory is the user's intent, but ``gourmetgram canary ship|set|promote|rollback``
and the controller change the host's live state (``stack.json``) too. Like ``kubectl
apply`` with its last-applied configuration, the deploy keeps what it last applied
(``last-applied.json``) and merges per key:

- the inventory did not change the key since the last deploy: the host's live value
  stays (a live change is never undone by a re-deploy that did not ask for it);
- the inventory changed it and the host did not: the inventory's value is applied;
- both changed it, to different values: the run stops before anything changes and
  says both values and the two ways out.

Keys are the top-level stack keys, with ``models`` split per variant (a model is its
path and version together).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gourmetgram.host.stack import StackConfig, StackDataError

KEPT, APPLIED, SAME, NEW = "kept host value", "applied", "unchanged", "first deploy"


class StateConflict(StackDataError):
    """The inventory and the host both changed a key since the last deploy."""


class RolloutInProgress(StackDataError):
    """A canary command or rollout holds the host: the deploy waits for it to finish."""


def flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"models": {"canary": {...}}}`` -> ``{"models.canary": {...}}``; other keys as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "models":
            out.update({f"models.{v}": spec for v, spec in value.items()})
        else:
            out[key] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("models."):
            out.setdefault("models", {})[key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


def show(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"path", "version"}:
        return f"{value['version'] or '(no version)'} ({value['path']})"
    return json.dumps(value)


@dataclass(frozen=True)
class Decision:
    key: str
    outcome: str  # KEPT, APPLIED, SAME or NEW
    value: Any
    inventory: Any
    host: Any

    def line(self) -> str:
        if self.outcome == KEPT:
            return (f"{self.key}: kept host value {show(self.host)} (the inventory still says "
                    f"{show(self.inventory)}, unchanged since the last deploy)")
        if self.outcome == APPLIED:
            return f"{self.key}: applied the inventory's {show(self.inventory)} (host had {show(self.host)})"
        return f"{self.key}: {show(self.value)}"


@dataclass(frozen=True)
class Merge:
    values: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == KEPT]


def merge(last: Mapping[str, Any] | None, desired: Mapping[str, Any], live: Mapping[str, Any] | None,
          overwrite: tuple[str, ...] | list[str] = ()) -> Merge:
    """Three-way merge of flat key -> value maps (see the module's docstring).

    ``last`` is None on a host no deploy of this kind has recorded (a fresh host): the
    inventory is applied. ``overwrite`` names keys where the inventory's value wins
    whatever the host did. Raises :class:`StateConflict` naming every conflicting key.
    """
    if last is None or live is None:
        return Merge(dict(desired), [Decision(k, NEW, v, v, None) for k, v in desired.items()])
    values, decisions, conflicts = {}, [], []
    for key, want in desired.items():
        if key not in live:
            values[key] = want
            decisions.append(Decision(key, NEW, want, want, None))
            continue
        have = live[key]
        before = last.get(key, have)
        if want == have:
            outcome, value = SAME, want
        elif key in overwrite or (want != before and have == before):
            outcome, value = APPLIED, want
        elif want == before:
            outcome, value = KEPT, have
        else:
            conflicts.append((key, before, want, have))
            continue
        values[key] = value
        decisions.append(Decision(key, outcome, value, want, have))
    if conflicts:
        raise StateConflict(conflict_message(conflicts))
    return Merge(values, decisions)


def check_overwrite_keys(overwrite: list[str], stack: StackConfig) -> None:
    """``overwrite_host`` may only name keys the merge knows."""
    keys = flatten(stack.template_data())
    unknown = sorted(set(overwrite) - set(keys))
    if unknown:
        raise StackDataError(f"inventory data overwrite_host: unknown keys {unknown} "
                             f"(keys are {', '.join(sorted(keys))})")


def conflict_message(conflicts: list[tuple[str, Any, Any, Any]]) -> str:
    lines = ["the inventory and the host both changed these keys since the last deploy; nothing "
             "was changed:"]
    for key, before, want, have in conflicts:
        lines.append(f"  {key}: last deployed {show(before)}, inventory now {show(want)}, "
                     f"host now {show(have)}")
    keys = ",".join(k for k, *_ in conflicts)
    scalars = " ".join(f"--data {k}={json.dumps(h)}" for k, _, _, h in conflicts if "." not in k)
    lines.append("Resolve it one of two ways:")
    lines.append("  1. keep the host's value: put it in the inventory (group_data/all.py or host data"
                 + (f", or {scalars}" if scalars else "") + ")")
    lines.append("  2. overwrite the host with the inventory's: run the deploy with "
                 f"--data overwrite_host={keys}")
    return "\n".join(lines)


def merged_stack(desired: StackConfig, result: Merge) -> StackConfig:
    """The stack the host runs after the merge."""
    return StackConfig.model_validate({**desired.template_data(), **unflatten(result.values)})


def parse_state_file(text: str | None, path: str) -> dict[str, Any] | None:
    """A host's stack.json / last-applied.json text (None: absent) -> flat values."""
    if not text or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise StackDataError(f"{path} on the host is not valid JSON ({e}); fix or remove it") from None
    if not isinstance(data, dict):
        raise StackDataError(f"{path} on the host is not a JSON object; fix or remove it")
    return flatten(data)


def state_json(stack: StackConfig) -> str:
    """stack.json / last-applied.json text, as ``gourmetgram canary`` writes it too."""
    return json.dumps(stack.template_data(), indent=2, sort_keys=True) + "\n"


def _recorded(entry: Mapping[str, Any], key: str) -> Any:
    """The value a canary history line recorded for ``key`` (weight, model versions)."""
    if key == "canary_weight":
        return entry.get("canary_weight")
    if key.startswith("models."):
        return {"version": entry.get("versions", {}).get(key.split(".", 1)[1])}
    return None


def provenance(last: Mapping[str, Any] | None, live: Mapping[str, Any],
               history: list[dict[str, Any]]) -> dict[str, str]:
    """Where each live value came from: the last deploy, or the newest host command
    (from the canary history) that set it."""
    out = {}
    for key, value in live.items():
        if last is not None and last.get(key) == value:
            out[key] = "deploy"
            continue
        probe = {"version": value.get("version")} if key.startswith("models.") else value
        who = next((h for h in reversed(history) if _recorded(h, key) == probe), None)
        out[key] = (f"host: canary {who['action']} at {_when(who['time'])}" if who
                    else "host (changed since the last deploy)")
    return out


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
