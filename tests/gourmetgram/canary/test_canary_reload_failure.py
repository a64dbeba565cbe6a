"""A weight change whose Nginx reload fails leaves no unrecorded site on disk: the
previous site goes back and is reloaded, stack.json and the history are unchanged.
The candidate is checked by the real ``nginx -t``; only the reload fails, on purpose."""

from __future__ import annotations

import pytest

from gourmetgram.canary import routing as canary
from tests.canary_stack import make_layout, stack_data


class ReloadFails:
    """canary.Services whose first ``fail`` reloads fail (systemctl reload refused)."""

    def __init__(self, fail: int):
        self.fail = fail
        self.calls: list[str] = []

    def check_nginx(self) -> None:
        self.calls.append("check")

    def reload_nginx(self) -> None:
        self.calls.append("reload")
        if self.fail:
            self.fail -= 1
            raise canary.CanaryError("systemctl reload nginx failed: Job failed")

    def restart_api(self, variant: str) -> None:
        raise AssertionError("no restart expected")


@pytest.mark.parametrize("failing_reloads, message", [
    (1, "the previous site is back on disk and reloaded"),
    (2, "reloading it failed too"),
])
def test_failed_reload_puts_the_previous_site_back(tmp_path, demo_model, failing_reloads, message):
    layout = make_layout(tmp_path)
    stack = stack_data(demo_model, canary_weight=20)
    canary.initialise(stack, layout)
    layout.nginx_site.write_text(canary.render_site(stack, layout))
    before = layout.nginx_site.read_text()
    services = ReloadFails(failing_reloads)
    with pytest.raises(canary.CanaryError, match=message):
        canary.rollback("test", layout=layout, services=services)
    assert layout.nginx_site.read_text() == before
    assert canary.load_state(layout).canary_weight == 20
    assert not layout.history_file.exists()
    assert services.calls == ["check", "reload", "reload"]
    assert [p.name for p in layout.nginx_site.parent.iterdir()] == ["gourmetgram.conf"]
