"""A real Prometheus for the metrics tests: Debian's ``prometheus``
(tests/install-tools.sh installs it), on a free loopback port with a private
data directory, scraping the targets a test names; queried through its HTTP
API."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.embedded.runtime import free_port, stop_child
from tests.waiting import wait_ready

PROMETHEUS = shutil.which("prometheus")


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def scalar(self, promql: str) -> float | None:
        """The one value of a query that yields one series (None: none)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return result[0][1] if result else None

    def until(self, promql: str, ok: object, timeout_s: float, what: str) -> float:
        """Poll ``promql`` until ``ok(value)``; the value."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(promql)
            if value is not None and ok(value):  # type: ignore[operator]
                return value
            time.sleep(0.5)
        raise AssertionError(f"{what}: {promql} = {value} after {timeout_s:g} s")


@contextmanager
def prometheus(tmp: Path, jobs: Mapping[str, list[str]]) -> Iterator[Prometheus]:
    """Prometheus scraping each job's ``host:port`` targets every second."""
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing: .ci/run installs it (tests/install-tools.sh)")
        pytest.skip("no prometheus here: run tests/install-tools.sh")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", proc, log, "prometheus", timeout_s=60)  # type: ignore[arg-type]
        yield Prometheus(url)
    finally:
        stop_child(proc, 15)
