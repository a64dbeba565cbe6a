"""Golden files of every monitoring render with the default inventory data (and a GPU
host, a webhook), so a template change shows up as a reviewable diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from gourmetgram.host.stack import load_stack
from gourmetgram.monitoring import config as monitoring
from tests.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"
WEBHOOK = {"alert_webhook_url": "https://hooks.example.org/gourmetgram"}


def renders() -> dict[str, str]:
    default = load_stack()
    out = {
        "prometheus.yml": monitoring.render_prometheus_config(default),
        "prometheus-gpu.yml": monitoring.render_prometheus_config(load_stack({"gpu": True})),
        "alertmanager.yml": monitoring.render_alertmanager_config(default),
        "alertmanager-webhook.yml": monitoring.render_alertmanager_config(load_stack(WEBHOOK)),
        "process-exporter.yml": monitoring.render_process_exporter_config(default),
        **monitoring.render_rules(default),
    }
    for name, args in monitoring.daemon_args(default).items():
        out[f"default-{name}"] = monitoring.render_default_args(name, args)
    return out


@pytest.mark.parametrize("name", sorted(renders()))
def test_render_matches_golden(name):
    check_golden(GOLDEN / name, renders()[name])
