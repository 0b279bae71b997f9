"""The server API (``POST /api/<method>``, behind a key) and the operational endpoints.

The methods, their requests and their results follow Centrifugo's HTTP API, so that its
clients (the ``cent`` package among them) work unchanged. The rooms: ``methods`` each
method's checks and answer (``call``, ``batch``, ``ApiError``), ``http`` the endpoint (the
key, the body, the statuses) and ``/healthz``, ``/readyz``, ``/metrics`` (``add_routes``).
"""

from __future__ import annotations

from tidings.api.http import add_routes
from tidings.api.methods import METHODS, ApiError, batch, call

__all__ = ["METHODS", "ApiError", "add_routes", "batch", "call"]
