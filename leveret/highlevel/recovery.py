"""Automatic recovery: topology recording and replay after a reconnect.

Theory of operation
-------------------
A high-level :class:`~leveret.highlevel.Connection` made with ``autorecover=True`` hands out
:class:`RecoveringChannel` objects instead of bare transport channels (from
``connection.channel()`` and ``connection.default_channel``, and so to every entity,
:class:`~leveret.highlevel.Producer` and :class:`~leveret.highlevel.Consumer` given the
connection).  A recovering channel has the transport channel's API and forwards every call to
the transport channel it currently wraps; on the way it records, in the connection's
:class:`Topology`, what the broker accepted:

* ``exchange.declare`` (not passive), ``queue.declare`` (not passive; with its arguments,
  and whether the broker chose the name), ``queue.bind`` and ``exchange.bind``,
  ``basic.consume`` (queue, tag, ``no_ack``, ``exclusive``, callback, cancel callback,
  arguments, and the channel's ``basic.qos`` in force when it was sent), and per channel
  ``basic.qos``, ``confirm.select`` and ``tx.select``;
* and it forgets what goes away: ``exchange.delete`` / ``queue.delete`` (with their
  bindings and consumers), ``queue.unbind`` / ``exchange.unbind``, ``basic.cancel`` (sent,
  or received from the broker), a closed channel's consumers; an ``auto_delete`` queue when
  its last recorded consumer leaves, an ``auto_delete`` exchange when its last recorded
  binding (as source) goes.

When the connection is lost -- a call raises :class:`~leveret.client.ConnectionLost`,
:class:`~leveret.client.ConnectionForced` (the broker's 320), another recoverable hard error,
or ``OSError``, and the transport connection is indeed dead -- :func:`recover` reconnects with
back-off (``interval_start``, ``+interval_step`` per retry, at most ``interval_max``;
``max_retries`` None = for ever) and :func:`replay` re-creates, on the new transport
connection and in this order: the exchanges, the queues, the bindings, then for every
recovering channel still in use a new transport channel with the same confirm/tx mode and
qos and the same consumers (same tags, same callbacks).  Queues whose name the broker chose
are declared anew and get a new name (unless a non-exclusive one still exists); their
bindings and consumers follow, :class:`~leveret.highlevel.Queue` objects registered with
:meth:`Topology.track_queue` (and every :class:`~leveret.highlevel.Consumer`'s queues) are
renamed, and rename listeners hear ``(old, new)``.  The recovering channel objects stay the
same, so producers, consumers and entities bound to them carry on.

A channel the broker closes with a channel error (``NotFound`` for a publish to a missing
exchange, ``PreconditionFailed``...) is not a loss: the connection is fine, and reopening
that channel behind the application's back would hide that its consumers are gone.  It
stays closed (:attr:`RecoveringChannel.closed_by_broker`) and is dropped from the record;
its next call raises that error (unless one raised it already), later ones
``ChannelClosedError``.  A :class:`~leveret.highlevel.Producer` on it moves
to the connection's default channel at its next publish, and
:meth:`~leveret.highlevel.Connection.drain_events` reports the error once to consumers on it.

What replay cannot re-create is reported, never dropped silently: a declaration the broker
refuses is logged and listed in ``connection.recovery_events`` (``declaration_failed``); a
consumer the broker refuses (its queue is gone) is dropped from the record, listed
(``consumer_failed``) and its cancel callback is called as if the broker had cancelled it;
the refusal closed the transport channel, so the other consumers of that channel are
registered again on a fresh one, and carry on.  What the old connection still holds --
an exclusive queue (``RESOURCE_LOCKED``), an exclusive consumer (``ACCESS_REFUSED``, "in
exclusive use") -- until the broker notices it is dead is no refusal: the recovery tries
again after its back-off.

Publishes are the producer's business (:class:`~leveret.highlevel.Producer` republishes what
the broker had not confirmed: at-least-once); a raw ``basic_publish``, ``basic_get``,
``queue_purge``, acknowledgement ... that fails with the connection is not repeated: the
connection is recovered and the error is raised, since its fate is unknown.  When another
call made the recovery, what was pending on the lost channel is not reported as settled:
``wait_for_confirms`` raises :class:`~leveret.client.ConnectionLost` (``unconfirmed``: the
lost channel's tags) for publishes sent before the loss that the broker had not confirmed,
and ``tx_commit`` of a transaction that published or acknowledged before the loss rolls
back and raises it too (nothing of it was committed).  Declarations,
bindings, ``basic.qos``, ``basic.consume`` and ``basic.cancel`` are idempotent enough to be
repeated once after a recovery, and are.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, overload

from ..client import (
    AccessRefused,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionForced,
    ConnectionLost,
    InternalError,
    Message,
    NotFound,
    QueueDeclareOk,
    ResourceError,
    ResourceLocked,
)
from ..wire.errors import AMQPError, SoftError
from .entity import _freeze
from .exceptions import OperationalError, RecoveryPaused

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "Topology",
    "RecoveringChannel",
    "RecoveryEvent",
    "RecordedExchange",
    "RecordedQueue",
    "RecordedBinding",
    "RecordedConsumer",
    "recover",
    "replay",
    "recovering_channel",
    "DeliveryTag",
    "LOSS_ERRORS",
    "DEFAULT_RECOVERY_POLICY",
]

log = logging.getLogger("leveret.highlevel.recovery")

#: What a call may raise when the connection went away (whether it did is then checked on
#: the transport connection: a ``TimeoutError`` or a refused channel on a live connection is
#: not a loss).
LOSS_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLost, ConnectionForced, InternalError, ResourceError, ConnectionClosedError,
    ChannelClosedError, OSError,
)

#: The back-off of a recovery unless ``Connection(recovery_policy=...)`` says otherwise:
#: the first attempt at once, then 1 s, 2 s, ... at most 10 s apart, for ever.
DEFAULT_RECOVERY_POLICY: dict[str, Any] = {
    "max_retries": None,
    "interval_start": 1.0,
    "interval_step": 1.0,
    "interval_max": 10.0,
    "timeout": None,
}

# How many generations of a channel keep their "unsettled publishes" record (for producers
# that flush long after a recovery).
_KEEP_GENERATIONS = 64
_MAX_EVENTS = 10000


# ---------------------------------------------------------------------------------- records


class DeliveryTag(int):
    """A delivery tag as a :class:`RecoveringChannel` hands it out: the broker's number,
    and in :attr:`channel` the transport channel that numbered it.

    Each transport channel numbers its deliveries from 1, so after a recovery the number
    alone names another delivery of the new channel.  :meth:`RecoveringChannel.basic_ack`,
    ``basic_nack`` and ``basic_reject`` refuse a ``DeliveryTag`` of an earlier transport
    channel, instead of settling whichever delivery has that number now.  A plain ``int``
    (``int(tag)``, or a number kept elsewhere) carries no channel and goes out as it is.
    """

    channel: Any

    def __new__(cls, value: int, channel: Any) -> DeliveryTag:
        self = super().__new__(cls, value)
        self.channel = channel
        return self

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        # A copy or a pickle is the plain number: the transport channel stays behind.
        return int, (int(self),)


@dataclasses.dataclass
class RecordedExchange:
    """An ``exchange.declare`` the broker accepted."""

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any] | None


@dataclasses.dataclass
class RecordedQueue:
    """A ``queue.declare`` the broker accepted; ``server_named`` when the broker chose the
    name (it chooses again on recovery)."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any] | None
    server_named: bool = False


