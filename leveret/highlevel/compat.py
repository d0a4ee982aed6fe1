"""carrot's messaging API (``carrot.messaging``) on leveret's high-level layer.

For programs written against carrot: :class:`Publisher`, :class:`Consumer`,
:class:`ConsumerSet` and :class:`Messaging` keep carrot's names, call shapes and
class-attribute configuration, and are built on leveret's :class:`~leveret.highlevel.Producer`,
:class:`~leveret.highlevel.Consumer`, :class:`~leveret.highlevel.Exchange` and
:class:`~leveret.highlevel.Queue`::

    from leveret.highlevel.compat import BrokerConnection, Consumer, Publisher

    conn = BrokerConnection(hostname="localhost", port=5672, userid="guest",
                            password="guest", virtual_host="/")

    class FeedConsumer(Consumer):
        queue = "feed"
        exchange = "feed"
        routing_key = "importer"

        def receive(self, message_data, message):
            print(message_data["import_feed"])
            message.ack()

    consumer = FeedConsumer(conn)            # declares exchange, queue and binding
    with Publisher(conn, exchange="feed", routing_key="importer") as publisher:
        publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
    consumer.wait(limit=1)
    consumer.close()

What goes on the wire, per object (each :class:`Publisher` and :class:`Consumer` works on
a channel of its own, as carrot's backends did, and closes it in ``close()``):

* ``Publisher(...)``: ``channel.open``, ``confirm.select``, and ``exchange.declare``
  (type ``exchange_type``, flags ``durable``/``auto_delete``) unless the exchange is the
  default one or ``auto_declare`` is False.  ``send`` is one ``basic.publish`` that waits
  for the broker's confirm.
* ``Consumer(...)``: ``channel.open`` and (``auto_declare``) ``exchange.declare``,
  ``queue.declare``, ``queue.bind`` -- the exchange with the *consumer's* ``durable`` and
  ``auto_delete`` flags, as carrot did.  ``fetch`` is ``basic.get``; ``iterconsume`` and
  ``wait`` send ``basic.consume`` once and then wait in ``connection.drain_events()``.

Where carrot's defaults were unsafe, leveret's stay (say otherwise to get carrot's):

* consumers decode only JSON and raw bodies unless given ``accept=[...]`` (carrot
  unpickled whatever arrived): a pickled body raises
  :class:`~leveret.highlevel.exceptions.ContentDisallowed` before it is looked at;
* publishers use publisher confirms (``confirm=False`` turns them off), so a nacked
  publish raises, and a ``mandatory`` publish no queue took raises
  :class:`~leveret.highlevel.exceptions.MessageReturned` (carrot lost it silently).

Messages handed to callbacks and returned by ``fetch`` are leveret's high-level
:class:`~leveret.highlevel.message.Message`, which has carrot's message API: ``payload``,
``decode()``, ``body``, ``content_type``, ``content_encoding``, ``delivery_info``,
``delivery_tag``, ``acknowledged``, ``ack()``, ``reject()``, ``requeue()``.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import deque
from time import monotonic
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..client import Message as ClientMessage
from ..client import ChannelClosedError, NotFound, ResourceLocked
from .connection import BrokerConnection, Connection
from .entity import Exchange, Queue, delivery_mode_value
from .message import Message
from .messaging import Consumer as _Consumer
from .messaging import Producer
from .serialization import dumps, prepare_accept_content

__all__ = [
    "BrokerConnection",
    "Publisher",
    "Consumer",
    "ConsumerSet",
    "Messaging",
    "QueueAlreadyExistsWarning",
]

Callback = Callable[[Any, Message], Any]
DecodeErrorHandler = Callable[[Message, Exception], Any]

#: carrot's delivery mode names (``"non-persistent"`` was carrot's spelling of transient).
DELIVERY_MODES = {"transient": 1, "non-persistent": 1, "persistent": 2}

# carrot options a Consumer accepts and ignores: ``backend`` (carrot's backend instance;
# here every object works on a leveret channel; a Publisher accepts it too) and
# ``default_routing_key`` (a publisher setting that carrot's dict configurations put next
# to the consumer's).
_IGNORED_OPTIONS = frozenset({"backend", "default_routing_key"})


class QueueAlreadyExistsWarning(UserWarning):
    """A :class:`Consumer` with ``warn_if_exists`` declared a queue that existed already."""


def _delivery_mode(mode: int | str | None) -> int | None:
    if isinstance(mode, str):
        mode = DELIVERY_MODES.get(mode, mode)
    return delivery_mode_value(mode)


def _split_headers_key(exchange_type: str, routing_key: Any) -> tuple[str, dict[str, Any] | None]:
    """For a ``headers`` exchange carrot's ``routing_key`` is the header table (the match
    arguments of the binding, the headers of a message) and the AMQP routing key is empty."""
    if exchange_type == "headers":
        return "", dict(routing_key or {})
    return routing_key or "", None


class _Inbox:
    """Deliveries waiting to be processed, so that ``iterconsume(limit=n)`` processes
    exactly ``n`` messages even when one ``drain_events`` brings in more.

    A delivery is processed at once (inside ``drain_events``, as in carrot) unless a
    :meth:`step` is waiting for it; then it is kept and processed one per step, and what is
    left waits for the next step, the next delivery, or :meth:`requeue`.
    """

    def __init__(self) -> None:
        self.items: deque[tuple[Callable[[Message], Any], Message]] = deque()
        self.holding = 0

    def put(self, handler: Callable[[Message], Any], message: Message) -> None:
        self.items.append((handler, message))
        if not self.holding:
            self.flush()

    def flush(self) -> None:
        while self.items:
            handler, message = self.items.popleft()
            handler(message)

    def step(self, connection: Any, timeout: float | None, alive: Callable[[], bool]) -> bool:
        """Process one delivery, waiting for it in ``connection.drain_events``.  False when
        nothing is consumed any more (cancelled, by us or by the broker); ``TimeoutError``
        after ``timeout`` seconds without a delivery."""
        deadline = None if timeout is None else monotonic() + timeout
        while not self.items:
            if not alive():
                return False
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            self.holding += 1
            try:
                connection.drain_events(timeout=remaining)
            finally:
                self.holding -= 1
        handler, message = self.items.popleft()
        handler(message)
        return True

    def requeue(self) -> None:
        """Give the unprocessed deliveries back to the broker (``basic.reject`` with
        requeue).  Those of a ``no_ack`` consumer cannot go back and are dropped."""
        items = list(self.items)
        self.items.clear()
        for _, message in items:
            channel = message.channel
            if not message.acknowledged and channel is not None and channel.is_open:
                message.requeue()


# ---------------------------------------------------------------------------------- publisher


class Publisher:
    """carrot's message publisher: ``Publisher(connection, exchange=None,
    routing_key=None, exchange_type=None, durable=None, auto_delete=None, serializer=None,
    delivery_mode=None, auto_declare=None, confirm=None)``.

    Every option left as None takes the class attribute, so a subclass can configure the
    publisher (``exchange = "feed"``, ``routing_key = "importer"``, ...).  The defaults are
    carrot's: a durable, non-auto-delete ``direct`` exchange, persistent messages
    (``delivery_mode`` 2; 1, ``"transient"`` and ``"non-persistent"`` mean transient), and
    ``serializer`` None -- bytes as ``application/data``, str as ``text/plain``, anything
    else JSON.

    The publisher opens a channel of its own on ``connection`` (a
    :class:`~leveret.highlevel.Connection`) and declares the exchange there (unless it is
    the default exchange ``""`` or ``auto_declare`` is False).  ``confirm`` (default True)
    makes each :meth:`send` wait for the broker's confirm.  A channel error (``NotFound``
    for a missing exchange...) closes that channel; as with carrot, the next call opens a
    new one, so a program that catches the error carries on with the same publisher.
    """

    NONE_PERSISTENT_DELIVERY_MODE = 1
    TRANSIENT_DELIVERY_MODE = 1
    PERSISTENT_DELIVERY_MODE = 2
    DELIVERY_MODES = DELIVERY_MODES

    exchange: str = ""
    routing_key: Any = ""
    exchange_type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    auto_declare: bool = True
    serializer: str | None = None
    delivery_mode: int | str = PERSISTENT_DELIVERY_MODE
    confirm: bool = True

    def __init__(
        self,
        connection: Connection,
        exchange: str | None = None,
        routing_key: Any = None,
        exchange_type: str | None = None,
        durable: bool | None = None,
        auto_delete: bool | None = None,
        serializer: str | None = None,
        delivery_mode: int | str | None = None,
        auto_declare: bool | None = None,
        confirm: bool | None = None,
        **carrot_options: Any,
    ) -> None:
        unknown = set(carrot_options) - {"backend"}
        if unknown:
            raise TypeError(f"unexpected Publisher arguments: {', '.join(sorted(unknown))}")
        self.connection = connection
        self.exchange = exchange or self.exchange
        self.routing_key = routing_key or self.routing_key
        for name, value in (
            ("exchange_type", exchange_type), ("durable", durable), ("auto_delete", auto_delete),
            ("serializer", serializer), ("delivery_mode", delivery_mode),
            ("auto_declare", auto_declare), ("confirm", confirm),
        ):
            if value is not None:
                setattr(self, name, value)
        mode = _delivery_mode(self.delivery_mode)
        self.delivery_mode = self.PERSISTENT_DELIVERY_MODE if mode is None else mode
        self._closed = False
        #: The publisher's own transport channel.
        self.channel: Any = connection.channel()
        try:
            #: The exchange, as a leveret :class:`~leveret.highlevel.Exchange`.
            self.exchange_entity = Exchange(
                self.exchange, type=self.exchange_type, durable=self.durable,
                auto_delete=self.auto_delete, delivery_mode=self.delivery_mode,
            )
            #: The leveret :class:`~leveret.highlevel.Producer` doing the publishing.
            self.producer = Producer(
                self.channel, self.exchange_entity, serializer=self.serializer,
                auto_declare=False, confirm=self.confirm,
            )
            if self.auto_declare and self.exchange:
                self.declare()
        except BaseException:
            self._close_channel()
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: exchange={self.exchange!r} routing_key={self.routing_key!r}>"

    def _open_channel(self) -> Any:
        """The publisher's channel: a new one (``channel.open``, ``confirm.select``) when the
        broker closed the last with a channel error, as carrot's backends reopened theirs on
        next use.  A closed publisher stays closed."""
        channel = self.channel
        if not channel.is_open and not self._closed:
            channel = self.connection.channel()
            self.channel = channel
            self.producer.revive(channel)
        return channel

    def declare(self) -> None:
        """``exchange.declare`` of the publisher's exchange (``PreconditionFailed`` if it
        exists with other flags or type; the publisher's channel is closed then)."""
        self.exchange_entity.declare(channel=self._open_channel())

    def create_message(
        self,
        message_data: Any,
        delivery_mode: int | str | None = None,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
    ) -> ClientMessage:
        """The message :meth:`send` would publish, as a :class:`leveret.client.Message`.

        Without ``content_type`` the data is serialized with ``serializer`` (default: the
        publisher's); with it the data is sent as is: a str is encoded with
        ``content_encoding`` (default UTF-8), bytes are labelled ``binary`` unless
        ``content_encoding`` says otherwise.
        """
        mode = _delivery_mode(delivery_mode) or self.delivery_mode
        if not content_type:
            content_type, content_encoding, body = dumps(message_data, serializer or self.serializer)
        elif isinstance(message_data, str):
            content_encoding = content_encoding or "utf-8"
            body = message_data.encode(content_encoding)
        elif isinstance(message_data, (bytes, bytearray, memoryview)):
            content_encoding = content_encoding or "binary"
            body = bytes(message_data)
        else:
            raise TypeError(
                f"with content_type={content_type!r} the data must be bytes or str (already "
                f"serialized), not {type(message_data).__name__}"
            )
        properties: dict[str, Any] = {
            "delivery_mode": mode, "content_type": content_type, "content_encoding": content_encoding,
        }
        if priority is not None:
            properties["priority"] = priority
        return ClientMessage(body, **properties)

    def send(
        self,
        message_data: Any,
        routing_key: Any = None,
        delivery_mode: int | str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        exchange: str | None = None,
        **properties: Any,
    ) -> None:
        """Publish ``message_data`` (made into a message by :meth:`create_message`).

        ``routing_key`` and ``exchange`` default to the publisher's (an ``exchange`` given
        here must exist already).  For a ``headers`` exchange ``routing_key`` is the
        message's header table.  ``mandatory``: a message no queue takes raises
        :class:`~leveret.highlevel.exceptions.MessageReturned` (with confirms; without,
        it is dropped).  Beyond carrot's arguments, other keywords go to
        :meth:`leveret.highlevel.Producer.publish` (``headers``, ``compression``,
        ``correlation_id``, ``reply_to``, ...).

        With confirms, returns once the broker confirmed the message; a nack raises
        :class:`~leveret.client.PublishNacked`, a missing exchange ``NotFound`` (and closes
        the publisher's channel).
        """
        key, header_table = _split_headers_key(self.exchange_type, routing_key or self.routing_key)
        headers = properties.pop("headers", None)
        if header_table is not None:
            headers = {**header_table, **(headers or {})}
        message = self.create_message(
            message_data, delivery_mode=delivery_mode, priority=priority,
            content_type=content_type, content_encoding=content_encoding, serializer=serializer,
        )
        props = message.properties
        if self._closed:
            raise ChannelClosedError(f"{self!r} is closed: nothing was published")
        self._open_channel()
        self.producer.publish(
            message.body, routing_key=key, delivery_mode=props["delivery_mode"],
            mandatory=mandatory, immediate=immediate, priority=props.get("priority"),
            content_type=props["content_type"], content_encoding=props["content_encoding"],
            headers=headers, exchange=exchange or self.exchange, **properties,
        )

    def _close_channel(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None and channel.is_open:
            channel.close()

    def close(self) -> None:
        """Settle any pipelined publish and close the publisher's channel.  A second call
        does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.channel.is_open:
                self.producer.close()
        finally:
            self._close_channel()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------- consumer


class Consumer:
    """carrot's message consumer: ``Consumer(connection, queue=None, exchange=None,
    routing_key=None, exchange_type=None, durable=None, exclusive=None, auto_delete=None,
    no_ack=None, auto_ack=None, warn_if_exists=None, auto_declare=None,
    queue_arguments=None, accept=None, channel=None)``.

    Options left as None take the class attribute, so a subclass can configure the
    consumer (``queue = "feed"``, ``exchange = "feed"``, ``routing_key = "importer"``).
    carrot's defaults: a durable, non-exclusive, non-auto-delete queue on a ``direct``
    exchange; ``exclusive`` implies ``auto_delete``; for a ``headers`` exchange
    ``routing_key`` is the binding's match table.  ``no_ack``: the broker forgets each
    message on delivery.  ``auto_ack``: each message is acked before it reaches
    :meth:`receive`.  ``warn_if_exists``: warn (:class:`QueueAlreadyExistsWarning`) when the
    queue existed before :meth:`declare`.  ``accept``: serializer names or content types
    the consumer decodes (default: JSON and raw bodies; not pickle).

    The consumer opens a channel of its own on ``connection`` (``channel`` gives it one to
    share instead, which :meth:`close` leaves open) and, with ``auto_declare`` (default),
    declares the exchange, the queue and the binding.  Messages go to :meth:`receive`,
    which calls every callback registered with :meth:`register_callback` as
    ``callback(message_data, message)``; subclasses may override :meth:`receive` instead.

    A channel error (``NotFound`` for a queue deleted meanwhile...) closes the channel and
    the consumer on it; as with carrot, the next call that needs the channel opens a new
    one of its own (a shared ``channel`` is not replaced), so a program that catches the
    error can :meth:`declare` and carry on.  Consuming starts again with :meth:`consume`
    (or :meth:`wait`, :meth:`iterconsume`).
    """

    queue: str = ""
    exchange: str = ""
    routing_key: Any = ""
    exchange_type: str = "direct"
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    no_ack: bool = False
    auto_ack: bool = False
    warn_if_exists: bool = False
    auto_declare: bool = True
    queue_arguments: dict[str, Any] | None = None
    accept: Iterable[str] | None = None

    def __init__(
        self,
        connection: Connection,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: Any = None,
        exchange_type: str | None = None,
        durable: bool | None = None,
        exclusive: bool | None = None,
        auto_delete: bool | None = None,
        no_ack: bool | None = None,
        auto_ack: bool | None = None,
        warn_if_exists: bool | None = None,
        auto_declare: bool | None = None,
        queue_arguments: dict[str, Any] | None = None,
        accept: Iterable[str] | None = None,
        channel: Any = None,
        **carrot_options: Any,
    ) -> None:
        unknown = set(carrot_options) - _IGNORED_OPTIONS - {"binding_key"}
        if unknown:
            raise TypeError(f"unexpected Consumer arguments: {', '.join(sorted(unknown))}")
        if routing_key is None:
            routing_key = carrot_options.get("binding_key")
        self.connection = connection
        self.queue = queue or self.queue
        self.exchange = exchange or self.exchange
        self.routing_key = routing_key or self.routing_key
        for name, value in (
            ("exchange_type", exchange_type), ("durable", durable), ("exclusive", exclusive),
            ("auto_delete", auto_delete), ("no_ack", no_ack), ("auto_ack", auto_ack),
            ("warn_if_exists", warn_if_exists), ("auto_declare", auto_declare),
            ("queue_arguments", queue_arguments),
        ):
            if value is not None:
                setattr(self, name, value)
        if self.exclusive:
            self.auto_delete = True
        #: The content types this consumer decodes (None: the registry's default set).
        self.accept = prepare_accept_content(self.accept if accept is None else accept)
        self.callbacks: list[Callback] = []
        self._closed = False
        self._owns_channel = channel is None
        #: The consumer's transport channel.
        self.channel: Any = connection.channel() if channel is None else channel
        try:
            self._bind()
            self._inbox = _Inbox()
            if self.auto_declare:
                self.declare()
        except BaseException:
            if self._owns_channel and self.channel.is_open:
                self.channel.close()
            raise

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}: queue={self.queue!r} exchange={self.exchange!r} "
            f"routing_key={self.routing_key!r}>"
        )

    def _bind(self) -> None:
        #: The queue, as a leveret :class:`~leveret.highlevel.Queue` bound to
        #: :attr:`channel` (None when the consumer has no queue).
        self.queue_entity: Queue | None = self._make_queue()
        self._consumer = _Consumer(
            self.channel, [self.queue_entity] if self.queue_entity is not None else None,
            no_ack=self.no_ack, auto_declare=False, accept=self.accept,
            on_message=self._on_delivery,
            tag_prefix=f"{type(self).__module__}.{type(self).__name__}.",
        )

    def _open_channel(self) -> Any:
        """The consumer's channel: a new one of its own when the broker closed the last
        with a channel error (carrot's backends reopened theirs on next use).  Not for a
        shared channel, nor once the consumer is closed."""
        channel = self.channel
        if not channel.is_open and self._owns_channel and not self._closed:
            channel = self.connection.channel()
            self.channel = channel
            self._bind()
        return channel

    def _exchange_entity(self) -> Exchange:
        return Exchange(
            self.exchange or "", type=self.exchange_type, durable=self.durable,
            auto_delete=self.auto_delete,
        )

    def _make_queue(self) -> Queue | None:
        if not self.queue:
            return None
        key, binding_arguments = _split_headers_key(self.exchange_type, self.routing_key)
        return Queue(
            self.queue, self._exchange_entity(), key, channel=self.channel, durable=self.durable,
            exclusive=self.exclusive, auto_delete=self.auto_delete,
            queue_arguments=self.queue_arguments, binding_arguments=binding_arguments,
        )

    def _require_queue(self) -> Queue:
        if self.queue_entity is None:
            raise ValueError(f"{self!r} has no queue")
        return self.queue_entity

    # -- declaring

    def _queue_exists(self, name: str) -> bool:
        # A passive declare of a missing queue closes its channel: use a throwaway one.
        probe = self.connection.channel()
        try:
            probe.queue_declare(queue=name, passive=True)
            return True
        except NotFound:
            return False
        except ResourceLocked:  # exclusive to another connection: it exists
            return True
        finally:
            if probe.is_open:
                probe.close()

    def declare(self) -> Consumer:
        """Declare the exchange (``exchange.declare``, not for the default exchange), the
        queue (``queue.declare``) and the binding (``queue.bind``).  A declaration that
        conflicts with what exists raises ``PreconditionFailed`` and closes the channel."""
        channel = self._open_channel()
        queue = self.queue_entity
        if queue is None:
            if self.exchange:
                self._exchange_entity().declare(channel=channel)
            return self
        if self.warn_if_exists and self._queue_exists(queue.name):
            warnings.warn(
                QueueAlreadyExistsWarning(f"queue {queue.name!r} already exists"), stacklevel=2,
            )
        queue.declare(channel=channel)
        return self

    # -- callbacks

    def register_callback(self, callback: Callback) -> None:
        """Add a ``callback(message_data, message)`` for :meth:`receive` to call."""
        self.callbacks.append(callback)

    def receive(self, message_data: Any, message: Message) -> None:
        """Called with each message received by :meth:`wait`, :meth:`iterconsume`,
        ``fetch(enable_callbacks=True)`` and :meth:`process_next`: calls every registered
        callback.  ``NotImplementedError`` when there is none."""
        if not self.callbacks:
            raise NotImplementedError("No consumer callbacks registered")
        for callback in self.callbacks:
            callback(message_data, message)

    def _process(self, message: Message) -> None:
        if self.auto_ack and not message.acknowledged:
            message.ack()
        self.receive(message.payload, message)

    def _on_delivery(self, message: Message) -> None:
        self._inbox.put(self._process, message)

    # -- basic.get

    def fetch(
        self, no_ack: bool | None = None, auto_ack: bool | None = None, enable_callbacks: bool = False,
    ) -> Message | None:
        """The next message in the queue (``basic.get``), or None when it is empty.

        ``no_ack``/``auto_ack`` override the consumer's.  Unless one of them is set, the
        message must be acked (``message.ack()``), rejected or requeued.
        ``enable_callbacks``: also hand it to :meth:`receive` (decoding it first).
        """
        self._open_channel()
        queue = self._require_queue()
        no_ack = self.no_ack if no_ack is None else no_ack
        auto_ack = self.auto_ack if auto_ack is None else auto_ack
        message: Message | None = queue.get(no_ack=no_ack, accept=self.accept)
        if message is None:
            return None
        if auto_ack and not message.acknowledged:
            message.ack()
        if enable_callbacks:
            self.receive(message.payload, message)
        return message

    def process_next(self) -> Message | None:
        """Deprecated in carrot: ``fetch(enable_callbacks=True)``."""
        warnings.warn(
            "Consumer.process_next is deprecated; use Consumer.fetch(enable_callbacks=True)",
            DeprecationWarning, stacklevel=2,
        )
        return self.fetch(enable_callbacks=True)

    def iterqueue(self, limit: int | None = None, infinite: bool = False) -> Iterator[Message | None]:
        """Yield the queue's messages one ``basic.get`` at a time (callbacks are not
        called).  Stops when the queue is empty -- unless ``infinite``, which yields None
        then -- or after ``limit`` messages."""
        for count in itertools.count():
            if limit and count >= limit:
                return
            message = self.fetch()
            if message is None and not infinite:
                return
            yield message

    def discard_all(self, filterfunc: Callable[[Message], bool] | None = None) -> int:
        """Discard waiting messages; returns how many were discarded.

        Without ``filterfunc``: ``queue.purge`` (messages delivered and not yet acked are
        not touched).  With it: every waiting message is fetched (``basic.get``); those
        for which ``filterfunc(message)`` is true are acked (discarded), the others are put
        back in the queue (``basic.reject`` with requeue) once the queue is empty.  The
        filter needs acknowledgements: ``ValueError`` with ``no_ack`` or ``auto_ack``.
        """
        channel = self._open_channel()
        queue = self._require_queue()
        if not filterfunc:
            return queue.purge(channel=channel)
        if self.no_ack or self.auto_ack:
            raise ValueError("discard_all: cannot filter with auto_ack or no_ack")
        discarded = 0
        kept: list[Message] = []
        try:
            while True:
                message = self.fetch(no_ack=False, auto_ack=False)
                if message is None:
                    return discarded
                if filterfunc(message):
                    message.ack()
                    discarded += 1
                else:
                    kept.append(message)
        finally:
            if self.channel.is_open:
                for message in kept:
                    message.requeue()

    # -- basic.consume

    def consume(self, no_ack: bool | None = None) -> None:
        """``basic.consume`` on the queue (once: a consumer already running is left as
        is); deliveries then reach :meth:`receive` inside ``connection.drain_events()``."""
        self._open_channel()
        self._require_queue()
        self._consumer.consume(no_ack=self.no_ack if no_ack is None else no_ack)

    def _consuming(self) -> bool:
        queue = self.queue_entity
        return not self._closed and queue is not None and self._consumer.consuming_from(queue.name)

    def iterconsume(
        self, limit: int | None = None, no_ack: bool | None = None, timeout: float | None = None,
    ) -> Iterator[bool]:
        """Start consuming (:meth:`consume`, sent now) and return an iterator that
        processes one message per step (through :meth:`receive`) and yields True.

        It ends after ``limit`` messages (None or 0: never), or when the consumer is
        cancelled (:meth:`cancel`, or by the broker).  ``timeout`` (leveret's addition):
        a step that waits longer than that many seconds raises ``TimeoutError``.
        Deliveries received beyond ``limit`` wait for the next step, or go back to the
        queue on :meth:`cancel`/:meth:`close`.
        """
        self.consume(no_ack=no_ack)
        return self._iterate(limit, timeout)

    def _iterate(self, limit: int | None, timeout: float | None) -> Iterator[bool]:
        done = 0
        while not limit or done < limit:
            if not self._inbox.step(self.connection, timeout, self._consuming):
                return
            done += 1
            yield True

    def wait(self, limit: int | None = None, timeout: float | None = None) -> None:
        """Consume and process messages: for ever, or until ``limit`` were processed or the
        consumer was cancelled.  ``timeout`` as in :meth:`iterconsume`."""
        for _ in self.iterconsume(limit, timeout=timeout):
            pass

    def cancel(self) -> None:
        """``basic.cancel`` the running consumer (if any).  Deliveries received and not
        processed go back to the queue."""
        try:
            self._consumer.cancel()
        finally:
            self._inbox.requeue()

    # -- channel

    def qos(self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False) -> None:
        """``basic.qos`` on the consumer's channel (applies to consumers started after it)."""
        self._open_channel()
        self._consumer.qos(prefetch_size, prefetch_count, apply_global)

    def flow(self, active: bool) -> bool:
        """``channel.flow``: ask the broker to pause or resume deliveries on this channel
        (RabbitMQ refuses to pause: 540 not-implemented, closing the connection)."""
        self._open_channel()
        return self._consumer.flow(active)

    def close(self) -> None:
        """Cancel, and close the consumer's channel (the broker requeues every message
        delivered and not acked).  A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.channel.is_open:
                self.cancel()
        finally:
            self._inbox.items.clear()
            if self._owns_channel and self.channel.is_open:
                self.channel.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------- consumer set


class ConsumerSet:
    """Consume from several queues on one channel: ``ConsumerSet(connection,
    from_dict=None, consumers=None, callbacks=None, on_decode_error=None, auto_ack=None,
    accept=None)``.

    ``from_dict`` is carrot's configuration format, queue name -> :class:`Consumer`
    options (``binding_key`` is the routing key; ``default_routing_key`` is ignored)::

        {"webshot": {"exchange": "link_exchange", "exchange_type": "topic",
                     "binding_key": "links.webshot"},
         "retrieve": {"exchange": "link_exchange", "exchange_type": "topic",
                      "binding_key": "links.*"}}

    (Each consumer declares the exchange with its own ``durable`` and ``auto_delete``, as
    in carrot: consumers of one exchange must agree on them, or the second declaration
    fails with ``PreconditionFailed``.)

    Consumers made from it share the set's channel; :meth:`add_consumer` adds an existing
    :class:`Consumer` (its queue is consumed on the set's channel).  A message goes to the
    consumer's own :meth:`Consumer.receive` when that consumer has callbacks, else to the
    set's :meth:`receive` (through :meth:`register_callback`'s callbacks); a body the set
    cannot decode goes to ``on_decode_error(message, exc)`` when given.
    """

    auto_ack: bool = False
    on_decode_error: DecodeErrorHandler | None = None

    def __init__(
        self,
        connection: Connection,
        from_dict: Mapping[str, Mapping[str, Any]] | None = None,
        consumers: Iterable[Consumer] | None = None,
        callbacks: Iterable[Callback] | None = None,
        on_decode_error: DecodeErrorHandler | None = None,
        auto_ack: bool | None = None,
        accept: Iterable[str] | None = None,
    ) -> None:
        self.connection = connection
        self.from_dict: dict[str, Mapping[str, Any]] = dict(from_dict or {})
        self.callbacks: list[Callback] = list(callbacks or ())
        if on_decode_error is not None:
            self.on_decode_error = on_decode_error
        if auto_ack is not None:
            self.auto_ack = auto_ack
        self.accept = accept
        self.consumers: list[Consumer] = []
        self._closed = False
        self._consuming: dict[str, _Consumer] = {}  # queue name -> leveret consumer
        self._cancelled: set[str] = set()  # queues given to cancel_by_queue
        self._inbox = _Inbox()
        #: The set's transport channel.
        self.channel: Any = connection.channel()
        try:
            for consumer in consumers or ():
                self.add_consumer(consumer)
            for queue, options in self.from_dict.items():
                self.add_consumer_from_dict(queue, **options)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {[c.queue for c in self.consumers]}>"

    def add_consumer_from_dict(self, queue: str, **options: Any) -> Consumer:
        """Add a :class:`Consumer` of ``queue`` made from carrot's options (declared now,
        on the set's channel); returns it."""
        if options.get("routing_key") is None:
            options["routing_key"] = options.pop("binding_key", None)
        else:
            options.pop("binding_key", None)
        if options.get("accept") is None:
            options["accept"] = self.accept
        consumer = Consumer(self.connection, queue=queue, channel=self.channel, **options)
        self.consumers.append(consumer)
        return consumer

    def add_consumer(self, consumer: Consumer) -> None:
        """Add an existing :class:`Consumer`."""
        self.consumers.append(consumer)

    def register_callback(self, callback: Callback) -> None:
        """Add a ``callback(message_data, message)`` for :meth:`receive` to call."""
        self.callbacks.append(callback)

    def receive(self, message_data: Any, message: Message) -> None:
        """Call every registered callback; ``NotImplementedError`` when there is none."""
        if not self.callbacks:
            raise NotImplementedError("No consumer callbacks registered")
        for callback in self.callbacks:
            callback(message_data, message)

    def _process(self, message: Message) -> None:
        if self.auto_ack and not message.acknowledged:
            message.ack()
        try:
            decoded = message.decode()
        except Exception as exc:
            if self.on_decode_error is None:
                raise
            self.on_decode_error(message, exc)
            return
        self.receive(decoded, message)

    def _consume_one(self, consumer: Consumer) -> None:
        queue = consumer._require_queue()
        if queue.name in self._consuming or queue.name in self._cancelled:
            return
        handler = consumer._process if consumer.callbacks else self._process
        inner = _Consumer(
            self.channel, [queue], no_ack=consumer.no_ack, auto_declare=False,
            accept=consumer.accept, on_message=functools.partial(self._inbox.put, handler),
            tag_prefix=f"{type(consumer).__module__}.{type(consumer).__name__}.",
        )
        inner.consume()
        self._consuming[queue.name] = inner

    def consume(self) -> None:
        """``basic.consume`` on every consumer's queue not consumed from yet (nor stopped
        by :meth:`cancel_by_queue`)."""
        for consumer in self.consumers:
            self._consume_one(consumer)

    def _alive(self) -> bool:
        return not self._closed and any(
            inner.consuming_from(name) for name, inner in self._consuming.items()
        )

    def iterconsume(self, limit: int | None = None, timeout: float | None = None) -> Iterator[bool]:
        """Consume from every queue (:meth:`consume`, sent now) and return an iterator
        that processes one message per step and yields True; see
        :meth:`Consumer.iterconsume`."""
        self.consume()
        return self._iterate(limit, timeout)

    def _iterate(self, limit: int | None, timeout: float | None) -> Iterator[bool]:
        done = 0
        while not limit or done < limit:
            if not self._inbox.step(self.connection, timeout, self._alive):
                return
            done += 1
            yield True

    def discard_all(self) -> int:
        """``queue.purge`` of every consumer's queue; returns the total discarded."""
        return sum(consumer.discard_all() for consumer in self.consumers)

    def qos(self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False) -> None:
        """``basic.qos`` on the set's channel."""
        self.channel.basic_qos(prefetch_size, prefetch_count, a_global=apply_global)

    def flow(self, active: bool) -> bool:
        """``channel.flow`` on the set's channel (see :meth:`Consumer.flow`)."""
        return bool(self.channel.flow(active))

    def cancel(self) -> None:
        """``basic.cancel`` every running consumer; deliveries received and not processed
        go back to their queues."""
        inners = list(self._consuming.values())
        self._consuming.clear()
        try:
            for inner in inners:
                inner.cancel()
        finally:
            self._inbox.requeue()

    def cancel_by_queue(self, queue: str) -> None:
        """Stop consuming from ``queue`` for good: later :meth:`consume` and
        :meth:`iterconsume` calls leave it out.  ``KeyError`` if it is not consumed from."""
        inner = self._consuming.pop(queue)
        self._cancelled.add(queue)
        inner.cancel()

    def close(self) -> None:
        """Cancel, close every consumer, and close the set's channel."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.channel.is_open:
                self.cancel()
            for consumer in self.consumers:
                consumer.close()
        finally:
            self._inbox.items.clear()
            if self.channel.is_open:
                self.channel.close()

    def __enter__(self) -> ConsumerSet:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------- messaging


class Messaging:
    """A publisher and a consumer of the same exchange, queue and routing key:
    ``Messaging(connection, exchange=None, queue=None, routing_key=None, serializer=None,
    accept=None)`` (options default to the class attributes).  :meth:`send` publishes;
    messages the consumer receives go to :meth:`receive` and the registered callbacks."""

    queue: str = ""
    exchange: str = ""
    routing_key: Any = ""
    publisher_cls: type[Publisher] = Publisher
    consumer_cls: type[Consumer] = Consumer

    def __init__(
        self,
        connection: Connection,
        exchange: str | None = None,
        queue: str | None = None,
        routing_key: Any = None,
        serializer: str | None = None,
        accept: Iterable[str] | None = None,
    ) -> None:
        self.connection = connection
        self.exchange = self.exchange if exchange is None else exchange
        self.queue = self.queue if queue is None else queue
        self.routing_key = self.routing_key if routing_key is None else routing_key
        self.callbacks: list[Callback] = []
        self._closed = False
        self.publisher = self.publisher_cls(
            connection, exchange=self.exchange, routing_key=self.routing_key, serializer=serializer,
        )
        try:
            self.consumer = self.consumer_cls(
                connection, queue=self.queue, exchange=self.exchange, routing_key=self.routing_key,
                accept=accept,
            )
        except BaseException:
            self.publisher.close()
            raise
        self.consumer.register_callback(self.receive)

    def register_callback(self, callback: Callback) -> None:
        """Add a ``callback(message_data, message)``."""
        self.callbacks.append(callback)

    def receive(self, message_data: Any, message: Message) -> None:
        """Call every registered callback; ``NotImplementedError`` when there is none."""
        if not self.callbacks:
            raise NotImplementedError("No consumer callbacks registered")
        for callback in self.callbacks:
            callback(message_data, message)

    def send(self, message_data: Any, delivery_mode: int | str | None = None) -> None:
        """Publish ``message_data`` (see :meth:`Publisher.send`)."""
        self.publisher.send(message_data, delivery_mode=delivery_mode)

    def fetch(self, **kwargs: Any) -> Message | None:
        """The next message (see :meth:`Consumer.fetch`)."""
        return self.consumer.fetch(**kwargs)

    def close(self) -> None:
        """Close the consumer and the publisher."""
        if self._closed:
            return
        self._closed = True
        try:
            self.consumer.close()
        finally:
            self.publisher.close()

    def __enter__(self) -> Messaging:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
