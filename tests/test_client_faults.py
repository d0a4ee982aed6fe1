"""Faults seen through the client, with both drivers: what a user catches, and how soon.

Every fault here is real: the broker closes connections (``rabbitmqctl close_connection``),
stops its application, raises its memory alarm, is frozen with SIGSTOP; a TCP proxy on
loopback (tests/tcpproxy.py) cuts or freezes connections in the middle of a publish, a
delivery or a stream of confirms; tiny scripted servers answer with another protocol header
or with garbage.  Nothing is mocked.  Every wait is bounded, so a hang fails the test.

Destructive tests share one private node of this module (``fault_node``), which each test
leaves running and unalarmed; the rest use the session's node through a proxy or with
broker-side commands aimed at their own connection only.

Each test runs with the blocking driver and with the asyncio one behind the synchronous
facade of tests/drivers.py (the ``connect`` and ``new_connection`` fixtures); connections
that only look at the broker's state afterwards (``queue_bodies``, ``message_count``) are
blocking.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import struct
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterator

import pytest

from broker import PrivateNode, private_node
from drivers import NewConnection, blocking_only
from helpers import Interrupt, in_forked_child, in_threads, interrupt_after_deliveries, publish_until_blocked, within
import leveret
from leveret.client import (
    AuthenticationError,
    BlockedTimeout,
    ChannelClosedError,
    Connection,
    ConnectionClosedError,
    ConnectionLost,
    Message,
    VersionMismatch,
)
from leveret.wire.errors import LeveretError, LocalProtocolError, RemoteProtocolError
from leveret.wire.replies import ConnectionForced, NotAllowed, ResourceLocked
from tcpproxy import Mode, TCPProxy

PROTOCOLS = ["0-9-1", "0-8"]
needs_broker = pytest.mark.broker


# --------------------------------------------------------------------------- helpers


class Waiter(threading.Thread):
    """Runs ``fn`` (typically ``conn.drain_events``) in the background and records how and
    when it ended."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.ended = 0.0

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def outcome(self, timeout: float) -> BaseException | None:
        self.join(timeout)
        if self.is_alive():
            pytest.fail(f"the waiting thread was still blocked {timeout} s later")
        return self.error


def start_waiter(fn: Callable[[], Any]) -> Waiter:
    waiter = Waiter(fn)
    waiter.start()
    time.sleep(0.3)  # let it get into its wait
    assert waiter.is_alive(), f"the waiter ended early: {waiter.error!r}"
    return waiter


def connection_name() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


def open_connection(cls: NewConnection, url: str, name: str | None = None, **options: Any) -> Connection:
    """``cls(url, **options)``, connected (``name`` is announced as connection_name)."""
    props = {"connection_name": name} if name else None
    # NewConnection makes either driver's connection (Any); both act as a Connection here.
    conn: Connection = within(15, cls(url, client_properties=props, **options).connect)
    return conn


#: The ``connect`` fixture: ``connect(url, name=None, **options)``.
Connect = Callable[..., Connection]


@pytest.fixture
def connect(new_connection: NewConnection) -> Connect:
    """``open_connection`` for the driver under test."""
    return functools.partial(open_connection, new_connection)


def broker_pid(node: PrivateNode, name: str) -> str:
    """The broker's pid for the connection that announced ``connection_name`` = name."""
    rows = [row for row in node.list_connections("pid", "client_properties") if name in row[1]]
    assert len(rows) == 1, f"connection {name} not listed exactly once: {rows}"
    return str(rows[0][0])


def listed(node: PrivateNode, name: str) -> list[list[str]]:
    """Rows (user, state, timeout, client_properties) of connections named ``name``."""
    rows = node.list_connections("user", "state", "timeout", "client_properties")
    return [row for row in rows if name in row[3]]


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def queue_bodies(url: str, queue: str) -> list[bytes]:
    """Every message in ``queue``, taken off it with a fresh (blocking) connection."""
    with open_connection(Connection, url) as conn:
        ch = conn.channel()
        bodies: list[bytes] = []
        while True:
            msg = ch.basic_get(queue, no_ack=True, timeout=10)
            if msg is None:
                return bodies
            bodies.append(bytes(msg.body))


def message_count(url: str, queue: str) -> int:
    with open_connection(Connection, url) as conn:
        ok = conn.channel().queue_declare(queue, passive=True, timeout=10)
        assert ok is not None
        return ok.message_count


@pytest.fixture(scope="module")
def fault_node() -> Iterator[PrivateNode]:
    """A private node for this module's destructive tests (stop_app, alarms, SIGSTOP)."""
    started = private_node()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def proxy(node: PrivateNode) -> Iterator[TCPProxy]:
    with TCPProxy(node.port) as p:
        yield p


# --------------------------------------------------------------------------- broker closes


@needs_broker
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_broker_close_wakes_drain_events_and_fails_later_calls(
    connect: Connect, node: PrivateNode, protocol: str
) -> None:
    name = connection_name()
    conn = connect(node.url + f"?protocol={protocol}", name)
    ch = conn.channel()
    waiter = start_waiter(lambda: conn.drain_events(timeout=30))
    closed_at = time.monotonic()
    node.close_connection(broker_pid(node, name), "maintenance window 42")

    err = waiter.outcome(10)
    assert isinstance(err, ConnectionForced), repr(err)
    assert err.reply_code == 320
    assert "maintenance window 42" in str(err)
    assert waiter.ended - closed_at < 5
    assert not conn.is_open

    # Later calls report the same cause, at once.
    for call in (lambda: ch.queue_declare("", exclusive=True), conn.channel):
        with pytest.raises(ConnectionForced, match="maintenance window 42"):
            within(5, call)
    within(5, conn.close)
    within(5, conn.close)  # twice is fine too
    assert listed(node, name) == []


@needs_broker
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_broker_close_is_what_every_later_call_reports(connect: Connect, node: PrivateNode, protocol: str) -> None:
    name = connection_name()
    conn = connect(node.url + f"?protocol={protocol}", name)
    ch = conn.channel()
    node.close_connection(broker_pid(node, name), "maintenance window 43")
    time.sleep(1.0)  # the I/O thread has read the close, the broker has dropped the socket
    for call in (lambda: ch.basic_publish(b"x", routing_key="nowhere"),
                 lambda: ch.queue_declare("", exclusive=True), conn.channel,
                 lambda: conn.drain_events(timeout=1)):
        with pytest.raises(ConnectionForced, match="maintenance window 43"):
            within(5, call)
    within(5, conn.close)


