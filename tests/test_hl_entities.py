"""Exchange, Queue, binding and maybe_declare, against the real broker (and memory://).

Every declaration is checked by what the broker then does -- where a message is routed,
what a passive declare says -- not by what leveret says it sent.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import CountingChannel, unique

from leveret.client import Message as ClientMessage
from leveret.client import NotFound, PreconditionFailed
from leveret.highlevel import Connection, Exchange, NotBoundError, Queue, binding, maybe_declare
from leveret.highlevel.message import Message


def publish(conn: Connection, exchange: str, routing_key: str, body: bytes = b"x", **props: Any) -> None:
    """A raw, confirmed publish on a channel of its own."""
    ch = conn.channel()
    try:
        ch.confirm_select()
        assert ch.publish_confirmed(ClientMessage(body, **props), exchange=exchange, routing_key=routing_key)
    finally:
        ch.close()


def bodies(queue: Queue) -> list[bytes]:
    """Take (and ack) every message of a bound queue."""
    out = []
    while (m := queue.get(no_ack=True)) is not None:
        out.append(m.body)
    return out


def ready(conn: Connection, name: str) -> int:
    ch = conn.channel()
    try:
        return int(ch.queue_declare(name, passive=True)[1])
    finally:
        ch.close()


# ------------------------------------------------------------------------------ exchanges


def test_direct_exchange_routes_by_exact_key(hl_conn: Connection) -> None:
    ex = Exchange(unique("direct"), "direct", auto_delete=True)
    a = Queue(unique(), ex, "a", exclusive=True)(hl_conn)
    b = Queue(unique(), ex, "b", exclusive=True)(hl_conn)
    a.declare()
    b.declare()
    publish(hl_conn, ex.name, "a", b"to-a")
    publish(hl_conn, ex.name, "b", b"to-b")
    publish(hl_conn, ex.name, "c", b"to-nobody")
    assert bodies(a) == [b"to-a"]
    assert bodies(b) == [b"to-b"]


def test_fanout_exchange_copies_to_every_queue(hl_conn: Connection) -> None:
    ex = Exchange(unique("fanout"), "fanout", auto_delete=True)
    queues = [Queue(unique(), ex, "ignored", exclusive=True)(hl_conn) for _ in range(3)]
    for q in queues:
        q.declare()
    publish(hl_conn, ex.name, "whatever", b"all")
    assert [bodies(q) for q in queues] == [[b"all"]] * 3


def test_topic_exchange_matches_patterns(hl_conn: Connection) -> None:
    ex = Exchange(unique("topic"), "topic", auto_delete=True)
    star = Queue(unique(), ex, "stock.*.nyse", exclusive=True)(hl_conn)
    hash_ = Queue(unique(), ex, "stock.#", exclusive=True)(hl_conn)
    star.declare()
    hash_.declare()
    publish(hl_conn, ex.name, "stock.ibm.nyse", b"1")
    publish(hl_conn, ex.name, "stock.ibm.nasdaq.late", b"2")
    publish(hl_conn, ex.name, "bond.x.nyse", b"3")
    assert bodies(star) == [b"1"]
    assert bodies(hash_) == [b"1", b"2"]


def test_headers_exchange_matches_binding_arguments(hl_conn: Connection) -> None:
    ex = Exchange(unique("headers"), "headers", auto_delete=True)
    all_ = Queue(unique(), ex, exclusive=True, binding_arguments={"x-match": "all", "a": 1, "b": 2})(hl_conn)
    any_ = Queue(unique(), ex, exclusive=True, binding_arguments={"x-match": "any", "a": 1, "b": 2})(hl_conn)
    all_.declare()
    any_.declare()
    publish(hl_conn, ex.name, "", b"both", headers={"a": 1, "b": 2})
    publish(hl_conn, ex.name, "", b"only-a", headers={"a": 1})
    publish(hl_conn, ex.name, "", b"none", headers={"c": 3})
    assert bodies(all_) == [b"both"]
    assert bodies(any_) == [b"both", b"only-a"]


def test_declare_is_checked_by_a_passive_declare(hl_conn: Connection) -> None:
    ex = Exchange(unique("ex"), "topic", auto_delete=True)
    bound = ex(hl_conn)
    with pytest.raises(NotFound):
        Exchange(ex.name, passive=True)(hl_conn.channel()).declare()
    bound.declare()
    Exchange(ex.name, "topic", passive=True)(hl_conn.channel()).declare()  # no error now
    bound.delete()
    with pytest.raises(NotFound):
        bound.declare(passive=True, channel=hl_conn.channel())


def test_conflicting_redeclare_is_precondition_failed_and_only_closes_the_channel(hl_conn: Connection) -> None:
    name = unique("ex")
    Exchange(name, "direct", auto_delete=True)(hl_conn).declare()
    ch = hl_conn.channel()
    with pytest.raises(PreconditionFailed):
        Exchange(name, "fanout", auto_delete=True)(ch).declare()
    assert not ch.is_open
    assert hl_conn.connected
    Exchange(name, "direct", auto_delete=True)(hl_conn.channel()).declare()


def test_default_exchange_and_no_declare_send_nothing(hl_conn: Connection) -> None:
    counting = CountingChannel(hl_conn.channel())
    Exchange("")(counting).declare()
    Exchange(unique("never"), no_declare=True)(counting).declare()
    Queue(unique("never"), no_declare=True)(counting).declare()
    assert counting.calls == []


def test_exchange_to_exchange_binding_and_unbinding(hl_conn: Connection) -> None:
    # Not auto-delete: the broker deletes an auto-delete exchange when its last binding goes.
    source = Exchange(unique("src"), "fanout", durable=False)(hl_conn)
    dest = Exchange(unique("dst"), "direct", durable=False)(hl_conn)
    source.declare()
    dest.declare()
    q = Queue(unique(), dest, "k", exclusive=True)(hl_conn)
    q.declare()
    dest.bind_to(source, routing_key="ignored-by-fanout")
    publish(hl_conn, source.name, "k", b"through")
    assert bodies(q) == [b"through"]
    dest.unbind_from(source, routing_key="ignored-by-fanout")
    publish(hl_conn, source.name, "k", b"dropped")
    assert bodies(q) == []
    source.delete()
    dest.delete()


def test_exchange_publish_and_message_builder(hl_conn: Connection) -> None:
    ex = Exchange(unique("ex"), delivery_mode="transient", auto_delete=True)(hl_conn)
    q = Queue(unique(), ex, "rk", exclusive=True)(hl_conn)
    q.declare()
    msg = ex.Message(b"raw", headers={"h": 1}, content_type="application/data")
    assert msg.properties["delivery_mode"] == 1
    ex.publish(msg, routing_key="rk")
    got = None
    deadline = time.monotonic() + 5
    while got is None and time.monotonic() < deadline:
        got = q.get(no_ack=True)
    assert got is not None
    assert got.body == b"raw" and got.headers == {"h": 1}
    assert got.properties["delivery_mode"] == 1


def test_exchange_identity() -> None:
    a = Exchange("e", "topic", durable=False)
    assert a == Exchange("e", "topic", durable=False)
    assert a != Exchange("e", "fanout", durable=False)
    assert a != Exchange("e", "topic", durable=True)
    assert hash(a) == hash(Exchange("e", "topic", durable=False))
    assert "e" in repr(a) and "topic" in repr(a)
    assert Exchange("e", delivery_mode="persistent").delivery_mode == 2
    with pytest.raises(ValueError):
        Exchange("e", delivery_mode="forever")
    # RabbitMQ refuses other numbers by closing the channel: refused here instead.
    for mode in (0, 3, 7):
        with pytest.raises(ValueError, match=f"not {mode}"):
            Exchange("e", delivery_mode=mode)
    assert Exchange("e", delivery_mode=1).delivery_mode == 1


# ------------------------------------------------------------------------------ binding


def test_unbound_entities_raise_not_bound_error_and_send_nothing() -> None:
    ex = Exchange("ex")
    q = Queue("q", ex, "rk")
    for call in (ex.declare, ex.delete, q.declare, q.get, q.purge, q.delete,
                 lambda: q.bind_to("x"), lambda: ex.publish(b"x")):
        with pytest.raises(NotBoundError):
            call()
    assert not ex.is_bound and not q.is_bound


def test_call_and_bind_return_bound_copies(hl_conn: Connection) -> None:
    q = Queue(unique(), Exchange(unique("ex"), auto_delete=True), "rk", exclusive=True)
    bound = q(hl_conn)
    assert bound is not q and bound.is_bound and not q.is_bound
    assert bound.exchange.is_bound and not q.exchange.is_bound
    again = q.bind(hl_conn.channel())
    assert again.is_bound and again is not bound
    assert q.maybe_bind(hl_conn) is q and q.is_bound


def test_binding_to_a_connection_does_not_connect(amqp_url: str) -> None:
    conn = Connection(amqp_url)
    try:
        q = Queue(unique(), exclusive=True)(conn)
        assert q.is_bound and not conn.connected
        q.declare()
        assert conn.connected
    finally:
        conn.release()


# ------------------------------------------------------------------------------ queues


def test_server_named_queue_gets_its_name_from_declare_ok(hl_conn: Connection) -> None:
    seen: list[tuple[str, int, int]] = []
    q = Queue(exclusive=True, on_declared=lambda *ok: seen.append(ok))(hl_conn)
    name = q.declare()
    assert name and name == q.name and name.startswith("amq.gen-")
    assert seen == [(name, 0, 0)]
    assert ready(hl_conn, name) == 0  # it exists under that name


def test_queue_declare_binds_to_its_exchange_and_extra_bindings(hl_conn: Connection) -> None:
    main = Exchange(unique("main"), "direct", auto_delete=True)
    extra = Exchange(unique("extra"), "topic", durable=False)
    q = Queue(unique(), main, "m", exclusive=True, bindings=[binding(extra, "x.#")])(hl_conn)
    q.declare()
    publish(hl_conn, main.name, "m", b"main")
    publish(hl_conn, extra.name, "x.y.z", b"extra")
    publish(hl_conn, extra.name, "y", b"nope")
    assert bodies(q) == [b"main", b"extra"]
    q.unbind_from(extra, "x.#")
    publish(hl_conn, extra.name, "x.y", b"after-unbind")
    assert bodies(q) == []
    extra(hl_conn).delete()


def test_queue_given_a_list_of_bindings_as_its_exchange(hl_conn: Connection) -> None:
    # kombu's Queue(name, [binding(...), binding(...)]): the list is the queue's bindings.
    x = Exchange(unique("multi"), "direct", durable=False, auto_delete=True)
    q = Queue(unique(), [binding(x, routing_key="a"), binding(x, routing_key="b")], exclusive=True)(hl_conn)
    assert q.bindings == {binding(x, routing_key="a"), binding(x, routing_key="b")}
    assert q.exchange.name == ""
    q.declare()
    publish(hl_conn, x.name, "a", b"to-a")
    publish(hl_conn, x.name, "b", b"to-b")
    publish(hl_conn, x.name, "c", b"nope")
    assert bodies(q) == [b"to-a", b"to-b"]
    assert Queue("t", (binding(x, "a"),)).bindings == Queue("s", {binding(x, "a")}).bindings == {binding(x, "a")}


def test_queue_get_purge_delete(hl_conn: Connection) -> None:
    q = Queue(unique(), exclusive=True)(hl_conn)
    q.declare()
    assert q.get() is None
    for i in range(3):
        publish(hl_conn, "", q.name, b'{"n": %d}' % i, content_type="application/json")
    m = q.get()
    assert isinstance(m, Message)
    assert m.payload == {"n": 0} and not m.acknowledged
    m.ack()
    assert q.purge() == 2
    assert q.get() is None
    publish(hl_conn, "", q.name)
    assert q.delete() == 1
    with pytest.raises(NotFound):
        q.queue_declare(passive=True, channel=hl_conn.channel())


def test_queue_consume_and_cancel_raw(hl_conn: Connection) -> None:
    q = Queue(unique(), durable=False)(hl_conn)  # not auto-delete: it outlives its consumer
    q.declare()
    got: list[bytes] = []
    tag = q.consume("my-tag", callback=lambda m: got.append(m.body), no_ack=True)
    assert tag == "my-tag"
    publish(hl_conn, "", q.name, b"one")
    hl_conn.drain_events(timeout=5)
    assert got == [b"one"]
    q.cancel(tag)
    publish(hl_conn, "", q.name, b"two")
    with pytest.raises(TimeoutError):
        hl_conn.drain_events(timeout=0.3)
    assert ready(hl_conn, q.name) == 1
    q.delete()


def test_x_arguments_from_keywords() -> None:
    q = Queue("q", max_priority=10, message_ttl=1.5, expires=60, max_length=5, max_length_bytes=1000,
              queue_arguments={"x-queue-mode": "lazy"})
    assert q.effective_arguments() == {
        "x-queue-mode": "lazy", "x-max-priority": 10, "x-message-ttl": 1500, "x-expires": 60000,
        "x-max-length": 5, "x-max-length-bytes": 1000,
    }
    assert Queue("plain").effective_arguments() is None


def test_max_length_is_enforced_by_the_broker(hl_conn: Connection) -> None:
    q = Queue(unique(), max_length=2, exclusive=True)(hl_conn)
    q.declare()
    for i in range(5):
        publish(hl_conn, "", q.name, b"%d" % i)
    assert bodies(q) == [b"3", b"4"]  # the head was dropped


def test_message_ttl_expires_messages(hl_conn: Connection) -> None:
    q = Queue(unique(), message_ttl=0.05, exclusive=True)(hl_conn)
    q.declare()
    publish(hl_conn, "", q.name, b"short-lived")
    time.sleep(0.3)
    assert q.get() is None


def test_exclusive_implies_auto_delete_and_from_dict() -> None:
    assert Queue("q", exclusive=True).auto_delete
    q = Queue.from_dict(
        "tasks", exchange="tasks-ex", exchange_type="topic", binding_key="t.#", durable=False,
        queue_auto_delete=True, expires=30, delivery_mode="transient",
    )
    assert (q.name, q.routing_key, q.durable, q.auto_delete, q.expires) == ("tasks", "t.#", False, True, 30)
    assert (q.exchange.name, q.exchange.type, q.exchange.durable, q.exchange.delivery_mode) == ("tasks-ex", "topic", False, 1)
    with pytest.raises(TypeError):
        Queue.from_dict("q", no_such_option=1)


# ------------------------------------------------------------------------------ pickling


def test_entities_pickle_unbound_and_equal(hl_conn: Connection) -> None:
    ex = Exchange("p-ex", "topic", durable=False, arguments={"alternate-exchange": "ae"})
    q = Queue("p-q", ex, "a.#", bindings=[binding(Exchange("other"), "k", {"x": 1})],
              max_priority=3, consumer_arguments={"x-priority": 1})
    for entity in (ex, q, ex(hl_conn), q(hl_conn)):
        copy = pickle.loads(pickle.dumps(entity))
        assert copy == entity
        assert not copy.is_bound
    qc = pickle.loads(pickle.dumps(q(hl_conn)))
    assert qc.bindings == q.bindings and qc.effective_arguments() == q.effective_arguments()
    b = pickle.loads(pickle.dumps(binding(ex, "rk", {"a": 1})))
    assert b == binding(ex, "rk", {"a": 1})


# ------------------------------------------------------------------------------ maybe_declare


def test_maybe_declare_declares_once_per_connection(hl_conn: Connection) -> None:
    counting = CountingChannel(hl_conn.channel())
    ex = Exchange(unique("ex"), "direct", durable=False)
    q = Queue(unique(), ex, "rk", durable=False)
    try:
        assert maybe_declare(q, counting) is True
        assert maybe_declare(q, counting) is False
        assert maybe_declare(Queue(q.name, ex, "rk", durable=False), counting) is False  # equal declaration
        assert maybe_declare(ex, counting) is True  # the queue's declaration is not the exchange's
        assert maybe_declare(ex, counting) is False
        assert counting.calls == [("exchange", ex.name), ("queue", q.name), ("bind", q.name), ("exchange", ex.name)]
        assert ready(hl_conn, q.name) == 0  # it was really declared
        # Same name, different declaration: sent again (the broker then decides).
        other = Queue(q.name, ex, "other-key", durable=False)
        assert maybe_declare(other, counting) is True
        publish(hl_conn, ex.name, "other-key", b"via-new-binding")
        assert bodies(q(hl_conn)) == [b"via-new-binding"]
    finally:
        q(hl_conn.channel()).delete()
        ex(hl_conn.channel()).delete()


def test_maybe_declare_after_delete_declares_again(hl_conn: Connection) -> None:
    q = Queue(unique(), durable=False)(hl_conn)
    assert maybe_declare(q) is True
    q.delete()
    assert maybe_declare(q) is True
    assert ready(hl_conn, q.name) == 0
    q.delete()


def test_maybe_declare_always_declares_auto_delete(hl_conn: Connection) -> None:
    counting = CountingChannel(hl_conn.channel())
    q = Queue(unique(), exclusive=True)
    assert maybe_declare(q, counting) is True
    assert maybe_declare(q, counting) is True
    assert counting.calls == [("queue", q.name), ("queue", q.name)]


def test_maybe_declare_cache_is_per_connection(hl_url: str, hl_conn: Connection) -> None:
    q = Queue(unique(), durable=False)
    assert maybe_declare(q, hl_conn) is True
    assert maybe_declare(q, hl_conn) is False
    assert hl_conn.declared_entities
    other = hl_conn.clone()
    try:
        counting = CountingChannel(other.channel())
        assert maybe_declare(q, counting) is True
        assert counting.calls == [("queue", q.name)]
    finally:
        other.release()
    hl_conn.release()  # a reconnect forgets what was declared
    counting = CountingChannel(hl_conn.channel())
    assert maybe_declare(q, counting) is True
    q(hl_conn).delete()


def test_maybe_declare_of_a_server_named_queue_sets_its_name(hl_conn: Connection) -> None:
    q = Queue(exclusive=True)
    maybe_declare(q, hl_conn)
    assert q.name.startswith("amq.gen-")


def test_binding_a_queue_rebinds_its_exchange(hl_conn: Connection) -> None:
    first, second = hl_conn.channel(), hl_conn.channel()
    q = Queue(unique(), Exchange(unique("ex"), auto_delete=True)(first), "rk", exclusive=True)
    bound = q(second)
    assert bound.exchange.channel is second
    first.close()
    bound.declare()  # everything goes through the second channel
    publish(hl_conn, bound.exchange.name, "rk", b"ok")
    assert bodies(bound) == [b"ok"]
