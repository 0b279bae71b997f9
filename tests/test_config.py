"""The settings loader: sources and their precedence, parsing, and exact error keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes import SECRET
from tidings.config import (
    ChannelOptions,
    NamespaceSettings,
    Settings,
    load_settings,
    masked,
)
from tidings.errors import ConfigError

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
BASE_ENV = {"TIDINGS_AUTH_HMAC_SECRET": SECRET}


def load(
    tmp_path: Path,
    toml: str = "",
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    path = tmp_path / "tidings.toml"
    path.write_text(toml)
    return load_settings(path, {**BASE_ENV, **(env or {})}, overrides)


def error(tmp_path: Path, toml: str = "", **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, **kwargs)
    assert str(info.value).startswith(f"{info.value.key}: ")
    return info.value


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


# ---------------------------------------------------------------------------- insecure
class TestInsecure:
    def test_off_by_default(self) -> None:
        assert load_settings(None, BASE_ENV).client.insecure is False

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
    def test_runs_on_loopback_without_a_secret(self, host: str) -> None:
        env = {"TIDINGS_CLIENT_INSECURE": "true", "TIDINGS_SERVER_HOST": host}
        s = load_settings(None, env)
        assert s.client.insecure and s.auth.hmac_secret is None

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "tidings.example.com"])
    def test_refused_on_a_public_host(self, host: str) -> None:
        env = {**BASE_ENV, "TIDINGS_CLIENT_INSECURE": "1", "TIDINGS_SERVER_HOST": host}
        with pytest.raises(ConfigError) as info:
            load_settings(None, env)
        assert info.value.key == "client.insecure"
        assert "client.insecure_on_public_host" in info.value.reason

    def test_a_public_host_when_forced(self) -> None:
        env = {
            "TIDINGS_CLIENT_INSECURE": "1",
            "TIDINGS_CLIENT_INSECURE_ON_PUBLIC_HOST": "1",
            "TIDINGS_SERVER_HOST": "0.0.0.0",
        }
        assert load_settings(None, env).client.insecure

    def test_forcing_alone_changes_nothing(self) -> None:
        env = {**BASE_ENV, "TIDINGS_CLIENT_INSECURE_ON_PUBLIC_HOST": "1"}
        assert load_settings(None, env).client.insecure is False


# ---------------------------------------------------------------------------- masked
class TestBrokerAddresses:
    def test_urls_alone_make_the_first_one_amqp_url(self, tmp_path: Path) -> None:
        s = load(tmp_path, "[amqp]\nurls = ['amqp://a/', 'amqp://b/']\n")
        assert s.amqp.url == "amqp://a/"
        assert s.amqp.addresses == ["amqp://a/", "amqp://b/"]
        assert s.effective_workers >= 1  # RabbitMQ is configured: several workers may run

    def test_url_is_tried_first_and_not_twice(self, tmp_path: Path) -> None:
        toml = "[amqp]\nurl = 'amqp://b/'\nurls = ['amqp://a/', 'amqp://b/', 'amqp://c/']\n"
        assert load(tmp_path, toml).amqp.addresses == ["amqp://b/", "amqp://a/", "amqp://c/"]

    def test_from_the_environment_comma_separated(self) -> None:
        env = {**BASE_ENV, "TIDINGS_AMQP_URLS": "amqp://a:5673/, amqp://a:5674/"}
        assert load_settings(None, env).amqp.addresses == ["amqp://a:5673/", "amqp://a:5674/"]

    def test_one_url_is_one_address(self, tmp_path: Path) -> None:
        assert load(tmp_path, "[amqp]\nurl = 'amqp://a/'\n").amqp.addresses == ["amqp://a/"]
        assert load(tmp_path).amqp.addresses == []

    def test_stream_settings(self, tmp_path: Path) -> None:
        toml = """
