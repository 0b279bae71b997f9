"""The live-node fixtures of the socket-level tests, for the SDKs that run in-process."""

from tests.integration.conftest import http, serve

__all__ = ["http", "serve"]
