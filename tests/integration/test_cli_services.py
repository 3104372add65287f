"""A command starts only the services it uses: the ones that read or write
PostgreSQL alone start no embedded broker, even with no broker configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Env, run_cli

pytestmark = pytest.mark.integration


def test_database_commands_start_no_broker(env: Env) -> None:
    database_only = {k: v for k, v in env.vars.items() if k != "FINOPS_KAFKA_URL"}
    home = Path(database_only["FINOPS_HOME"])
    for args in (("prices", "list"), ("spend",), ("alerts", "list"), ("metrics",)):
        run_cli(args, database_only)
    # The embedded runtime records whatever it starts here; nothing was.
    assert not (home / "embedded.json").exists()
    assert not (home / "broker.log").exists()
    # The check can fail: a command that publishes does start a broker, and
    # still no PostgreSQL of its own.
    started = run_cli(("replay", "/dev/null"), database_only)
    assert "published 0 events" in started.stdout
    assert (home / "broker.log").exists() and not (home / "pgdata").exists()
    assert "broker    stopped" in run_cli(("down",), database_only).stdout
