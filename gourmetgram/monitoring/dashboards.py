"""Builds the Grafana dashboards in grafana/dashboards/ from short panel lists.

Dashboards are kept as code: edit the lists below, run ``python -m gourmetgram.monitoring.dashboards``
and commit the regenerated JSON (a test fails while the JSON and this module disagree).
Panels are laid out left to right on Grafana's 24-column grid, so ids and positions are
always unique and never overlap. Every ``expr`` is evaluated against a real Prometheus by
tests/prometheus/test_queries.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gourmetgram.host.render import REPO_ROOT
from gourmetgram.monitoring.config import PROMETHEUS_DATASOURCE_UID, load_thresholds

DASHBOARDS_DIR = REPO_ROOT / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": PROMETHEUS_DATASOURCE_UID}
# The alerts' thresholds and selectors (prometheus/thresholds.yml): a panel's red line is
# where its alert fires, and it reads the same series.
LIMITS = load_thresholds()
API = LIMITS.predict_selector
FS = LIMITS.filesystem_selector


@dataclass
class T:
    """One query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class P:
    """One panel: ``kind`` is a Grafana panel type, ``w``/``h`` its size in grid units."""

    title: str
    targets: list[T]
    kind: str = "timeseries"
    unit: str = "short"
    w: int = 12
    h: int = 8
    description: str = ""
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    mappings: list[dict] = field(default_factory=list)
    table: bool = False
    # Merged into the panel's "options" (e.g. a stat's textMode).
    options: dict = field(default_factory=dict)
    transformations: list[dict] = field(default_factory=list)


@dataclass
class Row:
    title: str


@dataclass
class Dashboard:
    folder: str
    uid: str
    title: str
    description: str
    items: list[P | Row]
    tags: list[str] = field(default_factory=lambda: ["gourmetgram"])
    annotations: list[dict] = field(default_factory=list)

    def path(self) -> Path:
        return DASHBOARDS_DIR / self.folder / f"{self.uid}.json"


