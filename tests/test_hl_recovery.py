"""Automatic recovery (``Connection(autorecover=True)``, leveret/highlevel/recovery.py).

Every fault is real: the broker closes the connections (``rabbitmqctl
close_all_connections``), its application stops and starts again (``stop_app`` /
``start_app`` on a private node of the test's own), or a TCP proxy on loopback
(tests/tcpproxy.py) resets the connection while the broker's confirms are held back in it.
Nothing is mocked; every wait is bounded.

The two 100,000-message runs are the issue's proof: persistent messages published with
confirms to a durable queue while the broker closes the connections (or restarts), consumed
by a consumer that recovers too -- every message arrives, and the duplicates are no more than
the producer reports having republished.
"""

from __future__ import annotations

import collections
import logging
import threading
import contextlib
import time
import uuid
import weakref
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from broker import PrivateNode
from hl_fixtures import ack_into, got, lose_memory_connection, return_bodies_into
from leveret.client import Channel as ClientChannel
from leveret.client import Connection as ClientConnection
from leveret.client import ChannelClosedError, ConnectionForced, ConnectionLost, NotFound
from leveret.highlevel import Connection, Consumer, Exchange, OperationalError, Producer, Queue
from leveret.highlevel.recovery import DeliveryTag, RecoveringChannel, RecordedBinding
from tcpproxy import TCPProxy

# Quick retries, bounded (a test must not wait for ever on a broker that stays down).
FAST = {"interval_start": 0.05, "interval_step": 0.1, "interval_max": 0.5, "timeout": 60}


# --------------------------------------------------------------------------- helpers


def unique(prefix: str = "rec") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def recovering(url: str, **kwargs: Any) -> Connection:
    options = {"recovery_policy": dict(FAST), **kwargs}
    return Connection(url, autorecover=True, **options)


def kinds(conn: Connection) -> list[str]:
    return [e.kind for e in conn.recovery_events]


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout} s")
        time.sleep(0.02)


def ready_count(url: str, queue: str) -> int:
    """Messages ready in ``queue``, asked on a connection of its own."""
    with ClientConnection(url) as conn:
        ch = conn.channel()
        return int(ch.queue_declare(queue, passive=True).message_count)


def exists(url: str, queue: str) -> bool:
    with ClientConnection(url) as conn:
        try:
            conn.channel().queue_declare(queue, passive=True)
        except NotFound:
            return False
        return True


def exchange_exists(url: str, exchange: str) -> bool:
    with ClientConnection(url) as conn:
        try:
            conn.channel().exchange_declare(exchange, passive=True)
        except NotFound:
            return False
        return True


def drain(conn: Connection, until: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"nothing more arrived within {timeout} s")
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass


@pytest.fixture
def proxy(node: PrivateNode) -> Iterator[TCPProxy]:
    with TCPProxy(urlsplit(node.url).port or 5672) as p:
        yield p


# --------------------------------------------------------------------------- defaults


def test_autorecover_is_off_unless_asked() -> None:
    conn = Connection("memory://")
    try:
        assert conn.autorecover is False
        assert not isinstance(conn.default_channel, RecoveringChannel)
    finally:
        conn.release()
    conn = Connection("memory://", autorecover=True)
    try:
        assert isinstance(conn.default_channel, RecoveringChannel)
        assert isinstance(conn.channel(), RecoveringChannel)
        assert conn.clone().autorecover is True
    finally:
        conn.release()


# --------------------------------------------------------------------------- recording


def test_topology_records_what_is_declared_and_forgets_what_goes(amqp_url: str) -> None:
    conn = recovering(amqp_url)
    try:
        ex = Exchange(unique("ex"), "topic", durable=False)
        side = Exchange(unique("side"), "fanout", durable=False, auto_delete=True)
        q = Queue(unique("q"), ex, "a.*", durable=False, queue_arguments={"x-max-length": 10})
        gone = Queue(unique("gone"), durable=False)
        ad = Queue(unique("ad"), durable=False, auto_delete=True)
        for entity in (ex, side, q, gone, ad):
            entity(conn).declare()
        side(conn).bind_to(ex, "b.#")
        q(conn).bind_to(side)
        topo = conn.topology
        assert list(topo.exchanges) == [ex.name, side.name]
        assert topo.exchanges[ex.name].type == "topic" and topo.exchanges[side.name].auto_delete
        assert topo.queues[q.name].arguments == {"x-max-length": 10}
        assert set(topo.queues) == {q.name, gone.name, ad.name}
        assert RecordedBinding("queue", q.name, ex.name, "a.*").key in topo.bindings
        assert RecordedBinding("exchange", side.name, ex.name, "b.#").key in topo.bindings
        assert RecordedBinding("queue", q.name, side.name, "").key in topo.bindings

        got: list[Any] = []
        consumer = Consumer(conn, [q, ad], on_message=got.append, prefetch_count=7)
        consumer.consume()
        recorded = {c.queue: c for c in topo.consumers()}
        assert set(recorded) == {q.name, ad.name}
        assert recorded[q.name].qos == (0, 7) and not recorded[q.name].no_ack

        gone(conn).delete()
        assert gone.name not in topo.queues
        consumer.cancel_by_queue(ad)  # its last consumer: the broker deletes it, we forget it
        assert ad.name not in topo.queues
        eventually(lambda: not exists(amqp_url, ad.name), what="auto-delete queue deleted")
        q(conn).unbind_from(side)
        assert RecordedBinding("queue", q.name, side.name, "").key not in topo.bindings
        # side is auto-delete and lost its last binding as a source: the broker deleted it
        # (and with it the binding ex -> side), so it is forgotten too.
        assert side.name not in topo.exchanges
        assert RecordedBinding("exchange", side.name, ex.name, "b.#").key not in topo.bindings
        assert not exchange_exists(amqp_url, side.name)
        consumer.cancel()
        assert list(topo.consumers()) == []
        assert q.name in topo.queues  # not auto-delete: stays
        q(conn).delete()
        ex(conn).delete()
        assert not topo.queues and not topo.exchanges and not topo.bindings
    finally:
        conn.release()
    assert not conn.topology.channels


# --------------------------------------------------------------------------- replay