def traceback_length(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


@needs_broker
def test_calls_retried_on_a_dead_connection_do_not_pile_up_traceback(connect: Connect, node: PrivateNode) -> None:
    # The connection's error is raised by every later call.  Raising the one kept object
    # each time added every call's frames to its traceback (and kept their variables
    # alive): 160,000 frames after 20,000 retries.  Each raise is now a copy of it, caused
    # by it, so the first failure's traceback is still there to read.
    name = connection_name()
    conn = connect(node.url, name)
    ch = conn.channel()
    node.close_connection(broker_pid(node, name), "maintenance window 44")
    with pytest.raises(ConnectionForced) as first:
        within(10, lambda: conn.drain_events(timeout=30))
    raised: list[BaseException] = []
    for _ in range(300):
        for call in (lambda: ch.queue_declare("", exclusive=True), conn.channel,
                     lambda: conn.drain_events(timeout=0.01)):
            try:
                call()
            except ConnectionForced as exc:
                raised.append(exc)
    assert len(raised) == 900
    assert max(traceback_length(e) for e in raised) <= traceback_length(raised[0]) + 10
    assert traceback_length(first.value) < 50
    for error in (raised[0], raised[-1]):
        assert isinstance(error, ConnectionForced) and error.reply_code == 320
        assert "maintenance window 44" in str(error)
        assert error.__cause__ is not None and "maintenance window 44" in str(error.__cause__)
    # Connected again, the old channel says it belonged to the earlier connection, caused
    # by why that one went (it had no cause when the broker closed it, only when lost).
    within(15, conn.connect)
    with pytest.raises(ChannelClosedError, match="earlier connection") as closed:
        ch.queue_declare("", exclusive=True)
    assert isinstance(closed.value.__cause__, ConnectionForced)
    assert "maintenance window 44" in str(closed.value.__cause__)
    within(5, conn.close)


@needs_broker
def test_close_all_connections_reaches_idle_connections(connect: Connect, fault_node: PrivateNode) -> None:
    # No thread of the user reads: the connection learns of the close by itself and the
    # next call raises it instead of writing into a dead socket.
    idle = connect(fault_node.url)
    ch = idle.channel()
    busy = connect(fault_node.url + "?protocol=0-8")
    waiter = start_waiter(lambda: busy.drain_events(timeout=30))
    fault_node.close_all_connections("everybody out")

    err = waiter.outcome(10)
    assert isinstance(err, ConnectionForced) and "everybody out" in str(err)
    time.sleep(1.0)
    with pytest.raises(ConnectionForced, match="everybody out"):
        within(5, ch.queue_declare, "", exclusive=True)
    within(5, idle.close)
    within(5, busy.close)


# --------------------------------------------------------------------------- broker app stops


def _stop_app_outcome(connect: Connect, node: PrivateNode) -> tuple[BaseException | None, float, BaseException | None]:
    """Stop the app under a waiting and an idle connection; (waiter's error, seconds it took,
    the idle connection's next error).  The app is started again before returning."""
    waiting = connect(node.url)
    waiting.channel()
    idle = connect(node.url)
    idle_ch = idle.channel()
    waiter = start_waiter(lambda: waiting.drain_events(timeout=60))
    stopped_at = time.monotonic()
    try:
        node.stop_app()
        err = waiter.outcome(15)
        took = waiter.ended - stopped_at
        time.sleep(0.5)
        idle_err: BaseException | None = None
        try:
            within(10, idle_ch.queue_declare, "", exclusive=True)
        except BaseException as exc:
            idle_err = exc
        within(10, waiting.close)
        within(10, idle.close)
    finally:
        node.start_app()
    return err, took, idle_err


@needs_broker
def test_stop_app_fails_connections_promptly_and_start_app_lets_new_ones_in(
    connect: Connect, fault_node: PrivateNode
) -> None:
    err, took, idle_err = _stop_app_outcome(connect, fault_node)
    assert isinstance(err, (ConnectionForced, ConnectionLost)), repr(err)
    assert took < 10
    assert isinstance(idle_err, (ConnectionForced, ConnectionLost)), repr(idle_err)

    with connect(fault_node.url) as conn:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        ch.basic_publish(b"after restart", routing_key=queue)
        msg = eventually(lambda: ch.basic_get(queue, no_ack=True), what="basic.get of the message")
        assert msg.body == b"after restart"


@needs_broker
def test_stop_app_is_reported_as_the_brokers_connection_forced(connect: Connect, fault_node: PrivateNode) -> None:
    # RabbitMQ sends connection.close before it drops the socket; that is what a user
    # should see.  Twice, so that a lucky ordering of the race cannot pass the test.
    for _ in range(2):
        err, took, idle_err = _stop_app_outcome(connect, fault_node)
        assert isinstance(err, ConnectionForced), repr(err)
        assert "shutdown" in str(err) and err.reply_code == 320
        assert isinstance(idle_err, ConnectionForced), repr(idle_err)


# --------------------------------------------------------------------------- memory alarm


@pytest.fixture
def alarm(fault_node: PrivateNode) -> Iterator[PrivateNode]:
    """The fault node; its memory watermark is restored whatever the test does."""
    try:
        yield fault_node
    finally:
        fault_node.set_vm_memory_high_watermark(0.4)


@needs_broker
def test_memory_alarm_blocks_publisher_then_unblocks(connect: Connect, alarm: PrivateNode) -> None:
    seen: list[tuple[str, Any]] = []
    conn = connect(
        alarm.url, blocked_timeout=3.0,
        on_blocked=lambda reason: seen.append(("blocked", reason)),
        on_unblocked=lambda: seen.append(("unblocked", None)),
    )
    try:
        ch = conn.channel()
        queue = ch.queue_declare(f"alarm-{uuid.uuid4().hex[:8]}").queue
        ch.confirm_select()
        ch.basic_publish(b"m0", routing_key=queue)
        ch.wait_for_confirms(timeout=10)
        assert conn.blocked is None

        alarm.set_vm_memory_high_watermark(0)
        # RabbitMQ blocks a connection when it publishes during the alarm: this publish
        # still goes out (the client has not been told yet), then the broker says blocked.
        ch.basic_publish(b"m1", routing_key=queue)
        within(15, conn.drain_events, timeout=10)
        assert seen == [("blocked", "low on memory")]
        assert conn.blocked == "low on memory"
        assert conn.is_open

        started = time.monotonic()
        with pytest.raises(BlockedTimeout, match="blocked_timeout=3.0 s"):
            within(10, ch.basic_publish, b"never sent", routing_key=queue)
        waited = time.monotonic() - started
        assert 2.9 <= waited <= 4.5, waited
        # A call with a timeout of its own waits no longer than that for the unblock (it
        # waited the whole blocked_timeout -- 60 s by default -- whatever it was given).
        started = time.monotonic()
        with pytest.raises(BlockedTimeout, match="the call's timeout; nothing was published"):
            within(10, ch.publish_confirmed, b"never sent either", routing_key=queue, timeout=1.0)
        waited = time.monotonic() - started
        assert 0.9 <= waited <= 2.5, waited

        alarm.set_vm_memory_high_watermark(0.4)
        within(15, conn.drain_events, timeout=10)
        assert seen[-1] == ("unblocked", None)
        assert conn.blocked is None

        ch.basic_publish(b"m2", routing_key=queue)
        # Confirms stay in step with the broker: the publish that timed out took no tag.
        assert within(15, ch.wait_for_confirms, timeout=10) is True
        assert queue_bodies(alarm.url, queue) == [b"m0", b"m1", b"m2"]
        ch.queue_delete(queue)
    finally:
        within(10, conn.close)


@needs_broker
def test_publish_waiting_on_a_blocked_connection_goes_out_when_unblocked(connect: Connect, alarm: PrivateNode) -> None:
    conn = connect(alarm.url, blocked_timeout=30.0)
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        alarm.set_vm_memory_high_watermark(0)
        ch.basic_publish(b"first", routing_key=queue)
        eventually(lambda: conn.blocked, what="connection.blocked")  # read by the I/O thread

        timer = threading.Timer(1.5, alarm.set_vm_memory_high_watermark, (0.4,))
        timer.start()
        started = time.monotonic()
        within(20, ch.basic_publish, b"second", routing_key=queue)
        waited = time.monotonic() - started
        timer.join()
        assert 1.0 <= waited < 10, waited
        assert conn.blocked is None
        got = [eventually(lambda: ch.basic_get(queue, no_ack=True), what="a message").body
               for _ in range(2)]
        assert got == [b"first", b"second"]
    finally:
        within(10, conn.close)


@needs_broker
def test_closing_while_the_broker_blocks_waits_at_most_blocked_timeout(connect: Connect, alarm: PrivateNode) -> None:
    """A blocked connection that has published is not read by the broker until the alarm
    is over, so the close-ok cannot come: close() waited the whole rpc_timeout (60 s by
    default), and the high-level release() twice that (channel.close, then
    connection.close) -- past systemd's stop timeout for a service stopped during an
    alarm.  Both now wait at most blocked_timeout, and the broker has let the connections go
    once the alarm is over."""
    from leveret.highlevel import Connection as HLConnection

    queue = f"alarm-close-{uuid.uuid4().hex[:8]}"
    name, hl_name = connection_name(), connection_name()
    conn = connect(alarm.url, name, rpc_timeout=30, blocked_timeout=2.0)
    hl = HLConnection(alarm.url, transport_options={
        "rpc_timeout": 30, "blocked_timeout": 2.0, "client_properties": {"connection_name": hl_name},
    })
    try:
        ch = conn.channel()
        ch.queue_declare(queue)
        hl.default_channel.queue_declare(queue, passive=True)
        alarm.set_vm_memory_high_watermark(0)
        ch.basic_publish(b"m1", routing_key=queue)  # goes out; the broker then blocks us
        hl.default_channel.basic_publish(b"m2", routing_key=queue)
        eventually(lambda: conn.blocked, what="connection.blocked")
        hl_transport = hl.connection
        eventually(lambda: hl_transport.blocked, what="connection.blocked (high level)")
        for close in (conn.close, hl.release):
            started = time.monotonic()
            within(20, close)
            waited = time.monotonic() - started
            assert waited < 5, (close, waited)
        assert not conn.is_open and not hl_transport.is_open
    finally:
        alarm.set_vm_memory_high_watermark(0.4)
        within(10, conn.close)
        hl.release()
    eventually(lambda: not listed(alarm, name) and not listed(alarm, hl_name), timeout=30,
               what="the broker letting the connections go")
    assert sorted(queue_bodies(alarm.url, queue)) == [b"m1", b"m2"]


@needs_broker
def test_memory_alarm_while_large_publishes_fill_the_socket(connect: Connect, alarm: PrivateNode) -> None:
    """The broker stops reading a blocked connection, so a publisher of large bodies finds
    the socket full: every publish still returns or raises BlockedTimeout within about
    blocked_timeout (not after a write timeout that fails the connection), and once the
    alarm clears the connection goes on and every publish that returned is confirmed."""
    conn = connect(alarm.url, blocked_timeout=1.0)
    try:
        ch = conn.channel()
        queue = ch.queue_declare(f"alarm-big-{uuid.uuid4().hex[:8]}").queue
        ch.confirm_select()
        body = b"x" * 1_000_000
        alarm.set_vm_memory_high_watermark(0)
        published = publish_until_blocked(ch, queue, body, each_within=20)
        assert conn.is_open
        alarm.set_vm_memory_high_watermark(0.4)
        eventually(lambda: conn.blocked is None, timeout=20, what="connection.unblocked")
        assert within(30, ch.wait_for_confirms, timeout=25) is True
        assert message_count(alarm.url, queue) == published
        ch.queue_delete(queue)
    finally:
        within(10, conn.close)


@needs_broker
@blocking_only  # the blocking driver's parked write (asyncio's transport keeps its own buffer)
def test_connect_after_a_loss_with_a_parked_write_starts_clean(connect: Connect, alarm: PrivateNode) -> None:
    """What was parked for the I/O thread while the broker blocked the connection belongs to
    that connection: once it is lost, connect() on the same Connection must not write it
    ahead of the new connection's protocol header (the broker would answer with its own)."""
    with TCPProxy(alarm.port) as proxy:
        conn = connect(proxy.url(), blocked_timeout=1.0)
        try:
            ch = conn.channel()
            alarm.set_vm_memory_high_watermark(0)
            thaw = threading.Timer(2.0, proxy.thaw)
            try:
                proxy.freeze("down")  # connection.blocked comes after the socket is full
                thaw.start()
                with pytest.raises(BlockedTimeout):
                    for _ in range(100):
                        within(20, ch.basic_publish, b"x" * 1_000_000, routing_key="nowhere")
                assert conn._wrest  # parked: the broker is not reading
                proxy.cut("reset")
                eventually(lambda: not conn.is_open, what="the connection to be lost")
            finally:
                thaw.cancel()
                proxy.thaw()
                alarm.set_vm_memory_high_watermark(0.4)
            within(15, conn.connect)
            assert conn.channel().queue_declare("", exclusive=True).queue
        finally:
            within(10, conn.close)


@needs_broker
def test_asyncio_publishes_in_one_task_while_the_broker_blocks(alarm: PrivateNode) -> None:
    """asyncio: publishes awaited back to back in one task give the event loop no turn to
    read connection.blocked until the socket is full; the publish that finds it full must
    then see the notice and return (the rest waits in the transport's buffer), and the
    next one raise BlockedTimeout -- not wait for a broker that has stopped reading."""
    import asyncio

    from leveret.client import AsyncConnection

    async def scenario() -> int:
        conn = await AsyncConnection(alarm.url, blocked_timeout=1.0).connect()
        try:
            ch = await conn.channel()
            queue = (await ch.queue_declare(f"alarm-aio-{uuid.uuid4().hex[:8]}")).queue
            await ch.confirm_select()
            body = b"x" * 1_000_000
            alarm.set_vm_memory_high_watermark(0)
            published = 0

            async def publish_all() -> None:
                nonlocal published
                for _ in range(100):  # no wait_for per publish: that would give the loop turns
                    started = time.monotonic()
                    try:
                        await ch.basic_publish(body, routing_key=queue)
                    finally:
                        took = time.monotonic() - started
                        assert took < 6, f"publish {published} took {took:.1f} s (blocked_timeout=1)"
                    published += 1

            try:
                await asyncio.wait_for(publish_all(), 20)
            except BlockedTimeout:
                pass
            else:
                pytest.fail("the broker never blocked the publisher")
            assert conn.is_open
            alarm.set_vm_memory_high_watermark(0.4)
            assert await ch.wait_for_confirms(timeout=25) is True
            assert message_count(alarm.url, queue) == published
            await ch.queue_delete(queue)
            return published
        finally:
            await asyncio.wait_for(conn.close(), 10)

    assert asyncio.run(scenario()) > 0


@needs_broker
def test_memory_alarm_does_not_kill_a_0_8_connection(connect: Connect, alarm: PrivateNode) -> None:
    conn = connect(alarm.url + "?protocol=0-8")
    try:
        ch = conn.channel()
        queue = ch.queue_declare(f"alarm08-{uuid.uuid4().hex[:8]}").queue
        ch.basic_publish(b"a", routing_key=queue)
        alarm.set_vm_memory_high_watermark(0)
        ch.basic_publish(b"b", routing_key=queue)
        time.sleep(1.5)
        alarm.set_vm_memory_high_watermark(0.4)
        time.sleep(0.5)
        ch.basic_publish(b"c", routing_key=queue)
        # RabbitMQ can answer a passive declare before publishes still on their way from the
        # channel to the queue process have landed: poll for the count.
        deadline = time.monotonic() + 10
        while (count := within(10, ch.queue_declare, queue, passive=True).message_count) < 3:
            assert time.monotonic() < deadline, f"only {count} of 3 messages reached the queue"
            time.sleep(0.1)
        assert count == 3
        assert conn.is_open
        ch.queue_delete(queue)
    finally:
        within(10, conn.close)


# --------------------------------------------------------------------------- refused logins


@needs_broker
@pytest.mark.parametrize("options", ["", "?protocol=0-8", "?auth_mechanism=AMQPLAIN"])
def test_wrong_password_is_authentication_error_at_once(
    new_connection: NewConnection, node: PrivateNode, options: str
) -> None:
    url = f"amqp://guest:not-the-password@127.0.0.1:{node.port}/{options}"
    conn = new_connection(url)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        within(10, conn.connect)
    assert time.monotonic() - started < 3
    assert info.value.reply_code == 403
    assert "ACCESS_REFUSED" in str(info.value)
    assert "not-the-password" not in str(info.value)
    assert not conn.is_open
    within(5, conn.close)


@needs_broker
def test_a_password_too_long_for_the_handshake_fails_at_once_saying_why(
    new_connection: NewConnection, node: PrivateNode
) -> None:
    # A 5000-character token made a start-ok frame larger than the 4096 bytes allowed
    # before tuning: RabbitMQ reset the connection after 3 s, and the error said only that.
    token = "eyJhbGciOi" * 500
    conn = new_connection(f"amqp://guest:{token}@127.0.0.1:{node.port}/")
    started = time.monotonic()
    with pytest.raises(LocalProtocolError, match="4096 bytes allowed before connection.tune") as info:
        within(10, conn.connect)
    assert time.monotonic() - started < 2
    assert token[:20] not in str(info.value)
    assert not conn.is_open
    within(5, conn.close)


@needs_broker
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_vhost_is_not_allowed(new_connection: NewConnection, node: PrivateNode, protocol: str) -> None:
    conn = new_connection(f"{node.url}no-such-vhost?protocol={protocol}")
    with pytest.raises(NotAllowed) as info:
        within(10, conn.connect)
    assert info.value.reply_code == 530
    assert "no-such-vhost" in str(info.value)
    assert not conn.is_open
    within(5, conn.close)


@needs_broker
def test_exclusive_queue_of_another_connection_closes_only_the_channel(connect: Connect, node: PrivateNode) -> None:
    with connect(node.url) as owner, connect(node.url) as other:
        queue = owner.channel().queue_declare("", exclusive=True).queue
        ch = other.channel()
        with pytest.raises(ResourceLocked) as info:
            within(10, ch.basic_consume, queue, callback=lambda m: None)
        assert info.value.reply_code == 405 and queue in str(info.value)
        assert not ch.is_open and other.is_open
        # The connection is fine: a new channel works.
        ch2 = other.channel()
        mine = ch2.queue_declare("", exclusive=True).queue
        ch2.basic_publish(b"still fine", routing_key=mine)
        msg = eventually(lambda: ch2.basic_get(mine, no_ack=True), what="basic.get")
        assert msg.body == b"still fine"


# --------------------------------------------------------------------------- heartbeats


# Blocking only: it proves that the I/O thread keeps up the heartbeats while a callback
# runs in the user's thread.  The asyncio driver runs callbacks on the event loop, where a
# callback that blocks does cost the connection (as its module docstring says).
@needs_broker
@blocking_only
def test_slow_callback_does_not_cost_the_connection(connect: Connect, node: PrivateNode) -> None:
    name = connection_name()
    queue = f"slow-{uuid.uuid4().hex[:8]}"
    conn = connect(node.url + "?heartbeat=2", name)
    try:
        assert conn.heartbeat == 2
        ch = conn.channel()
        ch.queue_declare(queue)
        got: list[Message] = []

        def slow(msg: Message) -> None:
            if not got:
                time.sleep(6)  # three heartbeat intervals, without touching the connection
            got.append(msg)

        ch.basic_consume(queue, callback=slow)
        ch.basic_publish(b"take your time", routing_key=queue)
        within(20, conn.drain_events, timeout=10)
        assert [m.body for m in got] == [b"take your time"]
        assert conn.is_open
        rows = listed(node, name)
        assert [row[1:3] for row in rows] == [["running", "2"]]
        got[0].ack()
        ch.basic_publish(b"next", routing_key=queue)
        within(20, conn.drain_events, timeout=10)
        got[1].ack()
    finally:
        within(10, conn.close)
    # Both acks reached the broker: nothing came back to the queue at close.
    assert message_count(node.url, queue) == 0
    with connect(node.url) as cleanup:
        cleanup.channel().queue_delete(queue)


@needs_broker
def test_frozen_broker_is_detected_by_missed_heartbeats(connect: Connect, fault_node: PrivateNode) -> None:
    conn = connect(fault_node.url + "?heartbeat=2")
    ch = conn.channel()
    waiter = start_waiter(lambda: conn.drain_events(timeout=60))
    paused_at = time.monotonic()
    fault_node.pause()
    try:
        err = waiter.outcome(15)
        assert isinstance(err, ConnectionLost), repr(err)
        assert waiter.ended - paused_at <= 2 * 2 + 1.5
        assert "heartbeat" in str(err)
        with pytest.raises(ConnectionLost):
            within(3, ch.queue_declare, "", exclusive=True)
        within(3, conn.close)  # the broker is still frozen: close must not wait for it
    finally:
        fault_node.resume()
    with connect(fault_node.url) as again:
        assert again.channel().is_open


@needs_broker
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_black_hole_fails_an_idle_connections_next_call_at_once(
    connect: Connect, proxy: TCPProxy, protocol: str
) -> None:
    # Nobody waits on this connection; its I/O thread notices the silence, so the next
    # call fails at once instead of after rpc_timeout.
    conn = connect(proxy.url(query=f"heartbeat=2&protocol={protocol}"), rpc_timeout=30)
    ch = conn.channel()
    proxy.freeze()
    time.sleep(2 * 2 + 1.5)
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="heartbeat"):
        within(10, ch.queue_declare, "", exclusive=True)
    assert time.monotonic() - started < 1
    within(3, conn.close)


