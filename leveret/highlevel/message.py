"""The high-level received message: a client message plus decoding and settlement state.

:class:`Message` wraps a received :class:`leveret.client.Message`.  At construction it
undoes compression (kombu's ``compression`` header); :attr:`Message.payload` decodes the
body by its content type through :func:`leveret.highlevel.serialization.loads`, refusing
content types outside ``accept``.  ``ack``/``reject``/``requeue``/``nack`` send the matching
``basic.*`` method on the channel the message arrived on, once: a second settlement raises
:class:`MessageStateError` and sends nothing.  A message from a ``no_ack`` consumer was
settled by the broker on delivery: acking or rejecting it does nothing (kombu ignores its
``ack()`` likewise), so callbacks that always ack work with either kind of consumer;
requeueing it raises :class:`MessageStateError`, since it cannot go back.

State machine (``_state``)::

    RECEIVED --ack()--------------------------> ACK
    RECEIVED --reject() / nack(requeue=False)--> REJECTED
    RECEIVED --requeue() / reject(requeue=True) / nack()--> REQUEUED
    (a message from a no_ack consumer starts in ACK: the broker settled it on delivery;
    ack and reject do nothing, requeue raises)

Any other settlement from a state other than RECEIVED raises :class:`MessageStateError`.  The
state changes only after the method was handed to the channel: if the channel raised
(closed, connection lost), the message is still RECEIVED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from .compression import DEFAULT_MAX_SIZE, HEADER, decompress
from .exceptions import MessageStateError
from .serialization import check_accepted, loads

__all__ = ["Message", "RECEIVED", "ACK", "REJECTED", "REQUEUED", "ACK_STATES"]

RECEIVED = "RECEIVED"
ACK = "ACK"
REJECTED = "REJECTED"
REQUEUED = "REQUEUED"
#: The states in which a message counts as :attr:`Message.acknowledged`.
ACK_STATES = frozenset({ACK, REJECTED, REQUEUED})

_UNSET: Any = object()

ErrorTypes = type[BaseException] | tuple[type[BaseException], ...]


class Message:
    """A received message, as the high-level layer hands it to callbacks.

    ``Message(client_message, channel=None, accept=None, *, no_ack=False,
    max_decompressed_size=DEFAULT_MAX_SIZE)``:

    * ``client_message``: the :class:`leveret.client.Message` the channel delivered;
    * ``channel``: where ``basic.ack``/``reject``/``nack`` go (default: the client
      message's own ``channel``); anything with the client ``Channel``'s ``basic_ack``,
      ``basic_reject``, ``basic_nack``;
    * ``accept``: content types (or serializer names) :attr:`payload` may decode; None means
      the serialization registry's default set (json and raw);
    * ``no_ack``: the message came from a ``no_ack`` consumer (or ``basic.get`` with
      ``no_ack``): it starts acknowledged; ack and reject do nothing (nothing is sent;
      there is nothing to settle) and a requeue raises :class:`MessageStateError`;
    * ``max_decompressed_size``: the bound passed to
      :func:`~leveret.highlevel.compression.decompress` (None: no limit).

    A compressed body (the ``compression`` header) is decompressed on first use of
    :attr:`body` or :attr:`errors`, or by :meth:`decode` -- which checks the content type
    against ``accept`` first, so a body the consumer refuses is never decompressed.
    Construction never raises for a bad body: a decompression failure is appended to
    :attr:`errors`, and :meth:`decode` raises it.
    """

    __slots__ = (
        "client_message",
        "channel",
        "_delivery_info",
        "delivery_tag",
        "_properties",
        "headers",
        "content_type",
        "content_encoding",
        "_body",
        "_compressed",
        "accept",
        "_errors",
        "no_ack",
        "_state",
        "_decoded",
        "__dict__",
    )

    def __init__(
        self,
        client_message: Any,
        channel: Any = None,
        accept: Collection[str] | None = None,
        *,
        no_ack: bool = False,
        max_decompressed_size: int | None = DEFAULT_MAX_SIZE,
    ) -> None:
        #: The wrapped :class:`leveret.client.Message` (its ``body`` is the wire body,
        #: still compressed).
        self.client_message = client_message
        self.channel = channel if channel is not None else getattr(client_message, "channel", None)
        # delivery_info and properties are dicts built on first use: most consumers only
        # look at the body, the tag and the few properties read here.
        self._delivery_info: dict[str, Any] | None = None
        self._properties: dict[str, Any] | None = None
        self.delivery_tag: int | None = client_message.delivery_tag
        # The client message's headers as they are, leaving its properties alone when it
        # has none (reading its ``headers`` would give it an empty table of its own).
        headers = client_message._property("headers")
        self.headers: dict[str, Any] = {} if headers is None else headers
        self.content_type: str | None = client_message.content_type
        self.content_encoding: str | None = client_message.content_encoding
        self.accept = accept
        self._errors: list[BaseException] = []
        self.no_ack = no_ack
        self._state = ACK if no_ack else RECEIVED
        self._decoded: Any = _UNSET

        body = client_message.body
        if type(body) is not bytes:
            body = bytes(body)
        self._body: bytes = body
        method = self.headers.get(HEADER) if self.headers else None
        # (body, method, bound) while the body waits to be decompressed: see _prepare.
        self._compressed: tuple[bytes, str, int | None] | None = (
            (body, method, max_decompressed_size) if method else None
        )

    def _prepare(self) -> None:
        """Decompress the body, or note in :attr:`errors` why that failed.  Threads that
        ask at once may each decompress (the same bytes, to the same result): nobody sees
        the compressed body as the body meanwhile, since the result is stored before
        ``_compressed`` is cleared."""
        pending = self._compressed
        if pending is None:
            return
        raw, method, bound = pending
        try:
            body = decompress(raw, method, bound)
        except Exception as exc:
            if self._compressed is pending:
                self._errors.append(exc)
        else:
            self._body = body
        self._compressed = None

    @property
    def body(self) -> bytes:
        """The body as bytes, decompressed when the ``compression`` header says so (on
        first use; left as received if that failed)."""
        if self._compressed is not None:
            self._prepare()
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._compressed = None
        self._body = value

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions met while preparing the body (decompression); :meth:`decode` raises
        the first."""
        if self._compressed is not None:
            self._prepare()
        return self._errors

    @property
    def delivery_info(self) -> dict[str, Any]:
        """``consumer_tag``, ``delivery_tag``, ``redelivered``, ``exchange``,
        ``routing_key`` (``message_count`` for ``basic.get``)."""
        info = self._delivery_info
        if info is None:
            info = self._delivery_info = self.client_message.delivery_info
        return info

    @delivery_info.setter
    def delivery_info(self, value: dict[str, Any]) -> None:
        self._delivery_info = value

    @property
    def properties(self) -> dict[str, Any]:
        """The content properties that were set (``content_type``, ``headers``, ...)."""
        value = self._properties
        if value is None:
            value = self._properties = self.client_message.properties
        return value

    @properties.setter
    def properties(self, value: dict[str, Any]) -> None:
        self._properties = value

    # ------------------------------------------------------------------ decoding

    def decode(self) -> Any:
        """The decoded body (computed once, then cached).

        Raises the first of :attr:`errors` if preparing the body failed, else whatever
        :func:`~leveret.highlevel.serialization.loads` raises: ``ContentDisallowed`` (the
        content type is not accepted; nothing was decoded), ``DecodeError``,
        ``SerializerNotInstalled``.  Failures are not cached.
        """
        value = self._decoded
        if value is _UNSET:
            if self._compressed is not None:
                # A content type the consumer refuses: not decompressed (a small body may
                # expand to max_decompressed_size).
                check_accepted(self.content_type, self.accept)
            if self.errors:
                raise self.errors[0]
            value = loads(self.body, self.content_type, self.content_encoding, accept=self.accept)
            self._decoded = value
        return value

    @property
    def payload(self) -> Any:
        """The decoded body: :meth:`decode`."""
        value = self._decoded
        return self.decode() if value is _UNSET else value

    # ------------------------------------------------------------------ settlement

    @property
    def acknowledged(self) -> bool:
        """True once the message was acked, rejected or requeued (or came from a
        ``no_ack`` consumer)."""
        return self._state in ACK_STATES

    def _settle(self, new_state: str, send: Callable[[Any, int], None]) -> None:
        if self._state != RECEIVED:
            if self.no_ack:
                # The broker settled it on delivery: acking (or dropping) it is already
                # done (kombu ignores the ack too); putting it back is impossible, and
                # saying nothing would lose it silently.
                if new_state == REQUEUED:
                    raise MessageStateError(
                        "this message came from a no_ack consumer: the broker settled it on "
                        "delivery, so it cannot be requeued"
                    )
                return
            raise MessageStateError(f"Message already acknowledged with state: {self._state}")
        if self.channel is None:
            raise MessageStateError("This message does not have a receiving channel")
        tag = self.delivery_tag
        if tag is None:
            raise MessageStateError("This message has no delivery tag: it was not delivered by a broker")
        try:
            send(self.channel, tag)
        except Exception as exc:
            error = _settle_error(tag, exc)
            if error is exc:
                raise
            raise error from exc
        self._state = new_state

    def ack(self, multiple: bool = False) -> None:
        """Send ``basic.ack`` for this delivery (``multiple``: and every earlier unsettled
        delivery on the channel; their :class:`Message` objects do not learn of it).

        Raises :class:`MessageStateError` if the message was already settled or has no
        channel or delivery tag; nothing is sent then.  Does nothing for a message from a
        ``no_ack`` consumer (as kombu; the broker settled it on delivery), nor does
        :meth:`reject` without requeue; a requeue of such a message raises
        :class:`MessageStateError`: it cannot be put back.
        """
        self._settle(ACK, lambda ch, tag: ch.basic_ack(tag, multiple=multiple))

    def reject(self, requeue: bool = False) -> None:
        """Send ``basic.reject``: the broker drops the message (or dead-letters it), or
        puts it back in the queue with ``requeue=True`` (state REQUEUED).  Raises
        :class:`MessageStateError` as :meth:`ack` does."""
        self._settle(
            REQUEUED if requeue else REJECTED,
            lambda ch, tag: ch.basic_reject(tag, requeue=requeue),
        )

    def requeue(self) -> None:
        """Send ``basic.reject`` with ``requeue=True``: the broker delivers the message
        again (to this or another consumer).  Not a way to pick messages: it comes straight
        back.  Raises :class:`MessageStateError` as :meth:`ack` does."""
        self._settle(REQUEUED, lambda ch, tag: ch.basic_reject(tag, requeue=True))

    def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Send ``basic.nack`` (RabbitMQ's extension; AMQP 0-9-1 only): like :meth:`reject`
        but can cover earlier deliveries with ``multiple``.  State REQUEUED, or REJECTED
        with ``requeue=False``.  Raises :class:`MessageStateError` as :meth:`ack` does."""
        self._settle(
            REQUEUED if requeue else REJECTED,
            lambda ch, tag: ch.basic_nack(tag, multiple=multiple, requeue=requeue),
        )

    def ack_log_error(
        self, logger: logging.Logger, errors: ErrorTypes, multiple: bool = False
    ) -> bool:
        """:meth:`ack`, but an exception of the types in ``errors`` is logged at CRITICAL
        level on ``logger`` (with its traceback) instead of raised.  Returns True if the ack
        was sent."""
        try:
            self.ack(multiple=multiple)
        except errors as exc:
            logger.critical("Couldn't ack %r, reason: %r", self.delivery_tag, exc, exc_info=True)
            return False
        return True

    def reject_log_error(
        self, logger: logging.Logger, errors: ErrorTypes, requeue: bool = False
    ) -> bool:
        """:meth:`reject`, logging exceptions of the types in ``errors`` (CRITICAL) instead of
        raising them.  Returns True if the reject was sent."""
        try:
            self.reject(requeue=requeue)
        except errors as exc:
            logger.critical("Couldn't reject %r, reason: %r", self.delivery_tag, exc, exc_info=True)
            return False
        return True

    def __repr__(self) -> str:
        info = self.delivery_info
        where = ""
        if info.get("exchange") is not None or info.get("routing_key") is not None:
            where = f" exchange={info.get('exchange')!r} routing_key={info.get('routing_key')!r}"
        return (
            f"<{type(self).__name__} state={self._state} content_type={self.content_type!r} "
            f"delivery_tag={self.delivery_tag!r} body_length={len(self._body)}"
            f"{' (compressed)' if self._compressed is not None else ''}{where}>"
        )


def _settle_error(tag: int, exc: Exception) -> Exception:
    """What settling a message raises when its channel's ``basic_ack`` (or nack, reject)
    raised ``exc``.  A delivery of a recovering connection whose connection has been lost
    since raises ``ChannelClosedError``, as ``channel.basic_ack(message.delivery_tag)`` does
    (the broker has requeued it, and its redelivery is the one to settle) -- not the lost
    connection's own error, which a ``ConsumerMixin`` or a retry would take for the loss of
    the connection it is using, recovered since."""
    from ..client import ChannelClosedError
    from .recovery import LOSS_ERRORS, DeliveryTag

    if isinstance(tag, DeliveryTag) and isinstance(exc, LOSS_ERRORS) and not isinstance(exc, ChannelClosedError):
        return ChannelClosedError(
            f"delivery tag {int(tag)} came on a connection lost since ({exc}): the broker has "
            "requeued that delivery, and its redelivery is the one to settle"
        )
    return exc
