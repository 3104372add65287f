from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.ingest import mapping
from pipeline.ingest.mapping import DoorMapping, identity, object_lookup, resolve


def test_sources_are_tried_in_order_and_the_first_present_wins() -> None:
    payload = {"a": {"b": ""}, "c": 7, "d": {"e": "x"}, "f": True}
    look = object_lookup(payload)
    assert resolve(["a.b", "f", "c"], look) == "7"  # "" and booleans are absent
    assert resolve(["missing.path", "d.e"], look) == "x"
    assert resolve(["nope", "=fixed"], look) == "fixed"
    assert resolve(["nope"], look) is None


def test_tags_hosts_and_joined_sources() -> None:
    payload = {"api_base": "http://vllm-3.internal:8000/v1", "id": "c1", "start": 12.5}
    look = object_lookup(payload, ["User-Agent: x", "route:checkout", "route:second"])
    assert resolve(["tag:route"], look) == "checkout"
    assert resolve(["tag:feature", "=default"], look) == "default"
    assert resolve(["host:api_base"], look) == "vllm-3.internal"
    assert resolve(["id+start"], look) == "c1/12.5"
    assert resolve(["id+missing", "id"], look) == "c1"  # a join is present only whole


def test_a_bound_keys_tenant_stands_in_before_the_default() -> None:
    door = DoorMapping(tenant=["team"], route=["r"], default={"tenant": "unattributed"})
    assert identity(door, object_lookup({}), "acme")["tenant"] == "acme"
    assert identity(door, object_lookup({}))["tenant"] == "unattributed"
    assert identity(door, object_lookup({"team": "t1"}), "acme")["tenant"] == "t1"


def test_the_default_mapping_loads_and_a_file_overrides_only_its_doors(tmp_path: Path) -> None:
    default = mapping.load()
    assert default.litellm.tenant[0] == "metadata.user_api_key_team_alias"
    custom = tmp_path / "m.yaml"
    custom.write_text("otel:\n  tenant: ['resource:k8s.namespace.name']\n")
    loaded = mapping.load(custom)
    assert loaded.otel.tenant == ["resource:k8s.namespace.name"]
    assert loaded.litellm == default.litellm
    custom.write_text("litellm:\n  tenantt: [x]\n")  # a typo is an error, not ignored
    with pytest.raises(ValidationError):
        mapping.load(custom)
