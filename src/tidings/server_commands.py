"""Server commands on a node: sent through the log, applied to this node's sessions.

The server API's ``subscribe``, ``unsubscribe``, ``disconnect``, ``refresh`` and
``history_remove`` reach one worker but act on state every node holds, so they travel the
log as signed records (:mod:`tidings.commands`) and every node applies them in log order:
``history_remove`` always (history is rebuilt from the log), the others only while fresh,
so a node replaying the log at start-up does not repeat old disconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tidings import commands
from tidings.admission import ClientHandle
from tidings.codes import DisconnectCode
from tidings.config import Settings
from tidings.history import History
from tidings.hub import Hub
from tidings.log.base import Log
from tidings.metrics import Metrics
from tidings.protocol.session import Session
from tidings.publishing import PublishError
from tidings.record import Record

__all__ = ["ServerCommands"]


class ServerCommands:
    """Sends server commands and applies those the log delivers.

    Args:
        settings: the settings (``api.key``, ``amqp.publish_routing_key``).
        event_log: the log the commands travel.
        history: the windows ``history_remove`` removes from.
        hub: the subscriptions, counted after a server-side subscribe or unsubscribe.
        sessions: this node's connected sessions by user, with their connections.
        reject: called with a command record that does not decode (its kind, its reason).
        metrics: where the subscriptions are counted.
        clock: wall time, against which a command's freshness is judged.
    """

    def __init__(
        self,
        settings: Settings,
        event_log: Log,
        history: History,
        hub: Hub,
        sessions: Mapping[str, Mapping[Session, ClientHandle]],
        reject: Callable[[Record, str, str], None],
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._key = settings.api.key
        self._routing_key = settings.amqp.publish_routing_key
        self._log = event_log
        self._history = history
        self._hub = hub
        self._sessions = sessions
        self._reject = reject
        self._metrics = metrics
        self._clock = clock

    async def send(self, command: commands.ServerCommand) -> None:
        """Sends ``command`` through the log, so that every node applies it.

        Raises:
            PublishError: ``api.key`` is not set (commands are signed with it).
        """
        key = self._key
        if key is None:
            raise PublishError("server commands are signed with api.key; set it")
        body, headers = commands.encode(command, key)
        await self._log.append(self._routing_key, body, headers)

    def on_record(self, record: Record) -> None:
        """A command record the log delivered: checked, then applied."""
        try:
            command = commands.decode(record.headers, record.body, self._key)
        except commands.CommandError as exc:
            self._reject(record, "bad_command", str(exc))
            return
        if command.kind == "history_remove":
            self._history.remove(command.channel, record.position)
            return
        if not command.fresh(self._clock()):
            return  # replayed from the log: its moment has passed
        for session, handle in list(self._sessions.get(command.user, {}).items()):
            if command.matches(session.user, session.client_id):
                self._apply(command, session, handle)

    def _apply(
        self, command: commands.ServerCommand, session: Session, handle: ClientHandle
    ) -> None:
        kind = command.kind
        if kind == "disconnect":
            try:
                code = DisconnectCode(command.code or DisconnectCode.FORCE_DISCONNECT)
            except ValueError:  # signed by a newer node that knows more codes
                code = DisconnectCode.FORCE_DISCONNECT
            handle.close(code, command.reason)
            return
        if kind == "subscribe":
            session.server_subscribe(command.channel)
            self._metrics.subscriptions.set(self._hub.subscriptions)
        elif kind == "unsubscribe":
            session.server_unsubscribe(command.channel)
            self._metrics.subscriptions.set(self._hub.subscriptions)
        elif kind == "refresh":
            session.server_refresh(command.expired, command.expire_at)
        handle.pump()
