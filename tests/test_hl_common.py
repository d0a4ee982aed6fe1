"""leveret.highlevel.common: kombu.common's helpers, on memory:// and on the private node."""

from __future__ import annotations

import pickle
import time
from typing import Any, Callable

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import unique

from leveret.client import NotFound
from leveret.highlevel import Connection, Exchange, Message, Producer, Queue
from leveret.highlevel.common import (
    Broadcast,
    collect_replies,
    declaration_cached,
    drain_consumer,
    eventloop,
    ignore_errors,
    itermessages,
    maybe_declare,
    send_reply,
    uuid,
)
from leveret.highlevel.messaging import Consumer


def consumers_of(conn: Connection, queue: str) -> int:
    with conn.channel() as ch:
        return int(ch.queue_declare(queue, passive=True).consumer_count)


def test_uuid_is_a_fresh_uuid4() -> None:
    import uuid as std

    first, second = uuid(), uuid()
    assert first != second
    assert std.UUID(first).version == 4


def test_broadcast_names() -> None:
    anonymous = Broadcast("news")
    assert anonymous.name.startswith("bcast.") and anonymous.name != Broadcast("news").name
    assert anonymous.exchange.name == "news" and anonymous.exchange.type == "fanout"
    assert anonymous.auto_delete and anonymous.alias == "news"
    assert Broadcast("news", queue="mine").name == "mine"
    named = Broadcast("news", queue="mine", unique=True)
    assert named.name.startswith("mine.") and len(named.name) > len("mine.") + 30
    assert Broadcast("news", exchange=Exchange("other", type="topic")).exchange.name == "other"
    copy = pickle.loads(pickle.dumps(named))
    assert (type(copy), copy.name, copy.exchange, copy.auto_delete) == (
        Broadcast, named.name, named.exchange, True)


def test_every_broadcast_queue_gets_every_message(hl_conn: Connection) -> None:
    topic = unique("bcast")
    listeners = [Broadcast(topic), Broadcast(topic)]
    got: list[list[Any]] = [[], []]
    def into(box: list[Any]) -> Callable[[Any, Message], None]:
        return lambda body, message: box.append(body)

    consumers = [
        Consumer(hl_conn.channel(), queues=[queue], no_ack=True, callbacks=[into(box)])
        for queue, box in zip(listeners, got)
    ]
    for consumer in consumers:
        consumer.consume()
    producer = Producer(hl_conn, exchange=listeners[0].exchange)
    for n in range(3):
        producer.publish({"n": n})
    deadline = time.monotonic() + 10
    while any(len(box) < 3 for box in got):
        assert time.monotonic() < deadline, got
        try:
            hl_conn.drain_events(timeout=0.5)
        except TimeoutError:
            pass
    assert got == [[{"n": 0}, {"n": 1}, {"n": 2}]] * 2
    name = listeners[0].name
    for consumer in consumers:
        consumer.cancel()
    # auto-delete: each queue went with its consumer (RabbitMQ: a moment later).
    deadline = time.monotonic() + 5
    while True:
        try:
            consumers_of(hl_conn, name)
        except NotFound:
            break
        assert time.monotonic() < deadline, "the broadcast queue outlived its consumer"
        time.sleep(0.05)


def test_eventloop_limit_and_timeouts(hl_conn: Connection) -> None:
    queue = Queue(unique("loop"), exclusive=True)
    got: list[Any] = []
    with Consumer(hl_conn, queues=[queue], no_ack=True, callbacks=[lambda b, m: got.append(b)]):
        Producer(hl_conn).publish("a", routing_key=queue.name)
        Producer(hl_conn).publish("b", routing_key=queue.name)
        for _ in eventloop(hl_conn, timeout=5):  # until a timeout would be an error
            if len(got) == 2:
                break
        assert got == ["a", "b"]
        with pytest.raises(TimeoutError):
            next(eventloop(hl_conn, timeout=0.1))
        start = time.monotonic()
        assert len(list(eventloop(hl_conn, limit=3, timeout=0.1, ignore_timeouts=True))) == 3
        assert time.monotonic() - start >= 0.25
        assert got == ["a", "b"]


def test_itermessages_consumes_only_while_it_runs(hl_conn: Connection) -> None:
    queue = Queue(unique("iter"))
    channel = hl_conn.channel()
    queue(channel).declare()
    try:
        producer = Producer(hl_conn)
        for n in range(3):
            producer.publish({"n": n}, routing_key=queue.name)
        messages = itermessages(hl_conn, channel, queue, limit=None, timeout=5, prefetch_count=10)
        seen = []
        for body, message in messages:
            seen.append(body)
            message.ack()
            assert consumers_of(hl_conn, queue.name) == 1
            if len(seen) == 3:
                break
        # What leaving a for loop early leaves to the garbage collector: close() stops the
        # generator (typed as one: a type checker lets users call close()).
        messages.close()
        assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert consumers_of(hl_conn, queue.name) == 0
        with hl_conn.channel() as ch:
            assert ch.queue_declare(queue.name, passive=True).message_count == 0
        # limit bounds the waits: nothing there, one timed-out wait, nothing yielded.
        assert list(itermessages(hl_conn, channel, queue, limit=1, timeout=0.1)) == []
    finally:
        with hl_conn.channel() as ch:
            ch.queue_delete(queue.name)


