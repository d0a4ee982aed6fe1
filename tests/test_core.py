"""The sans-IO core driven with scripted server bytes.

Every test feeds exact bytes built with the wire layer's writer and asserts on the events the
core returns and on the frames it queued (parsed back with a FrameReader).  No broker, no
socket, no mocks.
"""

from __future__ import annotations

import pickle
import random
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from leveret.client import events as ev
from leveret.client.core import (
    CLIENT_CAPABILITIES,
    ChannelState,
    ConnState,
    SansIOConnection,
)
from leveret.client.errors import (
    AuthenticationError,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLost,
    VersionMismatch,
)
from leveret.wire.errors import (
    AMQPError,
    DecodeError,
    EncodeError,
    FrameError,
    FrameTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
    UnexpectedFrame,
    UnknownMethod,
)
from leveret.wire.fields import decode_table
from leveret.wire.frames import HEARTBEAT_FRAME, BodyFrame, HeaderFrame, HeartbeatFrame, MethodFrame
from leveret.wire.replies import (
    AccessRefused,
    ConnectionForced,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)

from helpers import raised_again
from scripted import Scripted, content_of, one, parse_client_bytes

PROTOCOLS = ["0-9-1", "0-8"]
both = pytest.mark.parametrize("protocol", PROTOCOLS)
DATA = Path(__file__).parent / "data"


def opened(protocol: str = "0-9-1", **kwargs: Any) -> Scripted:
    tune = {k: kwargs.pop(k) for k in ("tune_channel_max", "tune_frame_max", "tune_heartbeat") if k in kwargs}
    s = Scripted(protocol, **kwargs)
    s.handshake(**{k[5:]: v for k, v in tune.items()})
    return s


def closed_by_us(events: list[ev.Event], cid: int, unconfirmed: list[int] | None = None) -> bool:
    """``events`` is one ChannelClosed for ``cid`` closed by us, without an error."""
    assert len(events) == 1, events
    [e] = events
    assert isinstance(e, ev.ChannelClosed), e
    assert (e.channel_id, e.error, e.by_peer) == (cid, None, False), e
    assert list(e.unconfirmed) == (unconfirmed or []), e
    return True


def state(s: Scripted) -> ConnState:
    """``s.core.state``, for a check after one on the same attribute: mypy would keep the
    first ``is`` check's narrowing across the calls that change the state."""
    return s.core.state


def closes_sent(s: Scripted) -> list[Any]:
    return [m for c, m in s.sent_methods() if m.NAME == "connection.close"]


def norm(events: list[ev.Event]) -> list[Any]:
    """Events made comparable: exceptions compare by identity, so replace each AMQPError
    by its type and arguments."""
    out: list[Any] = []
    for e in events:
        error = getattr(e, "error", None)
        if isinstance(error, AMQPError):
            assert isinstance(e, (ev.ChannelClosed, ev.ConnectionClosed)), e
            out.append((type(e), e.channel_id if isinstance(e, ev.ChannelClosed) else None, type(error),
                        error.reply_code, error.reply_text, error.class_id, error.method_id, e.by_peer))
        else:
            out.append(e)
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


# =========================================================================== handshake


def test_fast_event_constructors_make_what_the_classes_make() -> None:
    # The core builds its per-message events without the dataclass __init__: same objects.
    import dataclasses

    from leveret.client.events import _message_received, _publish_confirmed

    method, props = object(), object()
    pairs: list[tuple[ev.MessageReceived | ev.PublishConfirmed, ev.MessageReceived | ev.PublishConfirmed]] = [
        (_message_received(3, method, props, b"body"), ev.MessageReceived(3, method, props, b"body")),
        (_publish_confirmed(2, (1, 2, 3), False), ev.PublishConfirmed(2, (1, 2, 3), False)),
    ]
    for fast, made in pairs:
        assert type(fast) is type(made)
        assert fast == made and hash(fast) == hash(made) and repr(fast) == repr(made)
        names = [f.name for f in dataclasses.fields(made)]
        assert all(getattr(fast, n) is getattr(made, n) for n in names)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fast, names[0], 9)


@pytest.mark.parametrize(
    "protocol, header",
    [("0-9-1", b"AMQP\x00\x00\x09\x01"), ("0-8", b"AMQP\x01\x01\x08\x00")],
)
def test_construction_queues_exactly_the_protocol_header(protocol: str, header: bytes) -> None:
    core = SansIOConnection(protocol=protocol)
    assert core.state is ConnState.AWAIT_START
    assert core.wants_write
    assert core.data_to_send() == header
    assert core.data_to_send() == b""
    assert not core.wants_write


def test_unknown_protocol_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="0-10"):
        SansIOConnection(protocol="0-10")


@both
def test_start_ok_carries_capabilities_mechanism_and_plain_response(protocol: str) -> None:
    s = Scripted(protocol, username="user", password="pass")
    assert s.feed(s.start(mechanisms="PLAIN AMQPLAIN", locales="en_US")) == []
    assert s.core.state is ConnState.AWAIT_TUNE
    [(channel, start_ok)] = s.sent_methods()
    assert channel == 0
    assert start_ok.NAME == "connection.start-ok"
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == b"\0user\0pass"
    assert start_ok.locale == "en_US"
    caps = start_ok.client_properties["capabilities"]
    expected = {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
    }
    assert expected == CLIENT_CAPABILITIES
    if protocol == "0-8":
        # 0-8 has no connection.blocked method: announcing it would make RabbitMQ send one
        # at the first memory alarm, which a 0-8 peer cannot decode.  Nor confirms,
        # basic.nack or exchange bindings: the client does not claim what it cannot do.
        for lacking in ("connection.blocked", "publisher_confirms", "basic.nack", "exchange_exchange_bindings"):
            del expected[lacking]
    assert caps == expected
    assert start_ok.client_properties["product"] == "leveret"
    assert s.core.server_properties == {"product": "scripted"}
    assert s.core.mechanisms == ["PLAIN", "AMQPLAIN"]


@both
def test_start_ok_for_the_start_rabbitmq_really_sends(protocol: str) -> None:
    s = Scripted(protocol)
    start = (DATA / f"rabbitmq-3.10-connection-start-{protocol}.bin").read_bytes()
    assert s.feed(start) == []
    assert s.sent_names() == [(0, "connection.start-ok")]
    assert s.core.server_properties["product"] == "RabbitMQ"
    assert s.core.mechanisms == ["PLAIN", "AMQPLAIN"]


@both
def test_amqplain_response_is_a_table_without_its_length(protocol: str) -> None:
    s = Scripted(protocol, username="user", password="pass", auth_mechanism="AMQPLAIN")
    s.feed(s.start(mechanisms="PLAIN AMQPLAIN"))
    [(_, start_ok)] = s.sent_methods()
    assert start_ok.mechanism == "AMQPLAIN"
    response = start_ok.response
    assert response == b"\x05LOGINS\x00\x00\x00\x04user\x08PASSWORDS\x00\x00\x00\x04pass"
    table, end = decode_table(struct.pack(">I", len(response)) + response, 0, 4 + len(response))
    assert table == {"LOGIN": "user", "PASSWORD": "pass"}
    assert end == 4 + len(response)


@both
def test_external_only_when_asked(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start(mechanisms="EXTERNAL PLAIN AMQPLAIN"))
    [(_, start_ok)] = s.sent_methods()
    assert start_ok.mechanism == "PLAIN"

    s = Scripted(protocol, auth_mechanism="external")
    s.feed(s.start(mechanisms="PLAIN EXTERNAL"))
    [(_, start_ok)] = s.sent_methods()
    assert start_ok.mechanism == "EXTERNAL"
    assert start_ok.response == b""


@both
def test_mechanism_not_offered_names_the_offered_ones(protocol: str) -> None:
    s = Scripted(protocol, auth_mechanism="EXTERNAL")
    s.sent_bytes()
    with pytest.raises(AuthenticationError) as info:
        s.feed(s.start(mechanisms="PLAIN AMQPLAIN"))
    assert "EXTERNAL" in str(info.value)
    assert "PLAIN, AMQPLAIN" in str(info.value)
    assert s.core.data_to_send() == b""  # no start-ok with a mechanism the server refuses
    assert s.core.state is ConnState.ERROR
    with pytest.raises(AuthenticationError) as again:
        s.feed(s.tune())
    assert raised_again(again.value, info.value)


@both
def test_secure_is_answered_with_secure_ok(protocol: str) -> None:
    s = Scripted(protocol, username="u", password="p")
    s.feed(s.start())
    s.sent_bytes()
    assert s.feed(s.frame(0, "connection.secure", challenge=b"more?")) == []
    assert s.sent_methods() == [(0, s.m("connection.secure-ok", response=b"\0u\0p"))]
    assert s.core.state is ConnState.AWAIT_TUNE


@both
def test_tune_is_answered_with_tune_ok_and_open(protocol: str) -> None:
    s = Scripted(protocol, virtual_host="/prod")
    s.feed(s.start())
    s.sent_bytes()
    assert s.feed(s.tune(channel_max=100, frame_max=8192, heartbeat=30)) == []
    assert s.core.state is ConnState.AWAIT_OPEN_OK
    [(c1, tune_ok), (c2, open_)] = s.sent_methods()
    assert (c1, c2) == (0, 0)
    assert tune_ok == s.m("connection.tune-ok", channel_max=100, frame_max=8192, heartbeat=30)
    assert open_.NAME == "connection.open"
    assert open_.virtual_host == "/prod"


NEGOTIATION = [
    # (client asks, server offers, agreed)
    ("channel_max", 0, 0, 65535),
    ("channel_max", 0, 100, 100),
    ("channel_max", 100, 0, 100),
    ("channel_max", 100, 200, 100),
    ("channel_max", 200, 100, 100),
    ("channel_max", 2047, 2047, 2047),
    ("frame_max", 0, 0, 131072),  # neither limits: the client settles on its default
    ("frame_max", 0, 8192, 8192),
    ("frame_max", 8192, 0, 8192),
    ("frame_max", 8192, 65536, 8192),
    ("frame_max", 65536, 8192, 8192),
    ("frame_max", 1000, 131072, 4096),  # never below FRAME_MIN_SIZE
    ("heartbeat", 0, 0, 0),
    ("heartbeat", 0, 60, 60),
    ("heartbeat", 60, 0, 60),
    ("heartbeat", 10, 60, 10),
    ("heartbeat", 60, 10, 10),
]


@both
@pytest.mark.parametrize("field, ours, theirs, agreed", NEGOTIATION)
def test_tune_negotiation(protocol: str, field: str, ours: int, theirs: int, agreed: int) -> None:
    s = Scripted(protocol, **{field: ours})
    opened_event = s.handshake(**{field: theirs})
    assert getattr(opened_event, field) == agreed
    assert getattr(s.core, field) == agreed


@both
def test_a_tune_offering_frame_max_below_the_minimum_is_refused(protocol: str) -> None:
    # Answering with 4096, the least a client may use, would exceed the server's offer,
    # which the spec has the server answer by closing the connection: say why, first.
    s = Scripted(protocol)
    s.feed(s.start())
    s.sent_bytes()
    with pytest.raises(RemoteProtocolError, match="offers frame_max 1000, below the 4096") as info:
        s.feed(s.tune(frame_max=1000))
    assert info.value.reply_code == 502
    assert [m.reply_code for m in closes_sent(s)] == [502]
    assert s.core.state is ConnState.ERROR


@both
def test_tune_ok_tells_the_server_the_agreed_values(protocol: str) -> None:
    s = Scripted(protocol, channel_max=0, frame_max=1000, heartbeat=0)
    s.feed(s.start())
    s.sent_bytes()
    s.feed(s.tune(channel_max=0, frame_max=0, heartbeat=0))
    [(_, tune_ok), _open] = s.sent_methods()
    assert tune_ok == s.m("connection.tune-ok", channel_max=65535, frame_max=4096, heartbeat=0)