@dataclasses.dataclass(frozen=True)
class RecordedBinding:
    """A ``queue.bind`` (``kind="queue"``) or ``exchange.bind`` (``kind="exchange"``) of
    ``destination`` to ``source``."""

    kind: str
    destination: str
    source: str
    routing_key: str
    arguments: dict[str, Any] | None = dataclasses.field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.destination, self.source, self.routing_key, _freeze(self.arguments))


@dataclasses.dataclass
class RecordedConsumer:
    """A ``basic.consume`` the broker accepted, with the ``basic.qos`` (prefetch size,
    count) its channel had when it was sent."""

    queue: str
    tag: str
    no_ack: bool
    exclusive: bool
    no_local: bool
    callback: Callable[[Any], Any] | None
    on_cancel: Callable[[str], Any] | None
    arguments: dict[str, Any] | None
    qos: tuple[int, int] = (0, 0)


@dataclasses.dataclass(frozen=True)
class RecoveryEvent:
    """One entry of ``connection.recovery_events``.

    ``kind`` is one of ``connection_lost``, ``recovery_started``, ``attempt_failed``
    (``detail``: the interval before the next attempt), ``recovery_succeeded`` (``detail``:
    the attempt's duration in seconds), ``recovery_failed``, ``queue_renamed`` (``detail``:
    ``(old, new)``), ``declaration_failed`` (``detail``: the record), ``consumer_failed``
    (``detail``: the consumer record), ``republished`` (``detail``: how many publishes a
    producer sent again), ``publishes_lost`` (``detail``: how many unconfirmed publishes a
    producer told not to republish reported as lost).  ``time`` is ``time.time()``.
    """

    kind: str
    error: BaseException | None = None
    detail: Any = None
    time: float = dataclasses.field(default_factory=time.time)




# ---------------------------------------------------------------------------------- topology


class Topology:
    """What a connection declared, bound and consumed, in the order it happened, minus what
    was deleted, unbound, cancelled or auto-deleted since.

    ``exchanges`` and ``queues`` map names to records, ``bindings`` binding keys to
    :class:`RecordedBinding`, ``channels`` the recovering channels in use (each holds its
    consumers in ``channel.consumers``).  Updated by :class:`RecoveringChannel`; read by
    :func:`replay`.  Safe to use from several threads.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.exchanges: dict[str, RecordedExchange] = {}
        self.queues: dict[str, RecordedQueue] = {}
        self.bindings: dict[tuple[Any, ...], RecordedBinding] = {}
        self.channels: dict[int, RecoveringChannel] = {}
        self._queue_refs: list[weakref.ref[Any]] = []
        self._listeners: list[Callable[[], Callable[[str, str], Any] | None]] = []

    def __repr__(self) -> str:
        return (
            f"<Topology: {len(self.exchanges)} exchanges, {len(self.queues)} queues, "
            f"{len(self.bindings)} bindings, {sum(1 for _ in self.consumers())} consumers>"
        )

    # -- reading

    def consumers(self) -> Iterator[RecordedConsumer]:
        """Every recorded consumer, channel by channel."""
        with self._lock:
            channels = list(self.channels.values())
        for ch in channels:
            yield from list(ch.consumers.values())

    def consumers_of(self, queue: str) -> list[RecordedConsumer]:
        return [c for c in self.consumers() if c.queue == queue]

    # -- exchanges

    def record_exchange(self, record: RecordedExchange) -> None:
        with self._lock:
            self.exchanges[record.name] = record  # a re-declare keeps its place

    def forget_exchange(self, name: str) -> None:
        """The exchange was deleted: forget it and its bindings (as source or destination);
        auto-delete exchanges left without bindings go too."""
        with self._lock:
            self.exchanges.pop(name, None)
            gone = [
                b for b in self.bindings.values()
                if b.source == name or (b.kind == "exchange" and b.destination == name)
            ]
            for b in gone:
                self.bindings.pop(b.key, None)
            for source in {b.source for b in gone} - {name}:
                self._maybe_auto_delete_exchange(source)

    def _maybe_auto_delete_exchange(self, name: str) -> None:
        record = self.exchanges.get(name)
        if record is not None and record.auto_delete and not any(b.source == name for b in self.bindings.values()):
            self.forget_exchange(name)

    # -- queues

    def record_queue(self, record: RecordedQueue) -> None:
        with self._lock:
            old = self.queues.get(record.name)
            if old is not None and old.server_named:
                record.server_named = True  # a re-declare by name of a server-named queue
            self.queues[record.name] = record

    def forget_queue(self, name: str) -> None:
        """The queue was deleted (or auto-deleted): forget it, its bindings and consumers;
        auto-delete exchanges left without bindings go too."""
        with self._lock:
            self.queues.pop(name, None)
            gone = [b for b in self.bindings.values() if b.kind == "queue" and b.destination == name]
            for b in gone:
                self.bindings.pop(b.key, None)
            for ch in list(self.channels.values()):
                for tag, consumer in list(ch.consumers.items()):
                    if consumer.queue == name:
                        ch.consumers.pop(tag, None)
            for source in {b.source for b in gone}:
                self._maybe_auto_delete_exchange(source)

    def consumer_gone(self, queue: str) -> None:
        """A consumer of ``queue`` was cancelled: an auto-delete queue left without recorded
        consumers is deleted by the broker, so it is forgotten."""
        with self._lock:
            record = self.queues.get(queue)
            if record is not None and record.auto_delete and not self.consumers_of(queue):
                self.forget_queue(queue)

    # -- bindings

    def record_binding(self, binding: RecordedBinding) -> None:
        with self._lock:
            self.bindings[binding.key] = binding

    def forget_binding(self, binding: RecordedBinding) -> None:
        """Unbound: forget the exact binding, or -- unbinding without arguments -- every
        binding of that destination, source and routing key."""
        with self._lock:
            if self.bindings.pop(binding.key, None) is None and not binding.arguments:
                for key, b in list(self.bindings.items()):
                    if (b.kind, b.destination, b.source, b.routing_key) == (
                        binding.kind, binding.destination, binding.source, binding.routing_key,
                    ):
                        self.bindings.pop(key, None)
            self._maybe_auto_delete_exchange(binding.source)

    # -- renames

    def track_queue(self, queue: Any) -> None:
        """Have ``queue`` (a :class:`~leveret.highlevel.Queue`, held weakly) renamed when its
        server-named queue gets a new name on recovery."""
        with self._lock:
            self._queue_refs = [r for r in self._queue_refs if r() is not None]
            if not any(r() is queue for r in self._queue_refs):
                self._queue_refs.append(weakref.ref(queue))

    def add_rename_listener(self, listener: Callable[[str, str], Any], weak: bool = False) -> None:
        """Call ``listener(old_name, new_name)`` when a server-named queue is renamed on
        recovery (``weak``: hold a bound method weakly)."""
        ref: Callable[[], Callable[[str, str], Any] | None]
        if weak and hasattr(listener, "__self__"):
            ref = weakref.WeakMethod(listener)
        else:
            ref = lambda: listener  # noqa: E731
        with self._lock:
            # Weak ones whose object is gone are dropped here: a Consumer made per message
            # adds one, and renames that would drop them may never come.
            self._listeners = [r for r in self._listeners if r() is not None]
            self._listeners.append(ref)

    def rename_queue(self, old: str, new: str) -> None:
        """The broker named the re-declared queue ``new``: move its record, bindings and
        consumers, rename tracked :class:`~leveret.highlevel.Queue` objects, tell the
        listeners."""
        with self._lock:
            if old == new:
                return
            self.queues = {
                (new if name == old else name): (dataclasses.replace(rec, name=new) if name == old else rec)
                for name, rec in self.queues.items()
            }
            bindings: dict[tuple[Any, ...], RecordedBinding] = {}
            for b in self.bindings.values():
                if b.kind == "queue" and b.destination == old:
                    b = dataclasses.replace(b, destination=new)
                bindings[b.key] = b
            self.bindings = bindings
            for ch in self.channels.values():
                for consumer in ch.consumers.values():
                    if consumer.queue == old:
                        consumer.queue = new
                if ch._last_queue == old:
                    ch._last_queue = new
            refs = [r for r in self._queue_refs if r() is not None]
            self._queue_refs = refs
            listeners = list(self._listeners)
        for ref in refs:
            q = ref()
            if q is not None and getattr(q, "name", None) == old:
                q.name = new
        dead = []
        for get in listeners:
            fn = get()
            if fn is None:
                dead.append(get)
            else:
                fn(old, new)
        if dead:
            with self._lock:
                self._listeners = [g for g in self._listeners if g not in dead]

    # -- channels

    def add_channel(self, channel: RecoveringChannel) -> None:
        with self._lock:
            self.channels[id(channel)] = channel

    def remove_channel(self, channel: RecoveringChannel) -> None:
        """The channel closed: its consumers are gone (auto-delete queues with them)."""
        with self._lock:
            self.channels.pop(id(channel), None)
            queues = {c.queue for c in channel.consumers.values()}
            channel.consumers.clear()
            for queue in queues:
                self.consumer_gone(queue)

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget everything (it was the parent's), with a new lock (a
        thread of the parent may have held the old one at the fork)."""
        self._lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        """Forget everything (the connection was released)."""
        with self._lock:
            self.exchanges.clear()
            self.queues.clear()
            self.bindings.clear()
            channels = list(self.channels.values())
            self.channels.clear()
        for ch in channels:
            ch._closed = True
            ch.consumers.clear()


