"""Codec benchmark: one message through each library's frame encoder and decoder.

No socket and no broker: this measures only the Python work of turning a publish into the
bytes to write, and the bytes of a delivery into method, properties and body.

* **encode**: ``basic.publish`` (exchange ``"bench"``, routing key ``"rk"``) + a content header
  (``content_type="application/json"``, ``delivery_mode=2``, ``headers={"x": 1}``) + a 16-byte
  body, from the user's values to the bytes ready for ``socket.send``.  Building the method
  and properties objects is part of it, as it is on every publish.
* **decode**: the matching ``basic.deliver`` + header + body frames, in one buffer as they
  come off the socket, back into a method, properties and a body.

Each library runs its own real path (see :func:`codecs`).  Every repeat times every library
once, round robin, so that a noisy moment hurts all of them alike; the best repeat counts
(as with ``timeit``: the minimum is the run least disturbed).  Before timing, every encoder's
output is decoded and every decoder's result compared, so a library that skipped work would
be caught.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import platform
import pstats
import sys
import timeit
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

__all__ = ["Codec", "codecs", "deliver_bytes", "measure", "main"]

EXCHANGE = "bench"
ROUTING_KEY = "rk"
CONTENT_TYPE = "application/json"
DELIVERY_MODE = 2
BODY = b"0123456789abcdef"
CONSUMER_TAG = "amq.ctag-Zu8fJk3x1Y9bQw2cV7nLhA"  # the shape of RabbitMQ's own tags
DELIVERY_TAG = 1234567
FRAME_MAX = 131072
CHANNEL = 1

#: What a decoder must find in the delivery, and an encoder must have put in the publish.
EXPECTED_DELIVERY = (
    CONSUMER_TAG, DELIVERY_TAG, False, EXCHANGE, ROUTING_KEY,
    CONTENT_TYPE, DELIVERY_MODE, {"x": 1}, BODY,
)
EXPECTED_PUBLISH = (EXCHANGE, ROUTING_KEY, CONTENT_TYPE, DELIVERY_MODE, {"x": 1}, BODY)

PEERS = ("pamqp", "pika", "amqp")


@dataclass
class Codec:
    """One library's encoder and decoder.

    ``encode()`` returns the publish's bytes (or the list of buffers the library writes);
    ``decode(buf)`` returns the library's own objects; ``delivered(result)`` turns those
    into :data:`EXPECTED_DELIVERY`'s shape, only for the correctness check (not timed).
    """

    name: str
    package: str
    encode: Callable[[], Any]
    decode: Callable[[bytes], Any]
    delivered: Callable[[Any], tuple[Any, ...]]
    how: str


def deliver_bytes() -> bytes:
    """The delivery every decoder reads: basic.deliver + header + body, 0-9-1, channel 1.

    Built with leveret's encoder; :func:`check` decodes it with every peer as well, so a
    leveret encoding bug would show there.
    """
    from leveret.wire import amqp0_9_1 as spec
    from leveret.wire.frames import content_frames

    data = content_frames(
        CHANNEL,
        spec.Basic.Deliver(
            consumer_tag=CONSUMER_TAG, delivery_tag=DELIVERY_TAG, redelivered=False,
            exchange=EXCHANGE, routing_key=ROUTING_KEY,
        ),
        spec.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers={"x": 1}),
        BODY,
        FRAME_MAX,
    )
    assert isinstance(data, bytes)
    return data


# --------------------------------------------------------------------------- the libraries


def _leveret() -> Codec:
    from leveret.wire import amqp0_9_1 as spec
    from leveret.wire.frames import FrameReader

    Publish = spec.Basic.Publish
    Properties = spec.Basic.Properties

    def encode() -> Any:
        # What Channel.basic_publish has the connection do (frames.content_frames(CHANNEL,
        # method, ...) is the same call, one function call later).
        return Publish(exchange=EXCHANGE, routing_key=ROUTING_KEY).content_frames(
            CHANNEL,
            Properties(content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers={"x": 1}),
            BODY,
            FRAME_MAX,
        )

    # One reader for the whole run, as a connection has.
    # The client reads with combine_content=True: a whole delivery comes out as one frame.
    reader = FrameReader(spec, FRAME_MAX, combine_content=True)
    read_frames = reader.read_frames

    def decode(buf: bytes) -> Any:
        # What the connection does with each chunk it reads: feed it and take the frames.
        return read_frames(buf)

    def delivered(frames: Any) -> tuple[Any, ...]:
        (c,) = frames
        m, p = c.method, c.properties
        return (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key,
                p.content_type, p.delivery_mode, p.headers, c.body)

    return Codec(
        "leveret", "leveret", encode, decode, delivered,
        "Basic.Publish(...).content_frames(...); FrameReader(combine_content=True).read_frames(data)",
    )


def _pamqp() -> Codec:
    from pamqp import body as pbody
    from pamqp import commands, header
    from pamqp.frame import marshal, unmarshal

    Publish = commands.Basic.Publish
    Properties = commands.Basic.Properties
    ContentHeader = header.ContentHeader
    ContentBody = pbody.ContentBody

    def encode() -> Any:
        props = Properties(content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers={"x": 1})
        return b"".join((
            marshal(Publish(exchange=EXCHANGE, routing_key=ROUTING_KEY), CHANNEL),
            marshal(ContentHeader(0, len(BODY), props), CHANNEL),
            marshal(ContentBody(BODY), CHANNEL),
        ))

    def decode(buf: bytes) -> Any:
        # As aiormq does: one frame at a time, the rest of the buffer sliced off.
        n, _, method = unmarshal(buf)
        buf = buf[n:]
        n, _, head = unmarshal(buf)
        buf = buf[n:]
        n, _, body = unmarshal(buf)
        return method, head, body

    def delivered(r: Any) -> tuple[Any, ...]:
        m, h, b = r
        p = h.properties
        return (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key,
                p.content_type, p.delivery_mode, p.headers, b.value)

    return Codec(
        "pamqp", "pamqp", encode, decode, delivered,
        "pamqp.frame.marshal x3 + join; pamqp.frame.unmarshal x3",
    )


def _pika() -> Codec:
    import pika.frame
    import pika.spec

    Method = pika.frame.Method
    Header = pika.frame.Header
    Body = pika.frame.Body
    Publish = pika.spec.Basic.Publish
    Properties = pika.spec.BasicProperties
    decode_frame = pika.frame.decode_frame

    def encode() -> Any:
        props = Properties(content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers={"x": 1})
        # pika's connection writes the marshalled frames as one buffer per publish.
        return b"".join((
            Method(CHANNEL, Publish(exchange=EXCHANGE, routing_key=ROUTING_KEY)).marshal(),
            Header(CHANNEL, len(BODY), props).marshal(),
            Body(CHANNEL, BODY).marshal(),
        ))

    def decode(buf: bytes) -> Any:
        # As pika's connection does: decode_frame, then drop the consumed bytes.
        n, method = decode_frame(buf)
        buf = buf[n:]
        n, head = decode_frame(buf)
        buf = buf[n:]
        n, body = decode_frame(buf)
        return method, head, body

    def delivered(r: Any) -> tuple[Any, ...]:
        m, h, b = r
        m, p = m.method, h.properties
        return (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key,
                p.content_type, p.delivery_mode, p.headers, b.fragment)

    return Codec(
        "pika", "pika", encode, decode, delivered,
        "pika.frame.Method/Header/Body(...).marshal() + join; pika.frame.decode_frame x3",
    )


def _py_amqp() -> Codec:
    from amqp import spec as aspec
    from amqp.basic_message import Message
    from amqp.channel import Channel
    from amqp.method_framing import frame_handler, frame_writer
    from amqp.serialization import dumps, loads
    from amqp.transport import TCPTransport

    # --- encode: what Channel.basic_publish -> send_method -> frame_writer does.
    class FakeConnection:
        frame_max = FRAME_MAX
        bytes_sent = 0
        bytes_recv = 0

    class Collector:
        """Stands in for the transport: keeps what would go to sendall (a view of
        py-amqp's shared frame buffer; not copied, as the real transport does not)."""

        last: Any = None

        def write(self, data: Any) -> None:
            self.last = data

    sink = Collector()
    write_frame = frame_writer(FakeConnection(), sink)
    publish_sig = aspec.Basic.Publish

    def encode() -> Any:
        msg = Message(BODY, content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE,
                      application_headers={"x": 1})
        # Channel._basic_publish's argsig and args, then AbstractChannel.send_method.
        args = dumps("Bssbb", (0, EXCHANGE, ROUTING_KEY, False, False))
        write_frame(1, CHANNEL, publish_sig, args, msg)
        return sink.last

    # --- decode: Transport.read_frame -> frame_handler -> Channel.dispatch_method.
    def no_recv(n: int) -> bytes:
        raise AssertionError("the whole delivery is already buffered")

    transport = TCPTransport.__new__(TCPTransport)  # no socket: reads from _read_buffer
    transport._read_buffer = b""
    transport._quick_recv = no_recv
    transport.raise_on_initial_eintr = True
    read_frame = transport.read_frame
    deliver_args = Channel._METHODS[aspec.Basic.Deliver].args  # "sLbss"
    done: list[Any] = []

    def on_method(channel: int, method_sig: Any, payload: bytes, content: Any) -> None:
        # dispatch_method's decoding: the arguments, then the content appended.
        args, _ = loads(deliver_args, payload, 4)
        args.append(content)
        done.append(args)

    on_frame = frame_handler(FakeConnection(), on_method)

    def decode(buf: bytes) -> Any:
        transport._read_buffer = buf
        on_frame(read_frame())
        on_frame(read_frame())
        on_frame(read_frame())
        return done.pop()

    def delivered(args: Any) -> tuple[Any, ...]:
        tag, dtag, redelivered, exchange, rk, msg = args
        p = msg.properties
        return (tag, dtag, redelivered, exchange, rk, p.get("content_type"),
                p.get("delivery_mode"), p.get("application_headers"), msg.body)

    return Codec(
        "amqp", "amqp", encode, decode, delivered,
        "Message + serialization.dumps + method_framing.frame_writer (fake transport); "
        "TCPTransport.read_frame x3 + method_framing.frame_handler + serialization.loads",
    )


_MAKERS: dict[str, Callable[[], Codec]] = {
    "leveret": _leveret,
    "pamqp": _pamqp,
    "pika": _pika,
    "amqp": _py_amqp,
}


def codecs(names: list[str] | None = None) -> tuple[list[Codec], dict[str, str]]:
    """The codecs that can be imported, and why the others cannot."""
    found, missing = [], {}
    for name in names or list(_MAKERS):
        try:
            found.append(_MAKERS[name]())
        except ImportError as exc:
            missing[name] = f"not installed ({exc}); pip install -e '.[bench]'"
    return found, missing


# --------------------------------------------------------------------------- checks


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, list):
        return b"".join(bytes(d) for d in data)
    return bytes(data)