def test_recovery_recreates_what_the_broker_lost_and_consumers_resume(node: PrivateNode) -> None:
    """An auto-delete exchange bound (exchange-to-exchange) to another bound to a server-named
    exclusive queue: all of it vanishes with the connection, and recovery brings it back --
    the queue under a new name, with its bindings and its consumer (same tag, same qos)."""
    listened: list[tuple[str, str]] = []
    calls: list[str] = []
    conn = recovering(
        node.url,
        on_connection_lost=lambda exc: calls.append(f"lost:{type(exc).__name__}"),
        on_recovery_started=lambda: calls.append("started"),
        on_recovery_succeeded=lambda: calls.append("succeeded"),
    )
    try:
        front = Exchange(unique("front"), "fanout", durable=False, auto_delete=True)
        back = Exchange(unique("back"), "direct", durable=False, auto_delete=True)
        q = Queue("", back, "key", exclusive=True)
        got: list[Any] = []
        consumer = Consumer(conn, q, callbacks=[ack_into(got)], prefetch_count=3)
        front(conn).declare()
        back(conn).bind_to(front)
        conn.topology.add_rename_listener(lambda old, new: listened.append((old, new)))
        consumer.consume()
        first_name = consumer.queues[0].name
        tag = next(iter(conn.topology.consumers())).tag
        producer = Producer(conn, front, routing_key="key")
        producer.publish("before")
        drain(conn, lambda: got)

        node.ctl("close_all_connections", "test")
        eventually(lambda: not exchange_exists(node.url, front.name), what="the broker forgot the topology")
        producer.publish("after")  # meets the lost connection: recovers, then publishes
        drain(conn, lambda: len(got) == 2)

        assert got == ["before", "after"]
        new_name = consumer.queues[0].name
        assert new_name != first_name and new_name.startswith("amq.gen-")
        assert listened == [(first_name, new_name)]
        assert kinds(conn) == ["connection_lost", "recovery_started", "queue_renamed", "recovery_succeeded"]
        assert calls == ["lost:ConnectionForced", "started", "succeeded"]
        assert conn.recoveries == 1
        rows = [r.split("\t") for r in node.ctl(
            "list_consumers", "-q", "--no-table-headers", "queue_name", "consumer_tag", "prefetch_count",
        ).splitlines() if new_name in r]
        assert rows == [[new_name, tag, "3"]]
        assert consumer.consuming_from(new_name)
    finally:
        conn.release()


def test_deleted_and_auto_deleted_entities_are_not_redeclared(node: PrivateNode) -> None:
    conn = recovering(node.url)
    try:
        kept = Queue(unique("kept"), durable=False)
        deleted = Queue(unique("deleted"), durable=False)
        auto = Queue(unique("auto"), durable=False, auto_delete=True)
        for q in (kept, deleted, auto):
            q(conn).declare()
        deleted(conn).delete()
        consumer = Consumer(conn, auto, on_message=lambda m: None)
        consumer.consume()
        consumer.cancel()  # the broker deletes "auto" now
        ch = conn.channel()
        eventually(lambda: not exists(node.url, auto.name), what="auto-delete queue deleted")
        node.ctl("close_all_connections", "test")
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(kept.name)  # the broker forgets "kept" meanwhile
        ch.queue_declare(unique("probe"), exclusive=True)  # any use recovers
        assert conn.recoveries == 1
        assert exists(node.url, kept.name)  # re-declared by the recovery
        assert not exists(node.url, deleted.name)
        assert not exists(node.url, auto.name)
        kept(conn).delete()
    finally:
        conn.release()


def test_drain_events_waits_through_a_recovery(node: PrivateNode) -> None:
    conn = recovering(node.url)
    try:
        q = Queue(unique(), exclusive=True)
        got: list[Any] = []
        Consumer(conn, q, on_message=got.append).consume()
        name = q.name

        def close_then_publish() -> None:
            time.sleep(0.3)
            node.ctl("close_all_connections", "test")
            eventually(lambda: conn.recoveries == 1, what="recovery")
            with ClientConnection(node.url) as other:
                other.channel().basic_publish(b"after", "", name)

        t = threading.Thread(target=close_then_publish, daemon=True)
        t.start()
        start = time.monotonic()
        conn.drain_events(timeout=20)  # neither the connection error nor a timeout
        t.join(10)
        assert [m.body for m in got] == [b"after"]
        assert time.monotonic() - start < 15
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)
    finally:
        conn.release()


def test_refusals_during_replay_are_reported(node: PrivateNode) -> None:
    """Between the loss and the recovery, another client re-declares our queue differently
    and takes an exclusive consumer on another: the re-declaration and our consumer fail,
    are listed in recovery_events, and the consumer's cancel callback is called."""
    name, other_name = unique("changed"), unique("taken")
    other = ClientConnection(node.url)  # connected after the broker closed everything

    def meddle() -> None:
        ch = other.channel()
        ch.queue_delete(name)
        ch.queue_declare(name, durable=True)  # ours is transient: PRECONDITION_FAILED
        ch.basic_consume(other_name, exclusive=True, callback=lambda m: None)

    conn = recovering(node.url, on_recovery_started=meddle)
    try:
        ch = conn.channel()
        assert isinstance(ch, RecoveringChannel)
        ch.queue_declare(name, durable=False)
        ch.queue_declare(other_name, durable=False)
        cancelled: list[str] = []
        tag = ch.basic_consume(other_name, callback=lambda m: None, on_cancel=cancelled.append)
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        other.connect()
        conn.connect()  # recovers
        failed = {e.kind: e for e in conn.recovery_events if e.kind.endswith("_failed")}
        assert set(failed) == {"declaration_failed", "consumer_failed"}
        assert failed["declaration_failed"].detail.name == name
        assert failed["consumer_failed"].detail.tag == tag
        assert cancelled == [tag]
        assert ch.is_open and not ch.consumers  # the channel itself was recovered
        ch.queue_delete(other_name)
    finally:
        conn.release()
        with other:
            other.channel().queue_delete(name)


