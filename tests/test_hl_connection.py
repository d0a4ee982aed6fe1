"""leveret.highlevel.Connection: URLs, laziness, failover, ensure(), events, shortcuts.

Connections go to the real broker (and memory:// where the transport matters not); the
failover tests use a port on 127.0.0.1 where nothing listens.
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import threading
import time
from typing import Any

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import ack_into, closed_port, lose_memory_connection, unique

from broker import PrivateNode
from helpers import in_forked_child
from leveret.client import Connection as ClientConnection
from leveret.client import AuthenticationError, ChannelClosedError, NotFound, URLError
from leveret.highlevel import (
    BrokerConnection,
    Connection,
    Consumer,
    Exchange,
    LimitExceeded,
    OperationalError,
    Producer,
    Queue,
    SimpleQueue,
)


def ready(conn: Connection, name: str) -> int:
    ch = conn.channel()
    try:
        return int(ch.queue_declare(name, passive=True)[1])
    finally:
        ch.close()


def wait_until_dead(conn: Connection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while conn.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not conn.connected


# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    "url, vhost",
    [
        ("amqp://h//", "/"),
        ("amqp://h/", "/"),
        ("amqp://h", "/"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/app", "app"),
        ("amqp://h//app", "/app"),
        ("amqp://h/a%2Fb", "a/b"),
        ("pyamqp://h/app", "app"),
        ("memory://", "/"),
        ("memory:///vh", "vh"),
    ],
)
def test_kombu_vhost_rule(url: str, vhost: str) -> None:
    assert Connection(url).virtual_host == vhost


def test_url_parts_and_keyword_overrides() -> None:
    c = Connection("amqp://user:secret@broker.example:5673/vh?heartbeat=10")
    assert (c.hostname, c.port, c.userid, c.password, c.virtual_host, c.heartbeat) == (
        "broker.example", 5673, "user", "secret", "vh", 10)
    c = Connection("broker.example", userid="u", password="p", virtual_host="v", port=1234, heartbeat=0)
    assert (c.hostname, c.port, c.userid, c.password, c.virtual_host, c.heartbeat) == (
        "broker.example", 1234, "u", "p", "v", 0)
    assert Connection("amqps://h//").port == 5671 and Connection("amqps://h//").ssl
    assert Connection("h", ssl=True).port == 5671
    assert Connection("h:6000", ssl=True).port == 6000
    assert BrokerConnection is Connection
    with pytest.raises(ValueError):
        Connection("redis://localhost//")
    with pytest.raises(TypeError):
        Connection("amqp://h//", no_such_option=1)


def test_a_password_that_cannot_be_sent_is_refused_without_quoting_it() -> None:
    """A lone surrogate (from os.environ) raised UnicodeEncodeError, quoting the password,
    from the constructor's as_uri()."""
    with pytest.raises(ValueError, match="password is not valid Unicode text") as info:
        Connection("amqp://localhost//", password="caf\udce9-s3cret")
    assert "s3cret" not in repr(info.value) and info.value.__context__ is None


def test_as_uri_and_info_hide_the_password() -> None:
    c = Connection("amqp://user:s3cr3t@h:5672//")
    assert c.as_uri() == "amqp://user:**@h:5672//"
    assert c.as_uri(include_password=True) == "amqp://user:s3cr3t@h:5672//"
    assert Connection("amqp://u:p@h/my%2Fvhost").as_uri() == "amqp://u:**@h:5672/my%2Fvhost"
    info = c.info()
    assert "s3cr3t" not in repr(info) and "password" not in info
    assert (info["hostname"], info["userid"], info["virtual_host"], info["port"]) == ("h", "user", "/", 5672)
    assert "s3cr3t" not in repr(c)
    assert Connection("memory://").as_uri() == "memory://"


@pytest.mark.parametrize("hostname", ["user:s3cr3t@h", "user:s3cr3t@h:5672", "user:s3cr3t@[::1]:5672"])
def test_user_info_without_a_scheme_is_refused_without_showing_it(hostname: str) -> None:
    """``user:password@host`` without ``amqp://`` is not a host name: it once became one
    (its password then in ``repr``, ``as_uri``, ``info``, the connect warning and the
    error), or an ``int()`` error quoting the password as a port."""
    with pytest.raises(ValueError) as info:
        Connection(hostname)
    assert "s3cr3t" not in str(info.value) and "amqp://" in str(info.value)


