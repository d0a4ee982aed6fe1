"""Message content through a real RabbitMQ: body sizes around frame boundaries, big bodies,
many messages, the inbound body cap, and two threads sharing one connection.

Bodies are checked byte for byte after the broker has stored and sent them back, through
``basic.get`` and through a consumer, in AMQP 0-9-1 and 0-8, with both drivers (``driver``:
the blocking one, and the asyncio one behind the synchronous facade of tests/drivers.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from broker import PrivateNode
from drivers import NewConnection, blocking_only
from helpers import publish_raw_properties, unique, with_options, within
from leveret.client import Channel, Connection, Message, MessageDecodeError, MessageTooLargeError
from leveret.wire.errors import DecodeError

PROTOCOLS = ["0-9-1", "0-8"]
MiB = 1024 * 1024


def body_of(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, different for each seed (so swaps and shifts show)."""
    return random.Random(seed).randbytes(size)


def digest(body: Any) -> tuple[int, str]:
    """A short, comparable summary of a body (pytest would print megabytes otherwise)."""
    data = bytes(body)
    return len(data), hashlib.sha256(data).hexdigest()[:16]


def drain_until(conn: Connection, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "timed out waiting for deliveries"
        conn.drain_events(timeout=remaining)


def exclusive_queue(ch: Channel) -> str:
    ok = ch.queue_declare(unique("q"), exclusive=True)
    assert ok is not None
    return ok.queue


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(node: PrivateNode, protocol: str) -> str:
    return with_options(node.url, protocol=protocol)


@pytest.fixture
def conn(new_connection: NewConnection, url: str) -> Iterator[Connection]:
    connection = new_connection(url, rpc_timeout=20).connect()
    try:
        yield connection
    finally:
        connection.close()


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_body_sizes_around_frame_boundaries(new_connection: NewConnection, url: str, frame_max: int) -> None:
    sizes = [0, frame_max - 8, frame_max - 7, MiB, 5 * MiB]
    bodies = [body_of(size, seed) for seed, size in enumerate(sizes)]
    with new_connection(with_options(url, frame_max=frame_max), rpc_timeout=20) as conn:
        assert conn.frame_max == frame_max
        ch = conn.channel()
        q = exclusive_queue(ch)

        # publish, then basic.get
        for i, body in enumerate(bodies):
            ch.basic_publish(Message(body, message_id=str(i)), routing_key=q)
        got = [ch.basic_get(q, no_ack=True) for _ in bodies]
        assert [m.message_id for m in got if m] == [str(i) for i in range(len(bodies))]
        assert [digest(m.body) for m in got if m] == [digest(b) for b in bodies]
        assert all(type(m.body) is bytes for m in got if m)

        # publish, then basic.consume
        for i, body in enumerate(bodies):
            ch.basic_publish(Message(body, message_id=str(i)), routing_key=q)
        delivered: list[Message] = []
        ch.basic_consume(q, no_ack=True, callback=delivered.append)
        drain_until(conn, lambda: len(delivered) == len(bodies))
        assert [digest(m.body) for m in delivered] == [digest(b) for b in bodies]
        assert ch.queue_declare(q, passive=True) == (q, 0, 1)


def test_big_body_as_bytes_bytearray_and_memoryview(conn: Connection) -> None:
    ch = conn.channel()
    q = exclusive_queue(ch)
    raw = body_of(5 * MiB + 3, 42)
    views: dict[str, bytes | bytearray | memoryview] = {
        "bytes": raw[: 5 * MiB],
        "bytearray": bytearray(raw[1 : 5 * MiB + 1]),
        "memoryview": memoryview(raw)[3:],  # a slice: offset into a bigger buffer
    }
    for name, body in views.items():
        ch.basic_publish(Message(body, type=name), routing_key=q)
    for name, body in views.items():
        msg = ch.basic_get(q, no_ack=True)
        assert msg is not None and msg.type == name
        assert digest(msg.body) == digest(body), name
    # The publisher's buffers are unchanged.
    assert views["bytearray"] == raw[1 : 5 * MiB + 1]


def test_a_body_that_is_not_bytes_is_a_type_error(conn: Connection) -> None:
    """``bytes(5)`` is five NUL bytes and ``bytes([104, 105])`` is ``b"hi"``: a body of
    any type but bytes, bytearray, memoryview or str is refused, nothing sent."""
    ch = conn.channel()
    q = exclusive_queue(ch)
    for body in (5, [104, 105], {"a": 1}, None, 1.5):
        with pytest.raises(TypeError, match=f"not {type(body).__name__}"):
            Message(body)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=f"not {type(body).__name__}"):
            ch.basic_publish(body, routing_key=q)  # type: ignore[arg-type]
        message = Message(b"")
        message.body = body  # type: ignore[assignment]
        with pytest.raises(TypeError, match=f"not {type(body).__name__}"):
            ch.basic_publish(message, routing_key=q)
    assert ch.queue_declare(q, passive=True)[1] == 0
    assert ch.is_open


