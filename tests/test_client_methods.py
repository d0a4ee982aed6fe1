"""Every method of the client, proved against a real RabbitMQ in AMQP 0-9-1 and 0-8, through
both drivers.

Each test asserts what the broker did -- ``rabbitmqctl list_*`` on the private node, or what a
second connection sees -- not what leveret says it did.  The ``conn`` fixture runs each test
with both drivers (``driver``: the blocking one, and the asyncio one behind the synchronous
facade of tests/drivers.py; ``peer``, the observer, is always blocking) and in both protocol
versions; methods RabbitMQ only offers in 0-9-1 (exchange.bind/unbind,
queue.unbind, basic.nack, basic.recover-async, confirm.select, connection.update-secret) are
tested in 0-9-1 and, in 0-8, must be refused locally with nothing sent.

The tests talk to the shared private node (``node.url``) rather than ``amqp_url`` because they
read the broker's state with ``node.ctl``; rabbitmqctl costs about a second per call, so the
tests use it only where no AMQP observation would do.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from broker import PrivateNode
from drivers import NewConnection, blocking_only
from helpers import in_threads, unique, with_options, with_vhost
from test_typing import mypy
from leveret.client import (
    AccessRefused,
    AuthenticationError,
    Channel,
    ChannelClosedError,
    Connection,
    ConnectionClosedError,
    Message,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
    URLError,
)
from leveret.wire.errors import EncodeError, FrameError, FrameTooLarge, HardError, LocalProtocolError, SoftError

PROTOCOLS = ["0-9-1", "0-8"]


# --------------------------------------------------------------------------- helpers


def ctl_json(node: PrivateNode, command: str, *columns: str) -> list[dict[str, Any]]:
    """``rabbitmqctl COMMAND --formatter json COLUMNS...`` as a list of dicts."""
    return json.loads(node.ctl(command, "--formatter", "json", *columns))  # type: ignore[no-any-return]


def queue_depth(conn: Connection, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue`` as the broker reports them (passive declare)."""
    with conn.channel() as ch:
        ok = ch.queue_declare(queue, passive=True)
        assert ok is not None
        return ok.message_count, ok.consumer_count


def assert_queue_gone(conn: Connection, queue: str, timeout: float = 5.0) -> None:
    """The broker says ``queue`` does not exist (404), within ``timeout`` seconds: RabbitMQ
    deletes exclusive and auto-delete queues just after the close or cancel that ends them."""
    deadline = time.monotonic() + timeout
    while True:
        ch = conn.channel()
        try:
            ch.queue_declare(queue, passive=True)
        except NotFound as exc:
            assert exc.reply_code == 404
            assert not ch.is_open
            return
        except ResourceLocked:  # still there, and still exclusive to its owner
            pass
        else:
            ch.close()
        assert time.monotonic() < deadline, f"queue {queue} still exists"
        time.sleep(0.02)


def assert_exchange_gone(conn: Connection, exchange: str) -> None:
    ch = conn.channel()
    with pytest.raises(NotFound):
        ch.exchange_declare(exchange, passive=True)
    assert not ch.is_open


def wait_for_depth(conn: Connection, queue: str, expected: tuple[int, int], timeout: float = 5.0) -> None:
    """Wait until the broker reports ``expected`` (ready messages, consumers) for ``queue``.

    A passive declare's counts may overtake publishes still on their way into the queue
    (RabbitMQ serves it ahead of them), so counts after a publish are polled.
    """
    deadline = time.monotonic() + timeout
    while (depth := queue_depth(conn, queue)) != expected:
        assert time.monotonic() < deadline, f"{queue}: {depth} != {expected}"
        time.sleep(0.02)