@needs_broker
def test_close_on_a_black_holed_connection_ends_after_missed_heartbeats(connect: Connect, proxy: TCPProxy) -> None:
    # close() waits for close-ok; with the broker unreachable, missed heartbeats end that
    # wait after two intervals, not rpc_timeout.
    conn = connect(proxy.url(query="heartbeat=2"), rpc_timeout=60)
    conn.channel()
    proxy.freeze()
    started = time.monotonic()
    within(15, conn.close)
    assert time.monotonic() - started <= 2 * 2 + 1.5
    assert not conn.is_open


@needs_broker
@pytest.mark.parametrize("size", [5_000_000, 40_000_000], ids=["io-thread-writes", "publisher-writes"])
def test_black_hole_during_a_large_publish_is_detected_by_heartbeats(
    connect: Connect, proxy: TCPProxy, size: int
) -> None:
    conn = connect(proxy.url(query="heartbeat=2"))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    body = b"x" * size
    proxy.freeze()  # the broker stops reading: the publish fills the socket buffers
    frozen_at = time.monotonic()

    def publish_then_call() -> None:
        ch.basic_publish(body, routing_key=queue)
        ch.queue_declare(queue, passive=True)

    waiter = Waiter(publish_then_call)
    waiter.start()
    waiter.join(2 * 2 + 4)
    try:
        assert not waiter.is_alive(), "still blocked 8 s after the broker went silent (heartbeat 2 s)"
        assert isinstance(waiter.error, ConnectionLost), repr(waiter.error)
        assert waiter.ended - frozen_at <= 2 * 2 + 3
    finally:
        proxy.cut("reset")  # frees a blocked writer either way
        waiter.join(10)
        within(5, conn.close)


def stuck_publisher(connect: Connect, proxy: TCPProxy, write_timeout: float | None = None) -> tuple[Connection, Waiter, float]:
    """A blocking connection (no heartbeats) whose publish of 40 MB waits for room in the
    socket: the proxy is frozen, so the broker stops reading.  Returns the connection, the
    publisher's Waiter and when the proxy froze."""
    conn = connect(proxy.url(query="heartbeat=0"))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    if write_timeout is not None:
        conn._write_timeout = write_timeout
    proxy.freeze()  # the broker stops reading: the publish fills the socket buffers
    frozen_at = time.monotonic()
    waiter = Waiter(lambda: ch.basic_publish(b"x" * 40_000_000, routing_key=queue))
    waiter.start()
    return conn, waiter, frozen_at


