"""leveret.testing.RawSession: scripted raw sessions against the real broker.

The scripts read as the protocol does: what goes on the wire, what must come back.  The
expectations are tested both ways -- met (the broker's real answer) and not met (an
ExpectationFailed naming what came instead) -- so none of them can pass vacuously.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from leveret.testing import (
    BodyFrame,
    ExpectationFailed,
    HeartbeatFrame,
    RawSession,
    body_frame,
    header_frame,
    raw_frame,
)
from leveret.wire import amqp0_8, amqp0_9_1
from leveret.wire.frames import FrameReader, MethodFrame

S = amqp0_9_1


# --------------------------------------------------------------------------- offline


def test_raw_frame_bytes() -> None:
    assert raw_frame(1, 2, b"ab") == b"\x01\x00\x02\x00\x00\x00\x02ab\xce"
    assert raw_frame(3, 1, b"x", size=9, end=0) == b"\x03\x00\x01\x00\x00\x00\x09x\x00"
    # a well-formed raw frame is what the wire layer reads back
    reader = FrameReader(S)
    reader.feed(raw_frame(1, 7, S.Basic.Qos(prefetch_count=3).encode()))
    frame = reader.next_frame()
    assert isinstance(frame, MethodFrame) and frame.channel == 7
    assert frame.method == S.Basic.Qos(prefetch_count=3)


def test_session_takes_url_parts_and_hides_password() -> None:
    s = RawSession("amqp://alice:s3cret@example.invalid:5999/vh?protocol=0-8")
    assert (s.params.host, s.params.port, s.protocol, s.spec) == ("example.invalid", 5999, "0-8", amqp0_8)
    assert "s3cret" not in repr(s)
    assert not s.connected


def test_unreachable_broker_raises_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = RawSession(host="127.0.0.1", port=port)
    with pytest.raises(ConnectionRefusedError):
        s.connect()


def _scripted_peer(data: bytes, protocol: str | None = None) -> tuple[RawSession, socket.socket, socket.socket]:
    """A RawSession connected to a local socket that has sent ``data`` (no broker)."""
    server = socket.create_server(("127.0.0.1", 0))
    s = RawSession(host="127.0.0.1", port=server.getsockname()[1], protocol=protocol, timeout=5)
    s.connect()
    peer, _ = server.accept()
    peer.sendall(data)
    return s, server, peer


@pytest.mark.parametrize("channel", [None, 1])
def test_expect_content_wants_the_header_on_the_methods_channel(channel: int | None) -> None:
    deliver = S.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key="q")
    method = S.Basic.Deliver.encode_frame(deliver, 1)
    good = method + header_frame(1, S.Basic.CLASS_ID, 5, None) + body_frame(1, b"hello")
    bad = method + header_frame(2, S.Basic.CLASS_ID, 5, None) + body_frame(2, b"hello")
    s, server, peer = _scripted_peer(good + bad)
    with s, server, peer:
        m, _props, body = s.expect_content(channel=channel)
        assert (m, body) == (deliver, b"hello")
        with pytest.raises(ExpectationFailed, match="a content header of class 60 on channel 1 after basic.deliver"):
            s.expect_content(channel=channel)


def test_expect_content_wants_the_header_of_the_methods_class() -> None:
    # 0-8 has three content classes: a file-class header after basic.deliver is not its content.
    S8 = amqp0_8
    deliver = S8.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key="q")
    data = S8.Basic.Deliver.encode_frame(deliver, 1) + header_frame(1, S8.File.CLASS_ID, 5, None)
    s, server, peer = _scripted_peer(data + body_frame(1, b"hello"), protocol="0-8")
    with s, server, peer:
        with pytest.raises(ExpectationFailed, match="a content header of class 60 on channel 1"):
            s.expect_content()


def test_a_missing_certificate_file_is_named_before_connecting(tmp_path: Path) -> None:
    # RawSession makes the client's TLS context: the same checks, before any connection.
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    missing = tmp_path / "no-such-ca.pem"
    with server:
        s = RawSession(f"amqps://guest:s3cret@127.0.0.1:{port}/?cacertfile={missing}", timeout=5)
        with pytest.raises(FileNotFoundError) as info:
            s.connect()
        assert "cacertfile" in str(info.value) and info.value.filename == str(missing)
        assert "s3cret" not in str(info.value)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected


# --------------------------------------------------------------------------- against the broker


def test_handshake_reaches_open(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        ok = s.handshake()
        assert ok.NAME == "connection.open-ok"
        assert s.start.version_major == 0 and s.start.version_minor == 9
        assert s.tune.frame_max >= 4096
        assert s.frame_max == s.tune.frame_max  # tune-ok accepted the proposal
        assert s.open_channel(1).NAME == "channel.open-ok"
        s.close_channel(1)
        s.close_connection()
        assert not s.connected
        sent = s.method_names("sent")
        assert {"connection.start-ok", "connection.tune-ok", "connection.open",
                "channel.open", "channel.close", "connection.close"} <= sent


def test_body_before_header_is_505(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake()
        s.open_channel(1)
        s.send_frame(body_frame(1, b"x"))
        close = s.expect_close(505)
        assert "UNEXPECTED_FRAME" in close.reply_text
        # close-ok was answered: the broker is done with us
        s.expect_eof(timeout=5)


def test_content_round_trip_split_over_frames(amqp_url: str) -> None:
    body = os.urandom(30000)
    with RawSession(amqp_url) as s:
        s.handshake(frame_max=4096)
        s.open_channel(1)
        q = s.rpc(1, S.Queue.Declare(exclusive=True)).queue
        props = S.Basic.Properties(content_type="application/octet-stream", headers={"n": 1})
        s.send_content(1, S.Basic.Publish(routing_key=q), props, body)
        s.send_method(1, S.Basic.Get(queue=q, no_ack=True))
        method, got_props, got = s.expect_content("basic.get-ok", channel=1)
        assert got == body
        assert got_props.content_type == "application/octet-stream" and got_props.headers == {"n": 1}
        assert method.routing_key == q
        bodies = [e.item for e in s.frames if e.direction == "received" and isinstance(e.item, BodyFrame)]
        assert len(bodies) == 8 and max(len(b.payload) for b in bodies) == 4088


def test_expect_method_fails_with_what_came_instead(amqp_url: str) -> None:
    with RawSession(amqp_url, timeout=3) as s:
        s.handshake()
        s.open_channel(1)
        s.send_method(1, S.Queue.Declare(queue="leveret-raw-missing-queue", passive=True))
        with pytest.raises(ExpectationFailed) as info:
            s.expect_method(S.Queue.DeclareOk, channel=1)
        text = str(info.value)
        assert "expected queue.declare-ok on channel 1" in text
        assert "Channel.Close(reply_code=404" in text
        assert "last frames:" in text and "Queue.Declare(" in text
        assert isinstance(info.value, AssertionError)
        assert isinstance(info.value.received, MethodFrame)


def test_expect_channel_close_checks_the_code(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake()
        s.open_channel(1)
        s.send_method(1, S.Basic.Ack(delivery_tag=99))
        with pytest.raises(ExpectationFailed, match="reply code 404, got 406"):
            s.expect_channel_close(1, 404)
    with RawSession(amqp_url) as s:
        s.handshake()
        s.open_channel(1)
        s.send_method(1, S.Basic.Ack(delivery_tag=99))
        close = s.expect_channel_close(1, 406)
        assert close.class_id == 60 and close.method_id == 80
        s.open_channel(1)  # the close-ok was sent: the number is free again


def test_expect_nothing_and_timeouts(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake()
        s.open_channel(1)
        started = time.monotonic()
        s.expect_nothing(0.3)
        assert time.monotonic() - started >= 0.3
        with pytest.raises(ExpectationFailed, match="nothing came before the timeout"):
            s.expect_method("basic.deliver", timeout=0.2)
        s.send_method(1, S.Basic.Qos(prefetch_count=1))
        with pytest.raises(ExpectationFailed, match="expected nothing for 1.0 s; got .*QosOk"):
            s.expect_nothing(1.0)


def test_unsupported_header_gets_protocol_header_then_eof(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.send_header(b"AMQP\x00\x00\x09\x02")
        header = s.expect_protocol_header()
        assert header.data == S.PROTOCOL_HEADER and header.version == (0, 0, 9, 1)
        s.expect_eof()
    with RawSession(amqp_url) as s:
        s.send_header(b"AMQP\x00\x00\x09\x02")
        with pytest.raises(ExpectationFailed, match="protocol header"):
            s.expect_method("connection.start")


def test_oversized_frame_is_501(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake(frame_max=4096)
        s.open_channel(1)
        # frame_max 8192 on our side: body frames of 8184 payload octets, twice the limit
        s.send_content(1, S.Basic.Publish(routing_key="nowhere"), None, b"x" * 10000, frame_max=8192)
        close = s.expect_close(501)
        assert "frame_too_large" in close.reply_text


def test_heartbeats_are_skipped_unless_asked_for(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake(heartbeat=1)
        s.send_heartbeat()
        s.expect_heartbeat(timeout=2)            # RabbitMQ beats every 0.5 s here
        s.send_heartbeat()
        s.expect_nothing(0.7)                    # ... and expect_nothing passes over them
        assert any(isinstance(e.item, HeartbeatFrame) for e in s.frames
                   if e.direction == "received")


def test_silent_client_is_dropped(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.handshake(heartbeat=1)
        s.expect_eof(timeout=8)


def test_protocol_0_8_session(amqp_url: str) -> None:
    with RawSession(amqp_url, protocol="0-8") as s:
        s.handshake()
        assert (s.start.version_major, s.start.version_minor) == (8, 0)
        s.open_channel(1)
        ticket = s.rpc(1, s.method("access.request", realm="/data", active=True, read=True)).ticket
        q = s.rpc(1, s.method("queue.declare", ticket=ticket, exclusive=True, nowait=False)).queue
        s.send_content(1, s.method("basic.publish", routing_key=q), None, b"eight")
        s.send_method(1, s.method("basic.get", queue=q, no_ack=True))
        _m, _p, body = s.expect_content(channel=1)
        assert body == b"eight"
        # 0-8 frames end with 0xCE too: a header with no method is refused the same way
        s.send_frame(header_frame(1, 60, 1, None))
        s.expect_close(505)


def test_send_after_broker_dropped_us_is_recorded_not_raised(amqp_url: str) -> None:
    with RawSession(amqp_url) as s:
        s.send_header(b"HTTP/1.1")
        s.expect_protocol_header()
        deadline = time.monotonic() + 5
        while s.send_error is None and time.monotonic() < deadline:
            s.send_raw(b"x" * 65536)  # the broker has closed: the kernel soon says so
            time.sleep(0.05)
        assert isinstance(s.send_error, (BrokenPipeError, ConnectionResetError))
        s.expect_eof()
        with pytest.raises(RuntimeError, match="closed"):
            s.send_header()


def test_class_mismatch_header_is_505_and_logged_raw(amqp_url: str) -> None:
    """A header whose class (50, no properties) does not match the method's."""
    bad_header = raw_frame(2, 1, b"\x00\x32\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x00")
    with RawSession(amqp_url) as s:
        s.handshake()
        s.open_channel(1)
        s.send_method(1, S.Basic.Publish(routing_key="nowhere"))
        s.send_frame(bad_header)
        close = s.expect_close(505)
        assert "class 50" in close.reply_text
        sent = [e.item for e in s.frames if e.direction == "sent"]
        # the log keeps bytes it cannot decode as they are; the last one sent is close-ok
        assert sent[-2] == bad_header
        assert isinstance(sent[-1], MethodFrame) and sent[-1].method.NAME == "connection.close-ok"