def _panel_json(p: P, pid: int, x: int, y: int) -> dict:
    steps = [{"color": "green", "value": None}] + [
        {"color": color, "value": value} for value, color in p.thresholds
    ]
    panel = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p.w, "h": p.h},
        "fieldConfig": {
            "defaults": {
                "unit": p.unit,
                "mappings": p.mappings,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                               "calcs": []},
                    **p.options},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend,
                "instant": t.instant or p.table,
                "range": not (t.instant or p.table),
                **({"format": "table"} if p.table else {}),
            }
            for i, t in enumerate(p.targets)
        ],
    }
    if p.transformations:
        panel["transformations"] = p.transformations
    if p.thresholds and p.kind == "timeseries":
        panel["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return panel


def build(d: Dashboard) -> dict:
    panels, x, y, row_h, pid = [], 0, 0, 0, 1
    for item in d.items:
        if isinstance(item, Row):
            if x:
                y, x, row_h = y + row_h, 0, 0
            panels.append({"id": pid, "type": "row", "title": item.title, "collapsed": False,
                           "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
            pid, y = pid + 1, y + 1
            continue
        if x + item.w > 24:
            y, x, row_h = y + row_h, 0, 0
        panels.append(_panel_json(item, pid, x, y))
        pid, x, row_h = pid + 1, x + item.w, max(row_h, item.h)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": d.tags,
        "timezone": "browser",
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": [{"datasource": DATASOURCE, **a} for a in d.annotations]},
        "panels": panels,
    }


def _quantiles(selector: str, window: str = "1m") -> list[T]:
    return [
        T(f"histogram_quantile({q}, sum by (variant, le) "
          f"(rate(http_request_duration_seconds_bucket{{{selector}}}[{window}])))",
          f"p{int(q * 100)} {{{{variant}}}}")
        for q in (0.5, 0.95, 0.99)
    ]


def _avg(metric: str, window: str = "1m", sel: str = 'job="food11"') -> str:
    return (f"sum by (variant) (rate({metric}_sum{{{sel}}}[{window}])) / "
            f"sum by (variant) (rate({metric}_count{{{sel}}}[{window}]))")


DRIFT_STATE = [{"type": "value", "options": {
    "0": {"text": "OFF", "color": "red", "index": 0},
    "1": {"text": "BOOTSTRAPPING", "color": "yellow", "index": 1},
    "2": {"text": "ARMED", "color": "green", "index": 2},
}}]
UP_DOWN = [{"type": "value", "options": {
    "0": {"text": "DOWN", "color": "red", "index": 0},
    "1": {"text": "UP", "color": "green", "index": 1},
}}]

SERVICE = Dashboard(
    folder="Food classifier", uid="food11-service", title="Food Classifier Service Monitoring",
    description="The lab's service panels, split by variant (production, canary).",
    items=[
        P("API instances", [T('up{job="food11"}', "{{variant}}")], kind="stat", w=6, h=4,
          mappings=UP_DOWN, description="1 while Prometheus can scrape the instance."),
        P("Model served", [T("model_info", "{{variant}} {{version}} {{device}}")], kind="table",
          w=18, h=4, table=True),
        P("Average request duration (ms)",
          [T(f"1000 * {_avg('http_request_duration_seconds', sel=API)}", "{{variant}}")], unit="ms"),
        P("Request duration quantiles", _quantiles(API), unit="s",
          thresholds=[(LIMITS.latency_p95_seconds, "red")],
          description=f"HighPredictLatency fires when p95 (5 m) is above "
                      f"{LIMITS.latency_p95_seconds:g} s."),
        P("Requests per second",
          [T(f"sum by (variant, status) (rate(http_requests_total{{{API}}}[1m]))",
             "{{variant}} {{status}}")], unit="reqps"),
        P("Failed requests per second",
          [T(f'sum by (variant, status) (rate(http_requests_total{{{API}, status=~"4xx|5xx"}}[1m]))',
             "{{variant}} {{status}}")], unit="reqps",
          thresholds=[(LIMITS.failed_requests_per_second, "red")],
          description=f"4xx and 5xx, as in the lab: its alert fires above "
                      f"{LIMITS.failed_requests_per_second:g}/s (all variants) for "
                      f"{LIMITS.failed_requests_for}."),
        P("Server errors (5xx) share",
          [T("variant:food11_predict_server_error_ratio:rate5m", "5xx {{variant}}"),
           T("variant:food11_predict_client_error_ratio:rate5m", "4xx {{variant}}")],
          unit="percentunit", thresholds=[(LIMITS.server_error_ratio_above, "red")],
          description=f"Share of /predict answered 5xx (server) and 4xx (client) over 5 "
                      f"minutes; HighServerErrorRate fires on 5xx above "
                      f"{LIMITS.server_error_ratio_above:g}."),
        P("Requests in flight", [T('sum by (variant) (http_requests_in_flight{job="food11"})',
                                   "{{variant}}")], w=8),
        P("Preprocess and inference time (ms)",
          [T(f"1000 * {_avg('preprocess_duration_seconds')}", "preprocess {{variant}}"),
           T(f"1000 * {_avg('inference_duration_seconds')}", "inference {{variant}}")],
          unit="ms", w=8),
        P("Images per forward pass", [T(_avg("inference_batch_size"), "{{variant}}")], w=8),
        Row("Web app"),
        P("Web requests per second",
          [T('sum by (route, status) (rate(web_requests_total{job="web"}[1m]))',
             "{{route}} {{status}}")], unit="reqps", w=8),
        P("Web request duration p95",
          [T('histogram_quantile(0.95, sum by (route, le) '
             '(rate(web_request_duration_seconds_bucket{job="web"}[1m])))', "{{route}}")],
          unit="s", w=8),
        P("Web upstream failures per second",
          [T('sum by (reason) (rate(web_upstream_failures_total{job="web"}[1m]))', "{{reason}}")],
          unit="reqps", w=8),
    ],
)

PREDICTIONS = Dashboard(
    folder="Food classifier", uid="food11-predictions",
    title="Food Classifier Prediction Monitoring",
    description="The lab's prediction panels, split by variant.",
    items=[
        P("Average prediction confidence",
          [T(_avg("prediction_confidence"), "{{variant}}")], unit="percentunit",
          thresholds=[(LIMITS.low_confidence_below, "transparent")],
          description=f"The lab's alert fires below {LIMITS.low_confidence_below:g} (all "
                      f"variants) for {LIMITS.low_confidence_for}."),
        P("Prediction confidence buckets over time",
          [T('sum by (variant, le) (rate(prediction_confidence_bucket{job="food11", le!="+Inf"}[1m]))',
             "{{variant}} le {{le}}")], unit="reqps"),
        P("Prediction confidence histogram (selected range)",
          [T('sum by (variant, le) (increase(prediction_confidence_bucket{job="food11", le!="+Inf"}'
             "[$__range]))", "{{variant}} le {{le}}", instant=True)], kind="bargauge"),
        P("Predicted class totals (selected range)",
          [T('sum by (variant, class_name) (increase(predicted_class_total{job="food11"}[$__range]))',
             "{{variant}} {{class_name}}", instant=True)], kind="bargauge"),
    ],
)

DRIFT = Dashboard(
    folder="Food classifier", uid="food11-drift", title="Food Classifier Drift Monitoring",
    description="Online drift detection on the features of each prediction, by variant.",
    items=[
        P("Drift detector state",
          [T('clamp_max(2 * max by (variant) (drift_detector_state{job="food11", state="armed"})'
             ' + max by (variant) (drift_detector_state{job="food11", state="bootstrapping"}), 2)'
             ' or max by (variant) (0 * up{job="food11"})', "{{variant}}")],
          kind="stat", w=4, h=6, mappings=DRIFT_STATE,
          description="ARMED: testing every prediction; BOOTSTRAPPING: collecting the first "
                      "predictions as the reference (no drift reference configured); OFF: "
                      "drift detection disabled (or not exported)."),
        P("Reference samples", [T('max by (variant) (drift_reference_samples{job="food11"})',
                                  "{{variant}}")], kind="stat", w=4, h=6,
          description="Samples in the reference; while bootstrapping, collected so far "
                      "(FOOD11_DRIFT_BOOTSTRAP_SAMPLES to go)."),
        P("Drift events per second",
          [T('sum by (variant) (rate(drift_events_total{job="food11"}[1m]))', "{{variant}}")],
          w=16, h=6, thresholds=[(1, "red")]),
        P("Median drift score and threshold",
          [T('histogram_quantile(0.5, sum by (variant, le) '
             '(rate(drift_test_stat_bucket{job="food11"}[1m])))', "median {{variant}}"),
           T('max by (variant) (drift_threshold{job="food11"})', "threshold {{variant}}")]),
        P("Drift alarms per sample over the false-alarm rate",
          [T("variant:drift_alarms_per_expected:ratio", "{{variant}}")],
          thresholds=[(LIMITS.drift_alarm_rate_factor, "red")],
          description=f"Alarms per tested sample over {LIMITS.drift_window}, times the "
                      f"detector's ERT: about 1 without drift at any traffic. DriftDetected "
                      f"fires above {LIMITS.drift_alarm_rate_factor:g} (with at least "
                      f"{LIMITS.drift_min_samples} samples) for {LIMITS.drift_for}."),
        P("Samples checked and dropped per second",
          [T('sum by (variant) (rate(drift_samples_total{job="food11"}[1m]))', "checked {{variant}}"),
           T('sum by (variant) (rate(drift_samples_dropped_total{job="food11"}[1m]))',
             "dropped {{variant}}")], unit="reqps",
          description="Dropped: features the detector could not take in time (queue full)."),
    ],
)

def _mapping(texts: dict[int, tuple[str, str]]) -> list[dict]:
    return [{"type": "value", "options": {
        str(v): {"text": text, "color": color, "index": i}
        for i, (v, (text, color)) in enumerate(texts.items())}}]


# The automated canary analysis (gourmetgram canary run, job canary-analysis). A verdict
# is encoded as one number per check so that a state timeline shows its history.
VERDICT_CODE = {"skipped": 0, "pass": 1, "inconclusive": 2, "fail": 3}
VERDICT_EXPR = " + ".join(
    f'{code} * max by (check) (canary_analysis_check_verdict{{verdict="{v}"}})'
    for v, code in VERDICT_CODE.items() if code)
ANALYSIS_PANELS = [
    P("Controller", [T('max(up{job="canary-analysis"})', "controller")], kind="stat", w=4, h=5,
      mappings=_mapping({0: ("OFF", "gray"), 1: ("RUNNING", "green")}),
      description="RUNNING while Prometheus scrapes gourmetgram-canary-controller (always on, "
                  "idle between rollouts); OFF means it is not running."),
    P("Last decision", [T("max by (decision) (canary_analysis_last_decision) == 1",
                          "{{decision}}", instant=True)],
      kind="stat", w=5, h=5, options={"textMode": "name", "colorMode": "none"},
      description="advance, hold, promote, rollback, pause (Prometheus unreachable), "
                  "wait-approval (manual gate) or stopped (weight set to 0 by hand)."),
    P("Since the last decision",
      [T("time() - max(canary_analysis_last_decision_timestamp_seconds > 0)", "age")],
      kind="stat", unit="s", w=4, h=5,
      description="Seconds since the controller last decided; it decides every "
                  "CANARY_ANALYSIS_INTERVAL_S (60 s by default)."),
    P("Weight and step", [T("max(canary_analysis_weight)", "weight %"),
                          T("max(canary_analysis_step)", "steps taken")],
      kind="stat", w=5, h=5,
      description="Canary weight after the last decision (%) and the weight steps taken "
                  "in this rollout."),
    P("Failed analyses", [T("max(canary_analysis_failed_checks)", "failed")],
      kind="stat", w=3, h=5, thresholds=[(1, "orange"), (2, "red")],
      description="Analyses with a failed check in this rollout; the controller rolls back "
                  "at CANARY_ANALYSIS_FAILED_CHECKS_THRESHOLD (2 by default)."),
    P("Prometheus", [T("min(canary_analysis_prometheus_up)", "reads")], kind="stat", w=3, h=5,
      mappings=_mapping({0: ("PAUSED", "red"), 1: ("READ", "green")}),
      description="PAUSED when the last analysis could not read Prometheus: the controller "
                  "waits and changes no weight."),
    P("Check verdicts", [T(VERDICT_EXPR, "{{check}}")], kind="state-timeline", w=24, h=7,
      mappings=_mapping({0: ("skipped", "gray"), 1: ("pass", "green"),
                         2: ("inconclusive", "yellow"), 3: ("fail", "red")}),
      options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.8},
      description="Each check's verdict at each analysis: inconclusive below the minimum "
                  "request count or without data (never a failure), skipped when the "
                  "metric is not exported."),
    P("p-values of the checks", [T("max by (check) (canary_analysis_check_p_value)", "{{check}}")],
      w=12, thresholds=[(0.01, "transparent")],
      description="One-sided p-value of each check's \"canary is worse\" test; a check can "
                  "fail only below CANARY_ANALYSIS_ALPHA (line: the default 0.01) and "
                  "beyond its tolerance."),
    P("Compared values (last analysis)",
      [T("max by (check, variant) (canary_analysis_check_value)", "{{check}} {{variant}}")],
      kind="table", table=True, w=12,
      transformations=[{"id": "groupingToMatrix", "options": {
          "columnField": "variant", "rowField": "check", "valueField": "Value"}}],
      description="The numbers each check compared: 5xx rate, latency quantile (s), mean "
                  "confidence, class-mix divergence (bits; production 0), drift event rate."),
]
# One annotation per decision, at the decision's own time: the timestamp gauge's value
# (ms) is the annotation time, labelled with the decision taken then.
DECISION_ANNOTATION = {
    "name": "Canary decisions", "enable": True, "iconColor": "purple",
    "expr": "1000 * max by (job, instance) (canary_analysis_last_decision_timestamp_seconds > 0)"
            " * on (job, instance) group_left (decision) (canary_analysis_last_decision == 1)",
    "step": "10s", "useValueForTime": True, "titleFormat": "canary: {{decision}}",
    "textFormat": "gourmetgram canary run decided {{decision}}", "tagKeys": "decision",
}

CANARY = Dashboard(
    folder="Canary", uid="gourmetgram-canary", title="Canary",
    description="Production and canary side by side while traffic moves to the canary.",
    items=[
        P("Traffic weight", [T("max(canary_weight)", "canary"),
                             T("100 - max(canary_weight)", "production")],
          kind="stat", unit="percent", w=6, h=6,
          description="Configured share of /api/ traffic (gourmetgram canary set)."),
        P("Observed request share",
          [T("variant:food11_predict_requests:rate1m / scalar(sum(variant:food11_predict_requests:rate1m))",
             "{{variant}}")], unit="percentunit", w=9, h=6),
        P("Requests in the last 10 minutes",
          [T("variant:food11_predict_requests:increase10m", "{{variant}}")], kind="stat", w=9, h=6,
          description=f"The canary alerts wait for {LIMITS.canary_min_requests} canary "
                      "requests in 10 minutes (canary_min_requests)."),
        P("Error ratios (5xx server, 4xx client)",
          [T("variant:food11_predict_server_error_ratio:rate5m", "5xx {{variant}}"),
           T("variant:food11_predict_client_error_ratio:rate5m", "4xx {{variant}}")],
          unit="percentunit",
          description="CanaryErrorRateHigher compares the 5xx ratios, "
                      "CanaryClientErrorRateHigher the 4xx ratios."),
        P("Latency quantiles",
          [T(f"variant:food11_predict_duration_seconds:p{q}_5m", f"p{q} {{{{variant}}}}")
           for q in (50, 95, 99)], unit="s"),
        P("Average confidence", [T("variant:prediction_confidence:avg5m", "{{variant}}")],
          unit="percentunit", thresholds=[(LIMITS.low_confidence_below, "transparent")]),
        P("Class mix",
          [T('sum by (variant, class_name) (rate(predicted_class_total{job="food11"}[5m])) '
             '/ on (variant) group_left () '
             'sum by (variant) (rate(predicted_class_total{job="food11"}[5m]))',
             "{{variant}} {{class_name}}")], unit="percentunit"),
        P("Drift events (10 minutes)",
          [T('sum by (variant) (increase(drift_events_total{job="food11"}[10m]))', "{{variant}}")]),
        P("Models", [T("model_info", "{{variant}} {{version}}")], kind="table", table=True),
        P("Firing alerts", [T('ALERTS{alertstate="firing"}', "{{alertname}}")], kind="table",
          table=True, w=24, h=7,
          description="Prometheus alerts firing now; canary alerts are muted in Alertmanager "
                      "while the canary weight is 0."),
        Row("Canary analysis"),
        *ANALYSIS_PANELS,
    ],
    annotations=[DECISION_ANNOTATION],
)

INFRA = Dashboard(
    folder="Infrastructure", uid="gourmetgram-infrastructure", title="Infrastructure",
    description="The host, the stack's services (per systemd unit), Nginx and the GPU.",
    items=[
        P("CPU busy", [T('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m]))',
                         "{{instance}}")], unit="percentunit", w=8,
          thresholds=[(LIMITS.host_cpu_busy_above, "red")]),
        P("Memory used", [T("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", "used"),
                          T("node_memory_MemTotal_bytes", "total")], unit="bytes", w=8),
        P("Disk free", [T(f"node_filesystem_avail_bytes{{{FS}}} / node_filesystem_size_bytes{{{FS}}}",
                          "{{mountpoint}}")], unit="percentunit", w=8,
          thresholds=[(LIMITS.host_disk_free_below, "red")]),
        P("Disk I/O", [T("sum by (device) (rate(node_disk_read_bytes_total[1m]))", "read {{device}}"),
                       T("sum by (device) (rate(node_disk_written_bytes_total[1m]))",
                         "write {{device}}")], unit="Bps", w=8),
        P("Network", [T('sum by (device) (rate(node_network_receive_bytes_total{device!="lo"}[1m]))',
                        "in {{device}}"),
                      T('sum by (device) (rate(node_network_transmit_bytes_total{device!="lo"}[1m]))',
                        "out {{device}}")], unit="Bps", w=8),
        P("Load average", [T("node_load1", "1m"), T("node_load5", "5m")], w=8),
        Row("Services (per systemd unit)"),
        P("CPU per service",
          [T('sum by (groupname) (rate(namedprocess_namegroup_cpu_seconds_total{job="process"}[1m]))',
             "{{groupname}}")], unit="percentunit"),
        P("Resident memory per service",
          [T('sum by (groupname) (namedprocess_namegroup_memory_bytes{job="process", memtype="resident"})',
             "{{groupname}}")], unit="bytes"),
        P("Threads per service",
          [T('sum by (groupname) (namedprocess_namegroup_num_threads{job="process"})', "{{groupname}}")]),
        P("systemd unit states",
          [T('max by (name, state) (node_systemd_unit_state{state=~"active|failed|activating"}) == 1',
             "{{name}} {{state}}")], kind="table", table=True),
        P("Scrape targets", [T("up", "{{job}} {{instance}}")], kind="table", table=True, w=24, h=6),
        Row("Nginx"),
        P("Nginx connections",
          [T("nginx_connections_active", "active"), T("nginx_connections_reading", "reading"),
           T("nginx_connections_writing", "writing"), T("nginx_connections_waiting", "waiting")]),
        P("Nginx requests per second", [T("rate(nginx_http_requests_total[1m])", "requests")],
          unit="reqps"),
        Row("GPU (hosts with gpu: true)"),
        P("GPU utilisation", [T("nvidia_smi_utilization_gpu_ratio", "{{uuid}}")],
          unit="percentunit", w=8),
        P("GPU memory used", [T("nvidia_smi_memory_used_bytes", "{{uuid}}")],
          unit="bytes", w=8),
        P("GPU temperature", [T("nvidia_smi_temperature_gpu", "{{uuid}}")],
          unit="celsius", w=8),
    ],
)


def feedback_dashboard() -> Dashboard:
    """Feedback and online accuracy (the web app's feedback_* metrics, docs/feedback.md)."""
    web = 'job="web"'
    by = "variant, model_version"
    legend = "{{variant}} {{model_version}}"
    return Dashboard(
        folder="Food classifier", uid="food11-feedback", title="Food Classifier Feedback",
        description="People's right/wrong answers, the operator's labels, and the online "
                    "accuracy estimated from the labelled random and low-confidence samples.",
        items=[
            P("Estimated online accuracy (95% interval)",
              [T(f"max by ({by}) (feedback_accuracy{{{web}}})", f"{legend}"),
               T(f"max by ({by}) (feedback_accuracy_lower{{{web}}})", f"lower {legend}"),
               T(f"max by ({by}) (feedback_accuracy_upper{{{web}}})", f"upper {legend}")],
              unit="percentunit", w=16,
              description="Weighted for how each labelled photo was sampled (Hajek estimator); "
                          "the alert FeedbackAccuracyLow fires when the upper end is too low."),
            P("Labels behind the estimate",
              [T(f"max by ({by}) (feedback_accuracy_labels{{{web}}})", legend)], kind="stat",
              w=8),
            P("Answers per hour by kind",
              [T(f"sum by ({by}, kind) (increase(feedback_total{{{web}}}[1h]))",
                 "{{variant}} {{model_version}} {{kind}}")], w=12),
            # The store's totals, not increase() over the range: the web app reads them
            # from the store (they never reset), and the answer that creates a series
            # (a version's first "wrong") is one increase() cannot see: 0 / 0 then.
            P("Share of answers saying wrong (all answers kept)",
              [T(f'(sum by ({by}) (feedback_total{{{web}, kind="wrong"}}) or '
                 f"0 * sum by ({by}) (feedback_total{{{web}}})) / "
                 f"sum by ({by}) (feedback_total{{{web}}})", legend,
                 instant=True)], kind="bargauge", unit="percentunit", w=12,
              description="Of all answers people gave per variant and version (the feedback "
                          "store's totals). Self-selected: people answer more often when the "
                          "answer is wrong; not an accuracy."),
            P("Photos kept by queue",
              [T(f"sum by (queue) (feedback_kept_total{{{web}}})", "{{queue}}")], w=8),
            P("Photos labelled by queue",
              [T(f"sum by (queue) (feedback_labelled_total{{{web}}})", "{{queue}}")], w=8),
            P("Feedback store", [T(f"min(feedback_store_up{{{web}}})", "store")], kind="stat",
              w=8, mappings=UP_DOWN, description="0 when the web app cannot read its store."),
        ],
    )


DASHBOARDS = [SERVICE, PREDICTIONS, DRIFT, CANARY, INFRA, feedback_dashboard()]


def rendered() -> dict[Path, str]:
    return {d.path(): json.dumps(build(d), indent=2) + "\n" for d in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    """Writes the JSON files (``--check``: only report whether they are up to date)."""
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in stale:
        print(("stale: " if check else "wrote: ") + str(path.relative_to(REPO_ROOT)))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