def test_a_refused_consumer_does_not_take_the_others_of_its_channel_along(node: PrivateNode) -> None:
    """Two consumers on one channel; while the connection is down, another client deletes
    the queue of the second (a queue we never declared: the recovery does not bring it
    back).  Its basic.consume is refused at the replay, which closes that transport
    channel: the first consumer, registered on it just before, is registered again on a
    fresh one (with its prefetch) and receives; only the second is reported."""
    kept, taken = unique("kept"), unique("taken")
    with ClientConnection(node.url) as other:
        other.channel().queue_declare(taken, durable=False)
    conn = recovering(node.url)
    try:
        ch = conn.channel()
        ch.queue_declare(kept, durable=False)
        ch.basic_qos(0, 3)
        got: list[Any] = []
        cancelled: list[str] = []
        kept_tag = ch.basic_consume(kept, callback=got.append)
        taken_tag = ch.basic_consume(taken, callback=lambda m: None, on_cancel=cancelled.append)
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(taken)
        conn.connect()  # recovers
        assert conn.recoveries == 1
        assert [e.detail.tag for e in conn.recovery_events if e.kind == "consumer_failed"] == [taken_tag]
        assert cancelled == [taken_tag]
        assert [c.tag for c in conn.topology.consumers()] == [kept_tag]
        rows = [r.split("\t") for r in node.ctl(
            "list_consumers", "-q", "--no-table-headers", "queue_name", "consumer_tag", "prefetch_count",
        ).splitlines()]
        assert [kept, kept_tag, "3"] in rows
        with ClientConnection(node.url) as other:
            other.channel().basic_publish(b"after", "", kept)
        drain(conn, lambda: got)
        assert [m.body for m in got] == [b"after"]
        got[0].ack()
        assert ch.is_open
        ch.queue_delete(kept)
    finally:
        conn.release()


def test_exclusive_consumer_still_held_by_the_old_connection_is_retried(node: PrivateNode) -> None:
    """The broker may not have noticed yet that the old connection is dead (missed
    heartbeats take a while), and still hold its exclusive consumer: the replayed one is
    refused with 403 "in exclusive use".  Like an exclusive queue still locked, that is
    retried until the broker lets go -- here another connection's exclusive consumer,
    closed after the first refused attempt -- and the consumer is not dropped."""
    name = unique("excl")
    holder = ClientConnection(node.url)
    failures: list[BaseException] = []

    def errback(exc: BaseException, interval: float) -> None:
        failures.append(exc)
        if len(failures) == 1:
            holder.close()

    conn = recovering(node.url, recovery_policy={**FAST, "errback": errback})
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=False)
        got: list[Any] = []
        cancelled: list[str] = []
        tag = ch.basic_consume(name, exclusive=True, no_ack=True, callback=got.append, on_cancel=cancelled.append)
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        holder.connect()
        holder.channel().basic_consume(name, exclusive=True, callback=lambda m: None)
        conn.connect()  # recovers, after the holder let go
        assert conn.recoveries == 1
        assert "consumer_failed" not in kinds(conn) and cancelled == []
        assert failures and isinstance(failures[0], OperationalError) and "exclusive" in str(failures[0])
        assert [c.tag for c in conn.topology.consumers()] == [tag]
        with ClientConnection(node.url) as other:
            other.channel().basic_publish(b"mine again", "", name)
        drain(conn, lambda: got)
        assert [m.body for m in got] == [b"mine again"]
        ch.queue_delete(name)
    finally:
        conn.release()
        holder.close()


def test_channel_modes_and_global_qos_come_back(node: PrivateNode) -> None:
    """A channel in tx mode with a global prefetch is moved to a new transport channel in
    tx mode with the same global prefetch: a commit after the recovery is a commit, not a
    PRECONDITION_FAILED for a channel that never selected tx."""
    conn = recovering(node.url)
    name = unique("tx")
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=False)
        ch.basic_qos(0, 7, a_global=True)
        ch.tx_select()
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        conn.connect()  # recovers
        assert conn.recoveries == 1
        ch.basic_publish(b"in a transaction", "", name)
        time.sleep(0.2)
        assert ready_count(node.url, name) == 0  # not before the commit
        ch.tx_commit()
        assert ready_count(node.url, name) == 1
        ch.basic_publish(b"rolled back", "", name)
        ch.tx_rollback()
        assert ready_count(node.url, name) == 1
        rows = node.ctl("list_channels", "-q", "--no-table-headers", "transactional", "global_prefetch_count")
        assert ["true", "7"] in [r.split("\t") for r in rows.splitlines()]
        ch.queue_delete(name)
    finally:
        conn.release()


def test_consumer_cancelled_by_the_broker_is_not_resumed(node: PrivateNode) -> None:
    """The broker cancels a consumer (another client deleted its queue): the cancel
    callback hears it, the consumer is forgotten, and a later recovery does not bring it
    back."""
    conn = recovering(node.url)
    gone, kept = unique("gone"), unique("kept")
    try:
        ch = conn.channel()
        for name in (gone, kept):
            ch.queue_declare(name, durable=False)
        cancelled: list[str] = []
        tag = ch.basic_consume(gone, callback=lambda m: None, on_cancel=cancelled.append)
        kept_tag = ch.basic_consume(kept, callback=lambda m: None)
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(gone)
        drain(conn, lambda: cancelled)
        assert cancelled == [tag]
        assert [c.tag for c in conn.topology.consumers()] == [kept_tag]
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        conn.connect()
        assert conn.recoveries == 1
        consumers = [r.split("\t") for r in node.ctl(
            "list_consumers", "-q", "--no-table-headers", "queue_name", "consumer_tag",
        ).splitlines()]
        assert [kept, kept_tag] in consumers
        assert not [row for row in consumers if row[1] == tag]
        assert cancelled == [tag]  # heard once, not again at the recovery
        ch.queue_delete(kept)
        ch.queue_delete(gone)  # re-declared by the recovery (we had declared it)
    finally:
        conn.release()


