"""Renders the monitoring configuration: Prometheus, its rules, Alertmanager, the
exporters' arguments and Grafana's files, all from the validated inventory data plus
the one thresholds file (``prometheus/thresholds.yml``).

The deploy and the tests both call these functions, so what the tests start is what a
host runs; tests pass their own paths, ports and a thresholds override (short ``for``,
lower limits) instead of editing files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gourmetgram.host.layout import HostLayout, host_layout
from gourmetgram.host.render import TEMPLATE_ROOT, render
from gourmetgram.host.stack import StackConfig

THRESHOLDS_FILE = TEMPLATE_ROOT / "prometheus" / "thresholds.yml"
RULE_TEMPLATES = sorted((TEMPLATE_ROOT / "prometheus" / "rules").glob("*.yml.j2"))
# Where the deploy puts the rendered rules and Prometheus' own config on a host.
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"
RULES_DIR = "/etc/prometheus/rules"
ALERTMANAGER_STORAGE_DIR = "/var/lib/prometheus/alertmanager"
PROMETHEUS_STORAGE_DIR = "/var/lib/prometheus/metrics2"
# Grafana's provisioned data sources; dashboards refer to these uids.
PROMETHEUS_DATASOURCE_UID = "gourmetgram-prometheus"
ALERTMANAGER_DATASOURCE_UID = "gourmetgram-alertmanager"

Duration = Field(pattern=r"^\d+(ms|s|m|h)$")
Share = Field(ge=0, le=1)


class Thresholds(BaseModel):
    """Typed mirror of prometheus/thresholds.yml (comments live in the file)."""

    model_config = ConfigDict(extra="forbid")

    predict_selector: str = Field(pattern=r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"')
    filesystem_selector: str = Field(pattern=r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"')
    lab_group_interval: str = Duration
    failed_requests_per_second: float = Field(ge=0)
    failed_requests_for: str = Duration
    low_confidence_below: float = Share
    low_confidence_for: str = Duration
    instance_down_for: str = Duration
    latency_p95_seconds: float = Field(gt=0)
    latency_p95_for: str = Duration
    server_error_ratio_above: float = Share
    server_errors_min_requests: int = Field(ge=0)
    server_errors_for: str = Duration
    drift_window: str = Duration
    drift_alarm_rate_factor: float = Field(ge=0)
    drift_min_samples: int = Field(ge=0)
    drift_for: str = Duration
    canary_min_requests: int = Field(ge=0)
    canary_error_ratio_factor: float = Field(ge=0)
    canary_error_ratio_margin: float = Field(ge=0)
    canary_latency_factor: float = Field(ge=0)
    canary_latency_margin_seconds: float = Field(ge=0)
    canary_for: str = Duration
    host_cpu_busy_above: float = Share
    host_cpu_for: str = Duration
    host_memory_available_below: float = Share
    host_memory_for: str = Duration
    host_disk_free_below: float = Share
    host_disk_for: str = Duration
    target_down_for: str = Duration
    unit_failed_for: str = Duration
    feedback_accuracy_below: float = Share
    feedback_min_labels: int = Field(ge=0)
    feedback_accuracy_for: str = Duration


class ThresholdsError(ValueError):
    """Bad thresholds file or override; the message names the key."""


def load_thresholds(overrides: Mapping[str, Any] | None = None,
                    path: Path = THRESHOLDS_FILE) -> Thresholds:
    data = yaml.safe_load(path.read_text()) or {}
    data.update(overrides or {})
    try:
        return Thresholds.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ThresholdsError(f"thresholds {key}: {first['msg']}") from None


def _number(v: Any) -> Any:
    """1.0 -> "1", 0.75 -> "0.75": thresholds read naturally in alert texts."""
    return f"{v:g}" if isinstance(v, float) else v


def _data(stack: StackConfig, layout: HostLayout | None = None, **extra: Any) -> dict[str, Any]:
    """Stack data plus the on-host paths (``layout``, one source: hostlayout)."""
    return {**stack.template_data(), "layout": (layout or host_layout()).template_data(), **extra}


def render_rules(stack: StackConfig, thresholds: Thresholds | None = None) -> dict[str, str]:
    """File name (without .j2) -> rendered rule file."""
    t = thresholds or load_thresholds()
    values = {k: _number(v) for k, v in t.model_dump().items()}
    return {
        p.name.removesuffix(".j2"): render(f"prometheus/rules/{p.name}", _data(stack, t=values))
        for p in RULE_TEMPLATES
    }


def render_prometheus_config(stack: StackConfig, rules_dir: str = RULES_DIR) -> str:
    return render("prometheus/prometheus.yml.j2", _data(stack, rules_dir=rules_dir))


def render_alertmanager_config(stack: StackConfig) -> str:
    return render("prometheus/alertmanager.yml.j2", _data(stack))


def render_process_exporter_config(stack: StackConfig) -> str:
    return render("prometheus/process-exporter.yml.j2", _data(stack))


def daemon_args(stack: StackConfig, layout: HostLayout | None = None, *,
                config_dir: str = PROMETHEUS_CONFIG_DIR,
                prometheus_storage: str = PROMETHEUS_STORAGE_DIR,
                alertmanager_storage: str = ALERTMANAGER_STORAGE_DIR,
                ) -> dict[str, list[str]]:
    """Command-line arguments of each monitoring daemon (Debian reads them from
    ``/etc/default/<package>`` as ``ARGS``): listen on the bind address only, retention
    from the data, the systemd and textfile collectors on."""
    b = stack.bind_address
    layout = layout or host_layout()
    return {
        "prometheus": [
            f"--config.file={config_dir}/prometheus.yml",
            f"--web.listen-address={b}:{stack.prometheus_port}",
            f"--storage.tsdb.path={prometheus_storage}",
            f"--storage.tsdb.retention.time={stack.prometheus_retention}",
            "--web.enable-lifecycle",
        ],
        "prometheus-alertmanager": [
            f"--config.file={config_dir}/alertmanager.yml",
            f"--web.listen-address={b}:{stack.alertmanager_port}",
            f"--storage.path={alertmanager_storage}",
            # One host, no peers: do not open the gossip port on any interface.
            "--cluster.listen-address=",
        ],
        "prometheus-node-exporter": [
            f"--web.listen-address={b}:{stack.node_exporter_port}",
            "--collector.systemd",
            "--collector.systemd.unit-include=" + SYSTEMD_UNITS_REGEX,
            # node_systemd_service_restart_total: the canary analysis's restarts check.
            "--collector.systemd.enable-restarts-metrics",
            f"--collector.textfile.directory={layout.textfile_dir}",
        ],
        "prometheus-process-exporter": [
            f"-web.listen-address={b}:{stack.process_exporter_port}",
            f"-config.path={config_dir}/process-exporter.yml",
            # Per-thread series and smaps (proportional memory) cost a full /proc walk of
            # every mapping on each scrape; resident memory from stat is enough here.
            "-threads=false",
            "-gather-smaps=false",
        ],
        "prometheus-nginx-exporter": [
            f"-web.listen-address={b}:{stack.nginx_exporter_port}",
            f"-nginx.scrape-uri=http://{b}:{stack.nginx_status_port}/stub_status",
        ],
    }


# The stack's own units, as the systemd collector and the "unit failed" alert see them.
SYSTEMD_UNITS_REGEX = (
    r"(food11-api@.+|gourmetgram-.+|nginx|prometheus|prometheus-.+|grafana-server)[.]service"
)


def render_default_args(name: str, args: list[str]) -> str:
    """The ``/etc/default/<name>`` file for a Debian monitoring package."""
    return render("prometheus/daemon.default.j2", {"name": name, "args": args})


def render_grafana(stack: StackConfig, layout: HostLayout | None = None) -> dict[str, str]:
    """Grafana file (relative to /etc/grafana) -> content."""
    data = _data(
        stack,
        layout,
        prometheus_uid=PROMETHEUS_DATASOURCE_UID,
        alertmanager_uid=ALERTMANAGER_DATASOURCE_UID,
    )
    return {
        "grafana.ini": render("grafana/grafana.ini.j2", data),
        "provisioning/datasources/gourmetgram.yml": render(
            "grafana/provisioning/datasources/gourmetgram.yml.j2", data),
        "provisioning/dashboards/gourmetgram.yml": render(
            "grafana/provisioning/dashboards/gourmetgram.yml.j2", data),
    }


# Which daemon reads which file: the deploy restarts or reloads only that one.
def host_files(stack: StackConfig, thresholds: Thresholds | None = None,
               layout: HostLayout | None = None) -> dict[str, tuple[str, str]]:
    """Every monitoring file of a host: absolute path -> (content, service that reads
    it). The deploy writes exactly these; nothing else in prometheus/ or grafana/ is
    meant to be copied as it is."""
    etc = PROMETHEUS_CONFIG_DIR
    layout = layout or host_layout()
    out: dict[str, tuple[str, str]] = {
        f"{etc}/prometheus.yml": (render_prometheus_config(stack), "prometheus"),
        f"{etc}/alertmanager.yml": (render_alertmanager_config(stack), "prometheus-alertmanager"),
        f"{etc}/process-exporter.yml": (render_process_exporter_config(stack),
                                        "prometheus-process-exporter"),
    }
    for name, text in render_rules(stack, thresholds).items():
        out[f"{RULES_DIR}/{name}"] = (text, "prometheus")
    for name, args in daemon_args(stack, layout).items():
        out[f"/etc/default/{name}"] = (render_default_args(name, args), name)
    for rel, text in render_grafana(stack, layout).items():
        out[f"/etc/grafana/{rel}"] = (text, "grafana-server")
    dashboards = TEMPLATE_ROOT / "grafana" / "dashboards"
    for path in sorted(dashboards.rglob("*.json")):
        out[f"{layout.grafana_dashboards_dir}/{path.relative_to(dashboards)}"] = (path.read_text(),
                                                                                 "grafana-server")
    return out


def alert_names(rule_texts: Mapping[str, str]) -> list[str]:
    names = []
    for text in rule_texts.values():
        for group in yaml.safe_load(text)["groups"]:
            names += [r["alert"] for r in group["rules"] if "alert" in r]
    return names