def test_a_bad_port_in_a_bare_hostname_names_the_option() -> None:
    with pytest.raises(ValueError, match="port .* must be a number"):
        Connection("h:notaport")


def test_connect_timeout_default_does_not_override_the_urls() -> None:
    """Keyword arguments override the URL's parts -- those given, not a default: the
    URL's ``connection_timeout`` was silently replaced by connect_timeout's default 5."""
    assert Connection("amqp://h/?connection_timeout=20")._target.params.connection_timeout == 20
    assert Connection("amqp://h/?connection_timeout=20").connect_timeout == 20
    assert Connection("amqp://h/")._target.params.connection_timeout == 5  # kombu's default
    assert Connection("amqp://h/").connect_timeout == 5
    given = Connection("amqp://h/?connection_timeout=20", connect_timeout=3)
    assert given._target.params.connection_timeout == 3 and given.info()["connect_timeout"] == 3


def test_kombus_url_options_are_understood() -> None:
    """A kombu URL's query options (its Connection's keywords) were refused as unknown:
    a configuration URL could not move over as it is."""
    p = Connection("amqp://h//?ssl=true&connect_timeout=3&login_method=AMQPLAIN&insist=true")._target.params
    assert (p.ssl, p.port, p.connection_timeout, p.auth_mechanism) == (True, 5671, 3, "AMQPLAIN")
    assert Connection("amqp://h//?connect_timeout=3").connect_timeout == 3
    p = Connection("amqp://h:6000//?ssl=1&ssl_cert_reqs=CERT_NONE&ssl_ca_certs=/ca.pem")._target.params
    assert (p.ssl, p.port, p.verify, p.cacertfile) == (True, 6000, False, "/ca.pem")
    p = Connection("amqp://h//?ssl=false&ssl_cert_reqs=ssl.CERT_REQUIRED&ssl_certfile=c&ssl_keyfile=k")._target.params
    assert (p.ssl, p.port, p.verify, p.certfile, p.keyfile) == (False, 5672, True, "c", "k")
    assert Connection("amqps://h//?heartbeat=7&login_method=PLAIN")._target.params.heartbeat == 7
    with pytest.raises(URLError, match="ssl='maybe'"):
        Connection("amqp://h//?ssl=maybe")
    with pytest.raises(URLError, match="ssl_cert_reqs"):
        Connection("amqp://h//?ssl_cert_reqs=sometimes")
    with pytest.raises(URLError, match="unknown option 'no_such'"):
        Connection("amqp://h//?no_such=1")


def test_a_kombu_url_connects(amqp_url: str) -> None:
    url = amqp_url + ("&" if "?" in amqp_url else "?") + "login_method=AMQPLAIN&connect_timeout=3&insist=1"
    with Connection(url) as conn:
        conn.connect()
        assert conn.connected
        assert conn.connection.params.auth_mechanism == "AMQPLAIN"  # type: ignore[attr-defined]


def test_clone_is_a_new_unconnected_connection(hl_conn: Connection) -> None:
    hl_conn.connect()
    twin = hl_conn.clone()
    assert twin is not hl_conn and not twin.connected
    assert twin.info() == hl_conn.info()
    assert twin.as_uri(include_password=True) == hl_conn.as_uri(include_password=True)
    assert hl_conn.clone(virtual_host="other").virtual_host == "other"


def test_a_connection_pickles_as_an_unconnected_clone(amqp_url: str) -> None:
    # As kombu's does: for a multiprocessing or concurrent.futures worker (it raised
    # "cannot pickle '_thread.RLock' object", connected or not, memory:// too).
    conn = Connection(amqp_url, heartbeat=7, transport_options={"rpc_timeout": 9})
    conn.connect()
    twin = pickle.loads(pickle.dumps(conn))
    assert type(twin) is Connection and not twin.connected and conn.connected
    assert twin.info() == conn.info() and twin.transport_options == {"rpc_timeout": 9}
    assert twin.as_uri(include_password=True) == conn.as_uri(include_password=True)
    twin.default_channel.queue_declare("", exclusive=True)  # it connects on first use
    twin.release()
    conn.release()
    original = Connection("memory://", autorecover=True)
    memory = pickle.loads(pickle.dumps(original))
    assert memory.info() == original.info() and memory.autorecover


# ------------------------------------------------------------------------------ laziness


