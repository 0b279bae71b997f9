"""Read receipts on a node: marks checked against what the node can show, written to the
ledger, reported to the application; unread counts. The node's own RPC methods
(:class:`~tidings.protocol.operations.NodeRpcCall`) and the HTTP endpoints of event
streams (``transport/receipts.py``) both answer with :meth:`Receipts.answer`.

======================  ========================================  ===========================
method                  data                                      result
======================  ========================================  ===========================
``tidings.read``        ``{"channel", "offsets": [n, …]}``,        ``{"unread": n,
                        ``{"channel", "upto": n}`` or both         "exact": bool}`` after it
``tidings.unread``      ``{"channel"}``                           ``{"unread": n,
                                                                  "exact": bool}``
======================  ========================================  ===========================

Errors: 103 an anonymous connection, or a channel that neither names the user nor is read
by the connection (its subscriptions; over HTTP, the token's ``channels``); 102 an unknown
namespace; 108 a namespace without history (there is nothing to count against); 107 a
malformed request, or offsets that are not publications of the channel held in its
history window here (nothing of the mark is applied), or an ``upto`` past the node's
position; 100, temporary, the ledger could not take the write.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any

import orjson

from tidings.codes import ErrorCode
from tidings.config import ChannelOptions
from tidings.events import RECEIPT, receipt_event
from tidings.history import History
from tidings.ledger import Ledger, LedgerError
from tidings.protocol.operations import Answered, Rejected
from tidings.receipts import (
    KIND,
    READ,
    UNREAD,
    Mark,
    ReadPosition,
    ReceiptError,
    Unread,
    count_unread,
    decode,
    encode,
    entry_key,
    may_mark,
    merge,
    normalize,
    parse_mark,
    parse_query,
)

__all__ = ["Receipts"]

log = logging.getLogger(__name__)

#: Unknown offsets named in an error message, at most.
_NAMED = 5


def _error(code: ErrorCode, message: str = "", temporary: bool = False) -> Rejected:
    return Rejected(int(code), message or code.message, temporary)


class Receipts:
    """The read positions of every user, as this node's ledger holds them.

    Args:
        ledger: where positions are kept (its merge of kind ``read`` is registered here,
            so build this before the ledger starts).
        history: the node's history windows: what publications a channel has.
        options_for: a channel's namespace options (None: unknown namespace).
        head: the node's position in the log.
        epoch: the log's epoch.
        clock: Unix time.
        worker: this worker's id, as events name it.
        report: ``report(kind, event, id)`` hands an event to the application
            (:meth:`tidings.node.Node.emit_event`).
    """

    def __init__(
        self,
        ledger: Ledger,
        history: History,
        options_for: Callable[[str], ChannelOptions | None],
        *,
        head: Callable[[], int],
        epoch: Callable[[], str],
        clock: Callable[[], float],
        worker: str,
        report: Callable[[str, dict[str, Any], str], None],
    ) -> None:
        self._ledger = ledger
        self._history = history
        self._options_for = options_for
        self._head = head
        self._epoch = epoch
        self._clock = clock
        self._worker = worker
        self._report = report
        ledger.merge(KIND, merge)

    def position(self, user: str, channel: str) -> ReadPosition:
        """What ``user`` has seen of ``channel`` in the log's current epoch."""
        value = self._ledger.get(KIND, entry_key(user, channel))
        if value is not None:
            try:
                position = decode(value)
            except ValueError:
                return ReadPosition()
            if position.epoch == self._epoch():
                return position
        return ReadPosition()

    def _window(self, channel: str) -> tuple[list[int], int]:
        """The offsets of ``channel``'s history window and its ``complete_since``.

        Raises:
            ReceiptError: with its code: an unknown namespace, or one without history.
        """
        options = self._options_for(channel)
        if options is None:
            raise _Refused(ErrorCode.UNKNOWN_CHANNEL)
        size, ttl = options.history_size, options.history_ttl
        if size <= 0 or ttl <= 0:
            raise _Refused(ErrorCode.NOT_AVAILABLE, "receipts need the channel's history")
        complete = self._history.complete_since(channel, size=size, ttl=ttl, now=self._clock())
        window = self._history.window(channel)
        return ([] if window is None else window.offsets()), complete

    def unread(self, user: str, channel: str) -> Unread:
        """How many of ``channel``'s publications held here ``user`` has not seen.

        Raises:
            ReceiptError: an unknown namespace or one without history (its ``code``).
        """
        held, complete = self._window(channel)
        return count_unread(self.position(user, channel), held, complete)

    async def mark(self, user: str, client: str, mark: Mark) -> Unread:
        """Writes ``mark`` to ``user``'s position, reports it, and counts again.

        Raises:
            ReceiptError: the namespace (as :meth:`unread`), offsets not held here, an
                ``upto`` past the node's position; nothing is written.
            LedgerError: the write could not be made.
        """
        held, _ = self._window(mark.channel)
        unknown = sorted(set(mark.offsets).difference(held))
        if unknown:
            named = ", ".join(map(str, unknown[:_NAMED])) + (", …" if len(unknown) > _NAMED else "")
            raise _Refused(
                ErrorCode.BAD_REQUEST,
                f"not publications of {mark.channel!r} held here: {named}; nothing marked",
            )
        if mark.upto > self._head():
            raise _Refused(ErrorCode.BAD_REQUEST, f"upto {mark.upto} is past the log's position")
        epoch = self._epoch()
        written = normalize(mark.upto, mark.offsets, epoch)
        await self._ledger.put(KIND, entry_key(user, mark.channel), encode(written))
        event = receipt_event(
            id=uuid.uuid4().hex[:24],
            user=user,
            client=client,
            channel=mark.channel,
            offsets=list(mark.offsets),
            upto=mark.upto,
            node=self._worker,
            time=self._clock(),
        )
        self._report(RECEIPT, event, event["id"])
        return self.unread(user, mark.channel)

    async def answer(
        self, method: str, user: str, client: str, data: bytes | None, reads: Collection[str]
    ) -> Answered | Rejected:
        """Answers ``method`` (:data:`READ` or :data:`UNREAD`) for a connection of ``user``
        ("" anonymous, ``client`` "" over HTTP) that reads the channels ``reads``;
        never raises."""
        try:
            if method == READ:
                mark = parse_mark(data)
                may_mark(mark.channel, user, reads)
                unread = await self.mark(user, client, mark)
            elif method == UNREAD:
                channel = parse_query(data)
                may_mark(channel, user, reads)
                unread = self.unread(user, channel)
            else:
                return _error(ErrorCode.METHOD_NOT_FOUND)
        except PermissionError as exc:
            return _error(ErrorCode.PERMISSION_DENIED, str(exc))
        except _Refused as exc:
            return _error(exc.code, exc.message)
        except ReceiptError as exc:
            return _error(ErrorCode.BAD_REQUEST, str(exc))
        except LedgerError as exc:
            log.warning("read position of %r not written: %s", user, exc)
            return _error(ErrorCode.INTERNAL, "the read position could not be stored; retry", True)
        except Exception:  # the host answers every call; a bug is logged, not raised
            log.exception("%s of %r failed", method, user)
            return _error(ErrorCode.INTERNAL, "", True)
        return Answered(orjson.dumps({"unread": unread.count, "exact": unread.exact}))


class _Refused(ReceiptError):
    """A refusal with its own error code."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