def drain_until(conn: Connection, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Run ``conn.drain_events`` until ``done()`` (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "timed out waiting for deliveries"
        conn.drain_events(timeout=remaining)


def assert_nothing_delivered(conn: Connection, wait: float = 0.3) -> None:
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=wait)


def get_bodies(ch: Channel, queue: str) -> list[bytes]:
    """Every message left in ``queue``, taken with basic.get (auto-ack)."""
    bodies = []
    while (msg := ch.basic_get(queue, no_ack=True)) is not None:
        bodies.append(bytes(msg.body))
    return bodies


def assert_still_usable(conn: Connection) -> None:
    """The connection can still open a channel and do a round trip on it."""
    assert conn.is_open
    with conn.channel() as ch:
        ok = ch.queue_declare("", exclusive=True)
        assert ok is not None and ok.queue.startswith("amq.gen-")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(node: PrivateNode, protocol: str) -> str:
    return with_options(node.url, protocol=protocol)


@pytest.fixture
def conn(new_connection: NewConnection, url: str) -> Iterator[Connection]:
    connection = new_connection(url, rpc_timeout=10).connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def ch(conn: Connection) -> Channel:
    return conn.channel()


@pytest.fixture
def peer(node: PrivateNode) -> Iterator[Connection]:
    """A second, 0-9-1 connection that looks at what the first one did."""
    connection = Connection(node.url, rpc_timeout=10).connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def queue(ch: Channel) -> str:
    """A fresh exclusive queue of ``conn``'s."""
    ok = ch.queue_declare(unique("q"), exclusive=True)
    assert ok is not None
    return ok.queue


#: For methods RabbitMQ offers in 0-9-1 only (0-8 is covered by
#: test_0_8_refuses_0_9_1_methods_locally): overrides the ``protocol`` fixture's parameters.
only_0_9_1 = pytest.mark.parametrize("protocol", ["0-9-1"])
only_0_8 = pytest.mark.parametrize("protocol", ["0-8"])


# --------------------------------------------------------------------------- connection


def test_connect_and_close_as_the_broker_sees_them(new_connection: NewConnection, url: str, peer: Connection) -> None:
    conn = new_connection(url)
    assert not conn.is_open
    assert conn.connect() is conn
    assert conn.is_open
    ch = conn.channel()
    q = unique("owned")
    ch.queue_declare(q, exclusive=True)
    with pytest.raises(ResourceLocked):  # it exists, and belongs to conn
        queue_depth(peer, q)
    conn.close()
    assert not conn.is_open
    # The broker dropped the connection: its exclusive queue went with it.
    assert_queue_gone(peer, q)
    conn.close()  # a second close does nothing
    with pytest.raises(ConnectionClosedError):
        conn.channel()
    # The same object connects again, with a fresh channel numbering.
    conn.connect()
    try:
        assert conn.is_open
        assert conn.channel().channel_id == 1
    finally:
        conn.close()


def test_connection_and_channel_context_managers(new_connection: NewConnection, url: str, peer: Connection) -> None:
    q = unique("cm")
    with new_connection(url) as conn:
        assert conn.is_open
        with conn.channel() as ch:
            assert ch.is_open and ch.channel_id == 1
            ch.queue_declare(q, exclusive=True)
        assert not ch.is_open
        with pytest.raises(ChannelClosedError):
            ch.queue_declare(q, passive=True)
        # Channel 1 was closed on both sides: the broker accepts it being opened again.
        with conn.channel() as again:
            assert again.channel_id == 1
            assert again.queue_declare(q, passive=True) == (q, 0, 0)
    assert not conn.is_open
    assert_queue_gone(peer, q)


def test_context_manager_closes_connection_on_error(new_connection: NewConnection, url: str, peer: Connection) -> None:
    q = unique("cm-error")
    with pytest.raises(RuntimeError):
        with new_connection(url) as conn:
            conn.channel().queue_declare(q, exclusive=True)
            raise RuntimeError("user code failed")
    assert not conn.is_open
    assert_queue_gone(peer, q)


def test_server_properties(conn: Connection, protocol: str) -> None:
    props = conn.server_properties
    assert props["product"] == "RabbitMQ"
    assert props["version"].startswith("3.")
    capabilities = props.get("capabilities", {})
    if protocol == "0-9-1":
        for name in (
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
        ):
            assert capabilities.get(name) is True, name
    else:
        # RabbitMQ announces capabilities to 0-9-1 clients only.
        assert not capabilities


def test_negotiated_tuning(new_connection: NewConnection, node: PrivateNode, protocol: str) -> None:
    name = unique("tuning")
    url = with_options(node.url, protocol=protocol, frame_max=4096, channel_max=10, heartbeat=7)
    with new_connection(url, client_properties={"connection_name": name}) as conn:
        assert (conn.frame_max, conn.channel_max, conn.heartbeat) == (4096, 10, 7)
        assert conn.protocol == protocol
        rows = [
            row
            for row in ctl_json(
                node, "list_connections", "protocol", "frame_max", "channel_max", "timeout",
                "client_properties",
            )
            if ["connection_name", "longstr", name] in row["client_properties"]
        ]
        assert len(rows) == 1
        row = rows[0]
        assert row["protocol"] == ([0, 9, 1] if protocol == "0-9-1" else [0, 8, 0])
        assert (row["frame_max"], row["channel_max"], row["timeout"]) == (4096, 10, 7)
    # Without options, the broker's own limits (RabbitMQ's defaults) win.
    with new_connection(with_options(node.url, protocol=protocol)) as conn:
        assert (conn.frame_max, conn.channel_max, conn.heartbeat) == (131072, 2047, 60)
    # heartbeat=0 means "no preference", as in RabbitMQ's Java/.NET/Erlang clients: the
    # broker's non-zero value wins.
    with new_connection(with_options(node.url, protocol=protocol, heartbeat=0)) as conn:
        assert conn.heartbeat == 60


def test_channel_max_and_channel_id_reuse(new_connection: NewConnection, node: PrivateNode, protocol: str) -> None:
    url = with_options(node.url, protocol=protocol, channel_max=10)
    with new_connection(url) as conn:
        channels = [conn.channel() for _ in range(10)]
        assert [c.channel_id for c in channels] == list(range(1, 11))
        with pytest.raises(LocalProtocolError):
            conn.channel()
        with pytest.raises(LocalProtocolError):
            conn.channel(channel_id=11)  # above channel_max
        with pytest.raises(LocalProtocolError):
            conn.channel(channel_id=5)  # in use
        # Nothing was sent: every channel still works.
        for c in channels:
            c.basic_qos(prefetch_count=1)

        # Path 1: closed by us.
        channels[3].close()
        reused = conn.channel()
        assert reused.channel_id == 4
        reused.queue_declare("", exclusive=True)

        # Path 2: closed by the broker (a soft error).
        with pytest.raises(NotFound):
            channels[6].queue_declare(unique("missing"), passive=True)
        assert not channels[6].is_open
        reused = conn.channel()
        assert reused.channel_id == 7
        reused.queue_declare("", exclusive=True)

        # Path 3: the channel context manager.
        channels[9].close()
        with conn.channel() as last:
            assert last.channel_id == 10
        with conn.channel(channel_id=10) as again:
            again.queue_declare("", exclusive=True)

        # Every id is taken again: the 11th is still refused.
        assert conn.channel().channel_id == 10
        with pytest.raises(LocalProtocolError):
            conn.channel()
        # Several free ids: the lowest comes first.
        channels[8].close()
        channels[2].close()
        assert [conn.channel().channel_id, conn.channel().channel_id] == [3, 9]
        assert conn.is_open

    # Path 5: the connection closed and reconnected: numbering starts again.
    conn.connect()
    try:
        assert conn.channel().channel_id == 1
    finally:
        conn.close()


def test_a_server_that_does_not_speak_amqp_is_a_clear_error(new_connection: NewConnection) -> None:
    # An HTTP server on the port: the client used to read its answer as a frame header
    # (FrameTooLarge: a frame of 1345270070 bytes on channel 21588).
    answer = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n\r\n<html></html>"
    listener = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(10)
            heard.append(sock.recv(8))
            sock.sendall(answer)
            try:
                while sock.recv(4096):  # until the client hangs up
                    pass
            except OSError:
                pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        port = listener.getsockname()[1]
        conn = new_connection(f"amqp://guest:guest@127.0.0.1:{port}/", connection_timeout=5)
        with pytest.raises(FrameError) as info:
            conn.connect()
        assert not isinstance(info.value, FrameTooLarge)
        assert str(info.value) == (
            "the server does not speak AMQP: it answered the protocol header with "
            + repr(answer[:40]) + "... (is this the port of an AMQP broker?)"
        )
        assert not conn.is_open
        conn.close()
        server.join(10)
        assert heard == [b"AMQP\x00\x00\x09\x01"]
    finally:
        listener.close()


# --------------------------------------------------------------------------- exchanges


def test_exchange_declare_types_and_flags(conn: Connection, ch: Channel, node: PrivateNode) -> None:
    base = unique("x")
    wanted = {
        f"{base}-direct": ("direct", False, False, False),
        f"{base}-fanout": ("fanout", False, False, False),
        f"{base}-topic": ("topic", False, False, False),
        f"{base}-headers": ("headers", False, False, False),
        f"{base}-durable": ("topic", True, False, False),
        f"{base}-autodelete": ("fanout", False, True, False),
        f"{base}-internal": ("direct", False, False, True),
    }
    try:
        for name, (kind, durable, auto_delete, internal) in wanted.items():
            ch.exchange_declare(name, kind, durable=durable, auto_delete=auto_delete, internal=internal)
        # Redeclaring with the same attributes is fine; passive of an existing one too.
        ch.exchange_declare(f"{base}-durable", "topic", durable=True)
        ch.exchange_declare(f"{base}-durable", passive=True)
        seen = {
            row["name"]: (row["type"], row["durable"], row["auto_delete"], row["internal"])
            for row in ctl_json(node, "list_exchanges", "name", "type", "durable", "auto_delete", "internal")
            if row["name"].startswith(base)
        }
        assert seen == wanted
    finally:
        with conn.channel() as cleanup:
            for name in wanted:
                cleanup.exchange_delete(name)


def test_exchange_declare_with_other_type_fails(conn: Connection, ch: Channel) -> None:
    name = unique("x-type")
    ch.exchange_declare(name, "fanout", auto_delete=False)
    with pytest.raises(PreconditionFailed) as info:
        ch.exchange_declare(name, "topic")
    assert info.value.reply_code == 406
    assert not ch.is_open
    with conn.channel() as other:
        other.exchange_delete(name)
    assert_exchange_gone(conn, name)


def test_exchange_auto_delete_goes_with_its_last_binding(conn: Connection, ch: Channel, peer: Connection) -> None:
    x, q = unique("x-auto"), unique("q-auto")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_declare(q, auto_delete=False)
    ch.queue_bind(q, x)
    ch.exchange_declare(x, passive=True)
    ch.queue_delete(q)  # removes the only binding
    assert_exchange_gone(peer, x)


def test_internal_exchange_refuses_publishes(conn: Connection, ch: Channel) -> None:
    x = unique("x-internal")
    ch.exchange_declare(x, "fanout", internal=True)
    try:
        ch.basic_publish(b"nope", exchange=x)
        with pytest.raises(AccessRefused) as info:
            ch.queue_declare("", exclusive=True)  # the broker's 403 closes the channel
        assert info.value.reply_code == 403
        assert_still_usable(conn)
    finally:
        with conn.channel() as other:
            other.exchange_delete(x)


def test_passive_declare_of_missing_exchange(conn: Connection, ch: Channel) -> None:
    name = unique("missing")
    with pytest.raises(NotFound) as info:
        ch.exchange_declare(name, passive=True)
    err = info.value
    assert err.reply_code == 404 and isinstance(err, SoftError)
    assert name in str(err)
    assert not ch.is_open
    assert conn.is_open
    fresh = conn.channel()
    fresh.exchange_declare(name, "direct", auto_delete=True)
    fresh.exchange_declare(name, passive=True)
    fresh.exchange_delete(name)


def test_call_on_channel_closed_by_broker_raises_channel_closed(conn: Connection, ch: Channel) -> None:
    with pytest.raises(NotFound) as info:
        ch.exchange_declare(unique("missing"), passive=True)
    with pytest.raises(ChannelClosedError) as later:
        ch.queue_declare("", exclusive=True)
    assert later.value.__cause__ is info.value


def test_exchange_delete_if_unused(conn: Connection, ch: Channel, queue: str) -> None:
    x = unique("x-del")
    ch.exchange_declare(x, "direct")
    ch.queue_bind(queue, x, "k")
    with pytest.raises(PreconditionFailed) as info:
        ch.exchange_delete(x, if_unused=True)
    assert info.value.reply_code == 406
    ch2 = conn.channel()
    ch2.exchange_declare(x, passive=True)  # still there
    ch2.queue_delete(queue)
    ch2.exchange_delete(x, if_unused=True)
    assert_exchange_gone(conn, x)


@only_0_9_1
def test_exchange_bind_and_unbind(conn: Connection, ch: Channel, protocol: str, node: PrivateNode) -> None:
    src, dst = unique("x-src"), unique("x-dst")
    ch.exchange_declare(src, "direct")
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).queue
    ch.queue_bind(q, dst)
    ch.exchange_bind(dst, src, "route")
    rows = [
        (r["source_name"], r["destination_name"], r["destination_kind"], r["routing_key"])
        for r in ctl_json(node, "list_bindings", "source_name", "destination_name", "destination_kind", "routing_key")
        if r["source_name"] == src
    ]
    assert rows == [(src, dst, "exchange", "route")]
    ch.basic_publish(b"through e2e", exchange=src, routing_key="route")
    ch.basic_publish(b"wrong key", exchange=src, routing_key="other")
    assert get_bodies(ch, q) == [b"through e2e"]
    ch.exchange_unbind(dst, src, "route")
    ch.basic_publish(b"after unbind", exchange=src, routing_key="route")
    ch.basic_publish(b"direct to dst", exchange=dst)
    assert get_bodies(ch, q) == [b"direct to dst"]
    ch.exchange_delete(src, if_unused=True)  # unused now: the binding is gone
    assert_exchange_gone(conn, src)


@only_0_8
def test_0_8_refuses_0_9_1_methods_locally(conn: Connection, ch: Channel, queue: str) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: ch.exchange_bind("amq.fanout", "amq.direct", "k"),
        lambda: ch.exchange_unbind("amq.fanout", "amq.direct", "k"),
        lambda: ch.queue_unbind(queue, "amq.direct", "k"),
        lambda: ch.basic_nack(1),
        lambda: ch.basic_recover_async(requeue=True),
        lambda: ch.confirm_select(),
        lambda: conn.update_secret("guest", "refresh"),
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()
        assert not conn.core.wants_write  # nothing queued for the broker
    # Had anything reached the broker (an unknown method, a nack of a tag never delivered),
    # it would have closed the channel or the connection: the channel still does round trips
    # and is not in confirm mode.
    assert ch.is_open
    assert ch.basic_publish(b"still plain", routing_key=queue) is None
    assert get_bodies(ch, queue) == [b"still plain"]
    assert_still_usable(conn)


# --------------------------------------------------------------------------- queues


