"""The exceptions of the high-level (kombu-style) layer.

Every class derives from :class:`leveret.wire.errors.LeveretError`, so ``except
LeveretError`` still catches everything leveret raises on purpose.  Where a builtin says
what went wrong just as well, the class derives from it too, so code that knows nothing of
leveret can still catch it:

=============================  =======================================================
class                          also a
=============================  =======================================================
:class:`SerializerNotInstalled`  ``ValueError`` (an unknown serializer name or type)
:class:`ContentDisallowed`     :class:`SerializerNotInstalled` (as in kombu), so a
                               ``ValueError``
:class:`EncodeError`           ``ValueError``
:class:`DecodeError`           ``ValueError`` (as ``json.JSONDecodeError`` is)
:class:`CompressionNotInstalled`  ``ValueError``
:class:`OperationalError`      ``ConnectionError``
:class:`RecoveryPaused`        ``TimeoutError``
=============================  =======================================================

:class:`LimitExceeded` is deliberately *not* a ``queue.Full``: a pool that hit its limit is
not a full queue.  :data:`Empty` *is* ``queue.Empty`` (what ``SimpleQueue.get`` raises),
re-exported so users need one import.

The names :class:`EncodeError` and :class:`DecodeError` also exist in
:mod:`leveret.wire.errors`, where they mean a *frame* could not be encoded or decoded (a
protocol error with a reply code).  The classes here are about message *bodies* and are
not related to those.
"""

from __future__ import annotations

import queue
from typing import Any

from ..wire.errors import LeveretError

__all__ = [
    "LeveretError",
    "NotBoundError",
    "MessageStateError",
    "SerializerNotInstalled",
    "ContentDisallowed",
    "EncodeError",
    "DecodeError",
    "CompressionNotInstalled",
    "DecompressionError",
    "DecompressedSizeExceeded",
    "LimitExceeded",
    "OperationalError",
    "RecoveryPaused",
    "ConsumerCancelled",
    "MessageReturned",
    "InconsistencyError",
    "Empty",
]

#: ``queue.Empty`` itself: raised by ``SimpleQueue.get`` and friends when nothing arrived.
Empty = queue.Empty


class NotBoundError(LeveretError):
    """An entity (``Exchange``, ``Queue``) was used before it was bound to a channel.

    Nothing was sent; bind it (``entity.bind(channel)`` or ``entity(channel)``) and retry.
    """


class MessageStateError(LeveretError):
    """A message was settled twice (``ack`` after ``ack``/``reject``/``requeue``), settled
    when it cannot be (no channel, no delivery tag, or it arrived on a ``no_ack`` consumer,
    where the broker settled it on delivery).  Nothing was sent; the message's state is
    unchanged."""


class SerializerNotInstalled(LeveretError, ValueError):
    """No serializer is registered under that name (or for that content type), or it is
    known but its package (``yaml``, ``msgpack``) does not import.  Nothing was encoded or
    decoded."""


class ContentDisallowed(SerializerNotInstalled):
    """A message's content type is not in the consumer's ``accept`` set.

    Raised *before* any decoding: the body was not looked at, so an unaccepted pickle never
    runs.  A subclass of :class:`SerializerNotInstalled`, as in kombu.
    """


class EncodeError(LeveretError, ValueError):
    """A serializer could not encode the value; ``__cause__`` holds its own exception.
    Nothing was published."""


class DecodeError(LeveretError, ValueError):
    """A body could not be decoded (bad JSON, a pickle that raised, an unknown text encoding,
    a corrupt compressed body); ``__cause__`` holds the decoder's own exception."""


class CompressionNotInstalled(LeveretError, ValueError):
    """No compression method is registered under that name, alias or content type."""


class DecompressionError(DecodeError):
    """A compressed body is corrupt or truncated; ``__cause__`` holds the codec's error."""


class DecompressedSizeExceeded(DecompressionError):
    """A compressed body would decompress to more than the allowed size (a guard against
    decompression bombs); decompression stopped there and nothing was returned.

    ``max_size`` is the limit that was exceeded.
    """

    def __init__(self, message: str, max_size: int | None = None) -> None:
        super().__init__(message)
        self.max_size = max_size

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.max_size), self.__dict__)


class LimitExceeded(LeveretError):
    """A resource limit was reached (a connection or producer pool has no free item and
    may not grow).  Not a ``queue.Full``."""


class OperationalError(LeveretError, ConnectionError):
    """The broker could not be reached or the connection failed while the high-level
    layer was using it (after any retries it was told to make)."""


class RecoveryPaused(LeveretError, TimeoutError):
    """A wait with a deadline (``drain_events(timeout=...)`` on an ``autorecover``
    connection) ran out while the lost connection was being recovered.  The recovery is
    not over: the next call goes on with it from where it stood (its back-off, retries and
    time limit unchanged).  A ``TimeoutError``, as the wait's own timeout is."""


class ConsumerCancelled(LeveretError):
    """The broker cancelled consumers (``basic.cancel`` from the broker: their queue was
    deleted, or its node went away).  :meth:`ConsumerMixin.consume
    <leveret.highlevel.mixins.ConsumerMixin.consume>` raises it, and
    :meth:`~leveret.highlevel.mixins.ConsumerMixin.run` starts over (declaring the queues
    again), as after a lost connection.  ``queues``: the names of the queues."""

    def __init__(self, message: str, queues: list[str] | None = None) -> None:
        super().__init__(message)
        self.queues: list[str] = list(queues or ())


class InconsistencyError(LeveretError):
    """The broker's state does not match what the operation assumed (for example, a binding
    the layer recorded is missing).  Usually fixed by redeclaring the entities."""


class MessageReturned(LeveretError):
    """A ``mandatory`` publish was returned by the broker (``basic.return``): no queue was
    bound to take it.

    ``message`` is the returned message (a ``leveret.client.Message``; its
    ``delivery_info`` holds the return's fields); ``reply_code`` (312 NO_ROUTE, 313
    NO_CONSUMERS), ``reply_text``, ``exchange`` and ``routing_key`` say why and where.  Any
    of them left as None is taken from ``message.delivery_info``.

    ``returned``: when :meth:`Producer.flush` raises this for the first of several
    returns, all of them, in publish order (else just this one).
    """

    returned: list[MessageReturned]

    def __init__(
        self,
        message: Any = None,
        reply_code: int | None = None,
        reply_text: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> None:
        info: dict[str, Any] = getattr(message, "delivery_info", None) or {}
        self.message = message
        self.reply_code = reply_code if reply_code is not None else info.get("reply_code")
        self.reply_text = reply_text if reply_text is not None else info.get("reply_text")
        self.exchange = exchange if exchange is not None else info.get("exchange")
        self.routing_key = routing_key if routing_key is not None else info.get("routing_key")
        self.returned = [self]
        super().__init__(
            f"message returned: {self.reply_code} {self.reply_text} "
            f"(exchange={self.exchange!r}, routing_key={self.routing_key!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The message pickles without its channel (see leveret.client.Message); the
        # attributes follow, ``returned`` (which holds this error) among them.
        return (
            type(self),
            (self.message, self.reply_code, self.reply_text, self.exchange, self.routing_key),
            self.__dict__,
        )
