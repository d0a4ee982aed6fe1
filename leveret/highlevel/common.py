"""Helpers kombu keeps in ``kombu.common``, with its names and call shapes.

* :class:`Broadcast`: a queue of one's own on a fanout exchange, so that every consumer
  gets every message.
* :func:`eventloop`, :func:`drain_consumer`, :func:`itermessages`: consuming as a loop or
  a generator.
* :func:`send_reply`, :func:`collect_replies`: the two halves of request/reply over a
  reply queue (``reply_to`` and ``correlation_id``).
* :func:`ignore_errors`, :func:`uuid`, :func:`maybe_declare`, :func:`declaration_cached`.

::

    from leveret import Connection
    from leveret.highlevel.common import Broadcast, itermessages

    with Connection("amqp://guest:guest@localhost//") as conn:
        news = Broadcast("news")              # exchange "news" (fanout), queue "bcast.<uuid>"
        with conn.channel() as channel:
            for body, message in itermessages(conn, channel, news, limit=10, timeout=5):
                print(body)                   # acknowledge as usual: message.ack()
"""

from __future__ import annotations

import contextlib
import itertools
import uuid as _uuid
from collections import deque
from typing import Any, Callable, Generator, Iterable, Iterator

from .entity import Exchange, Queue, declared_entities, maybe_channel, maybe_declare
from .message import Message
from .messaging import Consumer, Producer
from .serialization import registry

__all__ = [
    "Broadcast",
    "collect_replies",
    "declaration_cached",
    "drain_consumer",
    "eventloop",
    "ignore_errors",
    "itermessages",
    "maybe_declare",
    "send_reply",
    "uuid",
]


def uuid() -> str:
    """A random UUID (version 4) as a string, e.g. for a ``correlation_id``."""
    return str(_uuid.uuid4())


