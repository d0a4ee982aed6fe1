"""Client benchmark: whole clients against one RabbitMQ node, in one run.

Libraries: leveret (blocking driver), py-amqp (``amqp``), pika (``BlockingConnection``),
kombu (on py-amqp) and aiormq (asyncio), plus a small C program on Debian's librabbitmq
as the reference for round-trip latency.

Every scenario of every library runs on a fresh connection and a fresh queue (declared,
checked and deleted by the harness), and the libraries take turns within each repeat, so a
noisy moment hurts them alike; the best repeat counts (the highest rate, the lowest
median).  Message rates are messages per second; ratios are leveret against the fastest
*Python* peer measured in the same run.

Scenarios (counts at ``--scale 1``):

``publish_16B``      100,000 publishes of 16 bytes, then one synchronous call on the same
                     channel (``queue.declare passive``), so the clock stops only when the
                     broker has taken every publish; the queue must then hold them all.
``publish_4KiB``     the same with 20,000 x 4 KiB.
``publish_1MiB``     200 x 1 MiB, each library in its own subprocess, which also reports its
                     peak RSS (``ru_maxrss``) and how much it grew during the publishes.
``confirm_batch``    publisher confirms: publish 1,000, wait until all 1,000 are confirmed,
                     repeat; 100,000 in all.
``confirm_each``     publish one, wait for its confirm; 10,000.
``consume_ack``      consume 100,000 (already queued) with prefetch 1,000, acking each.
``consume_noack``    the same with ``no_ack`` (automatic acknowledgement).
``round_trip``       publish one message, wait for its delivery to a consumer on the same
                     connection; median and p99 over 5,000 (after 100 not counted).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import asyncio

__all__ = ["main", "SCENARIOS", "ADAPTERS"]

_T = TypeVar("_T")
ROOT = Path(__file__).resolve().parent.parent
DRAIN_TIMEOUT = 30.0  # seconds without a single event before a run is declared stuck
RTT_WARMUP = 100
CONFIRM_BATCH = 1000
PREFETCH = 1000


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # publish, confirm_batch, confirm_each, consume, round_trip
    count: int  # at scale 1
    size: int
    what: str
    target: str  # human-readable target
    no_ack: bool = False
    subprocess: bool = False


SCENARIOS: list[Scenario] = [
    Scenario("publish_16B", "publish", 100_000, 16, "publish 100k x 16 B", ">= 3x"),
    Scenario("publish_4KiB", "publish", 20_000, 4096, "publish 20k x 4 KiB", ">= 3x"),
    Scenario("publish_1MiB", "publish", 200, 1 << 20, "publish 200 x 1 MiB (subprocess)", ">= 1x, RSS < amqp", subprocess=True),
    Scenario("confirm_batch", "confirm_batch", 100_000, 16, "confirms, batches of 1000", ">= 3x"),
    Scenario("confirm_each", "confirm_each", 10_000, 16, "confirm each publish", "-"),
    Scenario("consume_ack", "consume", 100_000, 16, "consume, prefetch 1000, ack each", ">= 2.5x"),
    Scenario("consume_noack", "consume", 100_000, 16, "consume, no_ack", ">= 2x", no_ack=True),
    Scenario("round_trip", "round_trip", 5_000, 16, "publish -> delivery round trip", "<= 1.2x C"),
]
_BY_NAME = {s.name: s for s in SCENARIOS}
TARGETS = {  # leveret / fastest Python peer (rates), or leveret / C (latency)
    "publish_16B": 3.0, "publish_4KiB": 3.0, "publish_1MiB": 1.0, "confirm_batch": 3.0,
    "consume_ack": 2.5, "consume_noack": 2.0, "round_trip": 1.2,
}


@dataclass
class Broker:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    url: str


def parse_broker(url: str) -> Broker:
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
    return Broker(
        host=parts.hostname or "127.0.0.1", port=parts.port or 5672,
        user=unquote(parts.username or "guest"), password=unquote(parts.password or "guest"),
        vhost=vhost, url=url,
    )


class Stuck(RuntimeError):
    """A run saw no event for DRAIN_TIMEOUT seconds."""


# --------------------------------------------------------------------------- adapters
#
# One class per library, each written the way that library's documentation shows, with
# its default connection settings.  Every method returns the seconds it measured (or, for
# the round trip, the list of latencies in nanoseconds); setting up consumers and confirm
# mode happens before the clock starts.


class Adapter:
    name = ""
    package = ""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def publish(self, queue: str, body: bytes, n: int) -> float:
        raise NotImplementedError

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        raise NotImplementedError

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        raise NotImplementedError

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        raise NotImplementedError

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        raise NotImplementedError


class LeveretAdapter(Adapter):
    name = package = "leveret"

    def connect(self) -> None:
        from leveret.client import Connection

        self.conn = Connection(self.broker.url).connect()
        self.ch = self.conn.channel()

    def close(self) -> None:
        self.conn.close()

    def publish(self, queue: str, body: bytes, n: int) -> float:
        publish = self.ch.basic_publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(body, routing_key=queue)
        self.ch.queue_declare(queue, passive=True)
        return time.perf_counter() - t0

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        ch = self.ch
        ch.confirm_select()
        publish = ch.basic_publish
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            for _ in range(min(batch, n - start)):
                publish(body, routing_key=queue)
            ch.wait_for_confirms()
        return time.perf_counter() - t0

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        ch = self.ch
        ch.confirm_select()
        publish = ch.publish_confirmed
        t0 = time.perf_counter()
        for _ in range(n):
            publish(body, routing_key=queue)
        return time.perf_counter() - t0

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        ch, conn = self.ch, self.conn
        got = [0]
        if no_ack:
            def on_message(msg: Any) -> None:
                got[0] += 1
        else:
            ch.basic_qos(prefetch_count=prefetch)

            def on_message(msg: Any) -> None:
                msg.ack()
                got[0] += 1
        t0 = time.perf_counter()
        ch.basic_consume(queue, no_ack=no_ack, callback=on_message)
        drain = conn.drain_events
        try:
            while got[0] < n:
                drain(timeout=DRAIN_TIMEOUT)
        except TimeoutError:
            raise Stuck(f"received {got[0]} of {n}") from None
        return time.perf_counter() - t0

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        ch, conn = self.ch, self.conn
        got = [0]

        def on_message(msg: Any) -> None:
            got[0] += 1

        ch.basic_consume(queue, no_ack=True, callback=on_message)
        publish, drain, clock = ch.basic_publish, conn.drain_events, time.perf_counter_ns
        out = []
        for i in range(n + warmup):
            t0 = clock()
            publish(body, routing_key=queue)
            while got[0] <= i:
                drain(timeout=DRAIN_TIMEOUT)
            out.append(clock() - t0)
        return out[warmup:]


class _AckTracker:
    """Publisher confirms for the libraries that only hand over raw ack/nack methods."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.next_tag = 1
        self.nacked = 0

    def published(self) -> None:
        self.pending.append(self.next_tag)
        self.next_tag += 1

    def settle(self, tag: int, multiple: bool, ack: bool = True) -> None:
        pending = self.pending
        if not ack:
            self.nacked += 1
        if multiple:
            while pending and pending[0] <= tag:
                pending.popleft()
        elif pending and pending[0] == tag:
            pending.popleft()
        else:
            try:
                pending.remove(tag)
            except ValueError:
                pass


