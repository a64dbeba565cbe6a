"""A load run's figures: percentiles, status classes, per-variant shares, and the
summary printed at the end of a run."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gourmetgram.load.spec import LoadResult, Record


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
        "retried": sum(1 for r in records if r.retried),
        "duration_s": duration,
        "throughput_rps": len(records) / duration if duration > 0 else 0.0,
        "latency_ms": {
            name: percentile(lat, q) * 1000
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "status": dict(sorted(statuses.items())),
        "variants": by_variant,
    }



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
                     + (f", {s['not_sent']} due but not sent" if s["not_sent"] else "")
                     + (f", {s['retried']} sent again after a closed connection"
                        if s["retried"] else "") + ")"),
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

