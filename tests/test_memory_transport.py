"""The in-memory transport (``memory://``): RabbitMQ's rules, seen through the blocking
client's API.

The expected results (routing tables, error texts, requeue order, ``x-death`` contents) are
RabbitMQ 3.10's, and every test that does not look inside the MemoryBroker runs twice
(the ``connect`` fixture): on a MemoryBroker of its own, and through
``leveret.client.Connection`` on a virtual host of its own on the private RabbitMQ node --
so a difference between the two fails.  The one difference allowed for: a channel or
connection error caused by an asynchronous method (a publish, an ack) closes the memory
channel at once, RabbitMQ's a moment later; the tests look after the next synchronous call.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

import pytest

from broker import PrivateNode
from helpers import in_forked_child
from leveret.client import (
    AccessRefused,
    AMQPNotImplemented,
    ChannelClosedError,
    CommandInvalid,
    Connection,
    ConnectionClosedError,
    ConnectionLost,
    InternalError,
    Message,
    NotFound,
    PreconditionFailed,
    PublishNacked,
    QueueDeclareOk,
    ResourceLocked,
)
from leveret.highlevel.memory import (
    MemoryBroker,
    MemoryChannel,
    MemoryConnection,
    default_broker,
    headers_match,
    topic_matches,
)
from leveret.wire.errors import EncodeError, LocalProtocolError


@pytest.fixture
def mem() -> MemoryBroker:
    return MemoryBroker()


class _VirtualHosts:
    """Virtual hosts of the shared node, made and deleted in batches (one ``rabbitmqctl``
    call each way): a test against RabbitMQ gets a vhost of its own, as clean as a new
    MemoryBroker, whatever names it uses."""

    BATCH = 100

    def __init__(self, node: PrivateNode) -> None:
        self.node = node
        self.free: list[str] = []
        self.made: list[str] = []

    def _erlang(self, template: str, names: list[str]) -> None:
        vhosts = ",".join(f'<<"{name}">>' for name in names)
        self.node.eval(f"[{template} || V <- [{vhosts}]].")

    def take(self) -> str:
        if not self.free:
            prefix = f"leveret-mt-{uuid.uuid4().hex[:8]}"
            names = [f"{prefix}-{i}" for i in range(self.BATCH)]
            self._erlang(
                "begin rabbit_vhost:add(V, <<\"leveret-tests\">>), "
                "rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, V, <<\".*\">>, "
                "<<\".*\">>, <<\".*\">>, <<\"leveret-tests\">>) end",
                names,
            )
            self.free = names
            self.made += names
        return self.free.pop()

    def delete_all(self) -> None:
        if self.made:
            self._erlang("rabbit_vhost:delete(V, <<\"leveret-tests\">>)", self.made)
            self.made, self.free = [], []


@pytest.fixture(scope="module")
def vhosts(request: pytest.FixtureRequest) -> Iterator[_VirtualHosts]:
    pool = _VirtualHosts(request.getfixturevalue("node"))
    try:
        yield pool
    finally:
        pool.delete_all()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
def connect(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """What a test calls for a (not yet connected) connection: to a MemoryBroker of its
    own, or -- the same test once more -- to a virtual host of its own on the private
    RabbitMQ node, through leveret.client.  Whatever differs between the two fails there."""
    if request.param == "memory":
        mem = request.getfixturevalue("mem")
        return lambda: MemoryConnection(broker=mem)
    url = request.getfixturevalue("node").url
    vhost = request.getfixturevalue("vhosts").take()
    return lambda: Connection(f"{url.rstrip('/')}/{vhost}", rpc_timeout=10)


@pytest.fixture
def conn(connect: Callable[[], Any]) -> Iterator[Any]:
    with connect() as c:
        yield c


@pytest.fixture
def ch(conn: Any) -> Any:
    return conn.channel()


@pytest.fixture
def mconn(mem: MemoryBroker) -> Iterator[MemoryConnection]:
    """A memory connection, for tests that look inside the MemoryBroker."""
    with MemoryConnection(broker=mem) as c:
        yield c


@pytest.fixture
def mch(mconn: MemoryConnection) -> MemoryChannel:
    return mconn.channel()


def drain(conn: MemoryConnection, timeout: float = 0.05) -> int:
    """Run callbacks until nothing more arrives; how many drain_events calls returned."""
    n = 0
    while True:
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            return n
        n += 1


def bodies(ch: MemoryChannel, queue: str) -> list[str]:
    out = []
    while (m := ch.basic_get(queue, no_ack=True)) is not None:
        out.append(bytes(m.body).decode())
    return out


def get_soon(ch: Any, queue: str, timeout: float = 5.0, **kwargs: Any) -> Any:
    """``basic.get`` until a message comes: RabbitMQ dead-letters and expires messages a
    moment after the call that causes it (memory://, at once)."""
    deadline = time.monotonic() + timeout
    while (m := ch.basic_get(queue, **kwargs)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return m


def count_soon(ch: Any, queue: str, count: int, timeout: float = 5.0) -> int:
    """The queue's message count once it is ``count`` (or whatever it is at the timeout)."""
    deadline = time.monotonic() + timeout
    while (n := ch.queue_declare(queue, passive=True).message_count) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(n)


def fresh_queue(ch: MemoryChannel, **kwargs: Any) -> str:
    ok = ch.queue_declare("", exclusive=True, **kwargs)
    assert ok is not None
    name: str = ok.queue  # (**kwargs: Any makes mypy give up on the overloads)
    return name


# --------------------------------------------------------------------------- connection


def test_nothing_is_open_before_connect(mem: MemoryBroker) -> None:
    c = MemoryConnection(broker=mem)
    assert not c.is_open
    with pytest.raises(ConnectionClosedError):
        c.channel()
    with pytest.raises(ConnectionClosedError):
        c.drain_events(timeout=0)


def test_connect_returns_self_and_describes_the_broker(mem: MemoryBroker) -> None:
    c = MemoryConnection(broker=mem)
    assert c.connect() is c
    assert c.connect() is c  # already open: no-op
    assert c.is_open and c.connected
    props = c.server_properties
    assert props["product"] == "leveret-memory"
    assert props["capabilities"]["publisher_confirms"] is True
    assert props["capabilities"]["consumer_cancel_notify"] is True
    assert props["capabilities"]["per_consumer_qos"] is True
    assert c.blocked is None and c.heartbeat == 0 and c.protocol == "0-9-1"
    c.on_blocked = lambda reason: None
    c.on_unblocked = lambda: None
    c.close()
    c.close()  # idempotent
    assert not c.is_open


def test_context_manager_opens_and_closes(mem: MemoryBroker) -> None:
    with MemoryConnection(broker=mem) as c:
        assert c.is_open
        with c.channel() as ch:
            assert ch.is_open
        assert not ch.is_open
    assert not c.is_open


def test_channel_ids_are_the_lowest_free(conn: MemoryConnection) -> None:
    a, b = conn.channel(), conn.channel()
    assert (a.channel_id, b.channel_id) == (1, 2)
    a.close()
    assert conn.channel().channel_id == 1
    assert conn.channel(7).channel_id == 7
    with pytest.raises(LocalProtocolError):
        conn.channel(7)


def test_a_closed_channel_raises_channel_closed(ch: MemoryChannel) -> None:
    ch.close()
    ch.close()  # idempotent
    assert not ch.is_open
    with pytest.raises(ChannelClosedError):
        ch.queue_declare("q")
    with pytest.raises(ChannelClosedError):
        ch.basic_publish(Message(b"x"), "", "q")


def test_a_channel_names_the_error_that_closed_it(conn: Any, ch: Any) -> None:
    """``close_error`` is public (the high-level layer reads it instead of a private):
    None while open, the broker's typed error once it closed the channel."""
    assert ch.close_error is None
    with pytest.raises(NotFound) as info:
        ch.exchange_declare(f"missing-{uuid.uuid4().hex}", passive=True)
    assert ch.close_error is info.value
    with pytest.raises(ChannelClosedError) as later:
        ch.queue_declare("", exclusive=True)
    assert later.value.__cause__ is info.value
    quiet = conn.channel()
    quiet.close()
    assert quiet.close_error is None


@pytest.mark.parametrize("reported", [False, True])
def test_mark_error_reported_keeps_drain_events_from_raising_it_again(conn: Any, reported: bool) -> None:
    """A consumer's channel that the broker closes on its own (an ack of an unknown delivery
    tag: 406) is reported by ``drain_events``, unless a layer above said it reported the
    error already; then only the channel's next call says it is closed."""
    ch = conn.channel()
    queue = fresh_queue(ch)
    ch.basic_consume(queue, callback=lambda message: None)
    ch.basic_ack(999)  # no reply: the broker closes the channel with 406 a moment later
    deadline = time.monotonic() + 5
    while ch.is_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(ch.close_error, PreconditionFailed)
    if reported:
        ch.mark_error_reported()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)
        with pytest.raises(ChannelClosedError) as later:
            ch.basic_qos(prefetch_count=1)
        assert later.value.__cause__ is ch.close_error
    else:
        with pytest.raises(PreconditionFailed):
            conn.drain_events(timeout=2)


def test_closing_the_connection_closes_its_channels(mem: MemoryBroker) -> None:
    c = MemoryConnection(broker=mem).connect()
    ch = c.channel()
    c.close()
    assert not ch.is_open
    with pytest.raises(ChannelClosedError):
        ch.queue_declare("q")
    with pytest.raises(ConnectionClosedError):
        c.channel()
    with pytest.raises(ConnectionClosedError):
        c.drain_events(timeout=0)


def test_connections_share_the_default_broker_by_default() -> None:
    name = "test_memory_transport.shared"
    with MemoryConnection() as a, MemoryConnection(virtual_host="/") as b:
        assert a.broker is default_broker() is b.broker
        a.channel().queue_declare(name)
        try:
            assert b.channel().queue_declare(name, passive=True) == QueueDeclareOk(name, 0, 0)
        finally:
            a.channel().queue_delete(name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_has_a_copy_of_the_broker_with_new_locks() -> None:
    """A thread of the parent holds the broker's lock (inside a call) across fork(): the
    child, which has a copy of the broker as it stood, must not wait for a thread it does
    not have.  Its connections, old and new, work on the copy; the parent's broker does not
    see what the child did."""
    broker = MemoryBroker()
    conn = MemoryConnection(broker=broker).connect()
    ch = conn.channel()
    ch.queue_declare("q")
    ch.basic_publish(b"before", "", "q")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with broker._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)

        def child() -> str:
            got = ch.basic_get("q", no_ack=True)
            assert got is not None and got.body == b"before"
            with MemoryConnection(broker=broker) as own:
                own.channel().basic_publish(b"from the child", "", "q")
            assert ch.queue_declare("q", passive=True).message_count == 1
            default_broker()  # the module's own lock is new as well
            return "ok"

        assert in_forked_child(child, timeout=20) == "ok"
    finally:
        release.set()
        holder.join(5)
    assert ch.queue_declare("q", passive=True).message_count == 1
    got = ch.basic_get("q", no_ack=True)
    assert got is not None and got.body == b"before"
    conn.close()


def test_virtual_hosts_are_separate(mem: MemoryBroker) -> None:
    with MemoryConnection(broker=mem, virtual_host="a") as a, MemoryConnection("memory:///b", broker=mem) as b:
        assert b.params.virtual_host == "b"
        a.channel().queue_declare("q")
        chb = b.channel()
        with pytest.raises(NotFound, match="no queue 'q' in vhost 'b'"):
            chb.queue_declare("q", passive=True)
    assert mem.queue_names("a") == ["q"]
    with pytest.raises(TypeError):
        MemoryConnection(broker=mem, no_such_option=1)


# --------------------------------------------------------------------------- routing


def test_default_exchange_routes_by_queue_name(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"hello"), "", q)
    ch.basic_publish(Message(b"lost"), "", "no-such-queue")
    m = ch.basic_get(q, no_ack=True)
    assert m is not None and m.body == b"hello"
    assert m.delivery_info["exchange"] == "" and m.delivery_info["routing_key"] == q
    assert ch.basic_get(q) is None