class PyAmqpAdapter(Adapter):
    name = package = "amqp"
    confirm_publish = False

    def connect(self) -> None:
        import amqp

        b = self.broker
        self.amqp = amqp
        self.conn = amqp.Connection(
            host=f"{b.host}:{b.port}", userid=b.user, password=b.password,
            virtual_host=b.vhost, confirm_publish=self.confirm_publish,
        )
        self.conn.connect()
        self.ch = self.conn.channel()

    def close(self) -> None:
        self.conn.close()

    def _drain(self, done: Callable[[], bool], what: str) -> None:
        drain = self.conn.drain_events
        try:
            while not done():
                drain(timeout=DRAIN_TIMEOUT)
        except TimeoutError:
            raise Stuck(what) from None

    def publish(self, queue: str, body: bytes, n: int) -> float:
        Message = self.amqp.Message
        publish = self.ch.basic_publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(Message(body), exchange="", routing_key=queue)
        self.ch.queue_declare(queue, passive=True)
        return time.perf_counter() - t0

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        # py-amqp has no "wait for all confirms": count the acks its channel reports.
        ch = self.ch
        tracker = _AckTracker()
        ch.confirm_select()
        ch.events["basic_ack"].add(lambda tag, multiple: tracker.settle(tag, multiple))
        ch.events["basic_nack"].add(lambda tag, multiple: tracker.settle(tag, multiple, False))
        Message = self.amqp.Message
        publish = ch.basic_publish
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            for _ in range(min(batch, n - start)):
                publish(Message(body), exchange="", routing_key=queue)
                tracker.published()
            self._drain(lambda: not tracker.pending, "confirms")
        assert not tracker.nacked
        return time.perf_counter() - t0

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        Message = self.amqp.Message
        publish = self.ch.basic_publish_confirm  # what confirm_publish=True makes of basic_publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(Message(body), exchange="", routing_key=queue)
        return time.perf_counter() - t0

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        ch = self.ch
        got = [0]
        if no_ack:
            def on_message(msg: Any) -> None:
                got[0] += 1
        else:
            ch.basic_qos(0, prefetch, False)
            ack = ch.basic_ack

            def on_message(msg: Any) -> None:
                ack(msg.delivery_tag)
                got[0] += 1
        t0 = time.perf_counter()
        ch.basic_consume(queue, no_ack=no_ack, callback=on_message)
        self._drain(lambda: got[0] >= n, f"received {got[0]} of {n}")
        return time.perf_counter() - t0

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        ch = self.ch
        got = [0]

        def on_message(msg: Any) -> None:
            got[0] += 1

        ch.basic_consume(queue, no_ack=True, callback=on_message)
        Message = self.amqp.Message
        publish, drain, clock = ch.basic_publish, self.conn.drain_events, time.perf_counter_ns
        out = []
        for i in range(n + warmup):
            t0 = clock()
            publish(Message(body), exchange="", routing_key=queue)
            while got[0] <= i:
                drain(timeout=DRAIN_TIMEOUT)
            out.append(clock() - t0)
        return out[warmup:]