def test_surviving_server_named_queue_keeps_its_name_and_messages(node: PrivateNode) -> None:
    """A server-named queue that outlives the connection (durable, neither exclusive nor
    auto-delete) is not declared anew under another name: it keeps its name, its
    messages, its bindings and its consumer."""
    conn = recovering(node.url)
    try:
        ch = conn.channel()
        name = ch.queue_declare("", durable=True).queue
        exchange = unique("ex")
        ch.exchange_declare(exchange, "direct", durable=False)
        ch.queue_bind(name, exchange, "k")
        ch.basic_publish(b"kept", exchange, "k")
        eventually(lambda: ready_count(node.url, name) == 1, what="message queued")
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        got: list[Any] = []
        conn.connect()
        ch.basic_consume(name, no_ack=True, callback=got.append)
        ch.basic_publish(b"routed", exchange, "k")  # the binding is still there
        drain(conn, lambda: len(got) == 2)
        assert [m.body for m in got] == [b"kept", b"routed"]
        assert "queue_renamed" not in kinds(conn)
        ch.queue_delete(name)
        ch.exchange_delete(exchange)
    finally:
        conn.release()


def test_plain_calls_go_through_a_recovering_channel(amqp_url: str) -> None:
    """basic.get, the acknowledgements, basic.recover and channel.flow reach the broker
    through a recovering channel as through a bare one."""
    conn = recovering(amqp_url)
    try:
        ch = conn.channel()
        assert isinstance(ch, RecoveringChannel)
        name = ch.queue_declare("", exclusive=True).queue
        for body in (b"a", b"b", b"c", b"d"):
            ch.basic_publish(body, "", name)
        eventually(lambda: ch.queue_declare(name, passive=True).message_count == 4, what="messages queued")
        first = got(ch.basic_get(name))
        ch.basic_ack(got(first.delivery_tag))
        second = got(ch.basic_get(name))
        ch.basic_reject(got(second.delivery_tag), requeue=False)
        third = got(ch.basic_get(name))
        ch.basic_nack(got(third.delivery_tag), requeue=True)
        bodies = {first.body, second.body}
        again = got(ch.basic_get(name))
        assert again.body == third.body and again.redelivered
        ch.basic_recover(requeue=True)  # the unacked one goes back
        assert ch.flow(True) is True
        left = sorted(got(ch.basic_get(name, no_ack=True)).body for _ in range(2))
        assert bodies | set(left) == {b"a", b"b", b"c", b"d"}
        assert ch.basic_get(name) is None
        ch.close()
        ch.close()  # twice: nothing more happens
        assert not ch.is_open
    finally:
        conn.release()


def test_a_tag_from_before_a_recovery_is_refused_not_sent_on_the_new_channel(node: PrivateNode) -> None:
    """``channel.basic_ack(message.delivery_tag)`` (pika's way) for a delivery of a lost
    connection raises ChannelClosedError: the broker requeued that delivery, and on the new
    transport channel the same number names another one -- here the redelivery itself,
    which the application would then ack a second time (406: the channel closes).  The
    redelivery's own tag acks it."""
    conn = recovering(node.url)
    try:
        ch = conn.channel()
        assert isinstance(ch, RecoveringChannel)
        name = ch.queue_declare(unique("tags")).queue
        ch.basic_qos(0, 1)
        received: list[Any] = []
        ch.basic_consume(name, callback=received.append)
        ch.basic_publish(b"only", "", name)
        drain(conn, lambda: received)
        first = received.pop()
        assert first.delivery_tag == 1 and not first.redelivered

        node.ctl("close_all_connections", "test")
        drain(conn, lambda: conn.recoveries == 1 and received)
        again = received.pop()
        assert again.body == b"only" and again.redelivered and again.delivery_tag == 1
        stale: list[Callable[[], None]] = [
            lambda: ch.basic_ack(first.delivery_tag),
            lambda: ch.basic_ack(first.delivery_tag, multiple=True),
            lambda: ch.basic_nack(first.delivery_tag),
            lambda: ch.basic_reject(first.delivery_tag),
        ]
        for settle in stale:
            with pytest.raises(ChannelClosedError, match="delivery tag 1 came on a transport channel lost"):
                settle()
        with pytest.raises(ConnectionForced):  # the message's own channel: its connection's loss
            first.ack()
        ch.basic_ack(again.delivery_tag)
        assert ch.queue_declare(name, passive=True).message_count == 0  # a reply: no 406 came first
        assert ch.is_open and ch.transport_channel.is_open
        ch.basic_cancel(next(iter(ch.consumers)))
        ch.basic_publish(b"got", "", name)
        fetched = got(eventually(lambda: ch.basic_get(name), what="the message queued"))
        assert isinstance(fetched.delivery_tag, DeliveryTag)
        assert fetched.delivery_tag.channel is ch.transport_channel
        ch.basic_ack(fetched.delivery_tag)
        ch.queue_delete(name)
    finally:
        conn.release()


def test_a_kombu_message_from_before_a_recovery_refuses_its_ack_as_the_channel_does(node: PrivateNode) -> None:
    """``message.ack()`` of a high-level message received before a recovery raised the lost
    connection's ``ConnectionForced`` while the connection was recovered and open: a
    ConsumerMixin or a retry takes that for the loss of the connection it uses.  It raises
    ``ChannelClosedError`` now, as ``channel.basic_ack(message.delivery_tag)`` does, and the
    redelivery acks."""
    conn = recovering(node.url)
    try:
        queue = Queue(unique("stale-ack"))
        received: list[Any] = []
        consumer = conn.Consumer(queue, callbacks=[lambda body, message: received.append(message)],
                                 prefetch_count=1)
        consumer.consume()
        conn.Producer().publish(b"only", routing_key=queue.name)
        drain(conn, lambda: received)
        first = received.pop()
        node.ctl("close_all_connections", "test")
        drain(conn, lambda: conn.recoveries == 1 and received)
        again = received.pop()
        assert again.body == b"only" and again.delivery_info["redelivered"]
        with pytest.raises(ChannelClosedError, match="came on a connection lost since") as info:
            first.ack()
        assert isinstance(info.value.__cause__, ConnectionForced)
        with pytest.raises(ChannelClosedError):
            first.reject(requeue=True)
        assert first.acknowledged is False
        again.ack()
        assert conn.default_channel.queue_declare(queue.name, passive=True).message_count == 0
        consumer.cancel()
        conn.default_channel.queue_delete(queue.name)
    finally:
        conn.release()


