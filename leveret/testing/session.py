"""A scripted raw AMQP session, for testing brokers (and leveret) at the byte level.

:class:`RawSession` opens a TCP connection and lets a test script say, frame by frame, what
goes on the wire -- including what no correct client would send: a body frame before its
header, a frame on the wrong channel, a frame bigger than ``frame_max``, a bad frame-end
octet, bytes that are not a frame at all -- and what it expects back, each expectation with a
timeout::

    with RawSession(url) as s:
        s.handshake()
        s.open_channel(1)
        s.send_frame(body_frame(1, b"x"))       # a body with no method and header before it
        s.expect_close(505)                     # connection.close 505 UNEXPECTED_FRAME

Nothing here follows the protocol on the session's behalf: no heartbeats are sent, no
close-ok is answered (except by :meth:`RawSession.expect_close` and
:meth:`RawSession.expect_channel_close`, which do it because it is nearly always wanted), no
frame order is enforced.  Frames from the broker are parsed with the wire layer's
:class:`~leveret.wire.frames.FrameReader`, with a large ``frame_max`` so that whatever the
broker sends is readable.  Heartbeat frames from the broker are skipped by the expectations
(``skip_heartbeats=False`` keeps them); every frame, sent or received, is kept in
:attr:`RawSession.frames` for the failure messages.

An expectation that is not met raises :class:`ExpectationFailed` (an ``AssertionError``),
whose message says what was expected, what came instead and the last frames exchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Iterable, Mapping, NoReturn, Union

from ..client._shared import ssl_context
from ..client.url import ConnectionParameters, parse_url
from ..wire import SPECS
from ..wire._base import ContentProperties, Method
from ..wire.errors import RemoteProtocolError
from ..wire.fields import encode_table
from ..wire.frames import (
    HEARTBEAT_FRAME,
    NEED_DATA,
    BodyFrame,
    Frame,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    content_frames,
    encode_frame,
    method_frame,
)

__all__ = [
    "RawSession",
    "ExpectationFailed",
    "ProtocolHeader",
    "EOF",
    "LogEntry",
    "MethodSpec",
    "PROTOCOLS",
    "raw_frame",
    "describe",
]

#: The protocol versions a session can speak, by name.
PROTOCOLS: Mapping[str, ModuleType] = SPECS

#: Largest frame the session accepts from the broker (it only ever tunes far lower).
READ_FRAME_MAX = 1 << 28

DEFAULT_TIMEOUT = 5.0

_frame_header = struct.Struct(">BHI")

#: What ``expect_method`` accepts: a dotted name ("basic.deliver"), a generated method class
#: of either version, or a tuple of them (any one matches).
MethodSpec = Union[str, type, tuple[Union[str, type], ...]]


def _readable(sock: socket.socket, seconds: float) -> bool:
    """Wait at most ``seconds`` for ``sock`` to be readable: poll() where there is one
    (select() cannot watch descriptors numbered past 1023), select() elsewhere."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(seconds * 1000.0))
    return bool(select.select([sock], [], [], seconds)[0])


class ExpectationFailed(AssertionError):
    """An expectation of a :class:`RawSession` was not met.

    ``received`` is what came instead (a frame, a :class:`ProtocolHeader`, :data:`EOF`, or
    ``None`` when nothing came before the timeout).  The message includes the transcript's
    last entries.
    """

    def __init__(self, message: str, received: Any = None) -> None:
        super().__init__(message)
        self.received = received


@dataclass(frozen=True)
class ProtocolHeader:
    """The broker answered with a protocol header of its own (it refuses our version)."""

    data: bytes

    @property
    def version(self) -> tuple[int, int, int, int]:
        """The four octets after ``AMQP``."""
        return tuple(self.data[4:8])  # type: ignore[return-value]


class _EOF:
    """Type of :data:`EOF`."""

    _instance: _EOF | None = None

    def __new__(cls) -> _EOF:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EOF"


#: What the session reads when the broker closed the TCP connection (or reset it).
EOF = _EOF()


@dataclass(frozen=True)
class LogEntry:
    """One line of a session's transcript: ``direction`` is ``"sent"`` or ``"received"``."""

    direction: str
    item: Any
    at: float = field(default_factory=time.monotonic)
    note: str = ""

    def __str__(self) -> str:
        arrow = ">>" if self.direction == "sent" else "<<"
        text = describe(self.item)
        return f"{arrow} {text}{'  (' + self.note + ')' if self.note else ''}"


