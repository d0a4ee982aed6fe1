"""asyncio benchmark: leveret's asyncio driver against aiormq and aio-pika, in one run.

``python -m benchmarks asyncio [--scale S] [--repeat N] [--url URL]``.  The same harness,
scenarios and rules as ``python -m benchmarks client`` (fresh connection and queue per
run, libraries take turns, best repeat counts, the broker's own counts checked), with the
asyncio clients only: ``leveret-asyncio`` (:class:`leveret.client.AsyncConnection`),
``aiormq`` and ``aio-pika`` (its robust connection, as its documentation shows).  Each
library runs on its own event loop; the clocks run inside coroutines.

Target (issue 5): publish and consume at least 3x aiormq.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Coroutine, TypeVar

from . import client
from .client import DRAIN_TIMEOUT, Adapter, AiormqAdapter, Stuck

__all__ = ["main", "ASYNC_ADAPTERS"]

_T = TypeVar("_T")
SCENARIOS = ["publish_16B", "publish_4KiB", "confirm_batch", "consume_ack", "consume_noack", "round_trip"]
TARGET = 3.0  # leveret-asyncio / aiormq, publish and consume


class _LoopAdapter(Adapter):
    """One event loop per connection, as the aiormq adapter."""

    loop: asyncio.AbstractEventLoop
    conn: Any  # the library's connection and channel, set by _connect
    ch: Any

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, DRAIN_TIMEOUT * 10))

    def connect(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._run(self._connect())

    async def _connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self._run(self.conn.close())
        finally:
            self.loop.close()


class LeveretAsyncAdapter(_LoopAdapter):
    name = "leveret-asyncio"
    package = "leveret"

    async def _connect(self) -> None:
        from leveret.client import AsyncConnection

        self.conn = await AsyncConnection(self.broker.url).connect()
        self.ch = await self.conn.channel()

    def publish(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            publish = self.ch.basic_publish
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(body, routing_key=queue)
            await self.ch.queue_declare(queue, passive=True)
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        async def run() -> float:
            ch = self.ch
            await ch.confirm_select()
            publish = ch.basic_publish
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                for _ in range(min(batch, n - start)):
                    await publish(body, routing_key=queue)
                await ch.wait_for_confirms()
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            ch = self.ch
            await ch.confirm_select()
            publish = ch.publish_confirmed
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(body, routing_key=queue)
            return time.perf_counter() - t0
        return self._run(run())

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        async def run() -> float:
            ch = self.ch
            done = self.loop.create_future()
            got = [0]
            if no_ack:
                def on_message(msg: Any) -> None:
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            else:
                await ch.basic_qos(prefetch_count=prefetch)

                def on_message(msg: Any) -> None:
                    msg.ack()
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            t0 = time.perf_counter()
            await ch.basic_consume(queue, no_ack=no_ack, callback=on_message)
            try:
                await asyncio.wait_for(done, DRAIN_TIMEOUT * 5)
            except asyncio.TimeoutError:
                raise Stuck(f"received {got[0]} of {n}") from None
            return time.perf_counter() - t0
        return self._run(run())

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        async def run() -> list[int]:
            ch = self.ch
            waiter: list[asyncio.Future[None]] = []

            def on_message(msg: Any) -> None:
                waiter[0].set_result(None)

            await ch.basic_consume(queue, no_ack=True, callback=on_message)
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


class AioPikaAdapter(_LoopAdapter):
    name = "aio-pika"
    package = "aio_pika"

    async def _connect(self) -> None:
        import logging

        import aio_pika

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        self.aio_pika = aio_pika
        self.conn = await aio_pika.connect_robust(self.broker.url)

    def publish(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=False)
            publish, Message = ch.default_exchange.publish, self.aio_pika.Message
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(Message(body), routing_key=queue)
            await ch.declare_queue(queue, passive=True)
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_batch(self, queue: str, body: bytes, n: int, batch: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=True)
            publish, Message = ch.default_exchange.publish, self.aio_pika.Message
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                await asyncio.gather(*[publish(Message(body), routing_key=queue) for _ in range(min(batch, n - start))])
            return time.perf_counter() - t0
        return self._run(run())

    def confirm_each(self, queue: str, body: bytes, n: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=True)
            publish, Message = ch.default_exchange.publish, self.aio_pika.Message
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(Message(body), routing_key=queue)
            return time.perf_counter() - t0
        return self._run(run())

    def consume(self, queue: str, n: int, no_ack: bool, prefetch: int) -> float:
        async def run() -> float:
            ch = await self.conn.channel(publisher_confirms=False)
            if not no_ack:
                await ch.set_qos(prefetch_count=prefetch)
            q = await ch.declare_queue(queue, passive=True)
            done = self.loop.create_future()
            got = [0]
            if no_ack:
                async def on_message(msg: Any) -> None:
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            else:
                async def on_message(msg: Any) -> None:
                    await msg.ack()
                    got[0] += 1
                    if got[0] == n:
                        done.set_result(None)
            t0 = time.perf_counter()
            await q.consume(on_message, no_ack=no_ack)
            await done
            return time.perf_counter() - t0
        return self._run(run())

    def round_trip(self, queue: str, body: bytes, n: int, warmup: int) -> list[int]:
        async def run() -> list[int]:
            ch = await self.conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(queue, passive=True)
            waiter: list[asyncio.Future[None]] = []

            async def on_message(msg: Any) -> None:
                waiter[0].set_result(None)

            await q.consume(on_message, no_ack=True)
            publish, Message = ch.default_exchange.publish, self.aio_pika.Message
            clock, loop = time.perf_counter_ns, self.loop
            out = []
            for _ in range(n + warmup):
                fut = loop.create_future()
                waiter[:] = [fut]
                t0 = clock()
                await publish(Message(body), routing_key=queue)
                await fut
                out.append(clock() - t0)
            return out[warmup:]
        return self._run(run())


ASYNC_ADAPTERS: dict[str, type[Adapter]] = {
    "leveret-asyncio": LeveretAsyncAdapter,
    "aiormq": AiormqAdapter,
    "aio-pika": AioPikaAdapter,
}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per scenario: leveret-asyncio against aiormq and aio-pika."""
    out: dict[str, Any] = {}
    for name, row in results.items():
        lev = row.get("leveret-asyncio")
        entry: dict[str, Any] = {}
        for peer in ("aiormq", "aio-pika"):
            r = row.get(peer)
            if lev is None or r is None or "error" in lev or "error" in r:
                entry[peer] = None
            elif "median_us" in lev:
                entry[peer] = round(r["median_us"] / lev["median_us"], 2)
            else:
                entry[peer] = round(lev["rate"] / r["rate"], 2)
        gated = name.startswith(("publish", "consume"))
        ratio = entry["aiormq"]
        entry["verdict"] = "-" if not gated else ("PASS" if ratio is not None and ratio >= TARGET else "MISS")
        out[name] = entry
    return out


