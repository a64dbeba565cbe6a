"""The PromQL of Grafana dashboard JSON (every panel target, nested rows, annotations),
with Grafana's variables replaced as Grafana would for a given range. Shared by the
test against a local Prometheus (tests/prometheus/test_live_stack.py) and the one
against the deployed target's (tests/deploy/test_deploy_e2e.py), which reads the
dashboards the deploy installed on the host."""

from __future__ import annotations

import re

# The lab's "Food Classifier Drift Monitoring" queries, as the lab types them
# (/work/shared/TUTORIAL-SPEC.md); our dashboard splits them by variant.
LAB_DRIFT_QUERIES = {
    "lab:drift events per second": "rate(drift_events_total[1m])",
    "lab:median drift score": "histogram_quantile(0.5, rate(drift_test_stat_bucket[1m]))",
}
VARIABLE = re.compile(r"\$\{?\w+\}?")


def grafana_variables(range_: str = "5m", scrape: str = "15s") -> dict[str, str]:
    """Grafana's built-ins for a dashboard showing the last ``range_``: ``$__rate_interval``
    is at least four scrape intervals (1m at 15 s, the lab's ``[1m]``)."""
    return {"$__range": range_, "$__rate_interval": "1m", "$__interval": scrape}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with each variable replaced; a variable left over is an error (a new
    dashboard variable needs a value here)."""
    for var in sorted(variables, key=len, reverse=True):
        expr = expr.replace(var, variables[var])
    left = VARIABLE.findall(expr)
    if left:
        raise ValueError(f"no value for Grafana variable(s) {left} in {expr}")
    return expr


def dashboard_queries(name: str, dashboard: dict, variables: dict[str, str]) -> list[tuple[str, str]]:
    """(``name:panel title:refId`` or ``name:annotation:NAME``, expr) of every query."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict]):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"{name}:{p['title']}:{t['refId']}", substitute(t["expr"], variables)))

    walk(dashboard["panels"])
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"{name}:annotation:{a['name']}", substitute(a["expr"], variables)))
    return out