def test_a_failed_connect_is_raised_not_also_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The one URL's error was logged as a WARNING and then raised: reported twice.  A URL
    # that fails with others left to try is logged (what was skipped), the last one raised.
    port, other = closed_port(), closed_port()
    with caplog.at_level("DEBUG", logger="leveret"):
        with pytest.raises(OSError):
            Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=2).connect()
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        with pytest.raises(OSError):
            Connection(f"amqp://guest:guest@127.0.0.1:{port}//;amqp://guest:guest@127.0.0.1:{other}//",
                       connect_timeout=2).connect()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f":{port}" in warnings[0] and "trying the next URL" in warnings[0]


def test_nothing_is_connected_until_first_use() -> None:
    port = closed_port()
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=2)
    producer = conn.Producer()
    Queue("q")(conn)
    Exchange("e")(conn)
    assert not conn.connected  # nothing above touched the network
    with pytest.raises(ConnectionRefusedError):
        producer.publish(b"x")
    with pytest.raises(ConnectionRefusedError):
        conn.connect()
    with pytest.raises(ConnectionRefusedError):
        conn.drain_events(timeout=0.1)


@pytest.mark.parametrize("first_use", ["connect", "connection", "default_channel", "channel", "drain_events"])
def test_each_first_use_connects(hl_url: str, first_use: str) -> None:
    conn = Connection(hl_url)
    assert not conn.connected
    try:
        if first_use == "drain_events":
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.05)
        else:
            value = getattr(conn, first_use)
            if callable(value):
                value()
        assert conn.connected
    finally:
        conn.release()
    assert not conn.connected


def test_context_manager_releases(hl_url: str) -> None:
    with Connection(hl_url) as conn:
        conn.connect()
        transport = conn.connection
        assert conn.connected and transport.is_open
    assert not conn.connected and not transport.is_open
    conn.connect()  # usable again
    assert conn.connected
    conn.close()


def test_transport_selection(hl_conn: Connection, kind: str) -> None:
    transport = hl_conn.connection
    if kind == "amqp":
        assert isinstance(transport, ClientConnection)
    else:
        from leveret.highlevel.memory import MemoryConnection

        assert isinstance(transport, MemoryConnection)
    assert Connection("localhost", transport="memory").transport_cls == "memory"


# ------------------------------------------------------------------------------ channels


def test_channel_is_new_and_default_channel_is_shared_and_reopened(hl_conn: Connection) -> None:
    a, b = hl_conn.channel(), hl_conn.channel()
    assert a is not b and a.channel_id != b.channel_id
    d = hl_conn.default_channel
    assert hl_conn.default_channel is d
    with pytest.raises(NotFound):
        d.queue_declare(unique("missing"), passive=True)  # the broker closes that channel
    assert not d.is_open
    d2 = hl_conn.default_channel
    assert d2 is not d and d2.is_open
    d2.queue_declare(unique(), exclusive=True)  # usable


