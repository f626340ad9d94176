"""Checks ops/grafana/mailfleet.json: well-formed, laid out, and querying only
metrics that docs/metrics.md documents."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "mailfleet.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

METRIC_RE = re.compile(r"mailfleet_[a-z0-9_]+")
DOC_METRIC_RE = re.compile(r"`(mailfleet_[a-z0-9_]+)`")
# Series a Prometheus histogram adds to its base name.
HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")

REQUIRED_TITLES = [
    "lag",
    "throughput",
    "policy latency",
    "greylist",
    "scan",
    "storage",
    "lifecycle",
    "dead letter",
]


def load_dashboard():
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dashboard):
    """Top-level panels plus those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def metrics_in_exprs(dashboard):
    """Base metric names used by the panels' queries."""
    names = set()
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            for name in METRIC_RE.findall(target.get("expr", "")):
                names.add(HISTOGRAM_SUFFIX_RE.sub("", name))
    return names


def documented_metrics(path):
    """Metric names written in backticks in a markdown file."""
    return set(DOC_METRIC_RE.findall(path.read_text(encoding="utf-8")))


def test_dashboard_structure():
    dashboard = load_dashboard()
    for key in ("uid", "title", "schemaVersion", "panels"):
        assert key in dashboard, f"dashboard has no {key!r}"
    assert dashboard["uid"] == "mailfleet"

    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids), "panel ids must be integers"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"

    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel.get("title", f"panel {panel['id']}")
        grid = panel.get("gridPos")
        assert grid, f"{title}: no gridPos"
        assert grid["w"] <= 24, f"{title}: gridPos.w {grid['w']} > 24"
        assert grid["x"] + grid["w"] <= 24, f"{title}: overflows the 24-wide grid"
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert any(exprs), f"{title}: no target with an expr"


def test_required_panel_titles():
    titles = [p.get("title", "").lower() for p in all_panels(load_dashboard())]
    missing = [want for want in REQUIRED_TITLES if not any(want in t for t in titles)]
    assert not missing, f"no panel title contains: {missing}"


def test_dashboard_metrics_are_documented():
    used = metrics_in_exprs(load_dashboard())
    assert METRICS_DOC.exists(), (
        f"{METRICS_DOC.relative_to(ROOT)} is missing; it must document: "
        + ", ".join(sorted(used))
    )
    missing = sorted(used - documented_metrics(METRICS_DOC))
    assert not missing, (
        f"metrics used by the dashboard but not in {METRICS_DOC.relative_to(ROOT)}: "
        + ", ".join(missing)
    )


def test_metric_name_parsing(tmp_path):
    doc = tmp_path / "metrics.md"
    doc.write_text(
        "| `mailfleet_runtime_errors_total` | counter | failures by `kind` |\n"
        "- `mailfleet_policy_request_duration_seconds` (histogram)\n"
        "Unquoted mailfleet_not_listed is ignored.\n",
        encoding="utf-8",
    )
    assert documented_metrics(doc) == {
        "mailfleet_runtime_errors_total",
        "mailfleet_policy_request_duration_seconds",
    }

    dashboard = {
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "sum(mailfleet_index_bytes)"}]}]},
            {
                "targets": [
                    {"expr": "histogram_quantile(0.99, sum by (le) "
                             "(rate(mailfleet_policy_request_duration_seconds_bucket[5m])))"},
                    {"expr": 'rate(mailfleet_runtime_errors_total{consumer=~"$consumer"}[5m])'},
                ]
            },
        ]
    }
    assert metrics_in_exprs(dashboard) == {
        "mailfleet_index_bytes",
        "mailfleet_policy_request_duration_seconds",
        "mailfleet_runtime_errors_total",
    }


@pytest.mark.parametrize("name, base", [
    ("mailfleet_x_seconds_bucket", "mailfleet_x_seconds"),
    ("mailfleet_x_seconds_sum", "mailfleet_x_seconds"),
    ("mailfleet_x_seconds_count", "mailfleet_x_seconds"),
    ("mailfleet_x_total", "mailfleet_x_total"),
])
def test_histogram_suffix_stripped(name, base):
    assert HISTOGRAM_SUFFIX_RE.sub("", name) == base
