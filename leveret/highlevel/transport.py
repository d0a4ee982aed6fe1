"""What a *transport* connection and channel offer: the contract of the high-level layer.

A high-level :class:`~leveret.highlevel.Connection` hands out one of several classes:
the blocking client's :class:`leveret.client.Connection` / :class:`leveret.client.Channel`
(``amqp://``), the memory transport's
:class:`~leveret.highlevel.memory.MemoryConnection` /
:class:`~leveret.highlevel.memory.MemoryChannel` (``memory://``), and, with
``autorecover=True``, a :class:`~leveret.highlevel.recovery.RecoveringChannel` wrapping
either channel.  :class:`TransportConnection` and :class:`TransportChannel` say what all
of them have in common, with the real signatures: what the high-level layer relies on,
and what code written against ``Connection.channel()`` or ``Connection.default_channel``
may use whatever the URL.  Anything else (``leveret.client.Channel.unconfirmed``, the
memory connection's ``broker``...) belongs to one transport: narrow the type first.

These are :class:`typing.Protocol` classes for type checkers: nothing derives from them,
and they are not meant for ``isinstance`` (the type checker proves, in
``tests/test_typing.py``, that each transport class conforms).  The method docstrings
are short; each transport's own says what goes on the wire.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol, overload

from ..client import Message, QueueDeclareOk
from ..wire.errors import AMQPError

__all__ = ["TransportChannel", "TransportConnection"]


class TransportChannel(Protocol):
    """A channel of any transport, with py-amqplib's method names (see
    :class:`leveret.client.Channel` for what each sends and raises).

    Synchronous calls wait at most ``timeout`` seconds for the broker's reply (default:
    the connection's ``rpc_timeout``); ``nowait=True`` sends the request without waiting.
    """

    @property
    def channel_id(self) -> int: ...

    @property
    def connection(self) -> TransportConnection: ...

    @property
    def is_open(self) -> bool:
        """True until the channel is closed (by :meth:`close`, by the broker, or with its
        connection)."""
        ...

    @property
    def close_error(self) -> AMQPError | None:
        """The broker's error that closed this channel, if that is what closed it."""
        ...

    def mark_error_reported(self) -> None:
        """:attr:`close_error` was raised to the application elsewhere: do not raise it
        again (later calls raise ``ChannelClosedError``)."""
        ...

    #: Called with each message the broker returned (``basic.return``); when None they
    #: are kept in :attr:`returned`.
    on_return: Callable[[Message], Any] | None

    @property
    def returned(self) -> list[Message]: ...

    def __enter__(self) -> TransportChannel: ...

    def __exit__(self, *exc_info: Any) -> None: ...

    def close(self, reply_code: int = 200, reply_text: str = "", timeout: float | None = None) -> None: ...

    # -- exchanges

    def exchange_declare(
        self, exchange: str, type: str = "direct", passive: bool = False, durable: bool = False,
        auto_delete: bool = False, internal: bool = False, nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...

    def exchange_delete(
        self, exchange: str, if_unused: bool = False, nowait: bool = False, timeout: float | None = None,
    ) -> None: ...

    def exchange_bind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...

    def exchange_unbind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...

    # -- queues: a result, or None only with nowait=True

    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, nowait: Literal[False] = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> QueueDeclareOk: ...
    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, *, nowait: Literal[True],
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...
    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> QueueDeclareOk | None: ...

    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "",
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...

    @overload
    def queue_purge(self, queue: str = "", nowait: Literal[False] = False, timeout: float | None = None) -> int: ...
    @overload
    def queue_purge(self, queue: str = "", *, nowait: Literal[True], timeout: float | None = None) -> None: ...
    @overload
    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None: ...

    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: Literal[False] = False, timeout: float | None = None,
    ) -> int: ...
    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False, *,
        nowait: Literal[True], timeout: float | None = None,
    ) -> None: ...
    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> int | None: ...

    # -- basic

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
        timeout: float | None = None, **kwargs: Any,
    ) -> None: ...

    def basic_publish(
        self, msg: Message | bytes | str, exchange: str = "", routing_key: str = "",
        mandatory: bool = False, immediate: bool = False,
    ) -> int | None:
        """Returns the delivery tag in confirm mode, else None."""
        ...

    def publish_confirmed(
        self, msg: Message | bytes | str, exchange: str = "", routing_key: str = "",
        mandatory: bool = False, timeout: float | None = None,
    ) -> bool: ...

    def basic_get(self, queue: str = "", no_ack: bool = False, timeout: float | None = None) -> Message | None: ...

    def basic_consume(
        self, queue: str = "", consumer_tag: str = "", no_local: bool = False, no_ack: bool = False,
        exclusive: bool = False, nowait: bool = False, callback: Callable[[Message], Any] | None = None,
        arguments: dict[str, Any] | None = None, on_cancel: Callable[[str], Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Returns the consumer tag; ``callback(message)`` runs in ``drain_events``."""
        ...

    def basic_cancel(self, consumer_tag: str, nowait: bool = False, timeout: float | None = None) -> None: ...

    def basic_ack(self, delivery_tag: int | None, multiple: bool = False) -> None: ...

    def basic_nack(self, delivery_tag: int | None, multiple: bool = False, requeue: bool = True) -> None: ...

    def basic_reject(self, delivery_tag: int | None, requeue: bool = True) -> None: ...

    def basic_recover(self, requeue: bool = False, timeout: float | None = None) -> None: ...

    def basic_recover_async(self, requeue: bool = False) -> None: ...

    # -- confirms, transactions, flow

    def confirm_select(self, nowait: bool = False, timeout: float | None = None) -> None: ...

    def wait_for_confirms(self, timeout: float | None = None) -> bool: ...

    def tx_select(self, timeout: float | None = None) -> None: ...

    def tx_commit(self, timeout: float | None = None) -> None: ...

    def tx_rollback(self, timeout: float | None = None) -> None: ...

    def flow(self, active: bool, timeout: float | None = None) -> bool: ...


class TransportConnection(Protocol):
    """A transport connection: :class:`leveret.client.Connection` or the memory
    transport's :class:`~leveret.highlevel.memory.MemoryConnection`."""

    server_properties: dict[str, Any]
    #: Called with the reason when the broker blocks publishers (``connection.blocked``).
    on_blocked: Callable[[str], Any] | None
    #: Called when it unblocks them.
    on_unblocked: Callable[[], Any] | None

    @property
    def is_open(self) -> bool: ...

    @property
    def blocked(self) -> str | None:
        """Why the broker blocks publishers (``connection.blocked``), or None."""
        ...

    @property
    def heartbeat(self) -> int: ...

    @property
    def protocol(self) -> str: ...

    @property
    def channel_max(self) -> int: ...

    @property
    def frame_max(self) -> int: ...

    def connect(self) -> TransportConnection: ...

    def __enter__(self) -> TransportConnection: ...

    def __exit__(self, *exc_info: Any) -> None: ...

    def channel(self, channel_id: int | None = None) -> TransportChannel: ...

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds: ``TimeoutError``) for deliveries, returns and
        cancels, and run their callbacks."""
        ...

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown", timeout: float | None = None) -> None: ...

    def update_secret(self, new_secret: str | bytes, reason: str = "", timeout: float | None = None) -> None: ...