def test_drain_events_timeout(hl_conn: Connection) -> None:
    hl_conn.connect()
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        hl_conn.drain_events(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 3


def test_drain_events_does_not_reconnect_a_lost_connection(node: PrivateNode) -> None:
    conn = Connection(node.url)
    try:
        q = Queue(unique(), exclusive=True)
        got: list[Any] = []
        consumer = Consumer(conn, q, on_message=got.append)
        consumer.consume()
        node.ctl("close_all_connections", "test")
        with pytest.raises(conn.connection_errors):
            conn.drain_events(timeout=10)
        assert not conn.connected
    finally:
        conn.release()


def test_error_tuples() -> None:
    c = Connection("memory://")
    assert issubclass(ConnectionRefusedError, c.connection_errors)
    assert issubclass(ConnectionRefusedError, c.recoverable_connection_errors)
    assert issubclass(socket.timeout, c.recoverable_connection_errors)
    assert issubclass(NotFound, c.channel_errors)
    assert not issubclass(NotFound, c.recoverable_channel_errors)


# ------------------------------------------------------------------------------ failover


def test_failover_to_the_second_url(amqp_url: str) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    conn = Connection(f"{dead};{amqp_url}")
    try:
        conn.connect()
        assert conn.connected
        assert conn.port == Connection(amqp_url).port
        assert len(conn.info()["alternates"]) == 2
        q = Queue(unique(), exclusive=True)(conn)
        q.declare()
    finally:
        conn.release()


def test_failover_list_and_shuffle(amqp_url: str) -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{closed_port()}//" for _ in range(3)]
    for strategy in ("round-robin", "shuffle"):
        conn = Connection([*dead, amqp_url], failover_strategy=strategy)
        try:
            conn.default_channel
            assert conn.connected and conn.port == Connection(amqp_url).port
        finally:
            conn.release()
    # A callable strategy orders the URLs (given as strings, kombu's ``alt``) itself: here
    # the live one first, so the dead ones are never tried.
    seen: list[list[str]] = []

    def live_first(urls: list[str]) -> list[str]:
        seen.append(urls)
        return urls[::-1]

    conn = Connection([*dead, amqp_url], failover_strategy=live_first)
    try:
        conn.connect()
        assert conn.connected and conn.port == Connection(amqp_url).port and seen == [[*dead, amqp_url]]
    finally:
        conn.release()


def test_failover_strategy_endless_iterator(amqp_url: str) -> None:
    # kombu's contract: the strategy gets the URL strings and returns an iterator, which may
    # be endless (kombu's own round-robin is itertools.cycle); it is kept between attempts.
    dead = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    calls: list[list[str]] = []

    def strategy(urls: list[str]) -> Any:
        calls.append(urls)
        return itertools.cycle(urls)

    conn = Connection(f"{dead};{amqp_url}", failover_strategy=strategy)
    try:
        conn.ensure_connection(max_retries=3, interval_start=0.1, interval_step=0.1)
        assert conn.connected and conn.port == Connection(amqp_url).port
        assert calls == [[dead, amqp_url]]
    finally:
        conn.release()
    # Every URL down: each attempt takes one URL per URL from the same iterator.
    urls = [f"amqp://guest:guest@127.0.0.1:{closed_port()}//" for _ in range(2)]
    tried: list[str] = []

    def recording(urls: list[str]) -> Any:
        calls.append(urls)
        for url in itertools.cycle(urls):
            tried.append(url)
            yield url

    calls.clear()
    conn = Connection(urls, failover_strategy=recording)
    with pytest.raises(OperationalError):
        conn.ensure_connection(max_retries=2, interval_start=0.01, interval_step=0)
    assert len(calls) == 1 and tried == urls * 3
    # A strategy naming a URL the connection does not have is an error, not a hang.
    conn = Connection(urls, failover_strategy=lambda alts: iter(["amqp://elsewhere//"]))
    with pytest.raises(ValueError, match="elsewhere"):
        conn.connect()
    with pytest.raises(ValueError, match="failover_strategy"):
        Connection(amqp_url, failover_strategy="random-walk")


def test_every_url_down_raises_the_connection_error() -> None:
    urls = [f"amqp://guest:guest@127.0.0.1:{closed_port()}//" for _ in range(2)]
    with pytest.raises(ConnectionRefusedError):
        Connection(urls).connect()


def test_ensure_connection_retries_then_gives_up() -> None:
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{closed_port()}//")
    errors: list[tuple[BaseException, float]] = []
    start = time.monotonic()
    with pytest.raises(OperationalError) as info:
        conn.ensure_connection(errback=lambda e, i: errors.append((e, i)), max_retries=2,
                               interval_start=0.1, interval_step=0.1)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert [round(i, 1) for _, i in errors] == [0.1, 0.2]
    assert time.monotonic() - start >= 0.3
    with pytest.raises(ConnectionRefusedError):
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)


def test_ensure_connection_connects(hl_url: str) -> None:
    conn = Connection(hl_url)
    try:
        assert conn.ensure_connection(max_retries=1) is conn
        assert conn.connected
    finally:
        conn.release()