def test_drain_consumer_keeps_the_callbacks_given(hl_conn: Connection) -> None:
    queue = Queue(unique("drain"), exclusive=True)
    also: list[Any] = []
    consumer = Consumer(hl_conn.channel(), queues=[queue], no_ack=True)
    consumer.declare()
    Producer(hl_conn).publish(b"raw", routing_key=queue.name)
    pairs = list(drain_consumer(consumer, limit=1, timeout=5, callbacks=[lambda b, m: also.append(b)]))
    assert [body for body, _ in pairs] == [b"raw"] and also == [b"raw"]
    assert pairs[0][1].delivery_info["routing_key"] == queue.name


def test_send_reply_and_collect_replies(hl_conn: Connection) -> None:
    requests = Queue(unique("rpc"), exclusive=True)
    replies = Queue(unique("rpc-replies"), exclusive=True)
    client = hl_conn.channel()
    server = hl_conn.channel()
    requests(server).declare()
    replies(client).declare()

    correlation = uuid()
    Producer(client).publish({"question": 6 * 7}, routing_key=requests.name,
                              reply_to=replies.name, correlation_id=correlation)
    producer = Producer(server)
    for body, request in itermessages(hl_conn, server, requests, limit=1, timeout=5):
        send_reply("", request, {"answer": body["question"]}, producer=producer)
        request.ack()

    received: list[Any] = []
    answers = list(collect_replies(hl_conn, client, replies, limit=1, timeout=5,
                                   callbacks=[lambda b, m: received.append(m)]))
    assert answers == [{"answer": 42}]
    assert received[0].properties["correlation_id"] == correlation
    assert received[0].content_type == "application/json"


def test_send_reply_needs_a_producer_and_a_reply_to(hl_conn: Connection) -> None:
    queue = Queue(unique("noreply"), exclusive=True)
    channel = hl_conn.channel()
    queue(channel).declare()
    Producer(channel).publish({"q": 1}, routing_key=queue.name)
    ((_, request),) = list(itermessages(hl_conn, channel, queue, limit=1, timeout=5, no_ack=True))
    with pytest.raises(ValueError, match="no reply_to"):
        send_reply("", request, {}, producer=Producer(channel))
    with pytest.raises(TypeError, match="needs a producer"):
        send_reply("", request, {})


def test_ignore_errors_swallows_connection_and_channel_errors_only(hl_conn: Connection) -> None:
    channel = hl_conn.channel()
    assert ignore_errors(hl_conn, channel.queue_declare, unique("missing"), passive=True) is None
    assert not channel.is_open
    assert ignore_errors(hl_conn, lambda: 42) == 42
    with ignore_errors(hl_conn):
        hl_conn.channel().queue_declare(unique("missing"), passive=True)
    with pytest.raises(ZeroDivisionError):
        ignore_errors(hl_conn, lambda: 1 / 0)


def test_declaration_cached_follows_maybe_declare(hl_conn: Connection) -> None:
    exchange = Exchange(unique("cached"), type="topic", auto_delete=False)
    channel = hl_conn.channel()
    try:
        assert not declaration_cached(exchange, channel)
        assert maybe_declare(exchange, channel)
        assert declaration_cached(exchange, channel)
        assert not maybe_declare(exchange, channel)
    finally:
        channel.exchange_delete(exchange.name)


def test_request_reply_through_direct_reply_to(hl_conn: Connection, kind: str) -> None:
    # RabbitMQ's pseudo-queue needs no declaration (auto_declare=False) and no acks (no_ack);
    # the request goes out on the channel that consumes from it.
    if kind == "memory":
        assert hl_conn.connection.server_properties["capabilities"]["direct_reply_to"] is False
        return
    requests = Queue(unique("rpc"), exclusive=True)
    server = hl_conn.channel()
    requests(server).declare()
    client = hl_conn.channel()
    replies = Queue("amq.rabbitmq.reply-to", no_ack=True)
    answers: list[Any] = []
    with Consumer(client, queues=[replies], auto_declare=False,
                  callbacks=[lambda body, message: answers.append((body, message))]):
        Producer(client).publish({"question": 6 * 7}, routing_key=requests.name,
                                  reply_to=replies.name, correlation_id="c-42")
        producer = Producer(server)
        for body, request in itermessages(hl_conn, server, requests, limit=1, timeout=5, no_ack=True):
            assert request.properties["reply_to"].startswith("amq.rabbitmq.reply-to.")
            send_reply("", request, {"answer": body["question"]}, producer=producer)
        deadline = time.monotonic() + 5
        while not answers:
            assert time.monotonic() < deadline, "no reply"
            try:
                hl_conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    ((body, message),) = answers
    assert body == {"answer": 42}
    assert message.properties["correlation_id"] == "c-42"
