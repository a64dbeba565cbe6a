"""Rendered Prometheus and Alertmanager configs pass the real promtool and amtool; every
alert has its labels, annotations and unit tests (firing and silent); thresholds come
from the one file and bad values are refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gourmetgram.host.render import REPO_ROOT
from gourmetgram.host.stack import StackDataError, load_stack
from gourmetgram.monitoring import config as monitoring

UNIT_TESTS = Path(__file__).parent / "alerts_test.yml"
SEVERITIES = {"critical", "warning", "info"}


def run(argv: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert p.returncode == 0, f"{argv}\n{p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in monitoring.render_rules(load_stack()).items():
        (rules / name).write_text(text)
    return rules


def all_rules(texts: dict[str, str]) -> list[dict]:
    return [r for t in texts.values() for g in yaml.safe_load(t)["groups"] for r in g["rules"]]


@pytest.mark.parametrize("gpu", [False, True])
def test_prometheus_config_passes_promtool(tmp_path, rules_dir, gpu):
    config = monitoring.render_prometheus_config(load_stack({"gpu": gpu}), str(rules_dir))
    (tmp_path / "prometheus.yml").write_text(config)
    out = run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")])
    assert "3 rule files found" in out
    jobs = {j["job_name"]: j for j in yaml.safe_load(config)["scrape_configs"]}
    assert ("gpu" in jobs) is gpu
    assert set(jobs) - {"gpu"} == {"food11", "web", "node", "process", "nginx", "alertmanager",
                                   "canary-analysis", "mtail", "prometheus"}
    assert jobs["canary-analysis"]["static_configs"][0]["targets"] == ["127.0.0.1:9310"]
    variants = {c["labels"]["variant"]: c["targets"] for c in jobs["food11"]["static_configs"]}
    assert variants == {"production": ["127.0.0.1:8000"], "canary": ["127.0.0.1:8001"]}


def test_scrape_interval_and_retention_come_from_the_data():
    stack = load_stack({"scrape_interval": "7s", "prometheus_retention": "30d"})
    config = yaml.safe_load(monitoring.render_prometheus_config(stack))
    assert config["global"]["scrape_interval"] == "7s"
    args = monitoring.daemon_args(stack)["prometheus"]
    assert "--storage.tsdb.retention.time=30d" in args
    assert "--web.listen-address=127.0.0.1:9090" in args


def test_every_daemon_listens_on_the_bind_address_only():
    stack = load_stack({"bind_address": "10.1.2.3"})
    for name, args in monitoring.daemon_args(stack).items():
        listen = [a for a in args if "listen-address=" in a]
        assert listen and all("=10.1.2.3:" in a or a.endswith("=") for a in listen), (name, listen)
    text = monitoring.render_default_args("prometheus", monitoring.daemon_args(stack)["prometheus"])
    assert text.splitlines()[-1].startswith('ARGS="--config.file=/etc/prometheus/prometheus.yml ')


def test_rules_pass_promtool_check(rules_dir):
    out = run(["promtool", "check", "rules", *sorted(map(str, rules_dir.glob("*.yml")))])
    assert out.count("SUCCESS") == len(monitoring.RULE_TEMPLATES)


def test_rule_unit_tests_pass(rules_dir):
    shutil.copy(UNIT_TESTS, rules_dir / UNIT_TESTS.name)
    assert "SUCCESS" in run(["promtool", "test", "rules", UNIT_TESTS.name], cwd=rules_dir)


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    alerts = monitoring.alert_names(monitoring.render_rules(load_stack()))
    fires, silent = set(), set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert set(alerts) - fires == set(), "alerts without a firing test"
    assert set(alerts) - silent == set(), "alerts without a silent test"


def test_every_alert_is_documented_and_labelled():
    docs = (REPO_ROOT / "docs" / "monitoring.md").read_text()
    for rule in all_rules(monitoring.render_rules(load_stack())):
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert "for" in rule, name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor == name.lower().replace(" ", "-")
        assert f"### {name}" in docs, f"docs/monitoring.md has no section for {name}"


def test_lab_alerts_keep_the_lab_names_group_and_queries():
    texts = monitoring.render_rules(load_stack())
    groups = {g["name"]: g for t in texts.values() for g in yaml.safe_load(t)["groups"]}
    lab = {r["alert"]: r for r in groups["Food classifier"]["rules"]}
    assert lab["Failed requests"]["expr"] == (
        'sum(rate(http_requests_total{handler="/predict", status=~"4xx|5xx"}[1m])) > 20')
    assert lab["Failed requests"]["for"] == "1m"
    assert lab["Low prediction confidence"]["expr"] == (
        "sum(rate(prediction_confidence_sum[1m])) / sum(rate(prediction_confidence_count[1m])) < 0.75")
    assert groups["Food classifier"]["interval"] == "30s"


def test_thresholds_render_into_the_rules():
    t = monitoring.load_thresholds({"failed_requests_per_second": 5, "canary_min_requests": 250,
                                    "failed_requests_for": "3m"})
    rules = {r.get("alert"): r for r in all_rules(monitoring.render_rules(load_stack(), t))}
    assert rules["Failed requests"]["expr"].endswith("> 5")
    assert rules["Failed requests"]["for"] == "3m"
    assert ">= 250)" in rules["CanaryErrorRateHigher"]["expr"]


def test_every_threshold_is_commented_and_used():
    lines = monitoring.THRESHOLDS_FILE.read_text().splitlines()
    templates = "".join(p.read_text() for p in monitoring.RULE_TEMPLATES)
    for key in monitoring.Thresholds.model_fields:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        block = lines[max(0, i - 3):i]
        assert any(line.startswith("#") for line in block), f"{key} has no comment above it"
        assert f"t.{key}" in templates, f"{key} is not used by any rule"


@pytest.mark.parametrize("override,key", [
    ({"failed_requests_per_second": -1}, "failed_requests_per_second"),
    ({"low_confidence_below": 1.5}, "low_confidence_below"),
    ({"canary_for": "5 minutes"}, "canary_for"),
    ({"host_disk_free_below": "lots"}, "host_disk_free_below"),
    ({"canary_min_requests": 2.5}, "canary_min_requests"),
    ({"typo_threshold": 1}, "typo_threshold"),
])
def test_bad_thresholds_are_refused(override, key):
    with pytest.raises(monitoring.ThresholdsError, match=f"thresholds {key}"):
        monitoring.load_thresholds(override)


@pytest.mark.parametrize("override,key", [
    ({"alert_webhook_url": "ftp://x"}, "alert_webhook_url"),
    ({"alert_webhook_url": "http://a b"}, "alert_webhook_url"),
    ({"gpu": "maybe"}, "gpu"),
    ({"gpu_exporter_port": 0}, "gpu_exporter_port"),
    ({"nginx_status_port": 70000}, "nginx_status_port"),
    ({"canary_analysis_port": 0}, "canary_analysis_port"),
    ({"canary_analysis_port": "metrics"}, "canary_analysis_port"),
])
def test_bad_monitoring_inventory_data_is_refused(override, key):
    with pytest.raises(StackDataError, match=f"inventory data {key}"):
        load_stack(override)


def test_canary_analysis_job_follows_the_data_and_its_port_is_not_shared():
    stack = load_stack({"bind_address": "10.1.2.3", "canary_analysis_port": 19310})
    jobs = {j["job_name"]: j for j in yaml.safe_load(
        monitoring.render_prometheus_config(stack))["scrape_configs"]}
    assert jobs["canary-analysis"]["static_configs"][0]["targets"] == ["10.1.2.3:19310"]
    with pytest.raises(StackDataError, match=r"ports used twice on the bind address: \[9090\]"):
        load_stack({"canary_analysis_port": 9090})


@pytest.mark.parametrize("webhook", ["", "https://hooks.example.org/gg"])
def test_alertmanager_config_passes_amtool(tmp_path, webhook):
    path = tmp_path / "alertmanager.yml"
    path.write_text(monitoring.render_alertmanager_config(load_stack({"alert_webhook_url": webhook})))
    run(["amtool", "check-config", str(path)])

    def route(*labels: str) -> str:
        return run(["amtool", "config", "routes", "test", f"--config.file={path}", *labels]).split()[-1]

    expected = "webhook" if webhook else "record-only"
    assert route("alertname=ApiInstanceDown", "severity=critical") == expected
    assert route("alertname=Failed requests", "severity=warning") == expected
    assert route("alertname=CanaryIdle", "severity=info") == "record-only"
    config = yaml.safe_load(path.read_text())
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="CanaryIdle"']
    assert inhibit["target_matchers"] == ['variant="canary"']
    urls = [c["url"] for r in config["receivers"] for c in r.get("webhook_configs", [])]
    assert urls == ([webhook] if webhook else [])


def test_process_exporter_groups_by_systemd_unit():
    config = yaml.safe_load(monitoring.render_process_exporter_config(load_stack()))
    (matcher,) = config["process_names"]
    assert ".Cgroups" in matcher["name"]
    relabel = yaml.safe_load(monitoring.render_prometheus_config(load_stack()))
    process_job = next(j for j in relabel["scrape_configs"] if j["job_name"] == "process")
    regex = re.compile(process_job["metric_relabel_configs"][0]["regex"])
    m = regex.fullmatch(r"/system.slice/system-food11\x2dapi.slice/food11-api@canary.service")
    assert m and m.group(1) == "food11-api@canary"
    assert regex.fullmatch("/system.slice/nginx.service").group(1) == "nginx"
    assert regex.fullmatch("/user.slice/user-0.slice/session-1.scope") is None
