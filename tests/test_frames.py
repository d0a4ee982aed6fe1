"""The frame reader and writer: exact bytes, the three ways of feeding, bad input, splitting."""

from __future__ import annotations

import array
import copy
import pickle
import struct
import traceback
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import pytest

from leveret.wire import UndecodableProperties, amqp0_8, amqp0_9_1
from leveret.wire.fields import MAX_DEPTH
from leveret.wire.errors import (
    DecodeError,
    EncodeError,
    FrameError,
    FrameTooLarge,
    RemoteProtocolError,
    UnknownMethod,
)
from leveret.wire.frames import (
    HEARTBEAT_FRAME,
    NEED_DATA,
    BodyFrame,
    ContentFrame,
    Frame,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    body_frame,
    content_frames,
    encode_frame,
    header_frame,
    heartbeat_frame,
    method_frame,
)

SPECS = [amqp0_9_1, amqp0_8]
spec_param = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.NAME)


def frame(frame_type: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + end


def sample_frames(spec: ModuleType) -> list[Frame]:
    basic = spec.Basic
    properties = basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        headers={"x": 1, "nested": {"list": [1, "a", None]}},
        timestamp=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    return [
        MethodFrame(
            0,
            spec.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties={"product": "RabbitMQ", "capabilities": {"publisher_confirms": True}},
                mechanisms=b"PLAIN AMQPLAIN",
                locales=b"en_US",
            ),
        ),
        MethodFrame(
            3,
            basic.Deliver(consumer_tag="ctag", delivery_tag=7, redelivered=True, exchange="ex", routing_key="rk"),
        ),
        HeaderFrame(3, basic.CLASS_ID, 11, properties),
        BodyFrame(3, b"hello "),
        BodyFrame(3, b"world"),
        HeartbeatFrame(0),
        MethodFrame(65535, basic.Ack(delivery_tag=2**64 - 1, multiple=True)),
        HeaderFrame(1, basic.CLASS_ID, 0, basic.Properties()),
    ]


def stream(spec: ModuleType) -> tuple[list[Frame], list[bytes]]:
    frames = sample_frames(spec)
    return frames, [encode_frame(f) for f in frames]


# --------------------------------------------------------------------------- known bytes


def test_known_bytes() -> None:
    ack = amqp0_9_1.Basic.Ack(delivery_tag=5, multiple=True)
    assert method_frame(1, ack) == (
        b"\x01\x00\x01\x00\x00\x00\x0d" + b"\x00\x3c\x00\x50" + b"\x00" * 7 + b"\x05\x01" + b"\xce"
    )
    assert HEARTBEAT_FRAME == heartbeat_frame() == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert encode_frame(HeartbeatFrame()) == HEARTBEAT_FRAME
    assert body_frame(2, b"ab") == b"\x03\x00\x02\x00\x00\x00\x02ab\xce"
    assert header_frame(1, 60, 3, None) == (
        b"\x02\x00\x01\x00\x00\x00\x0e" + b"\x00\x3c\x00\x00" + b"\x00" * 7 + b"\x03" + b"\x00\x00\xce"
    )
    props = amqp0_9_1.Basic.Properties(delivery_mode=2)
    publish = amqp0_9_1.Basic.Publish(exchange="", routing_key="q")
    assert content_frames(1, publish, props, b"hi", 4096) == (
        b"\x01\x00\x01\x00\x00\x00\x0a\x00\x3c\x00\x28\x00\x00\x00\x01q\x00\xce"
        b"\x02\x00\x01\x00\x00\x00\x0f\x00\x3c\x00\x00" + b"\x00" * 7 + b"\x02\x10\x00\x02\xce"
        b"\x03\x00\x01\x00\x00\x00\x02hi\xce"
    )


def test_need_data_sentinel() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert list(type(NEED_DATA)) == [NEED_DATA]  # the only one of its kind
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA
    assert copy.copy(NEED_DATA) is NEED_DATA


def test_frame_values() -> None:
    m = amqp0_9_1.Basic.Ack(delivery_tag=1)
    assert MethodFrame(1, m) == MethodFrame(1, amqp0_9_1.Basic.Ack(delivery_tag=1))
    assert MethodFrame(1, m) != MethodFrame(2, m)
    assert BodyFrame(1, b"x") != HeartbeatFrame(1)
    assert hash(BodyFrame(1, b"x")) == hash(BodyFrame(1, b"x"))
    assert repr(BodyFrame(1, b"x")) == "BodyFrame(channel=1, payload=b'x')"
    assert "+68 bytes" in repr(BodyFrame(1, b"y" * 100))
    assert repr(HeartbeatFrame()) == "HeartbeatFrame(channel=0)"
    assert "Basic.Ack" in repr(MethodFrame(1, m))
    with pytest.raises(AttributeError):
        BodyFrame(1, b"").other = 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- three ways


@spec_param
def test_whole_buffer(spec: ModuleType) -> None:
    frames, chunks = stream(spec)
    reader = FrameReader(spec)
    reader.feed(b"".join(chunks))
    assert reader.buffered == sum(map(len, chunks))
    got = []
    while (f := reader.next_frame()) is not NEED_DATA:
        got.append(f)
    assert got == frames
    assert reader.buffered == 0
    assert reader.next_frame() is NEED_DATA
    reader.feed(b"".join(chunks))
    assert reader.read_frames() == frames
    assert reader.read_frames() == []


