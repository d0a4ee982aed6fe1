"""leveret.highlevel.pools (and its alias leveret.pools): limits, blocking acquire, reuse,
dead connections replaced, groups keyed by parameters, set_limit, reset, fork.

Against the real broker and memory:// (``hl_conn``); the tests that kill connections use
the private node (``node``), whose URL they connect to.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Iterator

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import closed_port, got, unique
from helpers import in_threads

import leveret.pools
from broker import PrivateNode
from leveret import pools as pools_alias
from leveret.client import PublishNacked, blocking
from leveret.highlevel import Connection, LimitExceeded, Producer, Queue
from leveret.highlevel import pools
from leveret.highlevel.pools import (
    ChannelLimitExceeded,
    ChannelPool,
    ConnectionLimitExceeded,
    ConnectionPool,
    ProducerPool,
)


@pytest.fixture(autouse=True)
def clean_groups() -> Iterator[None]:
    """Each test starts with empty groups and the default limit, and leaves them so."""
    pools.reset()
    pools.set_limit(10)
    yield
    pools.reset()
    pools.set_limit(10)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def roundtrip(conn: Connection) -> str:
    """Declare a server-named exclusive queue: proves ``conn`` talks to the broker."""
    ch = conn.channel()
    try:
        return str(ch.queue_declare("", exclusive=True).queue)
    finally:
        ch.close()


# ------------------------------------------------------------------------------ module


def test_leveret_pools_is_the_same_module_content() -> None:
    assert leveret.pools.connections is pools.connections
    assert pools_alias.producers is pools.producers
    assert pools_alias.reset is pools.reset and pools_alias.set_limit is pools.set_limit
    assert set(pools.__all__) <= set(dir(pools_alias))


def test_limit_exceeded_classes() -> None:
    assert issubclass(ConnectionLimitExceeded, LimitExceeded)
    assert issubclass(ChannelLimitExceeded, LimitExceeded)
    import queue

    assert not issubclass(LimitExceeded, queue.Full)


# ------------------------------------------------------------------------------ ConnectionPool


def test_connection_pool_limit_and_reuse(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=2)
    assert isinstance(pool, ConnectionPool)
    a = pool.acquire()
    b = pool.acquire()
    assert a is not b and a is not hl_conn
    assert not a.connected  # lazy clones: nothing on the wire yet
    with pytest.raises(ConnectionLimitExceeded):
        pool.acquire()
    roundtrip(a)
    a.release()
    c = pool.acquire()
    assert c is a and c.connected  # the connected one is reused, not reopened
    with c:  # leaving the block releases it
        pass
    assert pool.acquire() is a
    a.release()
    a.release()  # a second release is ignored: the pool does not hand ``a`` out twice
    assert pool.acquire() is a
    with pytest.raises(LimitExceeded):
        pool.acquire()
    b.release()
    a.release()
    pool.force_close_all()
    assert not a.connected
    with pytest.raises(RuntimeError):
        pool.acquire()


def test_preload(hl_conn: Connection) -> None:
    pool = ConnectionPool(hl_conn, limit=2, preload=5)  # at most ``limit`` are made
    first, second = pool.acquire(), pool.acquire()
    assert not first.connected and not second.connected and first is not second
    with pytest.raises(LimitExceeded):
        pool.acquire()
    assert not hl_conn.connected
    channels = ChannelPool(hl_conn, limit=3, preload=2)
    assert hl_conn.connected  # the preloaded channels were opened at once
    a, b, c = channels.acquire(), channels.acquire(), channels.acquire()
    assert a.is_open and b.is_open and c.is_open
    assert len({a.channel_id, b.channel_id, c.channel_id}) == 3
    channels.force_close_all()


def test_with_statement_releases(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=1)
    with pool.acquire() as conn:
        roundtrip(conn)
        with pytest.raises(LimitExceeded):
            pool.acquire()
    again = pool.acquire()
    assert again is conn and again.connected
    again.release()
    with pool.acquire_channel() as (c, channel):
        assert c is conn and channel is c.default_channel and channel.is_open
    assert pool.acquire() is conn


def test_blocking_acquire_times_out(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=1)
    held = pool.acquire()
    start = time.monotonic()
    with pytest.raises(LimitExceeded):
        pool.acquire(block=True, timeout=0.3)
    waited = time.monotonic() - start
    assert 0.25 <= waited < 2.0
    start = time.monotonic()
    with pytest.raises(LimitExceeded):
        pool.acquire(block=False)
    assert time.monotonic() - start < 0.2
    held.release()


def test_blocking_acquire_gets_a_released_connection(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=1)
    held = pool.acquire()
    roundtrip(held)
    timer = threading.Timer(0.3, held.release)
    timer.start()
    start = time.monotonic()
    got = pool.acquire(block=True, timeout=10)
    assert got is held and time.monotonic() - start >= 0.25
    roundtrip(got)
    got.release()


def test_threads_never_exceed_the_limit(hl_conn: Connection) -> None:
    pool = hl_conn.Pool(limit=3)
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "done": 0}
    seen: set[int] = set()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                with pool.acquire(block=True, timeout=30) as conn:
                    with lock:
                        state["now"] += 1
                        state["max"] = max(state["max"], state["now"])
                        seen.add(id(conn))
                    roundtrip(conn)
                    with lock:
                        state["now"] -= 1
            with lock:
                state["done"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    in_threads(worker, 8, 60)
    assert not errors, errors
    assert state["done"] == 8
    assert state["max"] <= 3
    assert len(seen) <= 3  # connections were reused, never more than the limit made
    pool.force_close_all()


def test_dead_connection_is_replaced(node: PrivateNode) -> None:
    base = Connection(node.url)
    pool = base.Pool(limit=2)
    conn = pool.acquire()
    roundtrip(conn)
    conn.release()
    node.ctl("close_all_connections", "pool test: died while free")
    wait_until(lambda: not conn.connected)
    fresh = pool.acquire()
    assert fresh is not conn  # the dead one was not handed out again
    roundtrip(fresh)

    # ... and one that dies while acquired is dropped when released.
    node.ctl("close_all_connections", "pool test: died while acquired")
    wait_until(lambda: not fresh.connected)
    fresh.release()
    third = pool.acquire()
    assert third is not fresh and third is not conn
    roundtrip(third)
    third.release()
    pool.force_close_all()


def test_dead_connection_released_memory() -> None:
    from leveret.highlevel.memory import MemoryBroker, MemoryConnection

    pool = Connection("memory://", transport_options={"broker": MemoryBroker()}).Pool(limit=1)
    conn = pool.acquire()
    roundtrip(conn)
    transport = conn.connection
    assert isinstance(transport, MemoryConnection)
    transport.simulate_connection_loss()
    conn.release()
    again = pool.acquire()
    assert again is not conn
    roundtrip(again)
    again.release()


# ------------------------------------------------------------------------------ ChannelPool


def test_channel_pool(hl_conn: Connection) -> None:
    channels = hl_conn.ChannelPool(limit=2)
    assert isinstance(channels, ChannelPool)
    a = channels.acquire()
    b = channels.acquire()
    assert a.is_open and b.is_open and a is not b
    with pytest.raises(ChannelLimitExceeded):
        channels.acquire()
    a.release()
    assert channels.acquire() is a
    # A channel the broker closes (a channel error) is not handed out again.
    name = unique("missing")
    with pytest.raises(hl_conn.channel_errors):
        a.queue_declare(name, passive=True)
    assert not a.is_open
    a.release()
    c = channels.acquire()
    assert c is not a and c.is_open
    # ``with channel:`` closes the channel; its place goes back to the pool.
    with c:
        c.queue_declare("", exclusive=True)
    with b:
        pass
    d = channels.acquire(block=True, timeout=2)
    e = channels.acquire(block=True, timeout=2)
    assert d.is_open and e.is_open and {d, e}.isdisjoint({a, b, c})
    channels.force_close_all()
    assert not d.is_open and not e.is_open


# ------------------------------------------------------------------------------ ProducerPool


def test_producer_pool_publishes_with_confirms(hl_conn: Connection) -> None:
    q = Queue(unique("pp"), auto_delete=False)
    ch = hl_conn.channel()
    q(ch).declare()
    try:
        producer_pool = pools.producers[hl_conn]
        assert isinstance(producer_pool, ProducerPool)
        assert producer_pool.connections is pools.connections[hl_conn]
        producer = producer_pool.acquire(block=True)
        assert isinstance(producer, Producer)
        pooled_conn = producer.connection
        assert pooled_conn is not hl_conn and pooled_conn is not None
        producer.publish({"n": 1}, routing_key=q.name)  # waits for the broker's ack
        assert pooled_conn.connected
        channel = producer.channel
        assert channel is pooled_conn.default_channel
        producer.release()
        # Both went back: the connection to the connection pool, the producer to its pool.
        again = producer_pool.acquire(block=True)
        assert again is producer and again.connection is pooled_conn
        with again:
            again.publish({"n": 2}, routing_key=q.name)
        conn = pools.connections[hl_conn].acquire()
        assert conn is pooled_conn
        conn.release()
        assert ch.queue_declare(q.name, passive=True).message_count == 2
        assert json.loads(got(ch.basic_get(q.name, no_ack=True)).body) == {"n": 1}
        assert json.loads(got(ch.basic_get(q.name, no_ack=True)).body) == {"n": 2}
    finally:
        ch.queue_delete(q.name)
        ch.close()


def test_producer_pool_reports_nacks(hl_conn: Connection) -> None:
    """The pooled producers' channels are in confirm mode: a publish the broker refuses
    (x-overflow reject-publish on a full queue) raises PublishNacked."""
    name = unique("full")
    ch = hl_conn.channel()
    ch.queue_declare(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        with pools.producers[hl_conn].acquire(block=True) as producer:
            producer.publish(b"first", routing_key=name)
            with pytest.raises(PublishNacked):
                producer.publish(b"second", routing_key=name)
        assert ch.queue_declare(name, passive=True).message_count == 1
    finally:
        ch.queue_delete(name)
        ch.close()


def test_producer_pool_limit_and_connections(hl_conn: Connection) -> None:
    connections = ConnectionPool(hl_conn, limit=1)
    producer_pool = ProducerPool(connections, limit=2)
    p1 = producer_pool.acquire()
    # The only connection is p1's while p1 is acquired ...
    with pytest.raises(ConnectionLimitExceeded):
        connections.acquire()
    # ... so a second producer waits for it (block=True), and gets it when p1 is released.
    threading.Timer(0.3, p1.release).start()
    start = time.monotonic()
    p2 = producer_pool.acquire(block=True, timeout=10)
    assert time.monotonic() - start >= 0.25
    assert p2 is not p1 and p2.connection is p1.connection
    # A free producer but no free connection: non-blocking acquire says so at once ...
    with pytest.raises(ConnectionLimitExceeded):
        producer_pool.acquire()
    # ... and the producer it took stays available.
    p2.release()
    p3 = producer_pool.acquire()
    p4 = None
    with pytest.raises(LimitExceeded):
        p4 = producer_pool.acquire(block=True, timeout=0.2)
    assert p4 is None and p3 in (p1, p2)
    p3.release()


def test_producer_with_unconfirmed_publishes_is_not_reused(hl_conn: Connection) -> None:
    name = unique("pending")
    ch = hl_conn.channel()
    ch.queue_declare(name)
    try:
        producer_pool = ProducerPool(ConnectionPool(hl_conn, limit=1), limit=1)
        producer = producer_pool.acquire()
        producer.publish(b"x", routing_key=name, wait=False)
        assert producer.pending == 1
        producer.release()
        other = producer_pool.acquire()
        assert other is not producer
        other.flush()  # nothing of the first producer's reaches this one
        other.release()
    finally:
        ch.queue_delete(name)
        ch.close()


@pytest.mark.parametrize("how", ["force_close_all", "resize_force"])
def test_force_closing_a_producer_pool_gives_back_the_connections_of_producers_out(
    hl_conn: Connection, how: str,
) -> None:
    # A producer handed out holds a connection of the connection pool; closing the producer
    # pool by force must not keep that connection's place for ever (the next acquire would
    # fail, or with block=True and no timeout wait for ever).
    connections = ConnectionPool(hl_conn, limit=1)
    producer_pool = ProducerPool(connections, limit=2)
    producer = producer_pool.acquire()
    held = producer.connection
    producer.publish(b"x", routing_key=unique("nobody"))
    if how == "force_close_all":
        producer_pool.force_close_all()
        producer_pool = ProducerPool(connections, limit=2)
    else:
        producer_pool.resize(1, force=True, reset=True)
    producer.release()  # too late: the pool forgot it
    again = producer_pool.acquire(block=True, timeout=2)
    assert again.connection is not held  # the old one was closed, not handed on
    again.publish(b"y", routing_key=unique("nobody"))
    again.release()
    connections.force_close_all()


def test_failed_acquire_gives_its_place_back() -> None:
    """An acquire that cannot make its resource (the broker is unreachable) raises the
    connection error, and the place it had taken is free again: the pool is not used up
    by failures."""
    bad = Connection(f"amqp://guest:guest@127.0.0.1:{closed_port()}//", connect_timeout=2)
    channels = ChannelPool(bad, limit=1)
    for _ in range(3):
        with pytest.raises(OSError):
            channels.acquire()
    assert "in_use=0" in repr(channels)
    # A producer's connection connects on first use: the publish fails, and releasing
    # the producer gives both places back.
    producer_pool = ProducerPool(ConnectionPool(bad, limit=1), limit=1)
    for _ in range(3):
        with pytest.raises(OSError):
            with producer_pool.acquire() as producer:
                producer.publish(b"x", routing_key="nowhere")
    assert "in_use=0" in repr(producer_pool) and "in_use=0" in repr(producer_pool.connections)


class _Thing:
    def close(self) -> None:
        pass


class _Things(pools.Resource):
    """A pool of plain objects: what it hands out needs no broker."""

    def new(self) -> Any:
        return _Thing()


def _acquire_in_thread(pool: pools.Resource, got: list[Any], timeout: float | None = 10) -> threading.Thread:
    """Start a thread blocked in ``pool.acquire``; return once it is queued.  What it
    acquires, or the error it gets, is appended to ``got``."""
    waiting = len(pool._waiting)

    def acquire() -> None:
        try:
            got.append(pool.acquire(block=True, timeout=timeout))
        except LimitExceeded as exc:
            got.append(exc)

    thread = threading.Thread(target=acquire, daemon=True)
    thread.start()
    wait_until(lambda: len(pool._waiting) > waiting)
    return thread


def test_blocked_acquires_are_served_first_come_first_served() -> None:
    """A released place goes to the acquire that has waited longest: not to the thread
    that released it and asks again at once, nor to a newcomer -- with a barging pool a
    busy thread could take its place back over and over while another timed out."""
    pool = _Things(limit=1)
    held = pool.acquire()
    got: list[Any] = []
    waiter = _acquire_in_thread(pool, got)
    pool.release(held)
    with pytest.raises(LimitExceeded, match="1 acquire.s. waiting before this one"):
        pool.acquire(block=False)  # the place is the waiter's
    waiter.join(10)
    assert got == [held]
    pool.release(got.pop())

    # Several waiters, one of which gives up: the others are served in order.
    held = pool.acquire()
    order: list[list[Any]] = [[], [], []]
    first = _acquire_in_thread(pool, order[0])
    quitter = _acquire_in_thread(pool, order[1], timeout=0.2)
    third = _acquire_in_thread(pool, order[2])
    quitter.join(10)  # timed out: it leaves the queue
    assert isinstance(order[1][0], LimitExceeded) and len(pool._waiting) == 2
    pool.release(held)
    first.join(10)
    assert order[0] == [held] and not order[2]
    pool.release(order[0][0])
    third.join(10)
    assert order[2] == [held] and not pool._waiting


def test_contended_pool_starves_no_one() -> None:
    """Eight threads sharing two places, each holding one for a millisecond and asking
    again at once: every acquire is served within its timeout."""
    pool = _Things(limit=2)
    timeouts: list[BaseException] = []
    served = [0]
    stop = time.monotonic() + 1.5

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                thing = pool.acquire(block=True, timeout=0.5)
            except LimitExceeded as exc:
                timeouts.append(exc)
                continue
            served[0] += 1
            time.sleep(0.001)
            pool.release(thing)

    in_threads(worker, 8, 10)
    assert served[0] > 100
    assert timeouts == []


def test_replace_closes_and_frees_the_place(hl_conn: Connection) -> None:
    pool = ConnectionPool(hl_conn, limit=1)
    conn = pool.acquire()
    roundtrip(conn)
    pool.replace(conn)
    assert not conn.connected
    fresh = pool.acquire()  # the place is free, and the replaced one is not handed out
    assert fresh is not conn
    roundtrip(fresh)
    pool.replace(conn)  # not handed out any more: nothing happens
    fresh.release()
    assert pool.acquire() is fresh
    fresh.release()


def test_set_limit_ignore_errors_closes_extras_as_they_return(hl_conn: Connection) -> None:
    pool = pools.connections[hl_conn]
    held = [pool.acquire() for _ in range(3)]
    for conn in held:
        roundtrip(conn)
    pools.set_limit(1, ignore_errors=True)
    assert pool.limit == 1 and all(conn.connected for conn in held)  # nothing closed yet
    with pytest.raises(LimitExceeded):
        pool.acquire()
    for conn in held:
        conn.release()
    # Only one is kept, and it works.
    assert [conn.connected for conn in held] == [False, False, True]
    with pool.acquire() as again:
        assert again is held[2]
        roundtrip(again)


# ------------------------------------------------------------------------------ groups


def test_groups_keyed_by_parameters(hl_url: str, hl_conn: Connection, kind: str) -> None:
    options = hl_conn.transport_options
    same = Connection(hl_url, transport_options=options)
    assert same is not hl_conn
    assert pools.connections[same] is pools.connections[hl_conn]
    assert pools.producers[same] is pools.producers[hl_conn]
    assert hl_conn in pools.connections
    if kind == "amqp":
        other_vhost = Connection(hl_url, virtual_host="elsewhere")
        other_user = Connection(hl_url, userid="someone")
        other_heartbeat = Connection(hl_url, heartbeat=7)
        others = [other_vhost, other_user, other_heartbeat, Connection(hl_url, autorecover=True)]
        distinct = {id(pools.connections[c]) for c in [hl_conn, *others]}
        assert len(distinct) == 1 + len(others)
    else:
        from leveret.highlevel.memory import MemoryBroker

        other_broker = Connection(hl_url, transport_options={"broker": MemoryBroker()})
        assert pools.connections[other_broker] is not pools.connections[hl_conn]
    assert len(pools.connections) >= 2


def test_group_spellings_of_the_same_url_share(amqp_url: str) -> None:
    base = Connection(amqp_url)
    spelled = Connection(
        f"amqp://{base.hostname}:{base.port}", userid=base.userid, password=base.password,
        virtual_host=base.virtual_host,
    )
    assert pools.connections[spelled] is pools.connections[base]


def test_group_pool_serves_connections(hl_conn: Connection) -> None:
    with pools.connections[hl_conn].acquire(block=True) as conn:
        roundtrip(conn)
    assert pools.connections[hl_conn].limit == 10


def test_set_limit_and_get_limit(hl_conn: Connection) -> None:
    assert pools.get_limit() == 10
    pool = pools.connections[hl_conn]
    assert pool.limit == 10
    assert pools.set_limit(2) == 2
    assert pools.get_limit() == 2 and pool.limit == 2
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(LimitExceeded):
        pool.acquire()
    # Shrinking below what is in use is refused, and changes nothing ...
    with pytest.raises(RuntimeError):
        pools.set_limit(1)
    assert pools.get_limit() == 2 and pool.limit == 2
    # ... unless forced: then the pool's connections are all closed.
    roundtrip(a)
    pools.set_limit(1, force=True)
    assert pool.limit == 1 and not a.connected
    c = pool.acquire()
    with pytest.raises(LimitExceeded):
        pool.acquire()
    c.release()
    b.release()  # forgotten by the forced resize: ignored
    # Growing lets blocked acquirers in.
    held = pool.acquire()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(block=True, timeout=10)))
    t.start()
    time.sleep(0.2)
    assert not got
    pools.set_limit(3)
    t.join(5)
    assert got and got[0] is not held
    # A new pool gets the new global limit.
    from leveret.highlevel.memory import MemoryBroker

    fresh = Connection("memory://", transport_options={"broker": MemoryBroker()})
    assert pools.connections[fresh].limit == 3


def test_resize_shrinks_free_connections(hl_conn: Connection) -> None:
    pool = ConnectionPool(hl_conn, limit=3)
    conns = [pool.acquire() for _ in range(3)]
    for c in conns:
        roundtrip(c)
        c.release()
    pool.resize(1)
    assert sum(c.connected for c in conns) == 1  # the two longest idle were closed
    kept = pool.acquire()
    assert kept.connected and kept is conns[-1]
    kept.release()


def test_reset_closes_everything(hl_conn: Connection) -> None:
    pool = pools.connections[hl_conn]
    conn = pool.acquire()
    roundtrip(conn)
    conn.release()
    producer_pool = pools.producers[hl_conn]
    held = producer_pool.acquire(block=True)
    held.publish(b"x", routing_key=unique("nowhere"))
    pconn = held.connection
    assert pconn.connected
    pools.reset()
    assert not conn.connected and not pconn.connected
    assert len(pools.connections) == 0 and len(pools.producers) == 0
    assert pools.connections[hl_conn] is not pool
    with pytest.raises(RuntimeError):
        pool.acquire()
    held.release()  # into a closed pool: fine, nothing happens
    with pools.connections[hl_conn].acquire() as new:
        roundtrip(new)


# ------------------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_child_process_gets_fresh_pools(amqp_url: str) -> None:
    """A forked child must not reuse the parent's connections (their sockets are shared),
    nor close them: the parent's connection still works afterwards."""
    base = Connection(amqp_url)
    pool = pools.connections[base]
    parent_conn = pool.acquire()
    parent_queue = roundtrip(parent_conn)
    parent_conn.release()
    held = pool.acquire()  # one acquired across the fork, too
    assert held is parent_conn
    held_id = id(held)
    held_transport = held._connection
    assert held_transport is not None

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 = fresh pool that works
        status = 1
        try:
            os.close(read_fd)
            child_pool = pools.connections[base]
            fresh_group = child_pool is not pool
            old_pool_empty = pool.acquire() is not held
            conn = child_pool.acquire()
            # The parent's transport is abandoned (Connection.abandon): dead, and not
            # closed (with a connection.close on the parent's socket) at the child's exit.
            abandoned = not held_transport.is_open and held_transport not in blocking._live
            ok = (
                fresh_group and old_pool_empty and id(conn) != held_id and not conn.connected
                and not held.connected and abandoned
            )
            name = roundtrip(conn)  # a connection of the child's own
            os.write(write_fd, name.encode())
            status = 0 if ok else 3
        except BaseException:  # noqa: BLE001 - reported through the exit status
            status = 2
        finally:
            os._exit(status)
    os.close(write_fd)
    _, wait_status = os.waitpid(pid, 0)
    child_queue = os.read(read_fd, 1000).decode()
    os.close(read_fd)
    assert os.WIFEXITED(wait_status)
    assert os.WEXITSTATUS(wait_status) == 0, {1: "?", 2: "child raised", 3: "child reused the parent's pool"}.get(
        os.WEXITSTATUS(wait_status))
    assert child_queue.startswith("amq.gen-") and child_queue != parent_queue
    # The parent's connection is untouched: the child sent nothing on it.
    assert held.connected
    assert roundtrip(held).startswith("amq.gen-")
    ch = held.channel()
    try:
        assert ch.queue_declare(parent_queue, passive=True).queue == parent_queue
    finally:
        ch.close()
    held.release()
