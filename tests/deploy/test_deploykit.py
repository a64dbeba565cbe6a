"""The deploy's pure decisions: the host's model paths and state files, Grafana's
drop-in, the pinned requirements, and the local target's pip sources and address checks."""

from __future__ import annotations

import json

import pytest

from gourmetgram.canary.routing import weight_metric_text
from gourmetgram.deploy import nspawn
from gourmetgram.deploy.plan import desired_on_host
from gourmetgram.deploy.python_env import pinned_requirements
from gourmetgram.host import configs as hostconfig
from gourmetgram.host import state as hoststate
from gourmetgram.host.layout import HostLayout
from gourmetgram.host.render import render
from gourmetgram.host.stack import load_stack


def test_grafana_dropin_keeps_the_password_out():
    layout = HostLayout()
    text = render("grafana/grafana-server.dropin.conf.j2",
                  hostconfig.template_data(load_stack({"grafana_port": 3111}), layout))
    assert f"LoadCredential=admin_password:{layout.grafana_password_file}" in text
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE=%d/admin_password" in text
    assert "admin_password=" not in text.replace("LoadCredential=admin_password:", "")


def test_desired_stack_uses_host_model_paths(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"model bytes")
    cfg = load_stack({"models": {"production": {"path": str(model), "version": "v7"},
                                 "canary": {"path": "", "version": ""}}})
    on_host = desired_on_host(cfg, HostLayout(), {"production": model, "canary": model})
    assert on_host.models["production"].path == "/var/lib/gourmetgram/models/food11-v7.pt"
    assert on_host.models["canary"].path.startswith("/var/lib/gourmetgram/models/food11-sha256-")
    data = json.loads(hoststate.state_json(on_host))
    assert data["models"]["production"] == {"path": on_host.models["production"].path, "version": "v7"}
    assert load_stack(data).models["canary"].path == on_host.models["canary"].path
    env = hostconfig.render_api_env(on_host, HostLayout(), "production")
    assert f"FOOD11_MODEL={on_host.models['production'].path}" in env


def test_canary_textfile():
    text = weight_metric_text(30, now=1.5)
    assert "canary_weight 30\n" in text and "canary_weight_change_timestamp_seconds 1.500" in text


def test_pinned_requirements_split_torch():
    torch, rest = pinned_requirements()
    assert [r.split("==")[0] for r in torch] == ["torch", "torchvision"]
    assert all("==" in r for r in torch + rest) and not any(r.startswith("torch") for r in rest)


def test_local_target_reads_the_controllers_pip_sources(tmp_path):
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    text = "\n".join([
        f":env:.cert='{cert}'",
        f"global.extra-index-url='file://{tmp_path}/pypi/simple https://mirror.example/simple'",
        f"global.find-links='{tmp_path}/wheels'",
        "global.timeout='60'",
    ])
    src = nspawn.parse_pip_config(text)
    assert src.extra_index_urls == [f"file://{tmp_path}/pypi/simple", "https://mirror.example/simple"]
    assert src.find_links == [f"{tmp_path}/wheels"]
    assert src.binds == [str(tmp_path / "pypi"), str(tmp_path / "wheels")]
    assert src.cert == str(cert)
    assert nspawn.parse_pip_config("") == nspawn.PipSources()


@pytest.mark.parametrize("address", ["10.0.0.2", "192.168.1.5", "0.0.0.0", "::1", "172.17.0.1"])
def test_local_target_refuses_non_loopback_addresses(address):
    with pytest.raises(nspawn.TargetError, match="loopback"):
        nspawn.check_address(address)


def test_venv_check_finds_nothing_missing_in_a_complete_venv():
    """This venv has every pin (extras like psycopg[binary] included): the check the
    deploy runs on a host must report none, or every deploy would reinstall."""
    import subprocess
    import sys

    from gourmetgram.deploy.python_env import VENV_CHECK

    torch, rest = pinned_requirements()
    out = subprocess.run([sys.executable, "-c", VENV_CHECK, "any", *torch, *rest],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    missing = subprocess.run([sys.executable, "-c", VENV_CHECK, "any", "psycopg[binary]==0.0.1"],
                             capture_output=True, text=True, timeout=60)
    assert missing.stdout.split() == ["psycopg[binary]==0.0.1"]