def format_table(results: dict[str, Any], summary: dict[str, Any], libs: list[str]) -> str:
    lines = ["| scenario | " + " | ".join(libs) + " | vs aiormq | vs aio-pika | target | verdict |",
             "| --- | " + " | ".join("---:" for _ in libs) + " | ---: | ---: | --- | --- |"]
    for name, row in results.items():
        cells = []
        for lib in libs:
            r = row.get(lib)
            if r is None:
                cells.append("n/a")
            elif "error" in r:
                cells.append("error")
            elif "median_us" in r:
                cells.append(f"{r['median_us']:.0f} / {r['p99_us']:.0f} us")
            else:
                cells.append(f"{r['rate']:,.0f}")
        s = summary[name]
        ratios = [("-" if s[p] is None else f"{s[p]:.2f}x") for p in ("aiormq", "aio-pika")]
        target = f">= {TARGET:g}x aiormq" if s["verdict"] != "-" else "-"
        lines.append(f"| {name} ({row['count']:,}) | " + " | ".join(cells) + " | " + " | ".join(ratios)
                     + f" | {target} | {s['verdict']} |")
    lines.append("")
    lines.append("Rates in messages/s; round trip as median / p99.  Ratios: leveret-asyncio's rate / "
                 "the peer's (for the round trip: the peer's median / leveret's).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks asyncio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="broker URL; default: start a private node")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per library and scenario, best counts")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    names = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in names if x not in SCENARIOS]
    if bad:
        parser.error(f"unknown scenarios: {', '.join(bad)}")

    libs, versions = [], {}
    for lib, adapter in ASYNC_ADAPTERS.items():
        try:
            versions[lib] = metadata.version(adapter.package)
            __import__(adapter.package)
            libs.append(lib)
        except (ImportError, metadata.PackageNotFoundError) as exc:
            print(f"{lib}: not installed ({exc}); pip install -e '.[bench]'", file=sys.stderr)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    node = None
    url = args.url or os.environ.get("AMQP_URL")
    if not url:
        sys.path.insert(0, str(client.ROOT / "scripts"))
        from rabbitmq import PrivateNode

        log("starting a private RabbitMQ node ...")
        node = PrivateNode().start()
        url = node.url
    client.ADAPTERS_EXTRA.update(ASYNC_ADAPTERS)
    try:
        broker = client.parse_broker(url)
        scenarios = [client._BY_NAME[x] for x in names]
        results = client.run_all(broker, libs, scenarios, args.scale, args.repeat, None, log)
    finally:
        if node is not None:
            node.stop()
    summary = summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "asyncio", "python": platform.python_version(), "scale": args.scale,
            "repeat": args.repeat, "versions": versions, "results": results, "summary": summary,
        }, indent=2) + "\n")
    print(f"asyncio benchmark: Python {platform.python_version()}, scale {args.scale:g}, best of {args.repeat}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print(format_table(results, summary, libs))
    return 0