def test_queue_declare_server_named(conn: Connection, ch: Channel, peer: Connection) -> None:
    ok = ch.queue_declare("", exclusive=True)
    assert ok is not None
    assert ok.queue.startswith("amq.gen-")
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    ch.basic_publish(b"x", routing_key=ok.queue)
    assert get_bodies(ch, ok.queue) == [b"x"]
    with pytest.raises(ResourceLocked):  # exclusive: another connection may not use it
        queue_depth(peer, ok.queue)


def test_queue_declare_flags_and_arguments(conn: Connection, ch: Channel, node: PrivateNode) -> None:
    base = unique("q")
    durable, auto, exclusive, args = f"{base}-durable", f"{base}-auto", f"{base}-excl", f"{base}-args"
    try:
        ch.queue_declare(durable, durable=True)
        ch.queue_declare(auto, auto_delete=True)
        ch.queue_declare(exclusive, exclusive=True)
        ch.queue_declare(args, arguments={"x-message-ttl": 60000, "x-max-length": 2})
        rows = {
            r["name"]: (r["durable"], r["auto_delete"], r["exclusive"], sorted(map(tuple, r["arguments"])))
            for r in ctl_json(node, "list_queues", "name", "durable", "auto_delete", "exclusive", "arguments")
            if r["name"].startswith(base)
        }
        assert rows == {
            durable: (True, False, False, []),
            auto: (False, True, False, []),
            exclusive: (False, False, True, []),
            args: (False, False, False, [("x-max-length", "signedint", 2), ("x-message-ttl", "signedint", 60000)]),
        }
        # x-max-length=2 by behaviour: the oldest is dropped.
        for body in (b"1", b"2", b"3"):
            ch.basic_publish(body, routing_key=args)
        assert get_bodies(ch, args) == [b"2", b"3"]
    finally:
        with conn.channel() as cleanup:
            for q in (durable, auto, args):
                cleanup.queue_delete(q)


def test_queue_message_ttl_by_behaviour(ch: Channel) -> None:
    q = ch.queue_declare(unique("ttl"), exclusive=True, arguments={"x-message-ttl": 0}).queue
    ch.basic_publish(b"expires at once", routing_key=q)
    assert ch.basic_get(q) is None
    keep = ch.queue_declare(unique("ttl"), exclusive=True, arguments={"x-message-ttl": 60000}).queue
    ch.basic_publish(b"kept", routing_key=keep)
    assert get_bodies(ch, keep) == [b"kept"]


def test_queue_redeclare_with_other_arguments(conn: Connection, ch: Channel, queue: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        ch.queue_declare(queue, exclusive=True, arguments={"x-max-length": 5})
    assert info.value.reply_code == 406
    assert "x-max-length" in str(info.value)
    assert not ch.is_open
    # The queue is unchanged and the connection usable.
    with conn.channel() as other:
        assert other.queue_declare(queue, exclusive=True) == (queue, 0, 0)


def test_auto_delete_queue_goes_with_its_last_consumer(conn: Connection, ch: Channel, peer: Connection) -> None:
    q = unique("q-auto")
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, callback=lambda m: None)
    assert queue_depth(peer, q) == (0, 1)
    ch.basic_cancel(tag)
    assert_queue_gone(peer, q)


def test_exclusive_queue_from_another_connection(
    new_connection: NewConnection, conn: Connection, ch: Channel, queue: str, url: str
) -> None:
    with new_connection(url) as other:
        calls: list[Callable[[Any], object]] = [
            lambda c: c.queue_declare(queue, passive=True),
            lambda c: c.basic_get(queue),
            lambda c: c.basic_consume(queue, callback=lambda m: None),
            lambda c: c.queue_delete(queue),
        ]
        for call in calls:
            c = other.channel()
            with pytest.raises(ResourceLocked) as info:
                call(c)
            assert info.value.reply_code == 405
            assert not c.is_open
        assert_still_usable(other)
    # The owner is not affected.
    assert ch.queue_declare(queue, passive=True) == (queue, 0, 0)


def test_queue_bind_and_unbind(conn: Connection, ch: Channel, queue: str, protocol: str, node: PrivateNode) -> None:
    x = unique("x-bind")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_bind(queue, x, "a")
    ch.queue_bind(queue, x, "b")

    def bindings() -> list[str]:
        return sorted(
            r["routing_key"]
            for r in ctl_json(node, "list_bindings", "source_name", "destination_name", "routing_key")
            if r["source_name"] == x and r["destination_name"] == queue
        )

    assert bindings() == ["a", "b"]
    for key in ("a", "b", "c"):
        ch.basic_publish(key.encode(), exchange=x, routing_key=key)
    assert get_bodies(ch, queue) == [b"a", b"b"]
    if protocol == "0-9-1":
        ch.queue_unbind(queue, x, "a")
        assert bindings() == ["b"]
        for key in ("a", "b"):
            ch.basic_publish(key.encode(), exchange=x, routing_key=key)
        assert get_bodies(ch, queue) == [b"b"]


def test_queue_bind_topic_and_headers(ch: Channel, queue: str) -> None:
    ch.queue_bind(queue, "amq.topic", "stock.*.nyse")
    ch.queue_bind(queue, "amq.match", "", arguments={"x-match": "all", "kind": "report", "n": 3})
    ch.basic_publish(b"topic hit", exchange="amq.topic", routing_key="stock.ibm.nyse")
    ch.basic_publish(b"topic miss", exchange="amq.topic", routing_key="stock.ibm.lse")
    ch.basic_publish(Message(b"headers hit", headers={"kind": "report", "n": 3}), exchange="amq.match")
    ch.basic_publish(Message(b"headers miss", headers={"kind": "report", "n": 4}), exchange="amq.match")
    assert get_bodies(ch, queue) == [b"topic hit", b"headers hit"]


def test_queue_purge(ch: Channel, queue: str) -> None:
    for i in range(3):
        ch.basic_publish(b"%d" % i, routing_key=queue)
    assert ch.queue_purge(queue) == 3
    assert ch.queue_declare(queue, passive=True) == (queue, 0, 0)
    assert ch.basic_get(queue) is None
    assert ch.queue_purge(queue) == 0


def test_queue_delete(conn: Connection, ch: Channel, peer: Connection) -> None:
    q = unique("q-del")
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish(b"%d" % i, routing_key=q)
    with pytest.raises(PreconditionFailed) as info:
        ch.queue_delete(q, if_empty=True)
    assert info.value.reply_code == 406
    assert queue_depth(peer, q) == (3, 0)
    ch2 = conn.channel()
    ch2.basic_consume(q, callback=lambda m: None)
    ch3 = conn.channel()
    with pytest.raises(PreconditionFailed):
        ch3.queue_delete(q, if_unused=True)
    ch2.close()  # its unacked deliveries go back to the queue
    ch4 = conn.channel()
    assert ch4.queue_delete(q) == 3
    assert_queue_gone(peer, q)


# --------------------------------------------------------------------------- basic


