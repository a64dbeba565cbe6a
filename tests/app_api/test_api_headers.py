"""Client-controlled headers and methods: a bad Host is a 400 (never a 500), no redirect
is built from the Host, and invented methods never become new metric series."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app_api.main import create_app
from app_api.settings import ApiSettings

BAD_HOSTS = ["a" * 64 + ".example", "x y", "[::1", "a..b", "h:99999999", "a/b", "a" * 300]


@pytest.fixture(scope="module")
def client(demo_model):
    settings = ApiSettings(model=demo_model, device="cpu", variant="testing", max_batch=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_host_is_a_400(client, host):
    r = client.get("/healthz", headers={"host": host})
    assert r.status_code == 400 and "Host" in r.json()["detail"]


def test_trailing_slash_is_not_redirected(client):
    r = client.get("/healthz/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def _series(client) -> set[str]:
    return {ln.split(" ")[0] for ln in client.get("/metrics").text.splitlines()
            if ln and not ln.startswith("#")}


def test_invented_methods_are_one_label_value(client):
    client.request("BREW", "/healthz")
    _series(client)  # the first scrape adds the /metrics series themselves
    before = _series(client)
    for i in range(20):
        assert client.request(f"X{i}METHOD", "/healthz").status_code in (400, 405)
    after = _series(client)
    assert after == before
    assert not any("X1METHOD" in s for s in after)
    assert any('method="other"' in s for s in after)
