"""The ``tidings`` command: ``serve``, ``token``, ``publish``, ``check-config``,
``webpush-keys``.

Flags override ``TIDINGS_*`` environment variables, which override the TOML file
(``--config`` or ``TIDINGS_CONFIG``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from tidings import __version__
from tidings.channels import NameKind, channel_problem, name_problem
from tidings.config import Settings, load_settings, masked
from tidings.errors import ConfigError, TidingsError
from tidings.router import parse_channel_header

__all__ = ["main"]

log = logging.getLogger("tidings")

INSECURE_WARNING = (
    "INSECURE MODE (client.insecure): anyone may connect without a token, subscribe to and "
    "read the history of every channel. For development only."
)


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (default: $TIDINGS_CONFIG)")
    p.add_argument("--host", dest="server.host", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", dest="server.port", type=int, help="port (8888)")
    p.add_argument(
        "--workers",
        dest="server.workers",
        type=int,
        help="processes sharing the port (default: one per core with RabbitMQ, else 1)",
    )
    p.add_argument(
        "--demo",
        dest="server.demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="demo mode: the demo page mints tokens; never expose it to the internet",
    )
    p.add_argument(
        "--insecure",
        dest="client.insecure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="development only: no token needed, every channel open to every client",
    )
    p.add_argument(
        "--allowed-origin",
        dest="server.allowed_origins",
        action="append",
        help="origin allowed to connect (repeatable; default same-origin only)",
    )
    p.add_argument("--log-level", dest="server.log_level", help="debug, info, warning, error")
    p.add_argument("--amqp-url", dest="amqp.url", help="RabbitMQ URL (default: embedded log)")
    p.add_argument(
        "--amqp-urls", dest="amqp.urls", help="nodes of one RabbitMQ cluster, comma-separated"
    )
    p.add_argument("--exchange", dest="amqp.exchange", help="the application's exchange")
    p.add_argument(
        "--binding",
        dest="amqp.bindings",
        action="append",
        help="binding pattern of the stream to the exchange (repeatable; default '#')",
    )
    p.add_argument("--stream", dest="amqp.stream", help="stream queue name (tidings.log)")
    p.add_argument("--hmac-secret", dest="auth.hmac_secret", help="HMAC secret for tokens")
    p.add_argument("--api-key", dest="api.key", help="key of the server API")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def _load(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    return load_settings(args.config, env, _overrides(args))


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika/aiormq log every reconnect attempt with a traceback; keep their noise down.
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, root.level))


class _JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def cmd_serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Runs the gateway."""
    overrides = _overrides(args)
    demo_secret = None
    # Demo mode without a configured secret: a random one, made before workers fork so
    # they all share it, and never printed.
    probe = load_settings(args.config, env, overrides)
    if probe.server.demo and not probe.auth.hmac_secret and not probe.auth.public_key:
        demo_secret = secrets.token_urlsafe(32)
        overrides["auth.hmac_secret"] = demo_secret
    settings = load_settings(args.config, env, overrides)
    _setup_logging(settings.server.log_level, settings.server.log_format)
    if settings.server.demo:
        log.warning(
            "DEMO MODE: the demo page mints tokens for any user. Never expose this to a network."
        )
    if settings.client.insecure:
        log.warning(INSECURE_WARNING)
    if not settings.amqp.url:
        log.info("no amqp.url set: using the embedded in-memory log (one process, no durability)")
    from tidings.server import run

    return run(settings)


