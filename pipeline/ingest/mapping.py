"""Where the identity of a usage event comes from, per front door. Pure.

A mapping file (YAML, :data:`DEFAULT_MAPPING` is the one that ships) names,
for each door, the sources of ``tenant``, ``route``, ``feature``,
``node_id``, ``request_id`` and ``event_id``, tried in order: the first one
present and non-empty wins, else the field's ``default``. A source is

- ``a.b.c``: a path into the producer's object (LiteLLM's payload, a
  CloudEvent);
- ``tag:NAME``: the value after ``NAME:`` in the request's tags
  (``route:checkout`` gives route ``checkout``);
- ``host:a.b``: the host name of the URL at that path (LiteLLM's
  ``api_base``: the node that served the call);
- ``span:KEY``, ``resource:KEY``: an OpenTelemetry span's or its resource's
  attribute (their keys hold dots, so they are named whole);
- ``=TEXT``: the constant TEXT;
- ``a+b``: the values of sources ``a`` and ``b`` joined by ``/``, present
  only when both are (LiteLLM gives a fallback's attempts one
  ``litellm_call_id``; with ``startTime`` each attempt has its own id).

Values are strings or numbers (a number becomes its shortest decimal
form); anything else does not count as present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field

IDENTITY: Final = ("tenant", "route", "feature", "node_id", "request_id", "event_id")
Lookup = Callable[[str], object]


class DoorMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: list[str] = Field(default_factory=list)
    route: list[str] = Field(default_factory=list)
    feature: list[str] = Field(default_factory=list)
    node_id: list[str] = Field(default_factory=list)
    request_id: list[str] = Field(default_factory=list)
    event_id: list[str] = Field(default_factory=list)
    # Only where the producer's format has no provider of its own (LiteLLM's
    # OpenMeter events): what the price book should price the model as.
    provider: list[str] = Field(default_factory=list)
    # Used when no source gives a value (no default: the event is refused,
    # except the tenant of a key bound to one tenant).
    default: dict[str, str] = Field(default_factory=dict)

    def sources(self, name: str) -> list[str]:
        value: list[str] = getattr(self, name)
        return value


class MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    litellm: DoorMapping
    otel: DoorMapping
    openmeter: DoorMapping


DEFAULT_MAPPING: Final = files("pipeline.ingest").joinpath("mapping.yaml")


def load(path: Path | None = None) -> MappingFile:
    """A mapping file, or the default one. A file names only the doors it
    changes; the others keep their defaults."""
    default = yaml.safe_load(DEFAULT_MAPPING.read_text())
    if path is None:
        return MappingFile.model_validate(default)
    given = yaml.safe_load(path.read_text()) or {}
    if not isinstance(given, dict):
        raise ValueError(f"{path}: a mapping file is a YAML mapping of doors")
    return MappingFile.model_validate({**default, **given})


def path_value(obj: object, path: str) -> object:
    """The value at a dotted path into nested mappings, or None."""
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def as_text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def tag_value(tags: object, name: str) -> str | None:
    """``route:checkout`` among the tags gives ``checkout`` for ``route``."""
    if not isinstance(tags, list):
        return None
    prefix = name + ":"
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(prefix) and tag[len(prefix) :].strip():
            return tag[len(prefix) :].strip()
    return None


def host_of(url: object) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def resolve(sources: list[str], lookup: Lookup) -> str | None:
    """The first source with a value; ``=TEXT`` is a constant."""
    for source in sources:
        if source.startswith("="):
            return source[1:] or None
        if "+" in source:
            parts = [as_text(lookup(part)) for part in source.split("+")]
            if all(parts):
                return "/".join(p for p in parts if p)
            continue
        found = as_text(lookup(source))
        if found is not None:
            return found
    return None


def identity(door: DoorMapping, lookup: Lookup, tenant: str | None = None) -> dict[str, str | None]:
    """Every identity field of one event; ``tenant`` (a bound key's) stands
    in before the default when no source names one."""
    out: dict[str, str | None] = {}
    for name in IDENTITY:
        fallback = (tenant if name == "tenant" else None) or door.default.get(name)
        out[name] = resolve(door.sources(name), lookup) or fallback
    return out


def object_lookup(obj: Mapping[str, Any], tags: object = None) -> Lookup:
    """Sources into a JSON object: paths, ``tag:`` and ``host:``."""

    def lookup(source: str) -> object:
        if source.startswith("tag:"):
            return tag_value(tags, source[4:])
        if source.startswith("host:"):
            return host_of(path_value(obj, source[5:]))
        return path_value(obj, source)

    return lookup