class PikaAdapter(Adapter):
    name = package = "pika"

    def connect(self) -> None:
        import pika

        b = self.broker
        self.pika = pika
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            host=b.host, port=b.port, virtual_host=b.vhost,
            credentials=pika.PlainCredentials(b.user, b.password),
        ))
        self.ch = self.conn.channel()

    def close(self) -> None:
        self.conn.close()

    def publish(self, queue: str, body: bytes, n: int) -> float:
        publish = self.ch.basic_publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish("", queue, body)
        self.ch.queue_declare(queue, passive=True)
        return time.perf_counter() - t0

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        # BlockingChannel in confirm mode waits for every publish's confirm; its only way
        # to batch is the channel underneath (``_impl``, pika's async Channel) with an
        # ack callback, flushed by the blocking connection.
        Nack = self.pika.spec.Basic.Nack
        tracker = _AckTracker()
        selected = [False]

        def on_confirm(frame: Any) -> None:
            m = frame.method
            tracker.settle(m.delivery_tag, m.multiple, not isinstance(m, Nack))

        impl, flush = self.ch._impl, self.conn._flush_output
        impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: selected.__setitem__(0, True))
        flush(lambda: selected[0])
        publish = impl.basic_publish
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            for _ in range(min(batch, n - start)):
                publish("", queue, body)
                tracker.published()
            flush(lambda: not tracker.pending)
        assert not tracker.nacked
        return time.perf_counter() - t0

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        ch = self.ch
        ch.confirm_delivery()  # from now on basic_publish waits for the confirm
        publish = ch.basic_publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish("", queue, body)
        return time.perf_counter() - t0

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        ch = self.ch
        got = [0]
        if not no_ack:
            ch.basic_qos(prefetch_count=prefetch)

        def on_message(chan: Any, method: Any, props: Any, body: bytes) -> None:
            if not no_ack:
                chan.basic_ack(method.delivery_tag)
            got[0] += 1
            if got[0] >= n:
                chan.stop_consuming()

        t0 = time.perf_counter()
        ch.basic_consume(queue, on_message, auto_ack=no_ack)
        ch.start_consuming()
        return time.perf_counter() - t0

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        ch = self.ch
        got = [0]

        def on_message(chan: Any, method: Any, props: Any, body: bytes) -> None:
            got[0] += 1

        ch.basic_consume(queue, on_message, auto_ack=True)
        publish, process, clock = ch.basic_publish, self.conn.process_data_events, time.perf_counter_ns
        out = []
        for i in range(n + warmup):
            t0 = clock()
            publish("", queue, body)
            while got[0] <= i:
                process(time_limit=None)
            out.append(clock() - t0)
        return out[warmup:]


class KombuAdapter(Adapter):
    name = package = "kombu"
    confirm_publish = False

    def connect(self) -> None:
        import kombu

        b = self.broker
        self.kombu = kombu
        self.conn = kombu.Connection(
            hostname=b.host, port=b.port, userid=b.user, password=b.password,
            virtual_host=b.vhost, transport="pyamqp",
            transport_options={"confirm_publish": True} if self.confirm_publish else {},
        )
        self.conn.connect()
        self.ch = self.conn.channel()
        self.producer = kombu.Producer(self.ch)

    def close(self) -> None:
        self.conn.release()

    def _drain(self, done: Callable[[], bool], what: str) -> None:
        drain = self.conn.drain_events
        try:
            while not done():
                drain(timeout=DRAIN_TIMEOUT)
        except TimeoutError:
            raise Stuck(what) from None

    def publish(self, queue: str, body: bytes, n: int) -> float:
        publish = self.producer.publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(body, routing_key=queue)
        self.ch.queue_declare(queue, passive=True)
        return time.perf_counter() - t0

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        # kombu has no batch confirms either: its channel is py-amqp's, counted as there.
        ch = self.ch
        tracker = _AckTracker()
        ch.confirm_select()
        ch.events["basic_ack"].add(lambda tag, multiple: tracker.settle(tag, multiple))
        ch.events["basic_nack"].add(lambda tag, multiple: tracker.settle(tag, multiple, False))
        publish = self.producer.publish
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            for _ in range(min(batch, n - start)):
                publish(body, routing_key=queue)
                tracker.published()
            self._drain(lambda: not tracker.pending, "confirms")
        assert not tracker.nacked
        return time.perf_counter() - t0

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        publish = self.producer.publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(body, routing_key=queue)
        return time.perf_counter() - t0

    def _consumer(self, queue: str, on_message: Callable[[Any], None], no_ack: bool, prefetch: int | None) -> Any:
        kombu = self.kombu
        return kombu.Consumer(
            self.ch, queues=[kombu.Queue(queue, no_declare=True)], on_message=on_message,
            no_ack=no_ack, prefetch_count=prefetch,
        )

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        got = [0]
        if no_ack:
            def on_message(msg: Any) -> None:
                got[0] += 1
        else:
            def on_message(msg: Any) -> None:
                msg.ack()
                got[0] += 1
        consumer = self._consumer(queue, on_message, no_ack, None if no_ack else prefetch)
        t0 = time.perf_counter()
        consumer.consume()
        self._drain(lambda: got[0] >= n, f"received {got[0]} of {n}")
        return time.perf_counter() - t0

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        got = [0]

        def on_message(msg: Any) -> None:
            got[0] += 1

        self._consumer(queue, on_message, True, None).consume()
        publish, drain, clock = self.producer.publish, self.conn.drain_events, time.perf_counter_ns
        out = []
        for i in range(n + warmup):
            t0 = clock()
            publish(body, routing_key=queue)
            while got[0] <= i:
                drain(timeout=DRAIN_TIMEOUT)
            out.append(clock() - t0)
        return out[warmup:]


class KombuConfirmAdapter(KombuAdapter):
    confirm_publish = True


