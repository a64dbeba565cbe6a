"""`gourmetgram canary analyze|run|approve` as a user runs them: bad settings are refused
with one line and exit code 2 before anything changes; Prometheus unreachable is its own
exit code; approve records the go-ahead where the controller looks for it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gourmetgram.canary import routing as canary
from tests.canary_stack import make_layout, stack_data
from tests.procs import child_env, free_port


def cli(*args, env=None, timeout=60, etc=None):
    """The command as on a host whose /etc/gourmetgram is ``etc`` (default: an empty
    folder, so this machine's own /etc never leaks in)."""
    etc = etc or Path(tempfile.mkdtemp(prefix="gg-etc-"))
    return subprocess.run([sys.executable, "-m", "gourmetgram", "canary", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=child_env(GOURMETGRAM_ETC_DIR=str(etc), **(env or {})))


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.mark.parametrize("env, args, needle", [
    ({}, ["--interval", "-1"], "must be above 0"),
    ({}, ["--interval", "soon"], "not a number"),
    ({"CANARY_ANALYSIS_INTERVAL_S": "-5"}, [], "interval_s"),
    ({"CANARY_ANALYSIS_MAX_WEIGHT": "101"}, [], "max_weight"),
    ({"CANARY_ANALYSIS_STEP_WEIGHT": "0"}, [], "step_weight"),
    ({"CANARY_ANALYSIS_STEP_WEIGHT": "60"}, [], "step_weight 60 is over max_weight 50"),
    ({"CANARY_ANALYSIS_CHECKS": "error_rate,p99_vibes"}, [], "unknown check 'p99_vibes'"),
    ({"CANARY_ANALYSIS_CHECKS": ""}, [], "at least one check"),
    ({"CANARY_ANALYSIS_ALPHA": "0"}, [], "alpha"),
    ({"CANARY_ANALYSIS_ALPHA": "lots"}, [], "alpha"),
    ({"CANARY_ANALYSIS_LATENCY_QUANTILES": "0.95,99"}, [], "quantiles"),
    ({"CANARY_ANALYSIS_PROMETHEUS_URL": "localhost:9090"}, [], "prometheus_url"),
    ({"CANARY_ANALYSIS_FAILED_CHECKS_THRESHOLD": "0"}, [], "failed_checks_threshold"),
    ({"CANARY_ANALYSIS_METRICS_PORT": "70000"}, [], "metrics_port"),
    ({"CANARY_ANALYSIS_SHADOW_INTERVALS": "-1"}, [], "shadow_intervals"),
    ({"CANARY_ANALYSIS_SHADOW_INTERVALS": "two"}, [], "shadow_intervals"),
    ({"CANARY_ANALYSIS_SHADOW_INTERVALS": "101"}, [], "shadow_intervals"),
    ({"CANARY_ANALYSIS_SHADOW_PERCENT": "0"}, [], "shadow_percent"),
    ({"CANARY_ANALYSIS_SHADOW_PERCENT": "101"}, [], "shadow_percent"),
    ({"CANARY_ANALYSIS_SHADOW_PERCENT": "12.5"}, [], "shadow_percent"),
    ({"CANARY_ANALYSIS_SHADOW_MIN_AGREEMENT": "0"}, [], "shadow_min_agreement"),
    ({"CANARY_ANALYSIS_SHADOW_MIN_AGREEMENT": "1.5"}, [], "shadow_min_agreement"),
    ({"CANARY_ANALYSIS_SHADOW_MIN_AGREEMENT": "most"}, [], "shadow_min_agreement"),
    ({"CANARY_ANALYSIS_SHADOW_MIN_REQUESTS": "0"}, [], "shadow_min_requests"),
    ({"CANARY_ANALYSIS_CHECKS": "error_rate,shadow_agreement"}, [],
     "shadow_agreement runs in the shadow stage only"),
])
def test_bad_settings_are_refused_before_anything_changes(env, args, needle, state):
    r = cli("run", *args, env={"CANARY_ANALYSIS_STATE_DIR": str(state), **env})
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert not state.exists()


def test_settings_file_with_a_typo_is_refused(tmp_path, state):
    f = tmp_path / "canary-analysis.env"
    f.write_text(f"CANARY_ANALYSIS_STATE_DIR={state}\nCANARY_ANALYSIS_INTERVALL_S=30\n")
    r = cli("run", "--settings", str(f))
    assert r.returncode == 2 and "intervall_s" in r.stderr.lower(), r.stderr
    assert not state.exists()
    r = cli("run", "--settings", str(tmp_path / "missing.env"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_settings_file_is_read(tmp_path, state):
    f = tmp_path / "canary-analysis.env"
    f.write_text(f"CANARY_ANALYSIS_STATE_DIR={state}\nCANARY_ANALYSIS_PROMETHEUS_URL=http://127.0.0.1:{free_port()}\n")
    r = cli("analyze", "--settings", str(f))
    assert r.returncode == 4 and "Prometheus unreachable" in r.stderr


def test_analyze_with_prometheus_down_says_so(state):
    r = cli("analyze", "--prometheus-url", f"http://127.0.0.1:{free_port()}",
            env={"CANARY_ANALYSIS_STATE_DIR": str(state)})
    assert r.returncode == 4 and "Prometheus unreachable" in r.stderr
    assert not state.exists()


@pytest.mark.parametrize("window", ["0", "-3", "x"])
def test_analyze_bad_window(window):
    r = cli("analyze", "--window", window)
    assert r.returncode == 2 and "--window" in r.stderr


def test_approve_records_the_go_ahead(state):
    r = cli("approve", env={"CANARY_ANALYSIS_STATE_DIR": str(state)})
    assert r.returncode == 0, r.stderr
    record = json.loads((state / "approved").read_text())
    assert record["approved_at"] > 0


def test_approve_where_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("approve", env={"CANARY_ANALYSIS_STATE_DIR": str(blocker / "state")})
    assert r.returncode == 2 and "cannot record the approval" in r.stderr


def test_deployed_settings_file_is_read_by_default_and_flags_override_it(tmp_path, state):
    """On the host, plain `canary analyze` uses /etc/gourmetgram/canary-analysis.env (the
    deployed Prometheus on the bind address), not the built-in 127.0.0.1 default."""
    etc = tmp_path / "etc"
    etc.mkdir()
    deployed = f"http://127.0.0.1:{free_port()}"
    (etc / "canary-analysis.env").write_text(
        f"CANARY_ANALYSIS_PROMETHEUS_URL={deployed}\nCANARY_ANALYSIS_STATE_DIR={state}\n")
    r = cli("analyze", etc=etc)
    assert r.returncode == 4 and deployed in r.stderr, r.stderr
    other = f"http://127.0.0.1:{free_port()}"
    r = cli("analyze", "--prometheus-url", other, etc=etc)
    assert r.returncode == 4 and other in r.stderr and deployed not in r.stderr, r.stderr
    (etc / "canary-analysis.env").write_text("CANARY_ANALYSIS_ALPHA=2\n")
    r = cli("analyze", etc=etc)
    assert r.returncode == 2 and "alpha" in r.stderr


@pytest.fixture
def deployed(tmp_path, demo_model):
    """A host layout with stack.json (scrape interval 15 s, the default) and the
    deployed settings file, no services running."""
    layout = make_layout(tmp_path / "host")
    canary.initialise(stack_data(demo_model, scrape_interval="15s"), layout)
    layout.analysis_env.write_text(f"CANARY_ANALYSIS_STATE_DIR={tmp_path / 'state'}\n"
                                   f"CANARY_ANALYSIS_PROMETHEUS_URL=http://127.0.0.1:{free_port()}\n")
    return layout


def host_cli(layout, *args):
    env = {"GOURMETGRAM_STATE_DIR": str(layout.state_dir),
           "GOURMETGRAM_TEXTFILE_DIR": str(layout.textfile_dir),
           "GOURMETGRAM_NGINX_SITE": str(layout.nginx_site)}
    return cli(*args, env=env, etc=layout.etc_dir)


@pytest.mark.parametrize("args, needle", [
    (["run", "--interval", "10"],
     "window 10 s is shorter than 4 scrape intervals (4 x 15 s = 60 s)"),
    (["analyze", "--window", "30"],
     "window 30 s is shorter than 4 scrape intervals (4 x 15 s = 60 s)"),
])
def test_window_shorter_than_four_deployed_scrape_intervals_is_refused(deployed, args, needle):
    r = host_cli(deployed, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_window_of_four_scrape_intervals_is_accepted(deployed):
    r = host_cli(deployed, "analyze", "--window", "60")
    assert r.returncode == 4 and "Prometheus unreachable" in r.stderr, r.stderr


def test_start_records_a_request_and_status_shows_the_idle_controller(deployed, tmp_path):
    r = host_cli(deployed, "start")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "state" / "start").read_text())["requested_at"] > 0
    r = host_cli(deployed, "status")
    assert "controller: idle" in r.stdout, r.stdout + r.stderr
