"""What only the asyncio driver has to prove, against the private RabbitMQ node:
cancellation, many channels at once, slow consumers, write backpressure, the delivery
iterator, callbacks that are coroutines.  (Everything both drivers share runs against both
in the test_client_* files.)

No pytest plugin: each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import time
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import pytest

from broker import Broker
from helpers import Interrupt, in_forked_child, interrupt_after_deliveries, unique
from leveret.client import (
    AccessRefused,
    AsyncChannel,
    AsyncConnection,
    Channel,
    Connection,
    ConnectionClosedError,
    ConnectionLost,
    Message,
    MessageTooLargeError,
    NotFound,
    PreconditionFailed,
)
from leveret.client import aio
from leveret.client.aio import Deliveries
from tcpproxy import TCPProxy
from test_typing import mypy

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def ready(ch: AsyncChannel, queue: str, count: int, timeout: float = 10.0) -> int:
    """Wait until the broker says ``queue`` holds ``count`` ready messages; returns the count."""
    deadline = time.monotonic() + timeout
    while True:
        ok = await ch.queue_declare(queue, passive=True)
        assert ok is not None
        if ok.message_count == count or time.monotonic() > deadline:
            return ok.message_count
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- the API


def test_every_blocking_method_has_its_async_twin() -> None:
    """Name for name: the same public methods, with the same parameters; coroutines where
    the blocking call waits for the broker."""
    # Except Connection.abandon(), for a forked child: an AsyncConnection is let go of by
    # the at-fork hook alone (test_a_forked_child_never_writes_on_its_parents_connection);
    # called in the parent's own process, it would leave the event loop a closed socket.
    blocking_only = {"abandon"}
    for blocking, asynchronous in ((Connection, AsyncConnection), (Channel, AsyncChannel)):
        names = {n for n in dir(blocking) if not n.startswith("_")} - blocking_only
        assert names <= set(dir(asynchronous)), names - set(dir(asynchronous))
        for name in names:
            sync_attr = getattr(blocking, name)
            if not callable(sync_attr) or isinstance(sync_attr, type):
                continue
            sync_params = inspect.signature(sync_attr).parameters
            assert sync_params == inspect.signature(getattr(asynchronous, name)).parameters, name
    assert inspect.iscoroutinefunction(AsyncChannel.basic_publish)
    assert not inspect.iscoroutinefunction(AsyncChannel.basic_ack)
    assert AsyncChannel.queue_declare.__doc__ == Channel.queue_declare.__doc__


def test_operations_are_coroutine_functions() -> None:
    """The calls that wait for the broker say what they are: coroutine functions on the
    asyncio classes and their objects (not plain functions returning a coroutine), plain
    functions on the blocking ones."""
    conn = AsyncConnection()
    for fn in (AsyncChannel.queue_declare, AsyncChannel.publish_confirmed, AsyncConnection.update_secret,
               conn.update_secret, conn.close):
        assert inspect.iscoroutinefunction(fn), fn
        assert asyncio.iscoroutinefunction(fn), fn
    for sync_fn in (Channel.queue_declare, Connection.update_secret, Connection().update_secret):
        assert not inspect.iscoroutinefunction(sync_fn), sync_fn
    assert AsyncChannel.queue_declare.__name__ == "queue_declare"
    assert "timeout" in inspect.signature(conn.update_secret).parameters
    assert inspect.signature(AsyncChannel.basic_get) == inspect.signature(Channel.basic_get)


def test_round_trip_with_confirms_and_coroutine_callback(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            assert conn.is_open and conn.server_properties["product"] in ("RabbitMQ", b"RabbitMQ")
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            queue = ok.queue
            await ch.confirm_select()
            tags = [await ch.basic_publish(Message(f"m{i}", content_type="text/plain"), routing_key=queue) for i in range(10)]
            assert tags == list(range(1, 11))
            assert await ch.wait_for_confirms(timeout=10) is True
            got: list[bytes] = []
            done = asyncio.Event()

            async def on_message(message: Message) -> None:
                await asyncio.sleep(0)  # a coroutine callback may await
                got.append(bytes(message.body))
                assert message.content_type == "text/plain"
                message.ack()
                if len(got) == 10:
                    done.set()

            tag = await ch.basic_consume(queue, callback=on_message)
            await asyncio.wait_for(done.wait(), 10)
            assert got == [f"m{i}".encode() for i in range(10)]
            await ch.basic_cancel(tag)
            assert await ready(ch, queue, 0) == 0  # all acked
        assert not conn.is_open

    run(main())


def test_typed_error_closes_only_the_channel(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            with pytest.raises(NotFound):
                await ch.queue_declare(unique("missing"), passive=True)
            assert not ch.is_open and conn.is_open
            ch2 = await conn.channel()
            assert (await ch2.queue_declare("", exclusive=True)) is not None

    run(main())


def test_an_error_a_request_raised_is_not_raised_again_by_drain_events(broker: Broker) -> None:
    # The channel.close wakes the request and the delivery task together; the request
    # reports the error, and a drain_events running meanwhile does not report it again.
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            await ch.basic_consume(queue, no_ack=True, callback=lambda m: None)
            drain = asyncio.ensure_future(conn.drain_events(timeout=1))
            await asyncio.sleep(0)
            with pytest.raises(NotFound):
                await ch.queue_declare(unique("missing"), passive=True)
            with pytest.raises(TimeoutError):
                await drain
            # And when the broker closes a consumer's channel while nobody waits on it,
            # drain_events reports it (here: an acknowledgement of a tag never delivered).
            ch2 = await conn.channel()
            await ch2.basic_consume(queue, callback=lambda m: None)
            ch2.basic_ack(99)
            with pytest.raises(PreconditionFailed, match="unknown delivery tag 99"):
                await conn.drain_events(timeout=5)
            with pytest.raises(PreconditionFailed):  # the channel's next call, once
                await ch2.queue_declare("", exclusive=True)
            assert conn.is_open

    run(main())


# --------------------------------------------------------------------------- cancellation


def test_cancelled_call_leaves_the_channel_usable(broker: Broker) -> None:
    """The cancelled call's reply still comes; it is dropped, and the next call gets its
    own reply -- not the one meant for the cancelled call."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            first, second = unique("first"), unique("second")
            await ch.queue_declare(first, auto_delete=False)
            await ch.queue_declare(second, auto_delete=False)
            try:
                await ch.basic_publish(b"x", routing_key=first)
                task = asyncio.ensure_future(ch.queue_declare(first, passive=True))
                await asyncio.sleep(0)  # the request is on its way
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                ok = await ch.queue_declare(second, passive=True)
                assert ok is not None and ok.queue == second
                assert ch.is_open
            finally:
                await ch.queue_delete(first)
                await ch.queue_delete(second)

    run(main())