class AiormqAdapter(Adapter):
    """aiormq, driven by one event loop per connection; the clocks run inside coroutines."""

    name = package = "aiormq"

    def connect(self) -> None:
        import aiormq

        global asyncio
        import asyncio  # here, not at the top: the 1 MiB workers of other libraries must not
        # carry asyncio's (and ssl's) memory in the RSS they report

        # aiormq leaves a writer task behind at close, which asyncio reports on stderr.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        self.aiormq = aiormq
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(self._connect())

    async def _connect(self) -> Any:
        b = self.broker
        from urllib.parse import quote

        url = f"amqp://{quote(b.user, safe='')}:{quote(b.password, safe='')}@{b.host}:{b.port}/{quote(b.vhost, safe='')}"
        return await self.aiormq.connect(url)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.conn.close())
        finally:
            self.loop.close()

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, DRAIN_TIMEOUT * 10))

    def publish(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=False)
            publish = ch.basic_publish
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(body, routing_key=queue)
            await ch.queue_declare(queue, passive=True)
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=True)
            publish = ch.basic_publish
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                # Each basic_publish returns once its confirm arrived: a batch is a gather.
                await asyncio.gather(*[publish(body, routing_key=queue) for _ in range(min(batch, n - start))])
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=True)
            publish = ch.basic_publish
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(body, routing_key=queue)
            return time.perf_counter() - t0
        return self._run(run())

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=False)
            done = self.loop.create_future()
            got = [0]
            if no_ack:
                async def on_message(msg: Any) -> None:
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            else:
                await ch.basic_qos(prefetch_count=prefetch)

                async def on_message(msg: Any) -> None:
                    await msg.channel.basic_ack(msg.delivery.delivery_tag)
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            t0 = time.perf_counter()
            await ch.basic_consume(queue, on_message, no_ack=no_ack)
            await done
            return time.perf_counter() - t0
        return self._run(run())

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        async def run() -> list[int]:
            ch = await self.conn.channel(publisher_confirms=False)
            waiter: list[asyncio.Future[None]] = []

            async def on_message(msg: Any) -> None:
                waiter[0].set_result(None)

            await ch.basic_consume(queue, on_message, no_ack=True)
            publish, clock, loop = ch.basic_publish, time.perf_counter_ns, self.loop
            out = []
            for _ in range(n + warmup):
                fut = loop.create_future()
                waiter[:] = [fut]
                t0 = clock()
                await publish(body, routing_key=queue)
                await fut
                out.append(clock() - t0)
            return out[warmup:]
        return self._run(run())


class FloorAdapter(Adapter):
    """Not a library: the floor, what any client could reach (see ``benchmarks/floor.py``).

    A bare blocking socket writes the scenario's publishes pre-encoded (frames made before
    the clock starts, written in chunks of ~256 KiB), and for confirms reads and checks
    the acks.  Run for the publish and confirm scenarios; never counted in a verdict:
    ``floor / fastest peer`` is about the highest ratio any client can get in that run.
    """

    name = "floor"
    package = "leveret"  # leveret.wire encodes its frames

    def connect(self) -> None:
        from .floor import BareSocket

        b = self.broker
        self.bare = BareSocket(b.host, b.port, b.user, b.password, b.vhost, DRAIN_TIMEOUT)

    def close(self) -> None:
        self.bare.close()

    def publish(self, queue: str, body: bytes, n: int) -> float:
        bare = self.bare
        chunks, sendall = bare.chunks(bare.publish_frames(queue, body), n), bare.sock.sendall
        t0 = time.perf_counter()
        for chunk in chunks:
            sendall(chunk)
        bare.sync(queue)
        return time.perf_counter() - t0

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        bare = self.bare
        bare.confirm_select()
        frames, sendall, wait = bare.publish_frames(queue, body), bare.sock.sendall, bare.wait_acked
        full = frames * batch
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            k = min(batch, n - start)
            sendall(full if k == batch else frames * k)
            wait(start + k)
        return time.perf_counter() - t0

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        bare = self.bare
        bare.confirm_select()
        frames, sendall, wait = bare.publish_frames(queue, body), bare.sock.sendall, bare.wait_acked
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            sendall(frames)
            wait(i)
        return time.perf_counter() - t0


ADAPTERS: dict[str, type[Adapter]] = {
    "leveret": LeveretAdapter,
    "amqp": PyAmqpAdapter,
    "pika": PikaAdapter,
    "kombu": KombuAdapter,
    "aiormq": AiormqAdapter,
}


# Adapters other benchmarks run through this harness (benchmarks/aio.py's asyncio clients).
ADAPTERS_EXTRA: dict[str, type[Adapter]] = {}

#: Not libraries: references run next to them (``--no-floor`` skips the floor).
REFERENCES: dict[str, type[Adapter]] = {"floor": FloorAdapter}
FLOOR_KINDS = ("publish", "confirm_batch", "confirm_each")


def _adapter(lib: str, scenario: Scenario, broker: Broker) -> Adapter:
    if lib == "kombu" and scenario.kind == "confirm_each":
        return KombuConfirmAdapter(broker)  # transport_options={"confirm_publish": True}
    return _adapter_class(lib)(broker)


def _adapter_class(lib: str) -> type[Adapter]:
    return ADAPTERS_EXTRA.get(lib) or REFERENCES.get(lib) or ADAPTERS[lib]


# --------------------------------------------------------------------------- the C reference

C_SOURCE = r"""
/* Round-trip latency with librabbitmq (rabbitmq-c): publish one message to the default
   exchange, wait for its delivery to a no-ack consumer on the same connection.
   argv: host port user password vhost queue count warmup size */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void check(amqp_rpc_reply_t r, const char *what) {
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "%s failed (reply type %d, library error %d)\n", what, r.reply_type, r.library_error);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 10) { fprintf(stderr, "usage: host port user password vhost queue count warmup size\n"); return 2; }
    const char *host = argv[1], *user = argv[3], *password = argv[4], *vhost = argv[5], *queue = argv[6];
    int port = atoi(argv[2]), count = atoi(argv[7]), warmup = atoi(argv[8]);
    size_t size = (size_t)atol(argv[9]);

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock || amqp_socket_open(sock, host, port) != AMQP_STATUS_OK) { fprintf(stderr, "cannot connect\n"); return 1; }
    check(amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, user, password), "login");
    amqp_channel_open(conn, 1);
    check(amqp_get_rpc_reply(conn), "channel.open");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn), "basic.consume");

    char *payload = malloc(size ? size : 1);
    memset(payload, 'x', size);
    amqp_bytes_t body = { size, payload };
    amqp_bytes_t routing_key = amqp_cstring_bytes(queue);
    long long *lat = malloc(sizeof(long long) * (size_t)(count + warmup));
    for (int i = 0; i < count + warmup; i++) {
        long long t0 = now_ns();
        if (amqp_basic_publish(conn, 1, amqp_empty_bytes, routing_key, 0, 0, NULL, body) != AMQP_STATUS_OK) {
            fprintf(stderr, "publish failed\n");
            return 1;
        }
        amqp_envelope_t envelope;
        amqp_maybe_release_buffers(conn);
        check(amqp_consume_message(conn, &envelope, NULL, 0), "consume");
        lat[i] = now_ns() - t0;
        amqp_destroy_envelope(&envelope);
    }
    printf("[");
    for (int i = warmup; i < count + warmup; i++) printf(i == warmup ? "%lld" : ",%lld", lat[i]);
    printf("]\n");
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
"""