@both
def test_open_ok_gives_connection_opened_with_tuned_values(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start(product="RabbitMQ"))
    s.feed(s.tune(channel_max=10, frame_max=16384, heartbeat=5))
    events = s.feed(s.frame(0, "connection.open-ok"))
    assert events == [ev.ConnectionOpened({"product": "RabbitMQ"}, 10, 16384, 5, protocol)]
    assert s.core.state is ConnState.OPEN


def _server_phases(s: Scripted) -> list[bytes]:
    # The server side of a session in three phases, between which the client makes its
    # requests: the handshake; the channel's open-ok; then a declare-ok, a delivery in three
    # body frames, a heartbeat, a flow and the channel's close.
    return [
        s.start() + s.frame(0, "connection.secure", challenge=b"x")
        + s.tune(channel_max=5, frame_max=4096, heartbeat=0) + s.frame(0, "connection.open-ok"),
        s.frame(1, "channel.open-ok"),
        b"".join(
            [
                s.frame(1, "queue.declare-ok", queue="q", message_count=3, consumer_count=1),
                s.deliver(1, b"0123456789" * 3, chunk=11, content_type="text/plain"),
                HEARTBEAT_FRAME,
                s.frame(1, "channel.flow", active=False),
                s.frame(1, "channel.close", reply_code=404, reply_text="NOT_FOUND - no queue 'q'",
                        class_id=50, method_id=10),
            ]
        ),
    ]


def _run_script(protocol: str, chunks_of: Any) -> tuple[list[ev.Event], bytes]:
    s = Scripted(protocol)
    sent = s.core.data_to_send()
    events: list[ev.Event] = []
    requests: list[Callable[[], object]] = [
        lambda: s.core.open_channel(),
        lambda: s.core.send_method(1, s.m("queue.declare", queue="q")),
        lambda: None,
    ]
    for phase, request in zip(_server_phases(s), requests):
        for chunk in chunks_of(phase):
            events.extend(s.feed(chunk))
            sent += s.core.data_to_send()
        request()
        sent += s.core.data_to_send()
    return events, sent


@both
@pytest.mark.parametrize("how", ["whole", "bytewise", "seed1", "seed2", "seed3"])
def test_whole_bytewise_and_random_splits_give_the_same_events(protocol: str, how: str) -> None:
    def whole(data: bytes) -> list[bytes]:
        return [data]

    def bytewise(data: bytes) -> list[bytes]:
        return [data[i : i + 1] for i in range(len(data))]

    def splits(data: bytes) -> list[bytes]:
        rng = random.Random(how)
        return split_at(data, [rng.randrange(1, len(data)) for _ in range(rng.randrange(1, 40))])

    expected_events, expected_sent = _run_script(protocol, whole)
    events, sent = _run_script(protocol, {"whole": whole, "bytewise": bytewise}.get(how, splits))
    assert norm(events) == norm(expected_events)
    assert sent == expected_sent
    # And what the whole-buffer run produced is itself right:
    s = Scripted(protocol)
    types = [type(e) for e in expected_events]
    assert types == [
        ev.ConnectionOpened, ev.ChannelOpened, ev.MethodReceived, ev.MessageReceived,
        ev.FlowChanged, ev.ChannelClosed,
    ]
    msg, closed = expected_events[3], expected_events[5]
    assert isinstance(msg, ev.MessageReceived) and isinstance(closed, ev.ChannelClosed)
    assert msg.body == b"0123456789" * 3
    assert msg.properties == s.props(content_type="text/plain")
    assert isinstance(closed.error, NotFound)
    assert expected_sent[:8] == s.spec.PROTOCOL_HEADER
    frames = parse_client_bytes(s.spec, expected_sent[8:])
    assert all(isinstance(f, MethodFrame) for f in frames), frames
    assert [(f.channel, f.method.NAME) for f in frames if isinstance(f, MethodFrame)] == [
        (0, "connection.start-ok"),
        (0, "connection.secure-ok"),
        (0, "connection.tune-ok"),
        (0, "connection.open"),
        (1, "channel.open"),
        (1, "queue.declare"),
        (1, "channel.flow-ok"),
        (1, "channel.close-ok"),
    ]


# =========================================================================== version mismatch