@needs_broker
@blocking_only  # the blocking driver's own write path (asyncio's transport has its own)
def test_a_write_waiting_for_room_when_another_thread_closes_sees_the_close(connect: Connect, proxy: TCPProxy) -> None:
    # A publisher waits for room in a socket the broker no longer reads; another thread's
    # close() cannot finish its handshake and drops the socket.  The publisher must learn
    # that the connection was closed, not that it was lost ("Bad file descriptor").
    conn, waiter, _ = stuck_publisher(connect, proxy)
    try:
        time.sleep(1)
        assert waiter.is_alive()  # still writing
        within(5, conn.close, timeout=1)  # no close-ok through a frozen proxy: it gives up
        error = waiter.outcome(10)
        assert isinstance(error, ConnectionClosedError), repr(error)
        assert not conn.is_open
    finally:
        proxy.cut("reset")
        within(5, conn.close)


@needs_broker
@blocking_only  # the blocking driver's own write path (asyncio's transport has its own)
def test_write_the_socket_takes_nothing_of_times_out(connect: Connect, proxy: TCPProxy) -> None:
    # No heartbeats to notice the silence: the write's own deadline ends it.  (At least 31 s
    # by default -- blocked_timeout + 30 -- shortened here so that the test stays quick.)
    conn, waiter, frozen_at = stuck_publisher(connect, proxy, write_timeout=1.0)
    try:
        error = waiter.outcome(10)
        assert isinstance(error, ConnectionLost), repr(error)
        assert "took no data for 1 seconds" in str(error)
        assert 1.0 <= waiter.ended - frozen_at <= 4
        assert not conn.is_open
    finally:
        proxy.cut("reset")
        within(5, conn.close)


@needs_broker
@blocking_only  # the blocking driver's own write path (asyncio's transport has its own)
def test_a_slow_link_is_not_a_stalled_one(connect: Connect, proxy: TCPProxy) -> None:
    # The write timeout bounds a stall, not the whole write: a big body on a slow link
    # that keeps taking data gets through however long it takes in all.
    conn = connect(proxy.url(query="heartbeat=0"))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    ch.confirm_select()
    conn._write_timeout = 1.0
    proxy.throttle("up", 2_000_000)  # 2 MB/s: the 8 MB body takes about 4 s
    started = time.monotonic()
    try:
        within(60, ch.basic_publish, b"x" * 8_000_000, routing_key=queue)
        took = time.monotonic() - started
    finally:
        proxy.throttle("up", None)
    assert took > 2 * conn._write_timeout, f"the link was not slow enough to prove anything ({took:.1f} s)"
    assert ch.wait_for_confirms(timeout=30)  # the broker has it, whole
    within(5, conn.close)


@needs_broker
@blocking_only  # threads blocked in the blocking driver's socket calls
def test_close_wakes_a_thread_waiting_in_drain_events(connect: Connect, proxy: TCPProxy) -> None:
    conn = connect(proxy.url(query="heartbeat=0"))
    conn.channel()
    waiter = start_waiter(conn.drain_events)  # no timeout: it would wait for ever
    proxy.freeze()  # no close-ok will come
    within(5, conn.close, timeout=1)
    error = waiter.outcome(5)
    # The close is what ended it, not a socket closed under its feet.
    assert isinstance(error, ConnectionClosedError), repr(error)
    assert "file descriptor" not in str(error)
    with pytest.raises(ConnectionClosedError):  # and so for every later call
        conn.channel()


@needs_broker
@blocking_only  # the blocking driver throws what cuts its wait short into the operation
def test_an_interrupt_as_a_call_gets_the_request_slot_gives_it_back(connect: Connect, amqp_url: str) -> None:
    """The wait for a channel's request slot claims it in its predicate: an interrupt
    thrown into the call right after (as the driver's _run does with what cut its wait
    short) left the slot taken for ever, and every later request on the channel timed out
    waiting for 'the channel's previous request'."""
    conn = connect(amqp_url)
    ch = conn.channel()
    ch._rpc_busy = True  # another thread's request is under way
    op = ch._idle(time.monotonic() + 5, "queue.declare")
    wait = next(op)
    ch._give_slot_back()  # that request is done
    assert wait.predicate()  # the waiting call's look claims the slot ...
    with pytest.raises(Interrupt):
        op.throw(Interrupt())  # ... and the interrupt lands before the call goes on
    assert not ch._rpc_busy
    assert within(5, ch.queue_declare, "", exclusive=True).queue  # the next request goes through
    within(5, conn.close)


@needs_broker
@blocking_only  # threads blocked in the blocking driver's socket calls
@pytest.mark.parametrize("round_", range(5))
def test_a_close_that_drops_the_socket_under_a_reader_is_no_cut_short_read(
        connect: Connect, amqp_url: str, round_: int) -> None:
    """close(timeout=0) drops the socket while another thread is in recv(): the reader's
    failed recv() took nothing, so it is no read cut short by a signal -- yet it stored
    ConnectionLost('... cut short ...') for every later call (and for threads still
    waiting), which says 'network lost, reconnect' of a connection closed on purpose."""
    conn = connect(amqp_url)
    conn.channel()
    waiter = start_waiter(conn.drain_events)
    time.sleep(0.05)
    within(5, conn.close, timeout=0)
    assert isinstance(waiter.outcome(5), ConnectionClosedError)
    with pytest.raises(ConnectionClosedError):
        conn.channel()


@needs_broker
@blocking_only  # threads blocked in the blocking driver's socket calls
def test_close_keeps_its_timeout_while_another_thread_is_stuck_writing(connect: Connect, proxy: TCPProxy) -> None:
    conn = connect(proxy.url(query="heartbeat=0"))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    proxy.freeze()  # the broker stops reading: the publish fills the socket buffers
    writer = start_waiter(lambda: ch.basic_publish(b"x" * 40_000_000, routing_key=queue))
    started = time.monotonic()
    within(10, conn.close, timeout=1)
    assert time.monotonic() - started < 2.5
    assert not conn.is_open
    # The stuck write ends too, with an error of leveret's.
    assert isinstance(writer.outcome(5), LeveretError)


@needs_broker
@blocking_only  # the blocking driver's read path
def test_drain_events_with_timeout_zero_reads_what_has_arrived(connect: Connect, node: PrivateNode) -> None:
    # A polling loop (drain_events(timeout=0) between other work) sees a delivery as soon
    # as its bytes are in, not only when the I/O thread happens to read them.
    conn = connect(node.url)
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    got: list[Message] = []
    ch.basic_consume(queue, callback=got.append, no_ack=True)
    for _ in range(3):
        ch.basic_publish(b"x", routing_key=queue)
        time.sleep(0.05)  # ample for loopback; the I/O thread reads every 0.2 s or so
        polls = 0
        while not got and polls < 3:
            polls += 1
            try:
                conn.drain_events(timeout=0)
            except socket.timeout:
                time.sleep(0.001)
        assert got, "three polls 50 ms after the publish found nothing"
        got.clear()
    within(5, conn.close)


@needs_broker
@blocking_only  # the blocking driver's I/O thread
def test_connect_again_after_a_lost_connection_leaves_no_thread_behind(connect: Connect, proxy: TCPProxy) -> None:
    conn = connect(proxy.url(query="heartbeat=0"))
    for _ in range(3):
        proxy.cut("reset")
        with pytest.raises(ConnectionLost):
            within(10, conn.channel().queue_declare, "", exclusive=True)
        within(15, conn.connect)
        conn.channel().queue_declare("", exclusive=True)
    assert [t.name for t in threading.enumerate()].count("leveret-io") == 1
    within(5, conn.close)
    assert "leveret-io" not in [t.name for t in threading.enumerate()]


@needs_broker
def test_threads_connecting_at_once_share_one_connection(new_connection: NewConnection, node: PrivateNode) -> None:
    """Connecting lazily from several threads at once ("connect() unless open"): one
    connects, the others wait for it, and all get the same working connection -- not a
    handshake replaced by another half-way (a TimeoutError, a FrameTooLarge made of the
    other handshake's bytes, a connection that says it is open and is not).  With the
    asyncio driver the threads' calls run as concurrent tasks on its loop."""
    for _ in range(3):
        conn = new_connection(node.url)
        start = threading.Barrier(4)
        results: list[Any] = []

        def go() -> None:
            start.wait()
            try:
                results.append(conn.connect())
            except Exception as exc:  # noqa: BLE001 - reported below
                results.append(exc)

        in_threads(go, 4, 30)
        assert len(results) == 4 and all(r is conn for r in results), results
        assert conn.is_open
        within(10, conn.channel().queue_declare, "", exclusive=True)
        within(10, conn.close)
    time.sleep(0.2)
    assert "leveret-io" not in [t.name for t in threading.enumerate()]


@needs_broker
def test_channels_of_a_lost_connection_stay_closed_after_connect_again(connect: Connect, proxy: TCPProxy) -> None:
    """A connection is lost and the same object connects again: the new connection's
    channels reuse the old ids.  An old channel must say it is closed, its calls must say
    why (not the old ConnectionLost, as if the new connection were lost), and its close()
    must not put a channel.close on the new connection -- which would close the new
    channel of the same id.  Unconfirmed publishes are still listed on it."""
    conn = connect(proxy.url(query="heartbeat=0"))
    old = conn.channel()
    old.confirm_select()
    proxy.freeze("down")  # the publish reaches the broker; its confirm never comes back
    old.basic_publish(b"lost", routing_key="nowhere")
    proxy.cut("reset")
    with pytest.raises(ConnectionLost) as lost:
        within(10, old.queue_declare, "", exclusive=True)
    proxy.thaw()
    within(15, conn.connect)
    new = conn.channel()
    assert new.channel_id == old.channel_id
    assert not old.is_open and new.is_open
    with pytest.raises(ChannelClosedError, match="earlier connection") as closed:
        old.queue_declare("", exclusive=True)
    assert closed.value.__cause__ is lost.value
    with pytest.raises(ChannelClosedError, match="earlier connection"):
        old.basic_publish(b"x", routing_key="nowhere")
    assert old.unconfirmed == [1]
    within(5, old.close)  # nothing to do
    assert new.is_open
    queue = within(10, new.queue_declare, "", exclusive=True).queue
    new.basic_publish(b"still here", routing_key=queue)
    msg = eventually(lambda: new.basic_get(queue, no_ack=True), what="basic.get of the message")
    assert msg.body == b"still here"
    within(5, conn.close)