# ---------------------------------------------------------------------------------- unsettled


def unsettled_tags(channel: Any) -> set[int] | None:
    """Delivery tags of the publishes on a dead transport channel whose confirm never came
    (or that the broker nacked): their fate is unknown.  None when that cannot be told.

    The client layer has no public accessor for this yet, so it is read from what the
    blocking client keeps: the ``unconfirmed`` of the :class:`ConnectionLost` the transport
    failed with (EOF, reset, missed heartbeats), and the tags a channel closed by the broker's
    ``connection.close`` kept (``_lost_tags``); nacks are in ``_nacked``.
    """
    tags: set[int] = set()
    known = False
    conn = getattr(channel, "connection", None)
    error = getattr(conn, "_error", None)
    cid = getattr(channel, "channel_id", None)
    if isinstance(error, ConnectionLost):
        tags.update(error.unconfirmed.get(cid, ()) if cid is not None else ())
        known = True
    lost = getattr(channel, "_lost_tags", None)
    if getattr(channel, "_closed", False) and isinstance(lost, list):
        tags.update(lost)
        known = True
    if not known:
        return None
    tags.update(getattr(channel, "_nacked", None) or ())
    return tags


def _closed_by_channel_error(channel: Any) -> bool:
    """Whether the broker closed this transport channel with a channel-level error (its
    consumers are gone for good: it is not recovered)."""
    return isinstance(getattr(channel, "close_error", None), SoftError)


# ---------------------------------------------------------------------------------- channel


