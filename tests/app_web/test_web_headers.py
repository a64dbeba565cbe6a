"""Client-controlled headers and methods on the web app: a bad Host is a 400 (it was a
500: Werkzeug's URL adapter fails on a 64-character label), and invented methods are
one metric label value."""

from __future__ import annotations

import pytest

from app_web.app import create_app
from app_web.metrics import render_metrics

BAD_HOSTS = ["a" * 64 + ".example", "x y", "[::1", "a..b", "a/b", "a" * 300]


@pytest.fixture(scope="module")
def client():
    return create_app({"api_url": "http://127.0.0.1:9"}).test_client()


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_host_is_a_400(client, host):
    r = client.get("/", headers={"Host": host})
    assert r.status_code == 400 and "Host" in r.get_json()["detail"]


def test_good_host_with_port_is_served(client):
    assert client.get("/healthz", headers={"Host": "gourmetgram.example:8080"}).status_code == 200


def test_invented_methods_are_one_label_value(client):
    for i in range(20):
        assert client.open("/", method=f"X{i}METHOD").status_code == 405
    text = render_metrics()[0].decode()
    assert "X1METHOD" not in text
    assert 'method="other"' in text
