"""kombu's :class:`SimpleQueue` and :class:`SimpleBuffer`: a queue with ``put``/``get``.

``SimpleQueue(conn, "name")`` declares a durable direct exchange and a durable queue, both
called ``name``, bound with the routing key ``name``; ``put`` publishes persistent messages
there (confirmed by the broker, and ``mandatory``: a message no queue takes raises
:class:`~leveret.highlevel.exceptions.MessageReturned` instead of vanishing); ``get`` takes
the next one.  ``SimpleBuffer`` is the transient variant: auto-delete exchange and queue,
transient messages, ``no_ack`` deliveries.

``get`` runs a consumer and waits in ``drain_events`` -- no polling.  Given a connection,
each simple queue works on a channel of its own and closes it in :meth:`SimpleQueue.close`,
so messages it received but did not hand out go back to the queue.
"""

from __future__ import annotations

import logging
from collections import deque
from time import monotonic
from typing import Any, Iterable

from .connection import client_of
from .entity import Exchange, Queue, _is_hl_connection
from .exceptions import Empty
from .compression import DEFAULT_MAX_SIZE
from .message import Message
from .messaging import Consumer, Producer, lost_connection_error
from .transport import TransportChannel
from ..wire.errors import LocalProtocolError, SoftError, again

__all__ = ["SimpleQueue", "SimpleBuffer"]

log = logging.getLogger("leveret.highlevel")