class RecoveringChannel:
    """A channel of an autorecovering connection: the transport channel's API, recorded in
    the connection's :class:`Topology` and moved to a new transport channel on recovery.

    Attributes other than the ones here are read from the current transport channel
    (:attr:`transport_channel`) at run time; type checkers do not see them (use
    :attr:`transport_channel`, narrowed to the transport's class).  ``generation`` counts the transport connections: it
    changes when the channel is moved.  Deliveries reach the callbacks as messages of the
    transport channel they came on, their tags :class:`DeliveryTag` objects.  Acknowledge
    them through the message (``message.ack()``) or with their tag
    (``channel.basic_ack(message.delivery_tag)``): either raises for a delivery of a
    previous generation (the broker redelivers that message) rather than settle the
    delivery that has the same number on the new transport channel.
    """

    recovers = True

    def __init__(self, client: Connection, channel: Any) -> None:
        self.client = client
        self._channel = channel
        self.generation: int = client.recovery_generation
        self._closed = False
        self._failed = False
        self._confirm = False
        self._tx = False
        self._qos: tuple[int, int] = (0, 0)
        self._global_qos: tuple[int, int] | None = None
        self._last_queue = ""
        self.consumers: dict[str, RecordedConsumer] = {}
        self._on_return: Callable[[Any], Any] | None = None
        #: Returned messages, when ``on_return`` is None.
        self.returned: list[Any] = []
        self._unsettled: dict[int, set[int] | None] = {}
        # Generations in which publishes went out through this channel in confirm mode that
        # no wait_for_confirms has settled yet (-> the transport channel's id then), and the
        # generation of the first publish or acknowledgement of the open transaction.
        self._publish_gens: dict[int, int] = {}
        self._tx_gen: int | None = None
        channel.on_return = self._forward_return
        client.topology.add_channel(self)

    def __repr__(self) -> str:
        state = "closed" if not self.is_open else "open"
        return f"<RecoveringChannel {self.channel_id} gen {self.generation} {state} -> {self._channel!r}>"

    if not TYPE_CHECKING:
        # At run time only: type checkers see the members written out here, so that
        # RecoveringChannel is checked against TransportChannel (and a misspelt name is an
        # error) rather than taken for any type.  What is reached this way belongs to one
        # transport (leveret.client.Channel's unconfirmed, nacked, access_request) and is
        # not recovery-aware: its delivery tags are the current transport channel's.
        def __getattr__(self, name: str) -> Any:
            if name == "_channel" or name.startswith("__"):
                raise AttributeError(name)
            return getattr(self._channel, name)

    def __enter__(self) -> RecoveringChannel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- state

    @property
    def topology(self) -> Topology:
        return self.client.topology

    @property
    def transport_channel(self) -> Any:
        """The transport channel in use now."""
        return self._channel

    @property
    def channel_id(self) -> int:
        return int(self._channel.channel_id)

    @property
    def connection(self) -> Any:
        """The transport connection of the current transport channel."""
        return self._channel.connection

    @property
    def on_return(self) -> Callable[[Any], Any] | None:
        return self._on_return

    @on_return.setter
    def on_return(self, value: Callable[[Any], Any] | None) -> None:
        self._on_return = value

    def _forward_return(self, msg: Any) -> None:
        cb = self._on_return
        if cb is not None:
            cb(msg)
        else:
            self.returned.append(msg)

    def transport_lost(self) -> bool:
        """Whether the current transport channel's connection is dead (or not the client's
        connection any more)."""
        tconn = self._channel.connection
        return not tconn.is_open or tconn is not self.client._connection

    @property
    def is_open(self) -> bool:
        """True unless closed (by :meth:`close`, or by the broker with a channel error): a
        channel whose connection was lost stays open -- it is recovered on next use."""
        if self._closed or self._failed:
            return False
        ch = self._channel
        if ch.is_open:
            return True
        if self.transport_lost() and not _closed_by_channel_error(ch):
            return True
        self._mark_failed()
        return False

    @property
    def close_error(self) -> AMQPError | None:
        """The broker's error that closed the current transport channel, if any."""
        return self._channel.close_error  # type: ignore[no-any-return]

    def mark_error_reported(self) -> None:
        """As the transport channel's: :attr:`close_error` was raised elsewhere."""
        self._channel.mark_error_reported()

    @property
    def flow_active(self) -> bool:
        """The current transport channel's: False while the broker has asked
        (``channel.flow``) that nothing be published on it."""
        return bool(self._channel.flow_active)

    @property
    def closed_by_broker(self) -> bool:
        """True once the broker closed this channel with a channel error (``NotFound``,
        ``PreconditionFailed``, ...): unlike a lost connection, that is not recovered --
        the channel stays closed and its consumers are gone; open a new channel."""
        return not self._closed and not self.is_open and _closed_by_channel_error(self._channel)

    def _mark_failed(self) -> None:
        if not self._failed:
            self._failed = True
            self.client.topology.remove_channel(self)

    def _live(self) -> Any:
        if self._closed:
            forked_from = getattr(self.client, "_forked_from", None)
            where = "" if forked_from is None else (
                f" (it was made in process {forked_from}, before fork(): open a channel in this one)"
            )
            raise ChannelClosedError(f"channel {self._channel.channel_id} was closed{where}")
        # A channel the broker closed raises its error by itself.
        return self._channel

    def recover(self, error: BaseException | None = None) -> None:
        """Recover the connection (and so this channel) unless that happened already."""
        self.client._recover(error)

    def unsettled(self, generation: int) -> set[int] | None:
        """Tags of publishes of ``generation`` whose fate the loss left unknown (None: all
        of them may be).

        Asking takes them over: the caller (a :class:`~leveret.highlevel.Producer`, which
        publishes them again or reports them lost) settles them, and
        :meth:`wait_for_confirms` no longer reports that generation's losses."""
        self._publish_gens.pop(generation, None)
        return self._unsettled.get(generation)

    def _call(self, retry: bool, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the transport channel's ``name``; when the connection is lost, recover it
        and call once more (``retry``) or raise the error (the outcome is unknown)."""
        return self._call_on(retry, None, name, *args, **kwargs)[0]

    def _call_on(
        self, retry: bool, check: Callable[[int, Any], None] | None, name: str, *args: Any, **kwargs: Any,
    ) -> tuple[Any, int, Any]:
        """As :meth:`_call`; returns the result, the generation and the transport channel
        the call ran on.  ``check(generation, channel)`` runs before each attempt and may
        raise."""
        while True:
            # _install sets the generation before the channel: a new channel is never
            # paired here with the old generation.
            ch = self._live()
            gen = self.generation
            if check is not None:
                check(gen, ch)
            try:
                return getattr(ch, name)(*args, **kwargs), gen, ch
            except OperationalError:
                raise  # a recovery gave up: not a loss to recover from again
            except LOSS_ERRORS as exc:
                if self.generation == gen and not self.transport_lost():
                    if not ch.is_open and not self._closed:
                        self._mark_failed()
                    raise
                self.client._recover(exc)
                if not retry:
                    self._loss_reported(gen)
                    raise
                retry = False
            except SoftError:
                if not ch.is_open:
                    self._mark_failed()
                raise

    def _loss_reported(self, gen: int) -> None:
        """A call of generation ``gen`` raised the loss: the publishes and the transaction
        of that generation and earlier ones are reported (by that error), not again."""
        for g in list(self._publish_gens):  # a copy: other threads may publish meanwhile
            if g <= gen:
                self._publish_gens.pop(g, None)
        if self._tx_gen is not None and self._tx_gen <= gen:
            self._tx_gen = None

    def _sent(self, gen: int, ch: Any, tag: int | None) -> None:
        """A publish (``tag`` in confirm mode) or acknowledgement went out on transport
        channel ``ch`` of generation ``gen``."""
        if tag is not None:
            self._publish_gens.setdefault(gen, int(ch.channel_id))
        if self._tx and self._tx_gen is None:
            self._tx_gen = gen

    def _raise_lost_publishes(self, current: int) -> None:
        """Raise :class:`~leveret.client.ConnectionLost` for the publishes of generations
        before ``current`` that the loss left unconfirmed (once; nothing if the broker had
        confirmed them all before the loss)."""
        stale = sorted(g for g in list(self._publish_gens) if g < current)
        if not stale:
            return
        lost: dict[int, list[int]] = {}
        unknown = False
        for g in stale:
            channel_id = self._publish_gens.pop(g, None)
            if channel_id is None:
                continue  # reported by another thread meanwhile
            tags = self._unsettled.get(g)
            if tags is None:
                unknown = True
            elif tags:
                lost.setdefault(channel_id, []).extend(sorted(tags))
        if not lost and not unknown:
            return
        which = "; ".join(f"channel {cid}: tags {tags[:10]}" for cid, tags in lost.items()) or "tags unknown"
        raise ConnectionLost(
            f"the connection was lost (and recovered) before the broker confirmed publishes "
            f"sent on this channel ({which}): their fate is unknown; nothing was waited for",
            lost,
        )

    # -- exchanges

    def exchange_declare(
        self, exchange: str, type: str = "direct", passive: bool = False, durable: bool = False,
        auto_delete: bool = False, internal: bool = False, nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.declare``; recorded unless ``passive``."""
        self._call(
            True, "exchange_declare", exchange, type, passive=passive, durable=durable,
            auto_delete=auto_delete, internal=internal, nowait=nowait, arguments=arguments,
            timeout=timeout,
        )
        if not passive:
            self.client.topology.record_exchange(
                RecordedExchange(exchange, type, durable, auto_delete, internal, _copy(arguments))
            )

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False, timeout: float | None = None) -> None:
        """``exchange.delete``; forgotten with its bindings."""
        self._call(True, "exchange_delete", exchange, if_unused=if_unused, nowait=nowait, timeout=timeout)
        self.client.topology.forget_exchange(exchange)

    def exchange_bind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.bind``; recorded."""
        self._call(
            True, "exchange_bind", destination, source, routing_key, nowait=nowait,
            arguments=arguments, timeout=timeout,
        )
        self.client.topology.record_binding(
            RecordedBinding("exchange", destination, source, routing_key, _copy(arguments))
        )

    def exchange_unbind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.unbind``; forgotten."""
        self._call(
            True, "exchange_unbind", destination, source, routing_key, nowait=nowait,
            arguments=arguments, timeout=timeout,
        )
        self.client.topology.forget_binding(RecordedBinding("exchange", destination, source, routing_key, arguments))

    # -- queues

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

    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> QueueDeclareOk | None:
        """``queue.declare``; recorded unless ``passive`` (a server-named queue with the
        name the broker chose)."""
        # Repeating a lost declare of a durable server-named queue could leave an orphan.
        retry = bool(queue) or exclusive or auto_delete or passive
        ok = self._call(
            retry, "queue_declare", queue, passive=passive, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, nowait=nowait, arguments=arguments, timeout=timeout,
        )
        name = ok[0] if ok is not None else queue
        if name:
            self._last_queue = name
        if not passive and name:
            self.client.topology.record_queue(
                RecordedQueue(name, durable, exclusive, auto_delete, _copy(arguments), server_named=not queue)
            )
        return ok  # type: ignore[no-any-return]

    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.bind``; recorded."""
        name = queue or self._last_queue
        self._call(
            True, "queue_bind", name, exchange, routing_key, nowait=nowait, arguments=arguments,
            timeout=timeout,
        )
        self.client.topology.record_binding(RecordedBinding("queue", name, exchange, routing_key, _copy(arguments)))

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "",
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.unbind``; forgotten."""
        name = queue or self._last_queue
        self._call(True, "queue_unbind", name, exchange, routing_key, arguments=arguments, timeout=timeout)
        self.client.topology.forget_binding(RecordedBinding("queue", name, exchange, routing_key, arguments))

    @overload
    def queue_purge(self, queue: str = "", nowait: Literal[False] = False, timeout: float | None = None) -> int: ...
    @overload
    def queue_purge(self, queue: str = "", *, nowait: Literal[True], timeout: float | None = None) -> None: ...
    @overload
    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None: ...

    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None:
        """``queue.purge`` (not repeated after a recovery)."""
        return self._call(False, "queue_purge", queue, nowait=nowait, timeout=timeout)  # type: ignore[no-any-return]

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

    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> int | None:
        """``queue.delete``; forgotten with its bindings and consumers."""
        name = queue or self._last_queue
        count = self._call(
            True, "queue_delete", name, if_unused=if_unused, if_empty=if_empty, nowait=nowait,
            timeout=timeout,
        )
        self.client.topology.forget_queue(name)
        return count  # type: ignore[no-any-return]

    # -- basic

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
        timeout: float | None = None, **kwargs: Any,
    ) -> None:
        """``basic.qos``; recorded (per consumer to come, or ``global`` for the channel)."""
        is_global = bool(kwargs.pop("global_", a_global))
        self._call(
            True, "basic_qos", prefetch_size, prefetch_count, a_global=is_global, timeout=timeout, **kwargs,
        )
        if is_global:
            self._global_qos = (prefetch_size, prefetch_count)
        else:
            self._qos = (prefetch_size, prefetch_count)

    def basic_consume(
        self, queue: str = "", consumer_tag: str = "", no_local: bool = False, no_ack: bool = False,
        exclusive: bool = False, nowait: bool = False, callback: Callable[[Any], Any] | None = None,
        arguments: dict[str, Any] | None = None, on_cancel: Callable[[str], Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """``basic.consume``; recorded with its callbacks and the channel's qos."""
        name = queue or self._last_queue
        tag = self._call(
            True, "basic_consume", name, consumer_tag, no_local=no_local, no_ack=no_ack,
            exclusive=exclusive, nowait=nowait, callback=_stamping(callback), arguments=arguments,
            on_cancel=functools.partial(self._broker_cancelled, on_cancel), timeout=timeout,
        )
        self.consumers[str(tag)] = RecordedConsumer(
            name, str(tag), no_ack, exclusive, no_local, callback, on_cancel, _copy(arguments), self._qos,
        )
        return str(tag)

    def _broker_cancelled(self, on_cancel: Callable[[str], Any] | None, tag: str) -> None:
        self._forget_consumer(tag)
        if on_cancel is not None:
            on_cancel(tag)

    def _forget_consumer(self, tag: str) -> None:
        record = self.consumers.pop(tag, None)
        if record is not None:
            self.client.topology.consumer_gone(record.queue)

    def basic_cancel(self, consumer_tag: str, nowait: bool = False, timeout: float | None = None) -> None:
        """``basic.cancel``; forgotten first (a consumer of a lost connection is gone already:
        nothing is sent then)."""
        self._forget_consumer(consumer_tag)
        if self.transport_lost():
            return
        gen = self.generation
        try:
            self._call(False, "basic_cancel", consumer_tag, nowait=nowait, timeout=timeout)
        except OperationalError:
            raise  # a recovery gave up: not a loss to recover from again
        except LOSS_ERRORS:
            if self.generation != gen or self.transport_lost():
                return  # recovered without it
            raise

    def basic_publish(
        self, msg: Any, exchange: str = "", routing_key: str = "", mandatory: bool = False,
        immediate: bool = False,
    ) -> int | None:
        """``basic.publish`` (not repeated after a recovery: a producer does that).  In
        confirm mode returns the delivery tag, which :meth:`wait_for_confirms` settles; in
        tx mode the publish is part of the transaction :meth:`tx_commit` commits."""
        tag, gen, ch = self._call_on(False, None, "basic_publish", msg, exchange, routing_key, mandatory, immediate)
        self._sent(gen, ch, tag)
        return tag  # type: ignore[no-any-return]

    def publish_confirmed(
        self, msg: Any, exchange: str = "", routing_key: str = "", mandatory: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Publish and wait for this one publish's confirm (not repeated after a recovery).
        True or False is the broker's answer on the transport channel the publish went out
        on; a loss before it came raises the connection's error (the publish's fate is
        unknown), also when another call recovered the connection meanwhile.  Earlier
        pipelined publishes are :meth:`wait_for_confirms`'s business."""
        return bool(self._call(False, "publish_confirmed", msg, exchange, routing_key, mandatory, timeout=timeout))

    def wait_for_confirms(self, timeout: float | None = None) -> bool:
        """Wait until the broker confirmed every publish sent through this channel.

        Publishes of a transport channel lost since they went out -- a recovery that
        another call made (a call that meets the loss itself raises it) -- cannot be
        confirmed any more: if the broker had not confirmed them all before the loss, this
        raises :class:`~leveret.client.ConnectionLost` (nothing is waited for), whose
        ``unconfirmed`` maps the lost transport channel's id to their delivery tags (empty
        when they could not be told).  Reported once.  Publishes a
        :class:`~leveret.highlevel.Producer` took over (see :meth:`unsettled`) are its own
        business: it publishes them again."""
        self._raise_lost_publishes(self.generation)
        gen = self.generation
        try:
            ok, gen, _ = self._call_on(False, None, "wait_for_confirms", timeout=timeout)
        except TimeoutError:
            raise  # still waiting: nothing settled
        except Exception:
            self._loss_reported(gen)  # nacks, the channel's or the connection's error say it
            raise
        self._raise_lost_publishes(gen)  # a recovery came between the check and the wait
        self._publish_gens.pop(gen, None)
        return bool(ok)

    def basic_get(self, queue: str = "", no_ack: bool = False, timeout: float | None = None) -> Message | None:
        """``basic.get`` (not repeated after a recovery).  The message's tag is a
        :class:`DeliveryTag`."""
        message = self._call(False, "basic_get", queue or self._last_queue, no_ack=no_ack, timeout=timeout)
        if message is not None:
            _stamp(message)
        return message  # type: ignore[no-any-return]

    def basic_ack(self, delivery_tag: int | None, multiple: bool = False) -> None:
        """``basic.ack`` on the current transport channel.  A :class:`DeliveryTag` (what
        deliveries and :meth:`basic_get` hand out) of a transport channel lost since
        raises :class:`~leveret.client.ChannelClosedError` and sends nothing: the broker
        has requeued that delivery, and on the new channel its number names another one.
        A plain ``int`` is the current transport channel's number.  The same holds for
        :meth:`basic_nack` and :meth:`basic_reject`."""
        _, gen, ch = self._call_on(False, _settling(delivery_tag), "basic_ack", delivery_tag, multiple)
        self._sent(gen, ch, None)

    def basic_nack(self, delivery_tag: int | None, multiple: bool = False, requeue: bool = True) -> None:
        _, gen, ch = self._call_on(
            False, _settling(delivery_tag), "basic_nack", delivery_tag, multiple, requeue)
        self._sent(gen, ch, None)

    def basic_reject(self, delivery_tag: int | None, requeue: bool = True) -> None:
        _, gen, ch = self._call_on(False, _settling(delivery_tag), "basic_reject", delivery_tag, requeue)
        self._sent(gen, ch, None)

    def basic_recover(self, requeue: bool = False, timeout: float | None = None) -> None:
        self._call(False, "basic_recover", requeue=requeue, timeout=timeout)

    def basic_recover_async(self, requeue: bool = False) -> None:
        # Spelled out (it was reached through __getattr__) so that type checkers see it.
        self._channel.basic_recover_async(requeue)

    def confirm_select(self, nowait: bool = False, timeout: float | None = None) -> None:
        """``confirm.select``; recorded (the new channel is put in confirm mode too)."""
        self._call(True, "confirm_select", nowait=nowait, timeout=timeout)
        self._confirm = True

    def tx_select(self, timeout: float | None = None) -> None:
        """``tx.select``; recorded (a transaction open at the loss is lost with it)."""
        self._call(True, "tx_select", timeout=timeout)
        self._tx = True
        self._tx_gen = None

    def tx_commit(self, timeout: float | None = None) -> None:
        """``tx.commit``.

        A transaction that published or acknowledged through this channel before a
        recovery that another call made (a call that meets the loss itself raises it) was
        rolled back by the broker with the lost connection.  Rather than commit what was
        done since as if it were the whole, this sends ``tx.rollback`` on the new transport
        channel and raises :class:`~leveret.client.ConnectionLost`: nothing of the
        transaction was committed, and a new one begins.  (Acknowledgements made through a
        message, ``message.ack()``, are not seen here: those of a lost channel raise.)"""

        def check(gen: int, ch: Any) -> None:
            began = self._tx_gen
            if began is not None and began != gen:
                self._tx_gen = None
                self._call(False, "tx_rollback", timeout=timeout)
                raise ConnectionLost(
                    "the connection was lost (and recovered) during this transaction: the broker "
                    "rolled back what it held, and what was done since is rolled back too; "
                    "nothing was committed"
                )

        try:
            self._call_on(False, check, "tx_commit", timeout=timeout)
        finally:
            self._tx_gen = None

    def tx_rollback(self, timeout: float | None = None) -> None:
        """``tx.rollback`` (of a transaction a recovery interrupted too: what the broker
        still holds of it, the part done since)."""
        try:
            self._call(False, "tx_rollback", timeout=timeout)
        finally:
            self._tx_gen = None

    def flow(self, active: bool, timeout: float | None = None) -> bool:
        return bool(self._call(False, "flow", active, timeout=timeout))

    def close(self, reply_code: int = 200, reply_text: str = "", timeout: float | None = None) -> None:
        """``channel.close``: the channel and its consumers are forgotten (not recovered)."""
        if self._closed:
            return
        self._closed = True
        self.client.topology.remove_channel(self)
        ch = self._channel
        if self.transport_lost():
            return
        try:
            ch.close(reply_code, reply_text, timeout=timeout)
        except OperationalError:
            raise  # a recovery gave up: not a loss to recover from again
        except LOSS_ERRORS:
            if not self.transport_lost():
                raise

    # -- recovery

    def _open_on(self, tconn: Any) -> Any:
        ch = tconn.channel()
        ch.on_return = self._forward_return
        if self._global_qos is not None:
            ch.basic_qos(self._global_qos[0], self._global_qos[1], a_global=True)
        if self._confirm:
            ch.confirm_select()
        if self._tx:
            ch.tx_select()
        return ch

    def _install(self, tconn: Any, generation: int) -> list[tuple[RecordedConsumer, BaseException]]:
        """Move to a new transport channel of ``tconn``: same modes, qos and consumers.
        Returns the consumers the broker refused (dropped from the record).

        A refused ``basic.consume`` closes the transport channel, and with it the consumers
        registered on it before: they are registered again, in order, on a fresh transport
        channel (modes and qos too), without the refused one.  An exclusive consumer refused
        because its queue is "in exclusive use" -- most likely by the old connection's
        consumer, which the broker has not dropped yet -- is no refusal: like an exclusive
        queue still locked, it raises :class:`OperationalError`, and the recovery tries
        again after its back-off."""
        old = self._channel
        if getattr(old, "_returns", None):
            # Returns the dead channel received and never handed over (nobody waited on it
            # since): hand them over now, or their publishes -- confirmed before the loss --
            # would pass for delivered.
            try:
                old._run_returns()
            except Exception:  # noqa: BLE001 - a callback's error must not stop the recovery
                log.exception("leveret: an on_return callback failed during recovery")
        if self.generation not in self._unsettled:
            self._unsettled[self.generation] = unsettled_tags(old)
            while len(self._unsettled) > _KEEP_GENERATIONS:
                self._unsettled.pop(min(self._unsettled))
        refused: list[tuple[RecordedConsumer, BaseException]] = []
        while True:
            ch = self._open_on(tconn)
            applied = (0, 0)
            record: RecordedConsumer | None = None
            try:
                for record in list(self.consumers.values()):
                    if record.qos != applied:
                        ch.basic_qos(record.qos[0], record.qos[1], a_global=False)
                        applied = record.qos
                    ch.basic_consume(
                        queue=record.queue, consumer_tag=record.tag, no_local=record.no_local,
                        no_ack=record.no_ack, exclusive=record.exclusive,
                        callback=_stamping(record.callback),
                        arguments=record.arguments,
                        on_cancel=functools.partial(self._broker_cancelled, record.on_cancel),
                    )
                break
            except (SoftError, ChannelClosedError) as exc:
                if not tconn.is_open or record is None:
                    raise
                if record.exclusive and isinstance(exc, AccessRefused) and "exclusive use" in str(exc):
                    raise OperationalError(
                        f"recovery: {exc} (the old connection's exclusive consumer is still there)"
                    ) from exc
                self.consumers.pop(record.tag, None)
                refused.append((record, exc))
        if self._qos != applied:
            ch.basic_qos(self._qos[0], self._qos[1], a_global=False)
        # The generation first: _call_on reads the channel, then the generation.
        self.generation = generation
        self._channel = ch
        return refused


def _stamp(message: Any) -> None:
    """Give ``message`` (of a transport channel) a :class:`DeliveryTag`."""
    tag = message.delivery_tag
    if tag is not None:
        message.set_delivery_tag(DeliveryTag(tag, message.channel))


def _stamping(callback: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """``callback``, called with each message given a :class:`DeliveryTag` first."""
    if callback is None:
        return None

    def deliver(message: Any) -> Any:
        _stamp(message)
        return callback(message)

    return deliver


def _settling(tag: int | None) -> Callable[[int, Any], None] | None:
    """The check before settling ``tag`` (see :meth:`RecoveringChannel._call_on`): a
    :class:`DeliveryTag` must be the transport channel's it is sent on."""
    if type(tag) is not DeliveryTag:
        return None
    numbered_by = tag.channel

    def check(gen: int, ch: Any) -> None:
        if ch is not numbered_by:
            raise ChannelClosedError(
                f"delivery tag {int(tag)} came on a transport channel lost since (channel "
                f"{ch.channel_id} was recovered on a new connection): the broker requeued that "
                "delivery, unless it was no_ack; its redelivery, with a tag of its own, is the "
                "one to settle"
            )

    return check


def _copy(arguments: dict[str, Any] | None) -> dict[str, Any] | None:
    return dict(arguments) if arguments else arguments


def recovering_channel(channel: Any) -> RecoveringChannel | None:
    """``channel`` when it is a :class:`RecoveringChannel` of a connection that recovers,
    else None."""
    if isinstance(channel, RecoveringChannel) and channel.client.autorecover:
        return channel
    return None


# ---------------------------------------------------------------------------------- replay


class _Scratch:
    """A transport channel for re-declaring; reopened after each channel error."""

    def __init__(self, tconn: Any) -> None:
        self.tconn = tconn
        self.channel = tconn.channel()

    def run(self, client: Connection, fn: Callable[[Any], Any], record: Any) -> bool:
        try:
            fn(self.channel)
            return True
        except ResourceLocked as exc:
            # An exclusive queue of the old connection, which the broker has not noticed is
            # dead yet: try again later.
            raise OperationalError(f"recovery: {exc} (the old connection's exclusive queue is still there)") from exc
        except (SoftError, ChannelClosedError) as exc:
            if not self.tconn.is_open:
                raise
            log.warning("leveret: recovery could not re-declare %r: %s", record, exc)
            client._recovery_event("declaration_failed", exc, record)
            self.channel = self.tconn.channel()
            return False

    def close(self) -> None:
        try:
            self.channel.close()
        except (SoftError, ChannelClosedError):
            pass


def _replay_queue(client: Connection, topology: Topology, scratch: _Scratch, record: RecordedQueue) -> None:
    if not record.server_named:
        scratch.run(client, lambda ch: ch.queue_declare(
            record.name, durable=record.durable, exclusive=record.exclusive,
            auto_delete=record.auto_delete, arguments=record.arguments,
        ), record)
        return
    name: str | None = None
    if not record.exclusive:
        # A server-named queue that outlived the connection (durable, not auto-deleted) keeps
        # its name and its messages.
        try:
            scratch.channel.queue_declare(record.name, passive=True)
            name = record.name
        except NotFound:
            scratch.channel = scratch.tconn.channel()
    if name is None:
        box: list[str] = []
        ok = scratch.run(client, lambda ch: box.append(ch.queue_declare(
            "", durable=record.durable, exclusive=record.exclusive, auto_delete=record.auto_delete,
            arguments=record.arguments,
        )[0]), record)
        if not ok:
            return
        name = box[0]
    if name != record.name:
        log.info("leveret: recovery: server-named queue %s is now %s", record.name, name)
        topology.rename_queue(record.name, name)
        client._recovery_event("queue_renamed", None, (record.name, name))


def replay(client: Connection, tconn: Any) -> None:
    """Re-create ``client``'s recorded topology on the new transport connection ``tconn``:
    exchanges, queues (server-named ones renamed), bindings, then every recovering channel
    on a new transport channel with its modes, qos and consumers.

    Connection errors propagate (the caller retries the whole replay on another transport
    connection); refusals of single declarations and consumers are reported and skipped.
    """
    topology = client.topology
    generation = client.recovery_generation
    scratch = _Scratch(tconn)
    for ex in list(topology.exchanges.values()):
        scratch.run(client, lambda ch, ex=ex: ch.exchange_declare(  # type: ignore[misc]
            ex.name, ex.type, durable=ex.durable, auto_delete=ex.auto_delete,
            internal=ex.internal, arguments=ex.arguments,
        ), ex)
    for q in list(topology.queues.values()):
        _replay_queue(client, topology, scratch, q)
    for b in list(topology.bindings.values()):
        if b.kind == "queue":
            scratch.run(client, lambda ch, b=b: ch.queue_bind(  # type: ignore[misc]
                b.destination, b.source, b.routing_key, arguments=b.arguments,
            ), b)
        else:
            scratch.run(client, lambda ch, b=b: ch.exchange_bind(  # type: ignore[misc]
                b.destination, b.source, b.routing_key, arguments=b.arguments,
            ), b)
    scratch.close()
    for channel in list(topology.channels.values()):
        if channel._closed or channel._failed:
            continue
        if _closed_by_channel_error(channel._channel):
            channel._mark_failed()
            continue
        for record, exc in channel._install(tconn, generation):
            log.warning(
                "leveret: recovery: the broker refused consumer %s of queue %r: %s",
                record.tag, record.queue, exc,
            )
            client._recovery_event("consumer_failed", exc, record)
            topology.consumer_gone(record.queue)
            if record.on_cancel is not None:
                record.on_cancel(record.tag)


# ---------------------------------------------------------------------------------- recover


def recover(
    client: Connection, error: BaseException | None = None, deadline: float | None = None,
    **policy: Any,
) -> None:
    """Reconnect ``client`` with back-off and replay its topology (see :func:`replay`).

    ``policy`` overrides ``client.recovery_policy``: ``max_retries`` (None: for ever),
    ``interval_start``, ``interval_step``, ``interval_max``, ``timeout`` (seconds for the
    whole), and ``errback(exc, interval)`` / ``callback()`` as in
    :meth:`~leveret.highlevel.Connection.ensure_connection`.  Reports
    ``connection_lost``, ``recovery_started``, ``attempt_failed`` ...,
    ``recovery_succeeded`` or ``recovery_failed`` to ``client.recovery_events`` and the
    connection's listeners.  Raises :class:`OperationalError` (from the last error) when it
    gives up, or at once the error of refused credentials or virtual host.  It gives up too
    when :meth:`~leveret.highlevel.Connection.release` is called meanwhile (checked after
    each attempt and about once a second of back-off).

    Past ``deadline`` (``time.monotonic()``; checked as often) it raises
    :class:`RecoveryPaused` instead, leaving the connection lost and the recovery where it
    stood: the next call goes on with it (the same back-off, retries and ``timeout``; no
    second ``connection_lost``), as a ``drain_events(timeout=...)`` needs.
    """
    options = {**DEFAULT_RECOVERY_POLICY, **(client.recovery_policy or {}), **policy}
    user_errback = options.pop("errback", None)
    user_callback = options.pop("callback", None)
    last: list[BaseException | None] = [error]

    def stop_if_released() -> None:
        if client._release_requested:
            raise OperationalError(
                f"recovery of {client.as_uri()} stopped: the connection was released"
            ) from last[0]
        if deadline is not None and time.monotonic() >= deadline:
            raise RecoveryPaused(
                f"timed out waiting while the connection to {client.as_uri()} is recovered"
            ) from last[0]

    def errback(exc: BaseException, interval: float) -> None:
        last[0] = exc
        stop_if_released()
        log.warning("leveret: recovery attempt failed (%r); next in %.1f s", exc, interval)
        client._recovery_event("attempt_failed", exc, interval)
        if user_errback is not None:
            user_errback(exc, interval)

    def callback() -> None:
        stop_if_released()
        if user_callback is not None:
            user_callback()

    options.setdefault("reraise_as_library_errors", True)
    resume = client._recovery_resume
    client._in_recovery = True
    try:
        if resume is None:
            log.warning("leveret: connection to %s lost (%r); recovering", client.as_uri(), error)
            resume = client._recovery_resume = {"started": time.monotonic()}
            client._recovery_event("connection_lost", error)
            client._notify("on_connection_lost", error)
            client._recovery_event("recovery_started")
            client._notify("on_recovery_started")
            stop_if_released()
            client._drop_connection()
        client.ensure_connection(errback=errback, callback=callback, _resume=resume, **options)
        stop_if_released()
    except RecoveryPaused:
        raise  # the recovery stays where it stood: client._recovery_resume
    except BaseException as exc:
        client._recovery_resume = None
        log.error("leveret: recovery of %s failed: %r", client.as_uri(), exc)
        client._recovery_event("recovery_failed", exc)
        client._notify("on_recovery_failed", exc)
        raise
    finally:
        client._in_recovery = False
    client._recovery_resume = None
    took = time.monotonic() - resume["started"]
    client.recoveries += 1
    log.info("leveret: connection to %s recovered in %.2f s", client.as_uri(), took)
    client._recovery_event("recovery_succeeded", None, took)
    client._notify("on_recovery_succeeded")
