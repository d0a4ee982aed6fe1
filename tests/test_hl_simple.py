"""SimpleQueue and SimpleBuffer against the real broker (and memory://)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import lose_memory_connection, unique

from leveret.client import PreconditionFailed, ResourceLocked
from leveret.wire.errors import LocalProtocolError
from leveret.highlevel import Connection, Empty, Message, MessageReturned, MessageStateError, SimpleBuffer, SimpleQueue


@pytest.fixture
def sq(hl_conn: Connection) -> Iterator[SimpleQueue]:
    q = SimpleQueue(hl_conn, unique("simple"))
    yield q
    q.close()
    hl_conn.default_channel.queue_delete(q.queue.name)
    hl_conn.default_channel.exchange_delete(q.queue.exchange.name)


def test_put_get_round_trip(sq: SimpleQueue) -> None:
    sq.put({"n": 1})
    sq.put(b"raw")
    sq.put("text", headers={"h": 1}, compression="zlib")
    first = sq.get(timeout=5)
    assert isinstance(first, Message)
    assert first.payload == {"n": 1}
    assert first.properties["delivery_mode"] == 2  # SimpleQueue is persistent
    first.ack()
    second = sq.get(timeout=5)
    assert second.payload == b"raw" and second.content_type == "application/data"
    second.ack()
    third = sq.get(block=True, timeout=5)
    assert third.payload == "text" and third.headers["h"] == 1
    third.ack()


def test_get_timeout_raises_empty(sq: SimpleQueue) -> None:
    assert Empty is queue.Empty
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        sq.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 3
    with pytest.raises(Empty):
        sq.get_nowait()
    with pytest.raises(Empty):
        sq.get(block=False)


def test_get_nowait(sq: SimpleQueue) -> None:
    sq.put("a")
    deadline = time.monotonic() + 5
    while True:
        try:
            m = sq.get_nowait()
            break
        except Empty:
            assert time.monotonic() < deadline
    assert m.payload == "a"
    m.ack()


def test_get_waits_for_a_message_published_later(hl_conn: Connection, sq: SimpleQueue) -> None:
    with pytest.raises(Empty):
        sq.get(timeout=0.1)  # the consumer is running now
    other = hl_conn.clone()
    try:
        SimpleQueue(other, sq.queue.name).put("late")
    finally:
        other.release()
    m = sq.get(timeout=5)
    assert m.payload == "late"
    m.ack()


def test_qsize_len_and_clear(sq: SimpleQueue) -> None:
    assert sq.qsize() == 0 and len(sq) == 0
    for i in range(5):
        sq.put(i)
    assert sq.qsize() == 5 and len(sq) == 5
    m = sq.get(timeout=5)
    m.ack()
    assert sq.qsize() == 4  # ready in the queue plus received here and not handed out
    sq.consumer.cancel()
    rest = sq.clear()
    assert 0 <= rest <= 4 and sq.qsize() == 4 - rest  # those prefetched are not purged


def test_clear_counts_what_it_removed(hl_conn: Connection) -> None:
    with SimpleQueue(hl_conn, unique("clear")) as q:
        for i in range(3):
            q.put(i)
        assert q.clear() == 3
        assert q.qsize() == 0
        q.queue.delete()


def test_close_gives_back_messages_not_handed_out(hl_conn: Connection) -> None:
    name = unique("close")
    q = SimpleQueue(hl_conn, name)
    for i in range(3):
        q.put(i)
    m = q.get(timeout=5)  # the others may have been prefetched
    m.ack()
    q.close()
    with SimpleQueue(hl_conn, name) as again:
        got = [again.get(timeout=5) for _ in range(2)]
        assert [g.payload for g in got] == [1, 2]
        for g in got:
            g.ack()
        again.queue.delete()


def test_unacked_messages_come_back_after_close(hl_conn: Connection) -> None:
    name = unique("unacked")
    q = SimpleQueue(hl_conn, name)
    q.put("not acked")
    assert q.get(timeout=5).payload == "not acked"
    q.close()  # its channel closes: the broker requeues the unacked message
    with SimpleQueue(hl_conn, name) as again:
        m = again.get(timeout=5)
        assert m.payload == "not acked" and m.delivery_info["redelivered"]
        m.ack()
        again.queue.delete()


def test_put_to_a_deleted_queue_is_not_lost_silently(hl_conn: Connection) -> None:
    q = SimpleQueue(hl_conn, unique("deleted"))
    hl_conn.default_channel.queue_delete(q.queue.name)
    with pytest.raises(MessageReturned):
        q.put("nobody will get this")
    q.close()
    hl_conn.default_channel.exchange_delete(q.queue.exchange.name)


def test_get_consumes_again_after_the_queue_was_deleted(hl_conn: Connection) -> None:
    """Someone deletes the queue a SimpleQueue consumes from (the broker cancels its
    consumer); get() must not wait for ever on a consumer that is gone: it declares the
    queue again, as the constructor did, and consumes from it."""
    sq = SimpleQueue(hl_conn, unique("deleted-while-consumed"))
    try:
        sq.put("one")
        first = sq.get(timeout=5)
        assert first.payload == "one"
        first.ack()
        with hl_conn.clone() as other:  # the same broker, memory:// included
            other.default_channel.queue_delete(sq.queue.name)
            with pytest.raises(Empty):  # the cancel arrives; nothing to hand out
                sq.get(timeout=0.5)
            sq.put("two")  # the queue is back: get() declared it again
            two = sq.get(timeout=5)
            assert two.payload == "two"
            two.ack()
            # And once more, with the cancel arriving while get() waits: another thread
            # deletes the queue, then publishes as soon as the queue is back.
            failed: list[BaseException] = []

            def delete_then_publish() -> None:
                try:
                    time.sleep(0.3)
                    other.default_channel.queue_delete(sq.queue.name)
                    producer = other.Producer(exchange=sq.queue.exchange, routing_key=sq.queue.routing_key)
                    deadline = time.monotonic() + 5
                    while True:
                        try:
                            producer.publish("three", mandatory=True)
                            return
                        except MessageReturned:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.05)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failed.append(exc)

            thread = threading.Thread(target=delete_then_publish)
            thread.start()
            got = sq.get(timeout=10)
            thread.join(10)
            assert not failed, failed
            assert got.payload == "three"
            got.ack()
        assert sq.consumer.cancelled_by_broker == [sq.queue.name, sq.queue.name]
    finally:
        sq.close()
        hl_conn.default_channel.queue_delete(sq.queue.name)
        hl_conn.default_channel.exchange_delete(sq.queue.exchange.name)


def test_get_goes_on_after_the_broker_closed_its_channel(hl_conn: Connection) -> None:
    """The broker closes the SimpleQueue's channel with a channel error (here an ack of a
    tag it never sent; in production, RabbitMQ's consumer_timeout closes it when a slow
    worker holds a delivery too long).  get() raises that error once, then carries on on a
    new channel: it raised ChannelClosedError for ever, put() and qsize() too, even with
    autorecover.  The messages it held unacknowledged come again."""
    sq = SimpleQueue(hl_conn, unique("closed-by-broker"))
    try:
        for n in range(3):
            sq.put(n)
        first = sq.get(timeout=5)
        old = sq.channel
        old.basic_ack(9999)  # 406 PRECONDITION_FAILED - unknown delivery tag
        deadline = time.monotonic() + 10
        while old.is_open and time.monotonic() < deadline:  # the I/O thread reads the close
            time.sleep(0.01)
        with pytest.raises(PreconditionFailed, match="unknown delivery tag"):
            sq.get(timeout=5)
        got = [sq.get(timeout=5) for _ in range(3)]
        assert sq.channel is not old and sq.channel.is_open and not old.is_open
        assert sorted(m.payload for m in got) == [0, 1, 2]
        assert got[0].payload == first.payload and got[0].delivery_info["redelivered"]
        for message in got:
            message.ack()
        sq.put(3)
        assert sq.get(timeout=5).payload == 3
        assert sq.qsize() == 0
    finally:
        sq.close()
        hl_conn.default_channel.queue_delete(sq.queue.name)
        hl_conn.default_channel.exchange_delete(sq.queue.exchange.name)


def test_accept_list(hl_conn: Connection) -> None:
    name = unique("accept")
    with SimpleQueue(hl_conn, name, serializer="pickle") as q:
        q.put({"p": 1})
        m = q.get(timeout=5)
        with pytest.raises(Exception) as info:
            m.decode()
        assert type(info.value).__name__ == "ContentDisallowed"
        m.reject(requeue=True)
        q.close()
        with SimpleQueue(hl_conn, name, accept=["pickle"]) as trusting:
            m = trusting.get(timeout=5)
            assert m.payload == {"p": 1}
            m.ack()
            trusting.queue.delete()


def test_simple_buffer_is_transient_and_no_ack(hl_conn: Connection) -> None:
    with SimpleBuffer(hl_conn, unique("buffer")) as buf:
        assert not buf.queue.durable and buf.queue.auto_delete and buf.no_ack
        buf.put({"b": 1})
        m = buf.get(timeout=5)
        assert m.payload == {"b": 1}
        assert m.acknowledged  # no_ack: nothing to ack
        m.ack()  # ignored, as kombu does: code that always acks works here too
        m.reject()
        with pytest.raises(MessageStateError, match="cannot be requeued"):
            m.requeue()  # it cannot go back: not silently lost
        assert buf.channel.is_open  # nothing was sent
        assert m.properties["delivery_mode"] == 1
        with pytest.raises(Empty):
            buf.get(timeout=0.2)


def test_simple_buffer_is_shared_between_connections_unless_exclusive(hl_conn: Connection, hl_url: str) -> None:
    # Not exclusive (kombu's is): another process's buffer of the same name is the same
    # queue.  queue_opts={"exclusive": True} gives kombu's behaviour back.
    name = unique("buffer")
    other = Connection(hl_url, transport_options=hl_conn.transport_options)
    try:
        with SimpleBuffer(hl_conn, name) as mine, SimpleBuffer(other, name) as theirs:
            mine.put("across")
            assert theirs.get(timeout=5).payload == "across"
        locked = unique("buffer")
        with SimpleBuffer(hl_conn, locked, queue_opts={"exclusive": True}) as mine:
            with pytest.raises(ResourceLocked):
                SimpleBuffer(other, locked, queue_opts={"exclusive": True})
    finally:
        other.release()


def test_simple_queue_gets_on_0_8_where_it_cannot_put(amqp_url: str) -> None:
    # It could not even be made: its producer (confirmed, which 0-8 lacks) failed at once,
    # naming a producer the caller never made.
    name = unique("sq08")
    with Connection(amqp_url, transport_options={"protocol": "0-8"}) as conn:
        with conn.Producer(confirm=False) as producer:
            producer.publish({"x": 1}, routing_key=name, declare=[conn.SimpleQueue(name).queue])
        sq = conn.SimpleQueue(name)
        try:
            assert sq.get(timeout=5).payload == {"x": 1}
            with pytest.raises(LocalProtocolError, match=r"SimpleQueue\.put\(\) publishes confirmed"):
                sq.put({"y": 2})
        finally:
            sq.queue.delete()
            sq.close()


def test_simple_queue_on_a_channel(hl_conn: Connection) -> None:
    channel = hl_conn.channel()
    name = unique("onchannel")
    q = SimpleQueue(channel, name)
    q.put("x")
    q.put("y")
    assert q.get(timeout=5).payload == "x"  # not acked: handed out
    q.close()  # what was received but not handed out is rejected back to the queue
    assert channel.is_open
    # RabbitMQ applies the requeue asynchronously: wait for the count to show it.
    deadline = time.monotonic() + 5
    while channel.queue_declare(name, passive=True).message_count != 1:
        assert time.monotonic() < deadline, "the rejected message never came back"
        time.sleep(0.02)
    channel.close()  # the unacked "x" comes back too
    with SimpleQueue(hl_conn, name) as again:
        assert again.qsize() == 2
        again.queue.delete()


def test_simple_queue_from_a_queue_on_the_default_exchange(hl_conn: Connection) -> None:
    from leveret.highlevel import Queue

    with SimpleQueue(hl_conn, Queue(unique("plain"), exclusive=True)) as q:
        q.put({"via": "default exchange"})
        m = q.get(timeout=5)
        assert m.payload == {"via": "default exchange"}
        m.ack()


def _lose_connection(conn: Connection, kind: str, request: pytest.FixtureRequest) -> None:
    """The broker closes the connection (memory://: its simulated loss)."""
    if kind == "memory":
        lose_memory_connection(conn)
        return
    request.getfixturevalue("node").ctl("close_all_connections", "test")
    deadline = time.monotonic() + 10
    while conn.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not conn.connected


@pytest.mark.parametrize("cls", [SimpleQueue, SimpleBuffer])
def test_messages_received_ahead_of_a_recovery(
    kind: str, node_hl_url: str, request: pytest.FixtureRequest, cls: type[SimpleQueue]
) -> None:
    # SimpleQueue: what was in the prefetch buffer when the connection was lost is not
    # handed out (its ack would raise) -- the broker redelivers it, once.  SimpleBuffer
    # (no_ack): the broker settled those messages on delivery; they are still handed out.
    from leveret.highlevel import memory

    options = {"broker": memory.MemoryBroker()} if kind == "memory" else {}
    policy = {"interval_start": 0.05, "interval_step": 0.1, "timeout": 30}
    conn = Connection(node_hl_url, transport_options=options, autorecover=True, recovery_policy=policy)
    q = cls(conn, unique("simple"), queue_opts={"durable": False})
    try:
        for i in range(5):
            q.put(i)
        first = q.get(timeout=5)
        if not q.no_ack:
            first.ack()
        deadline = time.monotonic() + 5
        while len(q.buffer) < 4 and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
        assert len(q.buffer) == 4
        _lose_connection(conn, kind, request)
        got = []
        while True:
            try:
                message = q.get(timeout=2)
            except Empty:
                break
            if not q.no_ack:
                message.ack()  # raises for a message of the lost connection
            got.append(message.payload)
        assert got == [1, 2, 3, 4]
        if cls is SimpleQueue:
            assert conn.recoveries == 1
        q.close()
        conn.default_channel.queue_delete(q.queue.name)
        conn.default_channel.exchange_delete(q.queue.exchange.name)
    finally:
        conn.release()


def test_every_call_after_a_lost_connection_raises_a_connection_error(
    kind: str, node_hl_url: str, request: pytest.FixtureRequest
) -> None:
    """Without autorecover, a lost connection is what every call reports -- put()
    included: one of ``connection_errors`` (what kombu-style reconnect loops catch), not a
    channel error, since it is not the channel that failed."""
    from leveret.highlevel import memory

    options = {"broker": memory.MemoryBroker()} if kind == "memory" else {}
    conn = Connection(node_hl_url, transport_options=options)
    q = SimpleQueue(conn, unique("lost"), queue_opts={"durable": False, "auto_delete": True})
    try:
        q.put("before")
        q.put("still there")
        q.get(timeout=5).ack()  # consuming when the connection goes
        _lose_connection(conn, kind, request)
        calls = {"put": lambda: q.put("after"), "get": lambda: q.get(timeout=1), "qsize": q.qsize, "clear": q.clear}
        for name, call in calls.items():
            with pytest.raises(Exception) as raised:
                call()
            assert isinstance(raised.value, conn.connection_errors), (name, raised.value)
            assert not isinstance(raised.value, conn.channel_errors), (name, raised.value)
        # The connection object connects again (ensure_connection, or any conn.channel()):
        # the queue's channel is still the lost one's.  get() waited on the new connection,
        # where nothing consumes, and said Empty for ever while the queue held messages.
        conn.ensure_connection(max_retries=3)
        for name, call in {**calls, "get_nowait": q.get_nowait}.items():
            with pytest.raises(Exception) as raised:
                call()
            assert isinstance(raised.value, conn.connection_errors), (name, raised.value)
    finally:
        conn.release()