def test_direct_exchange_routes_on_the_exact_key(ch: MemoryChannel) -> None:
    ch.exchange_declare("d", "direct")
    qa, qb = fresh_queue(ch), fresh_queue(ch)
    ch.queue_bind(qa, "d", "a")
    ch.queue_bind(qb, "d", "b")
    ch.queue_bind(qb, "d", "a")
    for key in ("a", "b", "a.b", ""):
        ch.basic_publish(Message(key), "d", key)
    assert bodies(ch, qa) == ["a"]
    assert bodies(ch, qb) == ["a", "b"]


def test_fanout_exchange_ignores_the_key(ch: MemoryChannel) -> None:
    ch.exchange_declare("f", "fanout")
    qa, qb = fresh_queue(ch), fresh_queue(ch)
    ch.queue_bind(qa, "f", "x")
    ch.queue_bind(qb, "f")
    ch.basic_publish(Message(b"1"), "f", "anything")
    assert bodies(ch, qa) == ["1"] and bodies(ch, qb) == ["1"]


TOPIC_KEYS = ["", "a", "a.", ".", "a.b", "a.x.b", "a..b", "b.a", "a.b.c", "x.a.y"]
# What RabbitMQ 3.10 routed for each binding pattern.
TOPIC_TABLE = {
    "#": TOPIC_KEYS,
    "*": ["a"],
    "": [""],
    "a.#": ["a", "a.", "a.b", "a.x.b", "a..b", "a.b.c"],
    "#.a": ["a", "b.a"],
    "a.*": ["a.", "a.b"],
    "*.a": ["b.a"],
    "a.#.b": ["a.b", "a.x.b", "a..b"],
    "#.#": TOPIC_KEYS,
    "a..b": ["a..b"],
    "a.*.#": ["a.", "a.b", "a.x.b", "a..b", "a.b.c"],
}


@pytest.mark.parametrize("pattern", sorted(TOPIC_TABLE))
def test_topic_wildcards(ch: MemoryChannel, pattern: str) -> None:
    ch.exchange_declare("t", "topic")
    q = fresh_queue(ch)
    ch.queue_bind(q, "t", pattern)
    for key in TOPIC_KEYS:
        ch.basic_publish(Message(key), "t", key)
    assert bodies(ch, q) == TOPIC_TABLE[pattern]
    assert [k for k in TOPIC_KEYS if topic_matches(pattern, k)] == TOPIC_TABLE[pattern]


HEADER_MESSAGES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "a1": {"a": 1},
    "xfoo": {"x-foo": "1"},
    "atrue": {"a": True},
    "a1b2": {"a": 1, "b": 2},
    "s": {"s": "v"},
    "sb": {"s": b"v"},
    "a1b3": {"a": 1, "b": 3},
}
# Binding arguments -> the messages RabbitMQ 3.10 routed.
HEADER_TABLE: list[tuple[dict[str, Any], list[str]]] = [
    ({"x-match": "all", "x-foo": "1"}, list(HEADER_MESSAGES)),  # x- keys do not count
    ({"x-match": "any", "x-foo": "1", "a": 1}, ["a1", "a1b2", "a1b3"]),
    ({"x-match": "all"}, list(HEADER_MESSAGES)),
    ({"x-match": "any"}, []),
    ({"x-match": "all-with-x", "x-foo": "1"}, ["xfoo"]),
    ({"a": None}, ["a1", "atrue", "a1b2", "a1b3"]),  # void: presence only
    ({"a": True}, ["atrue"]),  # a boolean is not the integer 1
    ({"s": "v"}, ["s", "sb"]),  # strings and binaries compare by bytes
    ({"a": 1, "b": 2}, ["a1b2"]),  # x-match defaults to all
    ({"x-match": "any", "a": 1, "b": 2}, ["a1", "a1b2", "a1b3"]),
]


def _route_by_headers(
    ch: MemoryChannel, messages: Mapping[str, dict[str, Any] | None], binding: dict[str, Any], expected: list[str]
) -> None:
    """Publish every message to a headers exchange bound with ``binding``: exactly
    ``expected`` arrive, and headers_match says the same."""
    ch.exchange_declare("h", "headers")
    q = fresh_queue(ch)
    ch.queue_bind(q, "h", "", arguments=binding)
    for name, headers in messages.items():
        ch.basic_publish(Message(name, headers=headers), "h", "ignored")
    assert bodies(ch, q) == expected
    assert [n for n, h in messages.items() if headers_match(binding, h)] == expected


@pytest.mark.parametrize("binding, expected", HEADER_TABLE)
def test_headers_exchange_any_and_all(ch: MemoryChannel, binding: dict[str, Any], expected: list[str]) -> None:
    _route_by_headers(ch, HEADER_MESSAGES, binding, expected)


TYPED_HEADER_MESSAGES: dict[str, dict[str, Any]] = {
    "t": {"t": {"a": 1, "b": "s"}},
    "t-float": {"t": {"a": 1.0, "b": "s"}},
    "t-order": {"t": {"b": "s", "a": 1}},
    "t-binary": {"t": {"a": 1, "b": b"s"}},
    "l": {"l": [1, 2]},
    "l-float": {"l": [1.0, 2]},
    "d": {"d": Decimal("1.5")},
    "d-scale": {"d": Decimal("1.50")},
    "d-float": {"d": 1.5},
    "ts": {"ts": datetime(2020, 1, 1)},
    "ts-int": {"ts": 1577836800},
    "n-float": {"n": 1.0},
}
# Binding arguments -> the messages RabbitMQ 3.10 routed: a header's top-level value is
# compared by value, a nested table or array field by field with its types.
TYPED_HEADER_TABLE: list[tuple[dict[str, Any], list[str]]] = [
    ({"t": {"a": 1, "b": "s"}}, ["t"]),
    ({"l": [1, 2]}, ["l"]),
    ({"d": Decimal("1.5")}, ["d"]),
    ({"ts": datetime(2020, 1, 1)}, ["ts", "ts-int"]),
    ({"n": 1}, ["n-float"]),
]


@pytest.mark.parametrize("binding, expected", TYPED_HEADER_TABLE)
def test_headers_exchange_compares_values_as_rabbitmq_does(
    ch: MemoryChannel, binding: dict[str, Any], expected: list[str]
) -> None:
    _route_by_headers(ch, TYPED_HEADER_MESSAGES, binding, expected)


def test_headers_binding_with_a_bad_x_match_is_refused(ch: MemoryChannel, conn: MemoryConnection) -> None:
    q = fresh_queue(ch)
    with pytest.raises(PreconditionFailed, match="Invalid x-match field value"):
        ch.queue_bind(q, "amq.headers", "", arguments={"x-match": "some"})
    assert not ch.is_open and conn.is_open


def test_exchange_to_exchange_bindings(ch: MemoryChannel) -> None:
    ch.exchange_declare("t1", "topic")
    ch.exchange_declare("f2", "fanout")
    ch.exchange_bind("f2", "t1", "a.#")
    q = fresh_queue(ch)
    ch.queue_bind(q, "f2")
    for key in ("a", "a.b", "b.a"):
        ch.basic_publish(Message(key), "t1", key)
    got = []
    while (m := ch.basic_get(q, no_ack=True)) is not None:
        got.append((m.body, m.delivery_info["exchange"], m.delivery_info["routing_key"]))
    assert got == [(b"a", "t1", "a"), (b"a.b", "t1", "a.b")]
    ch.exchange_unbind("f2", "t1", "a.#")
    ch.basic_publish(Message("a.b"), "t1", "a.b")
    assert bodies(ch, q) == []


def test_exchange_binding_loops_deliver_once(ch: MemoryChannel) -> None:
    ch.exchange_declare("l1", "fanout")
    ch.exchange_declare("l2", "fanout")
    ch.exchange_bind("l2", "l1")
    ch.exchange_bind("l1", "l2")
    q = fresh_queue(ch)
    ch.queue_bind(q, "l1")
    ch.queue_bind(q, "l2")
    ch.basic_publish(Message(b"once"), "l1")
    assert bodies(ch, q) == ["once"]


def test_alternate_exchange_takes_unroutable_messages(ch: MemoryChannel, conn: MemoryConnection) -> None:
    ch.exchange_declare("ae", "fanout")
    ch.exchange_declare("main", "direct", arguments={"alternate-exchange": "ae"})
    qa, qm = fresh_queue(ch), fresh_queue(ch)
    ch.queue_bind(qa, "ae")
    ch.queue_bind(qm, "main", "k")
    ch.basic_publish(Message("routed"), "main", "k")
    ch.basic_publish(Message("unrouted"), "main", "other", mandatory=True)
    assert bodies(ch, qa) == ["unrouted"] and bodies(ch, qm) == ["routed"]
    assert drain(conn) == 0 and ch.returned == []  # routed via the AE: not returned


def test_sender_selected_distribution(ch: MemoryChannel) -> None:
    ch.exchange_declare("cc", "direct")
    queues = {}
    for key in ("main", "c1", "b1"):
        queues[key] = fresh_queue(ch)
        ch.queue_bind(queues[key], "cc", key)
    ch.basic_publish(Message(b"m", headers={"CC": ["c1"], "BCC": ["b1"], "z": 1}), "cc", "main")
    for key, q in queues.items():
        m = ch.basic_get(q, no_ack=True)
        assert m is not None, key
        assert m.delivery_info["routing_key"] == "main"
        assert m.headers == {"CC": ["c1"], "z": 1}  # BCC is removed


@pytest.mark.parametrize("value", ["c1", None, 5, {"c1": 1}])
@pytest.mark.parametrize("name", ["CC", "BCC"])
def test_sender_selected_keys_not_in_an_array_are_refused(conn: Any, name: str, value: Any) -> None:
    # A single key given as a string: RabbitMQ refuses the message (406, the channel
    # closes); memory:// took it and ignored the key.
    ch = conn.channel()
    ch.confirm_select()
    ch.exchange_declare("cc", "direct")
    q = fresh_queue(ch)
    ch.queue_bind(q, "cc", "main")
    ch.basic_publish(Message(b"m", headers={name: value}), "cc", "main")
    with pytest.raises(PreconditionFailed, match=f'invalid message: {{unacceptable_type_in_header,"{name}",'):
        ch.wait_for_confirms(timeout=5)
    assert conn.channel().queue_declare(q, passive=True)[1] == 0


