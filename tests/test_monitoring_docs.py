"""The Grafana dashboard (docs/grafana/tincay.json) and the Prometheus alert rules
(docs/prometheus/tincay-alerts.yml) ask only for what tincay exports: every metric name in
every expression is one a served app's /metrics shows, every label one those metrics carry,
and every metric tincay exports has a panel."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ca import metrics
from ca.testing import Hierarchy

DOCS = Path(__file__).resolve().parent.parent / "docs"
DASHBOARD = DOCS / "grafana" / "tincay.json"
ALERTS = DOCS / "prometheus" / "tincay-alerts.yml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",)}
TARGET_LABELS = {"instance", "job"}  # Prometheus adds them to every series it scrapes
NOT_TINCAYS = {"up"}  # Prometheus's own: is the target answering
METRIC = re.compile(r"\b(tincay_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """{sample name tincay exports: its label names}, from a served app's /metrics (a CRL
    published, so every database gauge has its samples) and the counters' declared labels
    (a counter nobody counted yet has no samples to show them)."""
    with Hierarchy.from_spec(at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
                             ) as pki, pki.serve() as url:
        pki.service.publication.publish_crl("issuing-ca")
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    declared = {m._name: set(m._labelnames)  # noqa: SLF001 - what each metric was made with
                for m in vars(metrics.metrics()).values() if hasattr(m, "_labelnames")}
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        # _created: prometheus_client's creation times, not exported in multiprocess mode
        if not family.name.startswith("tincay_") or family.name.endswith("_created"):
            continue
        for suffix in SUFFIXES[family.type]:
            name = family.name + suffix
            names[name] = declared.get(family.name, set()) | {"le"} if suffix == "_bucket" \
                else declared.get(family.name, set())
            names[name] |= {label for sample in family.samples if sample.name == name
                            for label in sample.labels}
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _check(expr: str, exported: dict[str, set[str]], where: str) -> set[str]:
    """The tincay metrics ``expr`` uses, each exported, with labels they carry."""
    used = METRIC.findall(expr)
    assert used or NOT_TINCAYS & set(re.findall(r"\b[a-z_]+\b", expr)), (where, expr)
    labels: set[str] = set(TARGET_LABELS)
    for name, matchers in used:
        assert name in exported, f"{where}: {name} is not a metric tincay exports"
        labels |= exported[name]
        for label in MATCHER.findall(matchers):
            assert label in exported[name] | TARGET_LABELS, f"{where}: {name} has no {label}"
    for grouping in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            assert label in labels, f"{where}: no metric of {expr!r} has the label {label}"
    return {name for name, _ in used}


def test_the_dashboard_uses_only_exported_metrics_and_shows_every_one(
        exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] == "tincay" and dashboard["uid"]
    used: set[str] = set()
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dashboard["panels"])}) == \
        len(list(_panels(dashboard["panels"])))  # Grafana needs unique panel ids
    for panel in panels:
        assert panel["targets"] and panel["title"] and panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            used |= _check(target["expr"], exported, panel["title"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            _check(variable["definition"], exported, variable["name"])
    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|count|sum)$", "", name)

    missing = {family(name) for name in exported} - {family(name) for name in used}
    assert not missing, f"no panel shows {sorted(missing)}"
    uses = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "histogram_quantile(0.99, sum by (endpoint, le) (rate(" \
        "tincay_http_request_duration_seconds_bucket" in uses


def test_the_alert_rules_use_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        _check(rule["expr"], exported, name)
    assert "tincay_certificate_expiry_days) < 7" in alerts["TincayCertificateExpiringSoon"][
        "expr"]
    for name, metric in (("TincayCrlTooOld", "tincay_crl_age_seconds"),
                         ("TincayHsmErrors", "tincay_hsm_errors_total"),
                         ("TincayNotReady", "tincay_ready")):
        assert metric in alerts[name]["expr"], name
    promtool = shutil.which("promtool")  # Debian's prometheus package, where installed
    if promtool is not None:
        done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
