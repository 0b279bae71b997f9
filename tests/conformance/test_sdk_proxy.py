"""The ``centrifuge`` SDK through the proxies: a backend in Node authenticates connections
without a token, answers ``client.rpc`` and moderates ``sub.publish``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.test_sdk import TRANSPORTS, run_scenario
from tests.integration.live import ServeProcess, free_port

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, int]]:
    """A node whose proxies point at the port where each scenario runs its backend."""
    port = free_port()
    backend = f"http://127.0.0.1:{port}"
    env = {
        "TIDINGS_PROXY_CONNECT_ENDPOINT": f"{backend}/connect",
        "TIDINGS_PROXY_RPC_ENDPOINT": f"{backend}/rpc",
        "TIDINGS_PROXY_PUBLISH_ENDPOINT": f"{backend}/publish",
    }
    tmp = tmp_path_factory.mktemp("proxy")
    config = tmp / "tidings.toml"
    config.write_text(
        "[[namespaces]]\nname = 'chat'\nproxy_publish = true\n"
    )
    env["TIDINGS_CONFIG"] = str(config)
    with ServeProcess(tmp / "serve.log", env) as server:
        yield server, port
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_and_rpc_through_the_backend(
    proxied: tuple[ServeProcess, int], transport: str
) -> None:
    server, port = proxied
    lines = run_scenario(
        server,
        "proxy.js",
        {},
        BACKEND_PORT=str(port),
        CHANNEL=f"chat:{transport}",
        TIDINGS_TRANSPORT=transport,
    )
    assert lines[-1]["sum"] == 6
