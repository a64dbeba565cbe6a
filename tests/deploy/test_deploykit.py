"""The deploy's pure decisions: listen addresses, Grafana's drop-in, host data files,
and the local target's pip sources and address checks."""

from __future__ import annotations

import json

import pytest

from gourmetgram import deploykit as dk
from gourmetgram import nspawn
from gourmetgram.stack import load_stack


def test_every_exporter_listens_on_the_bind_address_only():
    cfg = load_stack({"bind_address": "127.0.0.2"})
    defaults = dk.exporter_defaults(cfg)
    assert set(defaults) == {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
                             "prometheus-process-exporter", "prometheus-nginx-exporter"}
    for name, text in defaults.items():
        args = text.split('ARGS="', 1)[1].rstrip('"\n')
        listen = [a for a in args.split() if "listen-address" in a]
        assert listen, name
        for a in listen:
            value = a.split("=", 1)[1]
            # Alertmanager's cluster port is turned off (empty), never left on 0.0.0.0:9094.
            assert value == "" or value.startswith("127.0.0.2:"), (name, a)
    assert "--cluster.listen-address=" in defaults["prometheus-alertmanager"]
    assert "--storage.tsdb.retention.time=15d" in defaults["prometheus"]
    assert "-procnames=" in dk.exporter_defaults(cfg, process_config=False)["prometheus-process-exporter"]


def test_grafana_dropin_keeps_the_password_out():
    text = dk.grafana_dropin(load_stack({"bind_address": "127.0.0.2", "grafana_port": 3111}))
    assert f"LoadCredential=admin_password:{dk.GRAFANA_PASSWORD_FILE}" in text
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE=%d/admin_password" in text
    assert "GF_SERVER_HTTP_ADDR=127.0.0.2" in text and "GF_SERVER_HTTP_PORT=3111" in text
    assert "admin_password=" not in text.replace("LoadCredential=admin_password:", "")


def test_host_stack_uses_host_model_paths(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"model bytes")
    cfg = load_stack({"models": {"production": {"path": str(model), "version": "v7"},
                                 "canary": {"path": "", "version": ""}}})
    paths = {"production": dk.model_path_on_host(cfg, "production", model),
             "canary": dk.model_path_on_host(cfg, "canary", model)}
    assert paths["production"] == "/var/lib/gourmetgram/models/food11-v7.pt"
    assert paths["canary"].startswith("/var/lib/gourmetgram/models/food11-sha256-")
    on_host = dk.host_stack(cfg, paths)
    data = json.loads(dk.stack_json(on_host))
    assert data["models"]["production"] == {"path": paths["production"], "version": "v7"}
    assert load_stack(data).models["canary"].path == paths["canary"]
    env = dk.api_env(on_host, "production", "cpu")
    assert f"FOOD11_MODEL={paths['production']}" in env and "FOOD11_DEVICE=cpu" in env


def test_canary_textfile():
    text = dk.canary_textfile(30, now=1.5)
    assert "canary_weight 30\n" in text and "canary_weight_change_timestamp_seconds 1.500" in text


def test_pinned_requirements_split_torch():
    torch, rest = dk.pinned_requirements()
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
