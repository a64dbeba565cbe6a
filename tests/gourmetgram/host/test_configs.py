"""Renders of the Nginx site, unit files and env files: golden files, `nginx -t` over
every kind of weight, the host layout's overrides and the stack data they need.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/gourmetgram/host/test_configs.py`` and review the diff.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gourmetgram.canary import routing as canary
from gourmetgram.host.configs import render_api_env, render_daemon_hardening, render_site, render_units
from gourmetgram.host.layout import HostLayout, host_layout
from gourmetgram.host.stack import StackDataError, load_stack
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden"
HOST = HostLayout()  # the real on-host paths, not the environment's

needs_nginx = pytest.mark.skipif(not HOST.nginx_bin.exists() and shutil.which("nginx") is None,
                                 reason="nginx is not installed (scripts/install-test-deps.sh)")


def renders() -> dict[str, str]:
    out = {}
    for name, data in {
        "gourmetgram-w0.conf": {},
        "gourmetgram-w10.conf": {"canary_weight": 10},
        "gourmetgram-w100.conf": {"canary_weight": 100},
        "gourmetgram-w0-shadow20.conf": {"canary_shadow_percent": 20},
        "gourmetgram-sticky-w30.conf": {"canary_weight": 30, "sticky_canary": True},
        "gourmetgram-bind-10.0.0.5.conf": {"bind_address": "10.0.0.5", "canary_weight": 5},
    }.items():
        out[f"nginx/{name}"] = render_site(load_stack(data), HOST)
    for name, text in render_units(load_stack(), HOST).items():
        out[f"systemd/{name}"] = text
    out["systemd/food11-api@.service-cpu"] = render_units(load_stack({"api_device": "cpu"}), HOST)[
        "food11-api@.service"]
    out["systemd/food11-api@.service-workers2"] = render_units(load_stack({"api_workers": 2}), HOST)[
        "food11-api@.service"]
    for unit, text in render_daemon_hardening(load_stack({"bind_address": "10.0.0.5"}), HOST).items():
        out[f"systemd/hardening/{unit}.conf"] = text
    stack = load_stack({"models": {"production": {"path": "/var/lib/gourmetgram/models/food11-v1.pt",
                                                   "version": "v1"},
                                    "canary": {"path": "", "version": ""}}})
    for v in ("production", "canary"):
        out[f"systemd/food11-api-{v}.env"] = render_api_env(stack, HOST, v)
    return out


@pytest.mark.parametrize("name", sorted(renders()))
def test_golden(name):
    check_golden(GOLDEN / name, renders()[name])


@needs_nginx
@pytest.mark.parametrize("weight", [0, 1, 10, 50, 99, 100])
@pytest.mark.parametrize("sticky", [False, True])
def test_nginx_accepts_every_weight(weight, sticky, tmp_path):
    layout = host_layout({"GOURMETGRAM_NGINX_LOG_DIR": str(tmp_path)})
    text = render_site(load_stack({"canary_weight": weight, "sticky_canary": sticky}), layout)
    canary.validate_site(text, layout)


@needs_nginx
@pytest.mark.parametrize("percent", [1, 20, 99, 100])
@pytest.mark.parametrize("sticky", [False, True])
def test_nginx_accepts_every_shadow_percent(percent, sticky, tmp_path):
    layout = host_layout({"GOURMETGRAM_NGINX_LOG_DIR": str(tmp_path)})
    text = render_site(load_stack({"canary_shadow_percent": percent, "sticky_canary": sticky}), layout)
    assert "mirror /_gourmetgram_shadow;" in text
    canary.validate_site(text, layout)


def test_no_mirror_without_shadow_and_a_clients_shadow_id_is_dropped():
    text = render_site(load_stack(), HOST)
    assert "mirror" not in text and 'proxy_set_header X-Shadow-Id "";' in text


@needs_nginx
def test_nginx_refuses_a_broken_site(tmp_path):
    layout = host_layout({"GOURMETGRAM_NGINX_LOG_DIR": str(tmp_path)})
    text = render_site(load_stack(), layout).replace(
        "proxy_next_upstream_tries 2;", "proxy_next_upstream_tries;")
    with pytest.raises(canary.CanaryError, match="nginx -t"):
        canary.validate_site(text, layout)


def test_weight_zero_never_routes_to_the_canary():
    text = render_site(load_stack({"canary_weight": 0}), HOST)
    assert "server 127.0.0.1:8001 down;" in text and not re.search(r"server .*weight=0\b", text)


def test_weight_100_keeps_production_as_backup():
    text = render_site(load_stack({"canary_weight": 100}), HOST)
    assert "server 127.0.0.1:8000 backup;" in text and not re.search(r"server .*weight=0\b", text)


def test_site_limits_and_retries_follow_the_data():
    text = render_site(load_stack({"max_body_bytes": 123456, "api_timeout_seconds": 7}), HOST)
    assert "client_max_body_size 123456;" in text
    assert "proxy_read_timeout 7s;" in text
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in text
    assert "$upstream_addr" in text and "$upstream_http_x_model_variant" in text
    assert "$upstream_response_time" in text


def test_layout_overrides_from_environment(tmp_path):
    layout = host_layout({"GOURMETGRAM_ETC_DIR": str(tmp_path), "GOURMETGRAM_SERVICE_USER": "svc"})
    assert layout.stack_json == tmp_path / "stack.json"
    assert layout.env_file("canary") == tmp_path / "food11-api-canary.env"
    assert layout.service_user == "svc"
    assert host_layout({}).models_dir == Path("/var/lib/gourmetgram/models")
    assert host_layout({}).canary_prom == Path("/var/lib/prometheus/node-exporter/gourmetgram_canary.prom")


@pytest.mark.parametrize("override, key", [
    ({"nginx_status_port": 0}, "nginx_status_port"),
    ({"nginx_status_port": 9090}, "ports used twice"),
    ({"api_timeout_seconds": 0}, "api_timeout_seconds"),
    ({"api_timeout_seconds": "soon"}, "api_timeout_seconds"),
    ({"canary_weight": 101}, "canary_weight"),
    ({"api_device": "tpu"}, "api_device"),
    ({"api_solo_threads": -1}, "api_solo_threads"),
    ({"api_solo_threads": 65}, "api_solo_threads"),
    ({"api_solo_threads": "two"}, "api_solo_threads"),
    ({"canary_weight": -1}, "canary_weight"),
    ({"canary_shadow_percent": 101}, "canary_shadow_percent"),
    ({"canary_shadow_percent": -5}, "canary_shadow_percent"),
    ({"canary_shadow_percent": "half"}, "canary_shadow_percent"),
    ({"canary_shadow_percent": 10, "canary_weight": 10}, "only while it serves no users"),
    ({"models": {"production": {"path": "", "version": "a b"}, "canary": {}}}, "models.production.version"),
    ({"models": {"production": {}, "blue": {}}}, "models"),
])
def test_bad_stack_data_is_refused(override, key):
    with pytest.raises(StackDataError, match=key):
        load_stack(override)


def test_env_file_refuses_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'blue'"):
        render_api_env(load_stack(), HOST, "blue")