def test_publishing_to_a_missing_exchange_closes_the_channel(conn: MemoryConnection, ch: MemoryChannel) -> None:
    assert ch.basic_publish(Message(b"x"), "no-such-exchange", "k") is None  # asynchronous
    vhost = conn.params.virtual_host
    with pytest.raises(NotFound, match=f"no exchange 'no-such-exchange' in vhost '{vhost}'") as info:
        ch.queue_declare("q")  # the channel.close came meanwhile (memory: at once)
    assert not ch.is_open
    assert (info.value.reply_code, info.value.class_id, info.value.method_id) == (404, 60, 40)
    with pytest.raises(ChannelClosedError) as again:  # the typed error is reported once
        ch.queue_declare("q")
    assert isinstance(again.value.__cause__, NotFound)
    other = conn.channel()  # the connection is fine
    assert other.queue_declare("", exclusive=True) is not None


def test_internal_exchanges_refuse_publishes(conn: MemoryConnection, ch: MemoryChannel) -> None:
    ch.exchange_declare("inner", "fanout", internal=True)
    ch.exchange_declare("outer", "fanout")
    ch.exchange_bind("inner", "outer")
    q = fresh_queue(ch)
    ch.queue_bind(q, "inner")
    ch.basic_publish(Message(b"via outer"), "outer")
    assert bodies(ch, q) == ["via outer"]
    ch.basic_publish(Message(b"direct"), "inner")
    with pytest.raises(AccessRefused, match="cannot publish to internal exchange 'inner'"):
        ch.queue_declare(q)


# --------------------------------------------------------------------------- declarations


def test_exchange_redeclaration_rules(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("x", "fanout")
    ch.exchange_declare("x", "fanout", arguments={"ignored": 1})  # only alternate-exchange counts
    ch.exchange_declare("x", passive=True)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(type="direct"), "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'direct' but current is 'fanout'"),
        (dict(type="fanout", durable=True), "inequivalent arg 'durable'"),
        (dict(type="fanout", auto_delete=True), "inequivalent arg 'auto_delete'"),
        (dict(type="fanout", arguments={"alternate-exchange": "z"}), "received the value 'z' of type 'longstr' but current is none"),
    ]
    for kwargs, text in cases:
        ch = conn.channel()
        with pytest.raises(PreconditionFailed, match=text.replace("vhost '/'", f"vhost '{conn.params.virtual_host}'")):
            ch.exchange_declare("x", **kwargs)
        assert not ch.is_open and conn.is_open
    ch = conn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)  # predeclared, durable
    refused: list[tuple[str, dict[str, Any], type[Exception], str]] = [
        ("missing", dict(passive=True), NotFound, "no exchange 'missing'"),
        ("amq.mine", {}, AccessRefused, "contains reserved prefix 'amq.*'"),
        ("", {}, AccessRefused, "operation not permitted on the default exchange"),
    ]
    for name, kwargs, error, text in refused:
        ch = conn.channel()
        with pytest.raises(error, match=text):
            ch.exchange_declare(name, "direct", **kwargs)


def test_an_unknown_exchange_type_closes_the_connection(conn: MemoryConnection) -> None:
    ch = conn.channel()
    # RabbitMQ 3.10 says "invalid" for a name that happens to be an Erlang atom ('foo'),
    # "unknown" for the others, as a mistyped type is.
    with pytest.raises(CommandInvalid, match="unknown exchange type 'x-no-such-type'"):
        ch.exchange_declare("x", "x-no-such-type")
    assert not conn.is_open
    with pytest.raises(CommandInvalid):
        conn.channel()


def test_predeclared_exchanges(mem: MemoryBroker, mch: MemoryChannel) -> None:
    for name, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                       ("amq.headers", "headers"), ("amq.match", "headers")]:
        mch.exchange_declare(name, kind, passive=True)
        mch.exchange_declare(name, kind, durable=True)
    with pytest.raises(AccessRefused, match="deletion of system exchange 'amq.direct'"):
        mch.exchange_delete("amq.direct")


def test_queue_redeclaration_rules(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("q", arguments={"x-message-ttl": 1000})
    assert ch.queue_declare("q", arguments={"x-message-ttl": 1000, "other": 1}) == QueueDeclareOk("q", 0, 0)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (dict(durable=True), PreconditionFailed, "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"),
        (dict(arguments={}), PreconditionFailed, "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"),
        (dict(arguments={"x-message-ttl": 5}), PreconditionFailed, "inequivalent arg 'x-message-ttl'"),
        (dict(exclusive=True, arguments={"x-message-ttl": 1000}), ResourceLocked, "cannot obtain exclusive access to locked queue 'q'"),
        (dict(passive=True, queue="nope"), NotFound, "no queue 'nope' in vhost '/'"),
        (dict(queue="amq.mine"), AccessRefused, "queue name 'amq.mine' contains reserved prefix 'amq.*'"),
        (dict(queue="bad", arguments={"x-message-ttl": -1}), PreconditionFailed, "invalid arg 'x-message-ttl' for queue 'bad' in vhost '/': {value_negative,-1}"),
        (dict(queue="bad", arguments={"x-max-priority": 300}), PreconditionFailed, "{max_value_exceeded,300}"),
        (dict(queue="bad", arguments={"x-overflow": "explode"}), PreconditionFailed, "invalid_overflow"),
        (dict(queue="bad", arguments={"x-max-length": "10"}), PreconditionFailed, "expected integer, got longstr"),
    ]
    for kwargs, error, text in cases:
        ch = conn.channel()
        name = kwargs.pop("queue", "q")
        text = text.replace("vhost '/'", f"vhost '{conn.params.virtual_host}'")
        with pytest.raises(error, match=text.replace("{", r"\{").replace("}", r"\}")):
            ch.queue_declare(name, **kwargs)
        assert not ch.is_open and conn.is_open


@pytest.mark.parametrize("key, first, again, text", [
    ("x-max-length", 10, 10.0, "received '10.0' but current is '10'"),
    ("x-expires", 1000, 1000.5, "received '1000.5' but current is '1000'"),
    ("x-max-length", 10, 2**40, "received '1099511627776' but current is '10'"),
    ("x-dead-letter-exchange", "x", "y", "received 'y' but current is 'x'"),
    ("x-single-active-consumer", True, 1, "received '1' but current is 'true'"),
    ("x-dead-letter-exchange", "x", b"x", None),
    ("x-max-length", 10, 2**31 - 1 - (2**31 - 11), None),
])
def test_queue_arguments_are_equivalent_only_with_the_same_number_type(
    conn: MemoryConnection, key: str, first: Any, again: Any, text: str | None
) -> None:
    ch = conn.channel()
    ch.queue_declare("q", arguments={key: first})
    if text is None:
        assert ch.queue_declare("q", arguments={key: again}) == QueueDeclareOk("q", 0, 0)
        return
    with pytest.raises(PreconditionFailed, match=f"inequivalent arg '{key}' for queue 'q' in vhost '[^']*': {text}"):
        ch.queue_declare("q", arguments={key: again})


def test_server_named_queues(ch: MemoryChannel, conn: MemoryConnection) -> None:
    ok = ch.queue_declare("", exclusive=True)
    assert ok is not None
    assert ok.queue.startswith("amq.gen-") and len(ok.queue) == len("amq.gen-") + 22
    assert ch.queue_declare(ok.queue, passive=True) == QueueDeclareOk(ok.queue, 0, 0)
    assert fresh_queue(ch) != ok.queue
    with pytest.raises(AccessRefused):  # RabbitMQ refuses to redeclare amq.* queues actively
        ch.queue_declare(ok.queue, exclusive=True)


def test_exclusive_queues_belong_to_their_connection(connect: Callable[[], Any]) -> None:
    with connect() as owner, connect() as other:
        och = owner.channel()
        och.queue_declare("excl", exclusive=True)
        calls: list[Callable[[Any], object]] = [
            lambda c: c.queue_declare("excl", passive=True),
            lambda c: c.basic_get("excl"),
            lambda c: c.basic_consume("excl", callback=print),
            lambda c: c.queue_purge("excl"),
            lambda c: c.queue_delete("excl"),
            lambda c: c.queue_bind("excl", "amq.direct", "k"),
        ]
        for call in calls:
            xch = other.channel()
            with pytest.raises(ResourceLocked):
                call(xch)
            assert not xch.is_open
        other.channel().basic_publish(Message(b"from other"), "", "excl")  # publishing is fine
        assert count_soon(och, "excl", 1) == 1  # (another connection's publish: a moment later)
        assert och.queue_declare("excl", exclusive=True) == QueueDeclareOk("excl", 1, 0)
    with connect() as probe, pytest.raises(NotFound):  # it went with its connection
        probe.channel().queue_declare("excl", passive=True)
    with connect() as later:
        assert later.channel().queue_declare("excl", exclusive=True) == QueueDeclareOk("excl", 0, 0)


def test_auto_delete_queue_goes_with_its_last_consumer(mem: MemoryBroker, mch: MemoryChannel) -> None:
    mch.queue_declare("ad", auto_delete=True)
    assert "ad" in mem.queue_names()  # never consumed: stays
    t1 = mch.basic_consume("ad", callback=print)
    t2 = mch.basic_consume("ad", callback=print)
    mch.basic_cancel(t1)
    assert "ad" in mem.queue_names()
    mch.basic_cancel(t2)
    assert "ad" not in mem.queue_names()
    mch.queue_declare("ad2", auto_delete=True)
    ch2 = mch.connection.channel()
    ch2.basic_consume("ad2", callback=print)
    ch2.close()  # closing the channel cancels its consumers
    assert "ad2" not in mem.queue_names()


def test_auto_delete_exchange_goes_with_its_last_binding(mem: MemoryBroker, mch: MemoryChannel) -> None:
    mch.exchange_declare("adx", "fanout", auto_delete=True)
    assert "adx" in mem.exchange_names()  # never bound: stays
    qa, qb = fresh_queue(mch), fresh_queue(mch)
    mch.queue_bind(qa, "adx")
    mch.queue_bind(qb, "adx")
    mch.queue_unbind(qa, "adx")
    assert "adx" in mem.exchange_names()
    mch.queue_delete(qb)  # deleting the queue removes its binding
    assert "adx" not in mem.exchange_names()


