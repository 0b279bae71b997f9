"""The ``centrifuge`` SDK through the proxies: a backend in Node authenticates connections
without a token and answers ``client.rpc``."""

from __future__ import annotations

import pytest

from tests.conformance.test_sdk import run_scenario
from tests.integration.live import ServeProcess, free_port

pytestmark = pytest.mark.node


def test_connect_and_rpc_through_the_backend(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    backend = f"http://127.0.0.1:{port}"
    env = {
        "TIDINGS_PROXY_CONNECT_ENDPOINT": f"{backend}/connect",
        "TIDINGS_PROXY_RPC_ENDPOINT": f"{backend}/rpc",
    }
    tmp = tmp_path_factory.mktemp("proxy")
    with ServeProcess(tmp / "serve.log", env) as server:
        lines = run_scenario(server, "proxy.js", {}, BACKEND_PORT=str(port))
        assert server.stop() == 0, server.log()
    assert lines[-1]["sum"] == 6