class SimpleQueue:
    """A persistent queue with ``put``/``get``: ``SimpleQueue(channel_or_connection,
    name, no_ack=None, queue_opts=None, queue_args=None, exchange_opts=None,
    serializer=None, compression=None, accept=None, prefetch_count=None,
    max_decompressed_size=DEFAULT_MAX_SIZE)``.

    ``name`` may also be a :class:`Queue` (used as is, with its exchange and routing key).
    ``queue_opts``/``exchange_opts`` are :class:`Queue`/:class:`Exchange` keywords,
    ``queue_args`` the queue's x-arguments.  ``accept`` limits what ``message.decode()``
    decodes (default JSON and raw bodies: text, bytes, types no serializer claims).
    ``prefetch_count`` (default 100) bounds how many unacknowledged messages the broker
    sends ahead; a :meth:`get` while that many are unacknowledged waits until one is acked.
    ``max_decompressed_size``: the most bytes a compressed body may expand to (None: no
    limit).

    Given a connection, a SimpleQueue recovers from a channel error on its own channel
    (RabbitMQ's ``consumer_timeout`` closing it under a slow worker, say): the next call
    raises the broker's error, and the one after goes on on a new channel (its
    unacknowledged messages come again).
    """

    Empty = Empty
    no_ack = False
    queue_opts: dict[str, Any] = {}
    queue_args: dict[str, Any] = {}
    exchange_opts: dict[str, Any] = {"type": "direct"}
    prefetch_count: int | None = 100

    def __init__(
        self,
        channel: Any,
        name: str | Queue,
        no_ack: bool | None = None,
        queue_opts: dict[str, Any] | None = None,
        queue_args: dict[str, Any] | None = None,
        exchange_opts: dict[str, Any] | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        accept: Iterable[str] | None = None,
        prefetch_count: int | None = None,
        max_decompressed_size: int | None = DEFAULT_MAX_SIZE,
    ) -> None:
        self._max_decompressed_size = max_decompressed_size
        q_opts = {**self.queue_opts, **(queue_opts or {})}
        q_args = {**self.queue_args, **(queue_args or {})}
        e_opts = {**self.exchange_opts, **(exchange_opts or {})}
        self.no_ack = self.no_ack if no_ack is None else bool(no_ack)
        if prefetch_count is not None:
            self.prefetch_count = prefetch_count
        #: The transport channel (its own when given a connection).
        self.channel: TransportChannel
        if _is_hl_connection(channel):
            self._client: Any = channel
            self.channel = channel.channel()
            self._owns_channel = True
        else:
            self._client = client_of(channel) or channel.connection
            self.channel = channel
            self._owns_channel = False
        # What _setup needs again when a channel the broker closed is replaced.
        self._setup_args = (name, q_opts, q_args, e_opts, serializer, compression, accept)
        #: The channel error this object has raised (then the next call replaces it).
        self._raised: BaseException | None = None
        try:
            self._setup(name, q_opts, q_args, e_opts, serializer, compression, accept)
        except BaseException:
            if self._owns_channel and self.channel.is_open:
                self.channel.close()  # the channel it opened is not left behind
            raise

    def _setup(
        self, name: str | Queue, q_opts: dict[str, Any], q_args: dict[str, Any], e_opts: dict[str, Any],
        serializer: str | None, compression: str | None, accept: Iterable[str] | None,
    ) -> None:
        if isinstance(name, Queue):
            queue = name
            exchange = queue.exchange
            # On the default exchange a queue is reached by its name.
            routing_key = queue.routing_key if exchange.name else queue.name
        else:
            exchange = Exchange(name, **e_opts)
            queue = Queue(name, exchange, name, queue_arguments=q_args or None, **q_opts)
            routing_key = name
        self.buffer: deque[Message] = deque()
        self.consumer = Consumer(
            self.channel, queue, no_ack=self.no_ack, accept=accept, on_message=self._receive,
            max_decompressed_size=self._max_decompressed_size,
        )
        self.queue = self.consumer.queues[0]
        # put() publishes confirmed, which AMQP 0-8 cannot; get() works all the same.
        self._producer: Producer | None = None
        if getattr(getattr(self.channel, "connection", None), "protocol", None) != "0-8":
            self._producer = Producer(
                self.channel, exchange, routing_key=routing_key, serializer=serializer,
                compression=compression,
            )
        self._qos_done = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.queue.name!r}>"

    @property
    def producer(self) -> Producer:
        """The :class:`Producer` :meth:`put` publishes with (confirmed, so none in AMQP
        0-8, which has no publisher confirms: there :meth:`get` works, and this raises)."""
        if self._producer is None:
            raise LocalProtocolError(
                f"{type(self).__name__}.put() publishes confirmed, and AMQP 0-8 has no "
                "publisher confirms: on 0-8 a SimpleQueue can get(), and a "
                "Producer(channel, confirm=False) can publish"
            )
        return self._producer

    # -- a channel the broker closed

    def _check_channel(self) -> None:
        """When the broker has closed this object's own channel with a channel error (a
        delivery left unacknowledged past RabbitMQ's ``consumer_timeout``, say) while the
        connection stays up: raise that error once, then carry on on a new channel --
        declaring and consuming anew, as a new SimpleQueue would.  (Messages it had
        received on the old channel went back to the queue with it.)"""
        if not self._owns_channel:
            return  # the caller's channel: the caller decides
        channel = self.channel
        error = _closed_by_broker(channel)
        if error is None or not self._client.connected:
            return
        # Raised here (or once more by drain_events, as the error of a channel that had
        # consumers), it would reach the caller again and again: one raise is enough.
        mark_reported = getattr(channel, "mark_error_reported", None)
        if mark_reported is not None:
            mark_reported()
        if self._raised is not error:
            self._raised = error
            raise again(error)
        log.warning("leveret: SimpleQueue %r: the broker closed its channel (%s); going on on a new one",
                    self.queue.name, error)
        kept = [m for m in self.buffer if _settleable(m)]  # no_ack ones
        # The old consumer consumes from nothing now: drain_events is not to raise its
        # channel's error once more.
        self._client._consumers_closed(lambda closed: closed is channel)
        self.channel = self._client.channel()
        self._setup(*self._setup_args)
        self.buffer.extend(kept)
        self._raised = None

    def _note_raised(self) -> None:
        """A call of ours is raising: when it is our channel's error, it was raised."""
        error = _closed_by_broker(self.channel)
        if error is not None:
            self._raised = error

    # -- receiving

    def _receive(self, message: Message) -> None:
        self.buffer.append(message)

    def _next(self) -> Message | None:
        """The next buffered message that can still be settled, or None.  A message
        received on a channel that has closed since -- the connection was lost and
        recovered, say -- is dropped: the broker delivers it again (``no_ack`` messages
        cannot come back and are kept)."""
        buffer = self.buffer
        while buffer:
            message = buffer.popleft()
            if _settleable(message):
                return message
        return None

    def _drop_stale(self) -> None:
        kept = [m for m in self.buffer if _settleable(m)]
        if len(kept) != len(self.buffer):
            self.buffer.clear()
            self.buffer.extend(kept)

    def _consume(self) -> None:
        consumer = self.consumer
        if not consumer.consuming_from(self.queue):
            if all(q.name != self.queue.name for q in consumer.queues):
                # The broker cancelled the consumer (the queue was deleted), and the
                # consumer let go of the queue: declare it again, as the constructor did,
                # and consume from it anew.
                log.warning("leveret: SimpleQueue %r: consuming again after the broker cancelled its consumer",
                            self.queue.name)
                self.queue = consumer.add_queue(self.queue)
            if not self._qos_done and not self.no_ack and self.prefetch_count:
                consumer.qos(prefetch_count=self.prefetch_count)
                self._qos_done = True
            consumer.consume()

    def get(self, block: bool = True, timeout: float | None = None) -> Message:
        """The next message (a :class:`~leveret.highlevel.message.Message`; ack it unless
        ``no_ack``).  Waits at most ``timeout`` seconds (None: for ever) and then raises
        :class:`Empty` (``queue.Empty``); ``block=False`` is :meth:`get_nowait`.  When the
        broker cancels the consumer (someone deleted the queue), the queue is declared again
        and consumed from anew (a warning is logged).  A connection error propagates (nothing is retried; with an ``autorecover`` connection
        the wait goes on after the recovery).  Messages received ahead (``prefetch_count``)
        on a channel that has closed since -- the connection was lost -- are not handed out:
        they cannot be acked, and the broker delivers them again."""
        if not block:
            return self.get_nowait()
        self._check_channel()
        try:
            return self._get(timeout)
        except SoftError:
            self._note_raised()
            raise

    def _get(self, timeout: float | None) -> Message:
        self._consume()
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            message = self._next()
            if message is not None:
                return message
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise Empty()
            # The consumer's connection is gone (the connection object may have connected
            # again since: drain_events would wait on the new one, where nothing consumes).
            lost = lost_connection_error(self.channel, "the SimpleQueue's connection is closed")
            if lost is not None:
                raise lost
            try:
                self._client.drain_events(timeout=remaining)
            except TimeoutError:
                message = self._next()
                if message is not None:
                    return message
                raise Empty() from None
            if not self.buffer:
                self._consume()  # a no-op unless the broker cancelled the consumer meanwhile

    def get_nowait(self) -> Message:
        """The next message if one is at hand, else :class:`Empty` at once: what the
        consumer already received, else one ``basic.get``."""
        self._check_channel()
        try:
            return self._get_nowait()
        except SoftError:
            self._note_raised()
            raise

    def _get_nowait(self) -> Message:
        self._drop_stale()
        if not self.buffer and self.consumer.consuming_from(self.queue):
            try:
                self._client.drain_events(timeout=0)
            except TimeoutError:
                pass
        message = self._next()
        if message is not None:
            return message
        message = self.queue.get(
            no_ack=self.no_ack, accept=self.consumer.accept, max_decompressed_size=self._max_decompressed_size,
        )
        if message is None:
            raise Empty()
        return message  # type: ignore[no-any-return]

    # -- sending

    def put(
        self,
        message: Any,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        compression: str | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Publish ``message`` to the queue (confirmed, ``mandatory``); keywords as
        :meth:`Producer.publish`."""
        kwargs.setdefault("mandatory", True)
        self._check_channel()
        self.producer.publish(
            message, serializer=serializer, headers=headers, compression=compression,
            routing_key=routing_key, **kwargs,
        )

    # -- the queue

    def clear(self) -> int:
        """``queue.purge``; returns the number of messages removed (unacknowledged ones,
        and those this object already received, are not)."""
        self._check_channel()
        return self.consumer.purge()

    def qsize(self) -> int:
        """Messages ready in the queue (``queue.declare`` passive) plus those received
        here and not handed out yet."""
        self._check_channel()
        ok = self.queue.queue_declare(passive=True, channel=self.channel)
        self._drop_stale()
        return int(ok[1]) + len(self.buffer)

    def __len__(self) -> int:
        return self.qsize()

    def __bool__(self) -> bool:
        return True

    def close(self) -> None:
        """Stop consuming.  Messages received but not handed out go back to the queue
        (the channel is closed, or they are rejected with requeue)."""
        try:
            if not self._owns_channel and self.consumer.consuming_from(self.queue) and self.channel.is_open:
                # Take in the deliveries the broker has sent, so they are rejected back to
                # the queue below, now: once the consumer is cancelled the client gives
                # them back only when drain_events next runs, which may be never.
                # channel.flow(active=True) changes nothing but its reply comes after every
                # delivery sent before it.
                self.channel.flow(True)
                while True:
                    try:
                        self._client.drain_events(timeout=0)
                    except TimeoutError:
                        break
            self.consumer.cancel()
        finally:
            self._drop_stale()
            leftovers = list(self.buffer)
            self.buffer.clear()
            if self._owns_channel:
                if self.channel.is_open:
                    self.channel.close()
            elif not self.no_ack:
                for message in leftovers:
                    if not message.acknowledged:
                        message.reject(requeue=True)

    def __enter__(self) -> SimpleQueue:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class SimpleBuffer(SimpleQueue):
    """A transient :class:`SimpleQueue`: auto-delete queue and exchange, transient
    messages, ``no_ack`` deliveries (a message is gone once delivered).

    Unlike kombu's, the queue is not ``exclusive``: a buffer of the same name opened on
    another connection (another process) shares it instead of failing with
    ``ResourceLocked``.  Pass ``queue_opts={"exclusive": True}`` for kombu's behaviour.
    """

    no_ack = True
    queue_opts = {"durable": False, "auto_delete": True}
    exchange_opts = {"durable": False, "delivery_mode": "transient", "auto_delete": True}


def _settleable(message: Message) -> bool:
    """Whether a buffered message can still be handed out: ``no_ack`` (nothing to settle),
    or its channel is still open (else the broker has requeued it)."""
    channel = message.channel
    return message.no_ack or channel is None or bool(channel.is_open)


def _closed_by_broker(channel: Any) -> SoftError | None:
    """The channel error the broker closed ``channel`` with, if it did (None while open,
    after a normal close, or when the whole connection went)."""
    if channel.is_open:
        return None
    error = getattr(channel, "close_error", None)
    return error if isinstance(error, SoftError) else None
