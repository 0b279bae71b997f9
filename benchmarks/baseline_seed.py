"""The 2012 prototype of the seed story, rendered with today's Tornado and pika.

One process, one Tornado IOLoop. A pika consumer (``TornadoConnection``) lives in the same loop;
every WebSocket handler registers itself with it as a listener on open and leaves on close; every
AMQP message is re-encoded once and written with ``write_message`` to every listener.

On purpose, and as in the original: no authentication, no routing (every client gets every
event, so the "personal" workload is broadcast too and the load generator counts the deliveries
meant for someone else as wasted), no acknowledgements (``auto_ack``) and no back-pressure:
RabbitMQ pushes as fast as it can, and ``write_message`` buffers without limit for a client that
does not read. Under overload its memory grows instead of it shedding load; the benchmark shows
that.

Usage: ``python -m benchmarks.baseline_seed --port 8890 --exchange bench.baseline``. It prints
``ready`` on stdout once it listens and its queue is consumed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from typing import Any

import pika
import tornado.ioloop
import tornado.web
import tornado.websocket
from pika.adapters.tornado_connection import TornadoConnection
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

__all__ = ["PikaClient", "SeedWebSocketHandler", "main"]

log = logging.getLogger("baseline_seed")


class PikaClient:
    """The seed's consumer: owns the listener set and notifies every listener of every event."""

    def __init__(self, amqp_url: str, exchange: str, binding_key: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.binding_key = binding_key
        self.connection: TornadoConnection | None = None
        self.channel: Channel | None = None
        self.event_listeners: set[SeedWebSocketHandler] = set()
        self.on_ready: list[Any] = []

    def connect(self) -> None:
        """Open the AMQP connection on the current Tornado IOLoop."""
        log.info("connecting to %s", self.amqp_url)
        self.connection = TornadoConnection(
            pika.URLParameters(self.amqp_url),
            on_open_callback=self.on_connected,
            on_open_error_callback=self.on_open_error,
            on_close_callback=self.on_closed,
        )

    def on_connected(self, connection: pika.connection.Connection) -> None:
        connection.channel(on_open_callback=self.on_channel_open)

    def on_open_error(self, _connection: object, error: BaseException) -> None:
        log.error("cannot connect to RabbitMQ: %s", error)
        tornado.ioloop.IOLoop.current().stop()

    def on_channel_open(self, channel: Channel) -> None:
        self.channel = channel
        channel.exchange_declare(
            self.exchange, exchange_type="topic", durable=True, callback=self.on_exchange
        )

    def on_exchange(self, _frame: object) -> None:
        assert self.channel is not None
        # A private, server-named queue that disappears with this process, as a hack-day
        # consumer would declare it.
        self.channel.queue_declare("", exclusive=True, auto_delete=True, callback=self.on_queue)

    def on_queue(self, frame: Any) -> None:
        assert self.channel is not None
        queue = frame.method.queue
        self.channel.queue_bind(
            queue, self.exchange, routing_key=self.binding_key,
            callback=lambda _f: self.on_bound(queue),
        )

    def on_bound(self, queue: str) -> None:
        assert self.channel is not None
        self.channel.basic_consume(queue, self.on_message, auto_ack=True)
        log.info("consuming %s bound to %s/%s", queue, self.exchange, self.binding_key)
        for callback in self.on_ready:
            callback()

    def on_closed(self, _connection: object, reason: BaseException) -> None:
        log.warning("RabbitMQ connection closed: %s", reason)
        tornado.ioloop.IOLoop.current().stop()

    def on_message(
        self, _channel: Channel, _method: Basic.Deliver, _props: BasicProperties, body: bytes
    ) -> None:
        # The seed parsed each body into an event object and dumped it back to JSON once.
        self.notify_listeners(json.loads(body))

    def notify_listeners(self, event_obj: Any) -> None:
        """Write the event to every registered listener."""
        event_json = json.dumps(event_obj)
        for listener in list(self.event_listeners):
            try:
                listener.write_message(event_json)
            except tornado.websocket.WebSocketClosedError:
                self.remove_event_listener(listener)
            # The seed logged every delivery at INFO; that alone would be the bottleneck here.
            log.debug("notified %r", listener)

    def add_event_listener(self, listener: SeedWebSocketHandler) -> None:
        """Register a connected handler."""
        self.event_listeners.add(listener)

    def remove_event_listener(self, listener: SeedWebSocketHandler) -> None:
        """Forget a handler; unknown handlers are ignored."""
        self.event_listeners.discard(listener)


class SeedWebSocketHandler(tornado.websocket.WebSocketHandler):
    """``/ws``: registers itself with the consumer for as long as it is open."""

    @property
    def pika_client(self) -> PikaClient:
        client: PikaClient = self.application.settings["pika_client"]
        return client

    def open(self, *args: str, **kwargs: str) -> None:
        self.pika_client.add_event_listener(self)

    def on_close(self) -> None:
        self.pika_client.remove_event_listener(self)

    def on_message(self, message: str | bytes) -> None:
        """Clients have nothing to say in this design; anything they send is ignored."""


def main(argv: list[str] | None = None) -> None:
    """Start the server and the consumer in one IOLoop and run until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="tidings")
    parser.add_argument("--binding-key", default="#")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")

    client = PikaClient(args.amqp_url, args.exchange, args.binding_key)
    application = tornado.web.Application([(r"/ws", SeedWebSocketHandler)], pika_client=client)
    application.listen(args.port, address=args.host, backlog=4096)
    client.on_ready.append(lambda: print("ready", flush=True))
    client.connect()
    with contextlib.suppress(KeyboardInterrupt):
        tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
