"""Grafana dashboards as data (Grafana itself is not packaged here): each file is a valid
dashboard on the provisioned data sources, and every SQL panel runs on the test database with
Grafana's macros expanded the way Grafana expands them. The PromQL panels are checked against
a real Prometheus in test_prometheus.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from tests.conftest import REPO

pytestmark = pytest.mark.integration

GRAFANA = REPO / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def panels() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            found.append((f"{path.name}: {panel['title']}", panel))
    return found


def sql_targets() -> list[tuple[str, str]]:
    return [
        (name, target["rawSql"])
        for name, panel in panels()
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def expand_macros(sql: str) -> str:
    """Grafana's Postgres macros used by the panels, as Grafana expands them (the last 7 days)."""
    start, end = "now() - interval '7 days'", "now()"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {start} AND {end}", sql)
    leftover = re.findall(r"\$\w+", sql)
    assert not leftover, f"macros this test does not expand: {leftover}"
    return sql


def test_dashboards_use_the_provisioned_data_sources() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "pagemill.yaml").read_text()
    )
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert len(DASHBOARDS) >= 2
    seen_uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"] and board["panels"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    for name, panel in panels():
        if panel["type"] == "row":
            continue
        for target in [panel, *panel["targets"]]:
            source = target["datasource"]
            assert uids.get(source["uid"]) == source["type"], name
            seen_uids.add(source["uid"])
        assert all(("expr" in t) != ("rawSql" in t) for t in panel["targets"]), name
    assert seen_uids == set(uids)  # both data sources are used


def test_every_sql_panel_runs_on_the_ops_views(sessions: sessionmaker[Session]) -> None:
    # Some rows, so that the queries read real data (a finished document, a pending one).
    with transaction(sessions) as session:
        for key in ("a.pdf", "b.pdf"):
            repo.register_document(session, ObjectRef("grafana", key, "v"), "invoice", "local")
    targets = sql_targets()
    assert targets
    with sessions() as session:
        for name, sql in targets:
            with session.begin_nested():  # one failing panel names itself, not the next
                try:
                    rows = session.execute(text(expand_macros(sql))).mappings().all()
                except Exception as exc:
                    raise AssertionError(f"{name}: {exc}") from exc
            for row in rows:  # time series: Grafana reads a time, a metric and a value
                if "time" in row:
                    assert set(row) == {"time", "metric", "value"}, name


def test_sql_panels_read_only_the_ops_views() -> None:
    for name, sql in sql_targets():
        tables = set(re.findall(r"\bFROM\s+(\w+)", sql, re.I))
        assert tables and all(t.startswith("ops_") for t in tables), (name, tables)


def test_prometheus_config_scrapes_web_workers_and_intake() -> None:
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"pagemill-web", "pagemill-worker", "pagemill-intake"}