@spec_param
def test_one_byte_at_a_time(spec: ModuleType) -> None:
    frames, chunks = stream(spec)
    reader = FrameReader(spec)
    for expected, chunk in zip(frames, chunks):
        for i in range(len(chunk) - 1):
            reader.feed(chunk[i : i + 1])
            assert reader.next_frame() is NEED_DATA
            assert reader.buffered == i + 1
        reader.feed(chunk[-1:])
        assert reader.next_frame() == expected
        assert reader.next_frame() is NEED_DATA
        assert reader.buffered == 0


@spec_param
def test_trailing_bytes(spec: ModuleType) -> None:
    frames, chunks = stream(spec)
    for i, chunk in enumerate(chunks):
        following = b"".join(chunks[i + 1 :])
        for cut in range(len(following) + 1):
            reader = FrameReader(spec)
            reader.feed(chunk + following[:cut])
            assert reader.next_frame() == frames[i]
            assert reader.buffered == cut
            # the rest comes out later, once complete
            reader.feed(following[cut:])
            assert reader.read_frames() == frames[i + 1 :]


@spec_param
def test_random_chunking(spec: ModuleType) -> None:
    frames, chunks = stream(spec)
    data = b"".join(chunks)
    for size in (2, 3, 5, 7, 8, 13, 64):
        reader = FrameReader(spec)
        got: list[Frame] = []
        for i in range(0, len(data), size):
            reader.feed(memoryview(data)[i : i + size])
            got.extend(reader.read_frames())
        assert got == frames


@spec_param
@pytest.mark.parametrize("combine", [False, True])
def test_read_frames_with_data_is_feed_then_read(spec: ModuleType, combine: bool) -> None:
    # What a connection calls once per socket read; chunks of every size, bytes and not.
    frames, chunks = stream(spec)
    data = b"".join(chunks)
    for size in (1, 2, 7, 8, 13, 64, len(data)):
        reader = FrameReader(spec, combine_content=combine)
        reference = FrameReader(spec, combine_content=combine)
        got: list[Frame] = []
        for i in range(0, len(data), size):
            piece = data[i : i + size]
            step = reader.read_frames(piece if i % 2 else bytearray(piece))
            reference.feed(piece)
            assert step == reference.read_frames()
            assert reader.buffered == reference.buffered
            got.extend(step)
        if not combine:
            assert got == frames
        assert reader.buffered == 0
        assert reader.read_frames(b"") == []


def test_big_frame_in_small_pieces_is_not_quadratic() -> None:
    # 4 MiB in 1-byte feeds would take minutes if each feed re-joined the buffer.
    payload = b"z" * (1 << 20)
    data = body_frame(1, payload)
    reader = FrameReader(amqp0_9_1, frame_max=len(data))
    view = memoryview(data)
    for i in range(0, len(data) - 1, 16):
        reader.feed(view[i : min(i + 16, len(data) - 1)])
        if i % 4096 == 0:
            assert reader.next_frame() is NEED_DATA
    assert reader.buffered == len(data) - 1
    reader.feed(data[-1:])
    assert reader.next_frame() == BodyFrame(1, payload)


# --------------------------------------------------------------------------- bad input


def ids(class_id: int, method_id: int) -> bytes:
    return struct.pack(">HH", class_id, method_id)


DELIVER = amqp0_9_1.Basic.Deliver(consumer_tag="c").encode()


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (frame(1, 1, DELIVER, end=b"\x00"), FrameError, 501),
        (frame(8, 0, b"", end=b"\xcf"), FrameError, 501),
        (frame(9, 1, b"abc"), FrameError, 501),
        (frame(0, 1, b""), FrameError, 501),
        (frame(4, 1, b""), FrameError, 501),  # 0-8's oob-method: not spoken by RabbitMQ
        (frame(8, 1, b""), FrameError, 501),
        (frame(8, 0, b"\x00"), FrameError, 501),
        (frame(1, 1, b""), DecodeError, 502),
        (frame(1, 1, b"\x00\x3c\x00"), DecodeError, 502),
        (frame(1, 1, ids(60, 60)), DecodeError, 502),  # deliver with no arguments
        (frame(1, 1, DELIVER + b"\x00"), DecodeError, 502),  # trailing byte
        (frame(1, 1, DELIVER[:-1]), DecodeError, 502),
        (frame(1, 1, ids(999, 1)), UnknownMethod, 540),
        (frame(1, 1, ids(60, 999)), UnknownMethod, 540),
        (frame(2, 1, struct.pack(">HHQH", 50, 0, 0, 0)), UnknownMethod, 540),  # queue: no content
        (frame(2, 1, struct.pack(">HHQ", 60, 0, 0)), DecodeError, 502),
        (frame(2, 1, struct.pack(">HHQH", 60, 0, 0, 0x8000)), DecodeError, 502),  # flag, no value
        (frame(2, 1, struct.pack(">HHQH", 60, 0, 0, 0)) + b"", None, None),  # fine
        (frame(1, 0, ids(10, 10) + b"\x00\x09\x00\x00\x00\x09"), DecodeError, 502),  # bad table
    ],
)
def test_bad_input(data: bytes, error: type[RemoteProtocolError] | None, code: int | None) -> None:
    reader = FrameReader(amqp0_9_1)
    reader.feed(data)
    if error is None:
        assert isinstance(reader.next_frame(), HeaderFrame)
        return
    with pytest.raises(error) as info:
        reader.next_frame()
    assert type(info.value) is error
    assert info.value.reply_code == code
    # the reader stays broken, h11 style: later calls raise a copy caused by the error
    assert reader.error is info.value
    for _ in range(100):
        with pytest.raises(error) as again:
            reader.next_frame()
        assert again.value.__cause__ is reader.error and str(again.value) == str(reader.error)
        assert again.value.reply_code == code
    # each raise starts its own traceback: retrying does not grow the kept one
    assert len(traceback.extract_tb(again.value.__traceback__)) < 10
    with pytest.raises(error):
        reader.read_frames()
    with pytest.raises(error):
        reader.feed(HEARTBEAT_FRAME)