@pytest.mark.parametrize(
    "protocol, theirs, named",
    [
        ("0-9-1", b"AMQP\x01\x01\x00\x09", ["0-9-1", "0-9"]),
        ("0-9-1", b"AMQP\x01\x01\x08\x00", ["0-9-1", "0-8"]),
        ("0-8", b"AMQP\x00\x00\x09\x01", ["0-8", "0-9-1"]),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_server_protocol_header_is_a_version_mismatch(
    protocol: str, theirs: bytes, named: list[str], bytewise: bool
) -> None:
    s = Scripted(protocol)
    s.sent_bytes()
    with pytest.raises(VersionMismatch) as info:
        if bytewise:
            for i in range(len(theirs)):
                assert s.feed(theirs[i : i + 1]) == [], f"raised early at byte {i}"
        else:
            s.feed(theirs)
    message = str(info.value)
    for name in named:
        assert f"AMQP {name}" in message
    assert isinstance(info.value, RemoteProtocolError)
    assert s.core.state is ConnState.ERROR
    assert s.core.data_to_send() == b""
    with pytest.raises(VersionMismatch):
        s.feed(b"")


def test_partial_header_like_prefix_then_frames_is_not_a_mismatch() -> None:
    # b"AM" could start a header; once the rest is not "QP" the bytes are frames (and here a
    # frame type 0x41 is garbage, so a frame error, not a version mismatch).
    s = Scripted()
    assert s.feed(b"AM") == []
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(b"XY\x00\x00\x00\x00\xce")
    assert not isinstance(info.value, VersionMismatch)
    assert info.value.reply_code == 501


NOT_AMQP = {
    "http": b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 150\r\n\r\n",
    "smtp": b"220 mail.example.com ESMTP Postfix\r\n",
    "ssh": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    "tls-alert": b"\x15\x03\x03\x00\x02\x02\x46",
    "one-byte": b"\x00",
    "frame-on-channel-1": b"\x01\x00\x01\x00\x00\x00\x04\x00\x0a\x00\x0a\xce",
}


@both
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("answer", list(NOT_AMQP.values()), ids=list(NOT_AMQP))
def test_a_server_that_does_not_speak_amqp_is_named_so(protocol: str, answer: bytes, bytewise: bool) -> None:
    # Read as a frame header, b"HTTP/1.1 400" used to be a frame of 1345270070 bytes on
    # channel 21588 (FrameTooLarge): the error must say what the server is not, and show
    # what it sent.
    s = Scripted(protocol)
    s.sent_bytes()
    with pytest.raises(FrameError) as info:
        if bytewise:
            for i in range(len(answer)):
                s.feed(answer[i : i + 1])
        else:
            s.feed(answer)
    error = info.value
    assert type(error) is FrameError and not isinstance(error, (FrameTooLarge, VersionMismatch))
    assert error.reply_code == 501
    message = str(error)
    assert message.startswith("the server does not speak AMQP: it answered the protocol header with b")
    # Byte by byte it is judged at the first byte that cannot begin connection.start.
    shown = answer[: 3 if answer[:2] == b"\x01\x00" else 1] if bytewise else answer[:40]
    assert repr(shown) in message
    assert message.count("...") == (len(answer) > 40 and not bytewise)
    if answer.startswith(b"\x15\x03") and not bytewise:
        assert "amqps://" in message
    assert s.core.state is ConnState.ERROR
    assert s.core.data_to_send() == b""  # no connection.close for a peer that is not AMQP
    with pytest.raises(FrameError):
        s.feed(b"")


def test_the_start_frame_may_come_a_byte_at_a_time() -> None:
    # b"\x01", b"\x00" could be the start of connection.start: not judged before the third.
    s = Scripted()
    start = s.start()
    for i in range(len(start)):
        s.feed(start[i : i + 1])
    s.feed(s.tune())
    assert s.core.state is ConnState.AWAIT_OPEN_OK


# =========================================================================== auth failure


@both
def test_close_403_after_start_ok_is_an_authentication_error(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start())
    s.sent_bytes()
    events = s.feed(
        s.frame(0, "connection.close", reply_code=403,
                reply_text="ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN")
    )
    assert len(events) == 1
    [closed] = events
    assert isinstance(closed, ev.ConnectionClosed)
    assert closed.by_peer is True
    assert isinstance(closed.error, AuthenticationError)
    assert closed.error.reply_code == 403
    assert "Login was refused" in closed.error.reply_text
    assert s.sent_names() == [(0, "connection.close-ok")]
    assert s.core.state is ConnState.CLOSED


@both
def test_eof_while_awaiting_tune_mentions_authentication(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start())
    with pytest.raises(ConnectionLost, match="authentication"):
        s.feed(b"")
    assert s.core.state is ConnState.ERROR


@both
def test_close_530_while_opening_is_the_typed_error(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start())
    s.feed(s.tune())
    s.sent_bytes()
    closed = one(s.feed(s.frame(0, "connection.close", reply_code=530, reply_text="NOT_ALLOWED - vhost")),
                 ev.ConnectionClosed)
    assert isinstance(closed.error, NotAllowed) and closed.by_peer
    assert s.sent_names() == [(0, "connection.close-ok")]


# =========================================================================== channels


@both
def test_channel_ids_count_up_from_1_and_are_reused(protocol: str) -> None:
    s = opened(protocol)
    assert [s.open_channel() for _ in range(3)] == [1, 2, 3]
    # client-initiated close frees 2
    s.core.close_channel(2)
    assert s.sent_methods() == [(2, s.m("channel.close", reply_code=200))]
    assert s.core.channel_state(2) is ChannelState.CLOSING
    assert closed_by_us(s.feed(s.frame(2, "channel.close-ok")), 2)
    assert s.core.channel_state(2) is ChannelState.CLOSED
    # broker-initiated close frees 1
    closed = one(s.feed(s.frame(1, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED")),
                 ev.ChannelClosed)
    assert closed.channel_id == 1 and closed.by_peer
    assert s.sent_names() == [(1, "channel.close-ok")]
    assert s.open_channel() == 1
    assert s.open_channel() == 2
    assert s.open_channel() == 4


@both
def test_a_channel_id_that_is_not_an_int_is_a_type_error(protocol: str) -> None:
    s = opened(protocol)
    for bad in ("1", 1.0, True, None.__class__):
        with pytest.raises(TypeError, match="a channel id is an int"):
            s.core.open_channel(bad)  # type: ignore[arg-type]
    assert s.core.data_to_send() == b""
    assert s.open_channel() == 1


@both
def test_channel_max_exhaustion(protocol: str) -> None:
    s = opened(protocol, tune_channel_max=3)
    assert [s.open_channel() for _ in range(3)] == [1, 2, 3]
    with pytest.raises(LocalProtocolError, match="3 channels"):
        s.core.open_channel()
    assert s.core.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        s.core.open_channel(4)
    with pytest.raises(LocalProtocolError):
        s.core.open_channel(2)  # in use
    assert s.core.data_to_send() == b""
    assert set(s.core._channels) == {1, 2, 3}
    s.feed(s.frame(3, "channel.close", reply_code=404))
    s.sent_bytes()
    assert s.open_channel() == 3


@both
def test_open_channel_with_an_explicit_id(protocol: str) -> None:
    s = opened(protocol)
    assert s.open_channel(5) == 5
    assert [s.open_channel() for _ in range(5)] == [1, 2, 3, 4, 6]


@both
@pytest.mark.parametrize(
    "code, error_type",
    [(404, NotFound), (406, PreconditionFailed), (405, ResourceLocked), (403, AccessRefused)],
)
def test_broker_closes_a_channel_with_the_typed_error(protocol: str, code: int, error_type: type) -> None:
    s = opened(protocol)
    one, two = s.open_channel(), s.open_channel()
    events = s.feed(
        s.frame(one, "channel.close", reply_code=code, reply_text="nope", class_id=50, method_id=10)
    )
    [closed] = events
    assert isinstance(closed, ev.ChannelClosed)
    assert closed.channel_id == one and closed.by_peer
    assert type(closed.error) is error_type and closed.error is not None
    assert closed.error.reply_code == code
    assert (closed.error.class_id, closed.error.method_id) == (50, 10)
    assert s.sent_methods() == [(one, s.m("channel.close-ok"))]
    assert s.core.channel_state(one) is ChannelState.CLOSED
    assert s.core.channel_state(two) is ChannelState.OPEN
    # the other channel still works
    s.core.send_method(two, s.m("queue.declare", queue="q"))
    assert s.sent_names() == [(two, "queue.declare")]
    assert s.feed(s.frame(two, "queue.declare-ok", queue="q")) == [
        ev.MethodReceived(two, s.m("queue.declare-ok", queue="q"))
    ]
    with pytest.raises(ChannelClosedError):
        s.core.send_method(one, s.m("queue.declare", queue="q"))
    assert s.core.data_to_send() == b""


@pytest.mark.parametrize(
    ("protocol", "ids", "caused_by"),
    [
        ("0-9-1", (50, 10), "queue.declare 50/10"),
        ("0-8", (50, 10), "queue.declare 50/10"),
        # The same ids, another method: 0-8's basic.recover is 0-9-1's recover-async.
        ("0-9-1", (60, 100), "basic.recover-async 60/100"),
        ("0-8", (60, 100), "basic.recover 60/100"),
        ("0-8", (30, 10), "access.request 30/10"),
        # Ids this version gives no method: the numbers alone.
        ("0-9-1", (30, 10), "method 30/10"),
        ("0-8", (85, 10), "method 85/10"),
        ("0-9-1", (99, 1), "method 99/1"),
    ],
)
def test_a_close_error_names_the_method_that_caused_it(protocol: str, ids: tuple[int, int], caused_by: str) -> None:
    # The text used to name it by numbers only: "... (caused by method 50/10)".
    s = opened(protocol)
    cid = s.open_channel()
    [closed] = s.feed(
        s.frame(cid, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED - nope",
                class_id=ids[0], method_id=ids[1])
    )
    error = closed.error  # type: ignore[attr-defined]
    assert str(error) == f"406 PRECONDITION_FAILED - nope (caused by {caused_by})"
    assert error.method_name == (None if caused_by.startswith("method") else caused_by.split()[0])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert (copy.reply_code, copy.class_id, copy.method_id) == (406, *ids)
    # A connection.close the same way.
    [gone] = s.feed(
        s.frame(0, "connection.close", reply_code=541, reply_text="INTERNAL_ERROR", class_id=ids[0],
                method_id=ids[1])
    )
    assert str(gone.error) == f"541 INTERNAL_ERROR (caused by {caused_by})"  # type: ignore[attr-defined]


def test_a_close_error_without_a_method_names_none() -> None:
    s = opened()
    cid = s.open_channel()
    [closed] = s.feed(s.frame(cid, "channel.close", reply_code=404, reply_text="NOT_FOUND - gone"))
    assert str(closed.error) == "404 NOT_FOUND - gone"  # type: ignore[attr-defined]
    assert closed.error.method_name is None  # type: ignore[attr-defined]
    assert str(pickle.loads(pickle.dumps(closed.error))) == "404 NOT_FOUND - gone"  # type: ignore[attr-defined]
    # Built by hand (no protocol version to look the ids up in): the numbers, or the name given.
    assert str(PreconditionFailed("x", 406, 50, 10)) == "406 x (caused by method 50/10)"
    assert str(PreconditionFailed("x", 406, 50, 10, method_name="queue.declare")) == (
        "406 x (caused by queue.declare 50/10)"
    )


@both
@pytest.mark.parametrize("active", [False, True])
def test_channel_flow_is_answered_with_flow_ok(protocol: str, active: bool) -> None:
    s = opened(protocol)
    c = s.open_channel()
    assert s.feed(s.frame(c, "channel.flow", active=active)) == [ev.FlowChanged(c, active)]
    assert s.sent_methods() == [(c, s.m("channel.flow-ok", active=active))]


@both
def test_frames_for_a_closing_channel_are_dropped(protocol: str) -> None:
    s = opened(protocol)
    c, other = s.open_channel(), s.open_channel()
    s.core.send_method(c, s.m("queue.declare", queue="q"))
    s.core.close_channel(c)
    assert s.sent_names() == [(c, "queue.declare"), (c, "channel.close")]
    dropped = b"".join(
        [
            s.frame(c, "queue.declare-ok", queue="q"),
            s.deliver(c, b"hello", chunk=2),
            s.deliver(c, b""),
            s.frame(c, "basic.ack", delivery_tag=1),
            s.frame(c, "basic.cancel", consumer_tag="ctag"),
        ]
    )
    assert s.feed(dropped) == []
    assert s.core.data_to_send() == b""  # not even a cancel-ok
    assert s.core._channels[c].c_chunks == []
    # the other channel is not affected
    assert s.feed(s.deliver(other, b"x")) == [
        ev.MessageReceived(other, s.m("basic.deliver", consumer_tag="ctag", delivery_tag=1,
                                      exchange="ex", routing_key="rk"), s.props(), b"x")
    ]
    assert closed_by_us(s.feed(s.frame(c, "channel.close-ok")), c)


@both
def test_close_channel_twice_sends_one_close(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.close_channel(c)
    s.core.close_channel(c)
    assert s.sent_names() == [(c, "channel.close")]


@both
def test_simultaneous_channel_close(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.close_channel(c)
    s.sent_bytes()
    assert s.feed(s.frame(c, "channel.close", reply_code=404, reply_text="x")) == []
    assert s.sent_names() == [(c, "channel.close-ok")]
    closed = one(s.feed(s.frame(c, "channel.close-ok")), ev.ChannelClosed)
    assert closed.channel_id == c and closed.by_peer is False
    assert isinstance(closed.error, NotFound)
    assert s.core.channel_state(c) is ChannelState.CLOSED


@both
def test_method_for_an_unknown_channel_is_a_channel_error(protocol: str) -> None:
    s = opened(protocol)
    s.open_channel()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(7, "queue.declare-ok", queue="q"))
    assert info.value.reply_code == 504
    [close] = closes_sent(s)
    assert close.reply_code == 504
    assert s.core.state is ConnState.ERROR


@both
def test_channel_frame_before_the_connection_is_open(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start())
    s.feed(s.tune())
    s.sent_bytes()
    with pytest.raises(UnexpectedFrame):
        s.feed(s.frame(1, "channel.open-ok"))
    [close] = closes_sent(s)
    assert close.reply_code == 505


@both
def test_channel_open_ok_twice_is_command_invalid(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(c, "channel.open-ok"))
    assert info.value.reply_code == 503


@both
def test_channel_flow_on_a_closing_channel_is_dropped(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.close_channel(c)
    s.sent_bytes()
    assert s.feed(s.frame(c, "channel.flow", active=False)) == []
    assert s.core.data_to_send() == b""
    assert closed_by_us(s.feed(s.frame(c, "channel.close-ok")), c)


@both
def test_close_channel_while_opening(protocol: str) -> None:
    s = opened(protocol)
    c = s.core.open_channel()
    s.core.close_channel(c)
    assert s.sent_names() == [(c, "channel.open"), (c, "channel.close")]
    assert closed_by_us(s.feed(s.frame(c, "channel.open-ok") + s.frame(c, "channel.close-ok")), c)


# =========================================================================== content assembly


def _deliver(s: Scripted, tag: int = 1) -> Any:
    return s.m("basic.deliver", consumer_tag="ctag", delivery_tag=tag, exchange="ex", routing_key="rk")


@both
def test_content_in_one_body_frame(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    props = s.props(content_type="application/json", delivery_mode=2, headers={"k": 1})
    events = s.feed(s.content(c, _deliver(s), b'{"a": 1}', props))
    assert events == [ev.MessageReceived(c, _deliver(s), props, b'{"a": 1}')]
    assert s.core._channels[c].c_method is None


@both
@pytest.mark.parametrize("chunk", [1, 7, 4088])
def test_content_in_many_body_frames(protocol: str, chunk: int) -> None:
    s = opened(protocol, tune_frame_max=4096)
    c = s.open_channel()
    body = bytes(range(256)) * 40  # 10240 bytes: several max-size frames at 4088
    data = s.content(c, _deliver(s), body, chunk=chunk)
    pieces = split_at(data, list(range(0, len(data), 997)))
    events: list[ev.Event] = []
    for piece in pieces:
        events.extend(s.feed(piece))
    assert events == [ev.MessageReceived(c, _deliver(s), s.props(), body)]
    assert isinstance(events[0], ev.MessageReceived) and type(events[0].body) is bytes
    assert s.core._channels[c].c_chunks == []


@both
def test_empty_body_has_no_body_frame(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    data = s.frame(c, _deliver(s)) + s.header(c, 0)
    assert s.feed(data) == [ev.MessageReceived(c, _deliver(s), s.props(), b"")]
    # a body frame now has no header before it
    with pytest.raises(UnexpectedFrame):
        s.feed(s.body(c, b""))


@both
def test_interleaved_contents_on_two_channels(protocol: str) -> None:
    s = opened(protocol)
    a, b = s.open_channel(), s.open_channel()
    data = b"".join(
        [
            s.frame(a, _deliver(s, 1)),
            s.frame(b, _deliver(s, 2)),
            s.header(b, 6),
            s.header(a, 4),
            s.body(a, b"aa"),
            s.body(b, b"bbb"),
            b"\x08\x00\x00\x00\x00\x00\x00\xce",
            s.body(b, b"BBB"),
            s.body(a, b"AA"),
        ]
    )
    assert s.feed(data) == [
        ev.MessageReceived(b, _deliver(s, 2), s.props(), b"bbbBBB"),
        ev.MessageReceived(a, _deliver(s, 1), s.props(), b"aaAA"),
    ]


@both
@pytest.mark.parametrize(
    "case",
    ["method in content", "method before header", "body without header", "body too long",
     "header without method", "content on channel 0"],
)
def test_content_frame_order_violations_are_505(protocol: str, case: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    data = {
        "method in content": s.frame(c, _deliver(s)) + s.header(c, 10) + s.body(c, b"12345")
        + s.frame(c, "basic.ack", delivery_tag=1),
        "method before header": s.frame(c, _deliver(s)) + s.frame(c, _deliver(s, 2)),
        "body without header": s.body(c, b"x"),
        "body too long": s.frame(c, _deliver(s)) + s.header(c, 3) + s.body(c, b"12") + s.body(c, b"34"),
        "header without method": s.header(c, 3),
        "content on channel 0": s.header(0, 3),
    }[case]
    with pytest.raises(UnexpectedFrame) as info:
        s.feed(data)
    assert info.value.reply_code == 505
    [close] = closes_sent(s)
    assert close.reply_code == 505
    assert s.core.state is ConnState.ERROR


def test_header_for_another_content_class_is_505_in_0_8() -> None:
    s = opened("0-8")
    c = s.open_channel()
    with pytest.raises(UnexpectedFrame) as info:
        s.feed(s.frame(c, _deliver(s)) + s.header(c, 3, class_id=s.spec.File.CLASS_ID))
    assert info.value.reply_code == 505
    assert [m.reply_code for m in closes_sent(s)] == [505]


def test_header_for_a_class_without_content_in_0_9_1() -> None:
    # 0-9-1 has one content class; any other class id in a header is unknown to the reader.
    s = opened("0-9-1")
    c = s.open_channel()
    with pytest.raises(UnknownMethod) as info:
        s.feed(s.frame(c, _deliver(s)) + s.header(c, 3, class_id=50))
    assert [m.reply_code for m in closes_sent(s)] == [info.value.reply_code]


@both
def test_max_body_size_discards_without_buffering(protocol: str) -> None:
    s = opened(protocol, max_body_size=100, tune_frame_max=4096)
    c = s.open_channel()
    props = s.props(message_id="big")
    big = s.content(c, _deliver(s, 1), b"x" * 250, props, chunk=50)
    method_and_header, bodies = big[: len(big) - 5 * 58], big[len(big) - 5 * 58 :]
    events = s.feed(method_and_header)
    assert events == [ev.MessageTooLarge(c, _deliver(s, 1), props, 250)]
    for i in range(5):
        assert s.feed(bodies[i * 58 : (i + 1) * 58]) == []
        assert s.core._channels[c].c_chunks == []
    ch = s.core._channels[c]
    assert ch.c_chunks == [] and ch.c_method is None and ch.c_props is None
    # exactly at the limit is fine, and the next content is delivered normally
    events = s.feed(s.content(c, _deliver(s, 2), b"y" * 100, chunk=30))
    assert events == [ev.MessageReceived(c, _deliver(s, 2), s.props(), b"y" * 100)]
    assert s.core.data_to_send() == b""


@both
def test_max_body_size_body_still_checked_for_length(protocol: str) -> None:
    s = opened(protocol, max_body_size=10)
    c = s.open_channel()
    s.feed(s.frame(c, _deliver(s)) + s.header(c, 20) + s.body(c, b"x" * 15))
    with pytest.raises(UnexpectedFrame):
        s.feed(s.body(c, b"x" * 6))


@both
def test_get_ok_and_get_empty_answer_basic_get(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.send_method(c, s.m("basic.get", queue="q"))
    s.core.send_method(c, s.m("basic.get", queue="q"))
    s.sent_bytes()
    get_ok = s.m("basic.get-ok", delivery_tag=1, routing_key="q", message_count=0)
    assert s.feed(s.content(c, get_ok, b"m")) == [ev.MessageReceived(c, get_ok, s.props(), b"m")]
    assert s.feed(s.frame(c, "basic.get-empty")) == [ev.MethodReceived(c, s.m("basic.get-empty"))]
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.content(c, get_ok, b"m"))
    assert info.value.reply_code == 503


@both
def test_too_large_get_ok_still_answers_the_get(protocol: str) -> None:
    s = opened(protocol, max_body_size=10)
    c = s.open_channel()
    s.core.send_method(c, s.m("basic.get", queue="q"))
    s.sent_bytes()
    get_ok = s.m("basic.get-ok", delivery_tag=1, routing_key="q")
    assert s.feed(s.content(c, get_ok, b"x" * 20)) == [ev.MessageTooLarge(c, get_ok, s.props(), 20)]
    s.core.send_method(c, s.m("queue.declare", queue="q"))
    s.sent_bytes()
    assert s.feed(s.frame(c, "queue.declare-ok", queue="q")) == [
        ev.MethodReceived(c, s.m("queue.declare-ok", queue="q"))
    ]


def _nested_table(depth: int) -> bytes:
    table = b"\x00\x00\x00\x00"
    for _ in range(depth - 1):
        body = b"\x01aF" + table
        table = struct.pack(">I", len(body)) + body
    return table


def _poison_header(channel: int, body_size: int) -> bytes:
    """A content header whose frame is sound but whose headers table nests 70 deep: a
    publisher (pika, say) can send it and RabbitMQ passes it on unread."""
    payload = struct.pack(">HHQH", 60, 0, body_size, 0x2000) + _nested_table(70)
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


@both
@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_credentials_too_long_for_the_first_frames_fail_clearly(protocol: str, mechanism: str) -> None:
    # Before connection.tune no frame may exceed frame-min-size (4096): RabbitMQ dropped a
    # connection whose start-ok carried a 5000-character token, saying nothing of why.
    secret = "t0ken" * 1000
    s = Scripted(protocol, password=secret, auth_mechanism=mechanism)
    s.sent_bytes()
    with pytest.raises(LocalProtocolError, match="start-ok would be a 5[0-9]{3}-byte frame") as info:
        s.feed(s.start())
    assert "4096 bytes allowed before connection.tune" in str(info.value)
    assert secret not in str(info.value) and "t0ken" not in str(info.value)
    assert s.core.data_to_send() == b"" and s.core.state is ConnState.ERROR
    # a long one that fits is sent
    s = Scripted(protocol, password="t0ken" * 600, auth_mechanism=mechanism)
    s.handshake()


def test_update_secret_too_long_for_frame_max_is_refused() -> None:
    s = opened("0-9-1", frame_max=4096, tune_frame_max=4096)
    with pytest.raises(LocalProtocolError, match="more than the negotiated frame_max of 4096"):
        s.core.update_secret("x" * 5000, "refresh")
    assert s.core.data_to_send() == b""
    s.core.update_secret("x" * 3000, "refresh")
    assert s.sent_names() == [(0, "connection.update-secret")]


@both
def test_a_message_whose_properties_do_not_decode_is_reported_alone(protocol: str) -> None:
    # It used to be a DecodeError for the whole connection, on every reconnect too, since
    # the broker requeued the message: one bad publish stopped every consumer of the queue.
    s = opened(protocol)
    c = s.open_channel()
    deliver = _deliver(s, 1)
    events = s.feed(s.frame(c, deliver) + _poison_header(c, 250))
    [event] = events
    assert type(event) is ev.MessageUndecodable
    assert (event.channel_id, event.method, event.body_size) == (c, deliver, 250)
    assert isinstance(event.error, DecodeError) and "nested deeper" in str(event.error)
    for _ in range(5):  # its body is dropped as it comes, unbuffered
        assert s.feed(s.body(c, b"x" * 50)) == []
        assert s.core._channels[c].c_chunks == []
    assert s.feed(s.deliver(c, b"next", tag=2)) == [
        ev.MessageReceived(c, _deliver(s, 2), s.props(), b"next")
    ]
    assert s.core.state is ConnState.OPEN and s.core.data_to_send() == b""
    # an empty body: reported all the same
    [event] = s.feed(s.frame(c, _deliver(s, 3)) + _poison_header(c, 0))
    assert type(event) is ev.MessageUndecodable and event.method.delivery_tag == 3
    # basic.get is answered by one, unreadable as it is
    s.core.send_method(c, s.m("basic.get", queue="q"))
    s.sent_bytes()
    get_ok = s.m("basic.get-ok", delivery_tag=4, routing_key="q")
    [event] = s.feed(s.frame(c, get_ok) + _poison_header(c, 1) + s.body(c, b"z"))
    assert type(event) is ev.MessageUndecodable and event.method == get_ok
    s.core.send_method(c, s.m("queue.declare", queue="q"))
    s.sent_bytes()
    assert s.feed(s.frame(c, "queue.declare-ok", queue="q")) == [
        ev.MethodReceived(c, s.m("queue.declare-ok", queue="q"))
    ]


@both
def test_content_headers_may_be_as_large_as_the_brokers_frame_max(protocol: str) -> None:
    # A consumer with frame_max=4096 gets a 10 kB header that a publisher with 128 KiB
    # frames sent: RabbitMQ does not split headers.
    s = opened(protocol, frame_max=4096, tune_frame_max=131072)
    assert s.core.frame_max == 4096
    c = s.open_channel()
    props = s.props(headers={"h": "x" * 10_000})
    assert s.feed(s.content(c, _deliver(s, 1), b"y" * 9000, props, chunk=4088)) == [
        ev.MessageReceived(c, _deliver(s, 1), props, b"y" * 9000)
    ]
    # body and method frames are still held to the negotiated frame_max
    with pytest.raises(FrameTooLarge):
        s.feed(s.frame(c, _deliver(s, 2)) + s.header(c, 5000) + s.body(c, b"y" * 5000))
    assert [m.reply_code for m in closes_sent(s)] == [501]
    # and headers to what the broker offered
    s = opened(protocol, frame_max=4096, tune_frame_max=8192)
    c = s.open_channel()
    with pytest.raises(FrameTooLarge, match="8192 bytes the broker offered"):
        s.feed(s.content(c, _deliver(s, 1), b"y", props))


@both
def test_server_cancel_is_answered_and_reported(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    assert s.feed(s.frame(c, "basic.cancel", consumer_tag="ct")) == [ev.ConsumerCancelled(c, "ct")]
    assert s.sent_methods() == [(c, s.m("basic.cancel-ok", consumer_tag="ct"))]
    assert s.feed(s.frame(c, "basic.cancel", consumer_tag="ct2", no_wait=True)) == [
        ev.ConsumerCancelled(c, "ct2")
    ]
    assert s.core.data_to_send() == b""


# =========================================================================== confirms (0-9-1)


def _publish(s: Scripted, c: int, body: bytes = b"x", rk: str = "k", mandatory: bool = False) -> int | None:
    return s.core.publish(c, s.m("basic.publish", exchange="ex", routing_key=rk, mandatory=mandatory), None, body)


def test_publishes_get_delivery_tags_in_confirm_mode() -> None:
    s = opened()
    c = s.confirm_channel()
    assert s.core.is_confirm_mode(c)
    assert [_publish(s, c) for _ in range(3)] == [1, 2, 3]
    frames = s.sent_frames()
    assert len(frames) == 9
    for i in range(3):
        method, header, body = content_of(frames[3 * i : 3 * i + 3])
        assert method.NAME == "basic.publish" and header.body_size == 1 and body == b"x"
    assert s.core.unconfirmed() == {c: [1, 2, 3]}
    other = s.open_channel()
    assert _publish(s, other) is None
    assert s.core.unconfirmed() == {c: [1, 2, 3]}


@pytest.mark.parametrize("protocol", ["0-9-1", "0-8"])
def test_core_ack_queues_what_send_method_queues(protocol: str) -> None:
    s = opened(protocol)
    cid = s.open_channel()
    s.core.ack(cid, 7)
    s.core.ack(cid, 2**64 - 1, multiple=True)
    fast = s.sent_bytes()
    s.core.send_method(cid, s.m("basic.ack", delivery_tag=7))
    s.core.send_method(cid, s.m("basic.ack", delivery_tag=2**64 - 1, multiple=True))
    assert fast == s.sent_bytes()
    assert len(fast) == 2 * 21  # frame header 7 + ids 4 + tag 8 + bits 1 + frame-end 1


def test_core_ack_refuses_what_send_method_refuses() -> None:
    s = opened()
    cid = s.open_channel()
    for bad in (-1, 2**64, "7", None):
        with pytest.raises(EncodeError):
            s.core.ack(cid, bad)  # type: ignore[arg-type]
    with pytest.raises(ChannelClosedError):
        s.core.ack(cid + 1, 1)  # never opened
    s.core.close_channel(cid)
    with pytest.raises(ChannelClosedError):
        s.core.ack(cid, 1)  # closing
    assert s.sent_names() == [(cid, "channel.close")]  # no ack queued by any of them
    s.core.close()
    with pytest.raises(ConnectionClosedError):
        s.core.ack(cid, 1)


def test_ack_single_multiple_and_out_of_order() -> None:
    s = opened()
    c = s.confirm_channel()
    for _ in range(6):
        _publish(s, c)
    s.sent_bytes()
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=3)) == [ev.PublishConfirmed(c, [3], True)]
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=1)) == [ev.PublishConfirmed(c, [1], True)]
    assert s.core.unconfirmed() == {c: [2, 4, 5, 6]}
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=4, multiple=True)) == [
        ev.PublishConfirmed(c, [2, 4], True)
    ]
    assert s.core.unconfirmed() == {c: [5, 6]}
    # a duplicate confirm of a settled tag settles nothing
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=2)) == []
    assert s.feed(s.frame(c, "basic.nack", delivery_tag=6)) == [ev.PublishConfirmed(c, [6], False)]
    assert s.feed(s.frame(c, "basic.nack", delivery_tag=0, multiple=True)) == [
        ev.PublishConfirmed(c, [5], False)
    ]
    assert s.core.unconfirmed() == {}
    assert s.core.data_to_send() == b""


def test_ack_for_a_tag_never_published_is_a_protocol_error() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c)
    s.sent_bytes()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(c, "basic.ack", delivery_tag=2))
    assert [m.reply_code for m in closes_sent(s)] == [info.value.reply_code]


