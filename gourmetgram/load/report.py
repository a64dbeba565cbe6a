"""A load run written to a folder: every request as CSV, the summary as JSON, and a plot."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from gourmetgram.load.spec import LoadResult, Record
from gourmetgram.load.summary import percentile

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
