"""Nodes of the security suite: real ``tidings serve`` processes whose logs the tests read.

The nodes log at ``debug``, the most talkative level, so that "the token never appears in
the log" is checked where it is hardest to keep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.security.wire import AUDIENCE, CONFIG, DEBUG, ISSUER
from tests.system.harness import Node, start_node


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """An HMAC node with the namespaces of ``CONFIG`` and tight per-connection limits."""
    env = DEBUG | {
        "TIDINGS_CLIENT_MAX_SUBSCRIPTIONS": "3",
        "TIDINGS_CLIENT_MAX_COMMANDS_PER_FRAME": "5",
        "TIDINGS_CLIENT_MAX_FRAME_BYTES": "4096",
    }
    n = start_node(tmp_path_factory.mktemp("node"), env=env, config=CONFIG)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def claims_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """An HMAC node that checks ``aud`` and ``iss``."""
    env = DEBUG | {"TIDINGS_AUTH_AUDIENCE": AUDIENCE, "TIDINGS_AUTH_ISSUER": ISSUER}
    n = start_node(tmp_path_factory.mktemp("claims"), env=env)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def rsa_node(tmp_path_factory: pytest.TempPathFactory, rsa_keys: tuple[str, str]) -> Iterator[Node]:
    """A node that verifies with an RSA public key only (no HMAC secret at all)."""
    path = tmp_path_factory.mktemp("rsa")
    key_file = path / "public.pem"
    key_file.write_text(rsa_keys[1])
    n = start_node(path, env=DEBUG | {"TIDINGS_AUTH_PUBLIC_KEY": str(key_file)}, secret=None)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def mixed_node(
    tmp_path_factory: pytest.TempPathFactory, rsa_keys: tuple[str, str]
) -> Iterator[Node]:
    """A node with both an HMAC secret and an RSA public key (PEM text in the setting)."""
    env = DEBUG | {"TIDINGS_AUTH_PUBLIC_KEY": rsa_keys[1]}
    n = start_node(tmp_path_factory.mktemp("mixed"), env=env)
    yield n
    n.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