def most_read_ahead(conn: Any, ch: Any, queue: str, measure: Callable[[], int]) -> tuple[int, Callable[[], int]]:
    """Consume ``queue`` (no_ack, no prefetch limit) with a first callback that is busy for
    2 s, in which the I/O thread reads ahead unprompted; the most ``measure()`` (what was
    read ahead) gave meanwhile, and a count of the deliveries run so far."""
    most = 0
    seen = 0

    def slow(msg: Message) -> None:
        nonlocal most, seen
        seen += 1
        if seen == 1:
            for _ in range(20):
                time.sleep(0.1)
                most = max(most, measure())

    ch.basic_consume(queue, callback=slow, no_ack=True)
    conn.drain_events(timeout=10)
    return most, lambda: seen


@needs_broker
@blocking_only  # the blocking driver's I/O thread and its read-ahead
def test_read_ahead_stays_bounded_while_a_callback_is_slow(connect: Connect, node: PrivateNode) -> None:
    from leveret.client.blocking import _READ_AHEAD_LIMIT, _RECV_SIZE

    conn = connect(node.url)
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    n = 3 * _READ_AHEAD_LIMIT
    with conn.corked():
        for _ in range(n):
            ch.basic_publish(b"x", routing_key=queue)
    ch.confirm_select()
    ch.publish_confirmed(b"x", routing_key=queue)  # all of them are in
    most, _ = most_read_ahead(conn, ch, queue, lambda: len(conn._pending))
    # One read past the limit at most (a read of _RECV_SIZE bytes, ~20 bytes a delivery).
    assert _READ_AHEAD_LIMIT / 2 < most <= _READ_AHEAD_LIMIT + _RECV_SIZE // 20
    within(10, conn.close)


@needs_broker
@blocking_only  # the blocking driver's I/O thread
def test_read_ahead_of_big_messages_is_bounded_in_bytes(connect: Connect, node: PrivateNode) -> None:
    # Bounded by count alone, the I/O thread read a whole queue of 1 MiB messages into
    # memory while a callback was busy (200 MiB here; up to 20 GiB); py-amqp reads none.
    from leveret.client.blocking import _READ_AHEAD_BYTES, _RECV_SIZE

    conn = connect(node.url)
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    body = b"m" * (1024 * 1024)
    ch.confirm_select()
    for _ in range(60):
        ch.basic_publish(body, routing_key=queue)
    ch.wait_for_confirms(30)
    most, seen = most_read_ahead(conn, ch, queue, lambda: sum(len(item.body) for _, item in list(conn._pending)))
    assert _READ_AHEAD_BYTES / 2 < most <= _READ_AHEAD_BYTES + _RECV_SIZE + len(body)
    while seen() < 60:  # and the rest comes all the same
        conn.drain_events(timeout=10)
    within(10, conn.close)


@needs_broker
@blocking_only  # the blocking driver's I/O thread
def test_a_connection_dropped_without_close_is_collected_with_its_thread_and_socket(
    connect: Connect, node: PrivateNode
) -> None:
    import gc

    name = connection_name()
    conn = connect(node.url, name=name)
    conn.channel().queue_declare("", exclusive=True)
    eventually(lambda: listed(node, name), what="the broker listing the connection")
    ref = weakref.ref(conn)
    io_thread = conn._io_thread
    assert io_thread is not None and io_thread.is_alive()
    del conn
    gc.collect()
    assert ref() is None, "the connection is kept alive (by its own I/O thread?)"
    eventually(lambda: not io_thread.is_alive(), 5, "the I/O thread ending")
    eventually(lambda: not listed(node, name), 10, "the broker seeing the socket closed")


@needs_broker
def test_a_socket_numbered_above_1023_works(connect: Connect, node: PrivateNode) -> None:
    # select() cannot watch descriptors past 1023; a process with many open files gets such
    # numbers for its sockets, and the connection must not take that for a lost connection.
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.dup(0))
        with socket.socket() as probe:  # the kernel hands out the lowest free number
            assert probe.fileno() > 1023
        conn = connect(node.url)
        try:
            ch = conn.channel()
            queue = ch.queue_declare("", exclusive=True).queue
            got: list[bytes] = []
            ch.basic_consume(queue, no_ack=True, callback=lambda msg: got.append(bytes(msg.body)))
            for i in range(3):
                ch.basic_publish(b"m%d" % i, routing_key=queue)
            while len(got) < 3:
                within(10, conn.drain_events, timeout=5)
            assert got == [b"m0", b"m1", b"m2"]
        finally:
            within(5, conn.close)
    finally:
        for fd in fillers:
            os.close(fd)


@pytest.mark.parametrize("with_poll", [True, False], ids=["poll", "select-fallback"])
def test_socket_readiness_waits(monkeypatch: pytest.MonkeyPatch, with_poll: bool) -> None:
    # The blocking driver's waits for a readable / writable socket: poll(), or select()
    # where the platform has no poll() (Windows); timeouts in milliseconds, None = for ever.
    import select

    from leveret.client import blocking

    if not with_poll:
        monkeypatch.delattr(select, "poll")
    a, b = socket.socketpair()
    with a, b:
        readable, writable = blocking._pollers(a)
        started = time.monotonic()
        assert not readable(50)
        assert 0.04 <= time.monotonic() - started < 2
        assert not readable(0)
        assert writable(0) and writable(None)
        b.sendall(b"x")
        assert readable(1000) and readable(None) and readable(0)
        a.setblocking(False)
        try:  # fill a's send buffer: then it is not writable until b reads
            while True:
                a.send(b"y" * 65536)
        except BlockingIOError:
            pass
        assert not writable(20)


EXIT_SCRIPT = """
import sys
from leveret.client import Connection, Message

url, queue, n, size, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
conn = Connection(url).connect()
ch = conn.channel()
if how == "confirms":
    ch.confirm_select()
for i in range(n):
    ch.basic_publish(Message(b"%08d" % i + b"x" * (size - 8)), routing_key=queue)
if how == "exit":
    sys.exit(0)
# otherwise the script just ends: no close, no wait
"""


@pytest.mark.parametrize("how,n,size", [
    ("end", 5000, 16), ("exit", 5000, 16), ("confirms", 5000, 16), ("end", 40, 300_000),
], ids=["falls-off-the-end", "sys-exit", "confirm-mode", "large-bodies"])
def test_publishes_queued_when_the_process_exits_reach_the_broker(node: PrivateNode, how: str, n: int,
                                                                  size: int) -> None:
    # A burst of publishes is written by the I/O thread a moment later (see _kick); a script
    # that publishes and ends without close() must not lose the tail of the burst.  Writing
    # it at exit is not enough: with the broker's confirms unread the socket is reset, and
    # the broker drops what it had not read yet.  Connections are closed at exit, with the
    # close handshake.
    import subprocess
    import sys

    queue = f"exit-{how}-{uuid.uuid4().hex[:8]}"
    with open_connection(Connection, node.url) as conn:
        conn.channel().queue_declare(queue, timeout=10)
    try:
        proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, node.url, queue, str(n), str(size), how],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # The broker takes what it received before the socket closed; give it a moment.
        eventually(lambda: message_count(node.url, queue) == n, 20, f"{n} messages in the queue")
        bodies = queue_bodies(node.url, queue)
        assert [int(b[:8]) for b in bodies] == list(range(n))
        assert all(len(b) == size for b in bodies)
    finally:
        with open_connection(Connection, node.url) as conn:
            conn.channel().queue_delete(queue, timeout=10)


def test_nothing_listening_is_connection_refused(new_connection: NewConnection) -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        conn = new_connection(f"amqp://guest:guest@127.0.0.1:{port}/", connection_timeout=5)
        with pytest.raises(ConnectionRefusedError):
            within(10, conn.connect)
    assert not conn.is_open
    within(5, conn.close)


# --------------------------------------------------------------------------- TCP cuts


@needs_broker
@pytest.mark.parametrize("mode", ["reset", "close"])
def test_cut_in_the_middle_of_a_large_publish(connect: Connect, node: PrivateNode, proxy: TCPProxy, mode: Mode) -> None:
    conn = connect(proxy.url(), rpc_timeout=15)
    try:
        ch = conn.channel()
        queue = ch.queue_declare(f"bigcut-{uuid.uuid4().hex[:8]}").queue
        proxy.cut_after(up=300_000, mode=mode)  # ~2 frames into a 5 MB body
        with pytest.raises(ConnectionLost):
            within(20, ch.basic_publish, b"x" * 5_000_000, routing_key=queue)
            # publishes may be written in the background: the next call sees the cut
            within(20, ch.queue_declare, queue, passive=True)
        assert not conn.is_open
    finally:
        within(5, conn.close)
    # The broker threw the half message away.
    assert message_count(node.url, queue) == 0
    with connect(node.url) as cleanup:
        cleanup.channel().queue_delete(queue)


@needs_broker
@pytest.mark.parametrize("mode", ["reset", "close"])
def test_cut_in_the_middle_of_a_delivery(connect: Connect, node: PrivateNode, proxy: TCPProxy, mode: Mode) -> None:
    queue = f"delcut-{uuid.uuid4().hex[:8]}"
    body = bytes(range(256)) * 8192  # 2 MiB: many body frames
    with connect(node.url) as direct:
        dch = direct.channel()
        dch.queue_declare(queue)
        dch.confirm_select()
        dch.basic_publish(body, routing_key=queue)
        dch.wait_for_confirms(timeout=10)

    conn = connect(proxy.url(), rpc_timeout=15)
    got: list[Message] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        proxy.cut_after(down=700_000, mode=mode)
        ch.basic_consume(queue, callback=got.append)
        with pytest.raises(ConnectionLost):
            within(20, conn.drain_events, timeout=15)
        assert got == []  # no partial message reaches the callback
        with pytest.raises(ConnectionLost):
            within(5, ch.basic_ack, 1)
    finally:
        within(5, conn.close)
    # Never acked, so the broker still has it, whole.
    eventually(lambda: message_count(node.url, queue) == 1, what="requeue of the message")
    assert queue_bodies(node.url, queue) == [body]


