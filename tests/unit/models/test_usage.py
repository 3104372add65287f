"""The usage normalizers against golden fixtures taken from the providers'
SDK types and documentation (each names its source), and the contract's
invariants on whatever they produce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.contracts import UsageEvent
from models.usage import SHAPES, anthropic_messages, gemini, openai_chat
from tests.factories import event

FIXTURES = sorted((Path(__file__).parents[2] / "data" / "usage").glob("*.json"))


def test_every_shape_has_a_fixture() -> None:
    assert {p.stem.rsplit("_", 1)[0] for p in FIXTURES} == set(SHAPES)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_fixture_maps_to_its_expected_counts(path: Path) -> None:
    fixture = json.loads(path.read_text())
    shape = path.stem.rsplit("_", 1)[0]
    usage = SHAPES[shape](fixture["usage"], fixture.get("response"))
    fields = usage.fields()
    expected = fixture["expected"]
    assert {k: getattr(usage, k) for k in expected} == expected
    # The contract accepts it, invariants and all, as a batch call too.
    UsageEvent.model_validate(event(**fields))
    UsageEvent.model_validate(event(**usage.fields(batch=True)))


def test_anthropic_input_excludes_the_cache_and_openai_input_includes_it() -> None:
    # The same call, reported both ways: 1,000 uncached, 3,000 read, 500 written.
    anthropic = anthropic_messages(
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 500,
            "output_tokens": 10,
        }
    )
    openai = openai_chat(
        {
            "prompt_tokens": 4500,
            "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 3000, "cache_write_tokens": 500},
        }
    )
    assert anthropic == openai


def test_gemini_thoughts_are_output_and_tool_results_are_input() -> None:
    usage = gemini(
        {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 40,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 460,
        }
    )
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (140, 320, 300)
    # A model whose candidates already hold the thoughts: the total says so.
    inclusive = gemini(
        {
            "promptTokenCount": 100,
            "candidatesTokenCount": 320,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 420,
        }
    )
    assert (inclusive.output_tokens, inclusive.reasoning_tokens) == (320, 300)


_count = st.one_of(st.none(), st.integers(-5, 10**7), st.booleans(), st.text(max_size=3))


@given(
    st.sampled_from(sorted(SHAPES)),
    st.recursive(
        st.dictionaries(st.text(max_size=30), _count, max_size=8),
        lambda inner: st.dictionaries(st.text(max_size=30), inner, max_size=4),
        max_leaves=20,
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "prompt_tokens",
                "completion_tokens",
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "promptTokenCount",
                "candidatesTokenCount",
                "thoughtsTokenCount",
                "inputTokens",
                "outputTokens",
                "cacheReadInputTokens",
                "cacheWriteInputTokens",
                "prompt_cache_hit_tokens",
            ]
        ),
        _count,
    ),
)
def test_any_object_gives_counts_whose_parts_fit_or_a_refusal(
    shape: str, noise: dict[str, Any], counts: dict[str, Any]
) -> None:
    """Hostile usage objects never raise in a normalizer; what comes out is
    non-negative, and thinking and 1h writes never exceed their wholes."""
    usage = SHAPES[shape]({**noise, **counts}, noise)
    values = [v for k, v in usage.fields().items() if k not in ("service_tier", "batch")]
    assert all(isinstance(v, int) and v >= 0 for v in values)
    assert usage.reasoning_tokens <= usage.output_tokens
    assert usage.cache_write_1h_tokens <= usage.cache_write_tokens
    assert usage.service_tier in (None, "standard", "priority", "flex", "batch")