def test_wrong_password_is_not_retried(amqp_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(amqp_url)
    conn = Connection(f"amqp://guest:wrong@{parts.hostname}:{parts.port}//")
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        conn.ensure_connection(max_retries=5, interval_start=1)
    assert time.monotonic() - start < 5  # not retried: five retries would take 15 s


# ------------------------------------------------------------------------------ ensure


def test_ensure_retries_across_a_broker_closed_connection(node: PrivateNode) -> None:
    conn = Connection(node.url)
    try:
        q = Queue(unique(), durable=False)
        producer = Producer(conn.channel(), routing_key=q.name)
        producer.publish("first", declare=[q])
        first_transport = conn.connection
        revived: list[Any] = []
        errors: list[BaseException] = []
        publish = conn.ensure(producer, producer.publish, errback=lambda e, i: errors.append(e),
                              max_retries=3, on_revive=revived.append)
        node.ctl("close_all_connections", "test")
        wait_until_dead(conn)
        publish("second")
        assert conn.connected and conn.connection is not first_transport
        assert len(errors) == 1 and len(revived) == 1
        assert producer.channel is revived[0]
        assert ready(conn, q.name) == 2
        q(conn).delete()
    finally:
        conn.release()


def test_producer_on_a_connection_moves_to_the_reconnected_default_channel(node: PrivateNode) -> None:
    conn = Connection(node.url)
    try:
        q = Queue(unique(), durable=False)
        producer = conn.Producer(routing_key=q.name)
        producer.publish("first", declare=[q])
        node.ctl("close_all_connections", "test")
        wait_until_dead(conn)
        producer.publish("second", declare=[q])  # a new connection, a new default channel
        assert ready(conn, q.name) == 2
        q(conn).delete()
    finally:
        conn.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.parametrize("autorecover", [False, True])
def test_a_forked_child_starts_afresh_and_leaves_the_parent_alone(amqp_url: str, autorecover: bool) -> None:
    """In a forked child a Connection forgets the parent's transport, channels and records
    by itself (even while a thread of the parent held its lock at the fork, as a thread in
    the middle of a call does): the parent's producer publishes there through a connection
    of the child's own, and the parent's connection and producer carry on untouched."""
    conn = Connection(amqp_url, autorecover=autorecover)
    q = Queue(unique(), durable=False)
    try:
        producer = conn.Producer(routing_key=q.name)
        producer.publish(b"before", declare=[q])
        parent_transport = conn.connection
        # Made on the parent's channels: in the child they fail, saying why (with
        # autorecover they said "the connection was released" and "channel 1 was closed").
        on_channel = Producer(conn.default_channel, routing_key=q.name)
        simple = conn.SimpleQueue(unique("forked"), queue_opts={"durable": False, "auto_delete": True})
        held, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with conn._lock:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold_the_lock, daemon=True)
        holder.start()
        assert held.wait(5)

        def child() -> str:
            assert not conn.connected and not parent_transport.is_open
            assert not conn.topology.queues and not conn.topology.channels
            for call in (lambda: on_channel.publish(b"x"), lambda: simple.get(timeout=1),
                         lambda: simple.put(b"x")):
                with pytest.raises((ConnectionError, ChannelClosedError), match="before fork"):
                    call()
            producer.publish(b"from the child")  # confirmed, through the child's own connection
            assert conn.connection is not parent_transport
            conn.release()
            return "ok"

        try:
            report = in_forked_child(child, timeout=60)
        finally:
            release.set()
            holder.join(timeout=5)
        assert report == "ok"
        time.sleep(0.2)  # long enough for a close or a FIN from the child to have reached the broker
        assert conn.connection is parent_transport and parent_transport.is_open
        producer.publish(b"after")
        bound = q(conn.default_channel)
        bodies = []
        for _ in range(3):
            msg = bound.get(no_ack=True)
            assert msg is not None
            bodies.append(msg.body)
        assert bodies == [b"before", b"from the child", b"after"]
        bound.delete()
        simple.close()
    finally:
        conn.release()


def test_ensure_on_memory_connection_loss() -> None:
    from leveret.highlevel.memory import MemoryBroker

    conn = Connection("memory://", transport_options={"broker": MemoryBroker()})
    try:
        q = Queue(unique(), durable=False)
        producer = conn.Producer(routing_key=q.name)
        producer.publish("first", declare=[q])
        lose_memory_connection(conn)
        conn.ensure(producer, producer.publish, max_retries=2)("second")
        assert ready(conn, q.name) == 2
    finally:
        conn.release()


def test_ensure_gives_up_after_max_retries(node: PrivateNode) -> None:
    conn = Connection(node.url)
    calls: list[int] = []

    def always_lost() -> None:
        calls.append(1)
        raise ConnectionResetError("lost again")

    try:
        with pytest.raises(ConnectionResetError):
            conn.ensure(None, always_lost, max_retries=2, interval_start=0.01)()
        assert len(calls) == 3
    finally:
        conn.release()