def _acked_tags(transcript: bytes, channel: int, published: int) -> set[int]:
    """The delivery tags the broker's basic.ack / basic.nack frames in ``transcript`` settle
    (complete frames only: a frame cut in half never reached the client whole)."""
    settled: set[int] = set()
    offset = 0
    while offset + 7 <= len(transcript):
        frame_type, chan, size = struct.unpack_from(">BHI", transcript, offset)
        if offset + 8 + size > len(transcript):
            break
        payload = transcript[offset + 7: offset + 7 + size]
        offset += 8 + size
        if frame_type == 1 and chan == channel and payload[:4] in (b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78"):
            tag, bits = struct.unpack_from(">QB", payload, 4)
            if bits & 1:
                settled.update(t for t in range(1, published + 1) if tag == 0 or t <= tag)
            else:
                settled.add(tag)
    return settled


@needs_broker
@pytest.mark.parametrize("let_through", [0, 10, 21, 50, 200])
def test_cut_among_the_confirms_reports_exactly_the_unconfirmed(
    connect: Connect, node: PrivateNode, let_through: int
) -> None:
    queue = f"confcut-{uuid.uuid4().hex[:8]}"
    with TCPProxy(node.port, record=True) as proxy:
        conn = connect(proxy.url(), rpc_timeout=15)
        try:
            ch = conn.channel()
            ch.queue_declare(queue)
            ch.confirm_select()
            # Hold back what the broker sends: its acks wait in the proxy's socket buffer.
            proxy.freeze("down")
            tags = [ch.basic_publish(f"m{i}".encode(), routing_key=queue) for i in range(1, 101)]
            assert tags == list(range(1, 101))
            eventually(lambda: message_count(node.url, queue) == 100, what="100 messages queued")
            # Let ``let_through`` bytes of acks reach the client, then cut (often mid-frame).
            proxy.cut_after(down=let_through, mode="close")
            proxy.thaw()
            time.sleep(0.5)
            proxy.cut("close")  # in case all the acks took fewer bytes
            lost: ConnectionLost | None = None
            try:
                within(20, ch.wait_for_confirms, timeout=15)
            except ConnectionLost as exc:
                lost = exc
            if lost is None:  # every ack got through before the cut
                with pytest.raises(ConnectionLost) as info:
                    within(10, ch.queue_declare, queue, passive=True)
                lost = info.value
            cid = ch.channel_id
        finally:
            within(5, conn.close)
        acked = _acked_tags(proxy.transcript("down"), cid, 100)
    assert lost is not None
    expected = sorted(set(range(1, 101)) - acked)
    if let_through == 0:
        assert expected == list(range(1, 101))
    assert lost.unconfirmed == ({cid: expected} if expected else {})
    # Unknown fate is not lost: the broker had them all.
    assert sorted(queue_bodies(node.url, queue)) == sorted(f"m{i}".encode() for i in range(1, 101))
    with connect(node.url) as cleanup:
        cleanup.channel().queue_delete(queue)


# --------------------------------------------------------------------------- scripted servers


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _until_eof(sock: socket.socket) -> None:
    """Wait until the client hangs up (or 10 s pass)."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    frame_type, channel, size = struct.unpack(">BHI", _recv_exactly(sock, 7))
    payload = _recv_exactly(sock, size)
    assert _recv_exactly(sock, 1) == b"\xce"
    return frame_type, channel, payload


def _method(class_id: int, method_id: int, args: bytes, channel: int = 0) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def _longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


# connection.start (0-9-1): version 0-9, no server properties, PLAIN, en_US.
START = _method(10, 10, b"\x00\x09" + struct.pack(">I", 0) + _longstr(b"PLAIN") + _longstr(b"en_US"))
TUNE = _method(10, 30, struct.pack(">HIH", 2047, 131072, 0))
OPEN_OK = _method(10, 41, b"\x00")


class ScriptedServer:
    """A one-connection server on 127.0.0.1 that runs ``script(sock)`` and records the
    reply code of any connection.close (0-9-1: class 10, method 50) the client sends."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.close_codes: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.listener.close()
        self.thread.join(5)

    def url(self, query: str = "") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(10)
            try:
                self.script(sock)
            except BaseException as exc:
                self.error = exc

    def read_until_close(self, sock: socket.socket) -> None:
        """Read the client's frames until its connection.close (recorded) or EOF."""
        try:
            while True:
                frame_type, _, payload = _read_frame(sock)
                if frame_type == 1 and payload[:4] == b"\x00\x0a\x00\x32":
                    self.close_codes.append(struct.unpack_from(">H", payload, 4)[0])
                    return
        except (EOFError, OSError):
            return


def _answer_with_header(header: bytes) -> Callable[[socket.socket], None]:
    def script(sock: socket.socket) -> None:
        _recv_exactly(sock, 8)
        sock.sendall(header)

    return script


@pytest.mark.parametrize(
    ("protocol", "answer", "names"),
    [
        ("0-8", b"AMQP\x00\x00\x09\x01", ("0-8", "0-9-1")),
        ("0-9-1", b"AMQP\x01\x01\x08\x00", ("0-9-1", "0-8")),
        ("0-9-1", b"AMQP\x00\x01\x00\x00", ("0-9-1", "1.0")),
    ],
    ids=["0-8-client-0-9-1-server", "0-9-1-client-0-8-server", "0-9-1-client-1.0-server"],
)
def test_server_with_another_protocol_is_version_mismatch(new_connection: NewConnection, protocol: str, answer: bytes,
                                                          names: tuple[str, str]) -> None:
    with ScriptedServer(_answer_with_header(answer)) as server:
        conn = new_connection(server.url(f"protocol={protocol}"), connection_timeout=5)
        with pytest.raises(VersionMismatch) as info:
            within(10, conn.connect)
        for name in names:
            assert name in str(info.value)
        assert not conn.is_open
        within(5, conn.close)


def test_version_mismatch_names_amqp_0_10(new_connection: NewConnection) -> None:
    with ScriptedServer(_answer_with_header(b"AMQP\x01\x01\x00\x0a")) as server:
        conn = new_connection(server.url(), connection_timeout=5)
        with pytest.raises(VersionMismatch) as info:
            within(10, conn.connect)
        assert "0-9-1" in str(info.value) and "0-10" in str(info.value)


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x1e\x00", 501),  # frame-end is not 0xCE
        (b"\x09\x00\x00\x00\x00\x00\x00\xce", 501),  # frame type 9 does not exist
        (_method(10, 99, b""), 540),  # connection method 99 does not exist
        (_method(60, 80, struct.pack(">QB", 1, 0)), 504),  # basic.ack on channel 0
        (_method(10, 30, b"\x00"), 502),  # connection.tune cut short
    ],
    ids=["bad-frame-end", "unknown-frame-type", "unknown-method", "channel-method-on-0", "truncated-args"],
)
@pytest.mark.parametrize("when", ["after-start-ok", "after-open"])
def test_garbage_from_the_server_is_answered_with_connection_close(
    new_connection: NewConnection, garbage: bytes, code: int, when: str
) -> None:
    def script(sock: socket.socket) -> None:
        _recv_exactly(sock, 8)
        sock.sendall(START)
        _read_frame(sock)  # start-ok
        if when == "after-open":
            sock.sendall(TUNE)
            _read_frame(sock)  # tune-ok
            _read_frame(sock)  # open
            sock.sendall(OPEN_OK)
            time.sleep(0.3)  # let the client settle in OPEN
        sock.sendall(garbage)
        server.read_until_close(sock)

    with ScriptedServer(script) as server:
        conn = new_connection(server.url(), connection_timeout=5, rpc_timeout=5)
        with pytest.raises(RemoteProtocolError) as info:
            within(10, conn.connect)  # after-start-ok: raises here
            within(10, conn.channel)  # after-open: here (or in connect, if read by then)
        assert info.value.reply_code == code
        server.thread.join(5)
        assert server.error is None, repr(server.error)
        assert server.close_codes == [code]
        with pytest.raises(RemoteProtocolError):
            within(5, conn.channel)  # every later call reports it
        within(5, conn.close)


_FUZZ_METHODS = [
    (10, 50), (10, 60), (10, 61), (10, 10), (20, 40), (20, 41), (20, 20), (20, 11),
    (60, 60), (60, 50), (60, 71), (60, 72), (60, 80), (60, 120), (60, 30), (60, 21),
    (50, 11), (40, 11), (85, 11), (90, 11), (99, 99),
]


def _fuzz_frames(seed: int) -> bytes:
    """A few well-framed frames with random contents (and now and then a broken frame)."""
    import random

    rnd = random.Random(seed)
    out = b""
    for _ in range(rnd.randint(1, 4)):
        channel = rnd.choice([0, 1, 1, 2])
        kind = rnd.random()
        if kind < 0.5:
            class_id, method_id = rnd.choice(_FUZZ_METHODS)
            out += _method(class_id, method_id, rnd.randbytes(rnd.randint(0, 40)), channel)
        elif kind < 0.8:  # a delivery: method, header with a random size, some body
            tag = rnd.randint(0, 5)
            args = bytes([3]) + b"ctg" + struct.pack(">QB", tag, 0) + b"\x00" + bytes([1]) + b"q"
            out += _method(60, 60, args, channel)
            size = rnd.choice([0, 1, 10, 2**40])
            header = struct.pack(">HHQH", 60, 0, size, rnd.choice([0, 0x8000, 0xFFFF]))
            header += rnd.randbytes(rnd.randint(0, 8))
            out += struct.pack(">BHI", 2, channel, len(header)) + header + b"\xce"
            body = rnd.randbytes(rnd.randint(0, 12))
            out += struct.pack(">BHI", 3, channel, len(body)) + body + b"\xce"
        elif kind < 0.9:
            frame_type = rnd.choice([2, 3, 8])
            payload = rnd.randbytes(rnd.randint(0, 20))
            out += struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"
        else:
            out += rnd.randbytes(rnd.randint(1, 30))
    return out


def _serve_handshake_and_channel_1(sock: socket.socket) -> None:
    """The scripted server's side of the handshake and of the client's channel.open."""
    _recv_exactly(sock, 8)
    sock.sendall(START)
    _read_frame(sock)  # start-ok
    sock.sendall(TUNE)
    _read_frame(sock)  # tune-ok
    _read_frame(sock)  # open
    sock.sendall(OPEN_OK)
    _read_frame(sock)  # channel.open
    sock.sendall(_method(20, 11, b"\x00\x00\x00\x00", channel=1))  # channel.open-ok