def check(codec: Codec, deliver: bytes) -> None:
    """Raise AssertionError unless ``codec`` encodes a correct publish and decodes the
    delivery completely (every value, properties and body included)."""
    from leveret.wire import amqp0_9_1 as spec
    from leveret.wire.frames import FrameReader

    reader = FrameReader(spec, FRAME_MAX)  # frame by frame: the check looks at each frame
    reader.feed(_as_bytes(codec.encode()))
    frames: list[Any] = list(reader.read_frames())
    assert len(frames) == 3 and reader.buffered == 0, f"{codec.name}: encode gave {frames!r}"
    m, p, b = frames[0].method, frames[1].properties, frames[2].payload
    got: tuple[Any, ...] = (m.exchange, m.routing_key, p.content_type, p.delivery_mode, p.headers, b)
    assert type(m) is spec.Basic.Publish and got == EXPECTED_PUBLISH, f"{codec.name} encoded {got!r}"
    for _ in range(3):  # and again: state carried between calls must not break it
        got = codec.delivered(codec.decode(deliver))
        assert got == EXPECTED_DELIVERY, f"{codec.name} decoded {got!r}"


# --------------------------------------------------------------------------- timing


def measure(
    selected: list[Codec], deliver: bytes, repeat: int, min_time: float
) -> dict[str, dict[str, float]]:
    """Best time per call, in microseconds: ``{name: {"encode": us, "decode": us}}``.

    Each (library, operation) gets a loop count so that one repeat takes about
    ``min_time`` seconds; the repeats go round robin over the libraries.  As ``timeit``
    does, the garbage collector is off while a loop runs.
    """
    jobs: list[tuple[str, str, timeit.Timer, int]] = []
    for c in selected:
        decode = c.decode
        for op, fn in (("encode", c.encode), ("decode", lambda d=decode: d(deliver))):
            timer = timeit.Timer(fn)
            number = 1
            while True:
                if timer.timeit(number) >= min_time / 4:
                    break
                number *= 2
            jobs.append((c.name, op, timer, number * 4))
    best: dict[str, dict[str, float]] = {c.name: {} for c in selected}
    for _ in range(repeat):
        for name, op, timer, number in jobs:
            t = timer.timeit(number) / number * 1e6
            if op not in best[name] or t < best[name][op]:
                best[name][op] = t
    return best