def test_transport_specific_attributes_are_read_from_the_transport_channel(amqp_url: str) -> None:
    """What only one transport's channel has (the client's ``unconfirmed``, ``nacked``) is
    still reached through a recovering channel at run time, though type checkers do not
    see it there (``transport_channel`` is the typed way)."""
    conn = recovering(amqp_url)
    try:
        ch = conn.channel()
        assert isinstance(ch, RecoveringChannel)
        assert ch.flow_active is True
        ch.confirm_select()
        name = ch.queue_declare("", exclusive=True).queue
        ch.basic_publish(b"x", "", name)
        forwarded: Any = ch  # the type checker knows no more than RecoveringChannel's own
        assert forwarded.unconfirmed == ch.transport_channel.unconfirmed
        assert forwarded.nacked == []
        assert ch.wait_for_confirms(timeout=10)
        assert forwarded.unconfirmed == []
        with pytest.raises(AttributeError):
            forwarded.no_such_attribute
    finally:
        conn.release()


def test_a_delivery_tag_copies_and_pickles_as_the_plain_number() -> None:
    """A DeliveryTag sits in message.delivery_info: deepcopy and pickle of that must work
    (the tag holds the transport channel, which neither can take); what comes out is the
    number, which names no channel."""
    import copy
    import pickle

    channel = threading.Lock()  # stands in for a transport channel: copies and pickles neither
    tag = DeliveryTag(7, channel)
    assert tag == 7 and tag.channel is channel
    for clone in (copy.copy(tag), copy.deepcopy({"delivery_tag": tag})["delivery_tag"],
                  pickle.loads(pickle.dumps(tag))):
        assert clone == 7 and type(clone) is int


def test_release_from_another_thread_is_not_recovered_by_a_draining_thread(amqp_url: str) -> None:
    """A thread in drain_events() sees the transport connection that release() closed:
    that is no loss to recover from.  It reconnected, and waited for ever on a connection
    without its consumers (the release had cleared them)."""
    conn = recovering(amqp_url)
    try:
        ch = conn.channel()
        name = ch.queue_declare("", exclusive=True).queue
        ch.basic_consume(name, callback=lambda m: None)
        outcome: list[BaseException] = []

        def drainer() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    continue
                except BaseException as exc:  # noqa: BLE001 - what ended it is the point
                    outcome.append(exc)
                    return

        thread = threading.Thread(target=drainer)
        thread.start()
        time.sleep(0.5)
        conn.release()
        thread.join(15)
        assert not thread.is_alive()
        assert outcome and isinstance(outcome[0], OperationalError), outcome
        assert "released" in str(outcome[0])
        assert not conn.connected
        assert "recovery_started" not in kinds(conn)
    finally:
        conn.release()


def test_released_connection_forgets_its_topology(amqp_url: str) -> None:
    conn = recovering(amqp_url)
    q = Queue(unique(), exclusive=True)
    q(conn).declare()
    Consumer(conn, q, on_message=lambda m: None).consume()
    assert conn.topology.queues and conn.topology.channels
    conn.release()
    assert not conn.topology.queues and not conn.topology.channels
    conn.connect()  # a fresh start: nothing to replay
    assert conn.recoveries == 0 and kinds(conn) == []
    conn.release()


def consuming_on_memory() -> tuple[Connection, list[Any], Producer]:
    """An autorecover memory:// connection consuming from an exclusive queue (the bodies
    acked into the list) and a producer that routes to it."""
    from leveret.highlevel.memory import MemoryBroker

    conn = Connection("memory://", transport_options={"broker": MemoryBroker()}, autorecover=True)
    q = Queue(unique(), exclusive=True)
    got: list[Any] = []
    Consumer(conn, q, callbacks=[ack_into(got)]).consume()
    return conn, got, Producer(conn, routing_key=q.name)


def test_memory_transport_recovers_exclusive_queue_and_consumer() -> None:
    conn, got, producer = consuming_on_memory()
    try:
        producer.publish("one")
        conn.drain_events(timeout=1)
        lose_memory_connection(conn)  # the exclusive queue goes with it
        producer.publish("two")
        conn.drain_events(timeout=1)
        assert got == ["one", "two"] and conn.recoveries == 1
    finally:
        conn.release()


def test_recovery_events_do_not_keep_every_lost_transport_connection_alive(caplog: pytest.LogCaptureFixture) -> None:
    """Each connection_lost event kept the error, whose traceback's frames held the lost
    transport connection and its channels (about 50 kB each), until 10000 events later.
    The latest events keep the error itself; older ones a copy without traceback."""
    import gc

    from leveret.highlevel.memory import MemoryConnection

    # (The warning logged per loss names the error: pytest keeps those records, and with
    # them the errors as raised.  A logging handler that formats and drops them does not.)
    caplog.set_level(logging.ERROR, logger="leveret")
    conn, got, producer = consuming_on_memory()
    try:
        transports: list[weakref.ref[MemoryConnection]] = []
        for i in range(40):
            producer.publish(i)
            conn.drain_events(timeout=1)
            transport = conn.connection
            assert isinstance(transport, MemoryConnection)
            transports.append(weakref.ref(transport))
            del transport
            lose_memory_connection(conn)
        producer.publish("end")
        conn.drain_events(timeout=1)
        assert got == [*range(40), "end"] and conn.recoveries == 40
        gc.collect()
        alive = sum(ref() is not None for ref in transports)
        assert alive <= 8, alive  # those the latest events name
        lost = [e for e in conn.recovery_events if e.kind == "connection_lost"]
        assert len(lost) == 40 and all(type(e.error) is ConnectionLost for e in lost)
        assert lost[0].error is not None and lost[0].error.__traceback__ is None
        assert str(lost[0].error) == str(lost[-1].error)
    finally:
        conn.release()


