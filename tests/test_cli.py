"""The ``tidings`` command, run as the installed console script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.integration.live import (
    API_KEY,
    ROOT,
    SECRET,
    TIDINGS,
    ServeProcess,
    WsClient,
    scaled,
    subprocess_env,
    token,
)
from tidings import cli


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs ``tidings ARGS`` with only the given ``TIDINGS_*`` variables set."""
    return subprocess.run(
        [str(TIDINGS), *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=scaled(20),
        cwd=ROOT,
    )


# ---------------------------------------------------------------------- token


def test_token_claims() -> None:
    before = int(time.time())
    done = run(
        "token",
        "--sub",
        "alice",
        "--channels",
        "news,personal#alice",
        "--ttl",
        "60",
        "--info",
        '{"name": "Alice"}',
        TIDINGS_AUTH_HMAC_SECRET=SECRET,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    raw = done.stdout.strip()
    assert "\n" not in raw
    assert jwt.get_unverified_header(raw)["alg"] == "HS256"
    claims = jwt.decode(raw, SECRET, algorithms=["HS256"])
    assert claims.pop("iat") - before in (0, 1)
    assert claims.pop("exp") - before in (60, 61)
    assert claims == {
        "sub": "alice",
        "channels": ["news", "personal#alice"],
        "info": {"name": "Alice"},
    }
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(raw, SECRET + "x", algorithms=["HS256"])


def test_subscription_token_and_no_expiry() -> None:
    done = run(
        "token", "--sub", "bob", "--channel", "$private", "--ttl", "0",
        "--hmac-secret", SECRET,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert set(claims) == {"sub", "iat", "channel"}
    assert (claims["sub"], claims["channel"]) == ("bob", "$private")


def test_token_without_a_secret_is_refused() -> None:
    done = run("token", "--sub", "alice")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("tidings: invalid setting auth.hmac_secret: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sub", "al\x01ice"], "tidings token: user id holds a control character"),
        (["--sub", "a", "--channels", "news,a b"], "tidings token: channel name holds whitespace"),
        (["--sub", "a", "--channel", "$" * 256], "tidings token: channel name is 256 bytes long"),
    ],
)
def test_token_refuses_names_no_node_accepts(args: list[str], message: str) -> None:
    done = run("token", *args, TIDINGS_AUTH_HMAC_SECRET=SECRET)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message), done.stderr


def test_publish_refuses_a_bad_channel_before_sending() -> None:
    done = run(
        "publish", "--channel", "news,a\x1fb", "--data", "1",
        TIDINGS_API_KEY=API_KEY, TIDINGS_AUTH_HMAC_SECRET=SECRET,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("tidings publish: channel name holds a control character")


# ---------------------------------------------------------------------- check-config


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(
        '[server]\nport = 9100\n\n[[namespaces]]\nname = "small"\nhistory_size = 10\n',
        encoding="utf-8",
    )
    done = run(
        "check-config",
        "--config",
        str(config),
        "--allowed-origin",
        "https://app.example",
        TIDINGS_AUTH_HMAC_SECRET=SECRET,
        TIDINGS_API_KEY=API_KEY,
        TIDINGS_AMQP_URL="amqp://tidings:hunter2hunter2@rabbit:5672/",
        TIDINGS_CLIENT_PING_INTERVAL="10s",
    )
    assert done.returncode == 0, done.stderr
    for secret in (SECRET, API_KEY, "hunter2"):
        assert secret not in done.stdout
    settings = json.loads(done.stdout)
    assert settings["auth"]["hmac_secret"] == "***"
    assert settings["api"]["key"] == "***"
    assert settings["amqp"]["url"] == "amqp://tidings:***@rabbit:5672/"
    assert settings["server"]["port"] == 9100  # from the file
    assert settings["server"]["allowed_origins"] == ["https://app.example"]  # from a flag
    assert settings["client"]["ping_interval"] == 10.0  # from the environment
    assert [(ns["name"], ns["history_size"]) for ns in settings["namespaces"]] == [("small", 10)]


def test_check_config_bad_value_exits_2_naming_the_key() -> None:
    done = run("check-config", TIDINGS_AUTH_HMAC_SECRET=SECRET, TIDINGS_SERVER_PORT="abc")
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        done.stderr == "tidings: invalid setting server.port: expected a whole number, got 'abc'\n"
    )


