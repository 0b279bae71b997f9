"""The application's backend over HTTP, spoken as Centrifugo's proxy protocol (JSON).

:mod:`tidings.proxy.wire` encodes requests and decodes answers (pure functions);
:mod:`tidings.proxy.client` sends them with one aiohttp session per process.
"""

from tidings.proxy.client import ProxyClient

__all__ = ["ProxyClient"]