def test_basic_qos_limits_unacked_deliveries(conn: Connection, ch: Channel, queue: str) -> None:
    for i in range(5):
        ch.basic_publish(b"%d" % i, routing_key=queue)
    ch.basic_qos(prefetch_count=2)
    got: list[Message] = []
    ch.basic_consume(queue, callback=got.append)
    drain_until(conn, lambda: len(got) >= 2)
    assert_nothing_delivered(conn)
    assert [m.body for m in got] == [b"0", b"1"]
    got[0].ack()
    drain_until(conn, lambda: len(got) >= 3)
    assert_nothing_delivered(conn)
    assert len(got) == 3
    got[2].ack(multiple=True)
    drain_until(conn, lambda: len(got) >= 5)
    assert [m.body for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    got[4].ack(multiple=True)


BASIC_PROPERTIES: dict[str, Any] = {
    "content_type": "application/x-leveret",
    "content_encoding": "gzip",
    "headers": {
        "int": 7,
        "negative": -(2**31),
        "big": 2**40,
        "bool": True,
        "false": False,
        "bytes": b"\x00\xff raw",
        "float": 1.5,
        "text": "h\u00e9llo",
        "none": None,
        "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "nested": {"list": [1, "two", b"three", [4, {"five": 5}], False], "table": {"deep": {"x": 1}}},
        "empty": {},
        "empty_list": [],
    },
    "delivery_mode": 2,
    "priority": 7,
    "correlation_id": "corr-1",
    "reply_to": "reply-queue",
    "expiration": "60000",
    "message_id": "msg-1",
    "timestamp": datetime(2023, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
    "type": "test.type",
    "user_id": "guest",  # RabbitMQ insists that it names the authenticated user
    "app_id": "leveret-tests",
    "cluster_id": "cluster-1",
}


def test_basic_publish_and_get_round_trip_every_property(ch: Channel, queue: str) -> None:
    ch.basic_publish(Message(b"payload", **BASIC_PROPERTIES), routing_key=queue, mandatory=True)
    ch.basic_publish(Message("second, text"), routing_key=queue)
    msg = ch.basic_get(queue)
    assert msg is not None
    assert msg.body == b"payload"
    assert msg.properties == BASIC_PROPERTIES
    assert msg.headers["nested"]["list"][3][1] == {"five": 5}
    assert msg.delivery_mode == 2 and msg.priority == 7
    assert msg.delivery_info == {
        "delivery_tag": 1,
        "redelivered": False,
        "exchange": "",
        "routing_key": queue,
        "message_count": 1,
    }
    assert msg.redelivered is False and msg.delivery_tag == 1
    msg.ack()
    text = ch.basic_get(queue, no_ack=True)
    assert text is not None
    assert text.body == "second, text".encode()
    assert text.properties == {"content_encoding": "utf-8"}
    assert text.delivery_info["message_count"] == 0
    assert ch.basic_get(queue) is None
    assert ch.queue_declare(queue, passive=True) == (queue, 0, 0)


def test_repeated_property_sets_arrive_unchanged(ch: Channel, queue: str) -> None:
    """Property sets a publisher repeats are encoded once per channel: every copy, and the
    sets that are never cached (headers, per-message ids, timestamps), arrive as sent."""
    sets: list[dict[str, Any]] = [
        {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2},
        {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2},
        {"content_type": "text/plain", "priority": 3},
        {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 1},
        {"content_type": "application/json", "headers": {"k": "v"}},
        {"content_type": "application/json", "message_id": "m-1", "correlation_id": "c-1"},
        {"content_type": "application/json", "message_id": "m-2", "correlation_id": "c-2"},
        {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2},
    ]
    for i, props in enumerate(sets):
        ch.basic_publish(Message(b"%d" % i, **props), routing_key=queue)
    for i, props in enumerate(sets):
        msg = ch.basic_get(queue, no_ack=True)
        assert msg is not None and msg.body == b"%d" % i
        assert msg.properties == props
    with pytest.raises(EncodeError):
        ch.basic_publish(Message(b"x", type=["not", "a", "string"]), routing_key=queue)


def test_many_property_sets_and_routing_keys_outgrow_the_caches(ch: Channel, queue: str) -> None:
    """More distinct property sets and (exchange, routing key) pairs than the per-channel
    caches keep (256 each): the caches start over, and every message still carries its
    own properties and routing key."""
    exchange = unique("fan")
    ch.exchange_declare(exchange, "fanout", auto_delete=True)
    ch.queue_bind(queue, exchange)
    n = 600
    for i in range(n):
        props = {"app_id": f"app-{i % 300}", "delivery_mode": 1 + i % 2}
        ch.basic_publish(Message(b"%d" % i, **props), exchange=exchange, routing_key=f"rk-{i % 280}")
    for i in range(n):
        msg = ch.basic_get(queue, no_ack=True)
        assert msg is not None and msg.body == b"%d" % i
        assert msg.properties == {"app_id": f"app-{i % 300}", "delivery_mode": 1 + i % 2}
        assert msg.delivery_info["routing_key"] == f"rk-{i % 280}"
    ch.exchange_delete(exchange)


def test_basic_consume_ack_and_cancel(conn: Connection, ch: Channel, peer: Connection, node: PrivateNode) -> None:
    q = unique("consume")
    ch.queue_declare(q, auto_delete=False)
    try:
        for i in range(3):
            ch.basic_publish(b"%d" % i, routing_key=q)
        got: list[Message] = []

        def on_message(msg: Message) -> None:
            got.append(msg)
            msg.ack()

        tag = ch.basic_consume(q, callback=on_message)
        assert tag.startswith("amq.ctag-")
        drain_until(conn, lambda: len(got) == 3)
        assert [m.body for m in got] == [b"0", b"1", b"2"]
        assert all(m.delivery_info["consumer_tag"] == tag for m in got)
        assert [m.delivery_tag for m in got] == [1, 2, 3]
        assert queue_depth(peer, q) == (0, 1)

        own = ch.basic_consume(q, consumer_tag="my-tag", callback=on_message)
        assert own == "my-tag"
        assert queue_depth(peer, q) == (0, 2)
        ch.basic_cancel(tag)
        consumers = [r for r in ctl_json(node, "list_consumers", "queue_name", "consumer_tag") if r["queue_name"] == q]
        assert consumers == [{"queue_name": q, "consumer_tag": "my-tag"}]
        ch.basic_cancel("my-tag")
        assert queue_depth(peer, q) == (0, 0)
        ch.basic_publish(b"after cancel", routing_key=q)
        assert_nothing_delivered(conn)
        assert len(got) == 3
        wait_for_depth(peer, q, (1, 0))
        # All three acks reached the broker: nothing comes back when the channel closes.
        ch.close()
        assert queue_depth(peer, q) == (1, 0)
    finally:
        with peer.channel() as c:
            c.queue_delete(q)


def test_basic_consume_no_ack(conn: Connection, ch: Channel, queue: str) -> None:
    got: list[Message] = []
    ch.basic_consume(queue, no_ack=True, callback=got.append)
    for i in range(3):
        ch.basic_publish(b"%d" % i, routing_key=queue)
    drain_until(conn, lambda: len(got) == 3)
    ch.close()  # nothing to requeue
    with conn.channel() as c:
        assert c.queue_declare(queue, passive=True) == (queue, 0, 0)


def test_basic_consume_needs_a_callback(ch: Channel, queue: str) -> None:
    # Without one, its deliveries would have nowhere to go (they used to be rejected and
    # redelivered in a busy loop).
    with pytest.raises(TypeError, match="callback"):
        ch.basic_consume(queue)
    assert ch.queue_declare(queue, passive=True) == (queue, 0, 0)  # no consumer was made


@blocking_only  # threads (tests/test_client_async.py has the tasks' case)
def test_threads_closing_at_once_all_wait_for_the_close_ok(new_connection: NewConnection, node: PrivateNode) -> None:
    # The later close() calls saw the first one's close under way, skipped the handshake
    # and dropped the socket under it: no clean close.
    import threading

    from leveret.client.core import ConnState

    conn = new_connection(node.url).connect()
    core = conn.core
    in_threads(conn.close, 4, 10)
    assert core is not None and core.state is ConnState.CLOSED


def test_a_consumer_tag_in_use_on_the_channel_is_refused_before_sending(
    conn: Connection, ch: Channel, queue: str
) -> None:
    # RabbitMQ answers a reused tag by closing the whole connection (530 not-allowed); with
    # nowait, the second callback used to take the first one's place at once.
    first: list[Message] = []
    second: list[Message] = []
    assert ch.basic_consume(queue, consumer_tag="worker", callback=first.append) == "worker"
    for nowait in (False, True):
        with pytest.raises(LocalProtocolError, match="consumer tag 'worker' is in use"):
            ch.basic_consume(queue, consumer_tag="worker", nowait=nowait, callback=second.append)
    ch.basic_publish(b"one", routing_key=queue)
    drain_until(conn, lambda: len(first) == 1)
    first[0].ack()
    assert second == [] and conn.is_open and ch.is_open
    # on another channel, or once cancelled, the tag is free again
    with conn.channel() as other:
        assert other.basic_consume(queue, consumer_tag="worker", callback=second.append) == "worker"
        other.basic_cancel("worker")
    ch.basic_cancel("worker")
    assert ch.basic_consume(queue, consumer_tag="worker", callback=second.append) == "worker"
    ch.basic_publish(b"two", routing_key=queue)
    drain_until(conn, lambda: len(second) == 1)
    second[0].ack()


# Blocking only: the asyncio facade queues every delivery for the test's thread before
# the callback can close the channel (tests/test_client_async.py has the asyncio case).
@blocking_only
def test_deliveries_read_ahead_do_not_run_once_their_channel_is_closed(
    conn: Connection, ch: Channel, peer: Connection
) -> None:
    # The broker requeues what a closed channel left unacknowledged: running those
    # callbacks would process the messages twice (and their acks could not succeed).
    q = unique("closed-early")
    with peer.channel() as other:
        other.queue_declare(q)
        for i in range(50):
            other.basic_publish(b"%d" % i, routing_key=q)
    try:
        seen: list[bytes] = []

        def on_message(msg: Message) -> None:
            seen.append(msg.body)
            if len(seen) == 1:
                time.sleep(0.2)  # the rest arrive and wait in the read-ahead meanwhile
                ch.close()

        ch.basic_consume(q, callback=on_message)
        drain_until(conn, lambda: bool(seen))
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
        assert seen == [b"0"]
        wait_for_depth(peer, q, (50, 0))
    finally:
        with peer.channel() as c:
            c.queue_delete(q)


@blocking_only  # threads (tests/test_client_async.py has tasks sharing a channel)
def test_threads_sharing_a_channel_take_turns_and_get_their_own_replies(conn: Connection, ch: Channel) -> None:
    """Against the advice (a channel per thread), four threads make requests on one
    channel: each waits its turn and gets its own reply.  The look at the channel's request
    slot and the claim were two steps, so 80-90% of replies went to another thread; and a
    thread waiting its turn as the reader slept in poll() until bytes came (30 s)."""
    names = [[unique(f"shared-{i}") for _ in range(5)] for i in range(4)]
    wrong: list[tuple[str, Any]] = []
    failed: list[BaseException] = []

    def worker(mine: list[str]) -> None:
        try:
            for k in range(100):
                name = mine[k % 5]
                ok = ch.queue_declare(name, exclusive=True)
                if ok.queue != name:
                    wrong.append((name, ok))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in names]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed and not wrong[:3]
    assert time.monotonic() - started < 20  # a hang guard: it takes well under a second


def test_basic_ack_multiple(conn: Connection, ch: Channel, queue: str) -> None:
    for i in range(5):
        ch.basic_publish(b"%d" % i, routing_key=queue)
    msgs = [ch.basic_get(queue) for _ in range(5)]
    assert [m.delivery_tag for m in msgs if m] == [1, 2, 3, 4, 5]
    ch.basic_ack(3, multiple=True)
    ch.close()  # the unacked 4 and 5 return to the queue
    with conn.channel() as c:
        assert get_bodies(c, queue) == [b"3", b"4"]


@only_0_9_1
def test_settling_takes_a_messages_delivery_tag_as_typed(
    conn: Connection, ch: Channel, queue: str, protocol: str, tmp_path: Path
) -> None:
    # Message.delivery_tag is int | None (None: not delivered by a broker), and basic_ack
    # took an int: ch.basic_ack(message.delivery_tag) failed mypy --strict.  None is
    # refused with a clear error, and nothing is sent.
    calls: list[Callable[[], None]] = [
        lambda: ch.basic_ack(Message(b"built here").delivery_tag),
        lambda: ch.basic_nack(Message(b"built here").delivery_tag),
        lambda: ch.basic_reject(Message(b"built here").delivery_tag, requeue=False),
    ]
    for call in calls:
        with pytest.raises(EncodeError, match="needs a delivery tag, not None"):
            call()
        assert not conn.core.wants_write
    assert ch.is_open
    for body in (b"acked", b"nacked", b"rejected"):
        ch.basic_publish(body, routing_key=queue)
    got = [ch.basic_get(queue) for _ in range(3)]
    assert all(got)
    ch.basic_ack(got[0].delivery_tag)  # type: ignore[union-attr]
    ch.basic_nack(got[1].delivery_tag, requeue=False)  # type: ignore[union-attr]
    ch.basic_reject(got[2].delivery_tag, requeue=True)  # type: ignore[union-attr]
    assert get_bodies(ch, queue) == [b"rejected"]
    result = mypy(tmp_path, (
        "from leveret.client import AsyncChannel, Channel, Message\n\n"
        "def settle(ch: Channel, message: Message) -> None:\n"
        "    ch.basic_ack(message.delivery_tag)\n"
        "    ch.basic_nack(message.delivery_tag, requeue=False)\n"
        "    ch.basic_reject(message.delivery_tag)\n\n"
        "def settle_async(ch: AsyncChannel, message: Message) -> None:\n"
        "    ch.basic_ack(message.delivery_tag, multiple=True)\n"
    ))
    assert result.returncode == 0, result.stdout + result.stderr


@only_0_9_1
def test_basic_nack(conn: Connection, ch: Channel, queue: str, protocol: str) -> None:
    for body in (b"requeued", b"dropped", b"m1", b"m2"):
        ch.basic_publish(body, routing_key=queue)
    first = ch.basic_get(queue)
    second = ch.basic_get(queue)
    assert first is not None and second is not None
    first.nack(requeue=True)
    second.nack(requeue=False)
    rest = [ch.basic_get(queue) for _ in range(3)]
    assert ch.basic_get(queue) is None
    assert sorted(bytes(m.body) for m in rest if m) == [b"m1", b"m2", b"requeued"]
    assert {m.body: m.delivery_info["redelivered"] for m in rest if m} == {
        b"m1": False, b"m2": False, b"requeued": True,
    }
    assert {m.body: m.redelivered for m in rest if m} == {
        b"m1": False, b"m2": False, b"requeued": True,
    }
    assert Message(b"not delivered").redelivered is None
    ch.basic_nack(0, multiple=True, requeue=False)  # every outstanding one, dropped
    assert ch.queue_declare(queue, passive=True) == (queue, 0, 0)
    ch.close()
    with conn.channel() as c:  # nothing was left unacked to come back
        assert c.queue_declare(queue, passive=True) == (queue, 0, 0)


def test_basic_reject(conn: Connection, ch: Channel, queue: str) -> None:
    ch.basic_publish(b"requeue me", routing_key=queue)
    ch.basic_publish(b"drop me", routing_key=queue)
    first = ch.basic_get(queue)
    assert first is not None and first.delivery_info["redelivered"] is False
    first.reject(requeue=True)
    again = ch.basic_get(queue)
    assert again is not None and again.body == b"requeue me"
    assert again.delivery_info["redelivered"] is True
    again.ack()
    drop = ch.basic_get(queue)
    assert drop is not None and drop.body == b"drop me"
    ch.basic_reject(drop.delivery_tag, requeue=False)
    assert ch.basic_get(queue) is None
    ch.close()
    with conn.channel() as c:
        assert c.queue_declare(queue, passive=True) == (queue, 0, 0)


@pytest.mark.parametrize(
    "protocol",
    [
        "0-9-1",
        "0-8",
    ],
)
def test_basic_recover_requeues_unacked(conn: Connection, ch: Channel, queue: str) -> None:
    for body in (b"a", b"b"):
        ch.basic_publish(body, routing_key=queue)
    got = [ch.basic_get(queue), ch.basic_get(queue)]
    assert all(m is not None and not m.delivery_info["redelivered"] for m in got)
    assert ch.basic_get(queue) is None
    ch.basic_recover(requeue=True)
    again = [ch.basic_get(queue), ch.basic_get(queue)]
    assert [m.body for m in again if m] == [b"a", b"b"]
    assert all(m.delivery_info["redelivered"] for m in again if m)
    for m in again:
        m.ack()  # type: ignore[union-attr]
    ch.close()
    with conn.channel() as c:
        assert c.queue_declare(queue, passive=True) == (queue, 0, 0)


@only_0_9_1
def test_basic_recover_async(ch: Channel, queue: str, protocol: str) -> None:
    ch.basic_publish(b"a", routing_key=queue)
    assert ch.basic_get(queue) is not None
    ch.basic_recover_async(requeue=True)
    again = ch.basic_get(queue, no_ack=True)
    assert again is not None and again.body == b"a" and again.delivery_info["redelivered"]


def test_transactions(conn: Connection, ch: Channel, queue: str) -> None:
    ch.tx_select()
    ch.basic_publish(b"1", routing_key=queue)
    ch.basic_publish(b"2", routing_key=queue)
    with conn.channel() as look:
        assert look.basic_get(queue) is None  # nothing before the commit
        ch.tx_commit()
        wait_for_depth(conn, queue, (2, 0))
        ch.basic_publish(b"3", routing_key=queue)
        ch.tx_rollback()
        ch.tx_commit()  # nothing left to commit: "3" was discarded
        # Acks are transactional too.
        msg = ch.basic_get(queue)
        assert msg is not None and msg.body == b"1"
        msg.ack()
        ch.tx_rollback()
        ch.close()  # the rolled-back ack did not count: "1" comes back
        assert get_bodies(look, queue) == [b"1", b"2"]


@only_0_9_1
def test_confirms_for_many_publishes(ch: Channel, queue: str, protocol: str) -> None:
    ch.confirm_select()
    tags = [ch.basic_publish(b"%d" % i, routing_key=queue) for i in range(1000)]
    assert tags == list(range(1, 1001))
    assert ch.wait_for_confirms(timeout=10) is True
    assert ch.queue_declare(queue, passive=True) == (queue, 1000, 0)
    assert ch.queue_purge(queue) == 1000


@only_0_9_1
def test_wait_for_confirms_raises_when_the_channel_closes_with_publishes_unconfirmed(
    conn: Connection, ch: Channel, protocol: str
) -> None:
    # A publish to a missing exchange makes the broker close the channel (404) without
    # confirming it: its fate must not be reported as "all confirmed".
    ch.confirm_select()
    ch.basic_publish(b"lost", exchange=unique("missing"), routing_key="rk")
    with pytest.raises(NotFound):
        ch.wait_for_confirms(timeout=10)
    assert conn.is_open


@only_0_9_1
def test_publish_confirmed_needs_confirm_mode_and_sends_nothing(ch: Channel, queue: str, protocol: str) -> None:
    with pytest.raises(LocalProtocolError):
        ch.publish_confirmed(b"no confirm mode", routing_key=queue)
    # The caller was told it failed, so the broker must not have it.
    assert ch.basic_get(queue) is None


@only_0_9_1  # (0-8 has no confirms)
def test_a_closed_channel_never_in_confirm_mode_is_not_taken_for_its_ids_next_owner(
    conn: Connection, ch: Channel, queue: str, protocol: str
) -> None:
    # The closed channel's id goes to a new channel in confirm mode: asking the connection
    # about "channel 2" answered for the new one, and the old channel's unconfirmed
    # publishes were reported confirmed.
    old = conn.channel()
    old.basic_publish(b"never confirmed", routing_key=queue)
    old.close()
    new = conn.channel()
    assert new.channel_id == old.channel_id
    new.confirm_select()
    with pytest.raises(ChannelClosedError):
        old.wait_for_confirms(timeout=5)
    new.close()


def test_wait_for_confirms_needs_confirm_mode(conn: Connection, ch: Channel, queue: str, protocol: str) -> None:
    # Not in confirm mode, nothing is ever confirmed: True would say these publishes were
    # (wait_for_confirms used to return it at once).  In 0-8 no channel has confirms.
    ch.basic_publish(b"never confirmed", routing_key=queue)
    with pytest.raises(LocalProtocolError, match=r"needs confirm mode \(confirm_select\(\)\)"):
        ch.wait_for_confirms(timeout=5)
    assert ch.is_open  # refused locally: nothing was sent, the channel goes on
    assert get_bodies(ch, queue) == [b"never confirmed"]
    ch.close()
    with pytest.raises(ChannelClosedError):
        ch.wait_for_confirms(timeout=5)
    if protocol == "0-9-1":
        # In confirm mode: True once all are acked, also when asked after the close.
        confirming = conn.channel()
        confirming.confirm_select()
        confirming.basic_publish(b"confirmed", routing_key=queue)
        assert confirming.wait_for_confirms(timeout=10) is True
        confirming.close()
        assert confirming.wait_for_confirms(timeout=10) is True


@only_0_9_1
def test_publish_confirmed_routable_and_unroutable(ch: Channel, queue: str, protocol: str) -> None:
    ch.confirm_select()
    assert ch.publish_confirmed(b"routable", routing_key=queue, mandatory=True) is True
    assert ch.publish_confirmed(b"unroutable", routing_key=unique("nowhere"), mandatory=True) is False
    assert ch.returned == []  # False says it: the message is not kept as well
    # The message itself through on_return.
    seen: list[Message] = []
    ch.on_return = seen.append
    assert ch.publish_confirmed(Message(b"again", message_id="m2"), exchange="amq.direct", routing_key="none", mandatory=True) is False
    assert [(m.body, m.message_id, m.delivery_info["reply_code"], m.delivery_info["exchange"]) for m in seen] == [
        (b"again", "m2", 312, "amq.direct")
    ]
    # Not mandatory: the broker drops it quietly and acks.
    assert ch.publish_confirmed(b"dropped", routing_key=unique("nowhere")) is True
    assert len(seen) == 1 and ch.returned == []
    assert get_bodies(ch, queue) == [b"routable"]


@only_0_9_1
def test_a_return_names_the_publish_it_returns(ch: Channel, protocol: str) -> None:
    # Two publishes alike but for their headers, to a headers exchange that routes one of
    # them to a durable queue: RabbitMQ confirms that persistent one only once written, the
    # unroutable one at once, so the acks come out of publish order.
    exchange, queue = unique("headers-x"), unique("durable-q")
    ch.exchange_declare(exchange, "headers", auto_delete=True)
    ch.queue_declare(queue, durable=True)
    try:
        ch.queue_bind(queue, exchange, arguments={"x-match": "all", "k": "a"})
        ch.confirm_select()
        for _ in range(10):
            routed = ch.basic_publish(
                Message(b"same", headers={"k": "a"}, delivery_mode=2), exchange, "rk", mandatory=True
            )
            unroutable = ch.basic_publish(Message(b"same", headers={"k": "b"}), exchange, "rk", mandatory=True)
            assert ch.wait_for_confirms(timeout=10)
            [returned] = ch.returned
            ch.returned.clear()
            assert returned.headers == {"k": "b"}
            assert returned.delivery_info["publish_tag"] == unroutable != routed
            # The same through publish_confirmed: False for the unroutable one only (which
            # is then not kept in ch.returned as well).
            ch.basic_publish(Message(b"same", headers={"k": "a"}, delivery_mode=2), exchange, "rk", mandatory=True)
            assert ch.publish_confirmed(Message(b"same", headers={"k": "b"}), exchange, "rk", mandatory=True) is False
            assert ch.publish_confirmed(Message(b"same", headers={"k": "a"}), exchange, "rk", mandatory=True) is True
            assert ch.wait_for_confirms(timeout=10)
            assert ch.returned == []
        assert ch.queue_purge(queue) == 30
    finally:
        ch.queue_delete(queue)


@only_0_9_1
def test_publish_confirmed_returns_do_not_pile_up_in_returned(ch: Channel, queue: str, protocol: str) -> None:
    # publish_confirmed reports its return by returning False: with no on_return, its
    # message used to stay in ch.returned as well, for ever (2000 publishes: 2000 kept).
    ch.confirm_select()
    nowhere = unique("nowhere")
    for i in range(200):
        assert ch.publish_confirmed(b"%d" % i, routing_key=nowhere, mandatory=True) is False
    assert ch.returned == []
    # Plain publishes' returns stay until the caller takes them, also when a
    # publish_confirmed hands them over; its own is still not among them.
    ch.basic_publish(b"plain", routing_key=nowhere, mandatory=True)
    assert ch.publish_confirmed(b"confirmed", routing_key=nowhere, mandatory=True) is False
    assert ch.wait_for_confirms(timeout=10) is True
    assert [m.body for m in ch.returned] == [b"plain"]
    ch.returned.clear()
    # With on_return set, it gets every return, publish_confirmed's too.
    seen: list[bytes] = []
    ch.on_return = lambda m: seen.append(bytes(m.body))
    assert ch.publish_confirmed(b"called back", routing_key=nowhere, mandatory=True) is False
    assert seen == [b"called back"] and ch.returned == []
    assert ch.publish_confirmed(b"routed", routing_key=queue, mandatory=True) is True


def test_mandatory_return_without_confirms(conn: Connection, ch: Channel) -> None:
    returned: list[Message] = []
    ch.on_return = returned.append
    key = unique("nowhere")
    ch.basic_publish(Message(b"bounce", headers={"n": 1}), routing_key=key, mandatory=True)
    assert returned == []  # callbacks run only inside drain_events
    drain_until(conn, lambda: bool(returned))
    msg = returned[0]
    assert msg.body == b"bounce" and msg.headers == {"n": 1}
    assert msg.delivery_info["reply_code"] == 312
    assert msg.delivery_info["routing_key"] == key
    assert ch.is_open
    ch.basic_publish(b"dropped quietly", routing_key=key)  # not mandatory
    assert_nothing_delivered(conn)
    assert len(returned) == 1


class _WatchedReturns(deque):  # type: ignore[type-arg]
    """A channel's deque of returned publishes that counts how often a wait looks at it."""

    looks = 0

    def __len__(self) -> int:
        type(self).looks += 1
        return super().__len__()


def test_waits_look_only_at_channels_that_hold_returns(conn: Connection, ch: Channel) -> None:
    """However many channels are open, receiving a delivery or a return looks only at the
    channels that hold returned publishes: 200 idle channels are never looked at (every
    wait used to scan every open channel, three times per drain_events)."""
    idle = [conn.channel() for _ in range(200)]
    _WatchedReturns.looks = 0
    for other in idle:
        getattr(other, "_target", other)._returns = _WatchedReturns()
    queue = ch.queue_declare("", exclusive=True)[0]
    got: list[bytes] = []
    returned: list[bytes] = []
    ch.basic_consume(queue, no_ack=True, callback=lambda m: got.append(m.body))
    ch.on_return = lambda m: returned.append(m.body)
    nowhere = unique("nowhere")
    for i in range(20):
        ch.basic_publish(b"m%d" % i, routing_key=queue)
        ch.basic_publish(b"r%d" % i, routing_key=nowhere, mandatory=True)
        drain_until(conn, lambda: len(got) > i and len(returned) > i)
    assert _WatchedReturns.looks == 0
    assert got == [b"m%d" % i for i in range(20)] and returned == [b"r%d" % i for i in range(20)]
    # An idle channel's own return is still handed over.
    idle[7].on_return = lambda m: returned.append(m.body)
    idle[7].basic_publish(b"late", routing_key=nowhere, mandatory=True)
    drain_until(conn, lambda: len(returned) > 20)
    assert returned[20:] == [b"late"]


def test_a_channel_marked_while_the_marks_are_taken_stays_marked() -> None:
    """The reader thread may mark a channel (a return arrived) while another thread takes
    the marked channels to hand their returns over: that mark must survive, or the return
    would wait for the next one.  Simulated at the moment between copying and unmarking."""

    class Chan:
        def __init__(self) -> None:
            self._returns: deque[str] = deque()

    conn = Connection("amqp://127.0.0.1:1/")  # never connected: only its bookkeeping is used
    a, b = Chan(), Chan()
    a._returns.append("return of a")

    class MarkedMeanwhile(dict):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            keys = list(super().__iter__())
            b._returns.append("return of b")  # the reader: append, then mark
            self[b] = None
            return iter(keys)

    conn._returning = MarkedMeanwhile({a: None})
    assert conn._returning_channels() == [a]
    assert list(conn._returning) == [b]
    assert conn._has_returns()


@blocking_only
def test_returns_left_behind_by_a_raising_return_callback_come_next_time(conn: Connection) -> None:
    """A return callback that raises stops drain_events (the error is the caller's); the
    returns of other channels that were not handed over yet come with the next call."""
    a, b = conn.channel(), conn.channel()
    seen: list[tuple[str, bytes]] = []

    def boom(msg: Message) -> None:
        seen.append(("a", msg.body))
        raise RuntimeError("boom")

    a.on_return = boom
    b.on_return = lambda m: seen.append(("b", m.body))
    nowhere = unique("nowhere")
    a.basic_publish(b"a1", routing_key=nowhere, mandatory=True)
    b.basic_publish(b"b1", routing_key=nowhere, mandatory=True)
    # A reply on each channel comes after that channel's return: both returns are in.
    a.exchange_declare("amq.direct", "direct", passive=True)
    b.exchange_declare("amq.direct", "direct", passive=True)
    with pytest.raises(RuntimeError, match="boom"):
        conn.drain_events(timeout=5)
    if len(seen) < 2:  # a's came first: b's waits for the next call
        conn.drain_events(timeout=5)
    assert sorted(seen) == [("a", b"a1"), ("b", b"b1")]
    assert a.is_open and b.is_open


def test_broker_cancels_consumer_of_deleted_queue(conn: Connection, ch: Channel, peer: Connection) -> None:
    q = unique("cancelled")
    ch.queue_declare(q)
    cancelled: list[str] = []
    tag = ch.basic_consume(q, callback=lambda m: None, on_cancel=cancelled.append)
    with peer.channel() as other:
        assert other.queue_delete(q) == 0
    drain_until(conn, lambda: bool(cancelled))
    assert cancelled == [tag]
    # The channel stays usable, and the cancelled consumer gets nothing more.
    assert ch.is_open
    ok = ch.queue_declare(q, auto_delete=True)
    assert ok == (q, 0, 0)
    ch.basic_publish(b"after", routing_key=q)
    assert_nothing_delivered(conn)
    assert ch.queue_delete(q) == 1


def test_drain_events_times_out(conn: Connection, ch: Channel, queue: str) -> None:
    ch.basic_consume(queue, callback=lambda m: None)
    started = time.monotonic()
    with pytest.raises(socket.timeout) as info:
        conn.drain_events(timeout=0.2)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError)
    assert 0.15 <= elapsed < 2.0
    assert conn.is_open and ch.is_open
    ch.basic_publish(b"now", routing_key=queue)
    conn.drain_events(timeout=5)


