"""Typed keys of what the aiohttp application carries."""

from __future__ import annotations

from aiohttp import web

from tidings.node import Node

__all__ = ["NODE"]

#: The node that serves the application's requests.
NODE: web.AppKey[Node] = web.AppKey("node", Node)