@pytest.mark.parametrize("seed", range(60))
def test_random_frames_from_the_server_raise_only_leveret_errors(new_connection: NewConnection, seed: int) -> None:
    from leveret.wire.errors import LeveretError

    def script(sock: socket.socket) -> None:
        _serve_handshake_and_channel_1(sock)
        time.sleep(0.05)
        sock.sendall(_fuzz_frames(seed))
        time.sleep(0.05)  # then hang up: whatever was accepted, the connection ends

    def client() -> BaseException:
        conn = new_connection(server.url(), connection_timeout=5, rpc_timeout=5)
        try:
            conn.connect()
            ch = conn.channel()
            ch.basic_consume("q", consumer_tag="ctg", nowait=True, callback=lambda m: None)
            while True:
                conn.drain_events(timeout=5)
        except BaseException as exc:
            return exc
        finally:
            conn.close()

    with ScriptedServer(script) as server:
        err = within(15, client)
    assert isinstance(err, LeveretError), f"{type(err).__name__}: {err}"
    assert not isinstance(err, TimeoutError), "the hang-up went unnoticed"


def test_confirms_before_a_violation_in_the_same_read_are_kept(new_connection: NewConnection) -> None:
    # basic.nack for publish 1 and then a basic.ack on channel 0, in one segment: the nack
    # happened, so publish 1 must show up as nacked (or unconfirmed), never vanish.
    def script(sock: socket.socket) -> None:
        _serve_handshake_and_channel_1(sock)
        _read_frame(sock)  # confirm.select
        sock.sendall(_method(85, 11, b"", channel=1))
        for _ in range(2 * 3):  # two publishes: method, header, body
            _read_frame(sock)
        nack = _method(60, 120, struct.pack(">QB", 1, 0), channel=1)
        sock.sendall(nack + _method(60, 80, struct.pack(">QB", 1, 0)))  # basic.ack on 0
        server.read_until_close(sock)

    with ScriptedServer(script) as server:
        conn = new_connection(server.url(), connection_timeout=5, rpc_timeout=5)
        within(10, conn.connect)
        ch = within(10, conn.channel)
        within(10, ch.confirm_select)
        ch.basic_publish(b"one", routing_key="q")
        ch.basic_publish(b"two", routing_key="q")
        with pytest.raises(RemoteProtocolError) as info:
            within(10, ch.wait_for_confirms, timeout=5)
        assert info.value.reply_code == 504
        assert 1 in ch.nacked + ch.unconfirmed, (ch.nacked, ch.unconfirmed)
        server.thread.join(5)
        assert server.close_codes == [504]
        within(5, conn.close)


def test_garbage_instead_of_connection_start_is_a_protocol_error(new_connection: NewConnection) -> None:
    def script(sock: socket.socket) -> None:
        _recv_exactly(sock, 8)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        _until_eof(sock)

    with ScriptedServer(script) as server:
        conn = new_connection(server.url(), connection_timeout=5)
        with pytest.raises(RemoteProtocolError) as info:
            within(10, conn.connect)
        assert not isinstance(info.value, VersionMismatch)
        assert info.value.reply_code >= 500
        within(5, conn.close)


@pytest.mark.parametrize("cut_after", [0, 3, len(START) - 1], ids=["no-bytes", "3-bytes", "all-but-one"])
def test_server_that_hangs_up_during_the_handshake_is_connection_lost(
    new_connection: NewConnection, cut_after: int
) -> None:
    def script(sock: socket.socket) -> None:
        _recv_exactly(sock, 8)
        sock.sendall(START[:cut_after])

    with ScriptedServer(script) as server:
        conn = new_connection(server.url(), connection_timeout=5)
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            within(10, conn.connect)
        assert time.monotonic() - started < 3
        within(5, conn.close)


def test_server_that_never_answers_times_out_after_connection_timeout(new_connection: NewConnection) -> None:
    def script(sock: socket.socket) -> None:
        _recv_exactly(sock, 8)
        _until_eof(sock)

    with ScriptedServer(script) as server:
        conn = new_connection(server.url(), connection_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            within(10, conn.connect)
        assert 0.8 <= time.monotonic() - started < 3
        within(5, conn.close)


# ------------------------------------------------------------------------------ abandon


def test_abandon_stops_the_connection_and_its_io_thread(amqp_url: str) -> None:
    conn = Connection(amqp_url).connect()
    ch = conn.channel()
    io_thread = conn._io_thread
    assert io_thread is not None and io_thread.is_alive()
    conn.abandon("handed over to the parent")
    assert not conn.is_open
    for call in (
        conn.channel, lambda: conn.drain_events(timeout=0.1), lambda: ch.queue_declare("", exclusive=True),
        lambda: ch.basic_publish(b"x", "", "nowhere"), ch.basic_get,
    ):
        with pytest.raises(ConnectionLost, match="handed over to the parent"):
            call()
    io_thread.join(timeout=5)
    assert not io_thread.is_alive()
    conn.close()  # nothing to do, nothing raised
    conn.abandon("again")  # nor here


def test_connect_after_abandon_opens_a_new_connection(amqp_url: str) -> None:
    """What a forked child does to get a connection of its own: abandon the inherited
    one, then connect() again."""
    from leveret.client import blocking

    conn = Connection(amqp_url).connect()
    old_thread = conn._io_thread
    old_ch = conn.channel()
    conn.abandon("inherited through fork")
    assert within(10, conn.connect) is conn
    assert conn.is_open and conn in blocking._live
    assert conn._io_thread is not None and conn._io_thread is not old_thread and conn._io_thread.is_alive()
    assert old_thread is not None and not old_thread.is_alive()
    ch = conn.channel()
    assert ch.channel_id == 1  # the abandoned connection's channels are forgotten
    queue = ch.queue_declare("", exclusive=True).queue
    ch.basic_publish(b"after abandon", "", queue)
    msg = within(5, lambda: ch.basic_get(queue, no_ack=True))
    assert msg is not None and msg.body == b"after abandon"
    # A channel of the abandoned connection is not one of the new connection's.
    assert not old_ch.is_open
    with pytest.raises(ChannelClosedError):
        old_ch.basic_publish(b"x", "", queue)
    conn.close()
    assert not conn.is_open and conn not in blocking._live


def test_connect_after_abandon_does_not_need_the_old_locks(amqp_url: str) -> None:
    """In a forked child the old connection's locks may be held for ever, by a thread of
    the parent that does not exist in the child: connect() after abandon() takes new ones.
    A thread that holds them and never lets go stands in for that parent thread."""
    conn = Connection(amqp_url).connect()
    old_thread = conn._io_thread
    conn.abandon("inherited through fork")
    assert old_thread is not None
    old_thread.join(timeout=5)
    held, release = threading.Event(), threading.Event()

    def hold_the_locks() -> None:
        with conn._wlock, conn._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_locks, daemon=True)
    holder.start()
    try:
        assert held.wait(5)
        within(10, conn.connect)
        ch = within(10, conn.channel)
        queue = within(10, lambda: ch.queue_declare("", exclusive=True).queue)
        ch.basic_publish(b"x", "", queue)
        msg = within(5, lambda: ch.basic_get(queue, no_ack=True))
        assert msg is not None and msg.body == b"x"
        within(10, conn.close)
    finally:
        release.set()
        holder.join(timeout=5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_never_writes_on_its_parents_connection(amqp_url: str) -> None:
    """Nothing to call: in a forked child every connection the parent had open is
    abandoned.  A call on it or its channels raises ConnectionLost (it would otherwise write
    on the parent's socket and wait for a reply the parent reads), the child's exit does
    not close it, and connect() gives the child a connection of its own.  The parent's
    connection, channel and exclusive queue carry on, and the child's publish arrives."""
    from leveret.client import blocking

    conn = Connection(amqp_url).connect()
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    parent = os.getpid()

    def child() -> str:
        assert not conn.is_open and conn not in blocking._live
        for call in (lambda: ch.queue_declare(queue, passive=True), lambda: ch.basic_publish(b"x", "", queue)):
            with pytest.raises(ConnectionLost, match=f"process {parent}, which opened it before fork"):
                within(5, call)
        blocking._close_at_exit()  # what the child's interpreter does at its exit
        within(10, conn.connect)
        own = conn.channel()
        own.basic_publish(b"from the child", "", queue)  # publishing to an exclusive queue is allowed
        blocking._close_at_exit()  # the child's own connection is closed, with the handshake
        assert not conn.is_open
        return "ok"

    assert in_forked_child(child, timeout=60) == "ok"
    time.sleep(0.2)  # long enough for a close or a FIN from the child to have reached the broker
    assert conn.is_open
    msg = within(5, lambda: ch.basic_get(queue, no_ack=True))
    assert msg is not None and msg.body == b"from the child"
    ch.basic_publish(b"after the fork", "", queue)
    msg = within(5, lambda: ch.basic_get(queue, no_ack=True))
    assert msg is not None and msg.body == b"after the fork"
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_fork_while_threads_write_and_connect_leaves_the_child_no_held_lock(node: PrivateNode) -> None:
    """At the fork one thread of the parent is inside a long write (the broker is not
    reading: it holds the write lock) and another inside connect() (the broker has not
    answered the protocol header: it holds the connect lock).  Those threads do not exist
    in the child, so their locks would never be released there: the calls on the first
    connection raise ConnectionLost at once, and connect() on either gives the child a
    connection of its own, instead of waiting for ever."""
    with TCPProxy(node.port) as proxy:
        busy = Connection(proxy.url(), connection_timeout=30).connect()
        ch = busy.channel()
        proxy.freeze("up")
        writer = threading.Thread(
            target=lambda: ch.basic_publish(b"x" * 30_000_000, routing_key="nowhere"), daemon=True
        )
        writer.start()
        connecting = Connection(proxy.url(), connection_timeout=30)
        connector = threading.Thread(target=connecting.connect, daemon=True)
        connector.start()
        time.sleep(0.5)  # both are waiting for the broker now
        assert busy._wlock.locked() and writer.is_alive() and connector.is_alive()

        def child() -> str:
            for call in (
                lambda: ch.basic_publish(b"small", routing_key="nowhere"),
                lambda: ch.queue_declare("", exclusive=True),
            ):
                with pytest.raises(ConnectionLost, match="before fork"):
                    within(5, call)
            for conn in (busy, connecting):
                conn.params.port = node.port  # around the frozen proxy
                within(10, conn.connect)
                queue = within(5, lambda: conn.channel().queue_declare("", exclusive=True).queue)
                assert queue
                within(10, conn.close)
            return "ok"

        assert in_forked_child(child, timeout=60) == "ok"
        proxy.thaw()
        writer.join(30)
        connector.join(30)
        assert not writer.is_alive() and connecting.is_open
        assert ch.queue_declare("", exclusive=True).queue  # the parent's carry on
        connecting.close()
        busy.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_abandons_its_copy_and_the_parent_carries_on(amqp_url: str) -> None:
    """The child closes its copy of the socket and sends nothing: the parent's TCP
    connection, channel and exclusive queue survive the child's exit."""
    conn = Connection(amqp_url).connect()
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 = abandoned as documented
        status = 1
        try:
            conn.abandon("inherited through fork")
            try:
                ch.queue_declare(queue, passive=True)
                status = 3
            except ConnectionLost as exc:
                status = 0 if "inherited through fork" in str(exc) and not conn.is_open else 4
        except BaseException:  # noqa: BLE001 - reported through the exit status
            status = 2
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0, wait_status
    time.sleep(0.2)  # long enough for a close or a FIN from the child to have reached the broker
    assert conn.is_open
    assert ch.queue_declare(queue, passive=True).queue == queue
    ch.basic_publish(b"after the fork", "", queue)
    msg = within(5, lambda: ch.basic_get(queue, no_ack=True))
    assert msg is not None and msg.body == b"after the fork"
    conn.close()


# --------------------------------------------------------------------------- interrupts


# The blocking driver only: it reads and writes in the calling thread, which a signal
# handler interrupts (asyncio's transport reads and writes in the event loop's callbacks).


@contextlib.contextmanager
def alarm_interrupts(where: Callable[[Any], bool] = lambda frame: True) -> Iterator[None]:
    """SIGALRM raises :class:`Interrupt` in the main thread while the block runs -- when
    ``where(frame)`` says so of the frame it lands in."""

    def handler(signum: int, frame: Any) -> None:
        if where(frame):
            raise Interrupt("SIGALRM")

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@needs_broker
def test_an_interrupt_after_bytes_were_read_drops_the_connection_and_loses_nothing(
    node: PrivateNode,
) -> None:
    """A signal handler raises once deliveries are read from the socket but before they
    are handed to the callbacks.  Carrying on would lose them without a word (never run,
    never acknowledged: stuck until the connection closes); the connection is dropped
    instead, saying why, and the broker gives them to the next consumer."""
    total = 200
    with Connection(node.url).connect() as setup:
        queue = f"interrupt-{uuid.uuid4().hex[:10]}"
        setup.channel().queue_declare(queue, auto_delete=False)
    conn = Connection(node.url, heartbeat=0).connect()
    ch = conn.channel()
    with conn.corked():
        for n in range(total):
            ch.basic_publish(b"%d" % n, routing_key=queue)
    acked: list[bytes] = []

    def on_message(msg: Message) -> None:
        acked.append(bytes(msg.body))
        msg.ack()

    ch.basic_qos(prefetch_count=10)  # deliveries keep coming as acks go: read by drain_events
    ch.basic_consume(queue, callback=on_message)
    # The handler raises right after raise_signal returns.
    fired = interrupt_after_deliveries(conn._core, lambda: signal.raise_signal(signal.SIGALRM))
    with alarm_interrupts():
        with pytest.raises(Interrupt):
            for _ in range(100):
                conn.drain_events(timeout=5)
    assert fired
    with pytest.raises(ConnectionLost, match="cut short by Interrupt"):
        conn.drain_events(timeout=5)
    assert not conn.is_open
    conn.close()
    # Every message was acknowledged on the first connection or is back in the queue.
    rest = queue_bodies(node.url, queue)
    assert sorted(acked + rest, key=int) == [b"%d" % n for n in range(total)]
    with Connection(node.url).connect() as cleanup:
        cleanup.channel().queue_delete(queue)


@needs_broker
def test_a_second_interrupt_cannot_leave_the_connection_looking_sound(node: PrivateNode) -> None:
    """Ctrl-C twice: the second interrupt lands as the first is being handled -- at the
    first instruction of the code that drops the connection.  The connection must still
    be failed (the deliveries read are lost to it), not left open with them gone."""
    conn = Connection(node.url, heartbeat=0).connect()
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    with conn.corked():
        for n in range(200):
            ch.basic_publish(b"%d" % n, routing_key=queue)
    ch.basic_qos(prefetch_count=5)  # deliveries keep coming as acks go: read by drain_events
    ch.basic_consume(queue, callback=lambda msg: msg.ack())
    def first() -> None:
        raise Interrupt("first")

    def second(exc: BaseException, doing: str) -> None:
        raise Interrupt("second")  # where a signal handler would raise

    interrupt_after_deliveries(conn._core, first)
    conn._interrupted = second  # type: ignore[method-assign]
    with pytest.raises(Interrupt, match="second"):
        for _ in range(200):
            conn.drain_events(timeout=5)
    assert not conn.is_open
    with pytest.raises(ConnectionLost, match="cut short by an exception"):
        conn.drain_events(timeout=5)
    del conn._interrupted
    conn.close()


@needs_broker
def test_an_interrupt_in_the_middle_of_a_write_drops_the_connection(proxy: TCPProxy) -> None:
    """A big publish is half written (the broker stops reading: a frozen proxy) when a
    signal handler raises.  Writing on would put the next frames after half a frame --
    the broker closes the connection with 501 FRAME_ERROR -- so the connection is dropped
    there, saying why, and the publish never becomes a message."""
    conn = Connection(proxy.url(query="heartbeat=0")).connect()
    ch = conn.channel()
    queue = f"interrupt-{uuid.uuid4().hex[:10]}"
    ch.queue_declare(queue, auto_delete=False)
    ch.confirm_select()
    proxy.freeze()
    with alarm_interrupts():
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupt):
            ch.basic_publish(b"x" * 40_000_000, routing_key=queue)
    with pytest.raises(ConnectionLost, match="cut short by Interrupt") as lost:
        ch.basic_publish(b"small", routing_key=queue)
    assert lost.value.unconfirmed == {ch.channel_id: [1]}
    proxy.thaw()
    conn.close()
    with Connection(proxy.url()).connect() as other:
        och = other.channel()
        assert och.queue_declare(queue, passive=True).message_count == 0
        och.queue_delete(queue)


