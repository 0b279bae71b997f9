"""Loading settings the way the config tests do: a TOML file, an environment holding a
token secret, flags; and the refusal, checked to start with its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes import SECRET
from tidings.config import Settings, load_settings
from tidings.errors import ConfigError

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
BASE_ENV = {"TIDINGS_AUTH_HMAC_SECRET": SECRET}


def load(
    tmp_path: Path,
    toml: str = "",
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    path = tmp_path / "tidings.toml"
    path.write_text(toml)
    return load_settings(path, {**BASE_ENV, **(env or {})}, overrides)


def error(tmp_path: Path, toml: str = "", **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, **kwargs)
    assert str(info.value).startswith(f"{info.value.key}: ")
    return info.value
