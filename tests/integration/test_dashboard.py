"""The Grafana dashboard and its provisioning: every panel reads a data
source the provisioning defines; every PromQL names a metric the processes
export (and every metric they export has a panel); every SQL panel runs
against the real schema and finds the spend a drain wrote; the compose
file mounts what the repository holds and Prometheus scrapes the services
that serve metrics. (tests/integration/test_prometheus.py evaluates every
PromQL against a real Prometheus scraping a worker.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.factories import event
from tests.integration import dashboard as d
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def _exported() -> set[str]:
    """The metric families the worker, the door and the pages register."""
    import pipeline.ingest.server
    import pipeline.web.app
    import pipeline.worker.metrics  # noqa: F401

    lines = generate_latest(REGISTRY).decode().splitlines()
    return {line.split()[2] for line in lines if line.startswith("# TYPE finops_")}


def test_every_panel_reads_a_provisioned_data_source() -> None:
    path = d.ROOT / "reports/grafana/provisioning/datasources/datasources.yaml"
    sources = {s["uid"]: s["type"] for s in yaml.safe_load(path.read_text())["datasources"]}
    assert set(sources) == {d.PROMETHEUS_UID, d.POSTGRES_UID}
    for panel in d.panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            ds = target["datasource"]
            assert sources.get(ds["uid"]) == ds["type"], (panel["title"], ds)
    ids = [p["id"] for p in d.panels()]
    assert len(ids) == len(set(ids))


def test_every_promql_names_an_exported_metric_and_every_metric_has_a_panel() -> None:
    exported = _exported()
    named: set[str] = set()
    for expr in d.promql():
        names = d.metric_names(expr)
        assert names, expr
        assert names - d.NOT_OURS <= exported, (expr, names - d.NOT_OURS - exported)
        named |= names
    assert exported <= named, f"no panel shows {exported - named}"


def test_every_sql_panel_runs_against_the_schema(env: Env, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    env.load_default_prices()
    at = [(now - timedelta(hours=2, minutes=i)).isoformat() for i in range(30)]
    lines = [
        json.dumps(event(event_id=f"g{i}", request_id=f"g{i}", tenant=f"t{i % 3}", ts=ts))
        for i, ts in enumerate(at)
    ]
    (tmp_path / "events.jsonl").write_text("\n".join([*lines, "not json"]) + "\n")
    env.finops("replay", str(tmp_path / "events.jsonl"))
    env.finops("worker", "--drain")
    found = {}
    for title, sql in d.sql(now - timedelta(days=1), now + timedelta(hours=1)):
        found[title] = env.query(sql)
    spend = [t for t in found if t.startswith("Spend")]
    assert spend and all(found[t] for t in spend), {t: found[t] for t in spend}
    by_tenant = {r[0]: r[1] for r in found["Spend by tenant (dashboard range)"]}
    assert set(by_tenant) == {"t0", "t1", "t2"}
    (cost,) = env.query("SELECT sum(cost_usd)::float8 FROM spend_window")[0]
    assert sum(by_tenant.values()) == pytest.approx(cost)
    dead = found["Dead letters by topic and reason (dashboard range)"]
    assert [r[2] for r in dead] == [1]


def test_compose_mounts_what_the_repository_holds_and_scrapes_what_serves() -> None:
    compose = yaml.safe_load((d.ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (d.ROOT / source).exists(), (name, source)
    config_path = d.ROOT / "reports/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    scraped = {
        name: sd["port"]
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert set(scraped) == {"worker", "ingest", "web"}
    for name, port in scraped.items():
        env = services[name]["environment"]
        assert int(env["FINOPS_METRICS_PORT"]) == port, name
        assert env["FINOPS_METRICS_HOST"] == "0.0.0.0", name
