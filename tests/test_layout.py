"""The layers' rules (docs/architecture.md), read from the imports of every
module: each rule would fail on the import that breaks it, naming it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("models", "pipeline", "reports", "migrations")
DOMAINS = ("spend", "energy", "cache", "alerts", "finance")
OUTER = tuple(f"pipeline.{p}" for p in ("worker", "web", "cli", "testbed", "ingest"))
# Pure domain logic: values in, values out; no I/O, clock or environment.
PURE = (
    "models.money",
    "models.months",
    "pipeline.stream.admission",
    "pipeline.storage.partitions",
    "pipeline.spend.batch",
    "pipeline.spend.windows",
    "pipeline.spend.pricing",
    "pipeline.spend.latency",
    "pipeline.spend.budgets",
    "pipeline.spend.request_costs",
    "pipeline.spend.ledger",
    "pipeline.energy.attribution",
    "pipeline.energy.footprint",
    "pipeline.cache.windows",
    "pipeline.alerts.rules",
    "pipeline.alerts.lifecycle",
    "pipeline.alerts.sliding_sums",
    "pipeline.finance.lines",
    "pipeline.finance.forecast",
    "pipeline.testbed.demo_hours",
    "pipeline.ingest.attempts",
    "pipeline.ingest.outcome",
    "pipeline.ingest.usage_lines",
    "pipeline.ingest.cloudevents",
    "pipeline.ingest.litellm_payload",
    "pipeline.ingest.genai_spans",
    "pipeline.ingest.otlp",
    "pipeline.ingest.serving_metrics",
)
IO_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "subprocess",
        "os",
        "psycopg",
        "sqlalchemy",
        "aiokafka",
        "faust",
        "urllib",
        "httpx",
        "aiohttp",
        "requests",
        "pathlib",
        "time",
    }
)
CLOCKS = frozenset({"now", "utcnow", "today", "time", "monotonic", "perf_counter"})
CLOCK_OWNERS = frozenset({"datetime", "date", "time"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _parse_all() -> dict[str, ast.Module]:
    return {n: ast.parse(p.read_text(), filename=str(p)) for n, p in modules().items()}


# Parsed when the tests are collected, before any test runs: CPython 3.11's
# parser can fail with "AST constructor recursion depth mismatch" in a
# process where another test has just caught a RecursionError (the hostile
# deep-nesting inputs do), so the parse must not wait for that.
_TREES = _parse_all()


def tree(name: str) -> ast.Module:
    return _TREES[name]


def imported(name: str) -> Iterator[str]:
    """Every module ``name`` imports, anywhere in it (functions too), with
    ``from package import module`` resolved to the module."""
    package = name if modules()[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules() else base


def ours(name: str) -> list[str]:
    return sorted({m for m in imported(name) if m.split(".")[0] in OURS and m in modules()})


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_models_import_nothing_of_ours() -> None:
    bad = {m: ours(m) for m in modules() if _in(m, "models") and ours(m)}
    bad = {m: [i for i in deps if not _in(i, "models")] for m, deps in bad.items()}
    assert not {m: d for m, d in bad.items() if d}


def test_the_stream_kernel_imports_only_models_and_settings() -> None:
    allowed = ("models", "pipeline.stream", "pipeline.settings")
    bad = {
        m: [i for i in ours(m) if not _in(i, *allowed)]
        for m in modules()
        if _in(m, "pipeline.stream")
    }
    assert not {m: d for m, d in bad.items() if d}


def test_domains_never_import_the_outer_rooms() -> None:
    domains = tuple(f"pipeline.{d}" for d in DOMAINS)
    bad = {m: [i for i in ours(m) if _in(i, *OUTER)] for m in modules() if _in(m, *domains)}
    assert not {m: d for m, d in bad.items() if d}


def test_reports_never_import_the_outer_rooms_or_the_month_close() -> None:
    banned = (*OUTER, "pipeline.finance.close")
    bad = {m: [i for i in ours(m) if _in(i, *banned)] for m in modules() if _in(m, "reports")}
    assert not {m: d for m, d in bad.items() if d}


def test_pure_modules_do_no_io_and_read_no_clock_or_environment() -> None:
    for name in PURE:
        io = {i for i in imported(name) if i.split(".")[0] in IO_MODULES}
        assert not io, f"{name} imports {io}"
        reads = {
            f"{node.value.id}.{node.attr}"
            for node in ast.walk(tree(name))
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (
                (node.attr in CLOCKS and node.value.id in CLOCK_OWNERS)
                or node.attr in ("environ", "getenv")
            )
        }
        assert not reads, f"{name} reads {reads}"


def test_no_import_circle() -> None:
    graph = {m: ours(m) for m in modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in graph[m]:
            if state.get(dep) == 1:
                circle = [*path[path.index(dep) :], dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_settings_lives_directly_in_pipeline() -> None:
    direct = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert direct == ["__init__.py", "settings.py"]


@pytest.mark.parametrize("top", ["models", "pipeline", "reports"])
def test_modules_stay_small(top: str) -> None:
    def limit(m: str) -> int:
        return 300 if _in(m, "pipeline.cli") else 500

    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items() if _in(m, top)}
    assert not {m: n for m, n in sizes.items() if n > limit(m)}


def test_the_rules_see_every_import() -> None:
    """The reader itself: a module known to import another is seen doing so,
    through ``from package import module`` and inside a function."""
    common = ours("pipeline.cli.common")
    assert "pipeline.embedded.endpoints" in common  # from pipeline.embedded import endpoints
    assert "pipeline.testbed.simulate.usage" in common  # inside check_incident
