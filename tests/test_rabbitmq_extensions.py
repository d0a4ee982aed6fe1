"""RabbitMQ features built on AMQP 0-9-1 that users reach through the client's plain methods:
direct reply-to, stream queues, quorum queues and the delivery acknowledgement timeout.

None of them needs code of its own in leveret; they need the client to carry what RabbitMQ
expects (consume arguments of the right types, a timestamp as a ``T`` field, the
pseudo-queue's rewritten ``reply_to``) and to hand back what RabbitMQ does (``long`` headers
such as ``x-stream-offset`` and ``x-delivery-count``, and each refusal as its typed error
with the broker's text).  Every test runs against the private node, through both drivers.
The expected texts are RabbitMQ 3.10's.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import pytest

from broker import PrivateNode
from drivers import NewConnection
from helpers import unique
from leveret.client import (
    AMQPNotImplemented,
    Channel,
    ChannelClosedError,
    Connection,
    Message,
    PreconditionFailed,
)
from leveret.wire.errors import HardError

REPLY_TO = "amq.rabbitmq.reply-to"


@pytest.fixture
def conn(new_connection: NewConnection, node: PrivateNode) -> Iterator[Connection]:
    connection = new_connection(node.url, rpc_timeout=10).connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def ch(conn: Connection) -> Channel:
    return conn.channel()


@pytest.fixture
def connect(new_connection: NewConnection, node: PrivateNode) -> Iterator[Callable[[], Connection]]:
    """Opens more connections like ``conn`` (for refusals that close the connection)."""
    opened: list[Connection] = []

    def open_one() -> Connection:
        opened.append(new_connection(node.url, rpc_timeout=10).connect())
        return opened[-1]

    yield open_one
    for connection in opened:
        connection.close()


@pytest.fixture
def peer(node: PrivateNode) -> Iterator[Connection]:
    """Another (blocking) connection: the RPC server, the other client."""
    with Connection(node.url, rpc_timeout=10) as connection:
        yield connection


def drain_until(conn: Connection, done: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the broker did not deliver in time"
        try:
            conn.drain_events(timeout=min(remaining, 0.5))
        except TimeoutError:
            pass


def get_soon(ch: Channel, queue: str, no_ack: bool = True, seconds: float = 5.0) -> Message:
    """basic.get until a message is there: a publish on another connection, a requeue or a
    dead-lettering reaches the queue a moment later."""
    deadline = time.monotonic() + seconds
    while (msg := ch.basic_get(queue, no_ack=no_ack)) is None:
        assert time.monotonic() < deadline, f"nothing arrived in {queue}"
        time.sleep(0.02)
    return msg


def refused(conn: Connection, error: type[Exception], text: str,
            call: Callable[[Channel], Any]) -> None:
    """``call`` on a fresh channel of ``conn`` makes the broker refuse with ``error``.

    A soft error (406 PRECONDITION_FAILED...) closes that channel only; a hard one (540
    NOT_IMPLEMENTED, which RabbitMQ uses for what a queue type cannot do) closes ``conn``.
    """
    ch = conn.channel()
    with pytest.raises(error) as info:
        call(ch)
        ch.queue_declare("", exclusive=True)  # an asynchronous refusal shows here
    assert text in str(info.value)
    assert not ch.is_open
    with pytest.raises((ChannelClosedError, error)):
        ch.queue_declare("", exclusive=True)
    if issubclass(error, HardError):
        assert not conn.is_open
        with pytest.raises(error):
            conn.channel()
    else:
        with conn.channel() as other:
            assert other.queue_declare("", exclusive=True).queue.startswith("amq.gen-")


# --------------------------------------------------------------------------- direct reply-to


def test_direct_reply_to_carries_replies_back_without_a_reply_queue(
    conn: Connection, ch: Channel, peer: Connection
) -> None:
    assert conn.server_properties["capabilities"]["direct_reply_to"] is True
    requests = peer.channel().queue_declare(unique("rpc"), auto_delete=True).queue
    replies: list[Message] = []
    ch.basic_consume(REPLY_TO, no_ack=True, callback=replies.append)
    for n in range(20):
        ch.basic_publish(Message(str(n), reply_to=REPLY_TO, correlation_id=f"c{n}"),
                         routing_key=requests)

    server = peer.channel()
    reply_to = set()
    for n in range(20):
        request = get_soon(server, requests)
        # The broker rewrote the pseudo-queue's name into one that leads to this channel.
        assert request.reply_to.startswith(REPLY_TO + ".")
        reply_to.add(request.reply_to)
        server.basic_publish(Message(b"re: " + bytes(request.body),
                                     correlation_id=request.correlation_id),
                             routing_key=request.reply_to)

    drain_until(conn, lambda: len(replies) == 20)
    assert len(reply_to) == 1
    assert [(m.correlation_id, bytes(m.body)) for m in replies] == [
        (f"c{n}", f"re: {n}".encode()) for n in range(20)
    ]
    assert {m.delivery_info["routing_key"] for m in replies} == reply_to
    assert {m.delivery_info["exchange"] for m in replies} == {""}


def test_direct_reply_to_refusals_are_typed(conn: Connection) -> None:
    refused(conn, PreconditionFailed, "reply consumer cannot acknowledge",
            lambda ch: ch.basic_consume(REPLY_TO, no_ack=False, callback=print))
    # A request naming the pseudo-queue on a channel that does not consume from it.
    refused(conn, PreconditionFailed, "fast reply consumer does not exist",
            lambda ch: ch.basic_publish(Message(b"?", reply_to=REPLY_TO), routing_key="nowhere"))


# --------------------------------------------------------------------------- streams


@pytest.fixture
def stream(ch: Channel) -> Iterator[str]:
    """A stream holding ten messages, "0" to "9", at offsets 0 to 9."""
    name = unique("stream")
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    try:
        ch.confirm_select()
        for n in range(10):
            ch.basic_publish(Message(str(n)), routing_key=name)
        ch.wait_for_confirms(timeout=10)
        yield name
    finally:
        with ch.connection.channel() as cleanup:
            cleanup.queue_delete(name)


def read_stream(conn: Connection, stream: str, offset: Any, count: int) -> list[tuple[int, bytes]]:
    """(x-stream-offset, body) of the first ``count`` deliveries from ``offset`` on."""
    got: list[Message] = []
    with conn.channel() as ch:
        ch.basic_qos(prefetch_count=4)  # streams demand a prefetch; 4 makes the broker wait for acks

        def on_message(message: Message) -> None:
            got.append(message)
            message.ack()

        ch.basic_consume(stream, callback=on_message, arguments={"x-stream-offset": offset})
        drain_until(conn, lambda: len(got) >= count)
    return [(m.headers["x-stream-offset"], bytes(m.body)) for m in got[:count]]


def test_a_stream_is_read_from_the_offset_the_consumer_names(conn: Connection, stream: str) -> None:
    everything = [(n, str(n).encode()) for n in range(10)]
    assert read_stream(conn, stream, "first", 10) == everything
    assert read_stream(conn, stream, 7, 3) == everything[7:]
    assert read_stream(conn, stream, 2**40, 0) == []  # a long: past the end is allowed
    # A datetime goes out as an AMQP timestamp ('T'): every message since then.
    since = datetime.now(timezone.utc) - timedelta(minutes=10)
    assert read_stream(conn, stream, since, 10) == everything
    assert read_stream(conn, stream, "1h", 10) == everything  # an interval, as a string


def test_a_stream_consumer_at_next_sees_only_what_comes_after(
    conn: Connection, ch: Channel, stream: str, peer: Connection
) -> None:
    got: list[Message] = []
    ch.basic_qos(prefetch_count=10)

    def on_message(message: Message) -> None:
        got.append(message)
        message.ack()

    ch.basic_consume(stream, callback=on_message, arguments={"x-stream-offset": "next"})
    publisher = peer.channel()
    publisher.confirm_select()
    publisher.basic_publish(Message(b"new"), routing_key=stream)
    publisher.wait_for_confirms(timeout=10)
    drain_until(conn, lambda: len(got) == 1)
    assert [(m.headers["x-stream-offset"], bytes(m.body)) for m in got] == [(10, b"new")]


def test_stream_refusals_are_typed(conn: Connection, connect: Callable[[], Connection],
                                   stream: str) -> None:
    refused(conn, PreconditionFailed, "consumer prefetch count is not set",
            lambda ch: ch.basic_consume(stream, callback=print))

    def no_ack(ch: Channel) -> None:
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(stream, no_ack=True, callback=print)

    refused(conn, PreconditionFailed, "invalid property 'non-durable'",
            lambda ch: ch.queue_declare(unique("stream"), arguments={"x-queue-type": "stream"}))
    refused(connect(), AMQPNotImplemented,
            "automatic acknowledgement not supported by stream queues", no_ack)
    refused(connect(), AMQPNotImplemented, "basic.get not supported by stream queues",
            lambda ch: ch.basic_get(stream))


# --------------------------------------------------------------------------- quorum queues


@pytest.fixture
def quorum(ch: Channel) -> Iterator[Callable[..., str]]:
    """Declares quorum queues (durable, as they must be) and deletes them afterwards."""
    names: list[str] = []

    def declare(**arguments: Any) -> str:
        name = unique("quorum")
        ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum", **arguments})
        names.append(name)
        return name

    yield declare
    with ch.connection.channel() as cleanup:
        for name in names:
            cleanup.queue_delete(name)


def test_a_quorum_queue_counts_deliveries_and_dead_letters_past_the_limit(
    ch: Channel, quorum: Callable[..., str]
) -> None:
    dead = ch.queue_declare("", exclusive=True).queue
    queue = quorum(**{"x-delivery-limit": 2, "x-dead-letter-exchange": "",
                      "x-dead-letter-routing-key": dead})
    ch.confirm_select()
    ch.basic_publish(Message(b"poison", headers={"app": "test"}), routing_key=queue)
    ch.wait_for_confirms(timeout=10)

    seen = []
    for _ in range(3):  # the first delivery and two redeliveries; the limit is reached
        message = get_soon(ch, queue, no_ack=False)
        seen.append((message.redelivered, message.headers))
        message.reject(requeue=True)
    assert seen == [
        (False, {"app": "test", "x-delivery-count": 0}),
        (True, {"app": "test", "x-delivery-count": 1}),
        (True, {"app": "test", "x-delivery-count": 2}),
    ]

    corpse = get_soon(ch, dead)
    assert bytes(corpse.body) == b"poison"
    (death,) = corpse.headers["x-death"]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == queue
    assert death["count"] == 1
    assert isinstance(death["time"], datetime)
    assert corpse.headers["x-first-death-reason"] == "delivery_limit"
    assert ch.queue_declare(queue, passive=True).message_count == 0


def test_quorum_queue_refusals_are_typed(conn: Connection, connect: Callable[[], Connection],
                                         quorum: Callable[..., str]) -> None:
    refused(conn, PreconditionFailed, "invalid property 'non-durable'",
            lambda ch: ch.queue_declare(unique("quorum"), arguments={"x-queue-type": "quorum"}))
    refused(conn, PreconditionFailed, "invalid property 'exclusive-owner'",
            lambda ch: ch.queue_declare(unique("quorum"), durable=True, exclusive=True,
                                        arguments={"x-queue-type": "quorum"}))
    queue = quorum()

    def global_prefetch(ch: Channel) -> None:
        ch.basic_qos(prefetch_count=10, a_global=True)
        ch.basic_consume(queue, callback=print)

    refused(connect(), AMQPNotImplemented, "does not support global qos", global_prefetch)


# --------------------------------------------------------------------------- consumer timeout


def test_an_unacknowledged_delivery_past_the_consumer_timeout_closes_the_channel(
    new_connection: NewConnection, fresh_node: PrivateNode
) -> None:
    # RabbitMQ checks on every channel tick (60 s by default); both values are shortened
    # on this node only, before the channel is opened.
    fresh_node.eval("application:set_env(rabbit, consumer_timeout, 300).")
    fresh_node.eval("application:set_env(rabbit, channel_tick_interval, 100).")
    with new_connection(fresh_node.url, rpc_timeout=10).connect() as conn:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        ch.basic_publish(Message(b"slow"), routing_key=queue)
        got: list[Message] = []
        ch.basic_consume(queue, callback=got.append)
        with pytest.raises(PreconditionFailed) as info:
            drain_until(conn, lambda: False)  # the consumer loop hears of it
        assert "delivery acknowledgement on channel 1 timed out" in str(info.value)
        assert len(got) == 1 and not ch.is_open
        with pytest.raises(PreconditionFailed):  # and so does the channel's next call, once
            got[0].ack()
        with pytest.raises(ChannelClosedError):
            got[0].ack()
        # The message went back to the queue, and the connection carries on.
        other = conn.channel()
        again = other.basic_get(queue)
        assert again is not None and bytes(again.body) == b"slow" and again.redelivered
