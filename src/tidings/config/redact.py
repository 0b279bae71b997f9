"""The effective settings as plain data, with every secret hidden (``tidings check-config``)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from tidings.config.sections import SECTIONS, Settings

__all__ = ["masked"]


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret replaced by ``***``."""

    def section(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and value is not None:
                if isinstance(value, list):
                    value = [_mask_url(v) for v in value]
                else:
                    value = _mask_url(value) if f.name == "url" else "***"
            elif f.name.endswith("_endpoint") and value is not None:
                value = _mask_url(value)  # http://user:password@backend/
            out[f.name] = value
        return out

    result: dict[str, Any] = {name: section(getattr(settings, name)) for name in SECTIONS}
    result["namespaces"] = [section(ns) for ns in settings.namespaces]
    result["routes"] = list(settings.routes)
    return result


def _mask_url(url: str) -> str:
    """Hides the password of ``amqp://user:password@host``."""
    # Up to the last "@" of the authority: a raw "@" in the password must not leak its tail.
    return re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url)