def cmd_token(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Prints a development token signed with the configured HMAC secret."""
    from tidings.auth import mint_token

    settings = _load(args, env)
    secret = settings.auth.hmac_secret
    if not secret:
        raise ConfigError("auth.hmac_secret", "tidings token signs with the HMAC secret; set it")
    info = json.loads(args.info) if args.info else None
    channels = [c for c in (args.channels or "").split(",") if c]
    problems = [name_problem(args.sub, NameKind.USER)]
    problems += [channel_problem(c) for c in channels]
    if args.channel is not None:
        problems.append(channel_problem(args.channel))
    if _refused("token", problems):
        return 2
    print(
        mint_token(
            secret, args.sub, ttl=args.ttl, channels=channels, info=info, channel=args.channel
        )
    )
    return 0


def _refused(command: str, problems: list[str | None]) -> bool:
    """Prints the first problem of a name given on the command line; True if there was one."""
    problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        print(f"tidings {command}: {problem}", file=sys.stderr)
    return problem is not None


def cmd_publish(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Publishes one event: into RabbitMQ when configured, else through a running node's API."""
    settings = _load(args, env)
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        print(f"tidings publish: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    channels = parse_channel_header(args.channel)
    if _refused("publish", [channel_problem(c) for c in channels]):
        return 2
    if settings.amqp.url:
        return asyncio.run(_publish_amqp(settings, channels, data))
    key = settings.api.key
    if not key:
        raise ConfigError("api.key", "publishing through the server API needs the API key")
    body = json.dumps({"channels": channels, "data": data}).encode()
    request = urllib.request.Request(
        args.url.rstrip("/") + "/api/broadcast",
        data=body,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        print(f"tidings publish: {exc.code} {exc.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"tidings publish: cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
    # The API answers a refused request (or channel) with HTTP 200 and an error inside.
    answer = json.loads(text)
    refused = [answer["error"]] if "error" in answer else []
    refused += [r["error"] for r in answer["result"].get("responses", []) if "error" in r]
    if refused:
        print(f"tidings publish: {text}", file=sys.stderr)
        return 1
    print(text)
    return 0


async def _publish_amqp(settings: Settings, channels: list[str], data: Any) -> int:
    from tidings.log.rabbitmq import RabbitMqLog
    from tidings.router import CHANNEL_HEADER, encode_channel_header

    event_log = RabbitMqLog(settings.amqp)
    try:
        await event_log.append(
            settings.amqp.publish_routing_key,
            json.dumps(data, separators=(",", ":")).encode(),
            {CHANNEL_HEADER: encode_channel_header(channels)},
        )
    finally:
        await event_log.close()
    print(json.dumps({"result": {}}))
    return 0


def cmd_check_config(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Validates the settings and prints them with secrets masked."""
    settings = _load(args, env)
    print(json.dumps(masked(settings), indent=2, sort_keys=True))
    if settings.client.insecure:
        print(f"tidings: warning: {INSECURE_WARNING}", file=sys.stderr)
    return 0


def cmd_webpush_keys(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Prints a new VAPID key pair: the private key as a ``[web_push]`` setting, and the
    public key pages subscribe with."""
    from tidings.webpush.vapid import generate_key

    private, public = generate_key()
    print("[web_push]")
    print(f'vapid_private_key = "{private}"  # keep it secret')
    print('vapid_subject = "mailto:you@example.com"  # yours')
    print(f"# public key (applicationServerKey, served at GET /push/key): {public}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tidings", description="Realtime notifications from RabbitMQ to browsers."
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    _settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a development token")
    _settings_flags(token)
    token.add_argument("--sub", required=True, help="user id ('' for anonymous)")
    token.add_argument("--channels", help="server-side channels, comma-separated")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (0: never)")
    token.add_argument("--info", help="JSON for the info claim")
    token.add_argument("--channel", help="make a subscription token for this channel")
    token.set_defaults(func=cmd_token)

    publish = sub.add_parser("publish", help="publish one event")
    _settings_flags(publish)
    publish.add_argument(
        "--channel", required=True, help="channel(s), comma-separated or a JSON array"
    )
    publish.add_argument("--data", required=True, help="JSON payload")
    publish.add_argument(
        "--url", default="http://127.0.0.1:8888", help="node to publish through without RabbitMQ"
    )
    publish.set_defaults(func=cmd_publish)

    check = sub.add_parser("check-config", help="validate and print the effective settings")
    _settings_flags(check)
    check.set_defaults(func=cmd_check_config)

    keys = sub.add_parser("webpush-keys", help="print a new VAPID key pair for Web Push")
    keys.set_defaults(func=cmd_webpush_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tidings`` command."""
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    try:
        result: int = args.func(args, env)
        return result
    except ConfigError as exc:
        print(f"tidings: invalid setting {exc.key}: {exc.reason}", file=sys.stderr)
        return 2
    except TidingsError as exc:
        print(f"tidings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