def test_changing_a_messages_headers_changes_what_is_republished(conn: Connection) -> None:
    """``message.headers`` is the message's own dict, also when the message had no
    headers or empty ones: ``message.headers["x-retries"] = 1`` before publishing it again
    is sent (it was lost then, written into a throwaway dict)."""
    ch = conn.channel()
    q = exclusive_queue(ch)
    for headers in (None, {}, {"a": 1}):
        first = Message(b"job") if headers is None else Message(b"job", headers=headers)
        ch.basic_publish(first, routing_key=q)
        got = ch.basic_get(q, no_ack=True)
        assert got is not None
        assert got.headers == (headers or {})
        got.headers["x-retries"] = 1
        ch.basic_publish(Message(got.body, **got.properties), routing_key=q)
        again = ch.basic_get(q, no_ack=True)
        assert again is not None and again.headers == {**(headers or {}), "x-retries": 1}
    outgoing = Message(b"job")
    outgoing.headers["x-retries"] = 2
    assert outgoing.properties == {"headers": {"x-retries": 2}}
    # Reading the headers of a message that has none leaves it equal to what it was.
    assert Message(b"job").headers == {}
    plain = Message(b"job")
    _ = plain.headers
    assert plain == Message(b"job")


# --------------------------------------------------------------------------- many messages