def test_a_callback_that_closes_the_connection_ends_drain_events_normally(
    conn: Connection, ch: Channel, queue: str
) -> None:
    """The callback ran: drain_events returns; the next one says the connection is closed."""
    seen: list[bytes] = []

    def close_it(message: Message) -> None:
        seen.append(bytes(message.body))
        conn.close()

    ch.basic_consume(queue, callback=close_it)
    ch.basic_publish(b"last", routing_key=queue)
    conn.drain_events(timeout=5)
    assert seen == [b"last"] and not conn.is_open
    with pytest.raises(ConnectionClosedError):
        conn.drain_events(timeout=1)


@only_0_9_1
def test_update_secret(conn: Connection, protocol: str) -> None:
    # RabbitMQ 3.10 answers update-secret-ok for PLAIN (its internal backend takes the new
    # secret as it is) and keeps the connection open.
    conn.update_secret("guest", "rotation")
    assert conn.is_open
    assert_still_usable(conn)
    conn.update_secret(b"guest", "rotation again")
    assert_still_usable(conn)


# --------------------------------------------------------------------------- URLs


def test_url_default_vhost_spelled_percent_2f(
    new_connection: NewConnection, node: PrivateNode, protocol: str, peer: Connection
) -> None:
    q = unique("vhost-root")
    with new_connection(with_options(with_vhost(node.url, "%2F"), protocol=protocol)) as conn:
        assert conn.params.virtual_host == "/"
        ch = conn.channel()
        ch.queue_declare(q, auto_delete=False)
        ch.basic_publish(b"in /", routing_key=q)
        ch.queue_declare(q, passive=True)
    # The peer connects with an empty path, which also means "/".
    with peer.channel() as c:
        assert get_bodies(c, q) == [b"in /"]
        c.queue_delete(q)