[amqp]
url = "amqp://a/"
stream_urls = ["rabbitmq-stream://a:5553/", "rabbitmq-stream+tls://b:5551/%2Fv"]
stream_replicas = 3
"""
        amqp = load(tmp_path, toml).amqp
        assert amqp.stream_urls == ["rabbitmq-stream://a:5553/", "rabbitmq-stream+tls://b:5551/%2Fv"]
        assert amqp.stream_replicas == 3
        assert load(tmp_path).amqp.stream_replicas == 0  # RabbitMQ's choice

    @pytest.mark.parametrize(
        ("toml", "key"),
        [
            ("[amqp]\nurls = ['amqp://a/', 'http://b/']\n", "amqp.urls[1]"),
            ("[amqp]\nurls = 'amqp://a/'\n", "amqp.urls"),
            ("[amqp]\nurl = 'amqp://a/'\nstream_urls = ['amqp://a/']\n", "amqp.stream_urls[0]"),
            ("[amqp]\nurl = 'amqp://a'\nstream_urls = ['rabbitmq-stream:']", "amqp.stream_urls[0]"),
            ("[amqp]\nstream_urls = ['rabbitmq-stream://a/']\n", "amqp.stream_urls"),
            ("[amqp]\nstream_replicas = -1\n", "amqp.stream_replicas"),
            ("[amqp]\nstream_replicas = 256\n", "amqp.stream_replicas"),
        ],
    )
    def test_errors_name_the_key(self, tmp_path: Path, toml: str, key: str) -> None:
        assert error(tmp_path, toml).key == key


class TestMasked:
    def test_secrets_are_hidden(self, tmp_path: Path) -> None:
        toml = f"""
[auth]
hmac_secret = "{SECRET}"
[api]
key = "api-key-0123456789"
[amqp]
url = "amqps://tidings:s3cr%40t@rabbit.example:5671/vhost"
"""
        m = masked(load(tmp_path, toml))
        assert m["auth"]["hmac_secret"] == "***"
        assert m["api"]["key"] == "***"
        assert m["amqp"]["url"] == "amqps://tidings:***@rabbit.example:5671/vhost"
        text = repr(m)
        assert SECRET not in text and "api-key" not in text and "s3cr" not in text

    def test_every_broker_address_is_masked(self, tmp_path: Path) -> None:
        toml = """
