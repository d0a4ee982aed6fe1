"""Producer and Consumer against the real broker (and memory://).

What is checked is what a user relies on: a message published comes out equal on the
other side, with kombu's content types and headers; a publish the broker did not take
raises; deliveries respect prefetch, cancel and the accept list; a consumer whose queue
is deleted is told so without the event loop dying.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
import zlib
from typing import Any, Iterator

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import ack_into, got, lose_memory_connection, return_bodies_into, returns_of, unique

from leveret.client import Channel as ClientChannel
from leveret.client import ChannelClosedError, NotFound, PublishNacked
from leveret.client import Connection as ClientConnection
from leveret.highlevel import (
    Connection,
    Consumer,
    ContentDisallowed,
    DecompressedSizeExceeded,
    Empty,
    Exchange,
    Message,
    MessageReturned,
    NotBoundError,
    Producer,
    Queue,
    SimpleQueue,
)
from leveret.wire.errors import LocalProtocolError


def drain(conn: Connection, until: Any, timeout: float = 5.0) -> None:
    """drain_events until ``until()`` is true (TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("condition not met")
        try:
            conn.drain_events(timeout=left)
        except TimeoutError:
            pass


def _or_none(get_nowait: Any) -> Any:
    try:
        return get_nowait()
    except Empty:
        return None


def eventually_get(get: Any, timeout: float = 5.0) -> Any:
    """``get()`` until it returns a message (the publish may still be on its way)."""
    deadline = time.monotonic() + timeout
    while (message := get()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no message")
        time.sleep(0.01)
    return message


def collect(conn: Connection, queue: Queue, n: int, **consumer_options: Any) -> list[Message]:
    """Consume ``n`` messages from ``queue`` (acking them)."""
    got: list[Message] = []

    def on_message(message: Message) -> None:
        got.append(message)
        if not message.acknowledged:
            message.ack()

    with Consumer(conn, [queue], on_message=on_message, **consumer_options):
        drain(conn, lambda: len(got) >= n)
    return got


def ready(conn: Connection, name: str) -> int:
    ch = conn.channel()
    try:
        return int(ch.queue_declare(name, passive=True)[1])
    finally:
        ch.close()


@pytest.fixture
def queue(hl_conn: Connection) -> Iterator[Queue]:
    """A queue that outlives its consumers (not auto-delete), deleted after the test."""
    q = Queue(unique("q"), Exchange(unique("ex"), auto_delete=True), "rk", durable=False)
    q(hl_conn).declare()
    yield q
    q(hl_conn.channel()).delete()


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "body, serializer, content_type, decoded",
    [
        ({"a": [1, 2, {"b": None}], "é": 1.5}, None, "application/json", {"a": [1, 2, {"b": None}], "é": 1.5}),
        ([1, "two"], "json", "application/json", [1, "two"]),
        (b"\x00\xffraw", None, "application/data", b"\x00\xffraw"),
        ("text é", None, "text/plain", "text é"),
    ],
    ids=["json-default", "json-explicit", "bytes", "str"],
)
def test_round_trip(hl_conn: Connection, queue: Queue, body: Any, serializer: str | None,
                    content_type: str, decoded: Any) -> None:
    producer = Producer(hl_conn, queue.exchange, routing_key="rk", serializer=serializer)
    producer.publish(body, headers={"h": "v"}, correlation_id="c-1")
    got: list[tuple[Any, Message]] = []
    def take(body: Any, message: Message) -> None:
        got.append((body, message))
        message.ack()

    with Consumer(hl_conn, queue, callbacks=[take]):
        drain(hl_conn, lambda: got)
    body_out, message = got[0]
    assert body_out == decoded
    assert message.content_type == content_type
    assert message.headers == {"h": "v"}
    assert message.properties["correlation_id"] == "c-1"
    assert message.properties["delivery_mode"] == 2  # persistent by default
    assert message.delivery_info["routing_key"] == "rk"


def test_explicit_content_type_sends_the_body_as_is(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    producer.publish('{"pre": "serialized"}', content_type="application/json")
    with pytest.raises(TypeError):
        producer.publish({"not": "bytes"}, content_type="application/json")
    [m] = collect(hl_conn, queue, 1)
    assert m.payload == {"pre": "serialized"}
    assert m.content_encoding == "utf-8"


def test_zlib_compression_round_trip(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk", compression="zlib")
    data = {"text": "abc" * 1000}
    producer.publish(data)
    raw = queue(hl_conn).channel.basic_get(queue.name, no_ack=True)
    assert raw.headers["compression"] == "application/x-gzip"
    assert len(raw.body) < 200
    assert json.loads(zlib.decompress(raw.body)) == data
    producer.publish(data)
    [m] = collect(hl_conn, queue, 1)
    assert m.payload == data


def test_consumers_take_a_bound_on_decompressed_bodies(hl_conn: Connection, queue: Queue) -> None:
    """Consumer, Queue.get and SimpleQueue take max_decompressed_size (only Message did)."""
    producer = Producer(hl_conn, queue.exchange, "rk", compression="zlib")
    data = {"text": "abc" * 1000}  # 3 kB of JSON, about 100 bytes compressed
    producer.publish(data)
    errors: list[Exception] = []

    def on_decode_error(message: Message, exc: Exception) -> None:
        errors.append(exc)
        message.ack()

    consumer = Consumer(hl_conn, [queue], on_decode_error=on_decode_error,
                        callbacks=[lambda body, m: m.ack()], max_decompressed_size=1000)
    with consumer:
        drain(hl_conn, lambda: errors)
    assert isinstance(errors[0], DecompressedSizeExceeded)
    producer.publish(data)
    got = eventually_get(lambda: queue(hl_conn).get(max_decompressed_size=1000))
    assert got is not None and isinstance(got.errors[0], DecompressedSizeExceeded)
    got.ack()
    producer.publish(data)
    simple = hl_conn.SimpleQueue(queue, max_decompressed_size=1000)
    try:
        message = eventually_get(lambda: _or_none(simple.get_nowait))  # basic.get: no consumer yet
        with pytest.raises(DecompressedSizeExceeded):
            message.decode()
        message.ack()
        producer.publish(data)
        message = simple.get(timeout=10)  # the consumer's way
        with pytest.raises(DecompressedSizeExceeded):
            message.decode()
        message.ack()
    finally:
        simple.close()


def test_a_producer_per_message_does_not_grow_the_channels_return_handlers(hl_conn: Connection) -> None:
    """Unconfirmed producers with on_return register it with their channel: once per
    callback, however many producers share it; and a new callback per producer (per
    message) stops at a bound rather than grow the list, walked on every return, for ever."""
    from leveret.highlevel.messaging import _MAX_RETURN_HANDLERS, _channel_state

    channel = hl_conn.default_channel
    returned: list[Any] = []

    def shared(*args: Any) -> None:
        returned.append(args)

    for _ in range(200):
        hl_conn.Producer(confirm=False, on_return=shared).publish(
            b"x", routing_key=unique("nowhere"), mandatory=True)
    assert _channel_state(channel).untagged == [shared]
    drain(hl_conn, lambda: len(returned) == 200)
    for _ in range(200):
        hl_conn.Producer(confirm=False, on_return=lambda *args: None).publish(
            b"x", routing_key=unique("nowhere"), mandatory=True)
    assert len(_channel_state(channel).untagged) == _MAX_RETURN_HANDLERS


def test_a_return_reaches_the_on_return_of_a_producer_dropped_since(hl_conn: Connection) -> None:
    """kombu's way: ``conn.Producer(confirm=False, on_return=cb).publish(...)``, the producer
    not kept.  Its on_return was held through the producer, weakly: the return, coming
    after the producer was collected, went to no callback."""
    import gc

    returned: list[Any] = []
    hl_conn.Producer(confirm=False, on_return=lambda *args: returned.append(args)).publish(
        b"lost?", routing_key=unique("nowhere"), mandatory=True)
    gc.collect()
    drain(hl_conn, lambda: returned)
    [(exc, _exchange, _routing_key, message)] = returned
    assert type(exc) is MessageReturned and message.body == b"lost?"


def test_properties_delivery_mode_expiration_priority(hl_conn: Connection, queue: Queue) -> None:
    transient = Exchange(queue.exchange.name, auto_delete=True, delivery_mode="transient")
    Producer(hl_conn, transient, "rk").publish(b"1")
    Producer(hl_conn, queue.exchange, "rk").publish(b"2", delivery_mode="transient", expiration=30.5, priority=3)
    Producer(hl_conn, queue.exchange, "rk").publish(b"3", message_id="m3", reply_to=queue)
    Producer(hl_conn, queue.exchange, "rk").publish(b"4", priority=0)
    m1, m2, m3, m4 = collect(hl_conn, queue, 4)
    assert m1.properties["delivery_mode"] == 1
    assert m2.properties["delivery_mode"] == 1
    assert m2.properties["expiration"] == "30500"
    assert m2.properties["priority"] == 3
    assert m3.properties["delivery_mode"] == 2
    assert m3.properties["message_id"] == "m3" and m3.properties["reply_to"] == queue.name
    assert "priority" not in m3.properties  # not asked for: left out
    assert m4.properties["priority"] == 0  # asked for, though it is the lowest: sent
    with pytest.raises(TypeError):
        Producer(hl_conn, queue.exchange, "rk").publish(b"x", not_a_property=1)
    # Seconds, a number: a string is refused, not multiplied ("10" * 1000).
    refused: list[tuple[Any, type[Exception]]] = [
        ("10", TypeError), (True, TypeError), (-1, ValueError), (float("nan"), ValueError),
    ]
    for bad, error in refused:
        with pytest.raises(error, match="expiration"):
            Producer(hl_conn, queue.exchange, "rk").publish(b"x", expiration=bad)
    assert hl_conn.default_channel.queue_declare(queue.name, passive=True)[1] == 0


def test_publish_declares_exchange_and_declare_list(hl_conn: Connection) -> None:
    ex = Exchange(unique("ex"), "topic", auto_delete=True)
    q = Queue(unique(), ex, "a.#", exclusive=True)
    producer = Producer(hl_conn, ex)
    producer.publish({"n": 1}, routing_key="a.b", declare=[q])  # declares ex, q, binding
    [m] = collect(hl_conn, q, 1)
    assert m.payload == {"n": 1}


# ------------------------------------------------------------------------------ accept


class Boom:
    """Unpickling it records that code ran."""

    ran: list[str] = []

    def __reduce__(self) -> Any:
        return (Boom.ran.append, ("unpickled!",))


def test_pickle_is_refused_by_default_before_unpickling(hl_conn: Connection, queue: Queue) -> None:
    Boom.ran.clear()
    Producer(hl_conn, queue.exchange, "rk").publish(pickle.dumps(Boom()), content_type="application/x-python-serialize")
    errors: list[tuple[Message, BaseException]] = []
    def refused(message: Message, error: BaseException) -> None:
        errors.append((message, error))
        message.reject()

    with Consumer(hl_conn, queue, callbacks=[lambda b, m: pytest.fail("must not be delivered")],
                  on_decode_error=refused):
        drain(hl_conn, lambda: errors)
    assert isinstance(errors[0][1], ContentDisallowed)
    assert Boom.ran == []


def test_decode_error_without_handler_propagates_and_leaves_message_unacked(hl_conn: Connection, queue: Queue) -> None:
    Producer(hl_conn, queue.exchange, "rk").publish(pickle.dumps(1), content_type="application/x-python-serialize")
    with Consumer(hl_conn, queue, callbacks=[lambda b, m: None]):
        with pytest.raises(ContentDisallowed):
            drain(hl_conn, lambda: False)


def test_accept_pickle_when_asked(hl_conn: Connection, queue: Queue) -> None:
    Producer(hl_conn, queue.exchange, "rk", serializer="pickle").publish({"set": {1, 2}})
    got: list[Any] = []
    with Consumer(hl_conn, queue, accept=["pickle"], callbacks=[ack_into(got)]):
        drain(hl_conn, lambda: got)
    assert got == [{"set": {1, 2}}]


# ------------------------------------------------------------------------------ confirms


def test_publish_leaves_the_callers_arguments_alone(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk", compression="zlib")
    headers = {"h": "v"}
    empty: dict[str, Any] = {}
    declare = [queue]
    producer.publish({"n": 1}, headers=headers, declare=declare)
    producer.publish({"n": 2}, headers=empty, reply_to=queue, priority=3, expiration=1.5)
    assert headers == {"h": "v"} and empty == {} and declare == [queue]
    first, second = collect(hl_conn, queue, 2)
    assert first.headers == {"h": "v", "compression": "application/x-gzip"}
    assert first.payload == {"n": 1}
    assert second.headers == {"compression": "application/x-gzip"}
    assert second.payload == {"n": 2}
    assert (second.properties["reply_to"], second.properties["priority"]) == (queue.name, 3)
    assert second.properties["expiration"] == "1500"


def test_publish_follows_the_default_channel_after_it_closed(hl_conn: Connection) -> None:
    q = Queue(unique(), exclusive=True)
    producer = Producer(hl_conn, routing_key=q.name)
    producer.publish({"n": 1}, declare=[q])
    first = producer.channel
    first.close()
    producer.publish({"n": 2}, delivery_mode="transient")  # on a new default channel
    assert producer.channel is not first and producer.channel.is_open
    got = collect(hl_conn, q, 2)
    assert [(m.payload, m.properties["delivery_mode"]) for m in got] == [({"n": 1}, 2), ({"n": 2}, 1)]


def test_publish_to_a_missing_exchange_raises_not_found(hl_conn: Connection) -> None:
    producer = Producer(hl_conn, Exchange(unique("missing"), no_declare=True), "rk")
    with pytest.raises(NotFound):
        producer.publish({"lost": False})
    # The producer moves to a new default channel: the connection is still good.
    q = Queue(unique(), exclusive=True)
    producer.publish({"n": 2}, exchange="", routing_key=q.name, declare=[q])
    assert ready(hl_conn, q.name) == 1


def test_publish_on_a_channel_without_default_raises_on_closed_channel(hl_conn: Connection) -> None:
    channel = hl_conn.channel()
    producer = Producer(channel, Exchange(unique("missing"), no_declare=True))
    with pytest.raises(NotFound):
        producer.publish(b"x")
    with pytest.raises((ChannelClosedError, NotFound)):
        producer.publish(b"y")


def test_unroutable_mandatory_publish_raises_message_returned(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange)
    with pytest.raises(MessageReturned) as info:
        producer.publish({"n": 1}, routing_key="nobody", mandatory=True)
    exc = info.value
    assert (exc.reply_code, exc.exchange, exc.routing_key) == (312, queue.exchange.name, "nobody")
    assert json.loads(exc.message.body) == {"n": 1}
    producer.publish({"n": 2}, routing_key="nobody")  # not mandatory: dropped by the broker, as asked
    producer.publish({"n": 3}, routing_key="rk", mandatory=True)  # routable: fine
    [m] = collect(hl_conn, queue, 1)
    assert m.payload == {"n": 3}


def test_on_return_gets_kombus_arguments(hl_conn: Connection, queue: Queue) -> None:
    returned: list[tuple[Any, ...]] = []
    producer = Producer(hl_conn, queue.exchange, on_return=lambda *a: returned.append(a))
    producer.publish(b"first", routing_key="nobody", mandatory=True)
    producer.publish(b"second", routing_key="nobody", mandatory=True)
    assert [(type(e), ex, rk, m.body) for e, ex, rk, m in returned] == [
        (MessageReturned, queue.exchange.name, "nobody", b"first"),
        (MessageReturned, queue.exchange.name, "nobody", b"second"),
    ]


def test_returns_without_confirms_reach_on_return_or_the_channel(hl_conn: Connection, queue: Queue) -> None:
    """With ``confirm=False`` a publish does not wait, so its return comes later, while the
    connection is drained: to ``on_return`` when the producer has one, else it is kept in
    the channel's ``returned`` list -- never dropped."""
    returned: list[tuple[Any, ...]] = []
    producer = Producer(hl_conn, queue.exchange, confirm=False, on_return=lambda *a: returned.append(a))
    producer.publish({"n": 1}, routing_key="nobody", mandatory=True)
    drain(hl_conn, lambda: returned)
    [(exc, exchange, routing_key, message)] = returned
    assert type(exc) is MessageReturned and exc.reply_code == 312
    assert (exchange, routing_key, json.loads(message.body)) == (queue.exchange.name, "nobody", {"n": 1})

    other = hl_conn.channel()
    silent = Producer(other, queue.exchange, confirm=False)
    silent.publish(b"kept", routing_key="nobody", mandatory=True)
    drain(hl_conn, lambda: other.returned)
    assert [m.body for m in other.returned] == [b"kept"]
    assert len(returned) == 1  # the first producer's handler is for its own channel


@pytest.mark.broker
def test_producer_while_the_broker_blocks_publishers(node: Any) -> None:
    """A real memory alarm: the broker blocks the connection.  A confirmed publish that
    went out times out (its fate unknown, not reported as a success), the next one waits
    ``blocked_timeout`` and raises BlockedTimeout without sending anything, the blocked
    and unblocked callbacks run in drain_events, and after the alarm everything flows: the
    queue holds every message that went out, none twice."""
    from leveret.client import BlockedTimeout

    seen: list[Any] = []
    conn = Connection(node.url, transport_options={
        "blocked_timeout": 1.0,
        "on_blocked": lambda reason: seen.append(reason),
        "on_unblocked": lambda: seen.append("unblocked"),
    })
    name = unique("alarm")
    try:
        producer = Producer(conn, routing_key=name)
        producer.publish(b"m0", declare=[Queue(name, durable=False)])
        node.set_vm_memory_high_watermark(0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            producer.publish(b"m1", timeout=60, confirm_timeout=3)  # kombu's bound wins
        assert 2.9 <= time.monotonic() - started < 10
        started = time.monotonic()
        with pytest.raises(BlockedTimeout):
            producer.publish(b"never sent", timeout=10)
        assert 0.9 <= time.monotonic() - started < 5
        drain(conn, lambda: seen)
        assert seen == ["low on memory"]
        node.set_vm_memory_high_watermark(0.4)
        drain(conn, lambda: len(seen) == 2, timeout=15)
        assert seen == ["low on memory", "unblocked"]
        producer.publish(b"m2", timeout=10)
        assert ready(conn, name) == 3
        ch = conn.channel()
        assert [got(ch.basic_get(name, no_ack=True)).body for _ in range(3)] == [b"m0", b"m1", b"m2"]
        ch.queue_delete(name)
    finally:
        node.set_vm_memory_high_watermark(0.4)
        conn.release()


@pytest.mark.broker
def test_retry_does_not_take_a_confirm_timeout_for_a_lost_connection(node: Any) -> None:
    """publish(retry=True) retries across connection loss.  A confirm that times out on a
    live connection (the broker blocks publishers) is no loss: the publish raises
    TimeoutError and the connection stays; dropping it and publishing again would put
    the message in the queue twice once the alarm is over."""
    conn = Connection(node.url)
    name = unique("alarm-retry")
    try:
        producer = Producer(conn, routing_key=name)
        producer.publish(b"m0", declare=[Queue(name, durable=False)])
        transport = conn.connection
        node.set_vm_memory_high_watermark(0)
        with pytest.raises(TimeoutError):
            producer.publish(b"m1", retry=True, confirm_timeout=2,
                             retry_policy={"max_retries": 2, "interval_start": 0})
        assert conn.connection is transport and transport.is_open
        node.set_vm_memory_high_watermark(0.4)
        producer.flush(timeout=15)
        assert ready(conn, name) == 2
        ch = conn.channel()
        assert [got(ch.basic_get(name, no_ack=True)).body for _ in range(2)] == [b"m0", b"m1"]
        ch.queue_delete(name)
    finally:
        node.set_vm_memory_high_watermark(0.4)
        conn.release()


def test_publish_takes_kombus_confirm_timeout(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    producer.publish({"n": 1}, confirm_timeout=5)
    producer.publish({"n": 2}, timeout=5, confirm_timeout=None)
    got = collect(hl_conn, queue, 2)
    assert [m.payload for m in got] == [{"n": 1}, {"n": 2}]
    assert "confirm_timeout" not in got[0].properties and not got[0].headers


def test_nack_raises_publish_nacked(hl_conn: Connection) -> None:
    q = Queue(unique(), max_length=1, queue_arguments={"x-overflow": "reject-publish"}, exclusive=True)
    producer = Producer(hl_conn, routing_key=q.name)
    producer.publish(b"fits", declare=[q])
    with pytest.raises(PublishNacked):
        producer.publish(b"rejected")
    assert ready(hl_conn, q.name) == 1


def test_pipelined_publishes_and_flush(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    tags = [producer.publish({"i": i}, wait=False) for i in range(2000)]
    assert all(isinstance(t, int) for t in tags) and len(set(tags)) == 2000
    producer.flush()
    assert producer.pending == 0
    assert ready(hl_conn, queue.name) == 2000
    got = collect(hl_conn, queue, 2000, prefetch_count=500)
    assert [m.payload["i"] for m in got] == list(range(2000))


def test_flush_reports_every_return(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange)
    producer.publish(b"ok", routing_key="rk", mandatory=True, wait=False)
    producer.publish(b"r1", routing_key="nobody-1", mandatory=True, wait=False)
    producer.publish(b"r2", routing_key="nobody-2", mandatory=True, wait=False)
    with pytest.raises(MessageReturned) as info:
        producer.flush()
    assert [(r.routing_key, r.message.body) for r in returns_of(info.value)] == [("nobody-1", b"r1"), ("nobody-2", b"r2")]
    assert ready(hl_conn, queue.name) == 1
    producer.flush()  # reported once


@pytest.mark.parametrize("on_return", [False, True])
def test_flush_failing_still_reports_returns_confirmed_before(amqp_url: str, on_return: bool) -> None:
    # A pipelined mandatory publish the broker returned and confirmed, then a publish to a
    # missing exchange closes the channel before anyone waited on it: flush() raises the
    # channel's error, and the return must not vanish (the publish was not delivered).
    conn = Connection(amqp_url)
    seen: list[bytes] = []
    try:
        producer = Producer(
            conn, on_return=return_bodies_into(seen) if on_return else None,
        )
        producer.publish(b"unroutable", routing_key=unique("nobody"), mandatory=True, wait=False)
        channel = producer.channel
        assert isinstance(channel, ClientChannel)
        deadline = time.monotonic() + 5
        while not channel._returns:  # handed to the client once its confirm came too
            assert time.monotonic() < deadline, "the return did not arrive"
            time.sleep(0.01)
        producer.publish(b"x", exchange=unique("missing"), wait=False)
        with pytest.raises(NotFound) as info:
            producer.flush(timeout=5)
        if on_return:
            assert seen == [b"unroutable"]
        else:
            assert [r.message.body for r in returns_of(info.value)] == [b"unroutable"]
        producer.flush()  # nothing left
        producer.publish(b"y", routing_key=unique("nobody"))  # a new channel works
    finally:
        conn.release()


def test_flush_reports_nacks(hl_conn: Connection) -> None:
    q = Queue(unique(), max_length=1, queue_arguments={"x-overflow": "reject-publish"}, exclusive=True)
    producer = Producer(hl_conn, routing_key=q.name)
    q(hl_conn).declare()
    tags = [producer.publish(b"%d" % i, wait=False) for i in range(3)]
    with pytest.raises(PublishNacked) as info:
        producer.flush()
    assert info.value.delivery_tags == tags[1:]


def test_batch_context_manager(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    with producer.batch():
        for i in range(100):
            assert producer.publish({"i": i}) is not None  # pipelined: a tag comes back
        assert producer.pending == 100
    assert producer.pending == 0
    assert ready(hl_conn, queue.name) == 100
    with pytest.raises(MessageReturned):
        with producer.batch():
            producer.publish(b"x", routing_key="nobody", mandatory=True)


def test_confirm_false_does_not_wait(hl_conn: Connection, queue: Queue) -> None:
    channel = hl_conn.channel()
    producer = Producer(channel, queue.exchange, "rk", confirm=False)
    assert producer.publish(b"fire-and-forget") is None
    [m] = collect(hl_conn, queue, 1)
    assert m.body == b"fire-and-forget"


def test_unbound_producer_raises_not_bound() -> None:
    producer = Producer(None, Exchange("x"))
    with pytest.raises(NotBoundError):
        producer.publish(b"x")


def test_unbound_consumer_raises_not_bound() -> None:
    # Its channel is None until revive(channel): the channel calls say so, as a
    # producer's do, rather than failing on None.
    consumer = Consumer(None)
    with pytest.raises(NotBoundError):
        consumer.qos(prefetch_count=1)
    with pytest.raises(NotBoundError):
        consumer.recover()
    with pytest.raises(NotBoundError):
        consumer.flow(True)


def test_batch_exit_reports_every_nack_of_a_large_batch(hl_conn: Connection) -> None:
    # Many more publishes than the driver writes at a time: the ones it wrote early are
    # settled and reported exactly like the ones it wrote when the block ended.
    q = Queue(unique(), max_length=300, queue_arguments={"x-overflow": "reject-publish"}, exclusive=True)
    producer = Producer(hl_conn, routing_key=q.name)
    q(hl_conn).declare()
    tags: list[int | None] = []
    with pytest.raises(PublishNacked) as info:
        with producer.batch():
            for i in range(1000):
                tags.append(producer.publish(b"%d" % i))
    assert info.value.delivery_tags == tags[300:]
    assert producer.pending == 0
    assert ready(hl_conn, q.name) == 300


def test_batch_reports_returns_on_the_default_exchange(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn)
    with pytest.raises(MessageReturned) as info:
        with producer.batch():
            producer.publish(b"first", routing_key=queue.name, mandatory=True)
            for i in range(300):
                producer.publish(b"%d" % i, routing_key=queue.name)
            producer.publish(b"lost", routing_key=unique("nobody"), mandatory=True)
            producer.publish(b"last", routing_key=queue.name, mandatory=True)
    assert [r.message.body for r in returns_of(info.value)] == [b"lost"]
    assert producer.pending == 0
    assert ready(hl_conn, queue.name) == 302


def wait_ready(conn: Connection, name: str, at_least: int, timeout: float = 5.0) -> int:
    """The queue's message count once it reaches ``at_least`` (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        n = ready(conn, name)
        if n >= at_least or time.monotonic() > deadline:
            return n
        time.sleep(0.01)


# About when the socket driver writes: the broker transport only.
socket_driver_only = pytest.mark.parametrize("kind", [pytest.param("amqp", marks=pytest.mark.broker)])


@socket_driver_only
def test_batch_publishes_reach_the_broker_before_the_block_ends(hl_conn: Connection, hl_url: str, kind: str, queue: Queue) -> None:
    producer = Producer(hl_conn, routing_key=queue.name)
    observer = Connection(hl_url)  # counts the queue without flushing hl_conn's writes
    try:
        with producer.batch():
            for i in range(1000):
                producer.publish({"i": i})
            # The broker is already taking the batch (the driver writes it in chunks
            # while it is being made); its confirms are still to be waited for.
            assert wait_ready(observer, queue.name, 500) >= 500
            assert producer.pending == 1000
        assert producer.pending == 0
        assert ready(observer, queue.name) == 1000
    finally:
        observer.release()


@socket_driver_only
def test_a_batch_does_not_hold_back_another_threads_publishes(hl_conn: Connection, hl_url: str, kind: str) -> None:
    names = [unique("q"), unique("q")]
    admin = hl_conn.channel()
    for name in names:
        admin.queue_declare(name, auto_delete=False)
    batched = Producer(hl_conn.channel(), routing_key=names[0])
    other = Producer(hl_conn.channel(), routing_key=names[1])
    observer = Connection(hl_url)
    inside, leave = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def batcher() -> None:
        try:
            with batched.batch():
                batched.publish(b"batched")
                inside.set()
                leave.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=batcher)
    thread.start()
    try:
        assert inside.wait(5)
        other.publish(b"other", wait=False)  # pipelined, this thread is not in a batch
        assert wait_ready(observer, names[1], 1) == 1
        assert thread.is_alive()  # the batch is still open
    finally:
        leave.set()
        thread.join(10)
        try:
            other.flush()
            assert not errors and batched.pending == 0
            assert ready(observer, names[0]) == 1
        finally:
            observer.release()
            for name in names:
                admin.queue_delete(name)


# ------------------------------------------------------------------------------ consumer


def test_consumer_prefetch_limits_unacked_deliveries(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    for i in range(5):
        producer.publish({"i": i})
    got: list[Message] = []
    channel = hl_conn.channel()
    with Consumer(channel, queue, prefetch_count=2, on_message=got.append):
        drain(hl_conn, lambda: len(got) >= 2)
        with pytest.raises(TimeoutError):
            drain(hl_conn, lambda: len(got) > 2, timeout=0.5)
        assert len(got) == 2
        got[0].ack()
        drain(hl_conn, lambda: len(got) >= 3)
        with pytest.raises(TimeoutError):
            drain(hl_conn, lambda: len(got) > 3, timeout=0.3)
    assert [m.payload["i"] for m in got] == [0, 1, 2]


def test_consumer_no_ack_and_cancel(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    got: list[Message] = []
    consumer = Consumer(hl_conn, queue, no_ack=True, on_message=got.append, tag_prefix="mine-")
    consumer.consume()
    assert consumer.consuming_from(queue) and consumer.consuming_from(queue.name)
    producer.publish(b"1")
    drain(hl_conn, lambda: got)
    assert got[0].acknowledged  # no_ack: the broker settled it
    assert got[0].delivery_info["consumer_tag"].startswith("mine-")
    consumer.cancel()
    assert not consumer.consuming_from(queue)
    producer.publish(b"2")
    with pytest.raises(TimeoutError):
        drain(hl_conn, lambda: len(got) > 1, timeout=0.3)
    assert ready(hl_conn, queue.name) == 1


def test_a_queue_with_no_ack_is_consumed_without_acks_unless_the_consumer_says_otherwise(
    hl_conn: Connection
) -> None:
    # As in kombu: Consumer(no_ack=None) takes each queue's no_ack.
    ex = Exchange(unique("ex"), "direct", auto_delete=True)
    settled = Queue(unique("noack"), ex, "a", durable=False, no_ack=True)
    acked = Queue(unique("ack"), ex, "b", durable=False)
    got: list[Message] = []
    with Consumer(hl_conn, [settled, acked], on_message=got.append):
        Producer(hl_conn, ex, "a").publish(b"a")
        Producer(hl_conn, ex, "b").publish(b"b")
        drain(hl_conn, lambda: len(got) == 2)
        by_body = {bytes(m.body): m for m in got}
        assert by_body[b"a"].acknowledged  # the broker settled it on delivery
        assert not by_body[b"b"].acknowledged
        by_body[b"b"].ack()
    got.clear()
    with Consumer(hl_conn, [settled], no_ack=False, on_message=got.append):
        Producer(hl_conn, ex, "a").publish(b"c")
        drain(hl_conn, lambda: got)
        assert not got[0].acknowledged  # the consumer's no_ack=False wins
        got[0].ack()


def test_consumer_several_queues_and_cancel_by_queue(hl_conn: Connection) -> None:
    ex = Exchange(unique("ex"), "direct", auto_delete=True)
    qa = Queue(unique("a"), ex, "a", durable=False)
    qb = Queue(unique("b"), ex, "b", durable=False)
    seen: list[tuple[str, Any]] = []
    def take(body: Any, message: Message) -> None:
        seen.append((message.delivery_info["routing_key"], body))
        message.ack()

    consumer = Consumer(hl_conn, [qa], callbacks=[take])
    consumer.add_queue(qb)
    consumer.consume()
    producer = Producer(hl_conn, ex)
    producer.publish("to a", routing_key="a")
    producer.publish("to b", routing_key="b")
    drain(hl_conn, lambda: len(seen) >= 2)
    assert sorted(seen) == [("a", "to a"), ("b", "to b")]
    consumer.cancel_by_queue(qa)
    assert not consumer.consuming_from(qa) and consumer.consuming_from(qb)
    producer.publish("to a again", routing_key="a")
    producer.publish("to b again", routing_key="b")
    drain(hl_conn, lambda: len(seen) >= 3)
    assert seen[2] == ("b", "to b again")
    assert ready(hl_conn, qa.name) == 1
    consumer.cancel()
    qa(hl_conn).delete()
    qb(hl_conn).delete()


def test_server_sent_cancel_is_an_event_not_a_crash(hl_conn: Connection) -> None:
    q = Queue(unique(), durable=False)
    cancels: list[tuple[str | None, str]] = []
    consumer = Consumer(hl_conn, q, on_message=lambda m: None)
    consumer.on_cancel = lambda name, tag: cancels.append((name, tag))
    consumer.consume()
    other = hl_conn.channel()
    other.queue_delete(q.name)  # the broker cancels the consumer: basic.cancel to us
    drain(hl_conn, lambda: cancels)
    assert cancels[0][0] == q.name
    assert consumer.cancelled_by_broker == [q.name]
    assert not consumer.consuming_from(q)
    assert consumer.channel is not None and consumer.channel.is_open
    consumer.cancel()  # nothing left to cancel; no error


def test_drain_events_raises_the_error_that_closed_a_consumers_channel(hl_conn: Connection, queue: Queue) -> None:
    # As kombu on py-amqp does: a consumer loop hears that its channel is gone (here: a
    # message acknowledged twice) instead of waiting for ever.
    def on_message(message: Any) -> None:
        message.ack()
        message.channel.basic_ack(message.delivery_tag)

    Producer(hl_conn, queue.exchange, "rk").publish(b"x")
    with Consumer(hl_conn, queue, on_message=on_message) as consumer:
        with pytest.raises(hl_conn.channel_errors, match="unknown delivery tag 1"):
            drain(hl_conn, lambda: False)
        assert consumer.channel is not None and not consumer.channel.is_open


@pytest.mark.parametrize("autorecover", [False, True])
def test_drain_events_raises_when_a_producer_got_the_error_of_the_consumers_channel(
    hl_url: str, kind: str, autorecover: bool
) -> None:
    # A consumer and a producer share the default channel; the producer's publish to a
    # missing exchange gets the channel's error.  The consumer is dead too: drain_events
    # says so once (kombu raises NotFound there) instead of timing out for ever.
    from leveret.highlevel import memory

    options = {"broker": memory.MemoryBroker()} if kind == "memory" else {}
    conn = Connection(hl_url, transport_options=options, autorecover=autorecover)
    q = Queue(unique(), durable=False)  # (an auto-delete one would go with the channel)
    got: list[Any] = []
    try:
        consumer = Consumer(conn, q, callbacks=[ack_into(got)])
        consumer.consume()
        producer = Producer(conn)
        producer.publish("one", routing_key=q.name)
        drain(conn, lambda: got)
        with pytest.raises(NotFound):
            producer.publish("x", exchange=unique("missing"), routing_key="k")
        assert consumer.consuming_from(q)  # not known yet
        producer.publish("two", routing_key=q.name)  # on a new default channel
        with pytest.raises(NotFound):
            conn.drain_events(timeout=1)
        assert not consumer.consuming_from(q)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)  # said once
        consumer.revive(conn.channel())
        assert consumer.consuming_from(q)
        drain(conn, lambda: got == ["one", "two"])
        q(conn.channel()).delete()
    finally:
        conn.release()


def test_drain_events_raises_a_consumers_channel_error_once(hl_conn: Connection, queue: Queue) -> None:
    # Raised by the transport's drain_events, it is not raised again.
    def on_message(message: Any) -> None:
        message.ack()
        message.channel.basic_ack(message.delivery_tag)

    Producer(hl_conn, queue.exchange, "rk").publish(b"x")
    consumer = Consumer(hl_conn.channel(), queue, on_message=on_message)
    consumer.consume()
    with pytest.raises(hl_conn.channel_errors, match="unknown delivery tag 1"):
        drain(hl_conn, lambda: False)
    assert not consumer.consuming_from(queue)
    with pytest.raises(TimeoutError):
        hl_conn.drain_events(timeout=0.2)


@pytest.mark.parametrize("how", ["requeue", "republish"])
def test_drain_events_returns_while_callbacks_keep_making_deliveries(
    hl_conn: Connection, queue: Queue, how: str
) -> None:
    # A callback that requeues its message ("not now") or publishes to its own queue makes
    # a delivery for the next drain_events: this one returns, within its timeout.  (A
    # confirmed publish reads the socket while it waits, and may read the delivery it made:
    # that one waits for the next call too -- it once ran in this one, and the next, for
    # thousands of rounds.)
    calls = [0]
    stop = [False]
    producer = Producer(hl_conn, queue.exchange, "rk")

    def on_message(message: Message) -> None:
        calls[0] += 1
        if stop[0] or calls[0] >= 20000:
            message.ack()
        elif how == "requeue":
            message.requeue()
        else:
            producer.publish(b"again")
            message.ack()

    producer.publish(b"job")
    with Consumer(hl_conn.channel(), queue, on_message=on_message):
        started = time.monotonic()
        try:
            hl_conn.drain_events(timeout=0.5)
        except TimeoutError:
            pass
        assert time.monotonic() - started < 2 and calls[0] < 100, calls
        stop[0] = True
        before = calls[0]
        drain(hl_conn, lambda: calls[0] > before)  # the next call runs the next one


def test_receive_without_callbacks_raises(hl_conn: Connection, queue: Queue) -> None:
    Producer(hl_conn, queue.exchange, "rk").publish(b"x")
    with Consumer(hl_conn, queue):
        with pytest.raises(NotImplementedError):
            drain(hl_conn, lambda: False)


def test_consumer_purge_and_recover(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange, "rk")
    for i in range(3):
        producer.publish(i)
    got: list[Message] = []
    channel = hl_conn.channel()
    consumer = Consumer(channel, queue, on_message=got.append, prefetch_count=1)
    consumer.consume()
    drain(hl_conn, lambda: got)
    assert consumer.purge() == 2  # the unacked one is not purged
    consumer.recover(requeue=True)
    drain(hl_conn, lambda: len(got) >= 2)
    assert got[1].payload == 0 and got[1].delivery_info["redelivered"]
    got[1].ack()
    consumer.cancel()


def test_consumer_and_producer_revive_on_a_new_channel(hl_conn: Connection, queue: Queue) -> None:
    got: list[Any] = []
    consumer = Consumer(hl_conn.channel(), queue, callbacks=[ack_into(got)])
    producer = Producer(hl_conn.channel(), queue.exchange, "rk")
    consumer.consume()
    assert consumer.channel is not None
    consumer.channel.close()
    producer.channel.close()
    consumer.revive(hl_conn.channel())
    producer.revive(hl_conn.channel())
    assert consumer.consuming_from(queue)
    producer.publish("after revive")
    drain(hl_conn, lambda: got)
    assert got == ["after revive"]


def test_retry_publish_survives_connection_loss(kind: str, node_hl_url: str, request: pytest.FixtureRequest) -> None:
    from leveret.highlevel import memory

    # On the node the test closes connections of (not LEVERET_TEST_URL's broker).
    options = {"broker": memory.MemoryBroker()} if kind == "memory" else {}
    conn = Connection(node_hl_url, transport_options=options)
    try:
        q = Queue(unique(), durable=False)
        producer = Producer(conn, routing_key=q.name)
        producer.publish("before", declare=[q])
        if kind == "amqp":
            request.getfixturevalue("node").ctl("close_all_connections", "test")
            drain_until_dead(conn)
        else:
            lose_memory_connection(conn)
        producer.publish("after", retry=True, retry_policy={"max_retries": 3, "interval_start": 0.1})
        assert ready(conn, q.name) == 2
        q(conn).delete()
    finally:
        conn.release()


def drain_until_dead(conn: Connection, timeout: float = 10.0) -> None:
    """Wait until the client noticed the broker closed the connection."""
    deadline = time.monotonic() + timeout
    while conn.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not conn.connected


def test_consumer_context_manager_flow_and_global_qos(hl_conn: Connection, queue: Queue) -> None:
    got: list[Any] = []
    consumer = Consumer(hl_conn.channel(), queue, callbacks=[ack_into(got)])
    consumer.qos(prefetch_count=10, apply_global=True)
    assert consumer.flow(True) is True  # RabbitMQ accepts resuming (pausing it refuses)
    with consumer:
        assert consumer.consuming_from(queue)
        Producer(hl_conn, queue.exchange, "rk").publish("in")
        drain(hl_conn, lambda: got)
    assert not consumer.consuming_from(queue)
    assert got == ["in"]


def test_producer_context_manager_flushes(hl_conn: Connection, queue: Queue) -> None:
    producer = Producer(hl_conn, queue.exchange)
    with pytest.raises(MessageReturned):
        with producer:
            producer.publish(b"x", routing_key="nobody", mandatory=True, wait=False)
            assert producer.pending == 1
    assert producer.pending == 0


def test_exchange_binding_helper(hl_conn: Connection) -> None:
    ex = Exchange(unique("ex"), "topic", durable=False)
    q = Queue(unique(), exclusive=True, bindings=[ex.binding("a.*"), ex.binding("b.#")])
    Producer(hl_conn, ex).publish(b"1", routing_key="a.x", declare=[q])
    Producer(hl_conn, ex).publish(b"2", routing_key="b.x.y")
    Producer(hl_conn, ex).publish(b"3", routing_key="c")
    assert [m.body for m in collect(hl_conn, q, 2)] == [b"1", b"2"]
    ex(hl_conn).delete()


# ------------------------------------------------------------------------------ AMQP 0-8


def test_amqp_0_8_confirming_producer_fails_every_time_and_never_publishes_unconfirmed(amqp_url: str) -> None:
    # 0-8 has no confirm.select: a producer asked to confirm cannot, and says so at every
    # publish -- it must not fall back to unconfirmed publishes after the first failure.
    conn = Connection(amqp_url, transport_options={"protocol": "0-8"})
    q = Queue(unique(), durable=False)
    try:
        q(conn.default_channel).declare()
        producer = Producer(conn, routing_key=q.name)
        for _ in range(2):
            with pytest.raises(LocalProtocolError, match="confirm=False"):
                producer.publish(b"confirmed?")
        Producer(conn, routing_key=q.name, confirm=False).publish(b"unconfirmed")
        got = q(conn.default_channel).get(no_ack=True)
        assert got is not None and got.body == b"unconfirmed"
        assert q(conn.default_channel).get(no_ack=True) is None  # the failed ones never left
    finally:
        q(conn.default_channel).delete()
        conn.release()


def test_amqp_0_8_simple_queue_put_fails_clearly_without_leaking_its_channel(amqp_url: str) -> None:
    conn = Connection(amqp_url, transport_options={"protocol": "0-8"})
    name = unique()
    try:
        conn.connect()
        transport = conn.connection
        assert isinstance(transport, ClientConnection)
        before = set(transport._channels)
        sq = SimpleQueue(conn, name)  # get() works in 0-8: see tests/test_hl_simple.py
        with pytest.raises(LocalProtocolError, match="0-8"):
            sq.put(b"x")
        sq.close()
        assert set(transport._channels) == before
    finally:
        ch = conn.default_channel
        ch.queue_delete(name)
        ch.exchange_delete(name)
        conn.release()
