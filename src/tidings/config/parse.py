"""Reading the settings: TOML file, then ``TIDINGS_*`` environment variables, then CLI flags.

Durations, sizes and typed values are parsed here, merged field by field (later sources
win) and handed to :mod:`tidings.config.validate`; a wrong value is refused with its
exact key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from tidings.config.sections import SECTIONS, ChannelOptions, NamespaceSettings, Settings
from tidings.config.validate import validate
from tidings.errors import ConfigError

__all__ = ["ENV_PREFIX", "load_settings"]

ENV_PREFIX = "TIDINGS_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 10**6,
    "mib": 2**20,
    "gb": 10**9,
    "gib": 2**30,
}


def _parse_duration(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration like 30, '30s', '5m', '24h'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ConfigError(key, f"expected a duration like 30, '30s', '5m', '24h', got {value!r}")


def _parse_size(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ConfigError(key, f"expected a size like 65536, '64KiB', '1MiB', got {value!r}")


def _coerce(key: str, hint: Any, meta: Mapping[str, Any], value: object, from_text: bool) -> Any:
    """Turns a raw TOML/env/CLI value into the field's type, or raises ConfigError."""
    kind = meta.get("kind")
    if kind == "duration":
        result: Any = _parse_duration(key, value)
    elif kind == "size":
        result = _parse_size(key, value)
    else:
        origin = get_origin(hint)
        args = get_args(hint)
        optional = origin in (Union, types.UnionType) and type(None) in args
        if optional:
            if value is None or (from_text and value == ""):
                return None
            hint = next(a for a in args if a is not type(None))
            origin = get_origin(hint)
        if origin is list:
            if from_text and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(key, f"expected a list of strings, got {value!r}")
            return list(value)
        if hint is bool:
            if from_text and isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
            if not isinstance(value, bool):
                raise ConfigError(key, f"expected true or false, got {value!r}")
            return value
        if hint is int:
            if from_text and isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(key, f"expected a whole number, got {value!r}") from None
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(key, f"expected a whole number, got {value!r}")
            result = value
        elif hint is float:
            if from_text and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ConfigError(key, f"expected a number, got {value!r}") from None
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(key, f"expected a number, got {value!r}")
            result = float(value)
        elif hint is str:
            if not isinstance(value, str):
                raise ConfigError(key, f"expected a string, got {value!r}")
            return value
        else:  # pragma: no cover - a field type this loader does not know is a bug here
            raise ConfigError(key, f"unsupported setting type {hint!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and result < lo:
        raise ConfigError(key, f"must be at least {lo}, got {result}")
    if hi is not None and result > hi:
        raise ConfigError(key, f"must be at most {hi}, got {result}")
    return result


def _build(cls: type[Any], prefix: str, raw: Mapping[str, Any], from_text: bool) -> Any:
    """Builds section ``cls`` from ``raw``, refusing unknown keys."""
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix, f"expected a table, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in fields:
            raise ConfigError(key, "unknown setting")
        values[name] = _coerce(key, hints[name], fields[name].metadata, value, from_text)
    return cls(**values)


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Maps ``TIDINGS_SECTION_NAME`` variables to their section and name."""
    out: dict[str, dict[str, Any]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section, cls in SECTIONS.items():
            if rest.startswith(section + "_"):
                name = rest[len(section) + 1 :]
                if name in {f.name for f in dataclasses.fields(cls)}:
                    out.setdefault(section, {})[name] = value
                    break
        else:
            raise ConfigError(var, "unknown environment setting")
    return out


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Builds and validates the settings.

    Args:
        path: a TOML file, or None (``TIDINGS_CONFIG`` in ``env`` names one otherwise).
        env: the environment; only ``TIDINGS_*`` variables are read.
        overrides: CLI values as dotted keys (``{"server.port": 9000}``), applied last.

    Raises:
        ConfigError: with the exact key and the reason.
    """
    env = env or {}
    raw: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    known = set(SECTIONS) | {"namespaces", "routes"}
    for section in raw:
        if section not in known:
            raise ConfigError(section, "unknown section")

    sections: dict[str, Any] = {}
    text_values = _from_env(env)
    for name, cls in SECTIONS.items():
        merged = dict(raw.get(name, {})) if isinstance(raw.get(name, {}), Mapping) else raw[name]
        file_part = _build(cls, name, merged, from_text=False)
        env_part = text_values.get(name, {})
        cli_part = {
            k.partition(".")[2]: v
            for k, v in (overrides or {}).items()
            if k.partition(".")[0] == name and k.partition(".")[2] and v is not None
        }
        if env_part or cli_part:
            # Later sources win field by field: file < environment < flags.
            values = {f.name: getattr(file_part, f.name) for f in dataclasses.fields(cls)}
            for part in (env_part, cli_part):
                parsed = _build(cls, name, part, from_text=True)
                values.update({k: getattr(parsed, k) for k in part})
            file_part = cls(**values)
        sections[name] = file_part
    for k in overrides or {}:
        section, _, name = k.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(k, "unknown setting")

    namespaces_raw = raw.get("namespaces", [])
    if not isinstance(namespaces_raw, list):
        raise ConfigError("namespaces", "expected an array of tables ([[namespaces]])")
    defaults = {
        f.name: getattr(sections["channels"], f.name) for f in dataclasses.fields(ChannelOptions)
    }
    namespaces = []
    for i, entry in enumerate(namespaces_raw):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"namespaces[{i}].name", "every namespace needs a name")
        ns = _build(NamespaceSettings, f"namespaces[{i}]", {**defaults, **entry}, from_text=False)
        namespaces.append(ns)
    routes = raw.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, Mapping) for r in routes):
        raise ConfigError("routes", "expected an array of tables ([[routes]])")

    amqp = sections["amqp"]
    if amqp.urls and amqp.url is None:
        # Everything that asks "is RabbitMQ configured?" reads amqp.url.
        sections["amqp"] = dataclasses.replace(amqp, url=amqp.urls[0])
    settings = Settings(namespaces=namespaces, routes=[dict(r) for r in routes], **sections)
    validate(settings)
    return settings
