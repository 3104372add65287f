"""Configuration declared in YAML and validated by pydantic (the route
catalog, the chargeback policy). Parsed with YAML's base loader, so every
scalar is a string and no float ever sneaks into a money value; errors name
the path of the offending value (``routes[2].token_budget.input_cap``)."""

from __future__ import annotations

from typing import ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A declared setting: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigError(ValueError):
    """The document is invalid; ``problems`` lists each as ``path: message``."""

    what: ClassVar[str] = "configuration"
    root: ClassVar[str] = "<document>"  # the path of the document itself

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"invalid {self.what}:\n  " + "\n  ".join(problems))
        self.problems = problems


def error_path(loc: tuple[int | str, ...], root: str) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or root


def parse(
    text: str, model: type[M], error: type[ConfigError], not_a_mapping: str, *, empty_ok: bool
) -> M:
    """``text`` as ``model``, or ``error`` with every problem at once. An
    empty document is the model's defaults if ``empty_ok``."""
    try:
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise error([f"not YAML: {exc}"]) from exc
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise error([not_a_mapping])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(
            [
                f"{error_path(tuple(e['loc']), error.root)}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
        ) from exc