def test_frame_max_enforced_before_buffering() -> None:
    reader = FrameReader(amqp0_9_1)
    assert reader.frame_max == 4096
    # exactly frame_max is fine
    reader.feed(body_frame(1, b"a" * 4088))
    assert reader.next_frame() == BodyFrame(1, b"a" * 4088)
    # one more byte is not, and it is refused on the header alone
    reader.feed(struct.pack(">BHI", 3, 1, 4089))
    with pytest.raises(FrameTooLarge) as info:
        reader.next_frame()
    assert info.value.reply_code == 501
    assert reader.buffered == 7
    # a size near 2**32 is refused just the same, without waiting for (or allocating) it
    reader = FrameReader(amqp0_9_1, frame_max=131072)
    reader.feed(b"\x03\x00\x01\xff\xff\xff\xf7")
    with pytest.raises(FrameTooLarge):
        reader.next_frame()


def test_frame_max_can_be_raised() -> None:
    reader = FrameReader(amqp0_9_1)
    big = body_frame(1, b"b" * 10_000)
    reader.frame_max = 131072
    reader.feed(big)
    assert reader.next_frame() == BodyFrame(1, b"b" * 10_000)
    with pytest.raises(ValueError):
        reader.frame_max = 0
    with pytest.raises(ValueError):
        FrameReader(amqp0_9_1, frame_max=0)
    assert reader.frame_max == 131072


def nested_table(depth: int) -> bytes:
    """A field table holding a table holding a table... ``depth`` tables in all, built by
    hand (``encode_table`` refuses to nest deeper than MAX_DEPTH)."""
    table = b"\x00\x00\x00\x00"
    for _ in range(depth - 1):
        body = b"\x01a" + b"F" + table
        table = struct.pack(">I", len(body)) + body
    return table


def header_with(channel: int, values: bytes, flags: int = 0x2000, body_size: int = 3) -> bytes:
    """A basic content header frame whose property flags and values are given as bytes."""
    return frame(2, channel, struct.pack(">HHQH", 60, 0, body_size, flags) + values)


@pytest.mark.parametrize("combine", [False, True])
def test_undecodable_properties_break_a_strict_reader_only(combine: bool) -> None:
    deliver = amqp0_9_1.Basic.Deliver(consumer_tag="c", delivery_tag=7, routing_key="q")
    poison = [
        nested_table(MAX_DEPTH + 6),  # deeper than leveret reads; pika reads it
        struct.pack(">I", 6) + b"\x01aZ\x00\x00\x00",  # no type letter Z
        struct.pack(">I", 9) + b"\x01aS\x00\x00\x00\x09",  # a string running past the table
    ]
    good = content_frames(1, deliver, amqp0_9_1.Basic.Properties(content_type="t"), b"abc", 4096)
    assert isinstance(good, bytes)
    for values in poison:
        data = method_frame(1, deliver) + header_with(1, values) + frame(3, 1, b"abc") + good
        # By default (the wire layer for protocol testing): a DecodeError, the reader broken.
        reader = FrameReader(amqp0_9_1, combine_content=combine)
        frames = reader.read_frames(data)
        with pytest.raises(DecodeError):
            reader.read_frames()
        assert [type(f) for f in frames] == [MethodFrame]
        # Lenient (the client's): that one header is returned as it came; the rest reads on.
        reader = FrameReader(amqp0_9_1, combine_content=combine, lenient_properties=True)
        frames = reader.read_frames(data)
        assert [type(f) for f in frames] == [MethodFrame, HeaderFrame, BodyFrame] + (
            [ContentFrame] if combine else [MethodFrame, HeaderFrame, BodyFrame]
        )
        header = frames[1]
        assert isinstance(header, HeaderFrame) and header.body_size == 3
        props = header.properties
        assert isinstance(props, UndecodableProperties) and props.class_id == 60
        assert props.raw == struct.pack(">H", 0x2000) + values and props.encode() == props.raw
        assert isinstance(props.error, DecodeError)
        assert "UndecodableProperties(class_id=60" in repr(props)
        assert reader.error is None and reader.read_frames() == []
        last = frames[-1] if combine else frames[-2]
        assert isinstance(last, (ContentFrame, HeaderFrame))
        assert last.properties == amqp0_9_1.Basic.Properties(content_type="t")
    # A frame that is itself unsound still breaks even a lenient reader.
    reader = FrameReader(amqp0_9_1, lenient_properties=True)
    with pytest.raises(FrameError):
        reader.read_frames(header_with(1, b"")[:-1] + b"\x00")