def build_c_client() -> tuple[str | None, str]:
    """Compile the C reference (cached by source hash); (path, "") or (None, why not)."""
    if shutil.which("gcc") is None:
        return None, "gcc not found"
    if not Path("/usr/include/amqp.h").exists() and not Path("/usr/include/rabbitmq-c/amqp.h").exists():
        return None, "librabbitmq-dev not installed (apt-get install -y librabbitmq-dev)"
    digest = hashlib.sha256(C_SOURCE.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"leveret-bench-c-{digest}"
    exe = folder / "rtt"
    if exe.exists():
        return str(exe), ""
    folder.mkdir(exist_ok=True)
    src = folder / "rtt.c"
    src.write_text(C_SOURCE)
    proc = subprocess.run(
        ["gcc", "-O2", "-o", str(exe), str(src), "-lrabbitmq"], capture_output=True, text=True,
    )
    if proc.returncode != 0:
        return None, f"gcc failed: {proc.stderr.strip()[-500:]}"
    return str(exe), ""


def run_c_round_trip(exe: str, broker: Broker, queue: str, n: int, warmup: int) -> list[int]:
    b = broker
    proc = subprocess.run(
        [exe, b.host, str(b.port), b.user, b.password, b.vhost, queue, str(n), str(warmup), "16"],
        capture_output=True, text=True, timeout=DRAIN_TIMEOUT * 10,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"C client failed: {proc.stderr.strip()}")
    latencies: list[int] = json.loads(proc.stdout)
    return latencies


# --------------------------------------------------------------------------- the harness


class Admin:
    """Declares, fills, counts and deletes the benchmark queues (a leveret connection:
    the counts it reads are the broker's, whichever client asks)."""

    def __init__(self, broker: Broker) -> None:
        from leveret.client import Connection

        self.conn = Connection(broker.url).connect()
        self.ch = self.conn.channel()
        self.server_properties = self.conn.server_properties

    def declare(self, tag: str) -> str:
        name = f"bench.{tag}.{secrets.token_hex(4)}"
        self.ch.queue_declare(name)
        return name

    def count(self, queue: str) -> int:
        ok = self.ch.queue_declare(queue, passive=True)
        assert ok is not None
        return ok.message_count

    def wait_count(self, queue: str, expected: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            got = self.count(queue)
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def fill(self, queue: str, body: bytes, n: int) -> None:
        publish = self.ch.basic_publish
        for _ in range(n):
            publish(body, routing_key=queue)
        got = self.wait_count(queue, n)
        if got != n:
            raise RuntimeError(f"prefill: queue holds {got} of {n}")

    def delete(self, queue: str) -> None:
        self.ch.queue_delete(queue)

    def close(self) -> None:
        self.conn.close()


def _one_run(lib: str, sc: Scenario, n: int, broker: Broker, admin: Admin, c_exe: str | None) -> dict[str, Any]:
    """One library, one scenario, one repeat, on a fresh queue: the measured result."""
    queue = admin.declare(f"{sc.name}.{lib}")
    body = b"x" * sc.size
    try:
        if sc.kind == "consume":
            admin.fill(queue, body, n)
        if sc.subprocess:
            return _run_worker(lib, sc, n, broker, queue)
        if lib == "c":
            assert c_exe is not None
            return _latency(run_c_round_trip(c_exe, broker, queue, n, RTT_WARMUP))
        adapter = _adapter(lib, sc, broker)
        adapter.connect()
        cpu0 = _cpu_seconds()
        try:
            if sc.kind == "publish":
                seconds = adapter.publish(queue, body, n)
            elif sc.kind == "confirm_batch":
                seconds = adapter.confirm_batch(queue, body, n, CONFIRM_BATCH)
            elif sc.kind == "confirm_each":
                seconds = adapter.confirm_each(queue, body, n)
            elif sc.kind == "consume":
                seconds = adapter.consume(queue, n, sc.no_ack, PREFETCH)
            else:
                result = _latency(adapter.round_trip(queue, body, n, RTT_WARMUP))
                result["cpu_us_per_msg"] = (_cpu_seconds() - cpu0) / (n + RTT_WARMUP) * 1e6
                return result
            cpu = _cpu_seconds() - cpu0
        finally:
            adapter.close()
        if sc.kind in ("publish", "confirm_batch", "confirm_each"):
            got = admin.wait_count(queue, n)
            if got != n:
                raise RuntimeError(f"the queue holds {got} messages, not {n}")
        return {"seconds": seconds, "rate": n / seconds, "cpu_us_per_msg": cpu / n * 1e6}
    finally:
        admin.delete(queue)


def _cpu_seconds() -> float:
    """CPU time of this process, user + system, all threads (an I/O thread's work counts)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _latency(ns: list[int]) -> dict[str, Any]:
    ordered = sorted(ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"median_us": statistics.median(ordered) / 1000, "p99_us": p99 / 1000, "count": len(ns)}


_WARMED: set[str] = set()


def _worker_env() -> dict[str, str]:
    """The workers' environment: bytecode cached in a private folder.

    Without cached bytecode (``PYTHONDONTWRITEBYTECODE``, a source checkout) every worker
    would compile leveret from source, and the compiler's garbage would stay in its RSS
    while the peers, installed with their ``.pyc``, pay nothing.  A cache outside the work
    tree puts every library on the same footing and leaves the tree alone.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "leveret-bench-pycache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _run_worker(lib: str, sc: Scenario, n: int, broker: Broker, queue: str) -> dict[str, Any]:
    env = _worker_env()
    if lib not in _WARMED:  # fill the bytecode cache before the first measured run
        module = "leveret.client" if lib == "leveret" else _adapter_class(lib).package
        subprocess.run([sys.executable, "-c", f"import benchmarks.client, {module}"],
                       env=env, cwd=str(ROOT), check=True, timeout=120)
        _WARMED.add(lib)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "client", "--worker", lib, "--url", broker.url,
         "--queue", queue, "--count", str(n), "--size", str(sc.size)],
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=DRAIN_TIMEOUT * 20,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed: {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _proc_status(field: str) -> int | None:
    """A ``VmXXX`` line of ``/proc/self/status`` in KiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement (Linux >= 4.0: ``5`` > ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(lib: str, url: str, queue: str, n: int, size: int) -> int:
    """The 1 MiB publishes in a process of their own: rate and peak RSS, as JSON.

    Peak RSS is Linux's ``VmHWM``, reset just before the publishes start: the most memory
    the process held *while publishing*, everything it held before included, the
    import-time high-water mark not.  Not ``ru_maxrss``: it cannot be reset, and across
    ``fork`` + ``exec`` Linux carries the parent's high-water mark into the child's, so a
    worker started by a harness holding 40 MiB could never report less than that.
    """
    adapter = _adapter_class(lib)(parse_broker(url))
    adapter.connect()
    body = b"x" * size
    gc.collect()
    before = _proc_status("VmRSS")
    reset = _reset_peak_rss()
    cpu0 = _cpu_seconds()
    seconds = adapter.publish(queue, body, n)
    cpu = _cpu_seconds() - cpu0
    peak = _proc_status("VmHWM") if reset else None
    if peak is None or before is None:  # not Linux: the lifetime peak is all there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        before = 0
    adapter.close()
    print(json.dumps({
        "seconds": seconds, "rate": n / seconds, "cpu_us_per_msg": cpu / n * 1e6,
        "peak_rss_mib": peak / 1024, "rss_before_mib": before / 1024,
        "rss_growth_mib": (peak - before) / 1024,
    }))
    return 0


def _better(sc: Scenario, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None or "error" in old:
        return True
    if "error" in new:
        return False
    if sc.kind == "round_trip":
        return bool(new["median_us"] < old["median_us"])
    return bool(new["rate"] > old["rate"])


def run_all(
    broker: Broker, libs: list[str], scenarios: list[Scenario], scale: float, repeat: int,
    c_exe: str | None, log: Callable[[str], None], floor: bool = False,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{scenario: {lib: best result}}``; a library that fails gets ``{"error": ...}``.

    With ``floor``, the publish and confirm scenarios also run :class:`FloorAdapter`
    (key ``"floor"``), in turn with the libraries."""
    admin = Admin(broker)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        # A fresh node is slow for its first few thousand messages; warm it up untimed.
        warm = admin.declare("warmup")
        admin.fill(warm, b"x" * 16, 5000)
        admin.delete(warm)
        for sc in scenarios:
            n = max(1, round(sc.count * scale))
            runners = (list(libs) + (["c"] if sc.kind == "round_trip" and c_exe else [])
                       + (["floor"] if floor and sc.kind in FLOOR_KINDS else []))
            best: dict[str, dict[str, Any]] = {}
            rss: dict[str, list[dict[str, Any]]] = {}
            cpu: dict[str, float] = {}
            # The 1 MiB publishes take a fraction of a second and swing with the broker's
            # disk and memory work: give them more repeats.
            reps = max(repeat, 5) if sc.subprocess else repeat
            for rep in range(reps):
                # Rotate who goes first: the first run after a scenario change meets a
                # broker still busy with the previous one's clean-up.
                turn = rep % len(runners)
                for lib in runners[turn:] + runners[:turn]:
                    t0 = time.monotonic()
                    try:
                        r = _one_run(lib, sc, n, broker, admin, c_exe)
                    except Exception as exc:  # one library's failure must not end the run
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"{sc.name:14} {lib:8} #{rep + 1}: {_short(r)}  ({time.monotonic() - t0:.1f} s)")
                    if "peak_rss_mib" in r:
                        rss.setdefault(lib, []).append(r)
                    if "cpu_us_per_msg" in r:  # the least disturbed repeat, as for rates
                        cpu[lib] = min(cpu.get(lib, float("inf")), r["cpu_us_per_msg"])
                    if _better(sc, r, best.get(lib)):
                        best[lib] = r
            # Memory is not a race: report the repeat with the median peak (its own
            # before/growth figures with it), and the range seen.
            for lib, runs in rss.items():
                if "error" not in best[lib]:
                    runs.sort(key=lambda x: x["peak_rss_mib"])
                    mid = runs[(len(runs) - 1) // 2]
                    for key in ("peak_rss_mib", "rss_before_mib", "rss_growth_mib"):
                        best[lib][key] = mid[key]
                    best[lib]["peak_rss_range_mib"] = [runs[0]["peak_rss_mib"], runs[-1]["peak_rss_mib"]]
            for lib, value in cpu.items():
                if "error" not in best[lib]:
                    best[lib]["cpu_us_per_msg"] = value
            results[sc.name] = {"count": n, **best}  # type: ignore[dict-item]
    finally:
        admin.close()
    return results


def _short(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"])[:200]
    if "median_us" in r:
        return f"median {r['median_us']:.1f} us, p99 {r['p99_us']:.1f} us"
    extra = f", peak RSS {r['peak_rss_mib']:.1f} MiB (+{r['rss_growth_mib']:.1f})" if "peak_rss_mib" in r else ""
    return f"{r['rate']:,.0f} msg/s{extra}"


# --------------------------------------------------------------------------- report


def summarize(results: dict[str, Any], libs: list[str]) -> dict[str, Any]:
    """Per scenario: the fastest Python peer, leveret's ratio to it, the target, pass."""
    out: dict[str, Any] = {}
    peers = [lib for lib in libs if lib != "leveret"]
    for name, row in results.items():
        sc = _BY_NAME[name]
        lev = row.get("leveret")
        ok_peers = {p: row[p] for p in peers if p in row and "error" not in row[p]}
        entry: dict[str, Any] = {"target": sc.target}
        if lev is None or "error" in lev:
            entry["verdict"] = "leveret failed"
            out[name] = entry
            continue
        cpu_peers = {p: r["cpu_us_per_msg"] for p, r in ok_peers.items() if "cpu_us_per_msg" in r}
        if cpu_peers and "cpu_us_per_msg" in lev:
            leanest = min(cpu_peers, key=cpu_peers.__getitem__)
            entry["leanest_peer"] = leanest
            entry["cpu_ratio_vs_leanest_peer"] = round(cpu_peers[leanest] / lev["cpu_us_per_msg"], 2)
        if sc.kind == "round_trip":
            if ok_peers:
                fastest = min(ok_peers, key=lambda p: ok_peers[p]["median_us"])
                entry["fastest_peer"] = fastest
                entry["ratio_vs_fastest_peer"] = round(ok_peers[fastest]["median_us"] / lev["median_us"], 2)
            c = row.get("c")
            if c is None or "error" in c:
                entry["ratio_vs_c"] = None
                entry["verdict"] = "C reference missing: " + (c["error"] if c else "not run")
            else:
                ratio = lev["median_us"] / c["median_us"]
                entry["ratio_vs_c"] = round(ratio, 2)
                entry["p99_ratio_vs_c"] = round(lev["p99_us"] / c["p99_us"], 2)
                entry["verdict"] = "PASS" if ratio <= TARGETS[name] else "MISS"
            out[name] = entry
            continue
        if not ok_peers:
            entry["verdict"] = "no peer ran"
            out[name] = entry
            continue
        fastest = max(ok_peers, key=lambda p: ok_peers[p]["rate"])
        ratio = lev["rate"] / ok_peers[fastest]["rate"]
        entry["fastest_peer"] = fastest
        entry["ratio_vs_fastest_peer"] = round(ratio, 2)
        target = TARGETS.get(name)
        passed = target is None or ratio >= target
        if name == "publish_1MiB":
            amqp_rss = row.get("amqp", {}).get("peak_rss_mib")
            entry["rss_vs_amqp"] = None if amqp_rss is None else round(lev["peak_rss_mib"] / amqp_rss, 2)
            if amqp_rss is None:
                passed = False
                entry["note"] = "no py-amqp RSS to compare with"
            else:
                passed = passed and lev["peak_rss_mib"] < amqp_rss
        entry["verdict"] = "-" if target is None else ("PASS" if passed else "MISS")
        flo = row.get("floor")
        if flo is not None and "error" not in flo:
            entry["floor_vs_fastest_peer"] = round(flo["rate"] / ok_peers[fastest]["rate"], 2)
            entry["leveret_vs_floor"] = round(lev["rate"] / flo["rate"], 2)
        out[name] = entry
    return out


def format_tables(results: dict[str, Any], summary: dict[str, Any], libs: list[str], c_note: str) -> str:
    cols = list(libs)
    show_c = "round_trip" in results
    show_floor = any("floor" in row for row in results.values())
    lines = ["| scenario | " + " | ".join(cols) + (" | C (librabbitmq)" if show_c else "")
             + " | leveret vs fastest peer | target | verdict |"
             + (" floor: bare socket | floor / fastest peer |" if show_floor else ""),
             "| --- | " + " | ".join("---:" for _ in cols) + (" | ---:" if show_c else "") + " | ---: | --- | --- |"
             + (" ---: | ---: |" if show_floor else "")]
    for name, row in results.items():
        sc = _BY_NAME[name]
        s = summary.get(name, {})
        cells = []
        for lib in cols + (["c"] if show_c else []):
            r = row.get(lib)
            if lib == "c" and sc.kind != "round_trip":
                cells.append("")
            elif r is None:
                cells.append("missing: " + c_note if lib == "c" and c_note else "n/a")
            elif "error" in r:
                cells.append("error")
            elif sc.kind == "round_trip":
                cells.append(f"{r['median_us']:.0f} / {r['p99_us']:.0f} us")
            else:
                cells.append(f"{r['rate']:,.0f}")
        ratio = s.get("ratio_vs_fastest_peer")
        ratio_cell = "-" if ratio is None else f"{ratio:.2f}x ({s['fastest_peer']})"
        target, verdict = s.get("target", "-"), s.get("verdict", "-")
        if sc.kind == "round_trip":
            rc = s.get("ratio_vs_c")
            target = f"<= 1.2x C (leveret/C = {rc:.2f}x median, {s.get('p99_ratio_vs_c', 0):.2f}x p99)" if rc else target
        label = f"{name} ({row['count']:,})"
        line = f"| {label} | " + " | ".join(cells) + f" | {ratio_cell} | {target} | {verdict} |"
        if show_floor:
            flo = row.get("floor")
            flo_cell = "-" if flo is None else ("error" if "error" in flo else f"{flo['rate']:,.0f}")
            flo_ratio = s.get("floor_vs_fastest_peer")
            line += f" {flo_cell} | {'-' if flo_ratio is None else f'{flo_ratio:.2f}x'} |"
        lines.append(line)
    lines.append("")
    lines.append("| client CPU per message (us, user + system, all threads) | " + " | ".join(cols)
                 + " | leanest peer / leveret |")
    lines.append("| --- | " + " | ".join("---:" for _ in cols) + " | ---: |")
    for name, row in results.items():
        s = summary.get(name, {})
        cells = [f"{row[c]['cpu_us_per_msg']:.1f}" if c in row and "cpu_us_per_msg" in row[c] else "n/a" for c in cols]
        ratio = s.get("cpu_ratio_vs_leanest_peer")
        ratio_cell = "-" if ratio is None else f"{ratio:.2f}x ({s['leanest_peer']})"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio_cell} |")
    if "publish_1MiB" in results:
        row = results["publish_1MiB"]
        lines.append("")
        lines.append("| publish_1MiB memory | " + " | ".join(cols) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
        peak = [f"{row[c]['peak_rss_mib']:.1f}" if c in row and "peak_rss_mib" in row[c] else "n/a" for c in cols]
        growth = [f"{row[c]['rss_growth_mib']:.1f}" if c in row and "rss_growth_mib" in row[c] else "n/a" for c in cols]
        lines.append("| peak RSS while publishing (MiB, median repeat) | " + " | ".join(peak) + " |")
        lines.append("| RSS growth while publishing (MiB) | " + " | ".join(growth) + " |")
    lines.append("")
    lines.append("Rates in messages/s (higher is better); round trip as median / p99 (lower is better). "
                 "'leveret vs fastest peer' = leveret's rate / the fastest Python peer's rate "
                 "(for the round trip: the peer's median / leveret's).  CPU: the client process's "
                 "CPU time per message, lowest over the repeats; 'leanest peer / leveret' = how many "
                 "times more CPU the leanest peer spends per message.")
    if show_floor:
        lines.append("")
        lines.append("Floor: a bare socket writing pre-encoded publishes (and reading the acks, with "
                     "confirms), no library -- the broker's limit on this machine; 'floor / fastest peer' "
                     "is about the highest ratio any client can reach in this run (a client at or above the floor "
                     "is bound by the broker).  Not a verdict.")
    return "\n".join(lines)


def _versions(libs: list[str]) -> dict[str, str]:
    out = {}
    for lib in libs:
        try:
            out[lib] = metadata.version(ADAPTERS[lib].package)
        except metadata.PackageNotFoundError:
            out[lib] = "?"
    return out


def _available(libs: list[str]) -> tuple[list[str], dict[str, str]]:
    ok, missing = [], {}
    import importlib

    for lib in libs:
        try:
            importlib.import_module(ADAPTERS[lib].package if lib != "leveret" else "leveret.client")
            ok.append(lib)
        except ImportError as exc:
            missing[lib] = f"not installed ({exc}); pip install -e '.[bench]'"
    return ok, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="broker URL; default: start a private node (scripts/rabbitmq.py)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count (0.1 for a quick run)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per library and scenario, best counts; default 3 (1 below scale 0.2)")
    parser.add_argument("--libs", default=",".join(ADAPTERS), help="comma-separated subset of " + ",".join(ADAPTERS))
    parser.add_argument("--scenarios", default=",".join(_BY_NAME), help="comma-separated subset of " + ",".join(_BY_NAME))
    parser.add_argument("--no-c", action="store_true", help="skip the C (librabbitmq) round-trip reference")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-socket floor of the publish and confirm scenarios")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="print JSON instead of the tables; with FILE, write it there and print the tables too")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    # internal: the subprocess that runs one library's 1 MiB publishes
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return worker(args.worker, args.url, args.queue, args.count, args.size)

    wanted = [x.strip() for x in args.libs.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in ADAPTERS]
    if unknown:
        parser.error(f"unknown libraries: {', '.join(unknown)}")
    libs, missing = _available(wanted)
    names = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in names if x not in _BY_NAME]
    if bad:
        parser.error(f"unknown scenarios: {', '.join(bad)}")
    scenarios = [_BY_NAME[x] for x in names]
    repeat = args.repeat or (1 if args.scale < 0.2 else 3)

    c_exe, c_note = (None, "skipped (--no-c)") if args.no_c else build_c_client()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    for lib, why in missing.items():
        log(f"{lib}: {why}")
    if c_exe is None:
        log(f"C reference: {c_note}")

    node = None
    url = args.url or os.environ.get("AMQP_URL")
    if not url:
        sys.path.insert(0, str(ROOT / "scripts"))
        from rabbitmq import PrivateNode

        log("starting a private RabbitMQ node ...")
        node = PrivateNode().start()
        url = node.url
    started = time.monotonic()
    try:
        broker = parse_broker(url)
        results = run_all(broker, libs, scenarios, args.scale, repeat, c_exe, log, floor=not args.no_floor)
        server = _server_version(broker)
    finally:
        if node is not None:
            node.stop()
    summary = summarize(results, libs)
    if args.json:
        doc = json.dumps({
            "benchmark": "client",
            "python": platform.python_version(),
            "rabbitmq": server,
            "scale": args.scale,
            "repeat": repeat,
            "seconds": round(time.monotonic() - started, 1),
            "versions": _versions(libs),
            "missing": missing,
            "c_reference": c_exe is not None or c_note,
            "floor": None if args.no_floor else " ".join((FloorAdapter.__doc__ or "").split()),
            "scenarios": {s.name: s.what for s in scenarios},
            "results": results,
            "summary": summary,
        }, indent=2)
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n")
    if args.json != "-":
        print(f"client benchmark: Python {platform.python_version()}, RabbitMQ {server}, scale {args.scale:g}, "
              f"best of {repeat}; " + ", ".join(f"{k} {v}" for k, v in _versions(libs).items()))
        print()
        print(format_tables(results, summary, libs, c_note))
    return 0


def _server_version(broker: Broker) -> str:
    try:
        from leveret.client import Connection

        with Connection(broker.url) as conn:
            version = conn.server_properties.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # informational only
        return "?"
