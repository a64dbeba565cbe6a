"""The set of files the deploy writes for monitoring (gourmetgram.monitoring.config.host_files)
is complete and self-consistent: the rules land where prometheus.yml looks for them,
the dashboards where Grafana's provider looks, every daemon gets its /etc/default."""

from __future__ import annotations

import fnmatch
import json

import yaml

from gourmetgram.host.render import render
from gourmetgram.host.stack import load_stack
from gourmetgram.monitoring import config as monitoring

SERVICES = {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
            "prometheus-process-exporter", "prometheus-nginx-exporter", "grafana-server"}


def test_host_files_are_consistent():
    stack = load_stack()
    files = monitoring.host_files(stack)
    assert all(path.startswith("/") for path in files)
    assert {service for _, service in files.values()} == SERVICES
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"][0])
    (rule_glob,) = config["rule_files"]
    rules = [p for p in files if fnmatch.fnmatch(p, rule_glob)]
    assert sorted(p.rsplit("/", 1)[1] for p in rules) == sorted(monitoring.render_rules(stack))
    for name in SERVICES - {"grafana-server"}:
        assert files[f"/etc/default/{name}"][0].splitlines()[-1].startswith('ARGS="')
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/gourmetgram.yml"][0])
    root = provider["providers"][0]["options"]["path"]
    titles = {json.loads(text)["title"] for path, (text, _) in files.items()
              if path.startswith(root + "/") and path.endswith(".json")}
    assert len(titles) == 6


def test_thresholds_reach_the_host_rules():
    files = monitoring.host_files(load_stack(),
                                  monitoring.load_thresholds({"failed_requests_per_second": 42}))
    assert "status=~\"4xx|5xx\"}[1m])) > 42" in files["/etc/prometheus/rules/food11.rules.yml"][0]


def test_prometheus_template_renders_from_plain_inventory_data():
    """A deploy that renders prometheus.yml.j2 with only the inventory data gets the
    same file as render_prometheus_config (rules in the default place)."""
    stack = load_stack()
    assert render("prometheus/prometheus.yml.j2", stack.template_data()) == (
        monitoring.render_prometheus_config(stack))