def test_header_frames_may_be_as_large_as_header_frame_max() -> None:
    # RabbitMQ sends a publisher's content header whole, whatever frame_max its consumer
    # negotiated: the client accepts headers up to the frame_max the broker offered.
    big = amqp0_9_1.Basic.Properties(headers={"h": "x" * 10_000})
    header = header_frame(1, 60, 3, big)
    assert 10_000 < len(header) < 10_100
    strict = FrameReader(amqp0_9_1, frame_max=4096)
    with pytest.raises(FrameTooLarge, match="exceeds frame_max 4096"):
        strict.read_frames(header)
    reader = FrameReader(amqp0_9_1, frame_max=4096, header_frame_max=131072)
    assert reader.header_frame_max == 131072
    [read] = reader.read_frames(header)
    assert isinstance(read, HeaderFrame) and read.properties == big
    # only header frames: a body or method frame that large is still refused
    with pytest.raises(FrameTooLarge, match="exceeds frame_max 4096"):
        reader.read_frames(body_frame(1, b"b" * 5000))
    reader = FrameReader(amqp0_9_1, frame_max=4096, header_frame_max=8192)
    with pytest.raises(FrameTooLarge, match="the 8192 bytes the broker offered"):
        reader.read_frames(header)
    # below frame_max it changes nothing
    reader = FrameReader(amqp0_9_1, frame_max=131072, header_frame_max=4096)
    assert reader.header_frame_max == 131072
    assert reader.read_frames(header) == [read]
    with pytest.raises(ValueError):
        FrameReader(amqp0_9_1, header_frame_max=0)


def test_frames_before_an_error_are_returned_by_next_frame() -> None:
    reader = FrameReader(amqp0_9_1)
    reader.feed(HEARTBEAT_FRAME + frame(9, 0, b""))
    assert reader.next_frame() == HeartbeatFrame(0)
    with pytest.raises(FrameError):
        reader.next_frame()


def test_frames_before_an_error_are_returned_by_read_frames_too() -> None:
    # One read holding good frames and then a bad one: the good ones come out (what they
    # say has happened), the reader says why it stopped, and the next call raises.
    reader = FrameReader(amqp0_9_1, combine_content=True)
    ack = amqp0_9_1.Basic.Ack(delivery_tag=7).encode_frame(1)
    assert reader.read_frames(HEARTBEAT_FRAME + ack + frame(9, 0, b"")) == [
        HeartbeatFrame(0), MethodFrame(1, amqp0_9_1.Basic.Ack(delivery_tag=7)),
    ]
    assert isinstance(reader.error, FrameError)
    for call in (reader.read_frames, lambda: reader.read_frames(HEARTBEAT_FRAME), reader.next_frame):
        with pytest.raises(FrameError) as raised:
            call()
        assert raised.value.__cause__ is reader.error and str(raised.value) == str(reader.error)
    # A bad frame first: raised at once, as ever.
    reader = FrameReader(amqp0_9_1)
    with pytest.raises(FrameError):
        reader.read_frames(frame(9, 0, b"") + HEARTBEAT_FRAME)


# --------------------------------------------------------------------------- writer


def read_all(spec: ModuleType, data: bytes | list[Any], frame_max: int) -> list[Frame]:
    reader = FrameReader(spec, frame_max=max(frame_max, 4096))
    if isinstance(data, list):
        for piece in data:
            reader.feed(piece)
    else:
        reader.feed(data)
    frames = reader.read_frames()
    assert reader.buffered == 0
    return frames


def body_of(frames: list[Frame]) -> bytes:
    return b"".join(f.payload for f in frames if isinstance(f, BodyFrame))


