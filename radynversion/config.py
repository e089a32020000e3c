"""Typed configuration: frozen dataclasses that round-trip through TOML and attrs.

Every artefact (training set, checkpoint, output store) carries the configuration that
made it, serialised with :func:`to_toml`, so any result says how it was produced.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["to_dict", "from_dict", "to_toml", "from_toml", "load_toml"]

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain ``dict`` of a (nested) config dataclass, tuples as lists (TOML-friendly)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        val = getattr(cfg, f.name)
        if dataclasses.is_dataclass(val):
            val = to_dict(val)
        elif isinstance(val, tuple):
            val = list(val)
        out[f.name] = val
    return out


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected an array of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build config dataclass ``cls`` from a ``dict``; unknown keys are an error.

    Fields a class has retired (its ``RETIRED`` mapping: name -> the value under which the
    option did nothing, or None for any value) are accepted and dropped when the value is that
    inert one, so that artefacts written before an option was removed still load; any other
    value is refused: this version cannot reproduce what it did.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    retired = dict(getattr(cls, "RETIRED", {}) or {})
    data = dict(data)
    for key in sorted(set(data) & set(retired)):
        inert = retired[key]
        if inert is not None and data[key] != inert:
            raise ConfigError(f"{where}: {key} = {data[key]!r} was an experiment option of {cls.__name__}, since "
                              f"removed; expected it absent or {inert!r} (an older radynversion reproduces it)")
        del data[key]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)} for {cls.__name__}; "
            f"expected some of {sorted(names)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")


def to_toml(cfg: Any, table: str | None = None) -> str:
    """Serialise a config dataclass to TOML text (nested dataclasses become tables)."""
    d = to_dict(cfg)
    lines: list[str] = []
    if table:
        lines.append(f"[{table}]")
    subtables = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            subtables.append(k)
            continue
        lines.append(f"{k} = {_toml_value(v)}")
    for k in subtables:
        name = f"{table}.{k}" if table else k
        lines.append("")
        lines.append(to_toml(getattr(cfg, k), name))
    return "\n".join(lines)


def from_toml(cls: type[T], text: str, table: str | None = None, where: str = "TOML") -> T:
    """Parse TOML ``text`` (optionally one ``table`` of it) into config ``cls``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML ({err})") from None
    if table is not None:
        data = data.get(table, {})
        where = f"{where} [{table}]"
    return from_dict(cls, data, where=where)


def load_toml(cls: type[T], path: str | Path, table: str | None = None) -> T:
    """Read config ``cls`` from the TOML file ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    return from_toml(cls, text, table=table, where=str(path))