def test_url_other_vhost_with_a_slash(new_connection: NewConnection, node: PrivateNode, peer: Connection) -> None:
    vhost = unique("vh") + "/sub"
    node.add_vhost(vhost)
    try:
        node.set_permissions("guest", vhost)
        q = unique("vhost-q")
        url = with_vhost(node.url, vhost.replace("/", "%2F"))
        with new_connection(url) as conn:
            assert conn.params.virtual_host == vhost
            conn.channel().queue_declare(q)
            with new_connection(url) as second:
                assert queue_depth(second, q) == (0, 0)
        assert_queue_gone(peer, q)  # not in "/"
    finally:
        node.delete_vhost(vhost)


def test_url_missing_vhost(new_connection: NewConnection, node: PrivateNode, protocol: str) -> None:
    vhost = unique("no-such-vhost")
    conn = new_connection(with_options(with_vhost(node.url, vhost), protocol=protocol))
    started = time.monotonic()
    with pytest.raises(NotAllowed) as info:  # RabbitMQ answers connection.open with 530
        conn.connect()
    assert time.monotonic() - started < 5
    err = info.value
    assert err.reply_code == 530 and isinstance(err, HardError)
    assert vhost in str(err)
    assert not conn.is_open
    with pytest.raises(NotAllowed):  # later calls report why the connection is closed
        conn.channel()


