"""Exceptions of the client layer (on top of :mod:`leveret.wire.errors`)."""

from __future__ import annotations

from typing import Any

from ..wire.errors import HardError, LeveretError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "ConnectionLost",
    "AuthenticationError",
    "VersionMismatch",
    "ChannelClosedError",
    "ConnectionClosedError",
    "BlockedTimeout",
    "PublishNacked",
    "MessageDiscardedError",
    "MessageTooLargeError",
    "MessageDecodeError",
]


class ConnectionLost(LeveretError, ConnectionError):
    """The transport went away without a close handshake (EOF, reset, missed heartbeats).

    ``unconfirmed`` maps channel ids to the delivery tags of publishes the broker had not
    confirmed when the connection was lost: their fate is unknown.
    """

    def __init__(self, message: str, unconfirmed: dict[int, list[int]] | None = None) -> None:
        super().__init__(message)
        self.unconfirmed: dict[int, list[int]] = unconfirmed or {}


class AuthenticationError(HardError):
    """The broker refused the credentials (reply code 403 during the handshake) or offers
    none of the SASL mechanisms asked for."""

    reply_code = 403


class VersionMismatch(RemoteProtocolError):
    """The broker answered our protocol header with a header of its own: it does not speak
    the version we asked for.  The message names both versions."""


class ChannelClosedError(LocalProtocolError):
    """The channel is closed (by us or the broker); ``__cause__`` holds the broker's error."""


class ConnectionClosedError(LocalProtocolError):
    """The connection is closed; ``__cause__`` holds why, if it was not a normal close."""


class BlockedTimeout(LeveretError, TimeoutError):
    """The broker kept the connection blocked (``connection.blocked``) past ``blocked_timeout``."""


class PublishNacked(LeveretError):
    """The broker nacked one or more publishes in confirm mode (``delivery_tags``).

    ``returned``: returns of publishes of the same batch (the high-level
    ``Producer.flush()`` lists its ``MessageReturned`` errors there); empty otherwise."""

    def __init__(self, message: str, delivery_tags: list[int] | None = None) -> None:
        super().__init__(message)
        self.delivery_tags = delivery_tags or []
        self.returned: list[Any] = []


class MessageDiscardedError(LeveretError):
    """An incoming message (a delivery, what ``basic_get`` fetched, a return) was discarded
    unread; the subclass says why.  ``drain_events`` (or ``basic_get``) raises one per
    message, and the connection stays usable.  ``delivery_tag`` identifies it so that it
    can be rejected (to a dead-letter exchange, say; not for a ``no_ack`` consumer, whose
    message is gone already); ``channel_id`` and ``body_size`` say where and how big."""

    def __init__(self, message: str, channel_id: int, delivery_tag: int | None, body_size: int) -> None:
        super().__init__(message)
        self.channel_id = channel_id
        self.delivery_tag = delivery_tag
        self.body_size = body_size

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (multiprocessing and concurrent.futures send errors between
        # processes): the arguments __init__ takes, then every attribute (notes too).
        return (
            type(self),
            (self.args[0], self.channel_id, self.delivery_tag, self.body_size),
            self.__dict__,
        )


class MessageTooLargeError(MessageDiscardedError):
    """An incoming message was bigger than ``max_body_size`` and was discarded unbuffered."""

    reply_code = 311


class MessageDecodeError(MessageDiscardedError):
    """An incoming message's properties did not decode (a header table nested deeper than
    leveret reads, an unknown field type...) and it was discarded unread.

    The broker passes what a publisher sent through unread, so this is one bad message, not
    a broken connection.  ``__cause__`` is the :class:`~leveret.wire.errors.DecodeError`
    saying what was wrong."""

    reply_code = 502