def describe(item: Any) -> str:
    """A short readable description of a frame, header, raw bytes or EOF."""
    if isinstance(item, MethodFrame):
        return f"[ch {item.channel}] {item.method!r}"
    if isinstance(item, HeaderFrame):
        props = {n: getattr(item.properties, n) for n in item.properties.FIELDS
                 if getattr(item.properties, n) is not None}
        return f"[ch {item.channel}] content header class {item.class_id}, body_size {item.body_size}, {props}"
    if isinstance(item, BodyFrame):
        return f"[ch {item.channel}] body {len(item.payload)} bytes {bytes(item.payload[:24])!r}"
    if isinstance(item, HeartbeatFrame):
        return f"[ch {item.channel}] heartbeat"
    if isinstance(item, ProtocolHeader):
        return f"protocol header {item.data!r}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        shown = data[:40]
        return f"raw {len(data)} bytes {shown!r}{'...' if len(data) > 40 else ''}"
    if item is None:
        return "nothing (timeout)"
    return repr(item)


def raw_frame(frame_type: int, channel: int, payload: bytes, *, size: int | None = None,
              end: int = 0xCE) -> bytes:
    """Bytes of one frame, any of its parts free to be wrong.

    ``size`` overrides the size field (so it may disagree with the payload), ``end`` the
    frame-end octet; ``frame_type`` and ``channel`` are written as given.
    """
    return (_frame_header.pack(frame_type, channel, len(payload) if size is None else size)
            + bytes(payload) + bytes([end]))


def _names(spec: MethodSpec) -> tuple[str, ...]:
    items = spec if isinstance(spec, tuple) else (spec,)
    names = []
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, type) and issubclass(item, Method):
            names.append(item.NAME)
        else:
            raise TypeError(f"expected a method name or class, not {item!r}")
    return tuple(names)