def test_ten_thousand_messages_in_order(conn: Connection, node: PrivateNode) -> None:
    count = 10_000
    ch = conn.channel()
    q = unique("many")
    ch.queue_declare(q, auto_delete=True)
    for i in range(count):
        ch.basic_publish(b"%05d" % i, routing_key=q)
    ch.basic_qos(prefetch_count=500)
    bodies: list[bytes] = []
    tags: list[int] = []

    def on_message(msg: Message) -> None:
        bodies.append(bytes(msg.body))
        tags.append(msg.delivery_tag)  # type: ignore[arg-type]
        msg.ack()

    ch.basic_consume(q, callback=on_message)
    drain_until(conn, lambda: len(bodies) >= count, timeout=30)
    assert len(bodies) == count
    assert bodies == [b"%05d" % i for i in range(count)]
    assert tags == list(range(1, count + 1))
    # Every ack reached the broker: nothing is ready, nothing is unacknowledged.
    rows = [
        r
        for r in json.loads(
            node.ctl("list_queues", "--formatter", "json", "name", "messages_ready",
                     "messages_unacknowledged", "consumers")
        )
        if r["name"] == q
    ]
    assert rows == [{"name": q, "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1}]


# --------------------------------------------------------------------------- max_body_size


def test_inbound_body_cap_on_consume(new_connection: NewConnection, url: str) -> None:
    with new_connection(url, max_body_size=1000) as conn:
        ch = conn.channel()
        q = exclusive_queue(ch)
        ch.basic_publish(body_of(2000, 1), routing_key=q)
        ch.basic_publish(b"small", routing_key=q)
        ch.basic_publish(body_of(1000, 2), routing_key=q)  # exactly the cap is fine
        got: list[Message] = []
        ch.basic_consume(q, callback=got.append)
        with pytest.raises(MessageTooLargeError) as info:
            drain_until(conn, lambda: False, timeout=10)
        err = info.value
        assert (err.delivery_tag, err.body_size, err.channel_id) == (1, 2000, ch.channel_id)
        assert got == []
        drain_until(conn, lambda: len(got) == 2)
        assert [m.body for m in got] == [b"small", body_of(1000, 2)]
        assert [m.delivery_tag for m in got] == [2, 3]
        # The connection and channel are fine; the big one is settled by its tag.
        assert conn.is_open and ch.is_open
        ch.basic_reject(err.delivery_tag, requeue=False)
        got[0].ack()
        got[1].ack()
        ch.close()
        with conn.channel() as c:
            assert c.queue_declare(q, passive=True) == (q, 0, 0)
            c.basic_publish(b"after", routing_key=q)
            msg = c.basic_get(q, no_ack=True)
            assert msg is not None and msg.body == b"after"


def test_inbound_body_cap_on_basic_get(new_connection: NewConnection, node: PrivateNode) -> None:
    with new_connection(node.url, max_body_size=1000, rpc_timeout=1) as conn:
        ch = conn.channel()
        q = exclusive_queue(ch)
        ch.basic_publish(body_of(2000, 1), routing_key=q)
        ch.basic_publish(b"small", routing_key=q)
        with pytest.raises(MessageTooLargeError) as info:
            ch.basic_get(q)
        assert (info.value.delivery_tag, info.value.body_size) == (1, 2000)
        assert ch.is_open
        msg = ch.basic_get(q)
        assert msg is not None and msg.body == b"small"


def nested_headers(depth: int) -> bytes:
    """Property flags and values: a headers table nesting ``depth`` tables, deeper than
    leveret reads (pika reads it; RabbitMQ passes it on unread)."""
    table = b"\x00\x00\x00\x00"
    for _ in range(depth - 1):
        body = b"\x01aF" + table
        table = struct.pack(">I", len(body)) + body
    return struct.pack(">H", 0x2000) + table


def test_a_message_with_undecodable_properties_is_one_bad_message(new_connection: NewConnection, url: str) -> None:
    # It was a DecodeError for the whole connection, and on every reconnect, as the broker
    # requeued it: one publisher's bad headers stopped every consumer of the queue.
    with new_connection(url) as conn:
        ch = conn.channel()
        q = exclusive_queue(ch)
        publish_raw_properties(url, q, nested_headers(100), b"poison")
        ch.basic_publish(b"fine", routing_key=q)
        publish_raw_properties(url, q, nested_headers(100), b"poison again")
        got: list[Message] = []
        tag = ch.basic_consume(q, callback=got.append)
        with pytest.raises(MessageDecodeError) as info:
            drain_until(conn, lambda: False, timeout=10)
        err = info.value
        assert (err.delivery_tag, err.body_size, err.channel_id) == (1, 6, ch.channel_id)
        assert isinstance(err.__cause__, DecodeError) and "nested deeper" in str(err)
        assert "(delivery tag 1)" in str(err)
        ch.basic_reject(err.delivery_tag, requeue=False)
        with pytest.raises(MessageDecodeError) as info:
            drain_until(conn, lambda: False, timeout=10)
        assert info.value.delivery_tag == 3
        drain_until(conn, lambda: got != [])  # (run before it, but for the test's facade)
        assert [m.body for m in got] == [b"fine"]
        got[0].ack()
        ch.basic_reject(3, requeue=False)
        assert conn.is_open and ch.is_open
        # basic.get reports one the same way, and the get is answered
        ch.basic_cancel(tag)
        publish_raw_properties(url, q, nested_headers(100), b"poison")
        with pytest.raises(MessageDecodeError) as info:
            within(10, lambda: ch.basic_get(q))
        assert info.value.body_size == 6
        ch.basic_reject(info.value.delivery_tag, requeue=False)
        assert ch.queue_declare(q, passive=True) == (q, 0, 0)


def test_a_content_header_larger_than_frame_max_is_read(new_connection: NewConnection, url: str) -> None:
    # A publisher with 128 KiB frames sends a 10 kB header; RabbitMQ hands it whole to a
    # consumer that negotiated 4096: pika reads it, leveret dropped the connection.
    headers = {"h": "x" * 10_000}
    with new_connection(url) as publisher, new_connection(with_options(url, frame_max=4096)) as conn:
        ch = conn.channel()
        q = exclusive_queue(ch)
        pch = publisher.channel()
        pch.tx_select()  # tx.commit-ok says it is queued (0-8 has no confirms)
        pch.basic_publish(Message(b"body" * 3000, headers=headers), routing_key=q)
        pch.tx_commit()
        msg = within(10, lambda: ch.basic_get(q, no_ack=True))
        assert msg is not None and msg.headers == headers and msg.body == b"body" * 3000
        assert conn.is_open and conn.frame_max == 4096


# --------------------------------------------------------------------------- threads


# Blocking only: it proves the blocking driver's locking -- frames of two threads never
# interleave, one thread reads while the other waits.  The asyncio driver has one thread;
# its concurrent publishers are tests/test_client_async.py's.
@blocking_only
def test_two_threads_on_two_channels_of_one_connection(new_connection: NewConnection, node: PrivateNode) -> None:
    count = 2000

    def body(i: int) -> bytes:
        # Sizes from 8 bytes to about three 4 KiB frames, so contents of the two channels
        # would interleave if writes were not atomic.
        return b"%08d" % i + body_of((i * 37) % 10_000, i)

    # Confirms need 0-9-1.
    url = with_options(node.url, frame_max=4096)
    with new_connection(url, rpc_timeout=30) as conn:
        setup = conn.channel()
        q = exclusive_queue(setup)
        errors: list[BaseException] = []
        received: list[tuple[int, bool]] = []
        publisher_done = threading.Event()

        def publish() -> None:
            try:
                ch = conn.channel()
                ch.confirm_select()
                for i in range(count):
                    ch.basic_publish(Message(body(i), message_id=str(i)), routing_key=q)
                    if i % 250 == 249:
                        ch.wait_for_confirms(timeout=20)
                ch.wait_for_confirms(timeout=20)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                publisher_done.set()

        def consume() -> None:
            try:
                ch = conn.channel()
                ch.basic_qos(prefetch_count=100)

                def on_message(msg: Message) -> None:
                    i = int(msg.message_id)
                    received.append((i, msg.body == body(i)))
                    msg.ack()

                ch.basic_consume(q, callback=on_message)
                deadline = time.monotonic() + 30
                while len(received) < count and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=publish), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert publisher_done.is_set()
        assert len(received) == count
        assert [i for i, _ in received] == list(range(count))
        assert all(ok for _, ok in received)
        assert conn.is_open
        assert setup.queue_declare(q, passive=True) == (q, 0, 1)
