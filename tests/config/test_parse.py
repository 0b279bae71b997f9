"""tidings.config.parse: the sources and their precedence, parsing values, and exact error keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.config.loading import BASE_ENV, PEM, error, load
from tidings.config import ChannelOptions, NamespaceSettings, Settings, load_settings
from tidings.errors import ConfigError


# ---------------------------------------------------------------------------- sources
class TestSources:
    def test_defaults(self) -> None:
        s = load_settings(None, BASE_ENV)
        assert s.server.port == 8888
        assert s.client.ping_interval == 25.0
        assert s.amqp.url is None
        assert s.namespaces == [] and s.routes == []
        assert s.effective_workers == 1

    def test_no_environment_at_all(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert info.value.key == "auth.hmac_secret"

    def test_file_then_env_then_overrides(self, tmp_path: Path) -> None:
        toml = "[server]\nport = 9000\nhost = '0.0.0.0'\n"
        assert load(tmp_path, toml).server.port == 9000
        env = {"TIDINGS_SERVER_PORT": "9100"}
        s = load(tmp_path, toml, env=env)
        assert (s.server.port, s.server.host) == (9100, "0.0.0.0")
        s = load(tmp_path, toml, env=env, overrides={"server.port": 9200})
        assert (s.server.port, s.server.host) == (9200, "0.0.0.0")

    def test_none_overrides_are_ignored(self, tmp_path: Path) -> None:
        s = load(tmp_path, "[server]\nport = 9000\n", overrides={"server.port": None})
        assert s.server.port == 9000

    def test_text_overrides_are_parsed(self, tmp_path: Path) -> None:
        s = load(tmp_path, overrides={"server.port": "9300", "server.demo": "yes"})
        assert (s.server.port, s.server.demo) == (9300, True)

    def test_config_file_from_the_environment(self, tmp_path: Path) -> None:
        path = tmp_path / "other.toml"
        path.write_text("[server]\nport = 9400\n")
        s = load_settings(None, {**BASE_ENV, "TIDINGS_CONFIG": str(path)})
        assert s.server.port == 9400

    def test_explicit_path_beats_tidings_config(self, tmp_path: Path) -> None:
        other = tmp_path / "other.toml"
        other.write_text("[server]\nport = 1\n")
        s = load(tmp_path, "[server]\nport = 2\n", env={"TIDINGS_CONFIG": str(other)})
        assert s.server.port == 2

    def test_env_types(self) -> None:
        env = {
            **BASE_ENV,
            "TIDINGS_SERVER_DEMO": "on",
            "TIDINGS_SERVER_ALLOWED_ORIGINS": "http://a.example, https://b.example:8443,",
            "TIDINGS_CLIENT_PING_INTERVAL": "1m",
            "TIDINGS_CLIENT_MAX_QUEUE_BYTES": "2MiB",
            "TIDINGS_CHANNELS_HISTORY_SIZE": "7",
            "TIDINGS_AUTH_LEEWAY": "1.5",
            "TIDINGS_AMQP_URL": "amqp://u:p@h/",
            "TIDINGS_API_KEY": "k" * 16,
        }
        s = load_settings(None, env)
        assert s.server.demo is True
        assert s.server.allowed_origins == ["http://a.example", "https://b.example:8443"]
        assert s.client.ping_interval == 60.0
        assert s.client.max_queue_bytes == 2 * 2**20
        assert s.channels.history_size == 7
        assert s.auth.leeway == 1.5
        assert s.amqp.url == "amqp://u:p@h/"
        assert s.api.key == "k" * 16

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("1", True),
            ("true", True),
            ("YES", True),
            (" on ", True),
            ("0", False),
            ("off", False),
            ("No", False),
        ],
    )
    def test_env_booleans(self, text: str, value: bool) -> None:
        assert load_settings(None, {**BASE_ENV, "TIDINGS_SERVER_DEMO": text}).server.demo is value

    def test_empty_env_clears_an_optional_value(self, tmp_path: Path) -> None:
        s = load(tmp_path, "[amqp]\nurl = 'amqp://h/'\n", env={"TIDINGS_AMQP_URL": ""})
        assert s.amqp.url is None

    @pytest.mark.parametrize("var", ["TIDINGS_FOO_BAR", "TIDINGS_SERVER_NOPE", "TIDINGS_PORT"])
    def test_unknown_env(self, var: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(None, {**BASE_ENV, var: "1"})
        assert info.value.key == var

    def test_other_env_is_ignored(self) -> None:
        assert load_settings(None, {**BASE_ENV, "PATH": "/bin", "TIDINGSX": "1"}).server.port

    def test_namespaces_inherit_the_channel_defaults(self, tmp_path: Path) -> None:
        toml = """
