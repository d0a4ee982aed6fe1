"""A scripted AMQP "server" for driving the sans-IO core in tests.

The server side builds its frames with the wire layer's writer (``method_frame``,
``header_frame``, ``body_frame``) and reads what the client queued with a
:class:`~leveret.wire.frames.FrameReader`, so a test can feed exact bytes to
:class:`~leveret.client.core.SansIOConnection` and assert on the exact frames it answered
with -- no broker, no socket, no mocks.

    server = Scripted("0-9-1")
    server.handshake()                      # start / tune / open-ok, checks what was sent
    cid = server.open_channel()             # channel.open + channel.open-ok
    server.core.send_method(cid, server.m("queue.declare", queue="q"))
    assert server.sent_methods() == [(cid, server.m("queue.declare", queue="q"))]
    events = server.feed(server.frame(cid, "queue.declare-ok", queue="q"))
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeVar

from leveret.client import events as ev
from leveret.client.core import PROTOCOLS, SansIOConnection
from leveret.wire.frames import (
    NEED_DATA,
    BodyFrame,
    Frame,
    FrameReader,
    HeaderFrame,
    MethodFrame,
    body_frame,
    header_frame,
    method_frame,
)

__all__ = ["Scripted", "parse_client_bytes", "one", "CLIENT_HEADER_LEN"]

E = TypeVar("E", bound=ev.Event)

CLIENT_HEADER_LEN = 8
#: What the scripted server offers unless told otherwise.
DEFAULT_TUNE = {"channel_max": 2047, "frame_max": 131072, "heartbeat": 60}


def parse_client_bytes(spec: ModuleType, data: bytes) -> list[Frame]:
    """Every frame in ``data`` (bytes a client queued, without its protocol header).

    Fails the test (AssertionError) when ``data`` ends in the middle of a frame: the core
    must only ever queue whole frames.
    """
    reader = FrameReader(spec, frame_max=1 << 24)
    reader.feed(data)
    frames: list[Frame] = []
    while True:
        frame = reader.next_frame()
        if frame is NEED_DATA:
            break
        frames.append(frame)
    assert reader.buffered == 0, f"client queued {reader.buffered} bytes of a partial frame"
    return frames


class Scripted:
    """A client core plus the server half of a conversation with it."""

    def __init__(self, protocol: str = "0-9-1", **core_kwargs: Any) -> None:
        self.protocol = protocol
        self.spec: ModuleType = PROTOCOLS[protocol]
        self.core = SansIOConnection(protocol=protocol, **core_kwargs)
        self._by_name = {cls.NAME: cls for cls in self.spec.METHODS.values()}
        self._header_taken = False

    # ------------------------------------------------------------ building server bytes

    def m(self, name: str, **fields: Any) -> Any:
        """The method ``name`` of this protocol; ``no_wait`` works for 0-8's ``nowait``."""
        cls = self._by_name[name]
        if "no_wait" in fields and "no_wait" not in cls.FIELDS and "nowait" in cls.FIELDS:
            fields["nowait"] = fields.pop("no_wait")
        return cls(**fields)

    def frame(self, channel: int, method: Any, **fields: Any) -> bytes:
        """One method frame; ``method`` is a method object or a name plus ``fields``."""
        if isinstance(method, str):
            method = self.m(method, **fields)
        return method_frame(channel, method)

    def props(self, **fields: Any) -> Any:
        return self.spec.Basic.Properties(**fields)

    def header(self, channel: int, body_size: int, properties: Any = None, class_id: int | None = None) -> bytes:
        cid = self.spec.Basic.CLASS_ID if class_id is None else class_id
        return header_frame(channel, cid, body_size, properties)

    def body(self, channel: int, payload: bytes) -> bytes:
        return body_frame(channel, payload)

    def content(
        self,
        channel: int,
        method: Any,
        body: bytes,
        properties: Any = None,
        chunk: int | None = None,
        **fields: Any,
    ) -> bytes:
        """A content method, its header and its body cut in frames of ``chunk`` bytes (one
        frame when ``chunk`` is None; none at all for an empty body)."""
        if isinstance(method, str):
            method = self.m(method, **fields)
        out = [method_frame(channel, method), self.header(channel, len(body), properties)]
        step = chunk or max(len(body), 1)
        for at in range(0, len(body), step):
            out.append(body_frame(channel, body[at : at + step]))
        return b"".join(out)

    def deliver(self, channel: int, body: bytes, tag: int = 1, chunk: int | None = None, **props: Any) -> bytes:
        method = self.m(
            "basic.deliver", consumer_tag="ctag", delivery_tag=tag, exchange="ex", routing_key="rk"
        )
        return self.content(channel, method, body, self.props(**props) if props else None, chunk)

    # ------------------------------------------------------------ feeding the client

    def feed(self, data: bytes, now: float | None = None) -> list[ev.Event]:
        return self.core.receive_data(data, now=now)

    def feed_bytewise(self, data: bytes) -> list[ev.Event]:
        events: list[ev.Event] = []
        for i in range(len(data)):
            events.extend(self.core.receive_data(data[i : i + 1]))
        return events

    # ------------------------------------------------------------ reading what the client sent

    def sent_bytes(self) -> bytes:
        """What the client queued since the last call, its protocol header stripped (and
        checked) the first time."""
        data = self.core.data_to_send()
        if not self._header_taken:
            assert data[:CLIENT_HEADER_LEN] == self.spec.PROTOCOL_HEADER, data[:16]
            data = data[CLIENT_HEADER_LEN:]
            self._header_taken = True
        return data

    def sent_frames(self) -> list[Frame]:
        return parse_client_bytes(self.spec, self.sent_bytes())

    def sent_methods(self) -> list[tuple[int, Any]]:
        """The (channel, method) of every method frame the client queued since last time;
        asserts that nothing else (content, heartbeats) was queued."""
        out = []
        for f in self.sent_frames():
            assert isinstance(f, MethodFrame), f
            out.append((f.channel, f.method))
        return out

    def sent_names(self) -> list[tuple[int, str]]:
        return [(c, m.NAME) for c, m in self.sent_methods()]

    # ------------------------------------------------------------ whole exchanges

    def start(self, mechanisms: str = "PLAIN AMQPLAIN", locales: str = "en_US", **server_properties: Any) -> bytes:
        major, minor = (0, 9) if self.protocol == "0-9-1" else (8, 0)
        return self.frame(
            0,
            "connection.start",
            version_major=major,
            version_minor=minor,
            server_properties=server_properties or {"product": "scripted"},
            mechanisms=mechanisms,
            locales=locales,
        )

    def tune(self, **tune: Any) -> bytes:
        return self.frame(0, "connection.tune", **{**DEFAULT_TUNE, **tune})

    def handshake(self, **tune: Any) -> ev.ConnectionOpened:
        """Run start / tune / open-ok; returns the ConnectionOpened event.  Drains (and
        checks) everything the client queued on the way."""
        assert self.feed(self.start()) == []
        assert [n for _, n in self.sent_names()] == ["connection.start-ok"]
        assert self.feed(self.tune(**tune)) == []
        assert [n for _, n in self.sent_names()] == ["connection.tune-ok", "connection.open"]
        events = self.feed(self.frame(0, "connection.open-ok"))
        assert len(events) == 1 and isinstance(events[0], ev.ConnectionOpened), events
        assert self.sent_bytes() == b""
        return events[0]

    def open_channel(self, channel_id: int | None = None) -> int:
        cid = self.core.open_channel(channel_id)
        assert self.sent_names() == [(cid, "channel.open")]
        assert self.feed(self.frame(cid, "channel.open-ok")) == [ev.ChannelOpened(cid)]
        return cid

    def confirm_channel(self) -> int:
        cid = self.open_channel()
        self.core.send_method(cid, self.m("confirm.select"))
        assert self.sent_names() == [(cid, "confirm.select")]
        assert self.feed(self.frame(cid, "confirm.select-ok")) == [
            ev.MethodReceived(cid, self.m("confirm.select-ok"))
        ]
        return cid


def one(events: list[ev.Event], kind: type[E]) -> E:
    """The only event in ``events``, checked to be a ``kind`` (and typed as one)."""
    assert len(events) == 1, events
    [event] = events
    assert isinstance(event, kind), event
    return event


def content_of(frames: list[Frame]) -> tuple[Any, HeaderFrame, bytes]:
    """(method, header frame, joined body) of a content in ``frames``."""
    assert isinstance(frames[0], MethodFrame) and isinstance(frames[1], HeaderFrame), frames[:2]
    body = b"".join(f.payload for f in frames[2:] if isinstance(f, BodyFrame))
    assert all(isinstance(f, BodyFrame) for f in frames[2:])
    return frames[0].method, frames[1], body