def test_a_consumer_per_message_does_not_grow_the_rename_listeners() -> None:
    """Each Consumer on an autorecovering connection adds a (weak) rename listener; dead
    ones were dropped only by a rename, which may never come."""
    import gc

    from leveret.highlevel.memory import MemoryBroker

    conn = Connection("memory://", transport_options={"broker": MemoryBroker()}, autorecover=True)
    try:
        q = Queue(unique())
        for i in range(300):
            with conn.Consumer(q, callbacks=[lambda body, m: m.ack()]):
                pass
            if i % 50 == 0:
                gc.collect()
        gc.collect()
        conn.Consumer(q, callbacks=[lambda body, m: m.ack()]).cancel()  # one more add prunes
        assert len(conn.topology._listeners) < 10
    finally:
        conn.release()


# --------------------------------------------------------------------------- publishes


def test_pipelined_publishes_unconfirmed_at_the_loss_are_republished_at_flush(node: PrivateNode, proxy: TCPProxy) -> None:
    conn = recovering(proxy.url())
    q = Queue(unique(), durable=False)
    try:
        producer = Producer(conn, routing_key=q.name)
        q(conn).declare()
        assert producer.channel.is_open  # in confirm mode before the proxy holds replies back
        proxy.freeze("down")  # the broker's confirms stay in the proxy
        for i in range(50):
            producer.publish(b"%d" % i, wait=False)
        eventually(lambda: ready_count(node.url, q.name) == 50, what="publishes reached the queue")
        proxy.cut("reset")
        proxy.thaw()
        producer.flush(timeout=20)
        assert producer.republished == 50  # every confirm was lost: all sent again
        assert ready_count(node.url, q.name) == 100  # at least once: here, twice
        assert [e.detail for e in conn.recovery_events if e.kind == "republished"] == [50]
        assert producer.pending == 0 and conn.recoveries == 1
    finally:
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(q.name)
        conn.release()


def test_a_waiting_publish_whose_confirm_was_lost_is_republished(node: PrivateNode, proxy: TCPProxy) -> None:
    conn = recovering(proxy.url())
    q = Queue(unique(), durable=False)
    try:
        producer = Producer(conn, routing_key=q.name)
        q(conn).declare()
        assert producer.channel.is_open  # in confirm mode before the proxy holds replies back
        proxy.freeze("down")
        errors: list[BaseException] = []

        def publish() -> None:
            try:
                producer.publish(b"once", timeout=20)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        t = threading.Thread(target=publish, daemon=True)
        t.start()
        eventually(lambda: ready_count(node.url, q.name) == 1, what="publish reached the queue")
        assert t.is_alive()  # still waiting for its confirm
        proxy.cut("reset")
        proxy.thaw()
        t.join(20)
        assert not t.is_alive() and errors == []
        assert producer.republished == 1
        assert ready_count(node.url, q.name) == 2
    finally:
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(q.name)
        conn.release()


def test_without_republish_unconfirmed_publishes_are_reported_lost(node: PrivateNode, proxy: TCPProxy) -> None:
    conn = recovering(proxy.url())
    q = Queue(unique(), durable=False)
    try:
        producer = Producer(conn, routing_key=q.name, republish=False)
        q(conn).declare()
        assert producer.channel.is_open  # in confirm mode before the proxy holds replies back
        proxy.freeze("down")
        for i in range(10):
            producer.publish(b"%d" % i, wait=False)
        eventually(lambda: ready_count(node.url, q.name) == 10, what="publishes reached the queue")
        proxy.cut("reset")
        proxy.thaw()
        with pytest.raises(OperationalError) as info:
            producer.flush(timeout=20)
        assert len(info.value.unconfirmed) == 10  # type: ignore[attr-defined]
        assert producer.republished == 0 and conn.recoveries == 1
        assert [e.detail for e in conn.recovery_events if e.kind == "publishes_lost"] == [10]
        producer.publish(b"next")  # the connection is back
        assert ready_count(node.url, q.name) == 11
    finally:
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(q.name)
        conn.release()


def test_transaction_interrupted_by_a_recovery_elsewhere_is_not_committed(node: PrivateNode) -> None:
    """A transaction publishes; the connection is lost, and a call on another channel
    recovers it.  The broker rolled the transaction back with the channel, so tx_commit
    must not commit the new, nearly empty transaction as if it were the old one: it rolls
    back what was done since and raises ConnectionLost.  The next transaction is normal."""
    conn = recovering(node.url)
    name = unique("tx")
    try:
        tx = conn.channel()
        tx.queue_declare(name, durable=False)
        tx.tx_select()
        tx.basic_publish(b"before the loss", "", name)
        node.ctl("close_all_connections", "test")
        eventually(lambda: not conn.connected, what="loss noticed")
        conn.channel().queue_declare(name, durable=False)  # another channel recovers
        assert conn.recoveries == 1
        tx.basic_publish(b"after the loss", "", name)
        with pytest.raises(ConnectionLost):
            tx.tx_commit()
        tx.tx_commit()  # an empty transaction: nothing left of the interrupted one
        assert ready_count(node.url, name) == 0
        tx.basic_publish(b"next", "", name)
        tx.tx_commit()
        assert ready_count(node.url, name) == 1
        tx.queue_delete(name)
    finally:
        conn.release()


def test_confirms_lost_in_a_recovery_elsewhere_are_not_reported_as_received(node: PrivateNode, proxy: TCPProxy) -> None:
    """A raw publish in confirm mode whose confirm the loss swallowed; a call on another
    channel recovers the connection.  wait_for_confirms must not say all was confirmed:
    it raises ConnectionLost naming the publish's tag on the lost channel, once."""
    conn = recovering(proxy.url())
    name = unique("cf")
    try:
        ch = conn.channel()
        ch.confirm_select()
        ch.queue_declare(name, durable=False)
        channel_id = ch.channel_id
        proxy.freeze("down")  # the broker's confirm stays in the proxy
        tag = ch.basic_publish(b"unconfirmed", "", name)
        eventually(lambda: ready_count(node.url, name) == 1, what="publish reached the queue")
        proxy.cut("reset")
        proxy.thaw()
        eventually(lambda: not conn.connected, what="loss noticed")
        conn.channel().queue_declare(name, durable=False)  # another channel recovers
        assert conn.recoveries == 1
        with pytest.raises(ConnectionLost) as info:
            ch.wait_for_confirms(timeout=10)
        assert info.value.unconfirmed == {channel_id: [tag]}
        assert ch.wait_for_confirms(timeout=10) is True  # reported once
        ch.basic_publish(b"confirmed", "", name)
        assert ch.wait_for_confirms(timeout=10) is True
        assert ch.publish_confirmed(b"also", "", name, timeout=10) is True
        ch.queue_delete(name)
    finally:
        conn.release()


