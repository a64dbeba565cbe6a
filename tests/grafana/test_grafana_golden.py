"""Golden files of Grafana's rendered settings and provisioning."""

from __future__ import annotations

from pathlib import Path

import pytest

from gourmetgram.host.stack import load_stack
from gourmetgram.monitoring import config as monitoring
from tests.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(monitoring.render_grafana(load_stack())))
def test_grafana_render_matches_golden(name):
    text = monitoring.render_grafana(load_stack())[name]
    check_golden(GOLDEN / name.replace("/", "__"), text)