class RawSession:
    """A raw, scripted AMQP connection (see the module docstring).

    ``RawSession(url)`` takes host, port, credentials, vhost and (``?protocol=0-8``) the
    version from an AMQP URL; ``host``/``port``/``protocol`` keywords override it.  Nothing
    happens on the wire until :meth:`connect` (called by :meth:`handshake`,
    :meth:`send_header` and ``with`` when needed).  ``timeout`` is the default of every
    expectation.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        protocol: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        skip_heartbeats: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        params = parse_url(url) if url else ConnectionParameters()
        if host is not None:
            params.host = host
        if port is not None:
            params.port = port
        if protocol is not None:
            params.protocol = protocol
        if params.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {params.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.params = params
        self.spec: ModuleType = PROTOCOLS[params.protocol]
        self.protocol: str = params.protocol
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.skip_heartbeats = skip_heartbeats
        #: Every frame sent and received, in order (see :class:`LogEntry`).
        self.frames: list[LogEntry] = []
        #: ``connection.start`` and ``connection.tune`` as the broker sent them, once seen.
        self.start: Any = None
        self.tune: Any = None
        #: The values sent in ``tune-ok`` by :meth:`handshake` / :meth:`tune_ok`.
        self.channel_max = 0
        self.frame_max = 0
        self.heartbeat = 0
        #: The error of a send the broker cut short (EPIPE/ECONNRESET), if any.
        self.send_error: OSError | None = None
        self._sock: socket.socket | None = None
        self._by_name: dict[str, Any] = {c.NAME: c for c in self.spec.METHODS.values()}
        self._reader = FrameReader(self.spec, READ_FRAME_MAX)
        self._inbox: deque[Any] = deque()
        self._eof = False
        self._closed = False
        self._first_bytes = True
        self._pending = b""

    # ------------------------------------------------------------------ life cycle

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "not connected"
        return f"<RawSession {self.protocol} {self.params.host}:{self.params.port} {state}>"

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def at_eof(self) -> bool:
        """True once the broker closed (or reset) the TCP connection."""
        return self._eof

    def connect(self) -> RawSession:
        """Open the TCP (and, for ``amqps``, TLS) connection; nothing is sent.

        A session connects once: after :meth:`close` (or :meth:`expect_eof`) sending raises
        ``RuntimeError`` -- start a new session instead.
        """
        if self._sock is not None:
            return self
        if self._closed:
            raise RuntimeError("this RawSession is closed; start a new one")
        p = self.params
        # The client's TLS context, made before connecting: the same verification and the
        # same errors naming a certificate file that cannot be used.
        ctx = ssl_context(p) if p.ssl else None
        sock = socket.create_connection((p.host, p.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=p.server_name_indication or p.host)
        sock.settimeout(self.connect_timeout)
        self._sock = sock
        return self

    def close(self) -> None:
        """Drop the TCP connection at once (no AMQP close handshake)."""
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # ------------------------------------------------------------------ sending

    def send_raw(self, data: bytes | bytearray | memoryview, note: str = "") -> None:
        """Write bytes as they are.  A broker that already closed the connection is not an
        error here (it is recorded in :attr:`send_error`): the expectations find out."""
        self.connect()
        self._log("sent", bytes(data), note)
        self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            self.send_error = exc
            self.frames.append(LogEntry("sent", exc, note="send failed: the broker closed the connection"))

    def send_header(self, data: bytes | None = None) -> None:
        """Send the protocol header (this version's, unless ``data`` gives other bytes)."""
        self.connect()
        header = self.spec.PROTOCOL_HEADER if data is None else data
        self._log("sent", ProtocolHeader(bytes(header)) if len(header) == 8 else bytes(header))
        self._write(header)

    def send_frame(self, frame: bytes | bytearray | Frame, note: str = "") -> None:
        """Send one frame: a frame object (encoded with the wire layer) or its bytes."""
        self.connect()
        if isinstance(frame, Frame):
            data = encode_frame(frame)
            self._log("sent", frame, note)
        else:
            data = bytes(frame)
            self._log("sent", self._describe_sent(data), note)
        self._write(data)

    def send_method(self, channel: int, method: Method) -> None:
        """Send ``method`` as one method frame on ``channel``."""
        self.connect()
        self._log("sent", MethodFrame(channel, method))
        self._write(method_frame(channel, method))

    def send_content(
        self,
        channel: int,
        method: Method,
        properties: ContentProperties | None = None,
        body: bytes = b"",
        frame_max: int | None = None,
    ) -> None:
        """Send a content-carrying method, its header and its body frames.

        The body is cut at ``frame_max - 8`` (default: the ``frame_max`` sent in tune-ok,
        else the spec's minimum 4096), so passing a ``frame_max`` above the negotiated one
        makes oversized frames on purpose.
        """
        self.connect()
        if properties is None:
            properties = self.spec.Basic.Properties()
        fmax = frame_max or self.frame_max or self.spec.FRAME_MIN_SIZE
        data = content_frames(channel, method, properties, body, fmax)
        self._log("sent", MethodFrame(channel, method))
        self._log("sent", HeaderFrame(channel, method.CLASS_ID, len(body), properties))
        if body:
            chunk = fmax - 8
            pieces = (len(body) + chunk - 1) // chunk
            self._log("sent", BodyFrame(channel, bytes(body[:chunk])),
                      f"{pieces} body frame(s) of at most {chunk} bytes")
        self._write(data if isinstance(data, bytes) else b"".join(bytes(d) for d in data))

    def send_heartbeat(self, channel: int = 0) -> None:
        """Send a heartbeat frame (on ``channel``: anything but 0 is a protocol error)."""
        if channel == 0:
            self.send_frame(HEARTBEAT_FRAME)
        else:
            self.send_frame(raw_frame(8, channel, b""))

    def method(self, name: str, **fields: Any) -> Method:
        """Build the method ``name`` ("queue.declare") of this session's version.

        Fields the version does not have are dropped (``no_wait``/``nowait`` are mapped),
        so one script can serve 0-9-1 and 0-8.
        """
        cls = self._by_name.get(name)
        if cls is None:
            raise ValueError(f"AMQP {self.protocol} has no method {name}")
        if "no_wait" in fields and "no_wait" not in cls.FIELDS:
            fields["nowait"] = fields.pop("no_wait")
        elif "nowait" in fields and "nowait" not in cls.FIELDS:
            fields["no_wait"] = fields.pop("nowait")
        return cls(**{k: v for k, v in fields.items() if k in cls.FIELDS})  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ handshake helpers

    def start_ok(self, username: str | None = None, password: str | None = None, *,
                 mechanism: str = "PLAIN", response: bytes | None = None,
                 client_properties: dict[str, Any] | None = None, locale: str = "en_US") -> None:
        """Send ``connection.start-ok`` with a PLAIN (or AMQPLAIN) response built from the
        credentials (default: the URL's), or the ``response`` bytes given."""
        user = self.params.username if username is None else username
        pwd = self.params.password if password is None else password
        if response is None:
            if mechanism == "AMQPLAIN":
                response = encode_table({"LOGIN": user, "PASSWORD": pwd})[4:]
            else:
                response = b"\0" + user.encode() + b"\0" + pwd.encode()
        props = {"product": "leveret.testing", "capabilities": {
            "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
            "consumer_cancel_notify": True, "authentication_failure_close": True,
        }}
        if client_properties:
            props.update(client_properties)
        self.send_method(0, self.spec.Connection.StartOk(
            client_properties=props, mechanism=mechanism, response=response, locale=locale))

    def tune_ok(self, channel_max: int | None = None, frame_max: int | None = None,
                heartbeat: int = 0) -> None:
        """Send ``connection.tune-ok``; ``None`` takes the value the broker proposed."""
        tune = self.tune
        self.channel_max = channel_max if channel_max is not None else (tune.channel_max if tune else 0)
        self.frame_max = frame_max if frame_max is not None else (tune.frame_max if tune else 0)
        self.heartbeat = heartbeat
        self.send_method(0, self.spec.Connection.TuneOk(
            channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=heartbeat))

    def open(self, vhost: str | None = None) -> None:
        """Send ``connection.open`` for ``vhost`` (default: the URL's)."""
        self.send_method(0, self.method(
            "connection.open", virtual_host=self.params.virtual_host if vhost is None else vhost))

    def handshake(
        self,
        username: str | None = None,
        password: str | None = None,
        vhost: str | None = None,
        *,
        channel_max: int | None = None,
        frame_max: int | None = None,
        heartbeat: int = 0,
        mechanism: str = "PLAIN",
        timeout: float | None = None,
    ) -> Any:
        """Connect and run the whole handshake: protocol header, start / start-ok, tune /
        tune-ok (``None`` accepts the broker's values; ``heartbeat`` defaults to 0, so the
        broker sends none), open / open-ok.  Returns ``connection.open-ok``; the session is
        then OPEN.  Credentials and vhost default to the URL's."""
        self.connect()
        self.send_header()
        self.start = self.expect_method("connection.start", channel=0, timeout=timeout)
        self.start_ok(username, password, mechanism=mechanism)
        self.tune = self.expect_method("connection.tune", channel=0, timeout=timeout)
        self.tune_ok(channel_max, frame_max, heartbeat)
        self.open(vhost)
        return self.expect_method("connection.open-ok", channel=0, timeout=timeout)

    def open_channel(self, channel: int = 1, timeout: float | None = None) -> Any:
        """``channel.open`` and wait for ``open-ok``."""
        self.send_method(channel, self.method("channel.open"))
        return self.expect_method("channel.open-ok", channel=channel, timeout=timeout)

    def close_channel(self, channel: int, timeout: float | None = None) -> Any:
        """``channel.close`` (200) and wait for ``close-ok``."""
        self.send_method(channel, self.spec.Channel.Close(reply_code=200, reply_text="bye"))
        return self.expect_method("channel.close-ok", channel=channel, timeout=timeout)

    def close_connection(self, timeout: float | None = None) -> Any:
        """``connection.close`` (200), wait for ``close-ok``, drop the socket."""
        self.send_method(0, self.spec.Connection.Close(reply_code=200, reply_text="bye"))
        ok = self.expect_method("connection.close-ok", channel=0, timeout=timeout,
                                skip_channels=True)
        self.close()
        return ok

    def rpc(self, channel: int, method: Method, timeout: float | None = None) -> Any:
        """Send a synchronous method and expect (one of) its replies; returns the reply."""
        self.send_method(channel, method)
        return self.expect_method(tuple(r.NAME for r in method.RESPONSES), channel=channel,
                                  timeout=timeout)

    # ------------------------------------------------------------------ receiving

    def receive(self, timeout: float | None = None, *, heartbeats: bool | None = None) -> Any:
        """The next thing from the broker: a frame, a :class:`ProtocolHeader`, :data:`EOF`,
        or ``None`` when nothing came within ``timeout``.  Heartbeat frames are skipped
        unless ``heartbeats`` (default: the opposite of the session's ``skip_heartbeats``)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skip = self.skip_heartbeats if heartbeats is None else not heartbeats
        return self._next(deadline, skip)

    def _next(self, deadline: float, skip_heartbeats: bool | None = None) -> Any:
        """Like :meth:`receive` with an absolute deadline."""
        skip = self.skip_heartbeats if skip_heartbeats is None else skip_heartbeats
        while True:
            while not self._inbox:
                if self._eof:
                    return EOF
                if not self._fill(deadline):
                    return None
            item = self._inbox.popleft()
            if skip and isinstance(item, HeartbeatFrame):
                continue
            return item

    def _fill(self, deadline: float) -> bool:
        """Read once; False when the deadline passed with nothing read."""
        sock = self._sock
        if sock is None:
            self._eof = True
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                if not _readable(sock, remaining):
                    return False
            data = sock.recv(1 << 18)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            self._log("received", EOF, f"connection reset: {exc}")
            self._eof = True
            self._inbox.append(EOF)
            return True
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        if not data:
            self._log("received", EOF)
            self._eof = True
            self._inbox.append(EOF)
            return True
        if self._first_bytes:
            data = self._pending + data
            if len(data) < 8 and data[:1] == b"A":
                self._pending = data
                return True
            self._first_bytes = False
            if data[:4] == b"AMQP":
                header = ProtocolHeader(bytes(data[:8]))
                self._log("received", header)
                self._inbox.append(header)
                data = data[8:]
                if not data:
                    return True
        try:
            self._reader.feed(data)
            while True:
                frame = self._reader.next_frame()
                if frame is NEED_DATA:
                    break
                self._log("received", frame)
                self._inbox.append(frame)
        except RemoteProtocolError as exc:
            raise ExpectationFailed(
                f"the broker sent bytes that do not parse as AMQP {self.protocol}: {exc}"
                + self._transcript()) from exc
        return True

    # ------------------------------------------------------------------ expectations

    def expect_method(
        self,
        method: MethodSpec,
        channel: int | None = None,
        timeout: float | None = None,
        *,
        skip_channels: bool = False,
    ) -> Any:
        """Expect the next frame to be the method ``method`` (a name, a method class, or a
        tuple of them), on ``channel`` if given.  Returns the method.

        With ``skip_channels``, frames on other channels than ``channel`` are passed over
        (e.g. deliveries in flight when waiting for ``connection.close-ok``).
        """
        return self._expect_method_frame(method, channel, timeout, skip_channels).method

    def _expect_method_frame(
        self, method: MethodSpec, channel: int | None, timeout: float | None, skip_channels: bool = False
    ) -> MethodFrame:
        """:meth:`expect_method`, returning the whole frame (its channel too)."""
        names = _names(method)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        want = f"{' or '.join(names)}" + (f" on channel {channel}" if channel is not None else "")
        while True:
            item = self._next(deadline)
            if (skip_channels and channel is not None and isinstance(item, Frame)
                    and item.channel != channel):
                continue
            if (isinstance(item, MethodFrame) and item.method.NAME in names
                    and (channel is None or item.channel == channel)):
                return item
            self._fail(want, item)

    def expect_content(self, method: MethodSpec = ("basic.deliver", "basic.get-ok", "basic.return"),
                       channel: int | None = None, timeout: float | None = None
                       ) -> tuple[Any, Any, bytes]:
        """Expect a content-carrying method (on ``channel`` if given), then its header (of
        the method's class) and all its body frames on the method's channel; returns
        ``(method, properties, body)``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frame = self._expect_method_frame(method, channel, max(0.0, deadline - time.monotonic()))
        m = frame.method
        item = self._next(deadline)
        ch = frame.channel  # with channel=None too: a content never changes channel
        if not isinstance(item, HeaderFrame) or item.channel != ch or item.class_id != m.CLASS_ID:
            self._fail(f"a content header of class {m.CLASS_ID} on channel {ch} after {m.NAME}", item)
        header: HeaderFrame = item
        chunks: list[bytes] = []
        got = 0
        while got < header.body_size:
            item = self._next(deadline)
            if not isinstance(item, BodyFrame) or item.channel != header.channel:
                self._fail(f"body frames ({got} of {header.body_size} bytes so far)", item)
            chunks.append(bytes(item.payload))
            got += len(item.payload)
        if got != header.body_size:
            self._fail(f"a body of {header.body_size} bytes", f"{got} bytes")
        return m, header.properties, b"".join(chunks)

    def expect_frame(self, kind: type[Frame] | None = None, channel: int | None = None,
                     timeout: float | None = None) -> Any:
        """Expect the next frame to be of class ``kind`` (any frame when None)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        item = self._next(deadline)
        if isinstance(item, Frame) and (kind is None or isinstance(item, kind)) and (
                channel is None or item.channel == channel):
            return item
        name = kind.__name__ if kind is not None else "a frame"
        self._fail(name + (f" on channel {channel}" if channel is not None else ""), item)

    def expect_heartbeat(self, timeout: float | None = None) -> HeartbeatFrame:
        """Expect a heartbeat frame (other frames before it are a failure)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        item = self._next(deadline, skip_heartbeats=False)
        if isinstance(item, HeartbeatFrame):
            return item
        self._fail("a heartbeat", item)

    def expect_close(self, reply_code: int | Iterable[int] | None = None,
                     timeout: float | None = None, *, answer: bool = True,
                     skip_channels: bool = False) -> Any:
        """Expect ``connection.close`` with ``reply_code`` (one code, several, or None for
        any); then answer ``close-ok`` (unless ``answer=False``).  Returns the close.

        ``skip_channels`` passes over frames on channels other than 0 first.
        """
        close = self.expect_method("connection.close", channel=0, timeout=timeout,
                                   skip_channels=skip_channels)
        self._check_code(close, reply_code, "connection.close")
        if answer:
            self.send_method(0, self.spec.Connection.CloseOk())
        return close

    def expect_channel_close(self, channel: int, reply_code: int | Iterable[int] | None = None,
                             timeout: float | None = None, *, answer: bool = True) -> Any:
        """Expect ``channel.close`` on ``channel`` with ``reply_code``; answer ``close-ok``."""
        close = self.expect_method("channel.close", channel=channel, timeout=timeout)
        self._check_code(close, reply_code, "channel.close")
        if answer:
            self.send_method(channel, self.spec.Channel.CloseOk())
        return close

    def _check_code(self, close: Any, reply_code: int | Iterable[int] | None, what: str) -> None:
        if reply_code is None:
            return
        codes = {reply_code} if isinstance(reply_code, int) else set(reply_code)
        if close.reply_code not in codes:
            raise ExpectationFailed(
                f"expected {what} with reply code {' or '.join(map(str, sorted(codes)))}, "
                f"got {close.reply_code} {close.reply_text!r}" + self._transcript(), close)

    def expect_eof(self, timeout: float | None = None, *, allow_frames: bool = False) -> None:
        """Expect the broker to close the TCP connection; with ``allow_frames`` any frames
        before the EOF are passed over."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            item = self._next(deadline)
            if item is EOF:
                self.close()
                return
            if allow_frames and item is not None:
                continue
            self._fail("the broker to close the TCP connection", item)

    def expect_nothing(self, timeout: float = 0.5) -> None:
        """Expect no frame (heartbeats aside) and no EOF for ``timeout`` seconds."""
        item = self._next(time.monotonic() + timeout)
        if item is not None:
            self._fail(f"nothing for {timeout} s", item)

    def expect_protocol_header(self, timeout: float | None = None) -> ProtocolHeader:
        """Expect the broker to answer with a protocol header (version refused)."""
        item = self._next(time.monotonic() + (self.timeout if timeout is None else timeout))
        if isinstance(item, ProtocolHeader):
            return item
        self._fail("a protocol header", item)

    # ------------------------------------------------------------------ diagnostics

    def _fail(self, want: str, got: Any) -> NoReturn:
        if got is None:
            what = "nothing came before the timeout"
        elif got is EOF:
            what = "the broker closed the TCP connection"
        elif isinstance(got, str):
            what = got
        else:
            what = "got " + describe(got)
        raise ExpectationFailed(f"expected {want}; {what}" + self._transcript(), got)

    def _transcript(self, last: int = 12) -> str:
        entries = self.frames[-last:]
        if not entries:
            return ""
        return "\nlast frames:\n" + "\n".join("  " + str(e) for e in entries)

    def method_names(self, direction: str | None = None) -> set[str]:
        """Names of the methods sent and/or received (``direction`` "sent"/"received")."""
        return {e.item.method.NAME for e in self.frames
                if isinstance(e.item, MethodFrame) and direction in (None, e.direction)}

    def transcript(self) -> str:
        """The whole log, one line per frame."""
        return "\n".join(str(e) for e in self.frames)

    def _log(self, direction: str, item: Any, note: str = "") -> None:
        self.frames.append(LogEntry(direction, item, note=note))

    def _describe_sent(self, data: bytes) -> Any:
        """Decode our own bytes for the log when they are one well-formed frame."""
        if len(data) >= 8:
            reader = FrameReader(self.spec, READ_FRAME_MAX)
            try:
                reader.feed(data)
                frame = reader.next_frame()
                if frame is not NEED_DATA and reader.buffered == 0:
                    return frame
            except RemoteProtocolError:
                pass  # malformed on purpose: the log keeps the raw bytes
        return data