[channels]
history_size = 5
allow_anonymous = true
[[namespaces]]
name = "a"
[[namespaces]]
name = "b"
history_size = 9
history_ttl = "1h"
"""
        s = load(tmp_path, toml, env={"TIDINGS_CHANNELS_HISTORY_TTL": "2m"})
        assert s.namespaces == [
            NamespaceSettings(history_size=5, history_ttl=120.0, allow_anonymous=True, name="a"),
            NamespaceSettings(history_size=9, history_ttl=3600.0, allow_anonymous=True, name="b"),
        ]
        assert s.namespace("b") is s.namespaces[1]
        assert s.namespace("") is s.channels
        assert s.namespace("c") is None

    def test_routes_are_kept(self, tmp_path: Path) -> None:
        toml = "[[routes]]\nmatch = 'invoice.*'\nchannels = ['account:{headers.account_id}']\n"
        assert load(tmp_path, toml).routes == [
            {"match": "invoice.*", "channels": ["account:{headers.account_id}"]}
        ]

    def test_workers(self, tmp_path: Path) -> None:
        s = load(tmp_path, "[server]\nworkers = 4\n[amqp]\nurl = 'amqp://h/'\n")
        assert s.effective_workers == 4
        assert load(tmp_path, "[amqp]\nurl = 'amqp://h/'\n").effective_workers >= 1

    def test_demo_runs_without_a_secret(self) -> None:
        assert load_settings(None, {"TIDINGS_SERVER_DEMO": "1"}).auth.hmac_secret is None

    def test_a_public_key_alone_is_enough(self) -> None:
        s = load_settings(None, {"TIDINGS_AUTH_PUBLIC_KEY": PEM})
        assert s.auth.public_key == PEM

    def test_public_key_file(self, tmp_path: Path) -> None:
        key = tmp_path / "key.pem"
        key.write_text(PEM)
        assert load_settings(None, {"TIDINGS_AUTH_PUBLIC_KEY": str(key)}).auth.public_key


# ---------------------------------------------------------------------------- values
class TestDurationsAndSizes:
    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [
            ("30", 30.0),
            ("30s", 30.0),
            (" 10 s ", 10.0),
            ("250ms", 0.25),
            ("5m", 300.0),
            ("1.5h", 5400.0),
            ("2d", 172800.0),
            (45, 45.0),
            (0.5, 0.5),
            ("0", 0.0),
        ],
    )
    def test_durations(self, tmp_path: Path, raw: Any, seconds: float) -> None:
        value = f"'{raw}'" if isinstance(raw, str) else raw
        s = load(tmp_path, f"[channels]\nhistory_ttl = {value}\n")
        assert s.channels.history_ttl == seconds

    @pytest.mark.parametrize(
        "raw", ["'-1s'", "'10x'", "'s'", "''", "'1 h m'", "true", "[1]", "-5", "'5M'"]
    )
    def test_bad_durations(self, tmp_path: Path, raw: str) -> None:
        assert error(tmp_path, f"[channels]\nhistory_ttl = {raw}\n").key == "channels.history_ttl"

    def test_duration_minimum(self, tmp_path: Path) -> None:
        err = error(tmp_path, "[client]\nping_interval = '500ms'\n")
        assert err.key == "client.ping_interval" and "at least" in err.reason

    @pytest.mark.parametrize(
        ("raw", "size"),
        [
            ("65536", 65536),
            ("64KiB", 65536),
            ("64kib", 65536),
            ("10kb", 10_000),
            ("1MiB", 2**20),
            ("2MB", 2_000_000),
            ("1GiB", 2**30),
            ("3 GB", 3 * 10**9),
            ("512b", 512),
            (4096, 4096),
        ],
    )
    def test_sizes(self, tmp_path: Path, raw: Any, size: int) -> None:
        value = f"'{raw}'" if isinstance(raw, str) else raw
        assert (
            load(tmp_path, f"[client]\nmax_frame_bytes = {value}\n").client.max_frame_bytes == size
        )

    @pytest.mark.parametrize("raw", ["'1.5MiB'", "'64TB'", "'-1'", "true", "1.5", "'KiB'", "100"])
    def test_bad_sizes(self, tmp_path: Path, raw: str) -> None:
        # 100 is under the 256-byte minimum of max_frame_bytes.
        assert (
            error(tmp_path, f"[client]\nmax_frame_bytes = {raw}\n").key == "client.max_frame_bytes"
        )


# ---------------------------------------------------------------------------- errors
class TestErrors:
    @pytest.mark.parametrize(
        ("toml", "key"),
        [
            ("[server]\nport = 70000\n", "server.port"),
            ("[server]\nport = -1\n", "server.port"),
            ("[server]\nport = '80'\n", "server.port"),
            ("[server]\nport = 80.0\n", "server.port"),
            ("[server]\nport = true\n", "server.port"),
            ("[server]\nhost = 1\n", "server.host"),
            ("[server]\ndemo = 'yes'\n", "server.demo"),
            ("[server]\nallowed_origins = 'http://a'\n", "server.allowed_origins"),
            ("[server]\nallowed_origins = [1]\n", "server.allowed_origins"),
            (
                "[server]\nallowed_origins = ['*', 'http://a.example/path']\n",
                "server.allowed_origins[1]",
            ),
            ("[server]\nallowed_origins = ['a.example']\n", "server.allowed_origins[0]"),
            ("[server]\nlog_level = 'loud'\n", "server.log_level"),
            ("[server]\nlog_format = 'xml'\n", "server.log_format"),
            ("[server]\nworkers = 2\n", "server.workers"),
            ("[server]\nworkers = 257\n", "server.workers"),
            ("[server]\nfoo = 1\n", "server.foo"),
            ("server = 5\n", "server"),
            ("[nope]\nx = 1\n", "nope"),
            ("[auth]\npublic_key = '/no/such/file.pem'\n", "auth.public_key"),
            ("[api]\nkey = 'short'\n", "api.key"),
            ("[client]\nmax_subscriptions = 0\n", "client.max_subscriptions"),
            ("[client]\nmax_commands_per_frame = 'x'\n", "client.max_commands_per_frame"),
            ("[channels]\nhistory_size = 1000001\n", "channels.history_size"),
            ("[channels]\nallow_subscribe = 1\n", "channels.allow_subscribe"),
            ("[amqp]\nurl = 'http://h/'\n", "amqp.url"),
            ("[amqp]\nurl = 'amqp://h/'\nexchange_type = 'x'\n", "amqp.exchange_type"),
            ("[amqp]\nurl = 'amqp://h/'\nexchange = ''\n", "amqp.exchange"),
            ("[amqp]\nurl = 'amqp://h/'\nbindings = []\n", "amqp.bindings"),
            ("[amqp]\nprefetch = 0\n", "amqp.prefetch"),
            ("[amqp]\nurl = 'amqp://h/'\nreader = 'fast'\n", "amqp.reader"),
            ("[amqp]\nstream_port = 0\n", "amqp.stream_port"),
            ("namespaces = 5\n", "namespaces"),
            ("[[namespaces]]\nhistory_size = 1\n", "namespaces[0].name"),
            (
                "[[namespaces]]\nname = 'ok'\n[[namespaces]]\nname = 'bad name'\n",
                "namespaces[1].name",
            ),
            ("[[namespaces]]\nname = 'a'\n[[namespaces]]\nname = 'a'\n", "namespaces[1].name"),
            ("[[namespaces]]\nname = ''\n", "namespaces[0].name"),
            ('[[namespaces]]\nname = "a\\n"\n', "namespaces[0].name"),
            ('[[namespaces]]\nname = "a\\u0000"\n', "namespaces[0].name"),
            (f"[[namespaces]]\nname = '{'n' * 256}'\n", "namespaces[0].name"),
            ("[[namespaces]]\nname = 'a'\nhistory_size = 'x'\n", "namespaces[0].history_size"),
            ("[[namespaces]]\nname = 'a'\nbogus = 1\n", "namespaces[0].bogus"),
            ("routes = 5\n", "routes"),
            ("routes = [1]\n", "routes"),
            ("[[routes]]\nchannels = ['x']\n", "routes[0].match"),
            (
                "[[routes]]\nmatch = 'a'\nchannels = ['x']\n"
                "[[routes]]\nmatch = ''\nchannels = ['x']\n",
                "routes[1].match",
            ),
            ("[[routes]]\nmatch = 'a'\n", "routes[0].channels"),
            ("[[routes]]\nmatch = 'a'\nchannels = ['x']\nbogus = 1\n", "routes[0].bogus"),
        ],
    )
    def test_error_names_the_exact_key(self, tmp_path: Path, toml: str, key: str) -> None:
        assert error(tmp_path, toml).key == key

    def test_env_value_error_names_the_key(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(None, {**BASE_ENV, "TIDINGS_SERVER_PORT": "eighty"})
        assert info.value.key == "server.port"
        with pytest.raises(ConfigError) as info:
            load_settings(None, {**BASE_ENV, "TIDINGS_SERVER_DEMO": "maybe"})
        assert info.value.key == "server.demo"

    @pytest.mark.parametrize("key", ["foo.bar", "server.nope", "server", "routes.x"])
    def test_unknown_override(self, tmp_path: Path, key: str) -> None:
        assert error(tmp_path, overrides={key: 1}).key == key

    def test_short_secret(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(None, {"TIDINGS_AUTH_HMAC_SECRET": "short"})
        assert info.value.key == "auth.hmac_secret"

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(tmp_path / "missing.toml", BASE_ENV)
        assert info.value.key == "config"

    def test_invalid_toml(self, tmp_path: Path) -> None:
        assert error(tmp_path, "[server\nport = 1").key == "config"

    def test_no_secret_is_refused_unless_demo(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(None, {})
        assert info.value.key == "auth.hmac_secret"
        assert "demo" in info.value.reason


def test_channel_options_defaults() -> None:
    assert ChannelOptions() == Settings().channels
