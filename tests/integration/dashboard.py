"""The Grafana dashboard as the tests read it: its PromQL and SQL targets,
the metric names the PromQL names, and the SQL with Grafana's macros
substituted as its PostgreSQL data source does."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARD: Final = ROOT / "reports/grafana/dashboards/finops.json"
PROMETHEUS_UID: Final = "prometheus"
POSTGRES_UID: Final = "finops-postgres"
# Series Prometheus makes itself, and the process collector's.
NOT_OURS: Final = frozenset({"up", "process_cpu_seconds_total"})
_NAME: Final = re.compile(r"\b(finops_[a-z_]+|process_[a-z_]+|up)\b(?=\s*[{\[)])")
_HISTOGRAM_PART: Final = re.compile(r"_(bucket|sum|count)$")
SQL_MACROS: Final = frozenset({"$__timeFilter", "$__timeFrom", "$__timeTo"})


def panels() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text())
    return [p for p in doc["panels"] if p.get("type") != "row"]


def targets(uid: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every target on the data source ``uid``."""
    return [
        (p["title"], t) for p in panels() for t in p["targets"] if t["datasource"]["uid"] == uid
    ]


def promql() -> list[str]:
    """Every PromQL expression, with Grafana's $__rate_interval as 1m."""
    return [t["expr"].replace("$__rate_interval", "1m") for _, t in targets(PROMETHEUS_UID)]


def metric_names(expr: str) -> set[str]:
    """The series names ``expr`` reads (a histogram's by its family name)."""
    return {_HISTOGRAM_PART.sub("", n) for n in _NAME.findall(expr)}


def sql(since: datetime, until: datetime) -> list[tuple[str, str]]:
    """(panel title, SQL) with the macros replaced by literal UTC bounds."""
    frm, to = (f"'{t.isoformat()}'" for t in (since, until))
    out = []
    for title, t in targets(POSTGRES_UID):
        raw = t["rawSql"]
        unknown = set(re.findall(r"\$__\w+", raw)) - SQL_MACROS
        assert not unknown, f"{title}: macros {unknown} the test does not substitute"
        raw = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {frm} AND {to}", raw)
        out.append((title, raw.replace("$__timeFrom()", frm).replace("$__timeTo()", to)))
    return out