def test_multiple_ack_for_a_tag_never_published_is_a_protocol_error() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c)
    s.sent_bytes()
    with pytest.raises(RemoteProtocolError):
        s.feed(s.frame(c, "basic.ack", delivery_tag=100, multiple=True))


def test_ack_on_a_channel_not_in_confirm_mode() -> None:
    s = opened()
    c = s.open_channel()
    _publish(s, c)
    with pytest.raises(RemoteProtocolError):
        s.feed(s.frame(c, "basic.ack", delivery_tag=1))


def _publish_with(s: Scripted, c: int, body: bytes, props: Any, rk: str = "k") -> int | None:
    return s.core.publish(c, s.m("basic.publish", exchange="ex", routing_key=rk, mandatory=True), props, body)


def _return(s: Scripted, c: int, body: bytes, rk: str = "k", props: Any = None) -> list[ev.Event]:
    method = s.m("basic.return", reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key=rk)
    return s.feed(s.content(c, method, body, props))


def _returned_tags(events: list[ev.Event]) -> list[int | None]:
    return [e.delivery_tag for e in events if isinstance(e, ev.MessageReturned)]


def test_return_pairs_with_the_right_publish() -> None:
    s = opened()
    c = s.confirm_channel()
    assert _publish(s, c, b"a", rk="one", mandatory=True) == 1
    assert _publish(s, c, b"b", rk="two", mandatory=True) == 2
    assert _publish(s, c, b"b", rk="two", mandatory=True) == 3
    assert _publish(s, c, b"c", rk="three", mandatory=False) == 4
    s.sent_bytes()

    # A return waits for the confirm that settles its publish...
    assert _return(s, c, b"b", rk="two") == []
    assert _return(s, c, b"b", rk="two") == []
    assert _return(s, c, b"a", rk="one") == []
    # ... unless no mandatory publish could be the one it returns.
    [r] = _return(s, c, b"c", rk="three")
    assert isinstance(r, ev.MessageReturned) and r.delivery_tag is None and r.body == b"c"
    events = s.feed(s.frame(c, "basic.ack", delivery_tag=4, multiple=True))
    # The returns come just before the confirm that settles them.
    assert [type(e) for e in events] == [ev.MessageReturned] * 3 + [ev.PublishConfirmed]
    returns = [e for e in events[:3] if isinstance(e, ev.MessageReturned)]
    assert [(e.delivery_tag, e.body) for e in returns] == [(2, b"b"), (3, b"b"), (1, b"a")]
    assert events[3] == ev.PublishConfirmed(c, [1, 2, 3, 4], True)


