"""Events the sans-IO core hands out from :meth:`SansIOConnection.receive_data`.

Each event is a small frozen, slotted dataclass: something that happened on the wire that the
driver (or the library built on the core) has to act on.  Replies the protocol requires and
nobody has to decide about (``close-ok``, ``flow-ok``, heartbeats) are queued by the core
itself; the events only tell you they happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..wire.errors import AMQPError

__all__ = [
    "Event",
    "ConnectionOpened",
    "ConnectionClosed",
    "ConnectionBlocked",
    "ConnectionUnblocked",
    "ChannelOpened",
    "ChannelClosed",
    "MethodReceived",
    "MessageReceived",
    "MessageReturned",
    "PublishConfirmed",
    "ConsumerCancelled",
    "FlowChanged",
    "MessageTooLarge",
    "MessageUndecodable",
]


class Event:
    """Base class of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectionOpened(Event):
    """``connection.open-ok`` arrived: the connection is usable with these tuned values."""

    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int
    version: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The close handshake finished.

    ``error`` is ``None`` for a normal close (reply code 200) and otherwise the typed
    exception for the code the closing side gave; ``by_peer`` says who started it.  When
    both sides sent ``connection.close`` at once, ``by_peer`` is ``False`` and ``error``
    is the broker's, unless its reply code was 200 (then it is ours, if any).
    """

    error: AMQPError | None
    by_peer: bool
    #: Channel id -> delivery tags of publishes never confirmed: their fate is unknown.
    unconfirmed: Mapping[int, Sequence[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectionBlocked(Event):
    """``connection.blocked``: the broker stopped reading from publishers (e.g. a memory alarm)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionUnblocked(Event):
    """``connection.unblocked``: the broker reads from this connection again."""


@dataclass(frozen=True, slots=True)
class ChannelOpened(Event):
    """``channel.open-ok`` arrived for ``channel_id``."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelClosed(Event):
    """The channel is closed and its id free again.

    ``error`` is the typed exception for the peer's reply code (``NotFound``, ...) when the
    broker closed it, else ``None``.
    """

    channel_id: int
    error: AMQPError | None
    by_peer: bool
    #: Delivery tags of publishes the broker never confirmed on this channel: their fate is
    #: unknown (a broker that closes a channel does not confirm what was in flight).
    unconfirmed: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class MethodReceived(Event):
    """A method without content, e.g. the synchronous reply to a request (``declare-ok``)."""

    channel_id: int
    method: Any


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A complete content: ``basic.deliver`` or ``basic.get-ok`` with its properties and body."""

    channel_id: int
    method: Any
    properties: Any
    body: bytes


@dataclass(frozen=True, slots=True)
class MessageReturned(Event):
    """``basic.return``: the broker could not route a ``mandatory`` publish.

    In confirm mode ``delivery_tag`` is the tag of the publish it returns, otherwise
    ``None``.  In confirm mode the core holds the return until the broker's confirm that
    settles that publish (RabbitMQ sends it right after the return, though not necessarily
    in publish order), pairs it by exchange, routing key, body and properties with a publish
    that confirm settles, and emits it just before that :class:`PublishConfirmed`; a return
    still held when its channel or connection closes comes out with ``delivery_tag=None``.
    """

    channel_id: int
    method: Any
    properties: Any
    body: bytes
    delivery_tag: int | None


@dataclass(frozen=True, slots=True)
class PublishConfirmed(Event):
    """``basic.ack`` / ``basic.nack`` from the broker in confirm mode.

    ``delivery_tags`` lists every publish this confirmation settles (``multiple`` expanded,
    tags already settled left out); ``ack`` is False for a nack.
    """

    channel_id: int
    delivery_tags: Sequence[int]
    ack: bool


@dataclass(frozen=True, slots=True)
class ConsumerCancelled(Event):
    """The broker cancelled a consumer (``basic.cancel`` from the server: queue deleted, ...)."""

    channel_id: int
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class FlowChanged(Event):
    """``channel.flow`` from the broker; the core has already answered with ``flow-ok``."""

    channel_id: int
    active: bool


@dataclass(frozen=True, slots=True)
class MessageTooLarge(Event):
    """A content was larger than ``max_body_size``; its body was discarded unbuffered.

    ``method`` is the ``basic.deliver``/``get-ok``/``return`` that announced it, so the caller
    can reject it by ``delivery_tag``.
    """

    channel_id: int
    method: Any
    properties: Any
    body_size: int


@dataclass(frozen=True, slots=True)
class MessageUndecodable(Event):
    """A content whose properties did not decode (a header table nested deeper than
    :data:`~leveret.wire.fields.MAX_DEPTH`, an unknown type letter...); its body was
    discarded unbuffered and the connection carries on.

    The broker passes a publisher's properties through unread, so one bad publish is one bad
    message, not a broken connection.  ``method`` is the ``basic.deliver``/``get-ok``/
    ``return`` that announced it, so the caller can reject it by ``delivery_tag``;
    ``error`` is the :class:`~leveret.wire.errors.DecodeError`.
    """

    channel_id: int
    method: Any
    body_size: int
    error: Any


# The two events made once per message (a delivery, a publisher confirm), built without
# the dataclass __init__, which sets each field of a frozen dataclass through
# object.__setattr__ after a call through type(): the class call takes about 1.6 times the
# instructions of these helpers.  They make exactly what the class call makes (a test
# compares them).
_new = object.__new__
_set_mr_channel_id = MessageReceived.__dict__["channel_id"].__set__
_set_mr_method = MessageReceived.__dict__["method"].__set__
_set_mr_properties = MessageReceived.__dict__["properties"].__set__
_set_mr_body = MessageReceived.__dict__["body"].__set__
_set_pc_channel_id = PublishConfirmed.__dict__["channel_id"].__set__
_set_pc_delivery_tags = PublishConfirmed.__dict__["delivery_tags"].__set__
_set_pc_ack = PublishConfirmed.__dict__["ack"].__set__


def _message_received(channel_id: int, method: Any, properties: Any, body: bytes) -> MessageReceived:
    """``MessageReceived(channel_id, method, properties, body)``, faster."""
    event = _new(MessageReceived)
    _set_mr_channel_id(event, channel_id)
    _set_mr_method(event, method)
    _set_mr_properties(event, properties)
    _set_mr_body(event, body)
    return event


def _publish_confirmed(channel_id: int, delivery_tags: Sequence[int], ack: bool) -> PublishConfirmed:
    """``PublishConfirmed(channel_id, delivery_tags, ack)``, faster."""
    event = _new(PublishConfirmed)
    _set_pc_channel_id(event, channel_id)
    _set_pc_delivery_tags(event, delivery_tags)
    _set_pc_ack(event, ack)
    return event