def test_queue_delete_and_purge(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("q")
    for i in range(3):
        ch.basic_publish(Message(str(i)), "", "q")
    with pytest.raises(PreconditionFailed, match=f"queue 'q' in vhost '{conn.params.virtual_host}' not empty"):
        ch.queue_delete("q", if_empty=True)
    ch = conn.channel()
    tag = ch.basic_consume("q", callback=print)
    ch2 = conn.channel()
    with pytest.raises(PreconditionFailed, match=f"queue 'q' in vhost '{conn.params.virtual_host}' in use"):
        ch2.queue_delete("q", if_unused=True)
    ch.basic_cancel(tag)
    ch.close()  # requeues the three deliveries
    ch = conn.channel()
    assert ch.queue_purge("q") == 3
    assert ch.queue_purge("q") == 0
    ch.basic_publish(Message(b"x"), "", "q")
    assert ch.queue_delete("q") == 1
    assert ch.queue_delete("q") == 0  # deleting what does not exist succeeds
    with pytest.raises(NotFound):
        ch.queue_purge("q")


def test_exchange_delete(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("x", "fanout")
    q = fresh_queue(ch)
    ch.queue_bind(q, "x")
    with pytest.raises(PreconditionFailed, match=f"exchange 'x' in vhost '{conn.params.virtual_host}' in use"):
        ch.exchange_delete("x", if_unused=True)
    ch = conn.channel()
    ch.exchange_delete("x")
    ch.exchange_delete("x")  # deleting what does not exist succeeds
    with pytest.raises(NotFound):
        ch.exchange_declare("x", passive=True)


def test_empty_queue_name_means_the_last_declared(conn: MemoryConnection) -> None:
    ch = conn.channel()
    q = fresh_queue(ch)
    ch.queue_bind("", "amq.direct", "")  # queue and routing key both default to it
    ch.basic_publish(Message(b"s"), "amq.direct", q)
    m = ch.basic_get("", no_ack=True)
    assert m is not None and m.body == b"s"
    with pytest.raises(NotFound, match="no previously declared queue"):
        conn.channel().basic_get("")


# --------------------------------------------------------------------------- consuming


def test_callbacks_run_only_inside_drain_events(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    got: list[Message] = []
    tag = ch.basic_consume(q, callback=got.append)
    assert tag.startswith("amq.ctag-")
    ch.basic_publish(Message(b"one", content_type="text/plain", headers={"k": [1, "two"]}), "", q)
    assert got == []
    conn.drain_events(timeout=1)
    assert len(got) == 1
    m = got[0]
    assert m.body == b"one"
    # Message.channel is typed as the client's Channel; the memory transport puts its
    # MemoryChannel there, so compare as objects.
    channel: object = m.channel
    assert channel is ch
    assert m.delivery_info == {
        "consumer_tag": tag, "delivery_tag": 1, "redelivered": False, "exchange": "", "routing_key": q,
    }
    assert m.delivery_tag == 1
    assert m.properties == {"content_type": "text/plain", "headers": {"k": [1, "two"]}}
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.01)
    m.ack()
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 0, 1)


def test_drain_events_timeouts_as_the_client_takes_them(conn: MemoryConnection, ch: MemoryChannel) -> None:
    # As leveret.client: inf waits without limit (no OverflowError), NaN and non-numbers
    # are the caller's error and cost nothing.
    q = fresh_queue(ch)
    got: list[bytes] = []
    ch.basic_consume(q, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
    # Any: the wrong types are the point.
    bad_timeouts: list[tuple[Any, type[Exception]]] = [(float("nan"), ValueError), ("1", TypeError)]
    for bad, error in bad_timeouts:
        with pytest.raises(error, match="timeout"):
            conn.drain_events(timeout=bad)
    ch.basic_publish(Message(b"at hand"), "", q)
    conn.drain_events(timeout=float("inf"))
    assert got == [b"at hand"]
    for timeout in (float("inf"), 1e300):  # nothing at hand: the wait must end when one comes
        timer = threading.Timer(0.05, ch.basic_publish, (Message(b"%r" % timeout), "", q))
        timer.start()
        conn.drain_events(timeout=timeout)
        timer.join()
    assert got == [b"at hand", b"inf", b"1e+300"]


def test_message_properties_come_back_as_a_broker_sends_them(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    stamp = datetime(2024, 1, 2, 3, 4, 5)
    ch.basic_publish(Message("text", timestamp=stamp, priority=3, headers={"t": (1, 2)}), "", q)
    m = ch.basic_get(q, no_ack=True)
    assert m is not None
    assert m.body == b"text" and m.content_encoding == "utf-8"
    assert m.timestamp.tzinfo is not None and m.timestamp.replace(tzinfo=None) == stamp
    assert m.headers == {"t": [1, 2]}  # a tuple goes out as an AMQP array


def test_messages_are_copied(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    body = bytearray(b"original")
    headers = {"h": "original"}
    msg = Message(body, headers=headers)
    ch.basic_publish(msg, "", q)
    body[:] = b"changed!"
    headers["h"] = "changed"
    first = ch.basic_get(q)
    assert first is not None
    assert first.body == b"original" and first.headers == {"h": "original"}
    first.headers["h"] = "mutated by consumer"
    first.reject(requeue=True)
    again = ch.basic_get(q)
    assert again is not None
    assert again.headers == {"h": "original"} and again.delivery_info["redelivered"] is True


def test_round_robin_across_consumers(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    got: list[tuple[str, str]] = []
    for tag in ("c1", "c2", "c3"):
        ch.basic_consume(q, consumer_tag=tag, no_ack=True,
                         callback=lambda m: got.append((m.delivery_info["consumer_tag"], bytes(m.body).decode())))
    for i in range(7):
        ch.basic_publish(Message(str(i)), "", q)
    drain(conn)
    assert got == [("c1", "0"), ("c2", "1"), ("c3", "2"), ("c1", "3"), ("c2", "4"), ("c3", "5"), ("c1", "6")]


def test_consumer_priorities(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    got: list[str] = []
    ch.basic_consume(q, consumer_tag="lo", no_ack=True, callback=lambda m: got.append("lo"))
    ch.basic_consume(q, consumer_tag="hi", no_ack=True, arguments={"x-priority": 5},
                     callback=lambda m: got.append("hi"))
    for i in range(3):
        ch.basic_publish(Message(str(i)), "", q)
    drain(conn)
    assert got == ["hi", "hi", "hi"]


def test_single_active_consumer(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-single-active-consumer": True})
    got: list[tuple[str, str]] = []
    for tag in ("s1", "s2"):
        ch.basic_consume(q, consumer_tag=tag, no_ack=True,
                         callback=lambda m: got.append((m.delivery_info["consumer_tag"], bytes(m.body).decode())))
    for i in range(3):
        ch.basic_publish(Message(str(i)), "", q)
    drain(conn)
    ch.basic_cancel("s1")
    for i in range(3, 5):
        ch.basic_publish(Message(str(i)), "", q)
    drain(conn)
    assert got == [("s1", "0"), ("s1", "1"), ("s1", "2"), ("s2", "3"), ("s2", "4")]


def test_prefetch_limits_unacked_deliveries_per_consumer(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    for i in range(5):
        ch.basic_publish(Message(str(i)), "", q)
    got: list[Message] = []
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q, callback=got.append)
    drain(conn)
    assert [m.body for m in got] == [b"0", b"1", b"2"]
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 2, 1)
    got[0].ack()
    drain(conn)
    assert [m.body for m in got] == [b"0", b"1", b"2", b"3"]
    got[3].ack(multiple=True)  # delivery tags 2, 3 and 4
    drain(conn)
    assert [m.body for m in got] == [b"0", b"1", b"2", b"3", b"4"]


def test_qos_applies_to_later_consumers_and_global_to_the_channel(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    first: list[Message] = []
    second: list[Message] = []
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q, callback=first.append)
    ch.basic_qos(prefetch_count=5)  # does not change the first consumer
    for i in range(5):
        ch.basic_publish(Message(str(i)), "", q)
    drain(conn)
    assert len(first) == 1
    ch.basic_qos(prefetch_count=2, global_=True)  # the channel as a whole: 2 unacked
    ch.basic_consume(q, callback=second.append)
    drain(conn)
    assert (len(first), len(second)) == (1, 1)
    first[0].ack()
    drain(conn)
    assert (len(first), len(second)) == (2, 1)


def test_per_consumer_qos_lifts_an_earlier_global_limit(conn: MemoryConnection, ch: MemoryChannel) -> None:
    # RabbitMQ's basic.qos(global=false) "unlimits" the channel: the global 2 set before it
    # no longer applies, each consumer gets its own 3.
    q = fresh_queue(ch)
    for i in range(10):
        ch.basic_publish(Message(str(i)), "", q)
    got: list[Message] = []
    ch.basic_qos(prefetch_count=2, global_=True)
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q, callback=got.append)
    ch.basic_consume(q, callback=got.append)
    drain(conn, 0.2)
    assert len(got) == 6
    ch.basic_qos(prefetch_count=1, global_=True)  # set after: applies again
    for m in got:
        m.ack()
    got.clear()
    drain(conn, 0.2)
    assert len(got) == 1


def test_requeued_messages_go_back_to_the_head_in_order(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    for i in range(5):
        ch.basic_publish(Message(str(i)), "", q)
    got: list[Message] = []
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q, callback=got.append)
    drain(conn)
    assert [(m.body, m.delivery_tag, m.delivery_info["redelivered"]) for m in got] == [
        (b"0", 1, False), (b"1", 2, False), (b"2", 3, False)]
    assert got[-1].delivery_tag is not None
    ch.basic_nack(got[-1].delivery_tag, multiple=True, requeue=True)
    got.clear()
    drain(conn)
    assert [(m.body, m.delivery_tag, m.delivery_info["redelivered"]) for m in got] == [
        (b"0", 4, True), (b"1", 5, True), (b"2", 6, True)]


def test_requeues_at_different_times_restore_publish_order(ch: MemoryChannel) -> None:
    # RabbitMQ merges a requeued message back into its place: one requeued after others
    # that were published later does not jump ahead of them.
    q = fresh_queue(ch)
    for i in range(5):
        ch.basic_publish(Message(str(i)), "", q)
    got = [get_soon(ch, q) for _ in range(5)]
    ch.basic_reject(got[3].delivery_tag, requeue=True)
    ch.basic_nack(got[2].delivery_tag, multiple=True, requeue=True)
    ch.basic_reject(got[4].delivery_tag, requeue=True)
    assert count_soon(ch, q, 5) == 5
    assert bodies(ch, q) == ["0", "1", "2", "3", "4"]


def test_reject_without_requeue_and_without_dead_letter_exchange_drops(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"x"), "", q)
    m = ch.basic_get(q)
    assert m is not None
    m.reject(requeue=False)
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 0, 0)


def test_closing_a_channel_requeues_its_unacked_messages(conn: MemoryConnection, ch: MemoryChannel) -> None:
    ch.queue_declare("f")
    for i in range(3):
        ch.basic_publish(Message(str(i)), "", "f")
    consumer = conn.channel()
    seen: list[Message] = []
    consumer.basic_consume("f", callback=seen.append)
    drain(conn)
    assert ch.queue_declare("f", passive=True) == QueueDeclareOk("f", 0, 1)
    seen[1].ack()
    consumer.close()
    got = []
    while (m := ch.basic_get("f", no_ack=True)) is not None:
        got.append((m.body, m.delivery_info["redelivered"]))
    assert got == [(b"0", True), (b"2", True)]


def test_closing_a_connection_requeues_its_unacked_messages(connect: Callable[[], Any], ch: MemoryChannel) -> None:
    ch.queue_declare("g")
    ch.basic_publish(Message(b"x"), "", "g")
    with connect() as other:
        m = get_soon(other.channel(), "g")  # (another connection's publish: a moment later)
        assert m is not None
        assert ch.queue_declare("g", passive=True).message_count == 0
    again = ch.basic_get("g")
    assert again is not None and again.body == b"x" and again.delivery_info["redelivered"] is True


def test_basic_get(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    assert ch.basic_get(q) is None
    for i in range(3):
        ch.basic_publish(Message(str(i), priority=1), "", q)
    m = ch.basic_get(q)
    assert m is not None
    assert m.delivery_info == {"delivery_tag": 1, "redelivered": False, "exchange": "", "routing_key": q,
                               "message_count": 2}
    assert m.properties == {"content_encoding": "utf-8", "priority": 1}
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 2, 0)  # one is unacked
    n = ch.basic_get(q, no_ack=True)
    assert n is not None and n.delivery_tag == 2 and n.delivery_info["message_count"] == 1
    m.ack()
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 1, 0)


def test_acking_an_unknown_tag_closes_the_channel(conn: MemoryConnection, ch: MemoryChannel) -> None:
    ch.basic_ack(0, multiple=True)  # "everything" when nothing is unacked: fine
    assert ch.is_open
    ch.basic_ack(99)
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 99"):
        ch.queue_declare("q")  # the broker's channel.close came meanwhile (memory: at once)
    assert not ch.is_open
    ch = conn.channel()
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"x"), "", q)
    m = ch.basic_get(q)
    assert m is not None
    m.ack()
    m.ack()  # twice: unknown the second time
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 1"):
        ch.queue_declare(q, passive=True)


