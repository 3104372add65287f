"""Real parts: one embedded PostgreSQL and one Tansu broker per test session,
on private directories and free ports; each test gets its own database
(cloned from a migrated template) and its own topics and consumer group."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from pipeline.embedded import runtime as embedded
from pipeline.storage import db, partitions

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Stack:
    kafka_url: str
    admin_url: str  # the server's maintenance database
    template: str
    broker_pid: int
    pgdata: Path


@dataclass(frozen=True)
class Env:
    """One test's private slice of the stack, and how to run the CLI in it."""

    kafka_url: str
    database_url: str
    topic: str
    home: Path

    @property
    def vars(self) -> dict[str, str]:
        return {
            **os.environ,
            "FINOPS_KAFKA_URL": self.kafka_url,
            "FINOPS_DATABASE_URL": self.database_url,
            "FINOPS_USAGE_TOPIC": self.topic,
            "FINOPS_USAGE_DLQ_TOPIC": f"{self.topic}-dlq",
            "FINOPS_TELEMETRY_TOPIC": f"{self.topic}-telemetry",
            "FINOPS_CACHE_TOPIC": f"{self.topic}-cache",
            "FINOPS_GROUP_ID": f"g-{self.topic}",
            "FINOPS_PARTITIONS": "3",
            "FINOPS_HOME": str(self.home),
            # Test streams are dated 2025; the age bound has its own tests.
            "FINOPS_MAX_EVENT_AGE_DAYS": "3650",
        }

    def load_default_prices(self) -> None:
        """What ``finops prices load models/data/default_prices.csv`` does to
        a database with no events yet (its reprice then has nothing to do),
        without a CLI process: about 4 s of CPU each, in most tests."""
        from pipeline.spend.price_store import default_prices, load_entries

        engine = db.engine(self.database_url)
        try:
            load_entries(engine, default_prices(), "file:default_prices.csv")
        finally:
            engine.dispose()

    def finops(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(args, {**self.vars, **(extra or {})}, check=check, timeout=timeout)

    def spawn(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env={**self.vars, **(extra or {})},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def make_partitions(database_url: str, *days: date) -> None:
    """What the sinks make before they write, for a test that writes rows
    itself: every partitioned table's partition holding each of ``days``."""
    with psycopg.connect(database_url) as conn:
        for _, sql in partitions.Made().todo(days):
            conn.execute(sql)  # type: ignore[arg-type]


def private_env(home: Path) -> dict[str, str]:
    """This process's environment with none of our settings, and a private
    home: the CLI as a user runs it, starting its own embedded services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    env["FINOPS_HOME"] = str(home)
    return env


def run_cli(
    args: tuple[str, ...], env: dict[str, str], *, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"finops {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    pgdata = root / "pgdata"
    admin_url = db.with_database(embedded.start_postgres(pgdata), "postgres")
    port = embedded.free_port()
    broker = embedded.spawn_broker(port, root / "broker.log")
    template = "finops_template"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{template}"')
    db.upgrade(db.with_database(admin_url, template))
    try:
        yield Stack(f"kafka://127.0.0.1:{port}", admin_url, template, broker.pid, pgdata)
    finally:
        embedded.stop_child(broker, 10)
        embedded.stop_postgres(pgdata)


def new_env(stack: Stack, home: Path) -> Env:
    """A private database (from the migrated template) and topic names."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{stack.template}"')
    return Env(stack.kafka_url, db.with_database(stack.admin_url, name), f"usage-{name}", home)


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Env:
    return new_env(stack, tmp_path)


@pytest.fixture
def engine(env: Env) -> Iterator[Engine]:
    """An engine on the test's database, disposed when the test ends. An
    engine left to the garbage collector closes its connections in
    finalizers, at any allocation of a later test; on CPython 3.11 a
    finalizer that runs inside an import can break that import
    (python/cpython#91351, fixed in 3.12)."""
    made = db.engine(env.database_url)
    try:
        yield made
    finally:
        made.dispose()
