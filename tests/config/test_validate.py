"""tidings.config.validate: the start-up checks across values, each refusal with its exact key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.loading import BASE_ENV, error, load
from tidings.config import load_settings
from tidings.errors import ConfigError


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


# ---------------------------------------------------------------------------- broker addresses
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
        assert amqp.stream_urls == [
            "rabbitmq-stream://a:5553/",
            "rabbitmq-stream+tls://b:5551/%2Fv",
        ]
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