def test_drain_events_reports_a_channel_the_broker_closed(conn: MemoryConnection, ch: MemoryChannel) -> None:
    # A callback that acknowledges twice (a classic bug) gets its channel closed: the
    # consumer loop hears it from drain_events rather than waiting for ever.
    q = fresh_queue(ch)
    got: list[Message] = []

    def on_message(message: Message) -> None:
        got.append(message)
        message.ack()
        message.ack()

    ch.basic_consume(q, callback=on_message)
    ch.basic_publish(Message(b"x"), "", q)
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 1"):
        for _ in range(10):
            conn.drain_events(timeout=5)
    assert len(got) == 1 and not ch.is_open
    with pytest.raises(PreconditionFailed):  # the channel's next call raises it too, once
        ch.queue_declare(q, passive=True)
    with pytest.raises(ChannelClosedError):
        ch.queue_declare(q, passive=True)
    with pytest.raises(TimeoutError):  # reported once
        conn.drain_events(timeout=0.2)


def test_no_ack_deliveries_waiting_when_their_channel_closes_still_reach_the_callback(
    conn: MemoryConnection, ch: MemoryChannel
) -> None:
    # They are settled: dropping them would lose them.  Then drain_events reports the close.
    q = fresh_queue(ch)
    for body in (b"1", b"2"):
        ch.basic_publish(Message(body), "", q)
    got: list[bytes] = []
    ch.basic_consume(q, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
    deadline = time.monotonic() + 5
    while len(conn._pending) < 2:  # both deliveries are here, their callbacks not yet run
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ch.basic_ack(99)  # the broker closes the channel: unknown delivery tag
    while ch.is_open:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 99"):
        for _ in range(3):
            conn.drain_events(timeout=5)
    assert got == [b"1", b"2"]
    ok = ch.connection.channel().queue_declare(q, passive=True)
    assert ok is not None and ok.message_count == 0


def test_drain_events_does_not_report_what_a_call_raised(conn: MemoryConnection, ch: MemoryChannel) -> None:
    ch.basic_consume(fresh_queue(ch), callback=lambda m: None)
    ch.basic_publish(Message(b"x"), "no-such-exchange", "k")
    with pytest.raises(NotFound):
        ch.queue_declare("", exclusive=True)
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.2)


def test_a_channel_without_consumers_reports_its_error_on_its_next_call_only(
    conn: MemoryConnection, ch: MemoryChannel
) -> None:
    # Where nobody drains (a publisher), nothing may pile up for drain_events.
    ch.basic_publish(Message(b"x"), "no-such-exchange", "k")
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.3)
    with pytest.raises(NotFound):
        ch.queue_declare("", exclusive=True)
    assert not conn._pending


def test_basic_cancel_stops_deliveries(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    got: list[Message] = []
    tag = ch.basic_consume(q, consumer_tag="mine", no_ack=True, callback=got.append)
    assert tag == "mine"
    ch.basic_publish(Message(b"1"), "", q)
    drain(conn)
    ch.basic_cancel(tag)
    ch.basic_cancel("never-existed")  # fine, as in RabbitMQ
    ch.basic_publish(Message(b"2"), "", q)
    drain(conn)
    assert [m.body for m in got] == [b"1"]
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 1, 0)


@pytest.mark.parametrize("no_ack", [False, True])
def test_deliveries_still_waiting_when_their_consumer_is_cancelled(conn: Any, ch: Any, no_ack: bool) -> None:
    """The callback of the first delivery cancels its consumer while the others wait to
    be run: they go back to the queue (an acking consumer's), or their callback still runs
    (a no_ack consumer's cannot go back).  None is left unacknowledged on the channel."""
    q = fresh_queue(ch)
    for i in range(4):
        ch.basic_publish(Message(str(i).encode()), "", q)
    got: list[bytes] = []

    def on_message(message: Message) -> None:
        got.append(bytes(message.body))
        if not no_ack:
            ch.basic_ack(message.delivery_tag or 0)
        if len(got) == 1:
            ch.basic_cancel("c")

    ch.basic_qos(prefetch_count=4)
    ch.basic_consume(q, consumer_tag="c", no_ack=no_ack, callback=on_message)
    time.sleep(0.2)  # RabbitMQ has sent the four before the first callback runs
    drain(conn)
    if no_ack:
        assert got == [b"0", b"1", b"2", b"3"]
        assert count_soon(ch, q, 0) == 0
    else:
        assert got == [b"0"]
        assert count_soon(ch, q, 3) == 3
        redelivered = [get_soon(ch, q, no_ack=True) for _ in range(3)]
        assert [(bytes(m.body), m.redelivered) for m in redelivered] == [(b"1", True), (b"2", True), (b"3", True)]


def test_deleting_a_consumed_queue_cancels_its_consumers(connect: Callable[[], Any], conn: MemoryConnection) -> None:
    consumer = conn.channel()
    consumer.queue_declare("doomed")
    cancelled: list[str] = []
    tag = consumer.basic_consume("doomed", callback=print, on_cancel=cancelled.append)
    with connect() as other:
        other.channel().queue_delete("doomed")
    assert cancelled == []  # only inside drain_events
    conn.drain_events(timeout=1)
    assert cancelled == [tag]
    assert consumer.is_open
    consumer.basic_cancel(tag)
    assert consumer.queue_declare("", exclusive=True) is not None


def test_basic_recover(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    got: list[Message] = []
    ch.basic_consume(q, callback=got.append)
    ch.basic_publish(Message(b"r"), "", q)
    drain(conn)
    ch.basic_recover(requeue=True)
    drain(conn)
    assert [(m.body, m.delivery_info["redelivered"]) for m in got] == [(b"r", False), (b"r", True)]
    with pytest.raises(AMQPNotImplemented, match="requeue=false"):
        ch.basic_recover(requeue=False)  # RabbitMQ does not implement it: connection error
    assert not conn.is_open


def test_consumer_tag_reuse_and_exclusive_consumers(connect: Callable[[], Any]) -> None:
    with connect() as conn:
        ch = conn.channel()
        q = fresh_queue(ch)
        ch.basic_consume(q, callback=print)
        with pytest.raises(AccessRefused, match="in exclusive use"):
            ch.basic_consume(q, exclusive=True, callback=print)
        ch = conn.channel()
        ch.basic_consume(q, consumer_tag="t", callback=print)
        # Refused before it is sent: RabbitMQ would close the whole connection (530).
        with pytest.raises(LocalProtocolError, match="consumer tag 't' is in use on channel"):
            ch.basic_consume(q, consumer_tag="t", callback=print)
        assert conn.is_open and ch.is_open
    with connect() as conn:
        with pytest.raises(LocalProtocolError, match="nowait needs a consumer_tag"):
            conn.channel().basic_consume("q", nowait=True, callback=print)


def test_drain_events_waits_for_another_thread(conn: MemoryConnection, connect: Callable[[], Any]) -> None:
    ch = conn.channel()
    q = fresh_queue(ch)
    got: list[Message] = []
    ch.basic_consume(q, no_ack=True, callback=got.append)

    def later() -> None:
        time.sleep(0.1)
        with connect() as other:
            other.channel().basic_publish(Message(b"late"), "", q)

    t = threading.Thread(target=later)
    started = time.monotonic()
    t.start()
    conn.drain_events(timeout=None)
    t.join()
    assert [m.body for m in got] == [b"late"]
    assert time.monotonic() - started >= 0.09


# --------------------------------------------------------------------------- queue features


def test_message_ttl_from_the_queue_and_the_message(ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-message-ttl": 50})
    ch.basic_publish(Message(b"old"), "", q)
    time.sleep(0.1)
    ch.basic_publish(Message(b"new"), "", q)
    assert bodies(ch, q) == ["new"]
    p = fresh_queue(ch)
    ch.basic_publish(Message(b"short", expiration="50"), "", p)
    ch.basic_publish(Message(b"long", expiration="60000"), "", p)
    time.sleep(0.1)
    assert ch.queue_declare(p, passive=True) == QueueDeclareOk(p, 1, 0)
    assert bodies(ch, p) == ["long"]


def test_ttl_zero_reaches_only_a_consumer_with_room(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"z", expiration="0"), "", q)
    time.sleep(0.01)
    assert ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 0, 0)
    got: list[Message] = []
    ch.basic_consume(q, no_ack=True, callback=got.append)
    ch.basic_publish(Message(b"z", expiration="0"), "", q)
    drain(conn)
    assert [m.body for m in got] == [b"z"]


def test_bad_expiration_and_user_id_close_the_channel(conn: MemoryConnection) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"expiration": "abc"}, "invalid expiration 'abc': no_integer"),
        ({"user_id": "bob"}, "user_id property set to 'bob' but authenticated user was 'guest'"),
        ({"delivery_mode": 0}, "invalid message: {delivery_mode_unknown,0}"),
        ({"delivery_mode": 3}, "invalid message: {delivery_mode_unknown,3}"),
    ]
    for props, text in cases:
        ch = conn.channel()
        ch.basic_publish(Message(b"x", **props), "", "q")
        with pytest.raises(PreconditionFailed, match=text):
            ch.queue_declare("", exclusive=True)
    ch = conn.channel()
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"x", user_id="guest"), "", q)
    assert bodies(ch, q) == ["x"]


def test_names_longer_than_a_shortstr_are_refused_before_anything_is_sent(conn: Any) -> None:
    """Queue and exchange names, routing keys and consumer tags are shortstrs: past 255
    bytes of UTF-8 the call raises EncodeError, naming the method and the argument, and
    the channel stays usable (nothing reached the broker)."""
    from leveret.wire.errors import EncodeError

    ch = conn.channel()
    q = fresh_queue(ch)
    long = "\u00e9" * 128  # 128 characters, 256 bytes
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("queue.declare: queue", lambda: ch.queue_declare(long)),
        ("exchange.declare: exchange", lambda: ch.exchange_declare(long)),
        ("queue.bind: routing_key", lambda: ch.queue_bind(q, "amq.direct", long)),
        ("exchange.bind: destination", lambda: ch.exchange_bind(long, "amq.direct")),
        ("basic.publish: routing_key", lambda: ch.basic_publish(b"x", "", long)),
        ("basic.consume: consumer_tag", lambda: ch.basic_consume(q, consumer_tag=long, callback=print)),
        ("basic.get: queue", lambda: ch.basic_get(long)),
        ("queue.delete: queue", lambda: ch.queue_delete(long)),
    ]
    for text, call in calls:
        with pytest.raises(EncodeError, match=f"{text} \\(shortstr\\): 256 bytes"):
            call()
    assert ch.is_open
    ch.basic_publish(b"fine", "", q)
    assert count_soon(ch, q, 1) == 1


