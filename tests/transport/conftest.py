"""The socket-level fixtures (live nodes on ephemeral ports) for the transport tests."""

from tests.integration.conftest import http, serve, server

__all__ = ["http", "serve", "server"]