def test_return_received_before_the_loss_is_still_reported(node: PrivateNode, proxy: TCPProxy) -> None:
    # A pipelined mandatory publish no queue took: the broker returned it and confirmed it
    # before the connection was lost, but nobody had waited on the channel yet, so the
    # return was still waiting to be handed over.  flush() after the recovery must report
    # it, not count the message as delivered.
    conn = recovering(proxy.url())
    q = Queue(unique(), durable=False)
    returned: list[bytes] = []
    try:
        producer = Producer(conn, routing_key=q.name, on_return=return_bodies_into(returned))
        q(conn).declare()
        producer.publish(b"unroutable", routing_key=unique("nowhere"), mandatory=True, wait=False)
        rec = producer.channel
        assert isinstance(rec, RecoveringChannel)
        transport = rec.transport_channel
        assert isinstance(transport, ClientChannel)
        # The return is handed to the client once its confirm came: both are in.
        eventually(lambda: transport._returns, what="the return arrived")
        proxy.freeze("down")
        producer.publish(b"routed", wait=False)
        eventually(lambda: ready_count(node.url, q.name) == 1, what="publish reached the queue")
        proxy.cut("reset")
        proxy.thaw()
        producer.flush(timeout=20)
        assert conn.recoveries == 1
        assert returned == [b"unroutable"]
        assert producer.republished == 1  # only the routed one, whose confirm was lost
    finally:
        with ClientConnection(node.url) as other:
            other.channel().queue_delete(q.name)
        conn.release()


def test_recovery_gives_up_after_max_retries(node: PrivateNode) -> None:
    proxy = TCPProxy(urlsplit(node.url).port or 5672).start()
    failures: list[BaseException] = []
    conn = recovering(
        proxy.url(), recovery_policy={"max_retries": 2, "interval_start": 0.05, "interval_step": 0.05},
        on_recovery_failed=failures.append,
    )
    try:
        producer = Producer(conn, routing_key=unique())
        producer.publish(b"x")
        proxy.close()  # cuts the connection and refuses new ones
        start = time.monotonic()
        with pytest.raises(OperationalError) as info:
            producer.publish(b"y")
        assert time.monotonic() - start < 10
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert kinds(conn) == [
            "connection_lost", "recovery_started", "attempt_failed", "attempt_failed", "recovery_failed",
        ]
        assert failures == [info.value]
    finally:
        conn.release()
        proxy.close()


def test_release_does_not_wait_for_a_recovery_in_another_thread(node: PrivateNode) -> None:
    """A consumer thread's drain_events recovers, retrying a broker it cannot reach.  Another
    thread's release() returns at once; the recovery gives up (OperationalError in the
    consumer thread) and the connection is released."""
    proxy = TCPProxy(urlsplit(node.url).port or 5672).start()
    conn = recovering(proxy.url(), recovery_policy={"interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5, "timeout": 30})
    errors: list[BaseException] = []
    released = threading.Event()

    def consume() -> None:
        try:
            while True:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    def release() -> None:
        conn.release()
        released.set()

    try:
        q = Queue(unique(), exclusive=True)
        Consumer(conn, q, on_message=lambda m: None).consume()
        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        proxy.close()  # cuts the connection and refuses new ones
        eventually(lambda: "attempt_failed" in kinds(conn), what="the recovery retrying")
        threading.Thread(target=release, daemon=True).start()
        assert released.wait(5)
        consumer.join(10)
        assert not consumer.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], OperationalError), errors
        assert "released" in str(errors[0])
        assert kinds(conn)[-1] == "recovery_failed"
        assert not conn.connected and not conn.topology.channels and not conn.topology.queues
    finally:
        conn.release()
        proxy.close()


# --------------------------------------------------------------------------- 100,000 messages


class _Run:
    """100,000 persistent messages published with confirms (pipelined, flushed per 1000) to
    a durable queue, consumed (acked) by a recovering consumer in another thread, while
    ``fault()`` is applied at a few points of the publishing."""

    N = 100_000
    BATCH = 1000

    def __init__(self, url: str, at: tuple[float, ...], fault: Callable[[], object]) -> None:
        self.url = url
        self.at = at
        self.fault = fault
        self.queue = Queue(unique("hundredk"), durable=True)
        self.deliveries: dict[int, list[bool]] = collections.defaultdict(list)
        self.published = 0
        self.faults: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def consume(self, conn: Connection) -> None:
        def on_message(body: Any, message: Any) -> None:
            self.deliveries[int(message.properties["message_id"])].append(
                bool(message.delivery_info["redelivered"])
            )
            message.ack()

        try:
            with Consumer(conn, self.queue, callbacks=[on_message], prefetch_count=1000):
                while not self.stop.is_set() and len(self.deliveries) < self.N:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
        except BaseException as exc:  # reported by the test thread
            self.errors.append(exc)

    def inject(self) -> None:
        try:
            for fraction in self.at:
                while self.published < fraction * self.N and not self.stop.is_set():
                    time.sleep(0.005)
                if self.stop.is_set():
                    return
                self.fault()
                self.faults.append(self.published)
        except BaseException as exc:
            self.errors.append(exc)

    def run(self) -> None:
        pconn = recovering(self.url)
        cconn = recovering(self.url)
        threads: list[threading.Thread] = []
        try:
            producer = Producer(pconn, routing_key=self.queue.name)
            self.queue(pconn).declare()
            threads = [
                threading.Thread(target=self.consume, args=(cconn,), daemon=True),
                threading.Thread(target=self.inject, daemon=True),
            ]
            for t in threads:
                t.start()
            start = time.monotonic()
            for first in range(0, self.N, self.BATCH):
                with producer.batch(timeout=60):
                    for i in range(first, first + self.BATCH):
                        producer.publish(b"%d" % i, message_id=str(i))
                self.published = first + self.BATCH
            published_in = time.monotonic() - start
            deadline = time.monotonic() + 120
            while len(self.deliveries) < self.N and time.monotonic() < deadline and not self.errors:
                time.sleep(0.05)
            consumed_in = time.monotonic() - start
            self.stop.set()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
            assert self.errors == []

            missing = [i for i in range(self.N) if i not in self.deliveries]
            # A second delivery not flagged "redelivered" is a second copy the producer sent;
            # "redelivered" ones are the broker resending what the consumer could not ack.
            duplicates = {
                i: sum(not r for r in flags) - 1
                for i, flags in self.deliveries.items() if sum(not r for r in flags) > 1
            }
            n_duplicates = sum(duplicates.values())
            redeliveries = sum(sum(flags) for flags in self.deliveries.values())
            reported = sum(e.detail for e in pconn.recovery_events if e.kind == "republished")
            print(
                f"\n{self.N} messages: published in {published_in:.1f} s, all consumed in "
                f"{consumed_in:.1f} s; faults at {self.faults}; recoveries: producer "
                f"{pconn.recoveries}, consumer {cconn.recoveries}; republished "
                f"{producer.republished}; duplicates {n_duplicates} "
                f"(ids: {sorted(duplicates)[:50]}{' ...' if len(duplicates) > 50 else ''}); redeliveries {redeliveries}; "
                f"missing {len(missing)}"
            )
            assert missing == [], f"{len(missing)} messages lost, first: {missing[:20]}"
            assert len(self.faults) == len(self.at)
            # rabbitmqctl takes about a second: a fault whose command returned before the
            # publishing ended struck the producer, a later one may have come too late.
            struck = sum(1 for at in self.faults if at < self.N)
            assert struck >= 1
            assert struck <= pconn.recoveries <= len(self.faults)
            assert 1 <= cconn.recoveries <= len(self.faults)
            assert reported == producer.republished
            assert n_duplicates <= producer.republished
        finally:
            self.stop.set()
            try:
                self.queue(pconn).delete()
            finally:
                pconn.release()
                cconn.release()