def test_return_pairs_with_the_publish_its_confirm_settles_not_an_older_one() -> None:
    # RabbitMQ confirms a persistent message routed to a durable queue only once written,
    # an unroutable one at once: the acks come out of publish order.
    s = opened()
    c = s.confirm_channel()
    assert _publish(s, c, b"same", mandatory=True) == 1  # routed, confirmed later
    assert _publish(s, c, b"same", mandatory=True) == 2  # unroutable
    s.sent_bytes()
    assert _return(s, c, b"same") == []
    events = s.feed(s.frame(c, "basic.ack", delivery_tag=2))
    assert _returned_tags(events) == [2]
    assert events[-1] == ev.PublishConfirmed(c, [2], True)
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=1)) == [ev.PublishConfirmed(c, [1], True)]


def test_return_pairs_by_properties_when_exchange_key_and_body_are_the_same() -> None:
    # A headers exchange routes on the headers: two publishes alike but for them, one routed.
    s = opened()
    c = s.confirm_channel()
    routed = s.props(headers={"k": "a"}, delivery_mode=2)
    unroutable = s.props(headers={"k": "b"})
    assert _publish_with(s, c, b"same", routed) == 1
    assert _publish_with(s, c, b"same", unroutable) == 2
    s.sent_bytes()
    assert _return(s, c, b"same", props=s.props(headers={"k": "b"})) == []
    events = s.feed(s.frame(c, "basic.ack", delivery_tag=2, multiple=True))
    assert _returned_tags(events) == [2]
    assert events[-1] == ev.PublishConfirmed(c, [1, 2], True)


def test_a_held_return_waits_past_confirms_of_other_publishes() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish_with(s, c, b"same", s.props(headers={"k": "a"}))
    _publish(s, c, b"other", mandatory=True)
    _publish_with(s, c, b"same", s.props(headers={"k": "b"}))
    s.sent_bytes()
    assert _return(s, c, b"same", props=s.props(headers={"k": "b"})) == []
    # Tags 1 and 2: the same body and key as tag 1, but not its headers, and tag 3 matches
    # exactly: this confirm is not the return's.
    assert s.feed(s.frame(c, "basic.ack", delivery_tag=2, multiple=True)) == [
        ev.PublishConfirmed(c, [1, 2], True)
    ]
    events = s.feed(s.frame(c, "basic.ack", delivery_tag=3))
    assert _returned_tags(events) == [3]


def test_a_return_whose_properties_the_broker_changed_still_pairs() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish_with(s, c, b"x", s.props(headers={"BCC": ["q"], "k": 1}))
    s.sent_bytes()
    assert _return(s, c, b"x", props=s.props(headers={"k": 1})) == []
    events = s.feed(s.frame(c, "basic.ack", delivery_tag=1))
    assert _returned_tags(events) == [1]


def test_held_returns_are_reported_when_the_channel_closes() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c, b"a", mandatory=True)
    s.sent_bytes()
    assert _return(s, c, b"a") == []
    events = s.feed(s.frame(c, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED"))
    [returned, closed] = events
    assert isinstance(returned, ev.MessageReturned) and isinstance(closed, ev.ChannelClosed), events
    assert returned.delivery_tag is None and returned.body == b"a"
    assert closed.unconfirmed == (1,)


def test_held_returns_are_reported_when_the_broker_closes_the_connection() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c, b"a", mandatory=True)
    s.sent_bytes()
    assert _return(s, c, b"a") == []
    events = s.feed(s.frame(0, "connection.close", reply_code=320, reply_text="CONNECTION_FORCED"))
    assert [type(e) for e in events] == [ev.MessageReturned, ev.ConnectionClosed]


def test_held_returns_are_reported_when_the_broker_drops_the_socket_during_our_close() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c, b"a", mandatory=True)
    s.sent_bytes()
    assert _return(s, c, b"a") == []
    s.core.close()
    events = s.feed(b"")  # EOF instead of close-ok: the close stands, the return is kept
    [returned, closed] = events
    assert isinstance(returned, ev.MessageReturned) and isinstance(closed, ev.ConnectionClosed), events
    assert returned.delivery_tag is None and returned.body == b"a"
    assert closed.unconfirmed == {c: [1]}