def test_cancelled_basic_get_gives_the_message_back(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            await ch.basic_publish(b"keep me", routing_key=ok.queue)
            assert await ready(ch, ok.queue, 1) == 1
            task = asyncio.ensure_future(ch.basic_get(ok.queue))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The get-ok arrives for nobody and is rejected with requeue: not lost, not
            # stuck unacknowledged.
            assert await ready(ch, ok.queue, 1) == 1
            message = await ch.basic_get(ok.queue, no_ack=True)
            assert message is not None and message.body == b"keep me"

    run(main())


def test_cancelled_publisher_never_leaves_half_a_frame(broker: Broker) -> None:
    """Publishers cancelled at random points: every publish the broker confirms is whole,
    and the connection stays usable."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            await ch.confirm_select()
            body = b"y" * 300_000  # several frames each

            async def publish_forever() -> None:
                while True:
                    await ch.basic_publish(body, routing_key=ok.queue)

            for delay in (0.0, 0.001, 0.01, 0.03):
                task = asyncio.ensure_future(publish_forever())
                await asyncio.sleep(delay)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await ch.wait_for_confirms(timeout=30)
            count = (await ch.queue_declare(ok.queue, passive=True)).message_count
            assert count > 0
            for _ in range(count):
                message = await ch.basic_get(ok.queue, no_ack=True)
                assert message is not None and message.body == body
            assert ch.is_open and conn.is_open

    run(main())


@pytest.mark.parametrize("writelines", ["as is", "not pausing"])
def test_a_publisher_that_never_yields_is_held_at_the_write_buffer_limit(broker: Broker, writelines: str) -> None:
    """A loop of publishes that awaits nothing else: basic_publish waits whenever the
    transport's buffer passes its high-water mark, so the buffer stays near that mark
    instead of holding everything, and the loop gets its turns (the other task below
    runs).  On CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 the socket transport's writelines()
    does not pause the protocol by itself (gh-127655); "not pausing" makes any version's
    writelines() behave so, by silencing the transport's pause check while it runs."""
    body = b"z" * 100_000

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            transport = conn._transport
            assert transport is not None
            high = transport.get_write_buffer_limits()[1]
            if writelines == "not pausing":
                real = type(transport).writelines

                def writelines_without_pausing(list_of_data: Any) -> None:
                    transport._maybe_pause_protocol = lambda: None  # type: ignore[attr-defined]
                    try:
                        real(transport, list_of_data)
                    finally:
                        del transport._maybe_pause_protocol  # type: ignore[attr-defined]

                transport.writelines = writelines_without_pausing  # type: ignore[method-assign]
            ticks = 0

            async def other_task() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            ticker = asyncio.ensure_future(other_task())
            biggest = 0
            for _ in range(1000):  # 100 MB in all
                await ch.basic_publish(body, routing_key=ok.queue)
                biggest = max(biggest, transport.get_write_buffer_size())
            ticker.cancel()
            # At most one flush (512 frames) past the mark; never the whole 100 MB.
            assert biggest <= high + 512 * (len(body) + 8 + 64), biggest
            assert ticks > 10
            assert await ready(ch, ok.queue, 1000, timeout=30) == 1000

    run(main())


def test_cancelled_channel_open_closes_that_channel(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            task = asyncio.ensure_future(conn.channel())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The abandoned channel is closed, so its id comes free again.
            deadline = time.monotonic() + 5
            while conn._channels and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not conn._channels
            ch = await conn.channel()
            assert ch.channel_id == 1

    run(main())


def test_drain_events_on_a_connection_never_connected_says_so() -> None:
    """As the blocking driver's: ConnectionClosedError, not an AssertionError."""

    async def main() -> None:
        conn = AsyncConnection("amqp://guest:guest@127.0.0.1:1/")
        for timeout in (0.1, None):
            with pytest.raises(ConnectionClosedError, match="the connection is closed"):
                await asyncio.wait_for(conn.drain_events(timeout=timeout), 5)

    run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_never_writes_on_its_parents_connection(broker: Broker) -> None:
    """In a forked child every AsyncConnection the parent had open is let go of at once: a
    call on it or its channels raises ConnectionLost (it would otherwise write on the
    parent's socket, and the broker's reply would reach the parent), close() has nothing to
    do, and connect() in the child's own event loop gives it a connection of its own.  The
    parent's connection, its event loop and its exclusive queue carry on, and the child's
    publish arrives."""

    async def main() -> None:
        conn = await AsyncConnection(broker.url).connect()
        ch = await conn.channel()
        ok = await ch.queue_declare("", exclusive=True)
        assert ok is not None
        queue = ok.queue
        parent = os.getpid()

        def child() -> str:
            async def in_child() -> str:
                assert not conn.is_open and conn not in aio._live
                calls: list[Callable[[], Awaitable[Any]]] = [
                    lambda: ch.queue_declare(queue, passive=True),
                    lambda: ch.basic_publish(b"x", "", queue),
                    conn.channel,
                    lambda: conn.drain_events(timeout=0.2),
                    conn.drain_events,
                ]
                for call in calls:
                    with pytest.raises(ConnectionLost, match=f"process {parent}, which opened it before fork"):
                        await asyncio.wait_for(call(), 5)
                await asyncio.wait_for(conn.close(), 5)  # nothing to close
                await asyncio.wait_for(conn.connect(), 10)
                assert conn in aio._live and not ch.is_open
                own = await conn.channel()
                await own.basic_publish(b"from the child", "", queue)  # allowed on an exclusive queue
                await conn.close()
                return "ok"

            return asyncio.run(in_child())

        assert in_forked_child(child, timeout=60) == "ok"
        await asyncio.sleep(0.2)  # long enough for a close or a FIN from the child to reach the broker
        assert conn.is_open
        got = await asyncio.wait_for(ch.basic_get(queue, no_ack=True), 5)
        assert got is not None and got.body == b"from the child"
        await ch.basic_publish(b"after the fork", "", queue)
        got = await asyncio.wait_for(ch.basic_get(queue, no_ack=True), 5)
        assert got is not None and got.body == b"after the fork"
        await conn.close()
        assert conn not in aio._live

    run(main())


def test_cancelled_close_still_drops_the_connection(broker: Broker) -> None:
    async def main() -> None:
        conn = await AsyncConnection(broker.url).connect()
        task = asyncio.ensure_future(conn.close())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.is_open
        await asyncio.sleep(0.1)  # the transport reports its end (connection_lost)
        # Our own close, cut short: not a connection the broker closed or lost.
        with pytest.raises(ConnectionClosedError):
            await conn.channel()

    run(main())


# --------------------------------------------------------------------------- concurrency


def test_many_concurrent_channels(broker: Broker) -> None:
    async def one(conn: AsyncConnection, i: int) -> list[bytes]:
        ch = await conn.channel()
        ok = await ch.queue_declare("", exclusive=True)
        assert ok is not None
        await ch.confirm_select()
        for n in range(20):
            await ch.basic_publish(f"{i}:{n}".encode(), routing_key=ok.queue)
        await ch.wait_for_confirms()
        bodies = []
        for _ in range(20):
            message = await ch.basic_get(ok.queue, no_ack=True)
            assert message is not None
            bodies.append(bytes(message.body))
        await ch.close()
        return bodies

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            results = await asyncio.gather(*(one(conn, i) for i in range(100)))
            for i, bodies in enumerate(results):
                assert bodies == [f"{i}:{n}".encode() for n in range(20)]
            assert not conn._channels

    run(main())


def test_slow_consumer_pauses_reading_and_loses_nothing(broker: Broker) -> None:
    """A consumer far slower than the broker: the connection stops reading after
    ``read_ahead`` deliveries (memory stays bounded), heartbeats do not kill it meanwhile,
    and every message arrives, in order."""
    total = 1500
    body = b"%06d" + b"." * 2042  # 2 KiB: one socket read holds ~130 of them

    async def main() -> None:
        conn = AsyncConnection(broker.url, heartbeat=1)
        conn.read_ahead = 50
        async with conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            for n in range(total):
                await ch.basic_publish(body % n, routing_key=ok.queue)
            got: list[int] = []
            most_waiting = 0
            done = asyncio.Event()

            async def slow(message: Message) -> None:
                nonlocal most_waiting
                most_waiting = max(most_waiting, len(conn._pending))
                got.append(int(message.body[:6]))
                message.ack()
                if len(got) < 20:
                    await asyncio.sleep(0.15)  # 3 s behind in all: past 2 heartbeat intervals
                if len(got) == total:
                    done.set()

            await ch.basic_consume(ok.queue, callback=slow)
            await asyncio.wait_for(done.wait(), 30)
            assert got == list(range(total))
            # At most one socket read's worth past the mark, not the whole queue.
            assert most_waiting <= conn.read_ahead + 300
            assert conn.is_open

    run(main())


def test_read_ahead_of_big_messages_is_bounded_in_bytes(broker: Broker) -> None:
    # Bounded by count alone, a callback awaiting something let the connection read a
    # whole queue of 1 MiB messages into memory (200 MiB in the trial; up to 20 GiB).
    total = 60
    body = b"m" * (1024 * 1024)

    async def main() -> None:
        conn = AsyncConnection(broker.url)
        conn.read_ahead_bytes = 8 * 1024 * 1024
        async with conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            await ch.confirm_select()
            for _ in range(total):
                await ch.basic_publish(body, routing_key=ok.queue)
            await ch.wait_for_confirms(30)
            most = 0
            got = 0
            done = asyncio.Event()

            async def slow(message: Message) -> None:
                nonlocal most, got
                got += 1
                if got == 1:
                    for _ in range(20):  # 2 s, in which the socket is read meanwhile
                        await asyncio.sleep(0.1)
                        most = max(most, sum(len(item.body) for _, item in conn._pending))
                if got == total:
                    done.set()

            await ch.basic_consume(ok.queue, callback=slow, no_ack=True)
            await asyncio.wait_for(done.wait(), 30)
            # one socket read past the mark at most, and a message being assembled
            assert conn.read_ahead_bytes / 2 < most <= conn.read_ahead_bytes + 2 * len(body)
            assert conn.is_open

    run(main())


async def backlog(conn: AsyncConnection, ch: AsyncChannel, queue: str, total: int) -> None:
    """Put ``total`` 1 KiB messages in ``queue``: more than one socket read's worth, so that
    a consumer of it gets far more than a small ``read_ahead`` at once."""
    with conn.corked():
        for n in range(total):
            await ch.basic_publish(b"%06d" % n + b"." * 1018, routing_key=queue)
    assert await ready(ch, queue, total) == total


def test_a_callback_awaiting_the_broker_is_not_stuck_behind_the_backlog(broker: Broker) -> None:
    """Deliveries back up past ``read_ahead`` and reading pauses; a coroutine callback that
    awaits a reply and a confirm (queued behind the backlog it is working through) gets
    them: reading goes on while a call waits for the broker."""
    total = 2000

    async def main() -> None:
        conn = AsyncConnection(broker.url, rpc_timeout=10)
        conn.read_ahead = 20
        async with conn:
            ch = await conn.channel()
            out = await conn.channel()
            await out.confirm_select()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            copies = (await ch.queue_declare("", exclusive=True)).queue
            await backlog(conn, ch, queue, total)
            done = 0

            async def relay(message: Message) -> None:
                nonlocal done
                assert await out.publish_confirmed(message.body, routing_key=copies) is True
                await out.queue_declare(copies, passive=True)
                message.ack()
                done += 1

            await ch.basic_consume(queue, callback=relay)
            while done < total:
                await conn.drain_events(timeout=30)
            assert await ready(ch, copies, total) == total

    run(main(), timeout=120)


def test_leaving_a_backed_up_iterator_after_one_message(broker: Broker) -> None:
    """The README's pattern -- take one message, ack it, leave -- on a queue whose backlog
    paused reading: the ``basic.cancel`` that leaving sends gets its reply, the rest goes
    back to the queue, and the connection closes at once."""
    total = 2000

    async def main() -> None:
        conn = AsyncConnection(broker.url, rpc_timeout=10)
        conn.read_ahead = 20
        async with conn:
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            await backlog(conn, ch, queue, total)
            async with ch.deliveries(queue) as messages:
                async for message in messages:
                    message.ack()
                    break
            assert message.body.startswith(b"000000")
            assert await ready(ch, queue, total - 1) == total - 1
        assert not conn.is_open

    run(main(), timeout=120)


def test_deliveries_iterator(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            queue = unique("iter")
            await ch.queue_declare(queue)
            for n in range(5):
                await ch.basic_publish(str(n).encode(), routing_key=queue)
            seen = []
            async with ch.deliveries(queue) as messages:
                async for message in messages:
                    seen.append(message.body)
                    message.ack()
                    if len(seen) == 3:
                        break
            assert seen == [b"0", b"1", b"2"]
            # What the iterator had buffered but not handed out went back to the queue.
            assert await ready(ch, queue, 2) == 2
            # The broker cancelling the consumer (queue deleted) ends the iteration.
            messages2: Deliveries = ch.deliveries(queue, no_ack=True)
            got = []

            async def drain() -> None:
                async for message in messages2:
                    got.append(message.body)
                    if len(got) == 2:
                        other = await conn.channel()
                        await other.queue_delete(queue)

            await asyncio.wait_for(drain(), 10)
            assert got == [b"3", b"4"]

    run(main())


def test_deliveries_takes_basic_consumes_keywords_and_no_others(broker: Broker, tmp_path: Path) -> None:
    """``deliveries(queue, **consume)`` took any keyword: ``prefetch=5`` type-checked and
    failed only when the iteration started (inside basic_consume).  Its keywords are
    basic_consume's now, typed, and a wrong one is a TypeError at the call."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            with pytest.raises(TypeError, match="prefetch"):
                ch.deliveries(ok.queue, prefetch=5)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="callback"):
                ch.deliveries(ok.queue, callback=print)  # type: ignore[call-arg]
            await ch.basic_publish(b"one", routing_key=ok.queue)
            async with ch.deliveries(
                ok.queue, consumer_tag="mine", exclusive=True, arguments={"x-priority": 3}, timeout=10
            ) as messages:
                assert messages.consumer_tag == "mine"
                other = await conn.channel()
                with pytest.raises(AccessRefused):  # the consumer is exclusive
                    await other.basic_consume(ok.queue, callback=print)
                async for message in messages:
                    assert message.body == b"one" and message.delivery_info["consumer_tag"] == "mine"
                    message.ack()
                    break

    run(main())
    # What a type checker says of it (mypy --strict, as a user's module).
    result = mypy(tmp_path, (
        "from leveret.client import AsyncChannel\n\n"
        "def good(ch: AsyncChannel) -> None:\n"
        "    ch.deliveries('q', consumer_tag='t', no_local=False, no_ack=True, exclusive=True,\n"
        "                  nowait=False, arguments={'x-priority': 1}, timeout=5.0)\n\n"
        "def bad(ch: AsyncChannel) -> None:\n"
        "    ch.deliveries('q', prefetch=5)\n"
    ))
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and ":8:" in errors[0] and '"prefetch"' in errors[0], result.stdout


def test_corked_publishes_and_thousands_of_deliveries_through_the_iterator(broker: Broker) -> None:
    """Publishes made inside ``corked()`` (awaiting between them) all go out when it ends,
    and an iterator handing out thousands of deliveries (its buffer compacted on the way)
    yields every one, once, in order; ``async with channel`` closes the channel."""
    total = 5000

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            async with await conn.channel() as ch:
                ok = await ch.queue_declare("", exclusive=True)
                assert ok is not None
                with conn.corked():
                    for n in range(total):
                        await ch.basic_publish(b"%d" % n, routing_key=ok.queue)
                assert await ready(ch, ok.queue, total) == total
                seen: list[int] = []
                async with ch.deliveries(ok.queue, no_ack=True) as messages:
                    async for message in messages:
                        seen.append(int(message.body))
                        if len(seen) == total:
                            break
                assert seen == list(range(total))
            assert ch.is_open is False
            assert conn.is_open

    run(main())


def test_drain_events_raises_what_a_callback_raised(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None

            def broken(message: Message) -> None:
                raise ValueError("boom")

            await ch.basic_consume(ok.queue, callback=broken, no_ack=True)
            await ch.basic_publish(b"x", routing_key=ok.queue)
            with pytest.raises(ValueError, match="boom"):
                await conn.drain_events(timeout=5)
            with pytest.raises(TimeoutError):
                await conn.drain_events(timeout=0.2)
            assert conn.is_open

    run(main())


def test_every_discarded_delivery_and_callback_error_is_raised_once_in_order(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the first waiting error was kept: a second oversized delivery was only logged,
    # as "a callback failed", and its delivery tag never reached the program, which could
    # not reject it (unacknowledged for ever; with a prefetch limit, a stalled consumer).
    async def main() -> None:
        async with AsyncConnection(broker.url, max_body_size=1000) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            for body in (b"a" * 2000, b"b" * 3000, b"boom", b"c" * 4000, b"small"):
                await ch.basic_publish(body, routing_key=ok.queue)
            assert await ready(ch, ok.queue, 5) == 5
            got: list[bytes] = []

            def callback(message: Message) -> None:
                if message.body == b"boom":
                    raise ValueError("boom")
                got.append(message.body)
                message.ack()

            await ch.basic_consume(ok.queue, callback=callback)
            await asyncio.sleep(0.5)  # all five have come and been handled by now
            raised: list[BaseException] = []
            while True:
                try:
                    await conn.drain_events(timeout=0.5)
                except (MessageTooLargeError, ValueError) as exc:
                    raised.append(exc)
                    if isinstance(exc, MessageTooLargeError):
                        assert exc.delivery_tag is not None
                        ch.basic_reject(exc.delivery_tag, requeue=False)
                except TimeoutError:
                    break
            assert [getattr(e, "delivery_tag", str(e)) for e in raised] == [1, 2, "boom", 4]
            assert got == [b"small"]
            assert await ready(ch, ok.queue, 0) == 0
            assert conn.is_open

    with caplog.at_level("WARNING", logger="leveret.client"):
        run(main())
    # a discarded message is not "a callback failed": no callback ran
    assert [r.getMessage().startswith("leveret: a callback failed") for r in caplog.records] == [
        False, False, True, False
    ]


def test_polling_an_idle_connection_keeps_no_waiters(broker: Broker) -> None:
    # Each drain_events that timed out left its future in the connection's waiter list,
    # which only an event from the broker emptied (heartbeats do not): a consumer polling
    # an idle queue grew by a future per poll, about 12 MiB a day at one per second.
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            await ch.basic_consume(ok.queue, callback=lambda m: None, no_ack=True)
            for _ in range(200):
                with pytest.raises(TimeoutError):
                    await conn.drain_events(timeout=0.001)
            assert len(conn._waiters) == 0
            # cancelled waits, too
            for _ in range(20):
                task = asyncio.ensure_future(conn.drain_events(timeout=30))
                await asyncio.sleep(0.001)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert len(conn._waiters) == 0
            # and a wait still ends when its event comes
            await ch.basic_publish(b"x", routing_key=ok.queue)
            await conn.drain_events(timeout=5)

    run(main())


def test_deliveries_drops_what_the_broker_requeued_when_its_channel_closed(broker: Broker) -> None:
    # The iterator handed out all 49 buffered messages after the broker closed the channel
    # (it had requeued them), every ack failing, every one to be processed again on
    # redelivery; a callback consumer runs none of them.
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            for n in range(50):
                await ch.basic_publish(b"%d" % n, routing_key=ok.queue)
            consumer_ch = await conn.channel()
            await consumer_ch.basic_qos(prefetch_count=50)
            handed = 0
            with pytest.raises(NotFound):
                async with consumer_ch.deliveries(ok.queue) as messages:
                    async for message in messages:
                        handed += 1
                        assert handed == 1, "a message handed out after its channel closed"
                        await asyncio.sleep(0.3)  # all fifty are here
                        assert len(messages._buffer) - messages._head == 49
                        await consumer_ch.queue_declare(unique("missing"), passive=True)
            assert conn._backlog == 0
            assert await ready(ch, ok.queue, 50) == 50  # all back in the queue
            # a cancelled iterator cannot be started again (it rejected what came, for ever)
            again = ch.deliveries(ok.queue)
            async with again:
                pass
            with pytest.raises(RuntimeError, match="call channel.deliveries\\(\\) again"):
                async with again:
                    pass
            assert await ready(ch, ok.queue, 50) == 50

    run(main())


def test_a_cancelled_drain_events_leaves_the_error_to_the_next(broker: Broker) -> None:
    # It took the callback's error as it was cancelled, and dropped it: for a discarded
    # message, its delivery tag with it.
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            drainer: asyncio.Task[None] | None = None

            def callback(message: Message) -> None:
                message.ack()
                assert drainer is not None
                drainer.cancel()  # as a wait_for timing out at this very moment would
                raise ValueError("callback failed")

            await ch.basic_consume(ok.queue, callback=callback)
            drainer = asyncio.create_task(conn.drain_events())
            await asyncio.sleep(0.05)
            await ch.basic_publish(b"m", routing_key=ok.queue)
            with pytest.raises(asyncio.CancelledError):
                await drainer
            with pytest.raises(ValueError, match="callback failed"):
                await conn.drain_events(timeout=5)

    run(main())


def test_a_connection_used_from_another_event_loop_says_so(broker: Broker) -> None:
    # Opened in one thread's loop and used in another's: asyncio wrote from the wrong
    # thread (a publish) or failed with "Future attached to a different loop".
    import threading

    conn = AsyncConnection(broker.url)
    loop = asyncio.new_event_loop()
    ready_ = threading.Event()
    stop = asyncio.Event()

    async def home() -> None:
        await conn.connect()
        ready_.set()
        await stop.wait()
        await conn.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(home(),))
    thread.start()
    try:
        assert ready_.wait(10)

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="belongs to the event loop it connected in"):
                await conn.channel()

        run(elsewhere())
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    assert not thread.is_alive()


def test_two_tasks_closing_at_once_both_wait_for_the_close_ok(broker: Broker) -> None:
    # The second close() saw the first one's close under way, skipped the handshake and
    # dropped the transport while the first still waited for close-ok: no clean close.
    from leveret.client.core import ConnState

    async def main() -> None:
        for _ in range(3):
            conn = AsyncConnection(broker.url)
            await conn.connect()
            core = conn._core
            assert core is not None
            await asyncio.wait_for(asyncio.gather(conn.close(), conn.close(), conn.close()), 10)
            assert core.state is ConnState.CLOSED  # close-ok came: a clean close
            assert not conn.is_open

    run(main())


def test_a_callback_that_closes_the_connection_ends_drain_events_normally(broker: Broker) -> None:
    """As in the blocking driver: a callback awaiting ``conn.close()`` has run, so the
    drain_events waiting for it returns; the next one raises.  (The close-ok used to wake
    it before the callback had finished, and it raised ConnectionClosedError.)"""

    async def main() -> None:
        conn = await AsyncConnection(broker.url).connect()
        ch = await conn.channel()
        ok = await ch.queue_declare("", exclusive=True)
        seen: list[bytes] = []

        async def close_it(message: Message) -> None:
            seen.append(bytes(message.body))
            await conn.close()

        await ch.basic_consume(ok.queue, callback=close_it)
        await ch.basic_publish(b"last", routing_key=ok.queue)
        await conn.drain_events(timeout=5)
        assert seen == [b"last"] and not conn.is_open
        with pytest.raises(ConnectionClosedError):
            await conn.drain_events(timeout=1)

    run(main())


def test_a_callback_awaiting_the_broker_when_the_connection_is_lost_sees_the_loss(broker: Broker) -> None:
    """The callback is not cancelled under its feet: the call it awaits raises
    ConnectionLost, as it would anywhere else, and drain_events reports that."""

    async def main() -> None:
        with TCPProxy(broker.port) as proxy:
            conn = await AsyncConnection(proxy.url()).connect()
            ch, other = await conn.channel(), await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            seen: list[str] = []

            async def declare(message: Message) -> None:
                proxy.freeze()
                asyncio.get_running_loop().call_later(0.3, proxy.cut)
                try:
                    await other.queue_declare("", exclusive=True)
                except BaseException as exc:
                    seen.append(type(exc).__name__)
                    raise

            await ch.basic_consume(ok.queue, callback=declare)
            await ch.basic_publish(b"x", routing_key=ok.queue)
            with pytest.raises(ConnectionLost):
                await conn.drain_events(timeout=10)
            assert seen == ["ConnectionLost"]
            await conn.close()

    run(main())


# --------------------------------------------------------------------------- backpressure


def test_publisher_waits_for_a_stalled_socket(broker: Broker) -> None:
    """The broker stops reading (a frozen proxy): publishes stop returning once the
    transport's buffer is full, instead of buffering without limit; they resume when the
    path thaws and every message arrives."""

    async def main() -> None:
        with TCPProxy(broker.port) as proxy:
            async with AsyncConnection(proxy.url()) as conn:
                ch = await conn.channel()
                ok = await ch.queue_declare("", exclusive=True)
                assert ok is not None
                await ch.confirm_select()
                body = b"z" * 4096
                published = 0
                most_buffered = 0

                async def publisher() -> None:
                    nonlocal published, most_buffered
                    for _ in range(20000):
                        await ch.basic_publish(body, routing_key=ok.queue)
                        published += 1
                        transport = conn._transport
                        assert transport is not None
                        most_buffered = max(most_buffered, transport.get_write_buffer_size())

                proxy.freeze("up")
                task = asyncio.ensure_future(publisher())
                await asyncio.sleep(1.5)
                stalled_at = published
                assert not task.done()
                assert stalled_at < 20000
                # Bounded: the transport's high-water mark plus one batch of frames.
                assert most_buffered < 8 * 1024 * 1024
                proxy.thaw()
                await asyncio.wait_for(task, 60)
                assert await ch.wait_for_confirms(timeout=60)
                assert await ready(ch, ok.queue, 20000, timeout=20) == 20000

    run(main(), timeout=120)


def test_a_mutable_body_may_be_reused_once_basic_publish_returns(broker: Broker) -> None:
    """A ``bytearray`` (or ``memoryview``) body larger than frame_max, refilled after each
    ``await basic_publish``: every message arrives as it was when published.  The body
    frames used to be slices of the caller's buffer, written at the next turn of the loop
    -- after the refill (9 messages of 10 came with a later one's contents)."""
    size = 300_000

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            buf = bytearray(size)
            expected = []
            for i in range(10):
                buf[:] = bytes([i]) * size
                expected.append(bytes(buf))
                if i % 3 == 0:
                    await ch.basic_publish(buf, routing_key=ok.queue)  # type: ignore[arg-type]
                elif i % 3 == 1:
                    await ch.basic_publish(Message(buf, content_type="x/y"), routing_key=ok.queue)
                else:
                    await ch.basic_publish(Message(memoryview(buf)), routing_key=ok.queue)
            # Confirmed with the same buffer: mandatory publishes are kept (to pair a
            # return with its publish) until their confirm comes.
            await ch.confirm_select()
            nowhere = unique("nowhere")
            for i in range(10, 13):
                buf[:] = bytes([i]) * size
                expected.append(bytes(buf))
                await ch.basic_publish(Message(buf), routing_key=ok.queue, mandatory=True)
            buf[:] = b"r" * size
            tag = await ch.basic_publish(Message(buf), routing_key=nowhere, mandatory=True)
            buf[:] = b"x" * size
            assert await ch.wait_for_confirms(timeout=10) is True
            [returned] = ch.returned
            assert returned.body == b"r" * size and returned.delivery_info["publish_tag"] == tag
            buf[:] = b"c" * size
            expected.append(bytes(buf))
            assert await ch.publish_confirmed(Message(buf), routing_key=ok.queue) is True
            buf[:] = b"y" * size
            assert await ready(ch, ok.queue, len(expected)) == len(expected)
            got = []
            while (message := await ch.basic_get(ok.queue, no_ack=True)) is not None:
                got.append(message.body)
            assert [g[:1] for g in got] == [e[:1] for e in expected]
            assert got == expected

    run(main())


# --------------------------------------------------------------------------- misc


def test_heartbeats_keep_an_idle_connection_alive(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url, heartbeat=1) as conn:
            assert conn.heartbeat == 1
            await asyncio.sleep(3.5)
            assert conn.is_open
            ch = await conn.channel()
            assert await ch.queue_declare("", exclusive=True) is not None

    run(main())


def test_connection_refused_and_bad_password(broker: Broker) -> None:
    from leveret.client import AuthenticationError

    async def main() -> None:
        url = broker.url.replace("guest:guest@", "guest:wrong-secret@")
        conn = AsyncConnection(url)
        with pytest.raises(AuthenticationError) as info:
            await conn.connect()
        assert "wrong-secret" not in str(info.value) and "wrong-secret" not in repr(conn)
        with pytest.raises(OSError):
            await AsyncConnection("amqp://guest:guest@127.0.0.1:1/").connect()

    run(main())


def test_sync_facade_of_async_objects_is_not_needed_for_messages(broker: Broker) -> None:
    """A message from an asyncio channel is acked with a plain call, as in the blocking
    driver (so code written against ``Message`` works with both)."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            await ch.basic_publish(b"ack me", routing_key=ok.queue)
            await ready(ch, ok.queue, 1)
            message = await ch.basic_get(ok.queue)
            assert message is not None
            ack: Callable[[], object] = message.ack  # what it returns is the point
            assert ack() is None
            await ch.basic_recover(requeue=True)
            assert await ready(ch, ok.queue, 0) == 0

    run(main())


def test_cancelled_consume_leaves_no_consumer_behind(broker: Broker) -> None:
    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            ran: list[Message] = []
            task = asyncio.ensure_future(ch.basic_consume(ok.queue, callback=ran.append))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await ch.basic_publish(b"for nobody", routing_key=ok.queue)
            # The late consume-ok was answered with a cancel: the message stays queued.
            assert await ready(ch, ok.queue, 1) == 1
            after = await ch.queue_declare(ok.queue, passive=True)
            assert after is not None and after.consumer_count == 0
            assert ran == []

    run(main())


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_timed_out_call_leaves_the_channel_usable(broker: Broker, driver: str) -> None:
    """The broker's answers are held up (a frozen proxy) past a call's timeout: the call
    raises TimeoutError; when the path thaws, the late reply is dropped and the next call
    on the same channel gets its own answer."""
    with TCPProxy(broker.port) as proxy:
        first, second = unique("slow-first"), unique("slow-second")
        if driver == "blocking":
            with Connection(proxy.url()) as conn:
                bch = conn.channel()
                bch.queue_declare(first, exclusive=True)
                bch.queue_declare(second, exclusive=True)
                proxy.freeze("down")
                with pytest.raises(TimeoutError):
                    bch.queue_declare(first, passive=True, timeout=0.3)
                proxy.thaw()
                ok = bch.queue_declare(second, passive=True)
                assert ok is not None and ok.queue == second and bch.is_open
            return

        async def main() -> None:
            async with AsyncConnection(proxy.url()) as conn:
                ch = await conn.channel()
                await ch.queue_declare(first, exclusive=True)
                await ch.queue_declare(second, exclusive=True)
                proxy.freeze("down")
                with pytest.raises(TimeoutError):
                    await ch.queue_declare(first, passive=True, timeout=0.3)
                proxy.thaw()
                ok = await ch.queue_declare(second, passive=True)
                assert ok is not None and ok.queue == second and ch.is_open

        run(main())


def test_call_cancelled_after_its_reply_came_leaves_the_channel_in_step(broker: Broker) -> None:
    """The reply is routed (the wait is satisfied) but the task is cancelled before it
    resumes: the reply must be used up then, not taken by the next call."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            first, second = unique("first"), unique("second")
            await ch.queue_declare(first, exclusive=True)
            await ch.queue_declare(second, exclusive=True)
            for _ in range(20):
                task = asyncio.ensure_future(ch.queue_declare(first, passive=True))
                await asyncio.sleep(0)  # sent
                while not ch._replies and not task.done():
                    await asyncio.sleep(0.0005)  # routed, the task not yet resumed
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                ok = await ch.queue_declare(second, passive=True)
                assert ok is not None and ok.queue == second
            tag_task = asyncio.ensure_future(ch.basic_consume(first, callback=lambda m: None))
            await asyncio.sleep(0)
            while not ch._replies and not tag_task.done():
                await asyncio.sleep(0.0005)
            tag_task.cancel()
            try:
                await tag_task
            except asyncio.CancelledError:
                pass
            # A consumer nobody knows about is cancelled on the broker.
            deadline = time.monotonic() + 5
            while True:
                ok = await ch.queue_declare(first, passive=True)
                assert ok is not None
                if ok.consumer_count == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert ok.consumer_count == 0 or tag_task.done() and not tag_task.cancelled()

    run(main())


def test_tasks_sharing_one_channel_get_their_own_replies(broker: Broker) -> None:
    """Synchronous requests of concurrent tasks on one channel go one at a time (the spec's
    rule; RabbitMQ may otherwise answer out of order), and each task gets its own reply."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            names = [unique(f"q{i}") for i in range(30)]
            declared = await asyncio.gather(*(ch.queue_declare(name, exclusive=True) for name in names))
            assert [ok.queue for ok in declared if ok is not None] == names
            for name in names[:5]:
                await ch.basic_publish(name.encode(), routing_key=name)
            got = await asyncio.gather(*(ch.basic_get(name, no_ack=True) for name in names[:5]))
            assert [m.body for m in got if m is not None] == [name.encode() for name in names[:5]]

    run(main())


# --------------------------------------------------------------------------- the delivery task


def test_a_callback_raising_cancelled_error_does_not_stop_the_deliveries(broker: Broker) -> None:
    """A callback awaiting something that somebody cancelled raises CancelledError: that is
    the callback's failure, reported by drain_events like any other; the deliveries after
    it still run."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            got: list[bytes] = []

            async def on_message(message: Message) -> None:
                got.append(bytes(message.body))
                message.ack()
                if message.body == b"1":
                    doomed = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_soon(doomed.cancel)
                    await doomed

            await ch.basic_consume(queue, callback=on_message)
            for n in range(3):
                await ch.basic_publish(b"%d" % n, routing_key=queue)
            with pytest.raises(RuntimeError, match="CancelledError") as info:
                while len(got) < 3:
                    await conn.drain_events(timeout=10)
            assert isinstance(info.value.__cause__, asyncio.CancelledError)
            while len(got) < 3:
                await conn.drain_events(timeout=10)
            assert got == [b"0", b"1", b"2"]
            assert conn.is_open
            assert await ready(ch, queue, 0) == 0

    run(main())


def test_a_cancelled_delivery_task_fails_the_connection(broker: Broker) -> None:
    """A callback that cancels the task it runs in stops the delivery task: the connection
    fails, and drain_events says so instead of waiting for ever."""
    from leveret.client import ConnectionClosedError

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue

            async def on_message(message: Message) -> None:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                await asyncio.sleep(0)

            await ch.basic_consume(queue, callback=on_message, no_ack=True)
            await ch.basic_publish(b"x", routing_key=queue)
            with pytest.raises(ConnectionClosedError, match="delivery task"):
                await conn.drain_events(timeout=10)
            assert not conn.is_open

    run(main())


def test_a_coroutine_on_return_is_awaited(broker: Broker) -> None:
    """``on_return`` may be a coroutine function, like any callback: it is awaited in the
    delivery task, for returns that drain_events waits for and for those whose confirms
    wait_for_confirms and publish_confirmed see.  With no ``on_return``, wait_for_confirms
    leaves the returned messages in ``returned``; publish_confirmed's own return is its
    False, not kept there too."""

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            got: list[bytes] = []

            async def on_return(message: Message) -> None:
                await asyncio.sleep(0)
                got.append(bytes(message.body))

            ch.on_return = on_return
            nowhere = unique("nowhere")
            await ch.basic_publish(b"first", routing_key=nowhere, mandatory=True)
            await conn.drain_events(timeout=10)
            assert got == [b"first"]
            await ch.confirm_select()
            await ch.basic_publish(b"second", routing_key=nowhere, mandatory=True)
            assert await ch.wait_for_confirms(timeout=10) is True
            assert await ch.publish_confirmed(b"third", routing_key=nowhere, mandatory=True) is False
            while len(got) < 3:
                await conn.drain_events(timeout=10)
            assert got == [b"first", b"second", b"third"]
            assert ch.returned == []
            ch.on_return = None
            assert await ch.publish_confirmed(b"fourth", routing_key=nowhere, mandatory=True) is False
            assert ch.returned == []
            await ch.basic_publish(b"fifth", routing_key=nowhere, mandatory=True)
            assert await ch.wait_for_confirms(timeout=10) is True
            assert [m.body for m in ch.returned] == [b"fifth"]
            assert got == [b"first", b"second", b"third"]

    run(main())


def test_a_cancelled_no_ack_iterator_takes_nothing_more(broker: Broker) -> None:
    """no_ack deliveries received for an iterator but not yet run when it is cancelled
    (the delivery task was busy) are dropped when they run: they do not count against
    ``read_ahead`` for ever -- which would keep reading paused -- and the iterator, once
    cancelled, is not kept alive by the connection."""
    import gc
    import weakref

    async def main() -> None:
        conn = AsyncConnection(broker.url)
        conn.read_ahead = 8
        async with conn:
            ch = await conn.channel()
            busy = (await ch.queue_declare("", exclusive=True)).queue
            fed = (await ch.queue_declare("", exclusive=True)).queue
            entered, release = asyncio.Event(), asyncio.Event()
            got: list[bytes] = []

            async def hold(message: Message) -> None:
                if not entered.is_set():
                    entered.set()
                    await release.wait()
                got.append(bytes(message.body))

            await ch.basic_consume(busy, callback=hold, no_ack=True)
            messages = ch.deliveries(fed, no_ack=True)
            await messages.start()
            await ch.basic_publish(b"hold", routing_key=busy)
            await asyncio.wait_for(entered.wait(), 10)
            for n in range(5):
                await ch.basic_publish(b"%d" % n, routing_key=fed)
            assert await ready(ch, fed, 0) == 0  # all five received, behind the busy callback
            await messages.cancel()
            gone = weakref.ref(messages)
            del messages
            release.set()
            with conn.corked():
                for n in range(200):
                    await ch.basic_publish(b"more", routing_key=busy)
            while len(got) < 201:
                await conn.drain_events(timeout=10)
            deadline = time.monotonic() + 10
            while gone() is not None and time.monotonic() < deadline:
                gc.collect()
                await asyncio.sleep(0.01)
            assert gone() is None

    run(main())


def test_an_iterator_of_a_lost_connection_leaves_the_new_ones_read_ahead_alone(broker: Broker) -> None:
    """An iterator holds deliveries when the connection is lost, and the same object
    connects again.  Those deliveries counted against the old connection's ``read_ahead``;
    handing them out (or dropping them at cancel) must not be taken off the new
    connection's count, which would let it read that much further before pausing."""

    async def main() -> None:
        with TCPProxy(broker.port) as proxy:
            conn = AsyncConnection(proxy.url(query="heartbeat=0"))
            conn.read_ahead = 8
            await conn.connect()
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            with conn.corked():
                for n in range(20):
                    await ch.basic_publish(b"%d" % n, routing_key=queue)
            old = ch.deliveries(queue, no_ack=True)
            assert (await old.__anext__()).body == b"0"
            deadline = time.monotonic() + 10
            while conn._backlog < 19 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert conn._backlog == 19  # the rest, received, waiting in the iterator
            proxy.cut()
            # (A call that waits for the broker: reading may be paused for the backlog, and
            # drain_events, which waits for callbacks, would not look at the socket.)
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(ch.queue_declare("", exclusive=True), 10)
            await conn.connect()
            assert conn._backlog == 0
            taken = []
            async for message in old:  # what was received before the loss
                taken.append(bytes(message.body))
                if len(taken) == 10:
                    break
            await old.cancel()  # drops the other nine
            assert taken == [b"%d" % n for n in range(1, 11)]
            assert conn._backlog == 0  # the new connection's count: nothing received on it
            ch = await conn.channel()
            queue = (await ch.queue_declare("", exclusive=True)).queue
            await ch.basic_publish(b"new", routing_key=queue)
            async with ch.deliveries(queue, no_ack=True) as messages:
                async for message in messages:
                    assert message.body == b"new"
                    break
            assert conn._backlog == 0
            await conn.close()

    run(main())


def test_handling_data_cut_short_fails_the_connection(broker: Broker) -> None:
    """An exception cuts short the handling of bytes read from the socket (after the
    core made events of them, before they were routed): the connection must fail, saying
    why, rather than go on with those deliveries gone without a word."""

    async def main() -> None:
        conn = await AsyncConnection(broker.url).connect()
        ch = await conn.channel()
        queue = (await ch.queue_declare("", exclusive=True)).queue
        got: list[Message] = []

        def cut_short() -> None:
            raise Interrupt("cut short")

        loop = asyncio.get_running_loop()
        handled: list[BaseException | None] = []
        loop.set_exception_handler(lambda loop, context: handled.append(context.get("exception")))
        interrupt_after_deliveries(conn._core, cut_short)
        await ch.basic_consume(queue, callback=got.append, no_ack=True)
        await ch.basic_publish(b"lost", routing_key=queue)
        with pytest.raises(ConnectionLost, match="cut short by Interrupt"):
            await conn.drain_events(timeout=10)
        assert got == [] and not conn.is_open
        assert [type(e) for e in handled] == [Interrupt]  # it went on, to the loop
        await conn.close()

    run(main())


@pytest.mark.parametrize("how", ["close timed out", "heartbeats missed"])
def test_a_silent_peer_does_not_keep_the_socket(broker: Broker, how: str) -> None:
    """The broker goes silent (a black hole) while the write buffer is full: when close()
    gives up waiting for close-ok, or missed heartbeats fail the connection, the socket is
    closed at once -- not kept open for ever waiting for the buffer to drain."""
    body = b"x" * 100_000

    async def main(proxy: TCPProxy) -> None:
        conn = AsyncConnection(proxy.url(query="heartbeat=1" if how == "heartbeats missed" else ""))
        await conn.connect()
        ch = await conn.channel()
        transport = conn._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        proxy.freeze()

        async def flood() -> None:
            while True:
                await ch.basic_publish(body, routing_key=unique("nowhere"))

        publisher = asyncio.ensure_future(flood())
        deadline = time.monotonic() + 30
        while transport.get_write_buffer_size() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert transport.get_write_buffer_size() > 0  # the kernel's buffers are full too
        if how == "close timed out":
            await conn.close(timeout=0.5)
        with pytest.raises(Exception):
            await asyncio.wait_for(publisher, 30)
        assert not conn.is_open
        while sock.fileno() != -1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sock.fileno() == -1

    with TCPProxy(broker.port) as proxy:
        run(main(proxy))


def test_an_update_secret_given_up_leaves_its_reply_to_nobody(broker: Broker, new_connection: Any) -> None:
    """An update_secret that timed out gets its reply late: dropped, so the next call waits
    for its own (here: times out too while the broker's answers are held up) instead of
    returning on the old one.  (Shared code: both drivers.)"""
    with TCPProxy(broker.port) as proxy:
        conn = new_connection(proxy.url(), rpc_timeout=10).connect()
        try:
            ch = conn.channel()
            proxy.freeze("down")
            with pytest.raises(TimeoutError):
                conn.update_secret("guest", "first", timeout=0.3)
            proxy.thaw()
            ch.queue_declare("", exclusive=True)  # a round trip: the late reply is in by now
            proxy.freeze("down")
            with pytest.raises(TimeoutError):
                conn.update_secret("guest", "second", timeout=0.3)
            proxy.thaw()
            conn.update_secret("guest", "third")
            assert conn.is_open
        finally:
            proxy.thaw()
            conn.close()


def test_cancelled_no_ack_consume_lets_go_of_its_callback(broker: Broker) -> None:
    """A no_ack basic.consume cancelled before its consume-ok: the late consumer is
    cancelled (nowait); its callback is kept for deliveries already on their way, then let
    go once a later request's reply shows none can come."""

    class Callback:
        def __call__(self, message: Message) -> None:
            pass

    async def main() -> None:
        async with AsyncConnection(broker.url) as conn:
            ch = await conn.channel()
            ok = await ch.queue_declare("", exclusive=True)
            assert ok is not None
            callback = Callback()
            gone = weakref.ref(callback)
            task = asyncio.ensure_future(ch.basic_consume(ok.queue, no_ack=True, callback=callback))
            del callback
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Python 3.10's task keeps its CancelledError, whose traceback holds the frame
            # that held the callback.
            del task
            after = await ch.queue_declare(ok.queue, passive=True)
            assert after is not None and after.consumer_count == 0
            await ch.queue_declare(ok.queue, passive=True)  # sent after the late cancel
            await asyncio.sleep(0.1)
            gc.collect()
            assert gone() is None

    run(main())


def test_deliveries_repr_says_where_it_stands() -> None:
    deliveries = Deliveries(None, "jobs", {})  # type: ignore[arg-type]  # a repr needs no channel
    assert repr(deliveries) == "<Deliveries queue='jobs' consumer_tag=None not started, 0 buffered>"