@pytest.mark.parametrize(
    ("env", "args", "key"),
    [
        ({"TIDINGS_SERVER_PORT": "70000"}, (), "server.port"),
        ({"TIDINGS_CLIENT_PING_INTERVAL": "0.5"}, (), "client.ping_interval"),
        ({"TIDINGS_CLIENT_MAX_QUEUE_BYTES": "lots"}, (), "client.max_queue_bytes"),
        ({"TIDINGS_SERVER_DEMO": "maybe"}, (), "server.demo"),
        ({"TIDINGS_NO_SUCH_THING": "1"}, (), "TIDINGS_NO_SUCH_THING"),
        ({"TIDINGS_API_KEY": "short"}, (), "api.key"),
        ({"TIDINGS_AUTH_HMAC_SECRET": "too-short"}, (), "auth.hmac_secret"),
        ({}, ("--allowed-origin", "app.example"), "server.allowed_origins[0]"),
        ({}, ("--workers", "2"), "server.workers"),
        ({}, ("--config", "/nonexistent/tidings.toml"), "config"),
    ],
)
def test_check_config_refusals(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    args: tuple[str, ...],
    key: str,
) -> None:
    """Every refusal names the exact key (in-process: the same ``main`` the script runs)."""
    monkeypatch.setattr("os.environ", {"TIDINGS_AUTH_HMAC_SECRET": SECRET, **env})
    assert cli.main(["check-config", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"tidings: invalid setting {key}: "), err
    assert err.count("\n") == 1


# ---------------------------------------------------------------------- serve


def test_serve_refuses_to_start_without_a_secret() -> None:
    done = run("serve", "--port", "0", "--api-key", API_KEY)
    assert done.returncode == 2
    assert done.stderr.startswith("tidings: invalid setting auth.hmac_secret: "), done.stderr
    assert "--demo" in done.stderr  # the message says how to get going


@pytest.mark.integration
async def test_publish_through_a_running_node_and_stop_with_sigterm(tmp_path: Path) -> None:
    node = ServeProcess(tmp_path / "serve.log")
    await asyncio.to_thread(node.start)
    with node:
        async with aiohttp.ClientSession() as http:
            client = WsClient(await http.ws_connect(node.ws_url))
            await client.send(
                {"id": 1, "connect": {"token": token("alice")}},
                {"id": 2, "subscribe": {"channel": "news"}},
                {"id": 3, "subscribe": {"channel": "sport"}},
            )
            assert [r["id"] for r in await client.frame()] == [1, 2, 3]

            done = await _run_async(
                "publish", "--channel", "news,sport", "--data", '{"goal": 1}', "--url", node.url,
                TIDINGS_API_KEY=API_KEY, TIDINGS_AUTH_HMAC_SECRET=SECRET,
            )  # fmt: skip
            assert (done.returncode, done.stderr) == (0, ""), node.log()
            ok = {"result": {}}
            assert json.loads(done.stdout) == {"result": {"responses": [ok, ok]}}
            pub = {"data": {"goal": 1}, "offset": 1}
            assert await client.frame() == [
                {"push": {"channel": "news", "pub": pub}},
                {"push": {"channel": "sport", "pub": pub}},
            ]

            wrong = await _run_async(
                "publish", "--channel", "news", "--data", "1", "--url", node.url,
                TIDINGS_API_KEY="wrong-key-0123456789", TIDINGS_AUTH_HMAC_SECRET=SECRET,
            )  # fmt: skip
            assert wrong.returncode == 1
            assert wrong.stderr.startswith("tidings publish: 401 ")
            bad_json = await _run_async(
                "publish", "--channel", "news", "--data", "{nope", "--url", node.url,
                TIDINGS_API_KEY=API_KEY, TIDINGS_AUTH_HMAC_SECRET=SECRET,
            )  # fmt: skip
            assert bad_json.returncode == 2
            assert "--data is not JSON" in bad_json.stderr
            unknown = await _run_async(
                "publish", "--channel", "nope:x", "--data", "1", "--url", node.url,
                TIDINGS_API_KEY=API_KEY, TIDINGS_AUTH_HMAC_SECRET=SECRET,
            )  # fmt: skip
            assert unknown.returncode == 1
            assert '"code":102' in unknown.stderr
            await client.silent()

            stopping = asyncio.create_task(asyncio.to_thread(node.stop))
            assert await client.close_code(timeout=5) == 3001
            assert await stopping == 0, node.log()
    unreachable = await _run_async(
        "publish", "--channel", "news", "--data", "1", "--url", node.url,
        TIDINGS_API_KEY=API_KEY, TIDINGS_AUTH_HMAC_SECRET=SECRET,
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr


async def _run_async(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, **env)


def test_check_config_shows_insecure_mode_and_warns() -> None:
    done = run("check-config", "--insecure")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["client"]["insecure"] is True
    assert "INSECURE MODE" in done.stderr


def test_insecure_mode_is_refused_on_a_public_host() -> None:
    done = run("check-config", "--insecure", "--host", "0.0.0.0")
    assert done.returncode == 2
    assert done.stderr.startswith("tidings: invalid setting client.insecure: refused on")


# ---------------------------------------------------------------------- webpush-keys


def test_webpush_keys_print_a_usable_setting(tmp_path: Path) -> None:
    from tidings.config import load_settings
    from tidings.webpush.vapid import VapidSigner, load_key

    done = run("webpush-keys")
    assert done.returncode == 0, done.stderr
    config = tmp_path / "push.toml"
    config.write_text(done.stdout.replace("you@example.com", "ops@example.com"))
    settings = load_settings(config, overrides={"auth.hmac_secret": SECRET})
    assert settings.web_push.vapid_private_key is not None
    public = done.stdout.rsplit(": ", 1)[1].strip()
    assert (
        VapidSigner(load_key(settings.web_push.vapid_private_key), "mailto:a@b.c").public_key
        == public
    )
    assert run("webpush-keys").stdout != done.stdout
