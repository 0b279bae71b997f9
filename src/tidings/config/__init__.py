"""The one settings object: TOML file, then ``TIDINGS_*`` environment variables, then CLI flags.

Every setting has a dotted key (``section.name``); its environment variable is
``TIDINGS_SECTION_NAME`` and a wrong value is refused at start-up with that key and the
reason. Nothing else in tidings reads the environment.

The rooms: ``sections`` the typed settings, ``parse`` reading and merging the sources
(``load_settings``), ``validate`` the start-up checks, ``redact`` the settings shown with
their secrets hidden.
"""

from __future__ import annotations

from tidings.config.parse import load_settings
from tidings.config.redact import masked
from tidings.config.sections import (
    AmqpSettings,
    ApiSettings,
    AuthSettings,
    ChannelOptions,
    ClientSettings,
    ClusterSettings,
    LedgerSettings,
    NamespaceSettings,
    ProxySettings,
    RecoverySettings,
    ServerSettings,
    Settings,
    WebPushSettings,
)
from tidings.config.validate import is_loopback

__all__ = [
    "AmqpSettings",
    "ApiSettings",
    "AuthSettings",
    "ChannelOptions",
    "ClientSettings",
    "ClusterSettings",
    "LedgerSettings",
    "NamespaceSettings",
    "ProxySettings",
    "RecoverySettings",
    "ServerSettings",
    "Settings",
    "WebPushSettings",
    "is_loopback",
    "load_settings",
    "masked",
]
