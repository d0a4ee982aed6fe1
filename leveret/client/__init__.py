"""The client layer: a sans-IO AMQP connection core and the drivers that move its bytes.

* :class:`SansIOConnection` (:mod:`.core`): every protocol rule of a client connection --
  negotiation, SASL, tuning, heartbeats, channels, content assembly, publisher confirms,
  close handshakes -- with no I/O.  Other libraries can drive it with their own I/O.
* :class:`Connection` / :class:`Channel` (:mod:`.blocking`): the blocking socket driver, with
  py-amqplib's method names (``queue_declare``, ``basic_publish``, ``basic_consume``...).
* :class:`AsyncConnection` / :class:`AsyncChannel` (:mod:`.aio`): the same API for asyncio,
  on the same core (imported on first use).
* :class:`Message` (its ``channel`` typed :class:`MessageChannel`), :func:`parse_url`,
  the events (:mod:`.events`) and the client's exceptions (:mod:`.errors`; the
  per-reply-code ones come from :mod:`leveret.wire.replies`, under their bases
  :class:`SoftError`, which closes a channel, and :class:`HardError`, which closes the
  connection).  Coming from py-amqp: see docs/porting.md.
"""

from typing import TYPE_CHECKING

from ..wire.errors import AMQPError, HardError, LeveretError, SoftError
from ..wire.replies import *  # noqa: F401,F403  (NotFound, AccessRefused, ...)
from ..wire.replies import __all__ as _replies_all
from . import events
from .blocking import Channel, Connection, QueueDeclareOk
from .core import ChannelState, ConnState, SansIOConnection
from .errors import (
    AuthenticationError,
    BlockedTimeout,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLost,
    MessageDecodeError,
    MessageDiscardedError,
    MessageTooLargeError,
    PublishNacked,
    VersionMismatch,
)
from .message import Message, MessageChannel
from .url import ConnectionParameters, URLError, parse_url

if TYPE_CHECKING:  # pragma: no cover  (imported on first use at run time: see __getattr__)
    from .aio import AsyncChannel, AsyncConnection  # noqa: F401

__all__ = [
    "Connection",
    "Channel",
    "AsyncConnection",
    "AsyncChannel",
    "QueueDeclareOk",
    "Message",
    "MessageChannel",
    "SansIOConnection",
    "ConnState",
    "ChannelState",
    "events",
    "ConnectionParameters",
    "parse_url",
    "URLError",
    "AuthenticationError",
    "BlockedTimeout",
    "ChannelClosedError",
    "ConnectionClosedError",
    "ConnectionLost",
    "MessageDiscardedError",
    "MessageTooLargeError",
    "MessageDecodeError",
    "PublishNacked",
    "VersionMismatch",
    # the bases: every leveret error; the broker's errors; those that close a channel
    # (py-amqp's ChannelError), those that close the connection
    "LeveretError",
    "AMQPError",
    "SoftError",
    "HardError",
    *_replies_all,
]


def __getattr__(name: str) -> object:
    # The asyncio driver imports asyncio, which blocking users need not pay for.
    if name in ("AsyncConnection", "AsyncChannel"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # AsyncConnection and AsyncChannel, imported on first use, for dir() and completion.
    return sorted({*globals(), *__all__})