def test_ensure_does_not_retry_channel_refusals(hl_conn: Connection) -> None:
    calls: list[int] = []

    def declare_missing() -> None:
        calls.append(1)
        Queue(unique("missing"))(hl_conn).queue_declare(passive=True)

    with pytest.raises(NotFound):
        hl_conn.ensure(None, declare_missing, max_retries=3)()
    assert len(calls) == 1


def test_autoretry_passes_a_fresh_channel(hl_conn: Connection) -> None:
    seen: list[Any] = []

    def declare(name: str, channel: Any) -> Any:
        seen.append(channel)
        return channel.queue_declare(name, exclusive=True)

    # kombu's contract: the result and the channel it was obtained on.
    ok, channel = hl_conn.autoretry(declare)(unique())
    assert ok.message_count == 0 and seen[0].is_open and channel is seen[0]
    own = hl_conn.channel()
    ok, channel = hl_conn.autoretry(declare, own)(unique())
    assert ok.message_count == 0 and channel is own is seen[1]


# ------------------------------------------------------------------------------ shortcuts, pools


def test_shortcuts(hl_conn: Connection) -> None:
    name = unique("simple")
    q = Queue(unique(), exclusive=True)
    got: list[Any] = []
    consumer = hl_conn.Consumer([q], callbacks=[ack_into(got)])
    assert isinstance(consumer, Consumer)
    producer = hl_conn.Producer(routing_key=q.name)
    assert isinstance(producer, Producer)
    with consumer:
        producer.publish({"via": "shortcut"})
        hl_conn.drain_events(timeout=5)
    assert got == [{"via": "shortcut"}]
    with hl_conn.SimpleQueue(name) as sq:
        assert isinstance(sq, SimpleQueue)
        sq.put("hello")
        assert sq.get(timeout=5).payload == "hello"
        sq.queue.delete()
    with hl_conn.SimpleBuffer(unique("buffer")) as sb:
        sb.put("transient")
        assert sb.get(timeout=5).payload == "transient"


def test_minimal_pools(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=2)
    a = pool.acquire()
    b = pool.acquire()
    with pytest.raises(LimitExceeded):
        pool.acquire()
    assert a is not b and isinstance(a, Connection)
    a.release()
    again = pool.acquire()
    assert again is a
    with again:  # leaving the block gives it back
        again.default_channel
    assert pool.acquire() is a
    pool.force_close_all()
    assert not a.connected
    channels = hl_conn.ChannelPool(limit=1)
    ch = channels.acquire()
    assert ch.is_open
    with pytest.raises(LimitExceeded):
        channels.acquire()
    ch.release()
    assert channels.acquire() is ch


def test_retry_policy_in_transport_options_applies_to_first_use() -> None:
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
                      transport_options={"max_retries": 1, "interval_start": 0.05})
    with pytest.raises(OperationalError):
        conn.default_channel


@pytest.mark.broker
@pytest.mark.parametrize("autorecover", [False, True])
@pytest.mark.parametrize("use", ["default_channel", "channel", "producer"])
def test_a_connection_dropped_without_release_is_collected_with_its_socket(
    node: PrivateNode, autorecover: bool, use: str
) -> None:
    # The registry of which Connection opened which channel held the Connection strongly,
    # and the Connection its default channel, the registry's key: dropped without
    # release(), it lived on with its socket, its I/O thread and its broker connection.
    # (kombu's is collected; so is the client layer's.)
    import gc
    import weakref

    from leveret.highlevel import connection as hl

    name = unique("dropped")
    conn = Connection(node.url, autorecover=autorecover,
                      transport_options={"client_properties": {"connection_name": name}})
    if use == "default_channel":
        conn.default_channel.queue_declare("", exclusive=True)
    elif use == "channel":
        conn.channel().queue_declare("", exclusive=True)
    else:
        conn.Producer().publish({"x": 1}, routing_key=unique("nowhere"))
    transport = conn.connection
    assert isinstance(transport, ClientConnection)
    io_thread = transport._io_thread
    assert io_thread is not None and io_thread.is_alive()

    def listed() -> bool:
        return any(name in field for row in node.list_connections("client_properties") for field in row)

    assert listed()
    owned = len(hl._owners)
    ref = weakref.ref(conn)
    del conn, transport
    gc.collect()
    assert ref() is None, "the high-level connection is kept alive"
    assert len(hl._owners) < owned
    deadline = time.monotonic() + 10
    while io_thread.is_alive() or listed():
        assert time.monotonic() < deadline, "the transport connection lives on"
        time.sleep(0.1)