def test_url_unknown_option(new_connection: NewConnection, node: PrivateNode) -> None:
    url = with_options(node.url.replace("guest:guest@", "guest:s3cr%2Ft@"), frame_mux=4096)
    with pytest.raises(URLError) as info:
        new_connection(url)
    text = str(info.value)
    assert "frame_mux" in text
    assert "s3cr" not in text


@pytest.mark.parametrize(
    "bad",
    [
        "amqp://guest:s3cret-pw@localhost:99999/",  # port out of range
        "amqp://guest:s3cret-pw@localhost:notaport/",
        "http://guest:s3cret-pw@localhost/",
        "amqp://guest:s3cret-pw@localhost/#frag",
        "amqp://guest:s3cret-pw@localhost/?heartbeat=abc",
        "amqp://guest:s3cret-pw@localhost/?heartbeat=\u0663",  # int() takes an Arabic-Indic 3
        "amqp://guest:s3cret-pw@localhost/?heartbeat",
        "amqp://guest:s3cret-pw@localhost/?protocol=0-10",
        "amqp://guest:s3cret-pw@localhost/?auth_mechanism=CRAM-MD5",
        "amqp://guest:s3cret-pw@localhost:0/",
        "amqp://guest:s3cret-pw@localhost/?verify=maybe",
        "amqp://guest:s3cret-pw@localhost/?heartbeat=99999999",
        "amqp://guest:s3cret-pw@localhost/?connection_timeout=soon",
        "amqp://guest:s3cret-pw@[::1/",  # too broken for urlsplit
        # An unencoded '/', '?' or '#' ends the host early: the password's first part is
        # read as a port (and urlsplit's own message quotes it).
        "amqp://guest:s3cret/pw@localhost/",
        "amqp://guest:s3cret?pw@localhost/",
        "amqp://guest:s3cret#pw@localhost/",
    ],
)
def test_url_errors_never_show_the_password(new_connection: NewConnection, bad: str) -> None:
    with pytest.raises(URLError) as info:
        new_connection(bad)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        # The password's digits before the '/' pass for a port: without a check this named
        # host "guest", port 12345, virtual host "s3cret@localhost/" and tried to connect.
        "amqp://guest:12345/s3cret@localhost/",
        "amqp://guest:12345/s3cret@localhost:5672/vhost",
        "amqp://12345/s3cret@localhost/",  # a user name with a '/'
    ],
)
def test_url_with_an_unencoded_slash_in_the_password_is_refused(new_connection: NewConnection, bad: str) -> None:
    with pytest.raises(URLError, match="percent-encode") as info:
        new_connection(bad)
    for part in ("12345", "s3cret"):
        assert part not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        # A password with an '@' and then a '/', '?' or '#': the URL parses, with host
        # "ss" and the password's tail -- and the real host -- in the virtual host or the
        # query.  Without a check, it connected to "ss" with the password's first letter
        # and showed the tail in reprs and log lines.
        "amqp://user:p@ss/ws3cret@rabbit.internal/",
        "amqp://user:p@ss?ws3cret@rabbit.internal/",
        "amqp://user:p@ss#ws3cret@rabbit.internal/",
        "amqp://user:p@ss:w/rd?#xs3cret@rabbit.internal:5672/%2F",
        "amqp://user:p:a@b/cs3cret@rabbit.internal/%2F",
    ],
)
def test_url_with_an_unencoded_at_sign_and_slash_in_the_password_is_refused(
        new_connection: NewConnection, bad: str) -> None:
    with pytest.raises(URLError, match="percent-encode") as info:
        new_connection(bad)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value)
    assert "rabbit.internal" in str(info.value)


def test_url_must_be_a_str(new_connection: NewConnection) -> None:
    with pytest.raises(URLError, match="must be a str, not bytes"):
        new_connection(b"amqp://guest:s3cret-pw@localhost/")


@pytest.mark.parametrize(
    "options,error,words",
    [
        ({"heartbeat": "30"}, TypeError, "heartbeat must be an int"),
        ({"heartbeat": 2.5}, TypeError, "heartbeat must be an int"),
        ({"heartbeat": True}, TypeError, "heartbeat must be an int"),
        ({"heartbeat": -1}, ValueError, "heartbeat=-1 is out of range"),
        ({"frame_max": 2**32}, ValueError, "frame_max=4294967296 is out of range"),
        ({"channel_max": 70000}, ValueError, "channel_max=70000 is out of range"),
        ({"port": 0}, ValueError, "port=0 is out of range"),
        ({"port": "5672"}, TypeError, "port must be an int"),
        ({"connection_timeout": 0}, ValueError, "connection_timeout=0"),
        ({"connection_timeout": float("inf")}, ValueError, "finite"),
        ({"connection_timeout": float("nan")}, ValueError, "connection_timeout=nan"),
        ({"connection_timeout": "10"}, TypeError, "connection_timeout must be a number"),
        ({"rpc_timeout": -5}, ValueError, "rpc_timeout=-5"),
        ({"rpc_timeout": float("nan")}, ValueError, "rpc_timeout=nan"),
        ({"blocked_timeout": float("inf")}, ValueError, "blocked_timeout=inf"),
        ({"blocked_timeout": None}, TypeError, "blocked_timeout must be a number"),
        ({"host": ""}, ValueError, "host must not be empty"),
        ({"virtual_host": 5}, TypeError, "virtual_host must be a str"),
        ({"password": b"s3cret-pw"}, TypeError, "password must be a str"),
        # os.environ's way with bytes that are not UTF-8: a raw UnicodeEncodeError quoted it.
        ({"password": "caf\udce9-s3cret-pw"}, ValueError, "password is not valid Unicode text"),
        ({"username": "\udcff"}, ValueError, "username is not valid Unicode text"),
        ({"ssl": "false"}, TypeError, "ssl must be True or False"),
        ({"verify": 0}, TypeError, "verify must be True or False"),
        ({"cacertfile": 7}, TypeError, "cacertfile must be a str or None"),
        ({"auth_mechanism": "CRAM-MD5"}, ValueError, "auth_mechanism='CRAM-MD5'"),
        ({"protocol": "0-10"}, ValueError, "protocol='0-10'"),
        ({"host": "rabbit:amqp"}, ValueError, "the port after ':' must be a number in 1..65535"),
        ({"host": "rabbit:0"}, ValueError, "the port after ':' must be a number in 1..65535"),
        ({"host": "[::1]5672"}, ValueError, "is not '[address]' or '[address]:port'"),
        ({"host": "rabbit:5673", "port": 5674}, ValueError, "disagree"),
    ],
)
def test_bad_keyword_options_are_refused_at_construction(new_connection: NewConnection, options: dict[str, Any],
                                                          error: type[Exception], words: str) -> None:
    # Keyword options are checked as strictly as a URL's: a clear error naming the option
    # when the connection is made, not a struct.error or an OverflowError at connect().
    with pytest.raises(error) as info:
        new_connection("amqp://guest:s3cret-pw@localhost/", **options)
    assert words in str(info.value)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_keyword_options_are_converted(new_connection: NewConnection, tmp_path: Any) -> None:
    conn = new_connection("amqp://localhost/", heartbeat=10.0, auth_mechanism="amqplain",
                          cacertfile=tmp_path / "ca.pem", ssl=True, rpc_timeout=1)
    p = conn.params
    assert p.heartbeat == 10 and type(p.heartbeat) is int
    assert p.auth_mechanism == "AMQPLAIN"
    assert p.cacertfile == str(tmp_path / "ca.pem")
    assert p.ssl and p.port == 5671  # TLS without a port: the amqps port
    assert new_connection("amqp://localhost:5672/", ssl=True).params.port == 5672  # a port given stays
    assert new_connection("amqp://u:p@localhost/", ssl=True).params.port == 5671
    assert conn.rpc_timeout == 1.0


