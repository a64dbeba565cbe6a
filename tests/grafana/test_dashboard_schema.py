"""Every provisioned dashboard type-checked against Grafana's own schema: the TypeScript
types Grafana publishes as the npm package ``@grafana/schema`` (generated from the same
CUE schema the Grafana server validates against), compiled with ``tsc --strict``.

The dashboard must be a ``Dashboard``; each panel additionally a ``Panel`` whose options
and field config are those of its panel plugin (timeseries, stat, bargauge, table,
state-timeline), so an unknown key (excess property) or a value of the wrong type fails.
Options are ``Partial``: Grafana fills the defaults of what a dashboard leaves out.

The packages (pinned in tests/grafana/schema/package.json, locked in its
package-lock.json) are installed by ``make deps`` (``npm ci``); nothing is downloaded
here. Without them this test fails and says how to install them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gourmetgram.monitoring.dashboards import DASHBOARDS_DIR

SCHEMA_DIR = Path(__file__).parent / "schema"
TSC = SCHEMA_DIR / "node_modules" / ".bin" / "tsc"
CFG = "@grafana/schema/dist/esm/raw/composable/{}/panelcfg/x/{}PanelCfg_types.gen"
PLUGINS = {
    "timeseries": ("timeseries", "TimeSeries"),
    "stat": ("stat", "Stat"),
    "bargauge": ("bargauge", "BarGauge"),
    "table": ("table", "Table"),
    "state-timeline": ("statetimeline", "StateTimeline"),
}
DASHBOARD_FILES = sorted(DASHBOARDS_DIR.rglob("*.json"))


def typescript_of(dashboard: dict) -> str:
    """One .ts module: the dashboard as a Dashboard, each panel as its plugin's Panel."""
    lines = ['import type { AnnotationQuery, Dashboard, Panel, RowPanel } from "@grafana/schema";',
             # The schema leaves each data source's own annotation fields open; these are
             # the ones Grafana's Prometheus data source reads from the annotation.
             "type PromAnnotation = AnnotationQuery & { expr?: string; step?: string; "
             "titleFormat?: string; textFormat?: string; tagKeys?: string; "
             "useValueForTime?: boolean };",
             "type Board = Omit<Dashboard, 'annotations'> & "
             "{ annotations?: { list?: PromAnnotation[] } };",
             # JSON holds an enum's value ("absolute"), TypeScript wants the enum member:
             # the same types with every string enum replaced by the union of its values.
             "type Json<T> = T extends string ? `${T}` : T extends number | boolean | null "
             "| undefined ? T : { [K in keyof T]: Json<T[K]> };"]
    for alias, (folder, name) in PLUGINS.items():
        lines.append(f'import type * as {alias.replace("-", "_")} from "{CFG.format(folder, name)}";')
    lines.append(f"export const dashboard: Json<Board> = {json.dumps(dashboard, indent=1)};")
    for i, panel in enumerate(dashboard["panels"]):
        kind = panel["type"]
        if kind == "row":
            lines.append(f"export const p{i}: Json<RowPanel> = {json.dumps(panel)};")
            continue
        assert kind in PLUGINS, f"panel type {kind!r}: add its schema to PLUGINS"
        m = kind.replace("-", "_")
        custom = ("Record<string, unknown>" if kind in ("stat", "bargauge")  # none declared
                  else f"Partial<{m}.FieldConfig>")
        lines.append(f"export const p{i}: Json<Panel<Partial<{m}.Options>, {custom}> & "
                     f"{{ options?: Partial<{m}.Options> }}> = {json.dumps(panel)};")
    return "\n".join(lines) + "\n"


def tsc(folder: Path) -> subprocess.CompletedProcess:
    if not TSC.exists() or shutil.which("node") is None:
        pytest.fail("Grafana's schema packages are not installed: run `make deps` "
                    "(npm ci in tests/grafana/schema)")
    (folder / "node_modules").symlink_to(SCHEMA_DIR / "node_modules")
    (folder / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "noEmit": True, "target": "es2020", "module": "esnext",
        "moduleResolution": "bundler", "skipLibCheck": True}, "include": ["*.ts"]}))
    return subprocess.run([str(TSC), "-p", str(folder)], capture_output=True, text=True,
                          timeout=300)


def test_every_dashboard_matches_grafanas_schema(tmp_path):
    for path in DASHBOARD_FILES:
        (tmp_path / f"{path.stem}.ts").write_text(typescript_of(json.loads(path.read_text())))
    r = tsc(tmp_path)
    assert r.returncode == 0, r.stdout[-6000:]


@pytest.mark.parametrize("break_it,message", [
    (lambda d: d.update(refresh=10), "Type 'number' is not assignable to type 'string'"),
    (lambda d: d["panels"][2].update(gridPos={"x": 0, "y": 0, "w": "wide", "h": 8}),
     "Type 'string' is not assignable to type 'number'"),
    (lambda d: d["panels"][2]["options"].update(legend={"displayMode": "sideways"}),
     '"sideways"'),
    (lambda d: d["panels"][2].update(datasourse={"uid": "x"}), "datasourse"),
])
def test_the_schema_check_catches_a_broken_dashboard(tmp_path, break_it, message):
    """The check is not vacuous: a wrong type, an unknown key or a bad enum fails it."""
    service = json.loads((DASHBOARDS_DIR / "Food classifier" / "food11-service.json").read_text())
    assert service["panels"][2]["type"] == "timeseries"
    break_it(service)
    (tmp_path / "broken.ts").write_text(typescript_of(service))
    r = tsc(tmp_path)
    assert r.returncode != 0 and message in r.stdout, r.stdout[-3000:]