@spec_param
@pytest.mark.parametrize("frame_max", [4096, 131072])
@pytest.mark.parametrize("delta", [-1, 0, 1, None])
def test_body_split(spec: ModuleType, frame_max: int, delta: int | None) -> None:
    size = 0 if delta is None else frame_max - 8 + delta  # frame_max-9, -8, -7 or empty
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    publish = spec.Basic.Publish(exchange="e", routing_key="r")
    props = spec.Basic.Properties(message_id="m")
    frames = read_all(spec, content_frames(5, publish, props, body, frame_max), frame_max)
    assert frames[0] == MethodFrame(5, publish)
    assert frames[1] == HeaderFrame(5, spec.Basic.CLASS_ID, size, props)
    bodies = frames[2:]
    assert body_of(bodies) == body
    assert all(f.channel == 5 for f in bodies)
    expected_sizes = [frame_max - 8] * (size // (frame_max - 8))
    if size % (frame_max - 8):
        expected_sizes.append(size % (frame_max - 8))
    assert [len(f.payload) for f in bodies] == expected_sizes  # type: ignore[attr-defined]


@spec_param
def test_big_body_is_not_copied(spec: ModuleType) -> None:
    body = bytearray(b"0123456789abcdef" * (5 * 1024 * 1024 // 16))  # 5 MiB
    frame_max = 131072
    out = content_frames(1, spec.Basic.Publish(routing_key="q"), None, body, frame_max)
    assert isinstance(out, list)
    views = [piece for piece in out if isinstance(piece, memoryview)]
    assert len(views) == -(-len(body) // (frame_max - 8))
    assert all(view.obj is body for view in views)
    assert sum(len(v) for v in views) == len(body)
    assert not any(isinstance(piece, memoryview) for piece in out[:2])
    frames = read_all(spec, out, frame_max)
    assert frames[1] == HeaderFrame(1, 60, len(body), spec.Basic.Properties())
    assert body_of(frames) == body
    assert all(len(f.payload) <= frame_max - 8 for f in frames[2:])  # type: ignore[attr-defined]


def test_big_body_single_frame_and_memoryview_input() -> None:
    body = memoryview(bytes(70_000))
    out = content_frames(1, amqp0_9_1.Basic.Publish(), None, body, 131072)
    assert isinstance(out, list)
    frames = read_all(amqp0_9_1, out, 131072)
    assert [type(f) for f in frames] == [MethodFrame, HeaderFrame, BodyFrame]
    # a memoryview of non-byte items is sent as its bytes
    ints = memoryview(struct.pack(">4I", 1, 2, 3, 4)).cast("I")
    frames = read_all(amqp0_9_1, content_frames(1, amqp0_9_1.Basic.Publish(), None, ints, 4096), 4096)
    assert frames[1].body_size == 16  # type: ignore[attr-defined]
    assert body_of(frames) == ints.tobytes()


def test_small_multi_frame_body_is_one_buffer() -> None:
    out = content_frames(1, amqp0_9_1.Basic.Publish(), None, b"x" * 10_000, 4096)
    assert isinstance(out, bytes)
    assert [len(f.payload) for f in read_all(amqp0_9_1, out, 4096)[2:]] == [4088, 4088, 1824]  # type: ignore[attr-defined]


def test_writer_errors() -> None:
    publish = amqp0_9_1.Basic.Publish()
    with pytest.raises(EncodeError):
        method_frame(65536, publish)
    with pytest.raises(EncodeError):
        method_frame(-1, publish)
    ack = amqp0_9_1.Basic.Ack(delivery_tag=1)  # no content: the base class's encode_frame
    for channel in (-1, 65536):
        with pytest.raises(EncodeError, match=r"basic\.ack: channel .* outside 0\.\.65535"):
            method_frame(channel, ack)
    with pytest.raises(EncodeError):
        content_frames(1, publish, None, "text", 4096)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        content_frames(1, publish, None, b"x" * 10, 8)
    with pytest.raises(EncodeError):
        content_frames(1, amqp0_9_1.Basic.Publish(routing_key="k" * 256), None, b"", 4096)
    with pytest.raises(EncodeError):
        content_frames(1, publish, amqp0_9_1.Basic.Properties(headers={"k": object()}), b"", 4096)
    with pytest.raises(EncodeError):
        header_frame(1, 60, -1, None)


def test_header_and_body_frame_argument_types_are_encode_errors() -> None:
    # Wrong types are the caller's encoding error, said plainly, not a bare TypeError
    # from a comparison or from bytes().
    props = amqp0_9_1.Basic.Properties()
    bad_headers: list[tuple[Any, Any, Any, Any, str]] = [
        ("1", 60, 5, None, r"channel must be an int, not str"),
        (1.0, 60, 5, None, r"channel must be an int, not float"),
        (None, 60, 5, None, r"channel must be an int, not NoneType"),
        (1, "60", 5, None, r"class id must be an int, not str"),
        (1, 60, "5", None, r"body size must be an int, not str"),
        (1, 60, 5.0, None, r"body size must be an int, not float"),
        (1, 60, 5, {"content_type": "x"}, r"properties must be .*ContentProperties.*, not dict"),
    ]
    for channel, class_id, size, properties, message in bad_headers:
        with pytest.raises(EncodeError, match=message):
            header_frame(channel, class_id, size, properties)
    assert header_frame(1, 60, 5, props) == header_frame(1, 60, 5, None)
    bad_bodies: list[tuple[Any, Any, str]] = [
        ("1", b"x", r"channel must be an int, not str"),
        (1.5, b"x", r"channel must be an int, not float"),
        (1, "text", r"payload must be bytes-like .*, not str"),
        (1, 5, r"payload must be bytes-like .*, not int"),
        (1, None, r"payload must be bytes-like .*, not NoneType"),
    ]
    for channel, payload, message in bad_bodies:
        with pytest.raises(EncodeError, match=message):
            body_frame(channel, payload)
    for frame_obj in (HeaderFrame("1", 60, 5, props), BodyFrame(1, "text")):  # type: ignore[arg-type]
        with pytest.raises(EncodeError):
            encode_frame(frame_obj)


def test_body_frame_sizes_a_memoryview_of_wide_items_in_bytes() -> None:
    # len() of a memoryview counts items: the frame's size must count bytes, or the frame
    # end lands inside the payload and the peer sees a corrupt frame.
    payload = memoryview(array.array("i", [1, 2]))
    raw = payload.tobytes()
    assert len(payload) == 2 and len(raw) == 8
    for given in (payload, bytearray(raw), raw):
        frame = body_frame(3, given)
        assert frame == b"\x03\x00\x03\x00\x00\x00\x08" + raw + b"\xce"
        reader = FrameReader(amqp0_9_1, 4096)
        (decoded,) = reader.read_frames(frame)
        assert isinstance(decoded, BodyFrame) and decoded.payload == raw


@pytest.mark.parametrize("class_id", [-1, 65536, 1 << 40])
def test_header_frame_class_id_out_of_range_is_an_encode_error(class_id: int) -> None:
    # A class id is a short on the wire: out of range it must be an EncodeError saying so,
    # not struct's own error (nor a frame with the wrong class).
    with pytest.raises(EncodeError, match=r"class id .* outside 0\.\.65535"):
        header_frame(1, class_id, 5, None)
    with pytest.raises(EncodeError, match=r"class id"):
        encode_frame(HeaderFrame(1, class_id, 5, amqp0_9_1.Basic.Properties()))


# --------------------------------------------------------------------------- combined contents


def content_stream(spec: ModuleType, body: bytes) -> bytes:
    """A basic.deliver with properties and ``body`` on channel 3, for frame_max 4096."""
    basic = spec.Basic
    deliver = basic.Deliver(consumer_tag="ctag", delivery_tag=9, exchange="ex", routing_key="rk")
    props = basic.Properties(content_type="text/plain", headers={"a": 1, "b": "two"}, priority=4)
    data = content_frames(3, deliver, props, body, 4096)
    assert isinstance(data, bytes)
    return data


def read_each(
    spec: ModuleType, data: bytes, combine: bool, chunk: int | None = None
) -> tuple[list[Frame], Any]:
    """Frames read with next_frame (fed whole, or ``chunk`` bytes at a time) and the error
    that stopped the reader, as (type, message), or None."""
    reader = FrameReader(spec, frame_max=4096, combine_content=combine)
    frames: list[Frame] = []
    step = chunk or max(len(data), 1)
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
            while (f := reader.next_frame()) is not NEED_DATA:
                frames.append(f)  # a Frame: type checkers narrow on the sentinel
    except RemoteProtocolError as exc:
        return frames, (type(exc), str(exc))
    return frames, None


def separate(frames: list[Frame]) -> list[Frame]:
    """``frames`` with each ContentFrame written out as the method, header and body frames
    it stands for (the body as one frame)."""
    out: list[Frame] = []
    for f in frames:
        if isinstance(f, ContentFrame):
            out.append(MethodFrame(f.channel, f.method))
            out.append(HeaderFrame(f.channel, f.method.CLASS_ID, len(f.body), f.properties))
            if f.body:
                out.append(BodyFrame(f.channel, f.body))
        else:
            out.append(f)
    return out


def join_bodies(frames: list[Frame]) -> list[Frame]:
    """Consecutive body frames of one channel merged into one, so that a body read in one
    piece compares equal to the same body read frame by frame."""
    out: list[Frame] = []
    for f in frames:
        last = out[-1] if out else None
        if isinstance(f, BodyFrame) and isinstance(last, BodyFrame) and last.channel == f.channel:
            out[-1] = BodyFrame(f.channel, last.payload + f.payload)
        else:
            out.append(f)
    return out


def assert_same_reading(spec: ModuleType, data: bytes, chunk: int | None = None) -> list[Frame]:
    """Reading ``data`` with combine_content gives the same frames (once contents are written
    out) and the same error as reading it without; returns the combined frames."""
    combined, error = read_each(spec, data, True, chunk)
    plain, plain_error = read_each(spec, data, False, chunk)
    assert join_bodies(separate(combined)) == join_bodies(plain)
    assert error == plain_error
    return combined


def combined_content(spec: ModuleType, size: int) -> tuple[bytes, bytes, FrameReader, ContentFrame]:
    """A body of ``size`` bytes, its content_stream() (frame_max 4096), and the combining
    reader that read it with the one ContentFrame it made of it."""
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = content_stream(spec, body)
    reader = FrameReader(spec, frame_max=4096, combine_content=True)
    reader.feed(data)
    [frame] = reader.read_frames()
    assert isinstance(frame, ContentFrame)
    return body, data, reader, frame


@spec_param
@pytest.mark.parametrize("size", [0, 1, 16, 4088, 4089, 10_000])
def test_whole_content_is_one_frame(spec: ModuleType, size: int) -> None:
    # Empty, one body frame (up to frame_max - 8 = 4088 bytes) and several body frames.
    body, data, reader, frame = combined_content(spec, size)
    assert frame.channel == 3 and frame.body == body and type(frame.body) is bytes
    assert frame.method == spec.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=9, exchange="ex", routing_key="rk"
    )
    assert frame.properties.headers == {"a": 1, "b": "two"}  # type: ignore[attr-defined]
    assert reader.buffered == 0
    # next_frame likewise; and the frames it stands for are the ones read without combining
    reader.feed(data)
    assert reader.next_frame() == frame
    assert reader.next_frame() is NEED_DATA
    assert assert_same_reading(spec, data) == [frame]


@spec_param
def test_content_fed_byte_by_byte_comes_frame_by_frame(spec: ModuleType) -> None:
    data = content_stream(spec, b"hello")
    frames = assert_same_reading(spec, data, chunk=1)
    assert [type(f) for f in frames] == [MethodFrame, HeaderFrame, BodyFrame]
    # and in bigger pieces, whatever arrives complete behind the method is combined
    for chunk in (2, 7, 30, 60, len(data) - 1):
        frames = assert_same_reading(spec, data, chunk)
        assert join_bodies(separate(frames))[-1] == BodyFrame(3, b"hello")


@spec_param
def test_content_with_trailing_bytes(spec: ModuleType) -> None:
    data = content_stream(spec, b"hello")
    following = method_frame(3, spec.Basic.Ack(delivery_tag=1)) + HEARTBEAT_FRAME
    for cut in range(len(following) + 1):
        reader = FrameReader(spec, frame_max=4096, combine_content=True)
        reader.feed(data + following[:cut])
        frame = reader.next_frame()
        assert isinstance(frame, ContentFrame) and frame.body == b"hello"
        assert reader.buffered == cut
        reader.feed(following[cut:])
        ack = MethodFrame(3, spec.Basic.Ack(delivery_tag=1))
        assert reader.read_frames() == [ack, HeartbeatFrame(0)]


@spec_param
def test_content_missing_its_last_byte_is_not_combined(spec: ModuleType) -> None:
    # The method and header are complete but the body is not: they come out now, one by one.
    data = content_stream(spec, b"hello")
    reader = FrameReader(spec, frame_max=4096, combine_content=True)
    reader.feed(data[:-1])
    assert [type(f) for f in reader.read_frames()] == [MethodFrame, HeaderFrame]
    reader.feed(data[-1:])
    assert reader.read_frames() == [BodyFrame(3, b"hello")]


def irregular_contents(spec: ModuleType) -> dict[str, bytes]:
    """Contents that must not be combined, each next to what it breaks."""
    basic = spec.Basic
    deliver = basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="e", routing_key="r")
    method = method_frame(1, deliver)
    props = basic.Properties(content_type="a/b").encode()
    header = header_frame(1, basic.CLASS_ID, 5, basic.Properties(content_type="a/b"))

    def head(class_id: int = basic.CLASS_ID, channel: int = 1, flags: bytes = props) -> bytes:
        return frame(2, channel, struct.pack(">HHQ", class_id, 0, 5) + flags)

    hel, lo = body_frame(1, b"hel"), body_frame(1, b"lo!")
    return {
        "header on another channel": method + head(channel=2) + body_frame(1, b"hello"),
        "body on another channel": method + header + body_frame(2, b"hello"),
        "heartbeat in between": method + HEARTBEAT_FRAME + header + body_frame(1, b"hello"),
        "header of another class": method + head(class_id=20) + body_frame(1, b"hello"),
        "header of a class without content": method + head(class_id=10) + body_frame(1, b"hello"),
        "no header": method + method_frame(1, basic.Ack()),
        "body too long": method + header + body_frame(1, b"hello!"),
        "body too long in two frames": method + header + hel + lo,
        "body too short": method + header + body_frame(1, b"hell") + method_frame(1, basic.Ack()),
        "body too short at the end": method + header + body_frame(1, b"hell"),
        "second body frame elsewhere": method + header + hel + body_frame(2, b"lo"),
        "header that does not decode": method + head(flags=b"\x80\x00\x09ab"),
        "header with unknown flags": method + head(flags=b"\x00\x02"),
        "header too short": method + frame(2, 1, b"\x00\x3c\x00\x00"),
        "header frame end": method + frame(2, 1, header[7:-1], end=b"\x00") + hel,
        "body frame end": method + header + frame(3, 1, b"hello", end=b"\x00"),
        "body too large": method + header + frame(3, 1, b"h" * 4089),
        "header too large": method + frame(2, 1, header[7:-1] + b"x" * 4100),
        "content on channel 0": (
            method_frame(0, deliver) + header_frame(0, 60, 1, None) + body_frame(0, b"x")
        ),
        "empty body frame first": method + header + body_frame(1, b"") + body_frame(1, b"hello"),
        "unknown frame type after": method + header + frame(7, 1, b"hello"),
    }


@spec_param
@pytest.mark.parametrize("case", sorted(irregular_contents(amqp0_9_1)))
def test_irregular_content_reads_as_without_combining(spec: ModuleType, case: str) -> None:
    data = irregular_contents(spec)[case]
    for chunk in (None, 1, 5):
        frames = assert_same_reading(spec, data, chunk)
        if case == "empty body frame first":
            continue  # regular after all: a zero-length body frame is allowed
        assert not any(isinstance(f, ContentFrame) for f in frames)
    # read_frames raises the same error as well
    errors: list[tuple[type[RemoteProtocolError], str] | None] = []
    for combine in (True, False):
        reader = FrameReader(spec, frame_max=4096, combine_content=combine)
        reader.feed(data)
        try:
            reader.read_frames()
            errors.append(None)
        except RemoteProtocolError as exc:
            errors.append((type(exc), str(exc)))
    assert errors[0] == errors[1]


@spec_param
@pytest.mark.parametrize("size", [0, 1, 16, 4088, 4089, 10_000])
def test_encode_frame_writes_a_content_frame_back(spec: ModuleType, size: int) -> None:
    # encode_frame is the inverse of the reader for combined contents too: given the
    # frame_max the content was cut at, the very same bytes.
    _body, data, _reader, frame = combined_content(spec, size)
    assert encode_frame(frame, frame_max=4096) == data
    # Without a frame_max the body goes in one body frame (none when empty): what the
    # reader combines inline, and what reading frame by frame gives back.
    whole = encode_frame(frame)
    big = FrameReader(spec, frame_max=1 << 20, combine_content=True)
    big.feed(whole)
    assert big.read_frames() == [frame]
    plain = FrameReader(spec, frame_max=1 << 20)
    plain.feed(whole)
    assert plain.read_frames() == separate([frame])


def test_encode_frame_refuses_a_content_frame_it_cannot_write() -> None:
    basic = amqp0_9_1.Basic
    deliver = basic.Deliver(delivery_tag=1)
    with pytest.raises(EncodeError, match=r"basic\.ack carries no content"):
        encode_frame(ContentFrame(1, basic.Ack(), basic.Properties(), b"x"))
    with pytest.raises(EncodeError, match="channel"):
        encode_frame(ContentFrame(65536, deliver, basic.Properties(), b"x"))
    with pytest.raises(EncodeError, match="bytes-like"):
        encode_frame(ContentFrame(1, deliver, basic.Properties(), "text"))  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="frame_max"):
        encode_frame(ContentFrame(1, deliver, basic.Properties(), b"x"), frame_max=8)
    # None properties (no property set) are written as an empty property list
    assert encode_frame(ContentFrame(1, deliver, None, b"x")) == encode_frame(  # type: ignore[arg-type]
        ContentFrame(1, deliver, basic.Properties(), b"x")
    )


def test_content_frame_values() -> None:
    deliver = amqp0_9_1.Basic.Deliver(delivery_tag=1)
    props = amqp0_9_1.Basic.Properties()
    one = ContentFrame(1, deliver, props, b"x" * 100)
    assert one == ContentFrame(1, amqp0_9_1.Basic.Deliver(delivery_tag=1), props, b"x" * 100)
    assert one != ContentFrame(2, deliver, props, b"x" * 100)
    assert "+68 bytes" in repr(one) and "Basic.Deliver" in repr(one)


@spec_param
def test_combined_properties_of_every_shape(spec: ModuleType) -> None:
    # The combining reader hands the header's first flags word to the properties' decode;
    # every subset of the properties must come out as the frame-by-frame reader reads it.
    basic = spec.Basic
    deliver = basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="e", routing_key="r")
    values: dict[str, Any] = {
        "shortstr": "s\u00e9",
        "octet": 2,
        "table": {"x": 1, "y": "z"},
        "timestamp": datetime(2001, 2, 3, tzinfo=timezone.utc),
        "longstr": b"l",
        "long": 7,
        "longlong": 8,
        "short": 9,
    }
    fields = basic.Properties.FIELDS
    types = basic.Properties.FIELD_TYPES
    reader = FrameReader(spec, 4096, combine_content=True)
    for mask in range(0, 1 << len(fields), 7):
        props = basic.Properties(
            **{n: values[t] for i, (n, t) in enumerate(zip(fields, types)) if mask >> i & 1}
        )
        for body in (b"", b"body"):
            reader.feed(content_frames(5, deliver, props, body, 4096))  # type: ignore[arg-type]
            assert reader.read_frames() == [ContentFrame(5, deliver, props, body)]


def test_content_frames_common_case_matches_general_path() -> None:
    # bytes bodies that fit one frame take a shortcut; other bodies the general path.
    basic = amqp0_9_1.Basic
    publish = basic.Publish(exchange="ex", routing_key="rk", mandatory=True)
    props = basic.Properties(content_type="text/plain", headers={"a": 1})
    for body in (b"x", b"y" * 100, b"z" * 4088):
        expected = content_frames(1, publish, props, bytearray(body), 4096)
        assert content_frames(1, publish, props, body, 4096) == expected
        assert content_frames(1, publish, props, memoryview(body), 4096) == expected
    assert content_frames(65535, publish, None, b"x", 4096)[1:3] == b"\xff\xff"
    for channel in (-1, 65536):
        with pytest.raises(EncodeError, match="channel"):
            content_frames(channel, publish, props, b"x", 4096)


def test_reader_repr_says_what_it_holds() -> None:
    reader = FrameReader(amqp0_9_1, 4096)
    assert repr(reader) == "<FrameReader amqp0_9_1 frame_max=4096 0 bytes buffered>"
    reader.read_frames(b"\x01\x00")
    assert repr(reader) == "<FrameReader amqp0_9_1 frame_max=4096 2 bytes buffered>"