@both
def test_return_without_confirms_has_no_tag(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    _publish(s, c, b"a", mandatory=True)
    method = s.m("basic.return", reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key="k")
    assert s.feed(s.content(c, method, b"a")) == [ev.MessageReturned(c, method, s.props(), b"a", None)]


def test_eof_reports_unconfirmed_publishes() -> None:
    s = opened()
    c = s.confirm_channel()
    for _ in range(3):
        _publish(s, c)
    s.feed(s.frame(c, "basic.ack", delivery_tag=1))
    assert s.core.unconfirmed() == {c: [2, 3]}
    with pytest.raises(ConnectionLost) as info:
        s.feed(b"")
    assert info.value.unconfirmed == {c: [2, 3]}
    assert s.core.state is ConnState.ERROR


def test_channel_and_connection_close_report_unconfirmed_publishes() -> None:
    s = opened()
    a, b = s.confirm_channel(), s.confirm_channel()
    for _ in range(3):
        _publish(s, a)
        _publish(s, b)
    s.sent_bytes()
    s.feed(s.frame(a, "basic.ack", delivery_tag=1))
    [closed] = s.feed(s.frame(a, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED"))
    assert isinstance(closed, ev.ChannelClosed) and closed.by_peer
    assert list(closed.unconfirmed) == [2, 3]
    assert s.core.unconfirmed() == {b: [1, 2, 3]}
    s.core.close_channel(b)
    s.sent_bytes()
    assert closed_by_us(s.feed(s.frame(b, "channel.close-ok")), b, [1, 2, 3])
    assert s.core.unconfirmed() == {}
    c = s.confirm_channel()
    _publish(s, c)
    conn_closed = one(s.feed(s.frame(0, "connection.close", reply_code=320, reply_text="bye")), ev.ConnectionClosed)
    assert conn_closed.unconfirmed == {c: [1]}


def test_big_publish_is_split_at_frame_max() -> None:
    s = opened(tune_frame_max=4096)
    c = s.open_channel()
    body = bytes(range(256)) * 300  # 76800 bytes: the memoryview path
    s.core.publish(c, s.m("basic.publish", routing_key="k"), s.props(delivery_mode=2), body)
    frames = s.sent_frames()
    method, header, joined = content_of(frames)
    assert joined == body and header.body_size == len(body)
    assert header.properties == s.props(delivery_mode=2)
    assert all(isinstance(f, BodyFrame) and len(f.payload) <= 4096 - 8 for f in frames[2:])


# =========================================================================== synchronous replies


@both
def test_a_reply_nobody_asked_for_is_503(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(c, "queue.declare-ok", queue="q"))
    assert info.value.reply_code == 503
    [close] = closes_sent(s)
    assert close.reply_code == 503


@both
def test_replies_are_consumed_in_order(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.send_method(c, s.m("queue.declare", queue="q"))
    s.core.send_method(c, s.m("queue.bind", queue="q", exchange="ex"))
    s.core.send_method(c, s.m("basic.qos", prefetch_count=10))
    assert s.sent_names() == [(c, "queue.declare"), (c, "queue.bind"), (c, "basic.qos")]
    assert s.feed(s.frame(c, "queue.declare-ok", queue="q")) == [
        ev.MethodReceived(c, s.m("queue.declare-ok", queue="q"))
    ]
    # bind-ok is next, not qos-ok
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(c, "basic.qos-ok"))
    assert info.value.reply_code == 503


@both
def test_replies_in_order_succeed(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.send_method(c, s.m("queue.declare", queue="q"))
    s.core.send_method(c, s.m("basic.qos", prefetch_count=10))
    s.sent_bytes()
    events = s.feed(s.frame(c, "queue.declare-ok", queue="q") + s.frame(c, "basic.qos-ok"))
    assert [e.method.NAME if isinstance(e, ev.MethodReceived) else e for e in events] == ["queue.declare-ok", "basic.qos-ok"]
    assert s.core._channels[c].expect == []


@both
def test_no_wait_requests_expect_no_reply(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.send_method(c, s.m("queue.declare", queue="q", no_wait=True))
    s.core.send_method(c, s.m("exchange.declare", exchange="e", type="direct", no_wait=True))
    assert s.sent_names() == [(c, "queue.declare"), (c, "exchange.declare")]
    with pytest.raises(RemoteProtocolError):
        s.feed(s.frame(c, "queue.declare-ok", queue="q"))


@both
def test_a_request_that_does_not_encode_changes_nothing(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    with pytest.raises(LocalProtocolError):
        s.core.send_method(c, s.m("queue.declare", queue="q" * 300))
    assert s.core.data_to_send() == b""
    s.core.send_method(c, s.m("exchange.declare", exchange="e", type="direct"))
    s.sent_bytes()
    assert s.feed(s.frame(c, "exchange.declare-ok")) == [ev.MethodReceived(c, s.m("exchange.declare-ok"))]


@both
def test_client_flow_is_answered_by_flow_ok(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.send_method(c, s.m("channel.flow", active=False))
    assert s.sent_names() == [(c, "channel.flow")]
    assert s.feed(s.frame(c, "channel.flow-ok", active=False)) == [
        ev.MethodReceived(c, s.m("channel.flow-ok", active=False))
    ]
    with pytest.raises(RemoteProtocolError):
        s.feed(s.frame(c, "channel.flow-ok", active=False))


@both
@pytest.mark.parametrize("name", ["basic.publish", "basic.reject"])
def test_client_only_methods_from_the_server_are_refused(protocol: str, name: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    method = s.m(name)
    data = s.content(c, method, b"x") if method.HAS_CONTENT else s.frame(c, method)
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(data)
    assert info.value.reply_code == 503


@both
@pytest.mark.parametrize(
    "what", ["basic.deliver", "basic.deliver, frame by frame", "basic.consume-ok", "basic.qos-ok", "basic.cancel"]
)
def test_a_method_on_a_channel_before_its_open_ok_is_refused(protocol: str, what: str) -> None:
    """The server must answer channel.open before it says anything else on the channel:
    anything else first is a violation (503), not something to drop unseen -- a delivery
    dropped so would be a message lost without a word."""
    s = opened(protocol)
    c = s.core.open_channel()
    assert s.sent_names() == [(c, "channel.open")]
    name = what.split(",")[0]
    if name == "basic.deliver":
        data = s.content(c, _deliver(s), b"body", chunk=2 if "frame by frame" in what else None)
    elif name in ("basic.cancel", "basic.consume-ok"):
        data = s.frame(c, name, consumer_tag="ctag")
    else:
        data = s.frame(c, name)
    with pytest.raises(RemoteProtocolError, match="before channel.open-ok") as info:
        s.feed(data)
    assert info.value.reply_code == 503
    assert s.sent_names() == [(0, "connection.close")]


# =========================================================================== local errors


@both
@pytest.mark.parametrize(
    "name, fields",
    [
        ("basic.deliver", {}),
        ("basic.get-ok", {}),
        ("channel.open-ok", {}),
        ("queue.declare-ok", {}),
        ("basic.publish", {}),  # content: use publish()
        ("channel.open", {}),  # open_channel()
        ("channel.close", {}),  # close_channel()
        ("connection.close", {}),  # close()
        ("connection.tune-ok", {}),
    ],
)
def test_send_method_refuses(protocol: str, name: str, fields: dict[str, Any]) -> None:
    s = opened(protocol)
    c = s.open_channel()
    with pytest.raises(LocalProtocolError):
        s.core.send_method(c, s.m(name, **fields))
    assert s.core.data_to_send() == b""
    assert s.core.state is ConnState.OPEN
    assert s.core._channels[c].expect == []


@both
def test_publish_refuses_a_method_without_content(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    with pytest.raises(LocalProtocolError):
        s.core.publish(c, s.m("queue.declare"), None, b"x")
    assert s.core.data_to_send() == b""


@both
@pytest.mark.parametrize("stage", ["await-start", "await-tune", "await-open-ok"])
def test_requests_before_the_connection_is_open(protocol: str, stage: str) -> None:
    s = Scripted(protocol)
    if stage != "await-start":
        s.feed(s.start())
    if stage == "await-open-ok":
        s.feed(s.tune())
    assert s.core.state.value == stage
    s.core.data_to_send()
    with pytest.raises(LocalProtocolError):
        s.core.open_channel()
    with pytest.raises(LocalProtocolError):
        s.core.send_method(1, s.m("queue.declare"))
    with pytest.raises(LocalProtocolError):
        s.core.publish(1, s.m("basic.publish"), None, b"x")
    with pytest.raises(LocalProtocolError):
        s.core.close_channel(1)
    assert s.core.data_to_send() == b""
    assert s.core.state.value == stage


@both
def test_requests_on_a_closed_channel(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.feed(s.frame(c, "channel.close", reply_code=404, reply_text="gone"))
    s.sent_bytes()
    with pytest.raises(ChannelClosedError):
        s.core.send_method(c, s.m("queue.declare"))
    with pytest.raises(ChannelClosedError):
        s.core.publish(c, s.m("basic.publish"), None, b"x")
    with pytest.raises(ChannelClosedError):
        s.core.close_channel(c)
    with pytest.raises(ChannelClosedError):
        s.core.send_method(99, s.m("queue.declare"))
    assert s.core.data_to_send() == b""


@both
def test_requests_on_a_channel_still_opening_are_local_errors(protocol: str) -> None:
    # The channel is not closed: the caller must wait for ChannelOpened.  So the error is
    # a plain LocalProtocolError that says so, not a ChannelClosedError.
    s = opened(protocol)
    c = s.core.open_channel()
    s.sent_bytes()
    requests: list[Callable[[], object]] = [
        lambda: s.core.send_method(c, s.m("queue.declare")),
        lambda: s.core.publish(c, s.m("basic.publish"), None, b"x"),
        lambda: s.core.ack(c, 1),
    ]
    for request in requests:
        with pytest.raises(LocalProtocolError, match=f"channel {c} is still opening") as info:
            request()
        assert not isinstance(info.value, ChannelClosedError)
        assert "ChannelOpened" in str(info.value)
    assert s.core.data_to_send() == b""
    assert s.core.channel_state(c) is ChannelState.OPENING
    # once open-ok came, the same requests go out
    assert s.feed(s.frame(c, "channel.open-ok")) == [ev.ChannelOpened(c)]
    s.core.send_method(c, s.m("queue.declare"))
    assert s.sent_names() == [(c, "queue.declare")]
    # and closing a channel still opening stays allowed
    c2 = s.core.open_channel()
    s.sent_bytes()
    s.core.close_channel(c2)
    assert s.sent_names() == [(c2, "channel.close")]


def test_confirm_and_tx_exclude_each_other() -> None:
    s = opened()
    c = s.confirm_channel()
    with pytest.raises(LocalProtocolError):
        s.core.send_method(c, s.m("tx.select"))
    t = s.open_channel()
    s.core.send_method(t, s.m("tx.select"))
    s.sent_bytes()
    with pytest.raises(LocalProtocolError):
        s.core.send_method(t, s.m("confirm.select"))
    assert s.core.data_to_send() == b""
    assert not s.core.is_confirm_mode(t)


# =========================================================================== connection close


@both
def test_client_close_drops_channel_frames_until_close_ok(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    s.core.close(reply_code=200, reply_text="bye")
    assert s.core.state is ConnState.CLOSING
    assert s.sent_methods() == [(0, s.m("connection.close", reply_code=200, reply_text="bye"))]
    assert s.feed(s.deliver(c, b"dropped") + s.frame(c, "channel.flow", active=False)) == []
    assert s.core.data_to_send() == b""
    with pytest.raises(ConnectionClosedError):
        s.core.open_channel()
    with pytest.raises(ConnectionClosedError):
        s.core.publish(c, s.m("basic.publish"), None, b"x")
    assert s.core.data_to_send() == b""
    assert s.feed(s.frame(0, "connection.close-ok")) == [ev.ConnectionClosed(None, by_peer=False)]
    assert state(s) is ConnState.CLOSED
    assert s.core.channel_state(c) is ChannelState.CLOSED
    assert s.feed(b"") == []  # EOF after the handshake is normal
    s.core.close()  # idempotent
    assert s.core.data_to_send() == b""


@both
def test_server_close_is_answered_with_close_ok(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    [closed] = s.feed(
        s.frame(0, "connection.close", reply_code=320, reply_text="CONNECTION_FORCED - shutdown")
    )
    assert isinstance(closed, ev.ConnectionClosed)
    assert closed.by_peer is True
    assert isinstance(closed.error, ConnectionForced)
    assert closed.error.reply_code == 320
    assert s.sent_methods() == [(0, s.m("connection.close-ok"))]
    assert s.core.state is ConnState.CLOSED
    assert s.core.channel_state(c) is ChannelState.CLOSED
    assert isinstance(s.core.close_error, ConnectionForced)
    with pytest.raises(ConnectionClosedError) as info:
        s.core.open_channel()
    assert isinstance(info.value.__cause__, ConnectionForced)


@both
def test_frames_after_the_close_that_ended_the_connection_are_discarded(protocol: str) -> None:
    # A delivery behind the broker's connection.close in the same read turned the close
    # into UnexpectedFrame("... before the connection is open"), which every later call
    # then raised instead of the broker's reason.
    s = opened(protocol)
    c = s.open_channel()
    close = s.frame(0, "connection.close", reply_code=320, reply_text="CONNECTION_FORCED - shutdown")
    [closed] = s.feed(close + s.deliver(c, b"in flight", tag=7) + s.frame(0, "connection.close-ok"))
    assert isinstance(closed, ev.ConnectionClosed) and isinstance(closed.error, ConnectionForced)
    assert s.core.state is ConnState.CLOSED and s.core.error is None
    assert s.feed(s.deliver(c, b"later", tag=8) + HEARTBEAT_FRAME) == []
    assert s.feed(b"") == []
    assert s.sent_names() == [(0, "connection.close-ok")]
    with pytest.raises(ConnectionClosedError) as info:
        s.core.open_channel()
    assert isinstance(info.value.__cause__, ConnectionForced)
    # the same after our own close completes
    s = opened(protocol)
    c = s.open_channel()
    s.core.close()
    s.sent_bytes()
    [closed] = s.feed(s.frame(0, "connection.close-ok") + s.deliver(c, b"late", tag=1))
    assert isinstance(closed, ev.ConnectionClosed) and closed.error is None
    assert s.core.state is ConnState.CLOSED and s.core.error is None


@both
def test_server_close_200_has_no_error(protocol: str) -> None:
    s = opened(protocol)
    assert s.feed(s.frame(0, "connection.close", reply_code=200, reply_text="ok")) == [
        ev.ConnectionClosed(None, by_peer=True)
    ]


@both
def test_client_close_with_an_error_code(protocol: str) -> None:
    s = opened(protocol)
    s.core.close(reply_code=320, reply_text="going away")
    s.sent_bytes()
    closed = one(s.feed(s.frame(0, "connection.close-ok")), ev.ConnectionClosed)
    assert closed.by_peer is False and isinstance(closed.error, ConnectionForced)


@both
def test_simultaneous_close(protocol: str) -> None:
    s = opened(protocol)
    s.core.close()
    s.sent_bytes()
    [closed] = s.feed(s.frame(0, "connection.close", reply_code=320, reply_text="shutdown"))
    assert isinstance(closed, ev.ConnectionClosed) and closed.by_peer is False
    assert s.sent_names() == [(0, "connection.close-ok")]
    assert s.core.state is ConnState.CLOSED


@both
def test_simultaneous_close_keeps_the_brokers_reply(protocol: str) -> None:
    # Our close crossed the broker's: its reply code and text say why it closed, and the
    # event, close_error and later refusals must carry them, not our plain 200.
    s = opened(protocol)
    s.core.close()
    s.sent_bytes()
    [closed] = s.feed(
        s.frame(0, "connection.close", reply_code=320, reply_text="CONNECTION_FORCED - shutdown",
                class_id=10, method_id=50)
    )
    assert isinstance(closed, ev.ConnectionClosed) and closed.by_peer is False
    assert isinstance(closed.error, ConnectionForced)
    assert (closed.error.reply_code, closed.error.reply_text) == (320, "CONNECTION_FORCED - shutdown")
    assert (closed.error.class_id, closed.error.method_id) == (10, 50)
    assert s.sent_methods() == [(0, s.m("connection.close-ok"))]  # crossing closes: answer
    assert s.core.close_error is closed.error
    with pytest.raises(ConnectionClosedError) as info:
        s.core.open_channel()
    assert info.value.__cause__ is closed.error
    assert s.core.connection_lost("reset") is closed.error


@both
def test_simultaneous_close_with_a_200_from_the_broker_keeps_our_error(protocol: str) -> None:
    s = opened(protocol)
    s.core.close(reply_code=320, reply_text="going away")
    s.sent_bytes()
    closed = one(s.feed(s.frame(0, "connection.close", reply_code=200, reply_text="ok")), ev.ConnectionClosed)
    assert closed.by_peer is False and isinstance(closed.error, ConnectionForced)
    assert closed.error.reply_text == "going away"


@both
def test_simultaneous_close_then_the_peers_close_ok(protocol: str) -> None:
    s = opened(protocol)
    s.core.close()
    s.feed(s.frame(0, "connection.close", reply_code=320, reply_text="shutdown"))
    s.sent_bytes()
    assert s.feed(s.frame(0, "connection.close-ok")) == []
    assert s.core.data_to_send() == b""


@both
def test_eof_while_closing_completes_the_close(protocol: str) -> None:
    s = opened(protocol)
    s.core.close()
    assert s.feed(b"") == [ev.ConnectionClosed(None, by_peer=False)]


@both
def test_close_before_open_just_closes(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(s.start())
    s.sent_bytes()
    s.core.close()
    assert s.core.state is ConnState.CLOSED
    assert s.core.data_to_send() == b""


@both
@pytest.mark.parametrize("stage", ["await-start", "await-tune", "await-open-ok"])
def test_frames_after_a_close_during_the_handshake_are_discarded(protocol: str, stage: str) -> None:
    # close() before open-ok sends nothing and leaves the driver to drop the transport;
    # what the broker had already sent (the next handshake method, its own close, a
    # heartbeat, even its protocol header) may still be read meanwhile, and is not the
    # broker's fault.
    s = Scripted(protocol)
    late = {"await-start": s.start(), "await-tune": s.tune(), "await-open-ok": s.frame(0, "connection.open-ok")}
    if stage != "await-start":
        s.feed(s.start())
    if stage == "await-open-ok":
        s.feed(s.tune())
    assert s.core.state.value == stage
    s.sent_bytes()
    s.core.close()
    assert s.core.state is ConnState.CLOSED
    for data in (late[stage], HEARTBEAT_FRAME, s.frame(1, "channel.open-ok"),
                 s.frame(0, "connection.close", reply_code=320, reply_text="bye")):
        assert s.feed(data) == []
        assert s.core.state is ConnState.CLOSED and s.core.error is None
    assert s.core.data_to_send() == b""
    assert s.feed(b"") == []


def test_a_protocol_header_after_a_close_before_anything_arrived_is_discarded() -> None:
    s = Scripted()
    s.core.close()
    assert s.feed(b"AMQP\x00\x00\x09\x01") == []
    assert s.core.state is ConnState.CLOSED and s.core.error is None


def test_blocked_and_unblocked() -> None:
    s = opened()
    assert s.feed(s.frame(0, "connection.blocked", reason="low on memory")) == [
        ev.ConnectionBlocked("low on memory")
    ]
    assert s.core.blocked == "low on memory"
    assert s.feed(s.frame(0, "connection.unblocked")) == [ev.ConnectionUnblocked()]
    assert s.core.blocked is None


def test_redirect_in_0_8_is_refused() -> None:
    s = Scripted("0-8")
    s.feed(s.start())
    s.feed(s.tune())
    s.sent_bytes()
    assert s.feed(s.frame(0, "connection.redirect", host="elsewhere:5672")) == []
    [(_, close)] = s.sent_methods()
    assert close.NAME == "connection.close"
    closed = one(s.feed(s.frame(0, "connection.close-ok")), ev.ConnectionClosed)
    assert closed.by_peer is False and "elsewhere" in str(closed.error)


# =========================================================================== heartbeats


@both
def test_heartbeats_are_sent_after_half_the_interval_of_silence(protocol: str) -> None:
    s = opened(protocol, tune_heartbeat=10)
    core = s.core
    core.data_to_send(now=100.0)  # nothing queued: the send clock does not move
    core.receive_data(HEARTBEAT_FRAME, now=100.0)
    core.last_sent = 100.0
    assert core.tick(104.9) is not None
    assert core.data_to_send() == b""
    assert core.tick(105.0) is not None
    assert core.data_to_send(now=105.0) == HEARTBEAT_FRAME
    assert core.tick(109.0) is not None
    assert core.data_to_send() == b""
    # sending something else resets the send clock
    c = s.open_channel()
    core.data_to_send(now=109.0)
    core.send_method(c, s.m("basic.qos", prefetch_count=1))
    core.data_to_send(now=112.0)
    core.tick(116.9)
    assert core.data_to_send() == b""
    core.tick(117.0)
    assert core.data_to_send() == HEARTBEAT_FRAME


@both
def test_receive_silence_over_two_intervals_is_connection_lost(protocol: str) -> None:
    s = opened(protocol, tune_heartbeat=10)
    core = s.core
    core.receive_data(HEARTBEAT_FRAME, now=50.0)
    core.tick(70.0)  # exactly two intervals: still alive
    core.receive_data(HEARTBEAT_FRAME, now=70.0)  # any received bytes reset the clock
    core.tick(90.0)
    with pytest.raises(ConnectionLost, match="heartbeat"):
        core.tick(90.1)
    assert core.state is ConnState.ERROR
    with pytest.raises(ConnectionLost):
        core.receive_data(HEARTBEAT_FRAME)


@both
def test_tick_returns_when_to_tick_again(protocol: str) -> None:
    s = opened(protocol, tune_heartbeat=10)
    core = s.core
    core.receive_data(HEARTBEAT_FRAME, now=0.0)
    core.last_sent = 0.0
    assert core.tick(1.0) == pytest.approx(4.0)
    assert core.tick(5.0) == pytest.approx(5.0)  # heartbeat queued now; next in 5 s
    core.data_to_send(now=5.0)
    assert core.tick(18.0) == pytest.approx(2.0)  # receive deadline (20 s) is nearer


@both
def test_heartbeat_zero_disables_tick(protocol: str) -> None:
    s = opened(protocol, heartbeat=0, tune_heartbeat=0)
    assert s.core.heartbeat == 0
    assert s.core.tick(1e9) is None
    assert s.core.data_to_send() == b""


@both
def test_tick_before_open_does_nothing(protocol: str) -> None:
    s = Scripted(protocol)
    s.sent_bytes()
    assert s.core.tick(1e9) is None
    assert s.core.data_to_send() == b""


# =========================================================================== errors are sticky


@both
@pytest.mark.parametrize(
    "bad, code",
    [
        (b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xcd", 501),  # bad frame end
        (b"\x09\x00\x00\x00\x00\x00\x00\xce", 501),  # unknown frame type
        (b"\x01\x00\x01\x00\x00\x00\x04\x00\x32\x00\x0b\xce", 502),  # queue.declare-ok, no args
        (b"\x01\x00\x01\x00\x00\x00\x04\x03\xe7\x00\x01\xce", 540),  # class 999
        ("unsolicited", 503),
        ("unknown channel", 504),
        ("tune again", 503),
    ],
)
def test_errors_are_sticky_and_close_once(protocol: str, bad: Any, code: int) -> None:
    s = opened(protocol)
    c = s.open_channel()
    if bad == "unsolicited":
        bad = s.frame(c, "queue.delete-ok")
    elif bad == "unknown channel":
        bad = s.frame(9, "channel.close-ok")
    elif bad == "tune again":
        bad = s.tune()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(bad)
    err = info.value
    assert err.reply_code == code
    assert s.core.state is ConnState.ERROR
    assert s.core.error is err
    for later in (lambda: s.feed(s.frame(0, "connection.close-ok")), lambda: s.feed(b""),
                  lambda: s.core.tick(1e9), lambda: s.feed(HEARTBEAT_FRAME)):
        with pytest.raises(RemoteProtocolError) as again:
            later()
        assert raised_again(again.value, err)
    s.core.close()  # nothing more to say
    frames = s.sent_frames()
    assert len(frames) == 1
    [frame] = frames
    assert isinstance(frame, MethodFrame) and frame.channel == 0
    assert frame.method.NAME == "connection.close"
    assert isinstance(frame.method, s.spec.Connection.Close) and frame.method.reply_code == code
    assert s.core.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        s.core.open_channel()


@both
@pytest.mark.parametrize("bad", [
    b"\x09\x00\x00\x00\x00\x00\x00\xce",  # an unknown frame type
    b"\x08\x00\x00\x00\x00\x00\x00\x00",  # a heartbeat whose frame-end octet is wrong
    b"\x01\x00\x01\xff\xff\xff\xff",  # a frame far over frame_max
])
def test_a_bad_frame_in_the_same_read_does_not_void_the_frames_before_it(protocol: str, bad: bytes) -> None:
    """What the frames before a bad one said has happened, however the bytes were split
    into reads: a broker's ack, a no_ack delivery it counts as delivered.  The reader stops
    at the bad frame; the core handles the frames before it, returns their events and
    queues connection.close; the next call raises -- the same as when the bad frame comes
    in a read of its own."""
    for split in (False, True):
        s = opened(protocol)
        c = s.open_channel()
        good = s.frame(c, "channel.flow", active=False)
        if split:
            assert s.feed(good) == [ev.FlowChanged(c, False)]
            with pytest.raises(RemoteProtocolError) as raised:
                s.feed(bad)
        else:
            assert s.feed(good + bad) == [ev.FlowChanged(c, False)]
            assert isinstance(s.core.error, RemoteProtocolError)
            with pytest.raises(RemoteProtocolError) as raised:
                s.feed(b"")
            assert s.core.error is not None and raised_again(raised.value, s.core.error)
        assert s.sent_names() == [(c, "channel.flow-ok"), (0, "connection.close")]
        assert s.core.state is ConnState.ERROR


@both
def test_remote_error_with_a_non_ascii_message_is_still_sticky(protocol: str) -> None:
    # A table the core cannot decode, with a long non-ASCII key the error quotes, in a
    # method's arguments: channel.close's reply_text must still fit in a shortstr.  (In a
    # message's properties it would be that message's problem alone: see
    # test_a_message_whose_properties_do_not_decode_is_reported_alone.)
    s = opened(protocol)
    c = s.open_channel()
    key = ("日" * 85).encode()
    table = bytes([len(key)]) + key + b"Z"  # unknown field type
    # exchange.declare, though no server sends one: its arguments are decoded first.
    payload = s.m("exchange.declare", exchange="x").encode()[:-4]  # without its empty table
    payload += struct.pack(">I", len(table)) + table
    frame = struct.pack(">BHI", 1, c, len(payload)) + payload + b"\xce"
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(frame)
    assert "日日日" in str(info.value)
    assert s.core.state is ConnState.ERROR
    [close] = closes_sent(s)
    assert close.reply_code == info.value.reply_code
    assert len(close.reply_text.encode()) <= 255


def test_unimplemented_mechanism_is_refused_before_anything_is_sent() -> None:
    # A mechanism leveret cannot answer would only fail later, once the server offers it.
    with pytest.raises(LocalProtocolError, match="CRAM-MD5"):
        SansIOConnection(auth_mechanism="CRAM-MD5")


# =========================================================================== EOF


@both
def test_eof_mid_frame(protocol: str) -> None:
    s = opened(protocol)
    c = s.open_channel()
    data = s.frame(c, "basic.qos-ok")
    s.feed(data[:5])
    with pytest.raises(ConnectionLost, match="middle of a frame"):
        s.feed(b"")
    assert s.core.state is ConnState.ERROR


@both
def test_eof_without_close_handshake(protocol: str) -> None:
    s = opened(protocol)
    with pytest.raises(ConnectionLost, match="without a close handshake") as info:
        s.feed(b"")
    assert info.value.unconfirmed == {}


@both
def test_eof_before_start(protocol: str) -> None:
    s = Scripted(protocol)
    s.feed(b"AMQ")
    with pytest.raises(ConnectionLost, match="before connection.start"):
        s.feed(b"")


def test_connection_lost_from_the_driver() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c)
    err = s.core.connection_lost("reset by peer")
    assert isinstance(err, ConnectionLost) and err.unconfirmed == {c: [1]}
    assert s.core.connection_lost("again") is err
    with pytest.raises(ConnectionLost) as info:
        s.feed(HEARTBEAT_FRAME)
    assert info.value is err


def test_channels_read_as_closed_once_the_connection_failed() -> None:
    """channel_state: every channel of a lost connection (or one the peer broke the
    protocol on) is CLOSED, as after a close handshake; the connection's error says why."""
    s = opened()
    c = s.open_channel()
    assert s.core.channel_state(c) is ChannelState.OPEN
    s.core.connection_lost("reset by peer")
    assert s.core.channel_state(c) is ChannelState.CLOSED
    assert s.core.channel_error(c) is None and isinstance(s.core.error, ConnectionLost)
    broken = opened()
    c = broken.open_channel()
    with pytest.raises(RemoteProtocolError):
        broken.feed(b"\x09" + broken.frame(c, "basic.qos-ok")[1:])  # frame type 9
    assert broken.core.channel_state(c) is ChannelState.CLOSED


@pytest.mark.parametrize(
    "option, value",
    [("heartbeat", 65536), ("heartbeat", -5), ("channel_max", -1), ("channel_max", 70000),
     ("frame_max", 2**32), ("frame_max", -1), ("heartbeat", 1.5), ("frame_max", True)],
)
def test_tune_options_that_tune_ok_cannot_carry_are_refused_at_construction(option: str, value: Any) -> None:
    """Refused by the constructor, not by an encode error halfway through the handshake
    (which left the core waiting for a tune it had already had)."""
    with pytest.raises(EncodeError, match=f"{option}=.*0 to"):
        SansIOConnection(**{option: value})
    assert isinstance(EncodeError("x"), ValueError)


@pytest.mark.parametrize("option", ["username", "password", "virtual_host"])
def test_text_that_cannot_be_sent_is_refused_at_construction_without_quoting_it(option: str) -> None:
    """A lone surrogate (os.environ's way with bytes that are not UTF-8) raised a raw
    UnicodeEncodeError, quoting the whole password, from receive_data(connection.start)."""
    with pytest.raises(EncodeError, match=f"{option} is not valid Unicode text") as info:
        options: dict[str, Any] = {option: "caf\udce9-s3cret"}
        SansIOConnection(**options)
    assert "s3cret" not in str(info.value) and info.value.__context__ is None


def test_tune_options_at_their_limits_are_accepted() -> None:
    s = opened(frame_max=2**32 - 1, channel_max=65535, heartbeat=65535)
    assert s.core.frame_max and s.core.channel_max and s.core.state is ConnState.OPEN
    assert opened(frame_max=1).core.frame_max == 4096  # below the minimum: the minimum


def test_repr_hides_the_password() -> None:
    core = SansIOConnection(username="u", password="s3cret")
    assert "s3cret" not in repr(core)


def test_heartbeat_frame_from_server_gives_no_event() -> None:
    s = opened()
    assert s.feed(HEARTBEAT_FRAME * 3) == []
    assert s.core.data_to_send() == b""


def test_sent_frames_helper_reads_heartbeats_and_content() -> None:
    # the helper itself: a heartbeat and a content parse back to frames
    s = opened(tune_heartbeat=10)
    c = s.open_channel()
    s.core.publish(c, s.m("basic.publish"), None, b"abc")
    frames = s.sent_frames()
    assert [type(f) for f in frames] == [MethodFrame, HeaderFrame, BodyFrame]
    s2 = opened(tune_heartbeat=10)
    s2.core.receive_data(HEARTBEAT_FRAME, now=0.0)
    s2.core.tick(5.0)
    assert [type(f) for f in s2.sent_frames()] == [HeartbeatFrame]


# =========================================================================== more bugs


def test_basic_recover_is_answered_by_recover_ok() -> None:
    s = opened("0-9-1")
    c = s.open_channel()
    s.core.send_method(c, s.m("basic.recover", requeue=True))
    assert s.sent_names() == [(c, "basic.recover")]
    assert s.feed(s.frame(c, "basic.recover-ok")) == [ev.MethodReceived(c, s.m("basic.recover-ok"))]


@both
@pytest.mark.parametrize("what", ["method", "header"])
def test_frames_larger_than_frame_max_are_refused(protocol: str, what: str) -> None:
    s = opened(protocol, tune_frame_max=4096)
    c = s.open_channel()
    with pytest.raises(LocalProtocolError):
        if what == "method":
            s.core.send_method(c, s.m("queue.declare", queue="q", arguments={"x": b"y" * 5000}))
        else:
            s.core.publish(c, s.m("basic.publish"), s.props(headers={"h": "z" * 5000}), b"x")
    assert s.core.data_to_send() == b""


@both
def test_every_frame_the_core_sends_fits_frame_max(protocol: str) -> None:
    s = opened(protocol, tune_frame_max=4096)
    c = s.open_channel()
    s.core.send_method(c, s.m("queue.declare", queue="q" * 255, arguments={"x": b"y" * 3000}))
    s.core.publish(c, s.m("basic.publish", routing_key="r" * 255), s.props(headers={"h": "z" * 3000}),
                   b"b" * 20000)
    data = s.sent_bytes()
    at = 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at + 3)
        assert size + 8 <= 4096
        at += size + 8
    assert at == len(data)


def test_publish_on_a_broken_connection_raises_the_sticky_error() -> None:
    s = opened()
    c = s.core.open_channel()  # still opening
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(b"\x09\x00\x00\x00\x00\x00\x00\xce")
    with pytest.raises(RemoteProtocolError) as again:
        s.core.publish(c, s.m("basic.publish"), None, b"x")
    assert raised_again(again.value, info.value)


def test_eof_while_closing_releases_the_channels() -> None:
    s = opened()
    c = s.confirm_channel()
    _publish(s, c)
    s.core.close()
    [closed] = s.feed(b"")
    assert isinstance(closed, ev.ConnectionClosed) and closed.by_peer is False
    assert s.core.state is ConnState.CLOSED
    assert closed.unconfirmed == {c: [1]}
    assert s.core.channel_state(c) is ChannelState.CLOSED


# =========================================================================== odds and ends


@both
def test_broker_refuses_a_channel_open(protocol: str) -> None:
    s = opened(protocol)
    c = s.core.open_channel()
    s.sent_bytes()
    [closed] = s.feed(s.frame(c, "channel.close", reply_code=403, reply_text="ACCESS_REFUSED"))
    assert isinstance(closed, ev.ChannelClosed) and closed.by_peer
    assert isinstance(closed.error, AccessRefused)
    assert s.sent_names() == [(c, "channel.close-ok")]
    assert s.core.channel_state(c) is ChannelState.CLOSED


@both
def test_frames_over_the_negotiated_frame_max_are_501(protocol: str) -> None:
    s = opened(protocol, tune_frame_max=4096)
    c = s.open_channel()
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(s.frame(c, _deliver(s)) + s.header(c, 5000) + s.body(c, b"x" * 5000))
    assert info.value.reply_code == 501
    assert [m.reply_code for m in closes_sent(s)] == [501]


def test_update_secret_0_9_1_only() -> None:
    s = opened("0-9-1")
    s.core.update_secret("token", "refresh")
    assert s.sent_methods() == [(0, s.m("connection.update-secret", new_secret=b"token", reason="refresh"))]
    assert s.feed(s.frame(0, "connection.update-secret-ok")) == [
        ev.MethodReceived(0, s.m("connection.update-secret-ok"))
    ]
    s8 = opened("0-8")
    with pytest.raises(LocalProtocolError):
        s8.core.update_secret("token", "refresh")
    assert s8.core.data_to_send() == b""


def test_channel_alert_in_0_8() -> None:
    s = opened("0-8")
    c = s.open_channel()
    alert = s.m("channel.alert", reply_code=310, reply_text="not delivered", details={})
    assert s.feed(s.frame(c, alert)) == [ev.MethodReceived(c, alert)]
    assert s.core.data_to_send() == b""


@both
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_publish_accepts_any_bytes_like_body(protocol: str, kind: type) -> None:
    s = opened(protocol, tune_frame_max=4096)
    c = s.open_channel()
    body = bytes(range(256)) * 20
    s.core.publish(c, s.m("basic.publish", routing_key="k"), None, kind(body))
    _method, header, joined = content_of(s.sent_frames())
    assert joined == body and header.body_size == len(body)


# =========================================================================== review fixes


@both
def test_connection_methods_crossing_our_close_are_discarded(protocol: str) -> None:
    # A memory alarm (connection.blocked) or an update-secret-ok can cross our
    # connection.close on the wire; the spec says to discard them, not to fail.
    s = opened(protocol)
    s.core.close()
    s.core.data_to_send()
    names = {cls.NAME for cls in s.core.spec.METHODS.values()}
    if "connection.blocked" in names:
        assert s.feed(s.frame(0, "connection.blocked", reason="low on memory")) == []
        assert s.feed(s.frame(0, "connection.unblocked")) == []
    assert s.core.error is None
    [closed] = s.feed(s.frame(0, "connection.close-ok"))
    assert isinstance(closed, ev.ConnectionClosed) and closed.error is None and not closed.by_peer
    assert s.core.state is ConnState.CLOSED


@both
def test_close_with_an_unencodable_reply_text_changes_nothing(protocol: str) -> None:
    s = opened(protocol)
    cid = s.open_channel()
    s.core.data_to_send()
    with pytest.raises(EncodeError):
        s.core.close_channel(cid, 200, "x" * 300)
    assert s.core.channel_state(cid) is ChannelState.OPEN
    s.core.close_channel(cid)  # a later close still goes out
    assert s.sent_names() == [(cid, "channel.close")]
    with pytest.raises(EncodeError):
        s.core.close(200, "x" * 300)
    assert s.core.state is ConnState.OPEN
    s.core.close()
    assert s.sent_names() == [(0, "connection.close")]
    assert state(s) is ConnState.CLOSING


@both
def test_tick_alone_keeps_time_for_data_received_without_now(protocol: str) -> None:
    # The module docstring's loop passes no ``now`` to receive_data: a driver that gives
    # time only to tick() must not see a live connection declared lost.
    s = opened(protocol, tune_heartbeat=10)  # the handshake was fed without now
    core = s.core
    assert core.tick(1000.0) is not None  # monotonic clocks start far from 0
    core.receive_data(HEARTBEAT_FRAME)
    assert core.tick(1015.0) is not None
    core.receive_data(HEARTBEAT_FRAME)
    assert core.tick(1030.0) is not None
    # then the broker falls silent: lost once two intervals pass without a byte
    assert core.tick(1050.0) is not None
    with pytest.raises(ConnectionLost, match="heartbeat"):
        core.tick(1050.1)


def test_events_before_a_violation_in_the_same_data_are_not_lost() -> None:
    # A nack and then a reply nobody asked for, in one read: the nack happened (its tag
    # left the unconfirmed set), so it must come out; the error follows at the next call.
    s = opened()
    cid = s.confirm_channel()
    for _ in range(2):
        s.core.publish(cid, s.m("basic.publish", routing_key="q"), None, b"x")
    s.core.data_to_send()
    data = s.frame(cid, "basic.nack", delivery_tag=1, multiple=False, requeue=False) + s.frame(
        cid, "queue.declare-ok", queue="q", message_count=0, consumer_count=0
    )
    assert s.feed(data) == [ev.PublishConfirmed(cid, [1], False)]
    assert s.core.state is ConnState.ERROR
    assert [m.NAME for _, m in s.sent_methods()] == ["connection.close"]
    assert s.core.unconfirmed() == {cid: [2]}
    with pytest.raises(RemoteProtocolError, match="asked for no such reply") as raised:
        s.feed(b"")
    assert s.core.error is not None and raised_again(raised.value, s.core.error)
    with pytest.raises(RemoteProtocolError):
        s.core.tick(1.0)


@both
def test_calls_on_a_channel_the_broker_closed_raise_with_its_error_as_cause(protocol: str) -> None:
    # ChannelClosedError: "__cause__ holds the broker's error".
    s = opened(protocol)
    cid = s.open_channel()
    closed = one(s.feed(s.frame(cid, "channel.close", reply_code=404, reply_text="NOT_FOUND - q", class_id=50, method_id=10)),
                 ev.ChannelClosed)
    assert isinstance(closed.error, NotFound)
    calls: list[Callable[[], object]] = [
        lambda: s.core.publish(cid, s.m("basic.publish", routing_key="q"), None, b"x"),
        lambda: s.core.send_method(cid, s.m("basic.qos", prefetch_count=1)),
        lambda: s.core.ack(cid, 1),
        lambda: s.core.close_channel(cid),
    ]
    for call in calls:
        with pytest.raises(ChannelClosedError) as raised:
            call()
        assert raised.value.__cause__ is closed.error
    assert s.core.channel_error(cid) is closed.error
    assert s.core.open_channel() == cid  # the id is reused: its old error is forgotten
    assert s.core.channel_error(cid) is None
