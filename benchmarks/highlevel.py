"""High-level benchmark: leveret.highlevel against kombu (on py-amqp), in one run.

Both libraries are used through their kombu-style API -- ``Connection``, ``Producer``
with the JSON serializer, ``Consumer`` with callbacks, ``Connection.drain_events`` -- each
on a fresh connection and a fresh non-durable queue per run, taking turns within each
repeat (who goes first rotates); the best repeat counts.  Rates are messages per second;
the ratio is leveret's rate over kombu's, measured in the same run.

Scenarios (counts at ``--scale 1``):

``hl_publish_confirmed``  10,000 JSON payloads of ~16 bytes, each publish waiting for the
                          broker's confirm: leveret ``Producer.publish()`` (``wait=True``,
                          the default) vs kombu ``Producer.publish()`` on a connection with
                          ``transport_options={"confirm_publish": True}``.
``hl_publish_pipelined``  100,000 JSON payloads, confirmed in pipelined batches of 1,000
                          (leveret ``with producer.batch():``); kombu has no pipelined
                          confirms, so it publishes without confirms (its default) and the
                          clock stops after a synchronous ``queue.declare`` on the same
                          channel, once the broker has taken them all.  leveret still gets
                          every publish confirmed.
``hl_consume``            100,000 JSON messages (queued beforehand) consumed by a
                          ``Consumer(prefetch_count=1000, accept=["json"])`` whose callback
                          reads the decoded body and calls ``message.ack()``, driven by
                          ``conn.drain_events(timeout=...)``.

Everything is checked: after a publish scenario the queue must hold exactly the messages
published, and its first message must be the first JSON payload; a consumer must
receive every message with the right payloads (their sum is compared), and the queue must
be empty once its connection closed (all acked).

``--profile`` runs leveret's side of each scenario once more under cProfile and prints
the top functions by own time, with each one's share, plus how the process's CPU time
split between the main thread (what cProfile sees) and the client's I/O thread.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .client import DRAIN_TIMEOUT, ROOT, Admin, Broker, Stuck, _cpu_seconds, _server_version, parse_broker

__all__ = ["main", "SCENARIOS", "ADAPTERS"]

BATCH = 1000  # pipelined publishes per flush
PREFETCH = 1000
BASE = 1_000_000_000  # payload {"n": BASE + i}: 16 bytes as compact JSON (leveret), 17 with ", " (kombu)
TARGET = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # publish_confirmed, publish_pipelined, consume
    count: int  # at scale 1
    what: str
    kombu_note: str = ""


SCENARIOS: list[Scenario] = [
    Scenario("hl_publish_confirmed", "publish_confirmed", 10_000,
             "publish JSON, wait for each confirm"),
    Scenario("hl_publish_pipelined", "publish_pipelined", 100_000,
             f"publish JSON, confirms pipelined per {BATCH}",
             "kombu: no confirms (it has no pipelined confirms)"),
    Scenario("hl_consume", "consume", 100_000,
             f"Consumer, prefetch {PREFETCH}, decode + ack each"),
]
_BY_NAME = {s.name: s for s in SCENARIOS}


def payload(i: int) -> dict[str, int]:
    return {"n": BASE + i}


def expected_sum(n: int) -> int:
    return n * BASE + n * (n - 1) // 2


# --------------------------------------------------------------------------- adapters
#
# One class per library, written the way its documentation shows (kombu's user guide:
# ``Connection``, ``conn.Producer(serializer="json")``, ``producer.publish(body,
# routing_key=...)``, ``conn.Consumer(queues, callbacks=[...], accept=[...])``,
# ``conn.drain_events(timeout=...)``), with default settings otherwise.  Channels and
# confirm mode are set up before the clock starts.


class HLAdapter:
    name = ""
    package = ""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _connection(self, confirm: bool) -> Any:
        raise NotImplementedError

    def _queue(self, name: str) -> Any:
        raise NotImplementedError

    def connect(self, confirm: bool = False) -> None:
        self.conn = self._connection(confirm)
        self.conn.connect()

    def close(self) -> None:
        self.conn.release()

    def publish_confirmed(self, queue: str, n: int) -> float:
        raise NotImplementedError

    def publish_pipelined(self, queue: str, n: int, batch: int) -> float:
        raise NotImplementedError

    def consume(self, queue: str, n: int, prefetch: int) -> tuple[float, int, int]:
        """Seconds, messages received, sum of their ``n`` fields."""
        got = [0, 0]

        def on_message(body: Any, message: Any) -> None:
            got[1] += body["n"]
            message.ack()
            got[0] += 1

        consumer = self.conn.Consumer(
            [self._queue(queue)], callbacks=[on_message], accept=["json"], prefetch_count=prefetch,
        )  # declares the (existing, identical) queue and sets basic.qos
        drain = self.conn.drain_events
        t0 = time.perf_counter()
        consumer.consume()
        try:
            while got[0] < n:
                drain(timeout=DRAIN_TIMEOUT)
        except TimeoutError:
            raise Stuck(f"received {got[0]} of {n}") from None
        seconds = time.perf_counter() - t0
        consumer.cancel()
        return seconds, got[0], got[1]


class LeveretHL(HLAdapter):
    name = package = "leveret"

    def _connection(self, confirm: bool) -> Any:
        from leveret.highlevel import Connection

        b = self.broker
        # Producers are in confirm mode by default: nothing to ask of the connection.
        return Connection(hostname=b.host, port=b.port, userid=b.user, password=b.password,
                          virtual_host=b.vhost, transport="pyamqp")

    def _queue(self, name: str) -> Any:
        from leveret.highlevel import Queue

        return Queue(name, durable=False)

    def publish_confirmed(self, queue: str, n: int) -> float:
        producer = self.conn.Producer(serializer="json")
        producer.channel  # open the channel (confirm.select) before the clock
        publish = producer.publish
        t0 = time.perf_counter()
        for i in range(n):
            publish({"n": BASE + i}, routing_key=queue)  # wait=True: returns once confirmed
        return time.perf_counter() - t0

    def publish_pipelined(self, queue: str, n: int, batch: int) -> float:
        producer = self.conn.Producer(serializer="json")
        producer.channel
        publish = producer.publish
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            with producer.batch():  # pipelined; flush() at the end waits for the confirms
                for i in range(start, min(start + batch, n)):
                    publish({"n": BASE + i}, routing_key=queue)
        seconds = time.perf_counter() - t0
        assert producer.pending == 0
        return seconds


class KombuHL(HLAdapter):
    name = package = "kombu"

    def _connection(self, confirm: bool) -> Any:
        import kombu

        b = self.broker
        return kombu.Connection(
            hostname=b.host, port=b.port, userid=b.user, password=b.password,
            virtual_host=b.vhost, transport="pyamqp",
            transport_options={"confirm_publish": True} if confirm else {},
        )

    def _queue(self, name: str) -> Any:
        import kombu

        return kombu.Queue(name, durable=False)

    def publish_confirmed(self, queue: str, n: int) -> float:
        # connect(confirm=True): transport_options={"confirm_publish": True}, so py-amqp's
        # channel is in confirm mode and every publish waits for its confirm.
        producer = self.conn.Producer(serializer="json")
        producer.channel  # open the channel (confirm.select) before the clock
        publish = producer.publish
        t0 = time.perf_counter()
        for i in range(n):
            publish({"n": BASE + i}, routing_key=queue)
        return time.perf_counter() - t0

    def publish_pipelined(self, queue: str, n: int, batch: int) -> float:
        # kombu has no pipelined confirms (confirm_publish waits for each one): its best
        # equivalent is publishing without confirms, its default, then one synchronous
        # call on the same channel so the clock stops when the broker has taken them all.
        producer = self.conn.Producer(serializer="json")
        channel = producer.channel
        publish = producer.publish
        t0 = time.perf_counter()
        for i in range(n):
            publish({"n": BASE + i}, routing_key=queue)
        channel.queue_declare(queue, passive=True)
        return time.perf_counter() - t0


class BareSocketFloor(HLAdapter):
    """Not a library: the floor for the publish scenarios, i.e. what any client could reach
    on this machine and broker.  A plain blocking socket (TCP_NODELAY) writes pre-encoded
    frames -- the same publish and properties as leveret's, body ``{"n":BASE}`` every
    time -- and reads the broker's acks (decoded, checked: in order, no nack); no
    serialization, no objects, no threads.  Not counted in any verdict: it shows how close
    to the broker's own limit a ratio target lies (floor / kombu is about the highest ratio
    any client can get; see ``benchmarks/floor.py``)."""

    name = "floor"
    package = "leveret"  # it uses leveret.wire's codec for the handshake and the frames

    def connect(self, confirm: bool = False) -> None:
        from .floor import BareSocket

        b = self.broker
        self.bare = BareSocket(b.host, b.port, b.user, b.password, b.vhost, DRAIN_TIMEOUT)
        self.bare.confirm_select()

    def close(self) -> None:
        self.bare.close()

    def _publish_frames(self, queue: str) -> bytes:
        spec = self.bare.spec
        body = json.dumps(payload(0), separators=(",", ":")).encode()
        return self.bare.publish_frames(queue, body, spec.Basic.Properties(
            content_type="application/json", content_encoding="utf-8", delivery_mode=2))

    def publish_confirmed(self, queue: str, n: int) -> float:
        frames, sendall, wait = self._publish_frames(queue), self.bare.sock.sendall, self.bare.wait_acked
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            sendall(frames)
            wait(i)
        return time.perf_counter() - t0

    def publish_pipelined(self, queue: str, n: int, batch: int) -> float:
        frames, sendall, wait = self._publish_frames(queue), self.bare.sock.sendall, self.bare.wait_acked
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            k = min(batch, n - start)
            sendall(frames * k)
            wait(start + k)
        return time.perf_counter() - t0


ADAPTERS: dict[str, type[HLAdapter]] = {"leveret": LeveretHL, "kombu": KombuHL, "floor": BareSocketFloor}


# --------------------------------------------------------------------------- the harness


def prefill(admin: Admin, queue: str, n: int) -> None:
    """``n`` JSON messages ``{"n": BASE + i}`` (leveret.client, confirmed in batches)."""
    from leveret.client import Message

    ch = admin.conn.channel()
    try:
        ch.confirm_select()
        publish = ch.basic_publish
        for start in range(0, n, 5000):
            for i in range(start, min(start + 5000, n)):
                body = json.dumps({"n": BASE + i}, separators=(",", ":")).encode()
                publish(Message(body, content_type="application/json", content_encoding="utf-8"),
                        routing_key=queue)
            ch.wait_for_confirms()
    finally:
        ch.close()
    got = admin.wait_count(queue, n)
    if got != n:
        raise RuntimeError(f"prefill: queue holds {got} of {n}")


def check_published(admin: Admin, queue: str, n: int) -> None:
    got = admin.wait_count(queue, n)
    if got != n:
        raise RuntimeError(f"the queue holds {got} messages, not {n}")
    first = admin.ch.basic_get(queue, no_ack=True)
    if first is None:
        raise RuntimeError("basic.get found the queue empty")
    content_type = first.properties.get("content_type")
    if content_type != "application/json" or json.loads(bytes(first.body)) != payload(0):
        raise RuntimeError(f"first message is {content_type!r} {first.body[:80]!r}, not the JSON {payload(0)}")


def one_run(lib: str, sc: Scenario, n: int, broker: Broker, admin: Admin,
            profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """One library, one scenario, one repeat, on a fresh queue: the checked result."""
    queue = admin.declare(f"{sc.name}.{lib}")  # classic, durable=False
    try:
        if sc.kind == "consume":
            prefill(admin, queue, n)
        adapter = ADAPTERS[lib](broker)
        adapter.connect(confirm=sc.kind == "publish_confirmed")
        threads0 = _thread_cpu()
        cpu0 = _cpu_seconds()
        if profile is not None:
            profile.enable()
        try:
            if sc.kind == "publish_confirmed":
                seconds = adapter.publish_confirmed(queue, n)
            elif sc.kind == "publish_pipelined":
                seconds = adapter.publish_pipelined(queue, n, BATCH)
            else:
                seconds, got, total = adapter.consume(queue, n, PREFETCH)
                if got != n or total != expected_sum(n):
                    raise RuntimeError(f"received {got} of {n} (payload sum {total}, expected {expected_sum(n)})")
        finally:
            if profile is not None:
                profile.disable()
            cpu = _cpu_seconds() - cpu0
            threads = _thread_cpu_delta(threads0)
            adapter.close()
        if sc.kind == "consume":
            left = admin.wait_count(queue, 0)
            if left:
                raise RuntimeError(f"{left} messages left in the queue after consuming (not all acked)")
        else:
            check_published(admin, queue, n)
        return {"seconds": seconds, "rate": n / seconds, "cpu_us_per_msg": cpu / n * 1e6,
                "thread_cpu_s": threads}
    finally:
        admin.delete(queue)


def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) per thread of this process, by native id (Linux)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return out


def _thread_cpu_delta(before: dict[int, float]) -> dict[str, float]:
    """``{"main": s, "other threads": s}`` spent since ``before``."""
    after = _thread_cpu()
    main_id = threading.main_thread().native_id
    main = other = 0.0
    for tid, value in after.items():
        spent = value - before.get(tid, 0.0)
        if tid == main_id:
            main += spent
        else:
            other += spent
    return {"main": round(main, 3), "other threads": round(other, 3)}


def run_all(broker: Broker, libs: list[str], scenarios: list[Scenario], scale: float, repeat: int,
            log: Callable[[str], None], floor: bool = True) -> dict[str, dict[str, Any]]:
    """``{scenario: {"count": n, lib: best result}}``; a failed library gets ``{"error": ...}``."""
    admin = Admin(broker)
    results: dict[str, dict[str, Any]] = {}
    try:
        warm = admin.declare("warmup")  # a fresh node is slow for its first messages
        admin.fill(warm, b"x" * 16, 5000)
        admin.delete(warm)
        for sc in scenarios:
            n = max(1, round(sc.count * scale))
            best: dict[str, dict[str, Any]] = {}
            cpu: dict[str, float] = {}
            runners = list(libs) + (["floor"] if floor and sc.kind != "consume" else [])
            for rep in range(repeat):
                turn = rep % len(runners)
                for lib in runners[turn:] + runners[:turn]:
                    t0 = time.monotonic()
                    try:
                        r = one_run(lib, sc, n, broker, admin)
                    except Exception as exc:  # one library's failure must not end the run
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"{sc.name:21} {lib:8} #{rep + 1}: {_short(r)}  ({time.monotonic() - t0:.1f} s)")
                    if "cpu_us_per_msg" in r:
                        cpu[lib] = min(cpu.get(lib, float("inf")), r["cpu_us_per_msg"])
                    old = best.get(lib)
                    if old is None or "error" in old or ("error" not in r and r["rate"] > old["rate"]):
                        best[lib] = r
            for lib, value in cpu.items():
                if "error" not in best[lib]:
                    best[lib]["cpu_us_per_msg"] = value
            results[sc.name] = {"count": n, **best}
    finally:
        admin.close()
    return results


def _short(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"])[:200]
    return f"{r['rate']:,.0f} msg/s, {r['cpu_us_per_msg']:.1f} us CPU/msg"


# --------------------------------------------------------------------------- report


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, row in results.items():
        lev, kom = row.get("leveret"), row.get("kombu")
        entry: dict[str, Any] = {"target": f">= {TARGET:g}x kombu"}
        if lev is None or "error" in lev:
            entry["verdict"] = "leveret failed"
        elif kom is None or "error" in kom:
            entry["verdict"] = "kombu failed" if kom else "kombu not run"
        else:
            ratio = lev["rate"] / kom["rate"]
            entry["ratio_vs_kombu"] = round(ratio, 2)
            entry["cpu_ratio_kombu_vs_leveret"] = round(kom["cpu_us_per_msg"] / lev["cpu_us_per_msg"], 2)
            entry["verdict"] = "PASS" if ratio >= TARGET else "MISS"
            flo = row.get("floor")
            if flo is not None and "error" not in flo:
                entry["floor_vs_kombu"] = round(flo["rate"] / kom["rate"], 2)
                entry["leveret_vs_floor"] = round(lev["rate"] / flo["rate"], 2)
        if _BY_NAME[name].kombu_note:
            entry["note"] = _BY_NAME[name].kombu_note
        out[name] = entry
    return out


def format_table(results: dict[str, Any], summary: dict[str, Any], libs: list[str]) -> str:
    def cell(r: dict[str, Any] | None, key: str, fmt: str) -> str:
        if r is None:
            return "n/a"
        return "error" if "error" in r else format(r[key], fmt)

    show_floor = any("floor" in row for row in results.values())
    lines = ["| scenario | " + " | ".join(f"{lib} (msg/s)" for lib in libs)
             + " | leveret / kombu | target | verdict | " + " | ".join(f"{lib} CPU us/msg" for lib in libs)
             + " | CPU kombu / leveret |" + (" floor: bare socket (msg/s) | floor / kombu |" if show_floor else ""),
             "| --- | " + " | ".join("---:" for _ in libs) + " | ---: | --- | --- | "
             + " | ".join("---:" for _ in libs) + " | ---: |" + (" ---: | ---: |" if show_floor else "")]
    notes = []
    for name, row in results.items():
        s = summary[name]
        ratio = s.get("ratio_vs_kombu")
        cpu_ratio = s.get("cpu_ratio_kombu_vs_leveret")
        label = f"{name} ({row['count']:,})"
        floor_cell = cell(row["floor"], "rate", ",.0f") if "floor" in row else "-"
        floor_ratio = f"{s['floor_vs_kombu']:.2f}x" if "floor_vs_kombu" in s else "-"
        if s.get("note"):
            notes.append(f"{name}: {s['note']}; leveret's publishes are all confirmed.")
            label += " *"
        lines.append(
            f"| {label} | " + " | ".join(cell(row.get(lib), "rate", ",.0f") for lib in libs)
            + f" | {'-' if ratio is None else f'{ratio:.2f}x'} | {s['target']} | {s['verdict']} | "
            + " | ".join(cell(row.get(lib), "cpu_us_per_msg", ".1f") for lib in libs)
            + f" | {'-' if cpu_ratio is None else f'{cpu_ratio:.2f}x'} |"
            + (f" {floor_cell} | {floor_ratio} |" if show_floor else "")
        )
    lines.append("")
    lines.extend(f"\\* {note}" for note in notes)
    lines.append("Rates in messages/s, best repeat (higher is better); 'leveret / kombu' = leveret's "
                 "rate / kombu's, same run.  CPU: the client process's CPU time (user + system, all "
                 "threads) per message, lowest repeat; 'CPU kombu / leveret' = how many times more "
                 "CPU kombu spends per message.")
    if show_floor:
        lines.append("Floor: a bare socket writing pre-encoded publishes and reading the acks (same "
                     "confirms as leveret), no library -- the broker's limit on this machine; "
                     "'floor / kombu' is about the highest ratio any client can reach.  Not a verdict.")
    return "\n".join(lines)


def _versions(libs: list[str]) -> dict[str, str]:
    out = {}
    for lib in libs:
        try:
            out[lib] = metadata.version(ADAPTERS[lib].package)
        except metadata.PackageNotFoundError:
            out[lib] = "?"
    return out


# --------------------------------------------------------------------------- profile


def profile_leveret(broker: Broker, scenarios: list[Scenario], scale: float, top: int,
                    log: Callable[[str], None]) -> str:
    """Each scenario's leveret side once more under cProfile (main thread only): the top
    functions by own time, with their share of all the profiled own time."""
    admin = Admin(broker)
    out = []
    try:
        for sc in scenarios:
            n = max(1, round(sc.count * scale))
            prof = cProfile.Profile()
            r = one_run("leveret", sc, n, broker, admin, profile=prof)
            log(f"{sc.name:21} leveret (profiled): {_short(r)}")
            stats = pstats.Stats(prof)
            entries = stats.stats  # type: ignore[attr-defined]
            total = sum(v[2] for v in entries.values()) or 1e-9
            rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
            th = r.get("thread_cpu_s", {})
            out.append(f"### {sc.name} ({n:,}), leveret under cProfile: {r['rate']:,.0f} msg/s "
                       f"(profiled), own time profiled {total:.2f} s; process CPU: main thread "
                       f"{th.get('main', 0):.2f} s, other threads (I/O) {th.get('other threads', 0):.2f} s")
            out.append("")
            out.append("| share | own s | cum s | calls | function |")
            out.append("| ---: | ---: | ---: | ---: | --- |")
            for (file, line, func), (cc, nc, tt, ct, _callers) in rows:
                where = _short_path(file)
                fn = f"{where}:{line}({func})" if line else func
                calls = f"{nc}" if nc == cc else f"{nc}/{cc}"
                out.append(f"| {tt / total:.1%} | {tt:.3f} | {ct:.3f} | {calls} | `{fn}` |")
            out.append("")
    finally:
        admin.close()
    return "\n".join(out)


def _short_path(file: str) -> str:
    p = Path(file)
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        pass
    parts = p.parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i + 1:])
    return file


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks highlevel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="broker URL; default: start a private node (scripts/rabbitmq.py)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count (0.1 for a quick run)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per library and scenario, best counts; default 3 (1 below scale 0.2)")
    parser.add_argument("--scenarios", default=",".join(_BY_NAME), help="comma-separated subset of " + ",".join(_BY_NAME))
    parser.add_argument("--libs", default="leveret,kombu", help="comma-separated subset of leveret,kombu")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-socket floor of the publish scenarios")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="print JSON instead of the table; with FILE, write it there and print the table too")
    parser.add_argument("--profile", action="store_true", help="then run leveret's side of each scenario once more under cProfile and print its top functions")
    parser.add_argument("--top", type=int, default=20, help="functions listed per profile (default 20)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    names = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in names if x not in _BY_NAME]
    if bad:
        parser.error(f"unknown scenarios: {', '.join(bad)}")
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    unknown = [x for x in libs if x not in ("leveret", "kombu")]
    if unknown or not libs:
        parser.error(f"unknown libraries: {', '.join(unknown)}")
    scenarios = [_BY_NAME[x] for x in names]
    repeat = args.repeat or (1 if args.scale < 0.2 else 3)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    missing = {}
    for lib in libs:
        try:
            __import__("leveret.highlevel" if lib == "leveret" else ADAPTERS[lib].package)
        except ImportError as exc:
            missing[lib] = f"not installed ({exc}); pip install -e '.[bench]'"
    for lib, why in missing.items():
        log(f"{lib}: {why}")
    libs = [lib for lib in libs if lib not in missing]
    if "leveret" not in libs:
        print("leveret.highlevel cannot be imported", file=sys.stderr)
        return 2

    node = None
    url = args.url or os.environ.get("AMQP_URL")
    if not url:
        sys.path.insert(0, str(ROOT / "scripts"))
        from rabbitmq import PrivateNode

        log("starting a private RabbitMQ node ...")
        node = PrivateNode().start()
        url = node.url
    started = time.monotonic()
    profile_text = ""
    try:
        broker = parse_broker(url)
        results = run_all(broker, libs, scenarios, args.scale, repeat, log, floor=not args.no_floor)
        server = _server_version(broker)
        if args.profile:
            profile_text = profile_leveret(broker, scenarios, args.scale, args.top, log)
    finally:
        if node is not None:
            node.stop()
    summary = summarize(results)
    if args.json:
        doc = json.dumps({
            "benchmark": "highlevel",
            "python": platform.python_version(),
            "rabbitmq": server,
            "scale": args.scale,
            "repeat": repeat,
            "seconds": round(time.monotonic() - started, 1),
            "versions": _versions(libs),
            "floor": None if args.no_floor else " ".join((BareSocketFloor.__doc__ or "").split()),
            "missing": missing,
            "scenarios": {s.name: s.what for s in scenarios},
            "results": results,
            "summary": summary,
        }, indent=2)
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n")
    if args.json != "-":
        print(f"high-level benchmark: Python {platform.python_version()}, RabbitMQ {server}, scale {args.scale:g}, "
              f"best of {repeat}; " + ", ".join(f"{k} {v}" for k, v in _versions(libs).items())
              + (f", amqp {metadata.version('amqp')}" if "kombu" in libs else ""))
        print()
        print(format_table(results, summary, libs))
    if profile_text:
        print()
        print(profile_text, file=sys.stdout if args.json != "-" else sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