def profile_leveret(deliver: bytes, loops: int = 200_000) -> str:
    """cProfile of leveret's encode and decode loops, top functions by own time."""
    codec = _leveret()
    out = io.StringIO()
    for op, fn in (("encode", codec.encode), ("decode", lambda: codec.decode(deliver))):
        prof = cProfile.Profile()
        gc.disable()
        prof.enable()
        for _ in range(loops):
            fn()
        prof.disable()
        gc.enable()
        out.write(f"--- leveret {op}: {loops} calls (cProfile adds its own cost per call)\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(12)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def report(best: dict[str, dict[str, float]], target: float) -> dict[str, Any]:
    """Ratios against the fastest peer: fastest peer's time / leveret's time (2.0 means
    leveret takes half the time)."""
    out: dict[str, Any] = {"ratios": {}, "fastest_peer": {}, "pass": {}}
    if "leveret" not in best:
        return out
    for op in ("encode", "decode"):
        peers = {n: r[op] for n, r in best.items() if n != "leveret"}
        if not peers:
            continue
        fastest = min(peers, key=peers.__getitem__)
        ratio = peers[fastest] / best["leveret"][op]
        out["fastest_peer"][op] = fastest
        out["ratios"][op] = round(ratio, 2)
        out["pass"][op] = ratio >= target
    return out


def format_table(best: dict[str, dict[str, float]], summary: dict[str, Any], target: float) -> str:
    lev = best.get("leveret")
    lines = [
        "| library | encode (us/msg) | decode (us/msg) | encode: this / leveret | decode: this / leveret |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in best.items():
        ratios = ["-", "-"] if lev is None else [f"{r[op] / lev[op]:.2f}x" for op in ("encode", "decode")]
        lines.append(f"| {name} | {r['encode']:.2f} | {r['decode']:.2f} | {ratios[0]} | {ratios[1]} |")
    lines.append("")
    for op in ("encode", "decode"):
        if op in summary["ratios"]:
            verdict = "PASS" if summary["pass"][op] else "MISS"
            lines.append(
                f"{op}: leveret is {summary['ratios'][op]:.2f}x the fastest peer "
                f"({summary['fastest_peer'][op]}); target >= {target:g}x: {verdict}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks codec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repeats per library and operation (best counts); default 7")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per repeat; default 0.2")
    parser.add_argument("--libs", default=",".join(_MAKERS), help="comma-separated subset of " + ",".join(_MAKERS))
    parser.add_argument("--target", type=float, default=3.0, help="ratio leveret must reach against the fastest peer; default 3")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="print JSON instead of the table; with FILE, write it there and print the table too")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of leveret's encode and decode")
    args = parser.parse_args(argv)

    deliver = deliver_bytes()
    selected, missing = codecs([n.strip() for n in args.libs.split(",") if n.strip()])
    for codec in selected:
        check(codec, deliver)
    best = measure(selected, deliver, args.repeat, args.min_time)
    summary = report(best, args.target)
    if args.json:
        doc = {
            "benchmark": "codec",
            "unit": "microseconds per message (best of repeats)",
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "repeat": args.repeat,
            "min_time": args.min_time,
            "target": args.target,
            "versions": {c.name: _version(c.package) for c in selected},
            "how": {c.name: c.how for c in selected},
            "missing": missing,
            "results": {n: {f"{op}_us": round(v, 3) for op, v in r.items()} for n, r in best.items()},
            **summary,
        }
        if args.json == "-":
            print(json.dumps(doc, indent=2))
        else:
            with open(args.json, "w") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
    if args.json != "-":
        print(f"codec benchmark: Python {platform.python_version()}, best of {args.repeat} x ~{args.min_time:g} s, "
              + ", ".join(f"{c.name} {_version(c.package)}" for c in selected))
        print()
        print(format_table(best, summary, args.target))
        for name, why in missing.items():
            print(f"{name}: {why}", file=sys.stderr)
    if args.profile:
        print(profile_leveret(deliver), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
