"""YAML → typed, frozen dataclasses, strictly: the one config loader and its one error format.

Why dataclasses validated by pydantic: configs stay plain, importable, typed Python objects, while YAML
input is checked strictly. An unknown or misspelt key is an error naming the key path, never a silent
fallback to a default (the failure mode ``getattr(cfg, k, default)`` invites).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from signals.errors import SpirolmInputError

T = TypeVar("T")

STRICT: dict[str, Any] = {"extra": "forbid"}
"""``__pydantic_config__`` of every config dataclass: unknown keys are errors."""


def to_plain(cfg: object) -> dict[str, Any]:
    """A config dataclass as a JSON/YAML-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # type: ignore[call-overload]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``, recursively for nested mappings (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_yaml_mapping(text: str, label: str) -> dict[str, Any]:
    """Parse YAML text that must be a mapping; errors name ``label`` (a file or profile)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SpirolmInputError(f"cannot parse config: {exc}", file=label) from None
    if not isinstance(data, dict):
        raise SpirolmInputError("config must be a YAML mapping", file=label)
    return data


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file; an unreadable file is named in the error."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpirolmInputError(f"cannot read config: {exc.strerror}", file=path) from None
    return parse_yaml_mapping(text, str(path))


def parse_override(text: str) -> dict[str, Any]:
    """``"encoder.trainer.max_epochs=3"`` -> ``{"encoder": {"trainer": {"max_epochs": 3}}}`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpirolmInputError(f"override {text!r} must look like key.path=value", field=text)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SpirolmInputError(f"override value {raw!r} is not valid YAML", field=key) from None
    out: Any = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Every ``key.path=value`` override laid over ``data`` in order."""
    for item in overrides:
        data = deep_merge(data, parse_override(item))
    return data


def validate(cls: type[T], data: dict[str, Any], label: str) -> T:
    """Build ``cls`` from ``data`` strictly.

    Raises:
        SpirolmInputError: ``invalid config: <key.path>: <problem>; ...``, naming ``label`` (file or profile).
    """
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpirolmInputError(f"invalid config: {problems}", file=label) from None


def check_choices(values: Sequence[str], allowed: Sequence[str], what: str, field: str) -> None:
    """Refuse a value outside ``allowed``, naming it and the choices (e.g. an unknown HeLM row)."""
    for value in values:
        if value not in allowed:
            raise SpirolmInputError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}", field=field)


def reject_keys(data: dict[str, Any], paths: Sequence[str], why: str, label: str) -> None:
    """Refuse keys that the config tree sets in one place only (e.g. ``seed``, ``traits``)."""
    for path in paths:
        node: Any = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            raise SpirolmInputError(f"invalid config: {path}: {why}", file=label)
