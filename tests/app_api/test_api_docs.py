"""docs/api.md stays true to the code: the demo model's mapping table and the settings."""

from __future__ import annotations

import re

from app_api.demo_model import IMAGENET_MAP
from app_api.settings import ApiSettings
from tests.procs import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "api.md").read_text()


def test_mapping_table_matches_imagenet_map():
    rows = dict(re.findall(r"^\| ([A-Z][\w/ ]+?) \| (\d.*?) \|$", DOC, re.M))
    assert set(rows) == set(IMAGENET_MAP)
    for name, members in IMAGENET_MAP.items():
        assert [int(i) for i in re.findall(r"(?:^|, )(\d+) ", rows[name])] == [i for i, _ in members]


def test_every_setting_is_documented():
    for field, info in ApiSettings.model_fields.items():
        assert f"`FOOD11_{field.upper()}`" in DOC, field
        if info.default not in (None, "") and not isinstance(info.default, bool):
            row = next(ln for ln in DOC.splitlines() if ln.startswith(f"| `FOOD11_{field.upper()}`"))
            assert f"`{info.default}`" in row, (field, info.default)
