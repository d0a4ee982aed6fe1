"""``leveret bench``: a quick throughput and latency measurement against one broker.

Phases (``--phases``, all by default), on one connection and an exclusive, server-named
queue that disappears with it:

* ``publish``: ``--count`` messages of ``--size`` bytes, then one round trip, so the time
  covers the broker having taken them all;
* ``confirm``: the same in confirm mode, until every publish is confirmed;
* ``consume``: a consumer with ``--prefetch`` drains the queue, acking each message;
* ``latency``: ``--latency-count`` sequential round trips (publish, then wait for the
  delivery of that very message); percentiles of the round-trip time.

This is a smoke-level benchmark for one machine and one broker; the comparative
benchmarks of the project live in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..client import Channel, Connection, Message
from ..wire.errors import LeveretError
from .commands import EXIT_OK, EXIT_USAGE, CLIError, open_connection, operation_error, resolve_url
from .progress import Progress

__all__ = ["PHASES", "PhaseResult", "percentile", "cmd_bench"]

PHASES = ("publish", "confirm", "consume", "latency")


@dataclass(frozen=True)
class PhaseResult:
    """Throughput of one phase."""

    name: str
    messages: int
    seconds: float
    bytes: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def percentile(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of already sorted values, nearest-rank method."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _parse_phases(text: str) -> list[str]:
    phases = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise CLIError(f"--phases takes a comma-separated list of {', '.join(PHASES)}", EXIT_USAGE)
    return phases


def _publish_phase(conn: Connection, ch: Channel, queue: str, body: bytes, count: int,
                   confirm: bool, progress: str) -> PhaseResult:
    label = "publish+confirm" if confirm else "publish"
    msg = Message(body)
    started = time.perf_counter()
    with Progress(count, label, mode=progress) as bar:
        step = max(1, count // 200)
        for i in range(count):
            ch.basic_publish(msg, "", queue)
            if i % step == 0:
                bar.set(i + 1)
        bar.set(count)
    if confirm:
        ch.wait_for_confirms(timeout=max(60.0, count / 1000))
    else:
        ch.basic_qos(prefetch_count=0)  # a round trip: every publish before it was handled
    return PhaseResult(label, count, time.perf_counter() - started, count * len(body))


def _consume_phase(conn: Connection, ch: Channel, queue: str, expected: int, size: int,
                   prefetch: int, progress: str) -> PhaseResult:
    ch.basic_qos(prefetch_count=prefetch)
    received = 0

    def on_message(msg: Message) -> None:
        nonlocal received
        received += 1
        msg.ack()

    started = time.perf_counter()
    tag = ch.basic_consume(queue, callback=on_message)
    with Progress(expected, "consume", mode=progress) as bar:
        while received < expected:
            try:
                conn.drain_events(timeout=30.0)
            except TimeoutError:
                raise CLIError(f"consume: only {received} of {expected} messages arrived "
                               f"within 30 s") from None
            bar.set(received)
    seconds = time.perf_counter() - started
    ch.basic_cancel(tag)
    return PhaseResult("consume", received, seconds, received * size)


def _latency_phase(conn: Connection, ch: Channel, queue: str, body: bytes, count: int,
                   progress: str) -> list[float]:
    arrived: list[float] = []
    tag = ch.basic_consume(queue, no_ack=True, callback=lambda m: arrived.append(time.perf_counter()))
    times: list[float] = []
    msg = Message(body)
    with Progress(count, "latency", mode=progress) as bar:
        for _ in range(count):
            arrived.clear()
            sent = time.perf_counter()
            ch.basic_publish(msg, "", queue)
            while not arrived:
                try:
                    conn.drain_events(timeout=10.0)
                except TimeoutError:
                    raise CLIError("latency: a message did not come back within 10 s") from None
            times.append(arrived[0] - sent)
            bar.update()
    ch.basic_cancel(tag)
    return times


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the phases and print a summary table (or ``--json``)."""
    if args.count < 1 or args.size < 0 or args.latency_count < 1 or args.prefetch < 1:
        raise CLIError("--count, --latency-count and --prefetch must be 1 or more, --size 0 "
                       "or more", EXIT_USAGE)
    phases = _parse_phases(args.phases)
    url, params = resolve_url(args.url)
    conn = open_connection(url, params)
    body = bytes(args.size)
    results: list[PhaseResult] = []
    latencies: list[float] = []
    broker = ""
    try:
        try:
            props = conn.server_properties
            broker = f"{props.get('product', '?')} {props.get('version', '')}".strip()
            ch = conn.channel()
            queue = ch.queue_declare("", exclusive=True).queue
            published = 0
            if "publish" in phases:
                results.append(_publish_phase(conn, ch, queue, body, args.count, False, args.progress))
                published += args.count
            if "confirm" in phases:
                cch = conn.channel()
                cch.confirm_select()
                results.append(_publish_phase(conn, cch, queue, body, args.count, True, args.progress))
                published += args.count
                cch.close()
            if "consume" in phases:
                if not published:  # something to consume
                    _publish_phase(conn, ch, queue, body, args.count, False, "never")
                    published = args.count
                results.append(_consume_phase(conn, conn.channel(), queue, published, args.size,
                                              args.prefetch, args.progress))
            elif published:
                ch.queue_purge(queue)
            if "latency" in phases:
                lch = conn.channel()
                lqueue = lch.queue_declare("", exclusive=True).queue
                latencies = _latency_phase(conn, lch, lqueue, body, args.latency_count, args.progress)
        except CLIError:
            raise
        except (LeveretError, OSError) as exc:
            raise operation_error("bench", exc) from None
    finally:
        conn.close()
    report = _report(args, params.url(), broker, results, latencies)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_table(report) + "\n")
    return EXIT_OK


def _report(args: argparse.Namespace, url: str, broker: str, results: list[PhaseResult],
            latencies: list[float]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "broker": broker,
        "url": url,
        "config": {"count": args.count, "size": args.size, "prefetch": args.prefetch,
                   "latency_count": args.latency_count},
        "phases": [
            {**asdict(r), "seconds": round(r.seconds, 6), "msgs_per_s": round(r.rate, 1),
             "mb_per_s": round(r.mb_per_s, 3)}
            for r in results
        ],
    }
    if latencies:
        ordered = sorted(latencies)
        ms = [t * 1000 for t in ordered]
        report["latency_ms"] = {
            "count": len(ms),
            "min": round(ms[0], 4),
            "p50": round(percentile(ms, 50), 4),
            "p90": round(percentile(ms, 90), 4),
            "p99": round(percentile(ms, 99), 4),
            "max": round(ms[-1], 4),
            "mean": round(sum(ms) / len(ms), 4),
        }
    return report


def _table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"leveret bench: {cfg['count']} messages of {cfg['size']} bytes, "
             f"{report['broker']} at {report['url']}", ""]
    lines.append(f"{'PHASE':<16} {'MESSAGES':>9} {'SECONDS':>9} {'MSG/S':>11} {'MB/S':>8}")
    for p in report["phases"]:
        lines.append(f"{p['name']:<16} {p['messages']:>9} {p['seconds']:>9.3f} "
                     f"{p['msgs_per_s']:>11,.0f} {p['mb_per_s']:>8.2f}")
    lat = report.get("latency_ms")
    if lat:
        lines.append("")
        lines.append(f"round-trip latency over {lat['count']} messages (ms): "
                     f"min {lat['min']:.3f}  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
                     f"p99 {lat['p99']:.3f}  max {lat['max']:.3f}")
    return "\n".join(lines)
