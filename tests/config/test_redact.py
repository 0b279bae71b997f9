"""tidings.config.redact: the effective settings shown, every secret hidden."""

from __future__ import annotations

from pathlib import Path

from tests.config.loading import load
from tests.fakes import SECRET
from tidings.config import load_settings, masked


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


def test_proxy_endpoint_credentials_are_masked() -> None:
    s = load_settings(
        None,
        {"TIDINGS_PROXY_CONNECT_ENDPOINT": "http://app:pw@127.0.0.1:3000/connect"},
    )
    assert masked(s)["proxy"]["connect_endpoint"] == "http://app:***@127.0.0.1:3000/connect"
