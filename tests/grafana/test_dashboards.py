"""Grafana's files, proved without a Grafana server (none can be installed here): the
dashboards' structure, the provisioning that loads them, and the settings. Their
queries are evaluated by tests/prometheus/test_live_stack.py."""

from __future__ import annotations

import configparser
import itertools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from gourmetgram.host.layout import HostLayout
from gourmetgram.host.render import REPO_ROOT
from gourmetgram.host.stack import load_stack
from gourmetgram.monitoring import config as monitoring
from gourmetgram.monitoring import dashboards

DASHBOARD_FILES = sorted((REPO_ROOT / "grafana" / "dashboards").rglob("*.json"))
TITLES = {
    "Food Classifier Service Monitoring": "Food classifier",
    "Food Classifier Prediction Monitoring": "Food classifier",
    "Food Classifier Drift Monitoring": "Food classifier",
    "Canary": "Canary",
    "Infrastructure": "Infrastructure",
    "Food Classifier Feedback": "Food classifier",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def flat_panels(panels: list[dict]) -> list[dict]:
    return [q for p in panels for q in [p, *flat_panels(p.get("panels", []))]]


def by_title() -> dict[str, dict]:
    return {load(p)["title"]: load(p) for p in DASHBOARD_FILES}


def provisioned(dashboards_dir: str = "/var/lib/grafana/dashboards/gourmetgram") -> dict:
    return monitoring.render_grafana(load_stack(), HostLayout(grafana_dashboards_dir=Path(dashboards_dir)))


def test_committed_json_is_what_the_builder_makes():
    for path, text in dashboards.rendered().items():
        assert path.exists() and path.read_text() == text, (
            f"{path} is stale: run python -m gourmetgram.monitoring.dashboards")
    assert set(dashboards.rendered()) == set(DASHBOARD_FILES), "a dashboard file not made by the builder"


def test_the_six_dashboards_exist_in_their_folders():
    found = {load(p)["title"]: p.parent.name for p in DASHBOARD_FILES}
    assert found == TITLES
    uids = [load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids)


def structure_problems(dash: dict, uid: str) -> list[str]:
    """Everything Grafana would mis-render: repeated ids, bad or overlapping gridPos, a
    panel or query on another data source, a panel without a query."""
    problems = []
    panels = flat_panels(dash["panels"])
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        problems.append("panel ids repeat")
    boxes = []
    for p in panels:
        g = p["gridPos"]
        if not all(isinstance(g.get(k), int) for k in "xywh"):
            problems.append(f"{p['title']}: gridPos not integers")
            continue
        if g["x"] < 0 or g["y"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
            problems.append(f"{p['title']}: gridPos outside the 24-column grid")
        boxes.append((p["title"], g))
        if p["type"] == "row":
            continue
        if p["datasource"]["uid"] != uid:
            problems.append(f"{p['title']}: data source {p['datasource']['uid']}")
        if not p.get("targets"):
            problems.append(f"{p['title']}: no query")
        for t in p.get("targets", []):
            if t["datasource"]["uid"] != uid or not t.get("expr", "").strip():
                problems.append(f"{p['title']}: query {t['refId']} bad")
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr") is not None and (a["datasource"]["uid"] != uid or not a["expr"].strip()):
            problems.append(f"annotation {a['name']}: bad data source or query")
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
            problems.append(f"panels {a!r} and {b!r} overlap")
    return problems


def provisioned_uid() -> str:
    return yaml.safe_load(provisioned()["provisioning/datasources/gourmetgram.yml"])[
        "datasources"][0]["uid"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.stem for p in DASHBOARD_FILES])
def test_dashboard_structure(path):
    assert structure_problems(load(path), provisioned_uid()) == []


@pytest.mark.parametrize("breakage,expected", [
    (lambda ps: ps[1].update(id=ps[0]["id"]), "panel ids repeat"),
    (lambda ps: ps[1].update(gridPos=dict(ps[0]["gridPos"])), "overlap"),
    (lambda ps: ps[0]["gridPos"].update(x=20), "outside the 24-column grid"),
    (lambda ps: ps[0]["gridPos"].update(h=2.5), "not integers"),
    (lambda ps: ps[0].update(datasource={"type": "prometheus", "uid": "other"}), "data source other"),
    (lambda ps: ps[0]["targets"][0].update(expr=" "), "query A bad"),
])
def test_structure_check_catches_breakage(breakage, expected):
    dash = load(DASHBOARD_FILES[0])
    breakage([p for p in flat_panels(dash["panels"]) if p["type"] != "row"])
    assert any(expected in problem for problem in structure_problems(dash, provisioned_uid()))


def test_lab_panels_and_queries_are_kept():
    d = by_title()
    service = {p["title"]: p for p in flat_panels(d["Food Classifier Service Monitoring"]["panels"])}
    assert {"Average request duration (ms)", "Request duration quantiles", "Requests per second",
            "Failed requests per second"} <= set(service)
    exprs = [t["expr"] for t in service["Request duration quantiles"]["targets"]]
    assert [e.split(",")[0] for e in exprs] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"]
    prediction = {p["title"]: p for p in d["Food Classifier Prediction Monitoring"]["panels"]}
    assert len(prediction) == 4
    ranged = [t["expr"] for p in prediction.values() for t in p["targets"] if "$__range" in t["expr"]]
    assert len(ranged) == 2
    drift = " ".join(t["expr"] for p in d["Food Classifier Drift Monitoring"]["panels"]
                     for t in p["targets"])
    for metric in ("drift_events_total", "drift_test_stat_bucket", "drift_threshold",
                   "drift_samples_dropped_total", "drift_detector_state",
                   "drift_reference_samples", "variant:drift_alarms_per_expected:ratio"):
        assert metric in drift


def test_canary_dashboard_compares_variants_and_shows_the_analysis():
    canary = by_title()["Canary"]
    titles = [p["title"] for p in canary["panels"]]
    for needed in ("Traffic weight", "Observed request share", "Error ratios (5xx server, 4xx client)",
                   "Latency quantiles", "Average confidence", "Class mix", "Firing alerts"):
        assert needed in titles
    row = titles.index("Canary analysis")
    assert canary["panels"][row]["type"] == "row"
    analysis = canary["panels"][row + 1:]
    exprs = " ".join(t["expr"] for p in analysis for t in p["targets"])
    for metric in ("canary_analysis_last_decision", "canary_analysis_check_verdict",
                   "canary_analysis_check_p_value", "canary_analysis_check_value",
                   "canary_analysis_weight", "canary_analysis_step",
                   "canary_analysis_failed_checks", "canary_analysis_prometheus_up",
                   'up{job="canary-analysis"}'):
        assert metric in exprs, metric
    assert all(g["gridPos"]["y"] > canary["panels"][row]["gridPos"]["y"]
               for g in analysis)


def test_canary_verdict_codes_match_the_controller_and_the_mapping():
    """The state timeline's number per verdict, its value mapping, and the verdicts the
    controller can report agree."""
    from gourmetgram.canary.rollout_metrics import VERDICTS

    assert set(dashboards.VERDICT_CODE) == set(VERDICTS)
    (panel,) = [p for p in by_title()["Canary"]["panels"] if p["title"] == "Check verdicts"]
    texts = {int(k): v["text"] for k, v in
             panel["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    assert texts == {code: v for v, code in dashboards.VERDICT_CODE.items()}


def test_decisions_are_annotated_at_their_own_time():
    (a,) = [a for a in by_title()["Canary"]["annotations"]["list"] if a["name"] == "Canary decisions"]
    assert a["datasource"]["uid"] == provisioned_uid() and a["enable"] is True
    assert a["useValueForTime"] is True and a["expr"].startswith("1000 * ")
    assert "canary_analysis_last_decision_timestamp_seconds" in a["expr"]
    assert a["tagKeys"] == "decision" and "{{decision}}" in a["titleFormat"]


def test_dashboard_provider_points_at_the_dashboards(tmp_path):
    """Copy the dashboards where the deploy does, render the provider for that place,
    and check Grafana would find every dashboard in its folder."""
    target = tmp_path / "dashboards"
    shutil.copytree(REPO_ROOT / "grafana" / "dashboards", target)
    provider = yaml.safe_load(provisioned(str(target))["provisioning/dashboards/gourmetgram.yml"])
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["options"]["foldersFromFilesStructure"] is True
    folder = Path(p["options"]["path"])
    found = {json.loads(f.read_text())["title"]: f.parent.name for f in folder.rglob("*.json")}
    assert found == TITLES


def test_datasources_have_fixed_uids_and_local_urls():
    stack = load_stack({"prometheus_port": 19090, "alertmanager_port": 19093})
    files = monitoring.render_grafana(stack)
    ds = {d["type"]: d for d in yaml.safe_load(files["provisioning/datasources/gourmetgram.yml"])[
        "datasources"]}
    assert ds["prometheus"]["uid"] == monitoring.PROMETHEUS_DATASOURCE_UID
    assert ds["prometheus"]["url"] == "http://127.0.0.1:19090"
    # Prometheus alerts (the lab's two included) are shown in Grafana through these.
    assert ds["prometheus"]["jsonData"]["manageAlerts"] is True
    assert ds["prometheus"]["jsonData"]["alertmanagerUid"] == ds["alertmanager"]["uid"]
    assert ds["alertmanager"]["url"] == "http://127.0.0.1:19093"


def test_grafana_settings_are_safe():
    stack = load_stack({"bind_address": "127.0.0.5", "grafana_port": 3300})
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(monitoring.render_grafana(stack)["grafana.ini"])
    assert ini["server"]["http_addr"] == "127.0.0.5"
    assert ini["server"]["http_port"] == "3300"
    assert ini["server"]["root_url"].endswith("/grafana/")
    assert ini["server"]["serve_from_sub_path"] == "true"
    # The password reaches Grafana only as a systemd credential from the root-only file.
    assert "admin_password" not in ini["security"]
    assert ini["auth.anonymous"]["enabled"] == "false"
    assert ini["users"]["allow_sign_up"] == "false"


@pytest.mark.parametrize("change", [{"expr": " "}, {"datasource": {"type": "prometheus", "uid": "x"}}])
def test_structure_check_catches_a_bad_annotation(change):
    dash = by_title()["Canary"]
    dash["annotations"]["list"][0].update(change)
    assert "annotation Canary decisions: bad data source or query" in structure_problems(
        dash, provisioned_uid())


def test_feedback_dashboard_shows_accuracy_with_its_interval_per_variant():
    panels = {p["title"]: p for p in flat_panels(by_title()["Food Classifier Feedback"]["panels"])}
    acc = [t["expr"] for t in panels["Estimated online accuracy (95% interval)"]["targets"]]
    for metric in ("feedback_accuracy{", "feedback_accuracy_lower{", "feedback_accuracy_upper{"):
        assert any(metric in e and "by (variant, model_version)" in e for e in acc), metric
    exprs = " ".join(t["expr"] for p in panels.values() for t in p.get("targets", []))
    for metric in ("feedback_total", "feedback_kept_total", "feedback_labelled_total",
                   "feedback_accuracy_labels", "feedback_store_up"):
        assert metric in exprs, metric