[amqp]
urls = ["amqp://u:pw1@a/", "amqp://u:pw2@b/"]
stream_urls = ["rabbitmq-stream://u:pw3@a:5553/"]
"""
        m = masked(load(tmp_path, toml))
        assert m["amqp"]["urls"] == ["amqp://u:***@a/", "amqp://u:***@b/"]
        assert m["amqp"]["stream_urls"] == ["rabbitmq-stream://u:***@a:5553/"]
        assert "pw" not in repr(m)

    def test_a_password_holding_at_signs_is_hidden_whole(self, tmp_path: Path) -> None:
        m = masked(load(tmp_path, "[amqp]\nurl = 'amqp://u:p@ss@w@host/'\n"))
        assert m["amqp"]["url"] == "amqp://u:***@host/"

    def test_unset_secrets_stay_none(self) -> None:
        m = masked(load_settings(None, {"TIDINGS_SERVER_DEMO": "1"}))
        assert m["auth"]["hmac_secret"] is None and m["api"]["key"] is None
        assert m["amqp"]["url"] is None

    def test_url_without_a_password(self, tmp_path: Path) -> None:
        m = masked(load(tmp_path, "[amqp]\nurl = 'amqp://guest@host:5672/'\n"))
        assert m["amqp"]["url"] == "amqp://guest@host:5672/"

    def test_shape(self, tmp_path: Path) -> None:
        toml = "[[namespaces]]\nname = 'a'\n[[routes]]\nmatch = '#'\nchannels = ['x']\n"
        m = masked(load(tmp_path, toml))
        assert set(m) == {
            "server",
            "auth",
            "api",
            "client",
            "channels",
            "amqp",
            "proxy",
            "cluster",
            "ledger",
            "recovery",
            "web_push",
            "namespaces",
            "routes",
        }
        assert m["namespaces"][0]["name"] == "a"
        assert m["routes"] == [{"match": "#", "channels": ["x"]}]
        assert m["channels"] == {
            "history_size": 100,
            "history_ttl": 300.0,
            "recovery_max_publications": 10_000,
            "allow_subscribe": True,
            "require_subscription_token": False,
            "allow_anonymous": False,
            "allow_history_for_subscriber": False,
            "allow_history_for_client": False,
            "proxy_subscribe": False,
            "presence": False,
            "join_leave": False,
            "force_push_join_leave": False,
            "allow_presence_for_subscriber": False,
            "allow_presence_for_client": False,
            "allow_presence_for_anonymous": False,
            "allow_publish_for_subscriber": False,
            "allow_publish_for_client": False,
            "allow_publish_for_anonymous": False,
            "proxy_publish": False,
            "lifecycle_events": False,
            "web_push": False,
        }
        assert m["cluster"] == {
            "control_exchange": "",
            "heartbeat_interval": 5.0,
            "presence_ttl": 15.0,
        }


def test_channel_options_defaults() -> None:
    assert ChannelOptions() == Settings().channels


class TestProxy:
    URL = "http://127.0.0.1:3000/connect"

    def test_sections_and_namespaces(self, tmp_path: Path) -> None:
        s = load(
            tmp_path,
            f"[proxy]\nconnect_endpoint = '{self.URL}'\nsubscribe_endpoint = '{self.URL}'\n"
            "connect_timeout = '250ms'\nhttp_headers = ['Cookie']\n"
            "[[namespaces]]\nname = 'room'\nproxy_subscribe = true\n",
            env={"TIDINGS_PROXY_RPC_METHODS": "a,b"},
            overrides={"proxy.rpc_endpoint": self.URL},
        )
        assert s.proxy.connect_timeout == 0.25 and s.proxy.rpc_methods == ["a", "b"]
        assert s.namespaces[0].proxy_subscribe and not s.channels.proxy_subscribe

    def test_endpoint_credentials_are_masked(self) -> None:
        s = load_settings(
            None,
            {"TIDINGS_PROXY_CONNECT_ENDPOINT": "http://app:pw@127.0.0.1:3000/connect"},
        )
        assert masked(s)["proxy"]["connect_endpoint"] == "http://app:***@127.0.0.1:3000/connect"

    def test_a_connect_proxy_needs_no_token_key(self) -> None:
        s = load_settings(None, {"TIDINGS_PROXY_CONNECT_ENDPOINT": self.URL})
        assert s.auth.hmac_secret is None

    @pytest.mark.parametrize(
        ("toml", "key"),
        [
            ("[proxy]\nconnect_endpoint = 'ftp://x/'", "proxy.connect_endpoint"),
            ("[proxy]\nrpc_endpoint = 'http:///nohost'", "proxy.rpc_endpoint"),
            (f"[proxy]\nrefresh_endpoint = '{URL}'", "proxy.refresh_endpoint"),
            ("[proxy]\nrpc_methods = ['a']", "proxy.rpc_methods"),
            (
                f"[proxy]\nrpc_endpoint = '{URL}'\nrpc_methods = ['a', \"b\\u0000\"]",
                "proxy.rpc_methods[1]",
            ),
            (
                f"[proxy]\nrpc_endpoint = '{URL}'\nhttp_headers = ['Bad Header']",
                "proxy.http_headers[0]",
            ),
            (
                f"[proxy]\nrpc_endpoint = '{URL}'\nhttp_headers = ['Cookie', 'Content-Length']",
                "proxy.http_headers[1]",
            ),
            (
                f"[proxy]\nconnect_endpoint = '{URL}'\nconnect_timeout = '20s'",
                "proxy.connect_timeout",
            ),
            ("[proxy]\nrpc_timeout = 0", "proxy.rpc_timeout"),
            ("[proxy]\nendpoint = 'x'", "proxy.endpoint"),
            ("[[namespaces]]\nname = 'a'\nproxy_subscribe = true", "namespaces[0].proxy_subscribe"),
            ("[channels]\nproxy_subscribe = true", "channels.proxy_subscribe"),
            ("[[namespaces]]\nname = 'a'\nproxy_publish = true", "namespaces[0].proxy_publish"),
            ("[proxy]\npublish_endpoint = 'tcp://x'", "proxy.publish_endpoint"),
        ],
    )
    def test_refused(self, tmp_path: Path, toml: str, key: str) -> None:
        assert error(tmp_path, toml).key == key


class TestPresenceAndPublishOptions:
    def test_namespace_options_and_cluster_from_file_and_env(self, tmp_path: Path) -> None:
        toml = (
            "[[namespaces]]\nname = 'room'\npresence = true\njoin_leave = true\n"
            "force_push_join_leave = true\nallow_presence_for_subscriber = true\n"
            "allow_publish_for_client = true\nallow_publish_for_anonymous = true\n"
            "[cluster]\nheartbeat_interval = '2s'\n"
        )
        s = load(tmp_path, toml, env={"TIDINGS_CLUSTER_PRESENCE_TTL": "8s"})
        room = s.namespace("room")
        assert room is not None
        assert (room.presence, room.join_leave, room.force_push_join_leave) == (True,) * 3
        assert room.allow_presence_for_subscriber and not room.allow_presence_for_client
        assert room.allow_publish_for_client and room.allow_publish_for_anonymous
        assert (s.cluster.heartbeat_interval, s.cluster.presence_ttl) == (2.0, 8.0)

    @pytest.mark.parametrize(
        ("toml", "key"),
        [
            ("[channels]\nforce_push_join_leave = true\n", "channels.force_push_join_leave"),
            (
                "[[namespaces]]\nname = 'a'\nallow_presence_for_client = true\n",
                "namespaces[0].allow_presence_for_client",
            ),
            (
                "[channels]\npresence = true\nallow_presence_for_anonymous = true\n",
                "channels.allow_presence_for_anonymous",
            ),
            (
                "[channels]\nallow_publish_for_anonymous = true\n",
                "channels.allow_publish_for_anonymous",
            ),
            ("[cluster]\nheartbeat_interval = '10s'\n", "cluster.presence_ttl"),
            ("[cluster]\nheartbeat_interval = '0.1s'\n", "cluster.heartbeat_interval"),
            ("[cluster]\nquorum = 3\n", "cluster.quorum"),
        ],
    )
    def test_refused(self, tmp_path: Path, toml: str, key: str) -> None:
        assert error(tmp_path, toml).key == key


class TestEvents:
    AMQP = "[amqp]\nurl = 'amqp://guest:guest@127.0.0.1:5672/'\n"

    def test_off_by_default(self, tmp_path: Path) -> None:
        s = load(tmp_path)
        assert s.amqp.events_exchange is None
        assert (s.amqp.events_prefix, s.amqp.events_buffer) == ("tidings", 10_000)
        assert not s.channels.lifecycle_events

    def test_from_file_and_env(self, tmp_path: Path) -> None:
        toml = (
            self.AMQP + "events_exchange = 'app.events'\nevents_buffer = 50\n"
            "[[namespaces]]\nname = 'room'\nlifecycle_events = true\n"
        )
        s = load(tmp_path, toml, env={"TIDINGS_AMQP_EVENTS_PREFIX": "shop.rt"})
        assert (s.amqp.events_exchange, s.amqp.events_buffer) == ("app.events", 50)
        assert s.amqp.events_prefix == "shop.rt"
        room = s.namespace("room")
        assert room is not None and room.lifecycle_events

    @pytest.mark.parametrize(
        ("toml", "key", "reason"),
        [
            ("[amqp]\nevents_exchange = 'x'\n", "amqp.events_exchange", "needs amqp.url"),
            (AMQP + "events_exchange = ''\n", "amqp.events_exchange", "must not be empty"),
            (AMQP + "events_exchange = 'tidings'\n", "amqp.events_exchange", "must differ"),
            (
                AMQP + "quarantine_exchange = 'q'\nevents_exchange = 'q'\n",
                "amqp.events_exchange",
                "must differ",
            ),
            (AMQP + "events_buffer = 0\n", "amqp.events_buffer", "at least 1"),
            (AMQP + "events_prefix = 'a..b'\n", "amqp.events_prefix", "dot-separated"),
            (AMQP + "events_prefix = 'a.#'\n", "amqp.events_prefix", "dot-separated"),
            (
                "[[namespaces]]\nname = 'room'\nlifecycle_events = true\n",
                "namespaces[0].lifecycle_events",
                "needs amqp.events_exchange",
            ),
        ],
    )
    def test_refused(self, tmp_path: Path, toml: str, key: str, reason: str) -> None:
        refused = error(tmp_path, toml)
        assert refused.key == key and reason in str(refused)


class TestLedger:
    def test_defaults_follow_the_log_stream(self, tmp_path: Path) -> None:
        s = load(tmp_path, "[amqp]\nstream = 'shop.log'\n")
        assert s.ledger.stream == "" and s.ledger.stream_name(s.amqp) == "shop.log.state"
        assert s.ledger.max_bytes == 128 << 20

    def test_from_file_and_env(self, tmp_path: Path) -> None:
        toml = "[ledger]\nstream = 'shop.ledger'\n"
        s = load(tmp_path, toml, env={"TIDINGS_LEDGER_MAX_BYTES": "1MiB"})
        assert s.ledger.stream_name(s.amqp) == "shop.ledger"
        assert s.ledger.max_bytes == 1 << 20

    @pytest.mark.parametrize(
        ("toml", "key", "reason"),
        [
            ("[ledger]\nmax_bytes = '32KiB'\n", "ledger.max_bytes", "at least 65536"),
            ("[ledger]\nmax_bytes = 'lots'\n", "ledger.max_bytes", "expected a size"),
            ("[ledger]\nstream = 'tidings.log'\n", "ledger.stream", "must differ"),
            ("[ledger]\nstream = 'a b'\n", "ledger.stream", "printable ASCII"),
            ("[ledger]\nsnapshot_every = 1\n", "ledger.snapshot_every", "unknown"),
        ],
    )
    def test_refused(self, tmp_path: Path, toml: str, key: str, reason: str) -> None:
        refused = error(tmp_path, toml)
        assert refused.key == key and reason in str(refused), str(refused)