def test_100k_confirmed_messages_survive_broker_closed_connections(node: PrivateNode) -> None:
    _Run(node.url, (0.1, 0.3, 0.5, 0.7), lambda: node.ctl("close_all_connections", "test")).run()


def test_100k_confirmed_messages_survive_broker_restarts(fresh_node: PrivateNode) -> None:
    def restart() -> None:
        fresh_node.stop_app()
        time.sleep(0.5)
        fresh_node.start_app()

    _Run(fresh_node.url, (0.25, 0.65), restart).run()


def test_a_wait_with_a_timeout_is_not_held_by_a_recovery(fresh_node: PrivateNode) -> None:
    """``drain_events(timeout=1)`` during an outage took the whole outage (the recovery
    inside it ignored the deadline), and so did ``ConsumerMixin.run`` to see should_stop.
    Now the wait ends in about its timeout with ``RecoveryPaused`` (a TimeoutError), and
    the next one goes on with the same recovery: one connection_lost, one recovery."""
    import threading

    from leveret.highlevel import RecoveryPaused
    from leveret.highlevel.mixins import ConsumerMixin

    conn = recovering(fresh_node.url, recovery_policy={**FAST, "interval_max": 0.3})
    queue = Queue(unique("outage"))
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append(body)
        message.ack()

    conn.Consumer(queue, callbacks=[on_message]).consume()
    consuming = threading.Event()

    class Worker(ConsumerMixin):
        def get_consumers(self, Consumer: Any, channel: Any) -> list[Consumer]:
            return [Consumer(queues=[Queue(unique("worker"))], callbacks=[lambda b, m: m.ack()])]

        def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
            consuming.set()

    worker = Worker()
    worker.connection = recovering(fresh_node.url)
    runner = threading.Thread(target=worker.run, kwargs={"safety_interval": 0.5})
    runner.start()
    try:
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)
        assert consuming.wait(10), "the worker is not consuming"
        fresh_node.stop_app()
        try:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(RecoveryPaused):
                    conn.drain_events(timeout=1)
                assert time.monotonic() - started < 3
            stopped_at = time.monotonic()
            worker.should_stop = True
            runner.join(10)
            assert not runner.is_alive() and time.monotonic() - stopped_at < 3
        finally:
            fresh_node.start_app()
        with Connection(fresh_node.url) as other:
            other.Producer().publish({"n": 1}, routing_key=queue.name, declare=[queue])
        deadline = time.monotonic() + 30
        while not got:
            assert time.monotonic() < deadline, "the consumer did not come back"
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
        assert got == [{"n": 1}]
        happened = kinds(conn)
        assert happened.count("connection_lost") == 1 and happened.count("recovery_started") == 1
        assert happened.count("recovery_succeeded") == 1 and "recovery_failed" not in happened
        assert happened.count("attempt_failed") >= 3 and conn.recoveries == 1
    finally:
        worker.should_stop = True
        runner.join(10)
        worker.connection.release()
        conn.release()


# ------------------------------------------------------- a channel the broker closed (404)


@pytest.mark.parametrize("given", ["connection", "channel"])
def test_producer_takes_a_fresh_channel_after_a_channel_error(amqp_url: str, given: str) -> None:
    """A publish to a missing exchange closes the channel (404).  A channel error is no
    connection loss, so recovery does not reopen that channel; but the producer, as kombu's
    on py-amqp (which reopens a channel the broker closed), publishes again at its next
    publish, on the connection's default channel -- what ``retry=True`` already did."""
    conn = recovering(amqp_url)
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        producer = Producer(conn if given == "connection" else ch)
        with pytest.raises(NotFound):
            producer.publish(b"lost", exchange=unique("missing"), routing_key="x")
        assert ch.is_open is (given == "connection")
        producer.publish(b"next", exchange="", routing_key=queue)
        assert producer.channel.is_open and producer.channel is conn.default_channel
        got = conn.default_channel.basic_get(queue, no_ack=True)
        assert got is not None and got.body == b"next"
        assert "recovery_started" not in kinds(conn)  # no reconnect for a channel error
        if given == "channel":
            with pytest.raises(ChannelClosedError):
                ch.basic_publish(b"raw", "", queue)  # the channel itself stays closed
    finally:
        conn.release()