def test_host_may_carry_the_port_as_py_amqp_takes_it(new_connection: NewConnection, node: PrivateNode) -> None:
    # amqp.Connection("localhost:5672"): leveret kept port 5672 and failed at connect()
    # with "Name or service not known" for a host named "127.0.0.1:PORT".
    for host in ("localhost:5673", "[::1]:5673"):
        assert new_connection(None, host=host).params.port == 5673
    p = new_connection(None, host="::1").params  # a bare IPv6 address has no port
    assert (p.host, p.port) == ("::1", 5672)
    assert new_connection(None, host="h:5672", ssl=True).params.port == 5672  # given: kept
    with new_connection(None, host=f"127.0.0.1:{node.port}", userid="guest", password="guest") as conn:
        assert conn.is_open and conn.params.host == "127.0.0.1"


@pytest.mark.parametrize("query", ["connection_timeout=inf", "connection_timeout=nan", "connection_timeout=-1"])
def test_url_timeout_must_be_positive_and_finite(new_connection: NewConnection, query: str) -> None:
    with pytest.raises(URLError) as info:
        new_connection(f"amqp://guest:s3cret-pw@localhost/?{query}")
    assert "positive, finite" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_call_timeouts_nan_and_non_numbers_are_refused_and_cost_nothing(conn: Connection, ch: Channel,
                                                                      queue: str) -> None:
    # A bad timeout argument is the caller's error, raised before anything is sent or
    # waited for: the connection and the channel stay usable.
    got: list[bytes] = []
    ch.basic_consume(queue, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
    # Any: the wrong types are the point.
    bad_timeouts: list[tuple[Any, type[Exception]]] = [(float("nan"), ValueError), ("5", TypeError), ([], TypeError)]
    for bad, error in bad_timeouts:
        with pytest.raises(error, match="timeout"):
            conn.drain_events(timeout=bad)
        with pytest.raises(error, match="timeout"):
            ch.queue_declare(queue, passive=True, timeout=bad)
        with pytest.raises(error, match="timeout"):
            ch.basic_get(queue, timeout=bad)
    assert conn.is_open and ch.is_open
    ch.basic_publish(b"still here", routing_key=queue)
    conn.drain_events(timeout=10)
    assert got == [b"still here"]


def test_infinite_and_huge_timeouts_wait_without_overflow(new_connection: NewConnection, url: str) -> None:
    # inf means no limit; a huge finite value is as good (poll() waits in slices).
    with new_connection(url, rpc_timeout=1e300, blocked_timeout=1e300, connection_timeout=1e300) as conn:
        ch = conn.channel()
        ok = ch.queue_declare("", exclusive=True, timeout=float("inf"))
        got: list[bytes] = []
        ch.basic_consume(ok.queue, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
        for timeout in (float("inf"), 1e300):
            ch.basic_publish(b"%r" % timeout, routing_key=ok.queue)
            conn.drain_events(timeout=timeout)
        assert got == [b"inf", b"1e+300"]
        if conn.protocol == "0-9-1":  # confirms: RabbitMQ has them in 0-9-1 only
            ch.confirm_select()
            ch.basic_publish(b"x", routing_key=ok.queue)
            assert ch.wait_for_confirms(timeout=float("inf"))


def test_wrong_password(new_connection: NewConnection, node: PrivateNode, protocol: str) -> None:
    url = with_options(node.url.replace("guest:guest@", "guest:wr0ng-pw@"), protocol=protocol, connection_timeout=5)
    conn = new_connection(url)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        conn.connect()
    assert time.monotonic() - started < 5
    err = info.value
    assert err.reply_code == 403 and isinstance(err, HardError)
    assert "ACCESS_REFUSED" in str(err)
    for text in (str(err), repr(err), repr(conn)):
        assert "wr0ng-pw" not in text
    assert not conn.is_open


@pytest.fixture(scope="module")
def user(node: PrivateNode) -> Iterator[tuple[str, str]]:
    """A user of our own on "/", whose password differs from its name."""
    name, password = unique("user"), "pw-" + uuid.uuid4().hex
    node.add_user(name, password)
    try:
        node.set_permissions(name, "/")
        yield name, password
    finally:
        node.delete_user(name)


def test_password_never_shown(
    new_connection: NewConnection, node: PrivateNode, protocol: str, user: tuple[str, str]
) -> None:
    name, password = user
    url = with_options(node.url.replace("guest:guest@", f"{name}:{password}@"), protocol=protocol)
    with new_connection(url) as conn:
        ch = conn.channel()
        texts = [repr(conn), str(conn), repr(conn.params), repr(conn.core), repr(ch), conn.params.url()]
        assert all(password not in text for text in texts)
        assert name in repr(conn) and "****" in repr(conn)
        # Errors raised on the open connection do not show it either.
        with pytest.raises(NotFound) as info:
            ch.queue_declare(unique("missing"), passive=True)
        assert password not in str(info.value) and password not in repr(info.value)
    # The user really logged in with that password: a wrong one is refused.
    with pytest.raises(AuthenticationError) as refused:
        new_connection(url.replace(password, password + "x")).connect()
    assert password not in str(refused.value)


def _wait_ready(conn: Connection, queue: str, expected: int, timeout: float = 5.0) -> int:
    # RabbitMQ applies requeues asynchronously: poll the passive declare.
    deadline = time.monotonic() + timeout
    while True:
        ready, _ = queue_depth(conn, queue)
        if ready == expected or time.monotonic() > deadline:
            return ready
        time.sleep(0.05)


# Blocking only: it is about deliveries that wait for drain_events when the consumer is
# cancelled.  The asyncio driver runs callbacks as deliveries arrive, in its delivery task
# (the facade then only queues them for drain_events), so nothing is left pending there.
@blocking_only
def test_deliveries_pending_at_cancel_go_back_to_the_queue(conn: Connection, ch: Channel, queue: str) -> None:
    for body in (b"1", b"2", b"3"):
        ch.basic_publish(body, routing_key=queue)
    seen: list[bytes] = []
    tag = ch.basic_consume(queue, callback=lambda m: seen.append(m.body))
    # Let the deliveries reach the client; their callbacks only run in drain_events.
    time.sleep(0.5)
    ch.basic_cancel(tag)
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.3)
    assert seen == []
    # Given back, not stuck unacknowledged until the channel closes.
    assert _wait_ready(conn, queue, 3) == 3
    assert get_bodies(ch, queue) == [b"1", b"2", b"3"]


def test_no_ack_deliveries_pending_at_cancel_still_run(conn: Connection, ch: Channel, queue: str) -> None:
    for body in (b"1", b"2", b"3"):
        ch.basic_publish(body, routing_key=queue)
    seen: list[bytes] = []
    tag = ch.basic_consume(queue, no_ack=True, callback=lambda m: seen.append(m.body))
    time.sleep(0.5)
    ch.basic_cancel(tag)
    while len(seen) < 3:
        conn.drain_events(timeout=2)
    assert seen == [b"1", b"2", b"3"]  # the broker dropped them when it sent them


@pytest.mark.parametrize("nowait", [False, True])
def test_cancelled_no_ack_consumer_lets_go_of_its_callback(
    conn: Connection, ch: Channel, queue: str, nowait: bool
) -> None:
    # The channel keeps a cancelled no_ack consumer's callback for deliveries still on
    # their way, and must let go of it once none can come: a long-lived channel that
    # consumes and cancels again and again must not pile up callbacks (and what they hold).
    for body in (b"1", b"2"):
        ch.basic_publish(body, routing_key=queue)

    class Callback:
        def __init__(self) -> None:
            self.seen: list[bytes] = []

        def __call__(self, message: Any) -> None:
            self.seen.append(message.body)

    callback = Callback()
    seen = callback.seen
    tag = ch.basic_consume(queue, no_ack=True, callback=callback)
    time.sleep(0.5)  # both deliveries in, not yet run
    ch.basic_cancel(tag, nowait=nowait)
    ch.queue_declare(queue, passive=True)  # a request sent after the cancel, and its reply
    gone = weakref.ref(callback)
    del callback
    while len(seen) < 2:
        conn.drain_events(timeout=2)
    assert seen == [b"1", b"2"]
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.2)
    gc.collect()
    assert gone() is None