class Broadcast(Queue):
    """A queue that receives every message published to the fanout exchange ``name``.

    Each ``Broadcast`` gets a queue of its own, ``bcast.<uuid>`` (or ``queue``, if given;
    ``unique=True`` appends a uuid to it), auto-delete by default: it goes away with its
    last consumer.  Declaring it declares the exchange (fanout, unless ``exchange`` is
    given), the queue and the binding; consuming from it in several processes delivers
    each message to all of them.  ``alias`` defaults to ``name``.  Other keywords are
    :class:`~leveret.highlevel.Queue`'s.
    """

    def __init__(
        self,
        name: str | None = None,
        queue: str | None = None,
        unique: bool = False,
        auto_delete: bool = True,
        exchange: Exchange | None = None,
        alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if unique:
            queue = f"{queue or 'bcast'}.{uuid()}"
        else:
            queue = queue or f"bcast.{uuid()}"
        if exchange is None:
            exchange = Exchange(name or "", type="fanout")
        super().__init__(queue, exchange=exchange, auto_delete=auto_delete,
                         alias=alias or name, **kwargs)


def declaration_cached(entity: Exchange | Queue, channel: Any) -> bool:
    """Whether :func:`maybe_declare` would skip ``entity`` on ``channel``'s connection (it
    declared exactly that already)."""
    return entity._declaration_key() in declared_entities(maybe_channel(channel))


def eventloop(conn: Any, limit: int | None = None, timeout: float | None = None,
              ignore_timeouts: bool = False) -> Generator[None, None, None]:
    """Call ``conn.drain_events(timeout=timeout)`` ``limit`` times (None: for ever),
    yielding after each.

    A timeout raises ``TimeoutError`` (``socket.timeout``) unless ``ignore_timeouts``:
    then the loop yields and goes on, which lets the caller look at the clock or a flag.
    Errors of the connection and of a consumer's channel (see
    :meth:`Connection.drain_events`) propagate.
    """
    for _ in range(limit) if limit is not None else itertools.count():
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            if timeout is not None and not ignore_timeouts:
                raise
        yield None


def drain_consumer(consumer: Consumer, limit: int | None = 1, timeout: float | None = None,
                   callbacks: Iterable[Callable[[Any, Message], Any]] | None = None,
                   ) -> Generator[tuple[Any, Message], None, None]:
    """Consume with ``consumer`` and yield ``(body, message)`` for each message.

    Consumes (``basic.consume``) for as long as the generator runs, and cancels when it is
    closed or exhausted.  ``limit`` bounds the number of ``drain_events`` calls (None: no
    bound), each waiting at most ``timeout`` seconds; a call that times out ends nothing
    but yields nothing either.  The consumer's callbacks are replaced by the one that
    collects the messages, followed by ``callbacks``.  Messages are not acknowledged for
    you (unless the consumer is ``no_ack``).
    """
    collected: deque[tuple[Any, Message]] = deque()

    def collect(body: Any, message: Message) -> None:
        collected.append((body, message))

    consumer.callbacks = [collect, *(callbacks or ())]
    conn = consumer.connection
    if conn is None:
        raise TypeError(f"{consumer!r} is not on a channel of a leveret.highlevel.Connection")
    with consumer:
        for _ in eventloop(conn, limit=limit, timeout=timeout, ignore_timeouts=True):
            while collected:
                yield collected.popleft()


def itermessages(conn: Any, channel: Any, queue: Queue, limit: int | None = 1,
                 timeout: float | None = None,
                 callbacks: Iterable[Callable[[Any, Message], Any]] | None = None,
                 **kwargs: Any) -> Generator[tuple[Any, Message], None, None]:
    """:func:`drain_consumer` with a new :class:`Consumer` on ``channel`` for ``queue``
    (``kwargs`` are the consumer's: ``no_ack``, ``accept``, ``prefetch_count``...).
    ``conn`` is accepted for kombu's signature; the channel's connection is drained."""
    consumer = Consumer(channel, queues=[queue], **kwargs)
    return drain_consumer(consumer, limit=limit, timeout=timeout, callbacks=callbacks)


def send_reply(exchange: Exchange | str, req: Message, msg: Any, producer: Producer | None = None,
               retry: bool = False, retry_policy: dict[str, Any] | None = None,
               **props: Any) -> None:
    """Publish ``msg`` as the reply to the request ``req``.

    It goes to ``exchange`` with the request's ``reply_to`` as routing key and its
    ``correlation_id``, serialized as the request was (its content type; the producer's
    serializer when the request's is not a registered one) -- what the requester's
    :func:`collect_replies` expects.  ``props`` override any of these or add publish
    options.  ``producer`` is required (kombu's signature keeps it optional).
    """
    if producer is None:
        raise TypeError("send_reply needs a producer")
    reply_to = req.properties.get("reply_to")
    if not reply_to:
        raise ValueError(f"the request has no reply_to to answer to: {req!r}")
    options: dict[str, Any] = {
        "routing_key": reply_to,
        "correlation_id": req.properties.get("correlation_id"),
    }
    serializer = registry.type_to_name.get(req.content_type or "")
    if serializer is not None:
        options["serializer"] = serializer
        if req.content_encoding:
            options["content_encoding"] = req.content_encoding
    options.update(props)
    producer.publish(msg, exchange=exchange, retry=retry, retry_policy=retry_policy, **options)


def collect_replies(conn: Any, channel: Any, queue: Queue, *args: Any,
                    **kwargs: Any) -> Generator[Any, None, None]:
    """Yield the bodies of the replies arriving in ``queue`` (:func:`itermessages`'s
    arguments: ``limit``, ``timeout``, consumer options).

    ``no_ack`` defaults to True (a reply queue is usually private); with ``no_ack=False``
    each reply is acknowledged before it is yielded.
    """
    no_ack = kwargs.setdefault("no_ack", True)
    for body, message in itermessages(conn, channel, queue, *args, **kwargs):
        if not no_ack:
            message.ack()
        yield body


@contextlib.contextmanager
def _ignoring(conn: Any) -> Iterator[None]:
    try:
        yield
    except tuple(conn.connection_errors) + tuple(conn.channel_errors):
        pass


def ignore_errors(conn: Any, fun: Callable[..., Any] | None = None, *args: Any,
                  **kwargs: Any) -> Any:
    """Run ``fun(*args, **kwargs)``, returning None instead of raising when it fails with
    one of ``conn``'s connection or channel errors (a cleanup that may find the connection
    gone).  Without ``fun``, a context manager that does the same for its block."""
    if fun is None:
        return _ignoring(conn)
    with _ignoring(conn):
        return fun(*args, **kwargs)
    return None