@needs_broker
def test_a_consumer_interrupted_again_and_again_never_misreads_and_loses_nothing(
    node: PrivateNode,
) -> None:
    """Signals every few milliseconds while a consumer works through a queue, the program
    catching each interrupt and carrying on (connecting again when the connection was
    dropped).  No frame is ever misread (FrameError, UnexpectedFrame, FrameTooLarge...):
    each interrupt either leaves the connection as it was or drops it, saying why.  A
    delivery taken for its callback when an interrupt came is the program's to settle
    (here it is not: it stays unacknowledged until its connection closes), so after the
    storm the consumer closes and consumes again: every message was processed."""
    total = 2000
    pad = b"." * 20_000  # each delivery spans reads, in frames of at most 4 KiB
    queue = f"interrupt-{uuid.uuid4().hex[:10]}"
    with Connection(node.url).connect() as setup:
        sch = setup.channel()
        sch.queue_declare(queue, auto_delete=False)
        sch.confirm_select()
        with setup.corked():
            for n in range(total):
                sch.basic_publish(b"%d %s" % (n, pad), routing_key=queue)
        sch.wait_for_confirms(timeout=30)
    seen: set[bytes] = set()
    interrupts = dropped = 0

    def consume() -> Connection:
        conn = Connection(node.url, heartbeat=0, frame_max=4096).connect()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=50)

        def on_message(msg: Message) -> None:
            n, rest = bytes(msg.body).split(b" ")
            assert rest == pad
            seen.add(n)
            msg.ack()

        ch.basic_consume(queue, callback=on_message)
        return conn

    # Interrupts land only in leveret's code, inside drain_events: what is tested here.
    # (Anywhere else they would hit the test's own bookkeeping, or pytest's.)
    library = os.path.dirname(os.path.dirname(leveret.__file__)) + os.sep + "leveret" + os.sep
    armed = [False]
    conns = [consume()]
    storm_ends = time.monotonic() + 4
    with alarm_interrupts(lambda frame: armed[0] and frame.f_code.co_filename.startswith(library)):
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
        while len(seen) < total and time.monotonic() < storm_ends:
            try:
                armed[0] = True
                conns[-1].drain_events(timeout=0.5)
            except Interrupt:
                interrupts += 1
            except TimeoutError:
                pass  # every prefetched delivery was taken by an interrupt: see below
            except ConnectionLost as exc:
                armed[0] = False
                # "... cut short by Interrupt", or, when a second interrupt came while the
                # first was being handled, "... cut short by an exception" (see _interrupted)
                assert "cut short by" in str(exc), repr(exc)
                dropped += 1
                conns.append(consume())
            finally:
                armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    stormed = len(seen)
    for conn in conns:
        conn.close()  # the interrupted callbacks' deliveries go back to the queue
    conn = consume()
    deadline = time.monotonic() + 30
    while len(seen) < total and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=1)
    conn.close()
    assert interrupts > 10 and stormed > 100, (interrupts, stormed)
    assert seen == {b"%d" % n for n in range(total)}
    with Connection(node.url).connect() as cleanup:
        cleanup.channel().queue_delete(queue)


@needs_broker
def test_a_basic_consume_whose_channel_closes_under_its_write_raises_why(node: PrivateNode) -> None:
    """The channel is closed (by the thread that read why) while basic_consume writes its
    method, and the write fails: the caller must see the write's error -- not an
    IndexError from basic_consume's own bookkeeping, which the close had already cleared.
    (A race; here the close is made to come at that point.)"""
    conn = Connection(node.url, heartbeat=0).connect()
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    lost = ConnectionLost("the socket went away under the write")

    def closed_meanwhile() -> None:
        ch._on_closed(None)  # what the reading thread does when the connection closes
        raise lost

    conn._flush = closed_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ConnectionLost) as raised:
        ch.basic_consume(queue, callback=print)
    assert raised.value is lost
    del conn._flush
    conn.close()
