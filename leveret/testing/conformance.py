"""A battery of protocol conformance checks, run against a live broker.

Each check is a named scenario with the spec section it checks, written with
:class:`~leveret.testing.session.RawSession`::

    @check("frames.bad-frame-end", "0-9-1 §4.2.3", "a frame-end octet other than 0xCE is fatal",
           deviation="...what RabbitMQ does instead...")
    def _bad_frame_end(ctx: CheckContext) -> str | None:
        ...

A check passes by returning (optionally a note), fails by raising (an
:class:`~leveret.testing.session.ExpectationFailed`, an ``AssertionError`` or any error), and
skips with :meth:`CheckContext.skip` (e.g. when the broker does not announce the capability
the check needs).  Where RabbitMQ is known to deviate from the spec, the check accepts the
spec's behaviour *or* RabbitMQ's exact behaviour -- asserted as precisely as the spec's -- and
in the second case calls :meth:`CheckContext.deviation`, so the result reads "deviation"
rather than "pass".  ``docs/conformance.md`` lists every deviation.

:func:`run_checks` runs the battery (in a few threads: the checks are independent and some
wait seconds for the broker's timers) and returns a :class:`~leveret.testing.report.Report`.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, NoReturn

from ..wire import amqp0_9_1
from ..client.url import parse_url
from ..wire.frames import (
    BodyFrame,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    body_frame,
    content_frames,
    header_frame,
)
from .report import CheckResult, Report
from .session import EOF, ExpectationFailed, ProtocolHeader, RawSession, describe, raw_frame

__all__ = [
    "Check",
    "CheckContext",
    "CHECKS",
    "Skip",
    "ConformanceError",
    "check",
    "select_checks",
    "run_checks",
]

#: How long the checks wait for RabbitMQ to drop a connection it refused before
#: ``connection.open`` (it waits a few seconds before closing the socket).
REFUSAL_TIMEOUT = 8.0


class Skip(Exception):
    """Raised by :meth:`CheckContext.skip`: the check does not apply to this broker."""


class ConformanceError(Exception):
    """The battery could not run at all (broker unreachable, credentials refused)."""


@dataclass(frozen=True)
class Check:
    """One conformance check: ``name`` (``group.what``), the ``spec`` reference, a one-line
    ``description``, the function, and -- for a known RabbitMQ deviation -- what RabbitMQ
    does instead (``deviation``)."""

    name: str
    spec: str
    description: str
    func: Callable[[CheckContext], str | None]
    deviation: str | None = None

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]


#: Every check, in the order they are defined (and reported).
CHECKS: list[Check] = []


def check(name: str, spec: str, description: str, *, deviation: str | None = None
          ) -> Callable[[Callable[[CheckContext], str | None]], Callable[[CheckContext], str | None]]:
    """Register a check (a decorator)."""

    def register(func: Callable[[CheckContext], str | None]) -> Callable[[CheckContext], str | None]:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate conformance check {name}")
        CHECKS.append(Check(name, spec, description, func, deviation))
        return func

    return register


class CheckContext:
    """What a check gets: sessions to the broker under test, unique names, and the calls
    that mark its result (:meth:`deviation`, :meth:`skip`)."""

    def __init__(self, battery: _Battery, current: Check) -> None:
        self._battery = battery
        self.check = current
        self.url = battery.url
        self.timeout = battery.timeout
        self.server_properties: dict[str, Any] = battery.server_properties
        self.deviated: str | None = None
        self._sessions: list[RawSession] = []

    # ---- results

    def deviation(self, observed: str) -> None:
        """The broker showed the documented RabbitMQ deviation (``observed`` says what)."""
        self.deviated = observed

    def skip(self, reason: str) -> NoReturn:
        raise Skip(reason)

    def capability(self, name: str) -> bool:
        """Whether ``connection.start`` announced the capability ``name``."""
        caps = self.server_properties.get("capabilities") or {}
        return bool(caps.get(name))

    def need_capability(self, name: str) -> None:
        if not self.capability(name):
            self.skip(f"the broker does not announce the {name} capability")

    # ---- sessions and names

    def session(self, protocol: str | None = None, **kwargs: Any) -> RawSession:
        """A new, not yet connected session to the broker (closed after the check)."""
        s = RawSession(self.url, protocol=protocol or "0-9-1", timeout=self.timeout, **kwargs)
        self._sessions.append(s)
        return s

    def open(self, channels: Iterable[int] = (1,), protocol: str | None = None,
             **handshake: Any) -> RawSession:
        """A session after the handshake, with ``channels`` open."""
        s = self.session(protocol)
        s.handshake(**handshake)
        for ch in channels:
            s.open_channel(ch)
        return s

    def name(self, what: str) -> str:
        """A resource name unique to this run and check."""
        return f"{self._battery.prefix}.{self.check.name}.{what}"

    def exchange(self, s: RawSession, channel: int, what: str, type: str = "direct") -> str:
        """Declare a (non-auto-delete) exchange, deleted when the battery ends."""
        name = self.name(what)
        s.rpc(channel, s.method("exchange.declare", exchange=name, type=type))
        self._battery.cleanup.append(("exchange", name))
        return name

    def close(self) -> None:
        for s in self._sessions:
            self._battery.record_methods(s)
            s.close()


class _Battery:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.prefix = f"leveret-conformance-{os.getpid()}-{os.urandom(3).hex()}"
        self.server_properties: dict[str, Any] = {}
        self.cleanup: list[tuple[str, str]] = []
        self.methods: set[str] = set()
        self.methods_08: set[str] = set()
        self._lock = threading.Lock()
        self.complete = False

    def record_methods(self, s: RawSession) -> None:
        names = s.method_names()
        with self._lock:
            (self.methods if s.protocol == "0-9-1" else self.methods_08).update(names)


# --------------------------------------------------------------------------- helpers


def _queue(s: RawSession, channel: int = 1, **kwargs: Any) -> str:
    """Declare an exclusive, server-named queue (unless told otherwise); its name."""
    kwargs.setdefault("exclusive", True)
    return str(s.rpc(channel, s.method("queue.declare", **kwargs)).queue)


def _publish(s: RawSession, channel: int, body: bytes, routing_key: str = "", exchange: str = "",
             properties: Any = None, mandatory: bool = False, immediate: bool = False,
             frame_max: int | None = None) -> None:
    method = s.method("basic.publish", exchange=exchange, routing_key=routing_key,
                      mandatory=mandatory, immediate=immediate)
    s.send_content(channel, method, properties, body, frame_max=frame_max)


def _get(s: RawSession, channel: int, queue: str, no_ack: bool = True
         ) -> tuple[Any, Any, bytes] | None:
    """``basic.get``: ``(get-ok, properties, body)`` or None on ``get-empty``."""
    s.send_method(channel, s.method("basic.get", queue=queue, no_ack=no_ack))
    first = s.expect_method(("basic.get-ok", "basic.get-empty"), channel=channel)
    if first.NAME == "basic.get-empty":
        return None
    header = s.expect_frame(HeaderFrame, channel)
    chunks = []
    got = 0
    while got < header.body_size:
        frame = s.expect_frame(BodyFrame, channel)
        chunks.append(bytes(frame.payload))
        got += len(frame.payload)
    return first, header.properties, b"".join(chunks)


def _publish_confirmed(s: RawSession, channel: int, body: bytes, routing_key: str = "",
                       exchange: str = "") -> None:
    """Publish on a channel in confirm mode and wait for the ack: the message is then in
    its queues (or was dropped as unroutable), so counts read afterwards include it."""
    _publish(s, channel, body, routing_key=routing_key, exchange=exchange)
    s.expect_method("basic.ack", channel)


def _count(s: RawSession, channel: int, queue: str) -> int:
    return int(s.rpc(channel, s.method("queue.declare", queue=queue, passive=True)).message_count)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ExpectationFailed(message)


def _refused_before_open(s: RawSession) -> None:
    """After a tune-ok the broker must refuse: the connection is dropped without
    connection.open-ok (RabbitMQ waits a few seconds, sends nothing, closes)."""
    item = s.receive(REFUSAL_TIMEOUT)
    if isinstance(item, MethodFrame) and item.method.NAME == "connection.close":
        raise ExpectationFailed(
            "the spec asks for the connection to be closed without a negotiated close; the "
            f"broker sent {describe(item)}", item)
    _expect(item is EOF, f"expected the broker to drop the connection; got {describe(item)}")


def _fatal(s: RawSession, timeout: float | None = None) -> Any:
    """The next significant thing the broker sends (EOF, a close, a frame, None)."""
    return s.receive(timeout)


def _method(item: Any, name: str, channel: int | None = None) -> Any:
    """``item``'s method if it is a method frame of method ``name`` (on ``channel``), else
    None."""
    if isinstance(item, MethodFrame) and item.method.NAME == name and (
            channel is None or item.channel == channel):
        return item.method
    return None


def _is_close(item: Any, codes: Iterable[int] | int) -> bool:
    codes = {codes} if isinstance(codes, int) else set(codes)
    close = _method(item, "connection.close", 0)
    return close is not None and close.reply_code in codes


# =========================================================================== negotiation


@check("negotiation.header-0-9-1", "0-9-1 §4.2.2, §2.2.4",
       "the 0-9-1 protocol header is answered with connection.start 0-9, PLAIN offered, "
       "en_US among the locales, server properties with capabilities")
def _header_091(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    start = s.expect_method("connection.start", channel=0)
    _expect((start.version_major, start.version_minor) == (0, 9),
            f"connection.start says version {start.version_major}-{start.version_minor}, not 0-9")
    mechanisms = bytes(start.mechanisms).split()
    _expect(b"PLAIN" in mechanisms, f"PLAIN is not among the mechanisms {mechanisms}")
    _expect(b"en_US" in bytes(start.locales).split(), f"en_US is not among the locales {start.locales!r}")
    props = start.server_properties or {}
    _expect(isinstance(props.get("capabilities"), dict), "server-properties has no capabilities table")
    return f"{props.get('product', '?')} {props.get('version', '?')}; mechanisms {b' '.join(mechanisms).decode()}"


@check("negotiation.handshake-0-9-1", "0-9-1 §2.2.4, connection.tune",
       "start/start-ok, tune/tune-ok, open/open-ok reach an open connection; the tune "
       "proposal is sane (frame-max 0 or >= 4096)")
def _handshake_091(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.handshake()
    tune = s.tune
    _expect(tune.frame_max == 0 or tune.frame_max >= 4096,
            f"the server proposes frame-max {tune.frame_max}, below frame-min-size 4096")
    s.open_channel(1)
    s.close_channel(1)
    s.close_connection()
    return f"tune: channel-max {tune.channel_max}, frame-max {tune.frame_max}, heartbeat {tune.heartbeat}"


@check("negotiation.handshake-0-8", "0-8 §4.2.2, connection class",
       "the 0-8 header gets connection.start 8-0; handshake, access.request, queue.declare, "
       "publish and get work in 0-8")
def _handshake_08(ctx: CheckContext) -> str | None:
    s = ctx.session(protocol="0-8")
    s.send_header()
    first = s.receive()
    if isinstance(first, ProtocolHeader):
        ctx.skip(f"the broker does not speak 0-8 (it answered {first.data!r})")
    _expect(isinstance(first, MethodFrame) and first.method.NAME == "connection.start",
            f"expected connection.start, got {describe(first)}")
    start = first.method
    _expect((start.version_major, start.version_minor) == (8, 0),
            f"connection.start says version {start.version_major}-{start.version_minor}, not 8-0")
    s.start = start
    s.start_ok()
    s.tune = s.expect_method("connection.tune", channel=0)
    s.tune_ok()
    s.open()
    s.expect_method("connection.open-ok", channel=0)
    s.open_channel(1)
    ticket = s.rpc(1, s.method("access.request", realm="/data", active=True, read=True, write=True)).ticket
    q = _queue(s, 1, ticket=ticket)
    _publish(s, 1, b"zero-eight", routing_key=q)
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == b"zero-eight", f"basic.get returned {got!r}")
    s.close_channel(1)
    s.close_connection()
    return f"access.request ticket {ticket}"


@check("negotiation.unsupported-header", "0-9-1 §4.2.2",
       "a protocol header the server does not support (another version, HTTP, AMQP 1.0) is "
       "answered with the server's own header, then the socket is closed")
def _unsupported_header(ctx: CheckContext) -> str | None:
    for header in (b"AMQP\x00\x00\x09\x02", b"GET / HTTP/1.1\r\n\r\n", b"AMQP\x00\x01\x00\x00"):
        s = ctx.session()
        s.send_header(header)
        theirs = s.expect_protocol_header()
        _expect(theirs.data == amqp0_9_1.PROTOCOL_HEADER or theirs.data[:4] == b"AMQP",
                f"answered {theirs.data!r}")
        s.expect_eof()
    return None


@check("negotiation.connection-close", "0-9-1 §2.2.4, connection.close / close-ok",
       "connection.close from the client is answered with close-ok and nothing after it")
def _connection_close(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(0, s.method("connection.close", reply_code=200, reply_text="bye"))
    s.expect_method("connection.close-ok", channel=0)
    # close-ok tells the client it may close the socket; the server sends nothing more.
    item = s.receive(0.3)
    _expect(item is None or item is EOF, f"after close-ok the broker sent {describe(item)}")
    return None


@check("negotiation.frame-before-open", "0-9-1 §4.2.1 (grammar), §2.2.4",
       "a channel frame before connection.open is refused with 505 UNEXPECTED_FRAME")
def _frame_before_open(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.start = s.expect_method("connection.start")
    s.start_ok()
    s.tune = s.expect_method("connection.tune")
    s.tune_ok()
    s.send_method(1, s.method("channel.open"))
    s.expect_close(505)
    return None


@check("negotiation.unknown-vhost", "0-9-1 connection.open, constant invalid-path (402)",
       "connection.open of a virtual host that does not exist is refused with 402 INVALID_PATH",
       deviation="RabbitMQ refuses with 530 NOT_ALLOWED ('vhost ... not found') instead of 402")
def _unknown_vhost(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.start = s.expect_method("connection.start")
    s.start_ok()
    s.tune = s.expect_method("connection.tune")
    s.tune_ok()
    s.open(ctx.name("no-such-vhost"))
    close = s.expect_close((402, 530))
    if close.reply_code == 530:
        ctx.deviation(f"530 {close.reply_text}")
    return None


# =========================================================================== tune


def _until_tune(ctx: CheckContext) -> RawSession:
    s = ctx.session()
    s.send_header()
    s.start = s.expect_method("connection.start")
    s.start_ok()
    s.tune = s.expect_method("connection.tune")
    return s


@check("tune.lower-values", "0-9-1 connection.tune-ok",
       "the client may tune lower than proposed (channel-max 16, frame-max 4096); the server "
       "then sends no frame above 4096 octets")
def _tune_lower(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.handshake(channel_max=16, frame_max=4096)
    s.open_channel(1)
    q = _queue(s)
    body = os.urandom(20000)
    _publish(s, 1, body, routing_key=q)
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == body, "the 20000-byte body did not come back intact")
    sizes = [len(e.item.payload) for e in s.frames
             if e.direction == "received" and isinstance(e.item, BodyFrame)]
    _expect(max(sizes) <= 4096 - 8, f"the broker sent a body frame of {max(sizes)} octets")
    return f"{len(sizes)} body frames, largest {max(sizes)} octets"


@check("tune.frame-max-below-minimum", "0-9-1 connection.tune-ok frame-max (rule 'minimum')",
       "tune-ok with frame-max 1024 (< frame-min-size 4096) is refused: no open-ok, the "
       "connection is dropped")
def _tune_below_min(ctx: CheckContext) -> str | None:
    s = _until_tune(ctx)
    s.tune_ok(frame_max=1024)
    s.open()
    _refused_before_open(s)
    return None


@check("tune.frame-max-above-server", "0-9-1 connection.tune-ok frame-max (rule 'upper-limit')",
       "tune-ok with frame-max above the server's: the server closes the connection without "
       "a negotiated close")
def _tune_frame_above(ctx: CheckContext) -> str | None:
    s = _until_tune(ctx)
    if not s.tune.frame_max:
        ctx.skip("the server proposes no frame-max limit")
    s.tune_ok(frame_max=s.tune.frame_max + 1)
    s.open()
    _refused_before_open(s)
    return None


@check("tune.frame-max-zero", "0-9-1 connection.tune frame-max ('zero means no limit'), rule 'upper-limit'",
       "tune-ok with frame-max 0 (no limit) when the server set a limit is above that limit: "
       "closed without a negotiated close")
def _tune_frame_zero(ctx: CheckContext) -> str | None:
    s = _until_tune(ctx)
    if not s.tune.frame_max:
        ctx.skip("the server proposes no frame-max limit")
    s.tune_ok(frame_max=0)
    s.open()
    _refused_before_open(s)
    return None


@check("tune.channel-max-above-server", "0-9-1 connection.tune-ok channel-max (rule 'upper-limit')",
       "tune-ok with channel-max above the server's: the server closes the connection without "
       "a negotiated close")
def _tune_channel_above(ctx: CheckContext) -> str | None:
    s = _until_tune(ctx)
    if not s.tune.channel_max or s.tune.channel_max == 65535:
        ctx.skip("the server proposes no channel-max limit")
    s.tune_ok(channel_max=s.tune.channel_max + 1)
    s.open()
    _refused_before_open(s)
    return None


@check("tune.channel-max-enforced", "0-9-1 connection.tune channel-max ('highest channel number')",
       "with channel-max 2, channel.open on channel 5 is refused (usable channels are 1..2)",
       deviation="RabbitMQ counts open channels instead of checking channel numbers: channel 5 "
                 "opens, and the third channel is refused with 530 NOT_ALLOWED")
def _channel_max_enforced(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1,), channel_max=2)
    s.send_method(5, s.method("channel.open"))
    item = _fatal(s)
    if isinstance(item, MethodFrame) and item.channel == 5 and item.method.NAME == "channel.open-ok":
        s.send_method(3, s.method("channel.open"))
        close = s.expect_close(530)
        ctx.deviation(f"channel 5 opened; a third channel: 530 {close.reply_text}")
        return None
    _expect(_is_close(item, (504, 530)),
            f"expected channel 5 to be refused (connection.close 504 or 530); got {describe(item)}")
    return None


# =========================================================================== frames


@check("frames.bad-frame-end", "0-9-1 §4.2.3",
       "a frame whose frame-end octet is not 0xCE is a fatal error: the connection is closed "
       "without sending any further data",
       deviation="RabbitMQ sends connection.close 501 FRAME_ERROR ('invalid_frame_end_marker') "
                 "and waits for close-ok")
def _bad_frame_end(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_frame(raw_frame(1, 1, s.method("basic.qos", prefetch_count=1).encode(), end=0x00))
    item = _fatal(s)
    if _is_close(item, 501):
        s.send_method(0, s.method("connection.close-ok"))
        ctx.deviation(f"connection.close 501 {item.method.reply_text}")
        return None
    _expect(item is EOF, f"expected the connection to be closed; got {describe(item)}")
    return None


@check("frames.unknown-frame-type", "0-9-1 §4.2.3",
       "a frame of an undefined type (9) is a fatal error: the connection is closed without "
       "sending any further data",
       deviation="RabbitMQ sends connection.close 501 FRAME_ERROR ('unknown_frame') and waits "
                 "for close-ok")
def _unknown_frame_type(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_frame(raw_frame(9, 1, b"abc"))
    item = _fatal(s)
    if _is_close(item, 501):
        s.send_method(0, s.method("connection.close-ok"))
        ctx.deviation(f"connection.close 501 {item.method.reply_text}")
        return None
    _expect(item is EOF, f"expected the connection to be closed; got {describe(item)}")
    return None


@check("frames.pre-tune-frame-min-size", "0-9-1 §4.2.3 (frame-min-size before tuning)",
       "before tuning, a frame of exactly 4096 octets (a padded start-ok) is accepted")
def _pre_tune(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.expect_method("connection.start")
    base = len(s.method("connection.start-ok", client_properties={"pad": ""}, mechanism="PLAIN",
                        response=b"\0x\0y", locale="en_US").encode())
    user, pwd = s.params.username, s.params.password
    response = b"\0" + user.encode() + b"\0" + pwd.encode()
    pad = 4096 - 8 - base - (len(response) - 4)
    if pad < 0:
        ctx.skip("the credentials alone make start-ok larger than 4096 octets")
    start_ok = s.method("connection.start-ok", client_properties={"pad": "p" * pad},
                        mechanism="PLAIN", response=response, locale="en_US")
    _expect(len(start_ok.encode()) + 8 == 4096, "the padded start-ok is not 4096 octets")
    s.send_method(0, start_ok)
    s.expect_method("connection.tune", channel=0)
    return None


@check("frames.frame-max-exact", "0-9-1 §4.2.3",
       "with frame-max 4096, a body frame of exactly 4096 octets (payload 4088) is accepted")
def _frame_max_exact(ctx: CheckContext) -> str | None:
    s = ctx.open(frame_max=4096)
    q = _queue(s)
    body = os.urandom(4088)
    _publish(s, 1, body, routing_key=q, frame_max=4096)
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == body, "the message did not come back intact")
    return None


@check("frames.frame-max-exceeded", "0-9-1 §4.2.3",
       "with frame-max 4096, a frame of 4097 octets is answered with 501 FRAME_ERROR",
       deviation="RabbitMQ accepts frames up to frame-max + 8 octets (payload <= frame-max, a "
                 "'fudge' for old clients); from frame-max + 9 on it closes with 501 FRAME_ERROR")
def _frame_max_exceeded(ctx: CheckContext) -> str | None:
    s = ctx.open(frame_max=4096)
    q = _queue(s)
    _publish(s, 1, b"x" * 4089, routing_key=q, frame_max=4097)
    s.send_method(1, s.method("basic.get", queue=q, no_ack=True))
    item = _fatal(s)
    if _is_close(item, 501):
        s.send_method(0, s.method("connection.close-ok"))
        return None
    _expect(isinstance(item, MethodFrame) and item.method.NAME == "basic.get-ok",
            f"expected connection.close 501 (or, RabbitMQ, the message); got {describe(item)}")
    # RabbitMQ took the 4097-octet frame: check where its real limit is.
    s.close()
    s = ctx.open(frame_max=4096)
    q = _queue(s)
    _publish(s, 1, b"x" * 4096, routing_key=q, frame_max=4104)
    got = _get(s, 1, q)
    _expect(got is not None and len(got[2]) == 4096, "a 4104-octet frame was not accepted")
    _publish(s, 1, b"x" * 4097, routing_key=q, frame_max=4105)
    s.expect_close(501)
    ctx.deviation("frames of 4097..4104 octets accepted; 4105 octets: 501 FRAME_ERROR")
    return None


@check("frames.truncated-method", "0-9-1 §4.2.4, constant frame-error (501)",
       "a method frame whose arguments are cut short is answered with 501 FRAME_ERROR or 502 "
       "SYNTAX_ERROR")
def _truncated_method(ctx: CheckContext) -> str | None:
    s = ctx.open()
    payload = s.method("queue.declare", queue="truncated").encode()[:8]
    s.send_frame(raw_frame(1, 1, payload))
    close = s.expect_close((501, 502))
    return f"{close.reply_code} {close.reply_text}"


@check("frames.trailing-bytes", "0-9-1 §4.2.4, constant frame-error (501)",
       "a method frame with bytes after its last argument is answered with 501 or 502")
def _trailing_bytes(ctx: CheckContext) -> str | None:
    s = ctx.open()
    payload = s.method("queue.declare", queue="", exclusive=True).encode() + b"\x00\x00"
    s.send_frame(raw_frame(1, 1, payload))
    close = s.expect_close((501, 502))
    return f"{close.reply_code}"


def _unknown(ctx: CheckContext, payload: bytes) -> None:
    s = ctx.open()
    s.send_frame(raw_frame(1, 1, payload))
    item = _fatal(s)
    if _is_close(item, (503, 540)):
        s.send_method(0, s.method("connection.close-ok"))
        return
    _expect(item is EOF, f"expected connection.close 540 or 503; got {describe(item)}")
    ctx.deviation("the connection was dropped without connection.close")


@check("frames.unknown-method", "0-9-1 §4.2.4, constant not-implemented (540)",
       "a method id the class does not define (basic 60/99) is answered with connection.close "
       "540 NOT_IMPLEMENTED (or 503 COMMAND_INVALID)",
       deviation="RabbitMQ drops the TCP connection without connection.close (its reader "
                 "process exits with unknown_method_id)")
def _unknown_method(ctx: CheckContext) -> str | None:
    _unknown(ctx, b"\x00\x3c\x00\x63")
    return None


@check("frames.unknown-class", "0-9-1 §4.2.4, constant not-implemented (540)",
       "a class id the protocol does not define (999) is answered with connection.close 540 "
       "(or 503)",
       deviation="RabbitMQ drops the TCP connection without connection.close")
def _unknown_class(ctx: CheckContext) -> str | None:
    _unknown(ctx, b"\x03\xe7\x00\x0a")
    return None


@check("frames.unopened-channel", "0-9-1 §4.3, constant channel-error (504)",
       "a method on a channel that was never opened is answered with 504 CHANNEL_ERROR")
def _unopened_channel(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=())
    s.send_method(5, s.method("queue.declare", queue="", exclusive=True))
    s.expect_close(504)
    return None


@check("frames.channel-0-non-connection-method", "0-9-1 §4.3 (channel 0 is for the connection)",
       "queue.declare on channel 0 is refused with a connection error (503 or 504)")
def _channel0_method(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=())
    s.send_method(0, s.method("queue.declare", queue="", exclusive=True))
    close = s.expect_close((503, 504))
    return f"{close.reply_code}"


@check("frames.connection-method-on-channel", "0-9-1 §4.3, constant command-invalid (503)",
       "connection.open on channel 1 is refused with 503 COMMAND_INVALID")
def _connection_method_on_channel(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("connection.open", virtual_host="/"))
    s.expect_close((503, 504))
    return None


@check("frames.server-method-from-client", "0-9-1 §2.2.1, constant command-invalid (503)",
       "methods only a server sends (basic.get-empty, channel.close-ok unasked, "
       "channel.flow-ok unasked) are refused with 503 COMMAND_INVALID")
def _server_methods(ctx: CheckContext) -> str | None:
    for name, fields in (("basic.get-empty", {}), ("channel.close-ok", {}), ("channel.flow-ok", {"active": True})):
        s = ctx.open()
        s.send_method(1, s.method(name, **fields))
        s.expect_close(503)
    return None


@check("frames.channel-open-twice", "0-9-1 channel.open (rule 'state'), constant channel-error (504)",
       "channel.open on a channel that is already open is refused with 504 CHANNEL_ERROR")
def _open_twice(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("channel.open"))
    s.expect_close(504)
    return None


@check("frames.after-channel-close", "0-9-1 §4.5 (channel closure)",
       "a method on a channel after its close handshake is refused with 504 CHANNEL_ERROR")
def _after_close(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.close_channel(1)
    s.send_method(1, s.method("basic.qos", prefetch_count=1))
    s.expect_close(504)
    return None


# =========================================================================== content


@check("content.split-over-frames", "0-9-1 §4.2.6.2",
       "a 100 000-byte body sent in 25 body frames (frame-max 4096) arrives whole, re-split by "
       "the broker into frames within frame-max")
def _split(ctx: CheckContext) -> str | None:
    s = ctx.open(frame_max=4096)
    q = _queue(s)
    body = os.urandom(100000)
    _publish(s, 1, body, routing_key=q)
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == body, "the body did not come back intact")
    return None


@check("content.empty-body", "0-9-1 §4.2.6 (body-size 0: no body frames)",
       "a content with body-size 0 and no body frame is accepted and delivered the same way")
def _empty_body(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    _publish(s, 1, b"", routing_key=q)
    s.send_method(1, s.method("basic.get", queue=q, no_ack=True))
    s.expect_method("basic.get-ok", 1)
    header = s.expect_frame(HeaderFrame, 1)
    _expect(header.body_size == 0, f"body-size {header.body_size}")
    s.expect_nothing(0.3)
    return None


@check("content.properties-round-trip", "0-9-1 §4.2.6.1, basic properties",
       "every basic property, and a headers table of every field type, comes back unchanged")
def _properties(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    headers = {
        "str": "text", "int": 42, "neg": -7, "big": 2**40, "bool": True, "float": 1.5,
        "decimal": Decimal("3.14"), "time": stamp, "bytes": b"\x00\xff", "none": None,
        "list": [1, "two", False], "table": {"nested": "yes"},
    }
    props = s.spec.Basic.Properties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=5, correlation_id="corr", reply_to="reply", expiration="60000",
        message_id="mid", timestamp=stamp, type="kind", user_id=s.params.username, app_id="leveret",
    )
    _publish(s, 1, b"{}", routing_key=q, properties=props)
    got = _get(s, 1, q)
    _expect(got is not None, "the message is gone")
    assert got is not None
    back = got[1]
    for name in props.FIELDS:
        if name == "headers":
            continue
        _expect(_same(getattr(props, name), getattr(back, name)),
                f"property {name}: sent {getattr(props, name)!r}, got {getattr(back, name)!r}")
    got_headers = back.headers or {}
    for key, value in headers.items():
        _expect(key in got_headers and _same(value, got_headers[key]),
                f"header {key}: sent {value!r}, got "
                f"{repr(got_headers[key]) if key in got_headers else 'no such header'}")
    return None


def _same(sent: Any, got: Any) -> bool:
    """``got`` is ``sent`` unchanged: equal *and* of the same type, all the way down (Python's
    ``==`` alone takes ``True`` for ``1``, ``1.5`` for ``Decimal("1.5")``, ``42`` for
    ``42.0``), decimals with the same digits and exponent, tables with the same keys."""
    if type(sent) is not type(got):
        return False
    if isinstance(sent, dict):
        return bool(sent.keys() == got.keys()) and all(_same(v, got[k]) for k, v in sent.items())
    if isinstance(sent, list):
        return len(sent) == len(got) and all(_same(a, b) for a, b in zip(sent, got))
    if isinstance(sent, Decimal):
        return bool(sent.as_tuple() == got.as_tuple())
    return bool(sent == got)


def _expect_505(ctx: CheckContext, s: RawSession) -> None:
    s.expect_close(505)


@check("content.body-before-header", "0-9-1 §4.2.6",
       "a body frame with no content method and header before it: 505 UNEXPECTED_FRAME")
def _body_first(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_frame(body_frame(1, b"x"))
    _expect_505(ctx, s)
    return None


@check("content.header-without-method", "0-9-1 §4.2.6",
       "a content header with no content method before it: 505 UNEXPECTED_FRAME")
def _header_first(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_frame(header_frame(1, 60, 1, None))
    _expect_505(ctx, s)
    return None


@check("content.header-on-channel-0", "0-9-1 §4.2.6, §4.3",
       "a content header on channel 0: 505 UNEXPECTED_FRAME")
def _header_ch0(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=())
    s.send_frame(header_frame(0, 60, 1, None))
    _expect_505(ctx, s)
    return None


@check("content.header-after-plain-method", "0-9-1 §4.2.6",
       "a content header after a method that carries no content (basic.qos): 505")
def _header_after_plain(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.qos", prefetch_count=1))
    s.expect_method("basic.qos-ok", 1)
    s.send_frame(header_frame(1, 60, 1, None))
    _expect_505(ctx, s)
    return None


@check("content.method-instead-of-header", "0-9-1 §4.2.6",
       "basic.publish followed by another method instead of its header: 505")
def _method_instead_of_header(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.publish", routing_key="nowhere"))
    s.send_method(1, s.method("basic.qos", prefetch_count=1))
    _expect_505(ctx, s)
    return None


@check("content.method-interrupts-body", "0-9-1 §4.2.6",
       "a method between a content header and the body frames it announced: 505")
def _method_interrupts(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.publish", routing_key="nowhere"))
    s.send_frame(header_frame(1, 60, 10, None))
    s.send_method(1, s.method("basic.qos", prefetch_count=1))
    _expect_505(ctx, s)
    return None


@check("content.header-wrong-class", "0-9-1 §4.2.6.1 (class-id must match the method's)",
       "a content header whose class id (50) differs from the method's class (60): 505")
def _header_wrong_class(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.publish", routing_key="nowhere"))
    s.send_frame(raw_frame(2, 1, b"\x00\x32\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x00"))
    _expect_505(ctx, s)
    return None


@check("content.body-longer-than-announced", "0-9-1 §4.2.6",
       "body frames carrying more octets than the header's body-size: 505 UNEXPECTED_FRAME",
       deviation="RabbitMQ does not notice the overrun when it arrives; it keeps waiting for "
                 "body frames and sends 505 only when the next non-body frame comes")
def _body_too_long(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.publish", routing_key="nowhere"))
    s.send_frame(header_frame(1, 60, 5, None))
    s.send_frame(body_frame(1, b"0123456789"))
    item = s.receive(0.5)
    if _is_close(item, 505):
        s.send_method(0, s.method("connection.close-ok"))
        return None
    _expect(item is None, f"expected 505 UNEXPECTED_FRAME; got {describe(item)}")
    s.send_method(1, s.method("basic.qos", prefetch_count=1))
    close = s.expect_close(505)
    ctx.deviation(f"silent until the next method, then 505 {close.reply_text}")
    return None


# =========================================================================== heartbeats


@check("heartbeat.server-sends", "0-9-1 §4.2.7, connection.tune heartbeat",
       "with heartbeat 1 s tuned, the server sends heartbeat frames (at least 2 in 2.5 s)")
def _server_heartbeats(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.handshake(heartbeat=1)
    seen = 0
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        s.send_heartbeat()  # keep our side alive meanwhile
        item = s.receive(min(0.4, max(0.0, end - time.monotonic())), heartbeats=True)
        if isinstance(item, HeartbeatFrame):
            seen += 1
        elif item is not None:
            raise ExpectationFailed(f"expected heartbeats; got {describe(item)}", item)
    _expect(seen >= 2, f"only {seen} heartbeat(s) in 2.5 s with heartbeat 1 s")
    return f"{seen} heartbeats in 2.5 s"


@check("heartbeat.silent-client-dropped", "0-9-1 §4.2.7",
       "a client silent for more than two heartbeat intervals is disconnected without the "
       "close handshake")
def _silent_client(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.handshake(heartbeat=1)
    started = time.monotonic()
    item = s.receive(8.0)
    elapsed = time.monotonic() - started
    _expect(item is EOF, f"expected the broker to drop the connection; got {describe(item)}")
    _expect(elapsed >= 1.5, f"dropped after {elapsed:.1f} s, before two heartbeat intervals")
    return f"dropped after {elapsed:.1f} s"


@check("heartbeat.client-keeps-alive", "0-9-1 §4.2.7",
       "client heartbeats alone keep a connection with heartbeat 1 s open for 3.5 s")
def _keep_alive(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.handshake(heartbeat=1)
    end = time.monotonic() + 3.5
    while time.monotonic() < end:
        s.send_heartbeat()
        item = s.receive(0.3)
        if item is not None:
            raise ExpectationFailed(f"expected nothing but heartbeats; got {describe(item)}", item)
    s.open_channel(1)
    return None


@check("heartbeat.nonzero-channel", "0-9-1 §4.2.7",
       "a heartbeat frame on channel 1 is answered with 501 FRAME_ERROR",
       deviation="RabbitMQ answers 505 UNEXPECTED_FRAME instead of 501 FRAME_ERROR")
def _heartbeat_channel(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_heartbeat(1)
    close = s.expect_close((501, 505))
    if close.reply_code == 505:
        ctx.deviation(f"505 {close.reply_text}")
    return None


# =========================================================================== channel


@check("channel.open-close", "0-9-1 §2.2.5, channel.open / channel.close",
       "channel.open / open-ok, channel.close / close-ok, and the number can be reused")
def _channel_open_close(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2, 65535))
    s.close_channel(1)
    s.open_channel(1)
    s.close_channel(65535)
    return None


@check("channel.soft-error", "0-9-1 §4.8 (soft errors close the channel)",
       "a soft error (passive declare of a missing queue: 404) closes only the channel; the "
       "connection and other channels go on")
def _soft_error(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2))
    s.send_method(1, s.method("queue.declare", queue=ctx.name("missing"), passive=True))
    s.expect_channel_close(1, 404)
    q = _queue(s, 2)
    s.open_channel(1)
    _queue(s, 1, queue=q, passive=True)
    return None


@check("channel.flow-active", "0-9-1 channel.flow",
       "channel.flow(active=true) from the client is answered with flow-ok(active=true)")
def _flow_on(ctx: CheckContext) -> str | None:
    s = ctx.open()
    ok = s.rpc(1, s.method("channel.flow", active=True))
    _expect(ok.active is True, f"flow-ok says active={ok.active}")
    return None


@check("channel.flow-inactive", "0-9-1 channel.flow",
       "channel.flow(active=false) from the client is answered with flow-ok(active=false) and "
       "the server stops sending content",
       deviation="RabbitMQ does not implement client-sent channel.flow(active=false): it "
                 "closes the connection with 540 NOT_IMPLEMENTED")
def _flow_off(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("channel.flow", active=False))
    item = s.receive()
    flow_ok = _method(item, "channel.flow-ok", 1)
    if flow_ok is not None:
        _expect(flow_ok.active is False, f"flow-ok says active={flow_ok.active}")
        return None
    _expect(_is_close(item, 540), f"expected channel.flow-ok; got {describe(item)}")
    s.send_method(0, s.method("connection.close-ok"))
    ctx.deviation(f"540 {item.method.reply_text}")
    return None


@check("connection.update-secret", "RabbitMQ extension: connection.update-secret",
       "connection.update-secret is answered with update-secret-ok")
def _update_secret(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=())
    s.send_method(0, s.method("connection.update-secret", new_secret=s.params.password.encode(),
                              reason="conformance"))
    s.expect_method("connection.update-secret-ok", 0)
    return None


# =========================================================================== exchange


@check("exchange.declare-delete", "0-9-1 §2.2.6, exchange.declare / exchange.delete",
       "declare exchanges of the four standard types, passive declare finds them, delete "
       "removes them (a passive declare then fails with 404)")
def _exchange_declare(ctx: CheckContext) -> str | None:
    s = ctx.open()
    for kind in ("direct", "fanout", "topic", "headers"):
        name = ctx.exchange(s, 1, kind, kind)
        s.rpc(1, s.method("exchange.declare", exchange=name, type=kind, passive=True))
        s.rpc(1, s.method("exchange.delete", exchange=name))
    s.send_method(1, s.method("exchange.declare", exchange=ctx.name("direct"), passive=True))
    s.expect_channel_close(1, 404)
    return None


@check("exchange.unknown-type", "0-9-1 exchange.declare type (rule 'support')",
       "declaring an exchange of a type the server does not know: 503 COMMAND_INVALID")
def _exchange_unknown_type(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("exchange.declare", exchange=ctx.name("x"), type="no-such-type"))
    s.expect_close(503)
    return None


@check("exchange.redeclare-other-type", "0-9-1 exchange.declare type (rule 'typed')",
       "redeclaring an exchange with another type: 530 NOT_ALLOWED",
       deviation="RabbitMQ closes the channel with 406 PRECONDITION_FAILED ('inequivalent arg "
                 "type') instead of the connection with 530")
def _exchange_retype(ctx: CheckContext) -> str | None:
    s = ctx.open()
    name = ctx.exchange(s, 1, "typed", "direct")
    s.send_method(1, s.method("exchange.declare", exchange=name, type="fanout"))
    item = s.receive()
    if _is_close(item, 530):
        s.send_method(0, s.method("connection.close-ok"))
        return None
    close = _method(item, "channel.close", 1)
    _expect(close is not None and close.reply_code == 406,
            f"expected connection.close 530 (or RabbitMQ's channel.close 406); got {describe(item)}")
    s.send_method(1, s.method("channel.close-ok"))
    ctx.deviation(f"channel.close 406 {item.method.reply_text}")
    return None


@check("exchange.reserved-name", "0-9-1 exchange.declare exchange (rule 'reserved')",
       "declaring a new exchange named amq.*: 403 ACCESS_REFUSED")
def _exchange_reserved(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("exchange.declare", exchange="amq." + ctx.name("x"), type="direct"))
    s.expect_channel_close(1, 403)
    return None


@check("exchange.delete-if-unused", "0-9-1 exchange.delete if-unused",
       "exchange.delete(if-unused) of an exchange with bindings: 406 PRECONDITION_FAILED")
def _exchange_if_unused(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2))
    name = ctx.exchange(s, 1, "used")
    q = _queue(s)
    s.rpc(1, s.method("queue.bind", queue=q, exchange=name, routing_key="k"))
    s.send_method(1, s.method("exchange.delete", exchange=name, if_unused=True))
    s.expect_channel_close(1, 406)
    s.rpc(2, s.method("exchange.delete", exchange=name))
    return None


@check("exchange.exchange-to-exchange", "RabbitMQ extension: exchange.bind / exchange.unbind",
       "exchange.bind routes from a source exchange through a destination exchange to a "
       "queue; exchange.unbind stops it")
def _e2e(ctx: CheckContext) -> str | None:
    ctx.need_capability("exchange_exchange_bindings")
    s = ctx.open()
    src = ctx.exchange(s, 1, "src", "fanout")
    dst = ctx.exchange(s, 1, "dst", "direct")
    s.rpc(1, s.method("exchange.bind", destination=dst, source=src, routing_key=""))
    q = _queue(s)
    s.rpc(1, s.method("queue.bind", queue=q, exchange=dst, routing_key="k"))
    _publish(s, 1, b"via-e2e", exchange=src, routing_key="k")
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == b"via-e2e", f"the message did not arrive: {got!r}")
    _expect(got is not None and got[0].exchange == src, "the delivery names the wrong exchange")
    s.rpc(1, s.method("exchange.unbind", destination=dst, source=src, routing_key=""))
    _publish(s, 1, b"after-unbind", exchange=src, routing_key="k")
    _expect(_get(s, 1, q) is None, "a message still arrived after exchange.unbind")
    return None


# =========================================================================== queue


@check("queue.declare-server-named", "0-9-1 §2.2.7, queue.declare",
       "queue.declare with an empty name gets a server-generated name and zero counts")
def _queue_server_named(ctx: CheckContext) -> str | None:
    s = ctx.open()
    ok = s.rpc(1, s.method("queue.declare", queue="", exclusive=True))
    _expect(bool(ok.queue), "declare-ok carries no queue name")
    _expect((ok.message_count, ok.consumer_count) == (0, 0),
            f"counts {ok.message_count}, {ok.consumer_count}")
    return f"name {ok.queue}"


@check("queue.bind-purge-delete", "0-9-1 queue.bind / unbind / purge / delete",
       "bind routes messages, passive declare counts them, purge-ok and delete-ok report the "
       "counts, unbind stops routing")
def _queue_lifecycle(ctx: CheckContext) -> str | None:
    s = ctx.open()
    ex = ctx.exchange(s, 1, "route")
    q = _queue(s, queue=ctx.name("q"), exclusive=False, auto_delete=False)
    try:
        s.rpc(1, s.method("confirm.select"))
        s.rpc(1, s.method("queue.bind", queue=q, exchange=ex, routing_key="rk"))
        for i in range(3):
            _publish_confirmed(s, 1, b"m%d" % i, exchange=ex, routing_key="rk")
        counted = _count(s, 1, q)
        _expect(counted == 3, f"passive declare counts {counted} messages, not 3")
        purged = s.rpc(1, s.method("queue.purge", queue=q)).message_count
        _expect(purged == 3, f"purge-ok says {purged}")
        s.rpc(1, s.method("queue.unbind", queue=q, exchange=ex, routing_key="rk"))
        _publish_confirmed(s, 1, b"lost", exchange=ex, routing_key="rk")
        _publish_confirmed(s, 1, b"kept", routing_key=q)
        counted = _count(s, 1, q)
        _expect(counted == 1, f"after unbind the queue holds {counted} messages, not 1")
    finally:
        deleted = s.rpc(1, s.method("queue.delete", queue=q)).message_count
    _expect(deleted == 1, f"delete-ok says {deleted} messages")
    return None


@check("queue.exclusive-locked", "0-9-1 queue.declare exclusive, constant resource-locked (405)",
       "another connection using an exclusive queue gets 405 RESOURCE_LOCKED")
def _exclusive(ctx: CheckContext) -> str | None:
    owner = ctx.open()
    q = _queue(owner)
    other = ctx.open()
    other.send_method(1, other.method("queue.declare", queue=q, passive=True))
    other.expect_channel_close(1, 405)
    other.open_channel(2)
    other.send_method(2, other.method("basic.get", queue=q))
    other.expect_channel_close(2, 405)
    return None


@check("queue.reserved-name", "0-9-1 queue.declare queue (rule 'reserved')",
       "declaring a queue named amq.*: 403 ACCESS_REFUSED")
def _queue_reserved(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("queue.declare", queue="amq." + ctx.name("q")))
    s.expect_channel_close(1, 403)
    return None


@check("queue.delete-if-empty", "0-9-1 queue.delete if-empty",
       "queue.delete(if-empty) of a queue holding messages: 406 PRECONDITION_FAILED")
def _if_empty(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    s.rpc(1, s.method("confirm.select"))
    _publish_confirmed(s, 1, b"x", routing_key=q)
    s.send_method(1, s.method("queue.delete", queue=q, if_empty=True))
    s.expect_channel_close(1, 406)
    return None


# =========================================================================== basic


@check("basic.publish-get", "0-9-1 §2.2.8, basic.get / get-ok / get-empty",
       "basic.get returns messages in order with message-count, then get-empty")
def _publish_get(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    for body in (b"one", b"two"):
        _publish(s, 1, body, routing_key=q)
    first = _get(s, 1, q)
    _expect(first is not None and first[2] == b"one" and first[0].message_count == 1,
            f"first get: {first!r}")
    second = _get(s, 1, q, no_ack=False)
    _expect(second is not None and second[2] == b"two", f"second get: {second!r}")
    assert second is not None
    s.send_method(1, s.method("basic.ack", delivery_tag=second[0].delivery_tag))
    _expect(_get(s, 1, q) is None, "a third get did not return get-empty")
    return None


@check("basic.consume-cancel", "0-9-1 basic.consume / deliver / cancel",
       "a consumer gets basic.deliver with its tag; after basic.cancel / cancel-ok nothing "
       "more is delivered")
def _consume_cancel(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    tag = s.rpc(1, s.method("basic.consume", queue=q, consumer_tag="conformance", no_ack=True)).consumer_tag
    _expect(tag == "conformance", f"consume-ok names consumer {tag!r}")
    _publish(s, 1, b"hello", routing_key=q)
    method, _props, body = s.expect_content("basic.deliver", 1)
    _expect(method.consumer_tag == tag and body == b"hello", f"deliver {method!r} {body!r}")
    s.rpc(1, s.method("basic.cancel", consumer_tag=tag))
    _publish(s, 1, b"after", routing_key=q)
    s.expect_nothing(0.3)
    got = _get(s, 1, q)
    _expect(got is not None and got[2] == b"after", "the message after cancel is not in the queue")
    return None


@check("basic.qos-prefetch-count", "0-9-1 basic.qos prefetch-count",
       "with prefetch-count 1 the server sends one unacknowledged delivery at a time")
def _prefetch(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    s.rpc(1, s.method("basic.qos", prefetch_count=1))
    for i in range(3):
        _publish(s, 1, b"p%d" % i, routing_key=q)
    s.rpc(1, s.method("basic.consume", queue=q, consumer_tag="pf"))
    first = s.expect_content("basic.deliver", 1)[0]
    s.expect_nothing(0.3)
    s.send_method(1, s.method("basic.ack", delivery_tag=first.delivery_tag))
    s.expect_content("basic.deliver", 1)
    return None


@check("basic.qos-prefetch-size", "0-9-1 basic.qos prefetch-size",
       "basic.qos with a prefetch-size is accepted (the server may ignore the limit)",
       deviation="RabbitMQ does not implement prefetch-size: connection.close 540 NOT_IMPLEMENTED")
def _prefetch_size(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.qos", prefetch_size=65536))
    item = s.receive()
    if isinstance(item, MethodFrame) and item.method.NAME == "basic.qos-ok":
        return None
    _expect(_is_close(item, 540), f"expected basic.qos-ok; got {describe(item)}")
    s.send_method(0, s.method("connection.close-ok"))
    ctx.deviation(f"540 {item.method.reply_text}")
    return None


@check("basic.reject-nack-recover", "0-9-1 basic.reject / basic.recover; RabbitMQ basic.nack",
       "reject(requeue), nack(requeue), recover(requeue) and recover-async redeliver with "
       "redelivered set")
def _reject_recover(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    _publish(s, 1, b"again", routing_key=q)
    s.rpc(1, s.method("basic.consume", queue=q, consumer_tag="rr"))
    m = s.expect_content("basic.deliver", 1)[0]
    _expect(not m.redelivered, "the first delivery is marked redelivered")
    steps = [("basic.reject", {"requeue": True}), ("basic.nack", {"requeue": True})]
    for name, fields in steps:
        s.send_method(1, s.method(name, delivery_tag=m.delivery_tag, **fields))
        m = s.expect_content("basic.deliver", 1)[0]
        _expect(m.redelivered, f"after {name} the delivery is not marked redelivered")
    s.rpc(1, s.method("basic.recover", requeue=True))
    m = s.expect_content("basic.deliver", 1)[0]
    _expect(m.redelivered, "after basic.recover the delivery is not marked redelivered")
    s.send_method(1, s.method("basic.recover-async", requeue=True))
    m = s.expect_content("basic.deliver", 1)[0]
    _expect(m.redelivered, "after basic.recover-async the delivery is not marked redelivered")
    s.send_method(1, s.method("basic.ack", delivery_tag=m.delivery_tag))
    return None


@check("basic.ack-unknown-tag", "0-9-1 basic.ack delivery-tag, constant precondition-failed (406)",
       "acknowledging a delivery tag never delivered: channel.close 406 PRECONDITION_FAILED")
def _ack_unknown(ctx: CheckContext) -> str | None:
    s = ctx.open()
    s.send_method(1, s.method("basic.ack", delivery_tag=42))
    s.expect_channel_close(1, 406)
    return None


@check("basic.consume-duplicate-tag", "0-9-1 basic.consume consumer-tag, constant not-allowed (530)",
       "reusing a consumer tag on the channel: connection.close 530 NOT_ALLOWED")
def _dup_tag(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    s.rpc(1, s.method("basic.consume", queue=q, consumer_tag="dup"))
    s.send_method(1, s.method("basic.consume", queue=q, consumer_tag="dup"))
    s.expect_close(530)
    return None


@check("basic.publish-missing-exchange", "0-9-1 basic.publish exchange (rule 'must-exist')",
       "publishing to an exchange that does not exist: channel.close 404 NOT_FOUND")
def _publish_missing(ctx: CheckContext) -> str | None:
    s = ctx.open()
    _publish(s, 1, b"x", exchange=ctx.name("missing"), routing_key="k")
    s.expect_channel_close(1, 404)
    return None


@check("basic.mandatory-return", "0-9-1 basic.publish mandatory, basic.return",
       "an unroutable mandatory publish comes back as basic.return 312 NO_ROUTE with its "
       "content")
def _mandatory(ctx: CheckContext) -> str | None:
    s = ctx.open()
    _publish(s, 1, b"bounce", routing_key=ctx.name("nowhere"), mandatory=True)
    method, _props, body = s.expect_content("basic.return", 1)
    _expect(method.reply_code == 312 and body == b"bounce", f"basic.return {method!r} {body!r}")
    return None


@check("basic.immediate", "0-9-1 basic.publish immediate",
       "an immediate publish to a queue without consumers comes back as basic.return 313",
       deviation="RabbitMQ (since 3.0) does not implement immediate: connection.close 540 "
                 "NOT_IMPLEMENTED")
def _immediate(ctx: CheckContext) -> str | None:
    s = ctx.open()
    q = _queue(s)
    _publish(s, 1, b"now", routing_key=q, immediate=True)
    item = s.receive()
    returned = _method(item, "basic.return", 1)
    if returned is not None:
        _expect(returned.reply_code == 313, f"basic.return {returned!r}")
        return None
    _expect(_is_close(item, 540), f"expected basic.return 313; got {describe(item)}")
    s.send_method(0, s.method("connection.close-ok"))
    ctx.deviation(f"540 {item.method.reply_text}")
    return None


@check("basic.server-cancel", "RabbitMQ extension: consumer cancel notification",
       "when a consumer's queue is deleted the server sends basic.cancel to the consumer")
def _server_cancel(ctx: CheckContext) -> str | None:
    ctx.need_capability("consumer_cancel_notify")
    s = ctx.open(channels=(1, 2))
    q = _queue(s)
    s.rpc(1, s.method("basic.consume", queue=q, consumer_tag="doomed"))
    s.send_method(2, s.method("queue.delete", queue=q))
    seen: list[str] = []
    while len(seen) < 2:
        item = s.receive()
        if not isinstance(item, MethodFrame):
            raise ExpectationFailed(f"expected basic.cancel and queue.delete-ok; got {describe(item)}", item)
        cancel = _method(item, "basic.cancel", 1)
        if cancel is not None:
            _expect(cancel.consumer_tag == "doomed", f"cancel for {cancel.consumer_tag!r}")
            if not getattr(cancel, "no_wait", False):
                s.send_method(1, s.method("basic.cancel-ok", consumer_tag="doomed"))
        elif not (item.channel == 2 and item.method.NAME == "queue.delete-ok"):
            raise ExpectationFailed(f"unexpected {describe(item)}", item)
        seen.append(item.method.NAME)
    return None


# =========================================================================== tx


@check("tx.commit-rollback", "0-9-1 §2.2.9, tx.select / commit / rollback",
       "publishes in a transaction take effect on commit and are discarded on rollback; "
       "commit outside a transaction: 406")
def _tx(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2))
    q = _queue(s)
    s.rpc(1, s.method("tx.select"))
    _publish(s, 1, b"rolled-back", routing_key=q)
    _expect(_count(s, 2, q) == 0, "an uncommitted publish is visible")
    s.rpc(1, s.method("tx.rollback"))
    _expect(_count(s, 2, q) == 0, "a rolled-back publish arrived")
    _publish(s, 1, b"committed", routing_key=q)
    s.rpc(1, s.method("tx.commit"))
    _expect(_count(s, 2, q) == 1, "a committed publish did not arrive")
    s.send_method(2, s.method("tx.commit"))
    s.expect_channel_close(2, 406)
    return None


# =========================================================================== confirms


@check("confirms.ordering", "RabbitMQ extension: publisher confirms",
       "2000 publishes in confirm mode: every delivery tag 1..2000 confirmed exactly once, in "
       "order, 'multiple' covering all earlier tags")
def _confirm_order(ctx: CheckContext) -> str | None:
    ctx.need_capability("publisher_confirms")
    s = ctx.open()
    q = _queue(s)
    s.rpc(1, s.method("confirm.select"))
    n = 2000
    method = s.method("basic.publish", routing_key=q)
    props = s.spec.Basic.Properties()
    one = content_frames(1, method, props, b"c" * 64, 131072)
    assert isinstance(one, bytes)
    s.send_raw(one * n, note=f"{n} publishes")
    confirmed: list[int] = []
    multiples = acks = 0
    last = 0
    while last < n:
        ack = s.expect_method("basic.ack", 1)
        acks += 1
        tag = ack.delivery_tag
        _expect(tag > last, f"ack for tag {tag} after tag {last}: out of order or repeated")
        if ack.multiple:
            multiples += 1
            confirmed.extend(range(last + 1, tag + 1))
        else:
            _expect(tag == last + 1, f"single ack for tag {tag} leaves {last + 1}..{tag - 1} unconfirmed")
            confirmed.append(tag)
        last = tag
    _expect(confirmed == list(range(1, n + 1)), "the confirms do not cover 1..n exactly once")
    s.expect_nothing(0.2)
    return f"{n} publishes confirmed by {acks} basic.ack ({multiples} with multiple)"


@check("confirms.nack", "RabbitMQ extension: publisher confirms (basic.nack)",
       "a publish the queue refuses (x-overflow reject-publish) is nacked; the others acked")
def _confirm_nack(ctx: CheckContext) -> str | None:
    ctx.need_capability("basic.nack")
    s = ctx.open()
    q = _queue(s, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    s.rpc(1, s.method("confirm.select"))
    for _ in range(2):
        _publish(s, 1, b"x", routing_key=q)
    ack = s.expect_method("basic.ack", 1)
    _expect(ack.delivery_tag == 1, f"first confirm {ack!r}")
    nack = s.expect_method("basic.nack", 1)
    _expect(nack.delivery_tag == 2, f"second confirm {nack!r}")
    return None


@check("confirms.returns-before-acks", "RabbitMQ extension: publisher confirms",
       "in confirm mode, an unroutable mandatory publish's basic.return comes before its ack")
def _return_before_ack(ctx: CheckContext) -> str | None:
    ctx.need_capability("publisher_confirms")
    s = ctx.open()
    s.rpc(1, s.method("confirm.select"))
    _publish(s, 1, b"r", routing_key=ctx.name("nowhere"), mandatory=True)
    _publish(s, 1, b"u", routing_key=ctx.name("nowhere"))
    ret = s.expect_content("basic.return", 1)
    _expect(ret[2] == b"r", "the wrong message was returned")
    first = s.expect_method("basic.ack", 1)
    if first.delivery_tag == 1 and not first.multiple:
        second = s.expect_method("basic.ack", 1)
        _expect(second.delivery_tag == 2, f"second ack {second!r}")
    else:
        _expect(first.delivery_tag == 2 and first.multiple, f"ack {first!r}")
    return None


@check("confirms.tx-exclusive", "RabbitMQ extension: publisher confirms",
       "confirm.select on a transactional channel, and tx.select on a confirm channel: 406")
def _confirm_tx(ctx: CheckContext) -> str | None:
    ctx.need_capability("publisher_confirms")
    s = ctx.open(channels=(1, 2))
    s.rpc(1, s.method("tx.select"))
    s.send_method(1, s.method("confirm.select"))
    s.expect_channel_close(1, 406)
    s.rpc(2, s.method("confirm.select"))
    s.send_method(2, s.method("tx.select"))
    s.expect_channel_close(2, 406)
    return None


# =========================================================================== rabbitmq
#
# RabbitMQ features built on 0-9-1 that clients reach through plain methods, arguments and
# headers.  Each checks what RabbitMQ documents; a broker without the feature (no
# capability announced) skips the check.


def _get_soon(ctx: CheckContext, s: RawSession, channel: int, queue: str, no_ack: bool = True
              ) -> tuple[Any, Any, bytes]:
    """basic.get until a message is there: what another connection published, or what
    the broker dead-letters, lands a moment later."""
    deadline = time.monotonic() + ctx.timeout
    while True:
        got = _get(s, channel, queue, no_ack=no_ack)
        if got is not None:
            return got
        _expect(time.monotonic() < deadline, f"nothing arrived in {queue}")
        time.sleep(0.02)


def _durable_queue(ctx: CheckContext, s: RawSession, channel: int, what: str, queue_type: str,
                   **arguments: Any) -> str:
    """A durable queue of ``queue_type`` ("quorum", "stream"), deleted when the battery ends."""
    name = ctx.name(what)
    s.rpc(channel, s.method("queue.declare", queue=name, durable=True,
                            arguments={"x-queue-type": queue_type, **arguments}))
    ctx._battery.cleanup.append(("queue", name))
    return name


@check("rabbitmq.direct-reply-to", "RabbitMQ extension: direct reply-to (amq.rabbitmq.reply-to)",
       "a request published with reply-to amq.rabbitmq.reply-to on a channel consuming from it "
       "(no-ack) reaches the server with a reply-to of its own; a reply published there is "
       "delivered to that consumer; consuming it with acks: 406")
def _direct_reply_to(ctx: CheckContext) -> str | None:
    ctx.need_capability("direct_reply_to")
    client = ctx.open(channels=(1, 2))
    server = ctx.open()
    requests = _queue(server)
    pseudo = "amq.rabbitmq.reply-to"
    client.rpc(1, client.method("basic.consume", queue=pseudo, consumer_tag="rpc", no_ack=True))
    props = client.spec.Basic.Properties
    _publish(client, 1, b"ping", routing_key=requests,
             properties=props(reply_to=pseudo, correlation_id="c-1"))
    _, request, body = _get_soon(ctx, server, 1, requests)
    _expect(body == b"ping", f"request body {body!r}")
    reply_to = request.reply_to or ""
    _expect(reply_to.startswith(pseudo + "."), f"the request's reply-to is {reply_to!r}")
    _publish(server, 1, b"pong", routing_key=reply_to,
             properties=server.spec.Basic.Properties(correlation_id=request.correlation_id))
    method, reply, body = client.expect_content("basic.deliver", 1)
    _expect(method.consumer_tag == "rpc" and body == b"pong" and reply.correlation_id == "c-1",
            f"reply {method!r} {reply!r} {body!r}")
    _expect(method.routing_key == reply_to, f"the reply was routed with {method.routing_key!r}")
    client.send_method(2, client.method("basic.consume", queue=pseudo, no_ack=False))
    client.expect_channel_close(2, 406)
    return None


@check("rabbitmq.consumer-priorities", "RabbitMQ extension: consumer priorities (x-priority)",
       "of two consumers on a queue, the one with the higher x-priority gets every message "
       "while it can take them")
def _consumer_priorities(ctx: CheckContext) -> str | None:
    ctx.need_capability("consumer_priorities")
    s = ctx.open()
    q = _queue(s)
    for tag, priority in (("low", 1), ("high", 10)):
        s.rpc(1, s.method("basic.consume", queue=q, consumer_tag=tag, no_ack=True,
                          arguments={"x-priority": priority}))
    for n in range(5):
        _publish(s, 1, b"m%d" % n, routing_key=q)
    tags = [s.expect_content("basic.deliver", 1)[0].consumer_tag for _ in range(5)]
    _expect(tags == ["high"] * 5, f"deliveries went to {tags}")
    return None


@check("rabbitmq.dead-lettering", "RabbitMQ extension: dead letter exchanges, per-message TTL",
       "a rejected message and an expired one (expiration 0) are republished to the queue's "
       "dead-letter exchange with an x-death header saying why")
def _dead_lettering(ctx: CheckContext) -> str | None:
    s = ctx.open()
    dead = _queue(s)
    q = _queue(s, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    props = s.spec.Basic.Properties
    _publish(s, 1, b"rejected", routing_key=q)
    got = _get_soon(ctx, s, 1, q, no_ack=False)
    s.send_method(1, s.method("basic.reject", delivery_tag=got[0].delivery_tag, requeue=False))
    _publish(s, 1, b"expired", routing_key=q, properties=props(expiration="0"))
    reasons = []
    for expected in (b"rejected", b"expired"):
        _, headers_of, body = _get_soon(ctx, s, 1, dead)
        _expect(body == expected, f"dead-lettered {body!r}, expected {expected!r}")
        deaths = (headers_of.headers or {}).get("x-death")
        if not (isinstance(deaths, list) and len(deaths) == 1 and isinstance(deaths[0], dict)):
            raise ExpectationFailed(f"x-death is {deaths!r}, not one entry")
        death = deaths[0]
        _expect(death.get("queue") == q and death.get("count") == 1
                and death.get("routing-keys") == [q], f"x-death entry {death!r}")
        reasons.append(death.get("reason"))
    _expect(reasons == ["rejected", "expired"], f"x-death reasons {reasons}")
    return None


@check("rabbitmq.sender-selected-distribution", "RabbitMQ extension: CC and BCC headers",
       "a message with CC and BCC headers (arrays of strings) is also routed with those keys; "
       "BCC is removed before delivery")
def _sender_selected(ctx: CheckContext) -> str | None:
    s = ctx.open()
    main, cc, bcc = _queue(s), _queue(s), _queue(s)
    props = s.spec.Basic.Properties(headers={"CC": [cc], "BCC": [bcc], "app": "x"})
    _publish(s, 1, b"copy", routing_key=main, properties=props)
    for q in (main, cc, bcc):
        method, got, body = _get_soon(ctx, s, 1, q)
        _expect(body == b"copy" and method.routing_key == main, f"{q}: {method!r} {body!r}")
        _expect(got.headers == {"CC": [cc], "app": "x"}, f"{q}: headers {got.headers!r}")
    return None


@check("rabbitmq.quorum-queue", "RabbitMQ extension: quorum queues (x-queue-type quorum)",
       "a quorum queue must be durable (406 otherwise); a requeued message comes back with "
       "redelivered set and x-delivery-count counting its deliveries")
def _quorum(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2))
    q = _durable_queue(ctx, s, 1, "quorum", "quorum")
    _publish(s, 1, b"again", routing_key=q)
    counts = []
    for n in range(3):
        method, props, body = _get_soon(ctx, s, 1, q, no_ack=False)
        _expect(body == b"again" and method.redelivered == (n > 0), f"delivery {n}: {method!r}")
        counts.append((props.headers or {}).get("x-delivery-count"))
        s.send_method(1, s.method("basic.reject", delivery_tag=method.delivery_tag, requeue=True))
    _expect(counts[1:] == [1, 2], f"x-delivery-count {counts}")
    s.send_method(2, s.method("queue.declare", queue=ctx.name("transient"),
                              arguments={"x-queue-type": "quorum"}))
    s.expect_channel_close(2, 406)
    return f"x-delivery-count {counts}"


@check("rabbitmq.stream-queue", "RabbitMQ extension: streams (x-queue-type stream)",
       "a stream is read from the offset a consumer names (x-stream-offset first, or a number), "
       "each delivery carrying its x-stream-offset; consuming without a prefetch count: 406")
def _stream(ctx: CheckContext) -> str | None:
    s = ctx.open(channels=(1, 2))
    q = _durable_queue(ctx, s, 1, "stream", "stream")
    s.rpc(1, s.method("confirm.select"))
    for n in range(3):
        _publish_confirmed(s, 1, b"s%d" % n, routing_key=q)
    s.rpc(1, s.method("basic.qos", prefetch_count=10))
    for tag, offset, expected in (("first", "first", [0, 1, 2]), ("numbered", 1, [1, 2])):
        s.rpc(1, s.method("basic.consume", queue=q, consumer_tag=tag,
                          arguments={"x-stream-offset": offset}))
        seen = []
        for _ in expected:
            method, props, body = s.expect_content("basic.deliver", 1)
            _expect(method.consumer_tag == tag, f"delivery for {method.consumer_tag!r}")
            position = (props.headers or {}).get("x-stream-offset")
            _expect(isinstance(position, int) and body == b"s%d" % position,
                    f"offset {position!r} carries {body!r}")
            seen.append(position)
            s.send_method(1, s.method("basic.ack", delivery_tag=method.delivery_tag))
        _expect(seen == expected, f"from {offset!r}: offsets {seen}")
        s.rpc(1, s.method("basic.cancel", consumer_tag=tag))
    s.send_method(2, s.method("basic.consume", queue=q))
    s.expect_channel_close(2, 406)
    return None


# =========================================================================== auth


@check("auth.bad-password", "0-9-1 connection.start-ok; RabbitMQ authentication_failure_close",
       "a refused password: connection.close 403 ACCESS_REFUSED when the client announces "
       "authentication_failure_close, then the socket is closed")
def _bad_password(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.expect_method("connection.start")
    s.start_ok(password=s.params.password + "-wrong")
    close = s.expect_close(403, timeout=REFUSAL_TIMEOUT)
    s.expect_eof(REFUSAL_TIMEOUT)
    return close.reply_text  # type: ignore[no-any-return]


@check("auth.bad-password-no-capability", "0-9-1 §2.2.4, connection.start-ok",
       "a refused password from a client without authentication_failure_close: the socket is "
       "closed, no connection.tune")
def _bad_password_plain(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.expect_method("connection.start")
    user = s.params.username.encode()
    s.send_method(0, s.method("connection.start-ok", client_properties={"product": "x"},
                              mechanism="PLAIN", response=b"\0" + user + b"\0wrong-" + os.urandom(4).hex().encode(),
                              locale="en_US"))
    item = s.receive(REFUSAL_TIMEOUT)
    if _is_close(item, 403):
        s.send_method(0, s.method("connection.close-ok"))
        s.expect_eof(REFUSAL_TIMEOUT)
        return "connection.close 403 all the same"
    _expect(item is EOF, f"expected the connection to be dropped; got {describe(item)}")
    return None


@check("auth.unknown-mechanism", "0-9-1 connection.start-ok mechanism (rule 'validity')",
       "a mechanism the server did not offer: the connection is closed without further data")
def _bad_mechanism(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    s.expect_method("connection.start")
    s.start_ok(mechanism="NO-SUCH-MECHANISM", response=b"x")
    item = s.receive(REFUSAL_TIMEOUT)
    _expect(item is EOF, f"expected the connection to be dropped; got {describe(item)}")
    return None


@check("auth.amqplain", "0-8/0-9-1 SASL mechanism AMQPLAIN (RabbitMQ)",
       "AMQPLAIN credentials (a field table) open the connection")
def _amqplain(ctx: CheckContext) -> str | None:
    s = ctx.session()
    s.send_header()
    start = s.expect_method("connection.start")
    if b"AMQPLAIN" not in bytes(start.mechanisms).split():
        ctx.skip("the server does not offer AMQPLAIN")
    s.start = start
    s.start_ok(mechanism="AMQPLAIN")
    s.tune = s.expect_method("connection.tune")
    s.tune_ok()
    s.open()
    s.expect_method("connection.open-ok", 0)
    return None


# =========================================================================== coverage

#: 0-9-1 methods the battery cannot make RabbitMQ exchange, and why.
NOT_EXERCISED = {
    "connection.secure": "RabbitMQ's PLAIN and AMQPLAIN need no challenge",
    "connection.secure-ok": "RabbitMQ's PLAIN and AMQPLAIN need no challenge",
    "connection.blocked": "needs a resource alarm on the broker",
    "connection.unblocked": "needs a resource alarm on the broker",
}


@check("coverage.every-method", "0-9-1 §2.2 (every class and method)",
       "the battery as a whole sent or received every 0-9-1 method (except those that need a "
       "broker alarm or a challenge mechanism)")
def _coverage(ctx: CheckContext) -> str | None:
    battery = ctx._battery
    if not battery.complete:
        ctx.skip("only meaningful when the whole battery runs")
    wanted = {cls.NAME for cls in amqp0_9_1.METHODS.values()} - set(NOT_EXERCISED)
    missing = sorted(wanted - battery.methods)
    _expect(not missing, f"never exchanged: {', '.join(missing)}")
    return f"{len(wanted)} methods; not exercised: {', '.join(sorted(NOT_EXERCISED))}"


# =========================================================================== running


def select_checks(patterns: Iterable[str] = ()) -> list[Check]:
    """The checks whose name matches one of the glob ``patterns`` (all when none given);
    a pattern without wildcard also matches as a prefix (``frames`` = ``frames.*``)."""
    pats = list(patterns)
    if not pats:
        return list(CHECKS)
    chosen = []
    for c in CHECKS:
        for p in pats:
            if fnmatch.fnmatchcase(c.name, p) or (not any(ch in p for ch in "*?[")
                                                   and (c.name == p or c.name.startswith(p + "."))):
                chosen.append(c)
                break
    return chosen


def _preflight(url: str, timeout: float) -> dict[str, Any]:
    """Connect once; a broker that cannot be reached or refuses us stops the battery."""
    s = RawSession(url, protocol="0-9-1", timeout=timeout)
    try:
        s.connect()
    except OSError as exc:
        raise ConformanceError(f"cannot connect to {s.params.host}:{s.params.port}: {exc}") from None
    try:
        s.send_header()
        first = s.receive()
        if not (isinstance(first, MethodFrame) and first.method.NAME == "connection.start"):
            raise ConformanceError(f"the broker did not answer with connection.start ({describe(first)})")
        s.start = first.method
        s.start_ok()
        item = s.receive()
        if _is_close(item, 403) or item is EOF:
            raise ConformanceError(
                f"the broker refused the credentials of user {s.params.username!r}")
        if not (isinstance(item, MethodFrame) and item.method.NAME == "connection.tune"):
            raise ConformanceError(f"expected connection.tune, got {describe(item)}")
        s.tune = item.method
        s.tune_ok()
        s.open()
        item = s.receive()
        if not (isinstance(item, MethodFrame) and item.method.NAME == "connection.open-ok"):
            detail = describe(item) if item is not EOF else "the connection was closed"
            raise ConformanceError(f"connection.open of vhost {s.params.virtual_host!r} failed: {detail}")
        s.close_connection()
        return dict(s.start.server_properties or {})
    except ExpectationFailed as exc:
        raise ConformanceError(str(exc).split("\n")[0]) from None
    finally:
        s.close()


def _run_one(battery: _Battery, c: Check) -> CheckResult:
    ctx = CheckContext(battery, c)
    started = time.monotonic()
    status, note = "pass", ""
    try:
        note = c.func(ctx) or ""
    except Skip as exc:
        status, note = "skip", str(exc)
    except ExpectationFailed as exc:
        status, note = "fail", str(exc)
    except AssertionError as exc:
        status, note = "fail", str(exc) or "assertion failed"
    except Exception as exc:  # noqa: BLE001 - any error in a check is that check's failure
        status, note = "fail", f"{type(exc).__name__}: {exc}"
    finally:
        ctx.close()
    deviation = ctx.deviated if status == "pass" else None
    return CheckResult(
        name=c.name, spec=c.spec, description=c.description, status=status,
        deviation=deviation, note=note, duration=time.monotonic() - started,
        documented_deviation=c.deviation,
    )


def check_protocol(url: str) -> None:
    """Raise :class:`ValueError` when ``url`` asks for another protocol than 0-9-1.

    Each check picks its version itself (0-9-1, and 0-8 where it says so): a URL asking
    for 0-8 would be ignored, and the report read as a 0-8 result."""
    if parse_url(url).protocol != "0-9-1":
        raise ValueError(
            "the conformance battery speaks AMQP 0-9-1 (its 0-8 check is "
            "negotiation.handshake-0-8): leave ?protocol=0-8 out of the URL"
        )


def run_checks(
    url: str,
    patterns: Iterable[str] = (),
    *,
    jobs: int = 8,
    timeout: float = 5.0,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Run the checks matching ``patterns`` (all by default) against the broker at ``url``.

    Checks run ``jobs`` at a time; ``on_result`` is called (from the calling thread, in
    completion order) as each finishes.  Raises :class:`ConformanceError` when the broker
    cannot be reached or refuses the URL's credentials; a failing check is a result, not an
    exception; :class:`ValueError` for a URL with ``?protocol=0-8`` (the battery is
    0-9-1's, with a 0-8 handshake check of its own).  Resources the checks declared
    (exchanges) are deleted at the end.
    """
    check_protocol(url)
    chosen = select_checks(patterns)
    battery = _Battery(url, timeout)
    started = time.monotonic()
    battery.server_properties = _preflight(url, timeout)
    meta = [c for c in chosen if c.group == "coverage"]
    regular = [c for c in chosen if c.group != "coverage"]
    battery.complete = len(regular) == sum(1 for c in CHECKS if c.group != "coverage")
    results: dict[str, CheckResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="conformance") as pool:
            futures = [pool.submit(_run_one, battery, c) for c in regular]
            for future in as_completed(futures):
                result = future.result()
                results[result.name] = result
                if on_result is not None:
                    on_result(result)
        for c in meta:
            result = _run_one(battery, c)
            results[result.name] = result
            if on_result is not None:
                on_result(result)
    finally:
        _cleanup(battery)
    ordered = [results[c.name] for c in chosen if c.name in results]
    props = battery.server_properties
    return Report(
        results=ordered,
        broker=f"{props.get('product', '?')} {props.get('version', '')}".strip(),
        url=_masked(url),
        duration=time.monotonic() - started,
    )


def _cleanup(battery: _Battery) -> None:
    if not battery.cleanup:
        return
    s = RawSession(battery.url, protocol="0-9-1", timeout=battery.timeout)
    try:
        s.handshake()
        s.open_channel(1)
        for kind, name in battery.cleanup:
            s.rpc(1, s.method(f"{kind}.delete", **{kind: name}))
        s.close_connection()
    except (OSError, ExpectationFailed):
        pass  # best effort: the names are unique to this run
    finally:
        s.close()


def _masked(url: str) -> str:
    try:
        return parse_url(url).url()
    except ValueError:
        return "<invalid URL>"