@pytest.mark.parametrize("expiration, text", [
    (" 5000", "no_integer"),
    ("\u0665", "no_integer"),  # an Arabic-Indic digit: Python's int() takes it
    ("1_000", '{leftover_string,"_000"}'),
    ("5000\n", '{leftover_string,"\\n"}'),
])
def test_expiration_must_be_an_erlang_integer(conn: MemoryConnection, expiration: str, text: str) -> None:
    ch = conn.channel()
    ch.basic_publish(Message(b"x", expiration=expiration), "", "q")
    with pytest.raises(PreconditionFailed) as info:
        ch.queue_declare("", exclusive=True)
    assert f"invalid expiration '{expiration}': {text}" in str(info.value)
    ch = conn.channel()
    q = fresh_queue(ch)
    ch.basic_publish(Message(b"x", expiration="+60000"), "", q)
    assert bodies(ch, q) == ["x"]


def test_max_length_drops_the_head(ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-max-length": 2})
    for i in range(4):
        ch.basic_publish(Message(str(i)), "", q)
    assert bodies(ch, q) == ["2", "3"]
    b = fresh_queue(ch, arguments={"x-max-length-bytes": 10})
    for body in ("aaaa", "bbbb", "cccc", "dd"):
        ch.basic_publish(Message(body), "", b)
    assert bodies(ch, b) == ["bbbb", "cccc", "dd"]


def test_overflow_reject_publish_nacks_in_confirm_mode(ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_select()
    assert ch.publish_confirmed(Message(b"a"), "", q) is True
    with pytest.raises(PublishNacked) as nacked:
        ch.publish_confirmed(Message(b"b"), "", q)
    assert nacked.value.delivery_tags == [2]
    assert ch.basic_publish(Message(b"c"), "", q) == 3
    with pytest.raises(PublishNacked) as again:
        ch.wait_for_confirms()
    assert again.value.delivery_tags == [3]
    assert ch.wait_for_confirms() is True  # nacks are reported once
    assert bodies(ch, q) == ["a"]


def test_priority_queues(ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-max-priority": 5})
    for i, p in enumerate([0, 3, None, 9, 3, 1]):
        props = {} if p is None else {"priority": p}
        ch.basic_publish(Message(f"m{i}p{p}", **props), "", q)
    # 9 counts as the maximum, 5; equal priorities keep their order; none is 0.
    assert bodies(ch, q) == ["m3p9", "m1p3", "m4p3", "m5p1", "m0p0", "m2pNone"]
    for i, p in enumerate([1, 2, 1]):
        ch.basic_publish(Message(f"r{i}p{p}", priority=p), "", q)
    taken = [ch.basic_get(q) for _ in range(3)]
    ch.basic_nack(taken[-1].delivery_tag, multiple=True)  # type: ignore[union-attr]
    assert bodies(ch, q) == ["r1p2", "r0p1", "r2p1"]


def test_dead_lettering_on_reject_and_max_length(ch: MemoryChannel) -> None:
    ch.exchange_declare("dlx", "fanout")
    dead = fresh_queue(ch)
    ch.queue_bind(dead, "dlx")
    ch.queue_declare("src", arguments={"x-dead-letter-exchange": "dlx", "x-max-length": 2})
    for i in range(3):
        ch.basic_publish(Message(str(i), expiration="60000"), "", "src")
    m = ch.basic_get("src")
    assert m is not None
    m.reject(requeue=False)
    assert count_soon(ch, dead, 2) == 2
    got = []
    while (d := ch.basic_get(dead, no_ack=True)) is not None:
        got.append(d)
    assert [d.body for d in got] == [b"0", b"1"]
    first = got[0]
    assert first.delivery_info["exchange"] == "dlx" and first.delivery_info["routing_key"] == "src"
    assert "expiration" not in first.properties  # RabbitMQ removes it when dead-lettering
    death = first.headers["x-death"]
    assert len(death) == 1
    assert isinstance(death[0].pop("time"), datetime)
    assert death == [{"count": 1, "reason": "maxlen", "queue": "src", "exchange": "",
                      "routing-keys": ["src"], "original-expiration": "60000"}]
    assert {k: v for k, v in first.headers.items() if k != "x-death"} == {
        "x-first-death-exchange": "", "x-first-death-queue": "src", "x-first-death-reason": "maxlen"}
    assert got[1].headers["x-death"][0]["reason"] == "rejected"


@pytest.mark.parametrize("dlrk", [None, "k"])
def test_dead_lettering_keeps_cc_only_without_a_dead_letter_routing_key(ch: MemoryChannel, dlrk: str | None) -> None:
    ch.exchange_declare("dlx", "fanout")
    dead = fresh_queue(ch)
    ch.queue_bind(dead, "dlx")
    args: dict[str, Any] = {"x-dead-letter-exchange": "dlx"}
    if dlrk is not None:
        args["x-dead-letter-routing-key"] = dlrk
    ch.queue_declare("src", arguments=args)
    ch.basic_publish(Message(b"m", headers={"CC": ["elsewhere"], "h": 1}), "", "src")
    m = get_soon(ch, "src")
    m.reject(requeue=False)
    d = get_soon(ch, dead, no_ack=True)
    assert d.delivery_info["routing_key"] == (dlrk or "src")
    assert d.headers["x-death"][0]["routing-keys"] == ["src", "elsewhere"]
    assert ("CC" in d.headers) == (dlrk is None)
    assert d.headers["h"] == 1


def test_dead_lettering_on_expiry_with_a_routing_key(ch: MemoryChannel) -> None:
    ch.exchange_declare("dlx", "direct")
    dead = fresh_queue(ch)
    ch.queue_bind(dead, "dlx", "rk2")
    q = fresh_queue(ch, arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk2"})
    ch.basic_publish(Message(b"ttl", expiration="10", headers={"h": 1}), "", q)
    d = get_soon(ch, dead, no_ack=True)
    assert d is not None
    assert d.delivery_info["routing_key"] == "rk2"
    assert d.headers["h"] == 1
    assert d.headers["x-death"][0]["reason"] == "expired"
    assert d.headers["x-death"][0]["original-expiration"] == "10"


def test_dead_letter_count_grows_and_cycles_are_dropped(ch: MemoryChannel) -> None:
    ch.exchange_declare("dlx", "direct")
    ch.queue_declare("loop", arguments={"x-dead-letter-exchange": "dlx"})
    ch.queue_bind("loop", "dlx", "loop")
    ch.basic_publish(Message(b"loop"), "", "loop")
    for _ in range(3):  # rejected back into itself: allowed, counted
        m = get_soon(ch, "loop")
        assert m is not None
        m.reject(requeue=False)
    m = get_soon(ch, "loop", no_ack=True)
    assert m is not None
    assert [(d["count"], d["reason"]) for d in m.headers["x-death"]] == [(3, "rejected")]
    # Expiring back into itself would go round for ever: RabbitMQ drops it.
    ch.queue_declare("cyc", arguments={"x-message-ttl": 20, "x-dead-letter-exchange": ""})
    ch.basic_publish(Message(b"cyc"), "", "cyc")
    time.sleep(0.3)
    assert ch.queue_declare("cyc", passive=True) == QueueDeclareOk("cyc", 0, 0)


def test_dead_letter_exchange_that_does_not_exist_drops(ch: MemoryChannel) -> None:
    q = fresh_queue(ch, arguments={"x-dead-letter-exchange": "missing"})
    ch.basic_publish(Message(b"x"), "", q)
    m = ch.basic_get(q)
    assert m is not None
    m.reject(requeue=False)
    assert ch.is_open and ch.queue_declare(q, passive=True) == QueueDeclareOk(q, 0, 0)


def test_expiry_is_delivered_to_a_consumer_waiting_in_drain_events(conn: MemoryConnection, ch: MemoryChannel) -> None:
    ch.exchange_declare("dlx", "fanout")
    dead = fresh_queue(ch)
    ch.queue_bind(dead, "dlx")
    waiting = fresh_queue(ch, arguments={"x-message-ttl": 150, "x-dead-letter-exchange": "dlx"})
    got: list[tuple[bytes, str]] = []
    ch.basic_consume(dead, no_ack=True, callback=lambda m: got.append((m.body, m.headers["x-death"][0]["reason"])))
    started = time.monotonic()
    ch.basic_publish(Message(b"late"), "", waiting)
    conn.drain_events(timeout=3)
    elapsed = time.monotonic() - started
    assert got == [(b"late", "expired")]
    assert 0.14 <= elapsed < 1.5


def test_unused_queues_expire(mem: MemoryBroker, mch: MemoryChannel) -> None:
    mch.queue_declare("short-lived", arguments={"x-expires": 50})
    mch.queue_declare("consumed", arguments={"x-expires": 50})
    mch.basic_consume("consumed", callback=print)
    time.sleep(0.1)
    with pytest.raises(NotFound):
        mch.queue_declare("short-lived", passive=True)
    assert "consumed" in mem.queue_names()


# --------------------------------------------------------------------------- confirms, returns, tx


def test_confirms_and_mandatory_returns(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    assert ch.basic_publish(Message(b"plain"), "", q) is None
    ch.confirm_select()
    assert [ch.basic_publish(Message(b"x"), "", q) for _ in range(3)] == [1, 2, 3]
    assert ch.wait_for_confirms(timeout=1) is True
    assert ch.publish_confirmed(Message(b"ok"), "", q) is True
    assert ch.publish_confirmed(Message(b"lost", headers={"a": 1}), "amq.direct", "nowhere", mandatory=True) is False
    assert ch.returned == []  # its False reports it: not kept (it would pile up)
    assert ch.publish_confirmed(Message(b"dropped"), "amq.direct", "nowhere") is True  # not mandatory
    assert ch.basic_publish(Message(b"back", headers={"a": 1}), "amq.direct", "nowhere", mandatory=True) == 7
    assert ch.wait_for_confirms(timeout=5) is True
    [returned] = ch.returned  # a plain publish's return waits there for the caller
    assert returned.body == b"back" and returned.headers == {"a": 1}
    assert returned.delivery_info == {"reply_code": 312, "reply_text": "NO_ROUTE", "exchange": "amq.direct",
                                      "routing_key": "nowhere", "publish_tag": 7}
    with pytest.raises(ValueError):
        returned.ack()  # a returned message was not delivered
    seen: list[Message] = []
    ch.on_return = seen.append
    assert ch.publish_confirmed(Message(b"called"), "amq.direct", "nowhere", mandatory=True) is False
    if not seen:
        conn.drain_events(timeout=5)  # (asyncio-like drivers may run it later; not these)
    assert [m.body for m in seen] == [b"called"] and len(ch.returned) == 1


def test_returns_run_inside_drain_events(conn: MemoryConnection, ch: MemoryChannel) -> None:
    returns: list[Message] = []
    ch.on_return = returns.append
    ch.basic_publish(Message(b"ret"), "", "no-such-queue", mandatory=True)
    assert returns == []
    conn.drain_events(timeout=1)
    assert [(m.body, m.delivery_info["reply_code"], m.delivery_info["publish_tag"]) for m in returns] == [
        (b"ret", 312, None)]
    assert ch.returned == []


def test_confirms_need_confirm_mode_and_nothing_is_sent(ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    with pytest.raises(LocalProtocolError):
        ch.publish_confirmed(Message(b"x"), "", q)
    ch.basic_publish(Message(b"plain"), "", q)
    with pytest.raises(LocalProtocolError, match="needs confirm mode"):
        ch.wait_for_confirms(timeout=5)  # nothing is ever confirmed: True would lie
    got = ch.basic_get(q, no_ack=True)
    assert got is not None and got.body == b"plain"  # the plain one only
    assert ch.basic_get(q, no_ack=True) is None


def test_settling_a_message_no_broker_delivered_sends_nothing(ch: MemoryChannel) -> None:
    for call in (ch.basic_ack, ch.basic_nack, ch.basic_reject):
        with pytest.raises(EncodeError, match="needs a delivery tag, not None"):
            call(Message(b"built here").delivery_tag)
    assert ch.is_open
    ch.queue_declare(fresh_queue(ch), passive=True)  # the channel goes on


def test_errors_name_the_method_that_caused_them(ch: MemoryChannel) -> None:
    with pytest.raises(NotFound) as info:
        ch.queue_declare("no-such-queue-here", passive=True)
    assert str(info.value).endswith("(caused by queue.declare 50/10)")


def test_a_publish_that_closes_the_channel_is_not_confirmed(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.confirm_select()
    assert ch.basic_publish(Message(b"x"), "no-such-exchange") == 1
    with pytest.raises(NotFound):
        ch.wait_for_confirms()
    ch = conn.channel()
    ch.confirm_select()
    with pytest.raises(NotFound):
        ch.publish_confirmed(Message(b"x"), "no-such-exchange")


def test_transactions(conn: MemoryConnection, ch: MemoryChannel) -> None:
    q = fresh_queue(ch)
    ch.tx_select()
    ch.basic_publish(Message(b"tx1"), "", q)
    assert ch.queue_declare(q, passive=True).message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).message_count == 1
    ch.basic_publish(Message(b"tx2"), "", q)
    ch.tx_rollback()
    m = ch.basic_get(q)
    assert m is not None and m.body == b"tx1"
    m.ack()
    ch.tx_rollback()  # the ack is forgotten: still unacked
    ch.close()
    ch = conn.channel()
    assert bodies(ch, q) == ["tx1"]
    with pytest.raises(PreconditionFailed, match="channel is not transactional"):
        ch.tx_commit()
    ch = conn.channel()
    ch.confirm_select()
    with pytest.raises(LocalProtocolError):
        ch.tx_select()


# --------------------------------------------------------------------------- errors


def test_channel_errors_close_only_their_channel(conn: MemoryConnection) -> None:
    good, bad = conn.channel(), conn.channel()
    q = fresh_queue(good)
    with pytest.raises(NotFound):
        bad.queue_declare("missing", passive=True)
    assert not bad.is_open and good.is_open and conn.is_open
    good.basic_publish(Message(b"still fine"), "", q)
    assert bodies(good, q) == ["still fine"]


@pytest.mark.parametrize("call, text", [
    (lambda ch: ch.flow(False), "active=false"),
    (lambda ch: ch.basic_qos(prefetch_size=10), r"prefetch_size!=0 \(10\)"),
])
def test_not_implemented_closes_the_connection(conn: MemoryConnection, call: Any, text: str) -> None:
    ch = conn.channel()
    assert ch.flow(True) is True
    with pytest.raises(AMQPNotImplemented, match=text):
        call(ch)
    assert not conn.is_open
    with pytest.raises(AMQPNotImplemented):
        conn.drain_events(timeout=0)


def test_channels_of_a_connection_closed_by_an_error_raise_that_error_every_time(conn: MemoryConnection) -> None:
    ch, other = conn.channel(), conn.channel()
    with pytest.raises(AMQPNotImplemented):
        ch.basic_recover(requeue=False)
    for channel in (ch, ch, other, other):
        with pytest.raises(AMQPNotImplemented):
            channel.queue_declare("", exclusive=True)


def test_immediate_publish_closes_the_connection(conn: MemoryConnection) -> None:
    ch = conn.channel()
    ch.basic_publish(Message(b"x"), "", "q", immediate=True)
    with pytest.raises(AMQPNotImplemented, match="immediate=true"):
        ch.queue_declare("q")  # the broker's connection.close came meanwhile (memory: at once)
    assert not conn.is_open


def test_simulated_connection_loss(mem: MemoryBroker) -> None:
    with MemoryConnection(broker=mem) as keeper:
        kch = keeper.channel()
        kch.queue_declare("work")
        kch.basic_publish(Message(b"job"), "", "work")
        lost = MemoryConnection(broker=mem).connect()
        lch = lost.channel()
        lch.queue_declare("mine", exclusive=True)
        assert lch.basic_get("work") is not None
        lost.simulate_connection_loss()
        assert not lost.is_open
        with pytest.raises(ConnectionLost):
            lch.basic_publish(Message(b"x"), "", "work")
        with pytest.raises(ConnectionError):
            lost.drain_events(timeout=0)
        lost.close()  # still safe
        assert "mine" not in mem.queue_names()
        m = kch.basic_get("work")
        assert m is not None and m.delivery_info["redelivered"] is True


# --------------------------------------------------------------------------- threads


def test_one_thread_publishes_5000_while_another_consumes_them_all(connect: Callable[[], Any]) -> None:
    n = 5000
    received: list[int] = []
    ready = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with connect() as conn:
                ch = conn.channel()
                ch.queue_declare("bulk")
                ch.basic_qos(prefetch_count=50)

                def on_message(m: Message) -> None:
                    received.append(int(m.body))
                    m.ack()

                ch.basic_consume("bulk", callback=on_message)
                ready.set()
                while len(received) < n:
                    conn.drain_events(timeout=5)
                assert ch.queue_declare("bulk", passive=True) == QueueDeclareOk("bulk", 0, 1)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            ready.set()

    def publish() -> None:
        try:
            ready.wait(5)
            with connect() as conn:
                ch = conn.channel()
                ch.confirm_select()
                for i in range(n):
                    ch.basic_publish(Message(str(i)), "", "bulk")
                assert ch.wait_for_confirms(timeout=5) is True
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume), threading.Thread(target=publish)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert received == list(range(n))


def test_a_consumer_needs_a_callback(ch: Any) -> None:
    # As the client says: without one the deliveries would have nowhere to go.
    q = ch.queue_declare("", exclusive=True).queue
    with pytest.raises(TypeError, match="callback"):
        ch.basic_consume(q)
    assert ch.queue_declare(q, passive=True).consumer_count == 0


# --------------------------------------------------------------------------- queue types

QUORUM = {"x-queue-type": "quorum"}


def drain_until(conn: Any, done: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        drain(conn)


def quorum_queue(ch: Any, name: str = "qq", /, **arguments: Any) -> str:
    ch.queue_declare(name, durable=True, arguments={**QUORUM, **arguments})
    return name


@pytest.mark.parametrize("kwargs, text", [
    # A server-named queue first, then the dead-letter exchange's type, then x-queue-type.
    (dict(queue="", arguments={**QUORUM, "x-message-ttl": -1}),
     "Cannot declare a server-named queue for type rabbit_quorum_queue"),
    (dict(arguments={"x-dead-letter-exchange": 5, "x-queue-type": "bogus"}),
     "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"),
    (dict(arguments={"x-dead-letter-exchange": b"dlx"}),
     "invalid type 'binary' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"),
    (dict(arguments={"x-max-priority": -1, "x-queue-type": b"quorum"}),
     "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unacceptable_type,binary}"),
    (dict(arguments={"x-queue-type": 5}),
     "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unacceptable_type,signedint}"),
    (dict(arguments={"x-max-priority": -1, "x-queue-type": "bogus"}),
     "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\""),
    # The values of the arguments the type takes (in RabbitMQ's order, not the one given)...
    (dict(arguments={"x-message-ttl": -1, "x-expires": 0}),
     "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"),
    (dict(arguments={**QUORUM, "x-max-priority": 5, "x-message-ttl": -1}),
     "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"),
    (dict(durable=True, arguments={**QUORUM, "x-max-priority": 5, "x-overflow": "bogus"}),
     "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"),
    (dict(arguments={"x-overflow": b"drop-head"}),
     "invalid arg 'x-overflow' for queue 'q' in vhost '/': {unacceptable_type,binary}"),
    (dict(durable=True, arguments={**QUORUM, "x-dead-letter-routing-key": "k"}),
     "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"),
    (dict(durable=True, arguments={**QUORUM, "x-dead-letter-strategy": "bogus"}),
     "invalid arg 'x-dead-letter-strategy' for queue 'q' in vhost '/': invalid_dlx_strategy"),
    (dict(arguments={"x-queue-version": 3}),
     "invalid arg 'x-queue-version' for queue 'q' in vhost '/': \"unsupported queue version '3'\""),
    # ... then the arguments of other queue types, in the order given ...
    (dict(exclusive=True, auto_delete=True, arguments={**QUORUM, "x-queue-mode": "lazy", "x-max-priority": 5}),
     "invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"),
    (dict(durable=True, arguments={**QUORUM, "x-max-priority": 5, "x-queue-mode": "lazy"}),
     "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"),
    (dict(durable=True, arguments={**QUORUM, "x-queue-version": 2}),
     "invalid arg 'x-queue-version' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"),
    (dict(arguments={"x-delivery-limit": 3}),
     "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"),
    (dict(durable=True, arguments={"x-queue-type": "stream", "x-overflow": "bogus"}),
     "invalid arg 'x-overflow' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"),
    # ... then the properties: auto-delete, exclusive, durable.
    (dict(exclusive=True, auto_delete=True, arguments=QUORUM),
     "invalid property 'auto-delete' for queue 'q' in vhost '/'"),
    (dict(durable=True, exclusive=True, arguments=QUORUM),
     "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"),
    (dict(arguments=QUORUM), "invalid property 'non-durable' for queue 'q' in vhost '/'"),
    (dict(arguments={"x-queue-type": "stream"}), "invalid property 'non-durable' for queue 'q' in vhost '/'"),
])
def test_queue_type_declaration_checks_come_in_rabbitmqs_order(
    conn: MemoryConnection, kwargs: dict[str, Any], text: str
) -> None:
    ch = conn.channel()
    kwargs = dict(kwargs)  # (the same parameters serve both brokers)
    name = kwargs.pop("queue", "q")
    text = text.replace("vhost '/'", f"vhost '{conn.params.virtual_host}'")
    with pytest.raises(PreconditionFailed) as info:
        ch.queue_declare(name, **kwargs)
    assert info.value.reply_text == f"PRECONDITION_FAILED - {text}"
    assert not ch.is_open and conn.is_open


@pytest.mark.parametrize("arguments", [{"x-queue-type": "bogus"}, {"x-queue-type": 5}])
def test_a_server_named_queue_of_an_unknown_type_crashes_the_channel(
    conn: MemoryConnection, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InternalError) as info:  # RabbitMQ 3.10 fails before checking it
        conn.channel().queue_declare("", arguments=arguments)
    assert info.value.reply_text == "INTERNAL_ERROR" and not conn.is_open


def test_quorum_queues_take_their_arguments_and_compare_theirs_only(conn: MemoryConnection) -> None:
    ch = conn.channel()
    vhost = conn.params.virtual_host
    args = {"x-delivery-limit": 3, "x-dead-letter-strategy": "at-most-once", "x-max-in-memory-length": 4,
            "x-quorum-initial-group-size": 1, "x-queue-leader-locator": "balanced", "x-overflow": "reject-publish-dlx"}
    quorum_queue(ch, "h", **args)
    # x-max-priority is not a quorum queue's argument: not compared on redeclaration.
    assert ch.queue_declare("h", durable=True, arguments={**QUORUM, **args, "x-max-priority": 5}) == QueueDeclareOk("h", 0, 0)
    assert ch.queue_declare("h", passive=True) == QueueDeclareOk("h", 0, 0)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(arguments=args), "received none but current is the value 'quorum' of type 'longstr'"),
        (dict(arguments={**args, "x-queue-type": "classic"}), "received 'classic' but current is 'quorum'"),
        (dict(arguments={**QUORUM, **args, "x-delivery-limit": 4}), "received '4' but current is '3'"),
    ]
    for kwargs, text in cases:
        bad = conn.channel()
        with pytest.raises(PreconditionFailed) as info:
            bad.queue_declare("h", durable=True, **kwargs)
        assert str(info.value.reply_text).endswith(f"for queue 'h' in vhost '{vhost}': {text}")


def test_a_quorum_queue_counts_deliveries_and_dead_letters_past_the_limit(ch: Any) -> None:
    dead = fresh_queue(ch)
    queue = quorum_queue(ch, **{"x-delivery-limit": 2, "x-dead-letter-exchange": "",
                                "x-dead-letter-routing-key": dead})
    ch.basic_publish(Message(b"poison", headers={"app": "test", "x-delivery-count": 7}), "", queue)
    seen = []
    for _ in range(3):  # basic.get sets x-delivery-count every time; the limit is reached
        m = get_soon(ch, queue)
        seen.append((m.redelivered, m.headers))
        m.reject(requeue=True)
    assert seen == [
        (False, {"app": "test", "x-delivery-count": 0}),
        (True, {"app": "test", "x-delivery-count": 1}),
        (True, {"app": "test", "x-delivery-count": 2}),
    ]
    corpse = get_soon(ch, dead)
    (death,) = corpse.headers["x-death"]
    assert isinstance(death.pop("time"), datetime)
    assert death == {"count": 1, "reason": "delivery_limit", "queue": queue, "exchange": "",
                     "routing-keys": [queue]}
    assert corpse.headers["x-delivery-count"] == 7  # the message as published, not the count
    assert count_soon(ch, queue, 0) == 0


def test_a_quorum_queue_without_dead_letter_exchange_drops_past_the_limit(conn: Any, ch: Any) -> None:
    queue = quorum_queue(ch, **{"x-delivery-limit": 0})
    ch.basic_publish(Message(b"once", headers={"x-delivery-count": 7}), "", queue)
    got: list[Message] = []
    ch.basic_consume(queue, callback=got.append)
    drain_until(conn, lambda: bool(got))
    # A consumer's first delivery has no x-delivery-count of the broker's.
    assert got[0].headers == {"x-delivery-count": 7} and not got[0].redelivered
    got[0].reject(requeue=True)
    drain(conn)
    assert len(got) == 1 and count_soon(ch, queue, 0) == 0


def test_a_quorum_queue_puts_back_rejected_messages_last_and_a_closed_channels_first(
    conn: Any, ch: Any
) -> None:
    queue = quorum_queue(ch)
    for body in "abc":
        ch.basic_publish(Message(body), "", queue)
    getter = conn.channel()
    first, second = get_soon(getter, queue), get_soon(getter, queue)
    second.reject(requeue=True)
    first.reject(requeue=True)
    got = [get_soon(ch, queue, no_ack=True) for _ in range(3)]
    assert [(m.body, m.headers["x-delivery-count"]) for m in got] == [(b"c", 0), (b"b", 1), (b"a", 1)]
    for body in "de":
        ch.basic_publish(Message(body), "", queue)
    first, second = get_soon(getter, queue), get_soon(getter, queue)
    ch.basic_publish(Message(b"f"), "", queue)
    assert count_soon(ch, queue, 1) == 1
    getter.close()
    got = [get_soon(ch, queue, no_ack=True) for _ in range(3)]
    assert [(m.body, m.redelivered, m.headers["x-delivery-count"]) for m in got] == [
        (b"d", True, 1), (b"e", True, 1), (b"f", False, 0)]


def test_a_quorum_queue_refuses_a_channel_wide_prefetch(connect: Callable[[], Any]) -> None:
    with connect() as conn:
        ch = conn.channel()
        queue = quorum_queue(ch)
        got: list[Message] = []
        ch.basic_consume(queue, callback=got.append)
        ch.basic_qos(prefetch_count=1, a_global=True)  # after basic.consume: no effect
        for body in "abc":
            ch.basic_publish(Message(body), "", queue)
        drain_until(conn, lambda: len(got) == 3)
        assert len(got) == 3
        ch.basic_qos(prefetch_count=0, a_global=True)
        ch.basic_consume(queue, callback=got.append)  # no channel-wide limit: fine
        ch.basic_qos(prefetch_count=10, a_global=True)
        with pytest.raises(AMQPNotImplemented) as info:
            ch.basic_consume(queue, callback=got.append)
        vhost = conn.params.virtual_host
        assert info.value.reply_text == (
            f"NOT_IMPLEMENTED - queue '{queue}' in vhost '{vhost}' does not support global qos")
        assert not conn.is_open


def test_a_quorum_queue_ignores_the_exclusive_consume_flag(conn: Any) -> None:
    queue = quorum_queue(conn.channel())
    conn.channel().basic_consume(queue, callback=print, exclusive=True)
    conn.channel().basic_consume(queue, callback=print)
    conn.channel().basic_consume(queue, callback=print, exclusive=True)
    assert conn.channel().queue_declare(queue, passive=True).consumer_count == 3


@pytest.mark.parametrize("call, error, text", [
    (lambda ch, q: ch.basic_get(q), ResourceLocked,
     "RESOURCE_LOCKED - cannot obtain access to locked queue 'qq' in vhost '/'. basic.get operations "
     "are not supported by quorum queues with single active consumer"),
    (lambda ch, q: ch.queue_delete(q, if_unused=True), AMQPNotImplemented,
     "NOT_IMPLEMENTED - cannot delete queue 'qq' in vhost '/'. queue.delete operations with if-unused "
     "flag set are not supported by quorum queues"),
    (lambda ch, q: ch.queue_delete(q, if_empty=True), AMQPNotImplemented,
     "NOT_IMPLEMENTED - cannot delete queue 'qq' in vhost '/'. queue.delete operations with if-empty "
     "flag set are not supported by quorum queues"),
    (lambda ch, q: ch.basic_consume(q, callback=print, arguments={"x-cancel-on-ha-failover": True}),
     PreconditionFailed,
     "PRECONDITION_FAILED - invalid arg 'x-cancel-on-ha-failover' for queue 'qq' in vhost '/' of queue "
     "type rabbit_quorum_queue"),
])
def test_what_a_quorum_queue_refuses(conn: Any, call: Any, error: type[Exception], text: str) -> None:
    queue = quorum_queue(conn.channel(), **{"x-single-active-consumer": True})
    with pytest.raises(error) as info:
        call(conn.channel(), queue)
    assert info.value.reply_text == text.replace("vhost '/'", f"vhost '{conn.params.virtual_host}'")  # type: ignore[attr-defined]


@pytest.mark.parametrize("arguments, text", [
    ({"x-stream-offset": 5},
     "invalid arg 'x-stream-offset' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"),
    ({"x-priority": 2.0, "x-stream-offset": 5},
     "invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got double\""),
    ({"x-cancel-on-ha-failover": 1},
     "invalid arg 'x-cancel-on-ha-failover' for queue 'q' in vhost '/': {unacceptable_type,signedint}"),
])
def test_consumer_arguments_are_checked(conn: Any, arguments: dict[str, Any], text: str) -> None:
    ch = conn.channel()
    ch.queue_declare("q")
    with pytest.raises(PreconditionFailed) as info:
        ch.basic_consume("q", callback=print, arguments=arguments)
    assert info.value.reply_text == "PRECONDITION_FAILED - " + text.replace(
        "vhost '/'", f"vhost '{conn.params.virtual_host}'")


def test_quorum_queue_overflow(ch: Any) -> None:
    # reject-publish takes the message that goes over the limit, then refuses.
    queue = quorum_queue(ch, "limited", **{"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_select()
    for body in "abc":
        assert ch.publish_confirmed(Message(body), "", queue, timeout=10) is True
    with pytest.raises(PublishNacked):
        ch.publish_confirmed(Message(b"d"), "", queue, timeout=10)
    assert count_soon(ch, queue, 3) == 3
    # reject-publish-dlx is drop-head in a quorum queue.
    dead = fresh_queue(ch)
    queue = quorum_queue(ch, "dlx", **{"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                       "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    for body in "abc":
        assert ch.publish_confirmed(Message(body), "", queue, timeout=10) is True
    assert count_soon(ch, dead, 2) == 2 and bodies(ch, queue) == ["c"]


def test_a_quorum_consumer_without_prefetch_gets_2000_unacked(mconn: MemoryConnection, mch: MemoryChannel) -> None:
    queue = quorum_queue(mch)
    for _ in range(2001):
        mch.basic_publish(Message(b"x"), "", queue)
    got: list[Message] = []
    mch.basic_consume(queue, callback=got.append)
    drain(mconn)
    assert len(got) == 2000
    got[0].ack()
    drain(mconn)
    assert len(got) == 2001


@pytest.mark.parametrize("arguments", [{"x-queue-type": "stream"},
                                       {"x-queue-type": "stream", "x-max-age": "1D"}])
def test_memory_refuses_stream_queues_rabbitmq_would_declare(mconn: MemoryConnection, arguments: dict[str, Any]) -> None:
    with pytest.raises(AMQPNotImplemented) as info:
        mconn.channel().queue_declare("s", durable=True, arguments=arguments)
    assert info.value.reply_text == (
        "NOT_IMPLEMENTED - cannot declare queue 's' in vhost '/' of type rabbit_stream_queue: "
        "memory:// does not implement stream queues")
    assert not mconn.is_open


@pytest.mark.parametrize("use", ["declare", "passive", "consume", "reply_to", "reply"])
def test_memory_refuses_direct_reply_to_plainly(mem: MemoryBroker, use: str) -> None:
    # It answered NotFound ("no queue 'amq.rabbitmq.reply-to'") or AccessRefused ("reserved
    # prefix"): as if the code were wrong, when memory:// only lacks the feature.
    with MemoryConnection(broker=mem) as conn:
        ch = conn.channel()
        ch.confirm_select()
        reply_to = "amq.rabbitmq.reply-to"
        calls: dict[str, Any] = {
            "declare": lambda: ch.queue_declare(reply_to),
            "passive": lambda: ch.queue_declare(reply_to, passive=True),
            "consume": lambda: ch.basic_consume(reply_to, no_ack=True, callback=lambda m: None),
            "reply_to": lambda: ch.publish_confirmed(Message(b"x", reply_to=reply_to), routing_key="q"),
            "reply": lambda: ch.publish_confirmed(b"x", routing_key=reply_to + ".g1h2AA5yZXBseUAx"),
        }
        with pytest.raises(AMQPNotImplemented, match=r"memory:// does not implement direct reply-to \(amq.rabbitmq.reply-to\)"):
            calls[use]()
        assert not conn.is_open
