"""The one config machinery: a strict pydantic base, dotted overrides, YAML ``include:`` and error messages.

Training configs (``agekit train``) and experiment grids (``agekit experiment``) both go through these,
so a key is spelled, overridden and reported the same way everywhere.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "ConfigError",
    "Strict",
    "apply_overrides",
    "deep_merge",
    "format_validation_error",
    "load_yaml",
    "parse_overrides",
    "set_dotted",
]


class ConfigError(ValueError):
    """The config file or an override is invalid; the message names the key (one line, for the CLI)."""


class Strict(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# YAML 1.1 (PyYAML) reads 1e-3 as a string; on the command line it is always meant as a number
_SCI = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """``["a.b.c=yaml", ...]`` -> ``{"a.b.c": value}`` (the value parsed as YAML: ``true``, ``[1, 2]``; ``1e-3`` a float)."""
    out: dict[str, Any] = {}
    for it in items or []:
        key, sep, value = it.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {it!r} must look like section.key=value")
        try:
            out[key] = float(value) if _SCI.match(value.strip()) else yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {it!r}: the value is not valid YAML: {_first_line(e)}") from None
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw["a"]["b"]["c"] = value`` for ``key="a.b.c"``, creating sections as needed."""
    node = raw
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} has an empty part")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {p} is not a section")
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Dotted overrides (``"a.b=v"`` strings or a ``{"a.b": v}`` mapping) onto ``raw``, in order; returns ``raw``."""
    items = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    for k, v in items.items():
        set_dotted(raw, k, v)
    return raw


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``, merging nested mappings (neither input is modified)."""
    out = copy.deepcopy(dict(a))
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def load_yaml(path: str | Path, allow_include: bool = True, what: str = "config file",
              _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping from ``path``; ``include: other.yaml`` (or a list) is merged underneath, path relative to the file.

    Included files may include others; the including file's keys win. Every failure is a one-line ConfigError.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {_first_line(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path} cannot be read: {_first_line(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys, not {type(raw).__name__}")
    if "include" not in raw or not allow_include:
        return raw
    inc = raw.pop("include")
    names = inc if isinstance(inc, list) else [inc]
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{what} {path}: include must be a file name or a list of file names")
    base: dict[str, Any] = {}
    for name in names:
        p = (path.parent / name).resolve()
        if p in _seen or p == path.resolve():
            raise ConfigError(f"{what} {path}: include loop through {p}")
        if not p.is_file():
            raise ConfigError(f"{what} {path}: included file not found: {path.parent / name}")
        base = deep_merge(base, load_yaml(p, True, what, (*_seen, path.resolve())))
    return deep_merge(base, raw)


def format_validation_error(e: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as one line naming the dotted key: ``unknown config key 'optim.lrr'``."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = "unknown config key" if err["type"] == "extra_forbidden" else None
    if msg:
        line = f"{msg} '{where}'"
    elif not where:  # a whole-config check (model validator): its message names the keys itself
        line = str(err["msg"]).removeprefix("Value error, ")
    else:
        line = f"config key '{where}': {err['msg']}"
    if len(e.errors()) > 1:
        line += f" (and {len(e.errors()) - 1} more)"
    return f"{prefix}{line}"
