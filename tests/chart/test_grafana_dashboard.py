"""The Grafana dashboard queries only metrics and labels that docs/architecture.md promises.

The metric names are a contract between the runtime, the operator and this dashboard; a renamed
metric would otherwise leave an empty panel that nobody notices.
"""

from __future__ import annotations

import json
import re

import pytest
from chart_helpers import CHART, ROOT

DASHBOARD = CHART / "dashboards" / "modeldeploy.json"
# Labels Prometheus adds to every scraped series (ServiceMonitor / PodMonitor target labels).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def contract() -> dict[str, tuple[str, set[str]]]:
    """Metric name -> (type, labels), read from the metrics sections of docs/architecture.md."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    metrics: dict[str, tuple[str, set[str]]] = {}
    runtime = doc.split("### Metrics (runtime)", 1)[1].split("\n#", 1)[0]
    for row in runtime.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`modeldeploy_"):
            # Label names are backticked; backticked words in parentheses are their values.
            names = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells[2]))
            metrics[cells[0].strip("`")] = (cells[1], set(names))
    operator = doc.split("Operator metrics:", 1)[1].split("\n\n", 1)[0]
    for name, labels in re.findall(r"`(modeldeploy_operator_\w+)(?:\{([\w,\s]*)\})?`", operator):
        # The contract gives no type for operator metrics; names follow Prometheus conventions.
        kind = "counter" if name.endswith("_total") else "histogram" if name.endswith("_seconds") else "gauge"
        metrics[name] = (kind, {x.strip() for x in labels.split(",") if x.strip()})
    assert len(metrics) >= 10, "could not read the metrics contract from docs/architecture.md"
    return metrics


def queries(dashboard: dict) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return out


def base_metric(name: str, metrics: dict) -> str:
    if name in metrics:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and metrics.get(base, ("",))[0] == "histogram":
            return base
    pytest.fail(f"the dashboard queries {name}, which docs/architecture.md does not name")


def labels_used(expr: str) -> set[str]:
    used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {x.strip() for x in group.split(",") if x.strip()}
    used |= set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", expr))
    return used


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_grafana_json_with_a_datasource_variable(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_queried_metric_and_label_is_in_the_contract(dashboard):
    metrics = contract()
    exprs = queries(dashboard)
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\bmodeldeploy_\w+", expr))
        assert names, f"query without a modeldeploy metric: {expr}"
        allowed = set(TARGET_LABELS)
        for name in names:
            base = base_metric(name, metrics)
            allowed |= metrics[base][1]
            if metrics[base][0] == "histogram":
                allowed.add("le")
        unknown = labels_used(expr) - allowed
        assert not unknown, f"{expr} uses labels {unknown} that its metrics do not carry"


def test_every_contract_metric_has_a_panel(dashboard):
    metrics = contract()
    shown = {base_metric(n, metrics) for e in queries(dashboard) for n in re.findall(r"\bmodeldeploy_\w+", e)}
    assert shown == set(metrics), f"metrics without a panel: {set(metrics) - shown}"


def test_histograms_are_queried_through_their_buckets(dashboard):
    metrics = contract()
    for expr in queries(dashboard):
        for base, (kind, _) in metrics.items():
            if kind == "histogram" and re.search(rf"\b{base}\b(?!_)", expr):
                pytest.fail(f"{base} is a histogram; query {base}_bucket/_sum/_count, not the bare name: {expr}")
