"""Fuzzing the frame reader: whatever the bytes, the only outcomes are frames, NEED_DATA, or a
RemoteProtocolError subclass -- never another exception, never a hang."""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import raised_again
from leveret.wire import amqp0_8, amqp0_9_1
from leveret.wire.errors import RemoteProtocolError
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
    content_frames,
    method_frame,
)

SPECS = {spec.NAME: spec for spec in (amqp0_9_1, amqp0_8)}
specs = st.sampled_from(sorted(SPECS)).map(SPECS.__getitem__)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_stream(spec: ModuleType) -> bytes:
    basic = spec.Basic
    props = basic.Properties(
        content_type="text/plain",
        headers={"a": 1, "b": [1.5, "x", {"c": None}], "t": datetime(2000, 1, 1, tzinfo=timezone.utc)},
        priority=3,
    )
    deliver = basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="e", routing_key="r")
    return b"".join(
        [
            method_frame(0, spec.Connection.Tune(channel_max=10, frame_max=4096, heartbeat=60)),
            content_frames(1, deliver, props, b"body" * 300, 4096),  # type: ignore[list-item]
            HEARTBEAT_FRAME,
            method_frame(1, spec.Channel.CloseOk()),
        ]
    )


STREAMS = {name: valid_stream(spec) for name, spec in SPECS.items()}


def drain(reader: FrameReader, data: bytes, chunk: int) -> list[Frame]:
    """Feed ``data`` in ``chunk``-sized pieces; check every outcome is an allowed one."""
    frames: list[Frame] = []
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
            # next_frame consumes a frame or says NEED_DATA, so this loop is bounded by the
            # number of frames in what was fed.
            while (frame := reader.next_frame()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                frames.append(frame)
    except RemoteProtocolError as exc:
        assert exc.reply_code in (501, 502, 503, 505, 540)
        # broken for good, with the same error
        with pytest.raises(RemoteProtocolError) as again:
            reader.next_frame()
        assert raised_again(again.value, exc)
    else:
        assert reader.buffered < len(data) + 1
    return frames


@FUZZ
@given(specs, st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_random_bytes(spec: ModuleType, data: bytes, chunk: int) -> None:
    drain(FrameReader(spec, frame_max=131072), data, chunk)


@FUZZ
@given(
    specs,
    st.sampled_from([1, 2, 3, 8]),
    st.integers(min_value=0, max_value=3),
    st.binary(max_size=300),
)
def test_random_payloads_in_valid_framing(
    spec: ModuleType, frame_type: int, channel: int, payload: bytes
) -> None:
    data = struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"
    drain(FrameReader(spec), data, len(data))


@FUZZ
@given(specs, st.data())
def test_random_arguments_for_every_method(spec: ModuleType, data: st.DataObject) -> None:
    # Random bytes rarely hit a valid class/method id, so pick one and randomise the rest.
    index = data.draw(st.sampled_from(sorted(spec.METHODS)))
    args = data.draw(st.binary(max_size=120))
    payload = struct.pack(">HH", index >> 16, index & 0xFFFF) + args
    drain(FrameReader(spec), struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce", 1000)


@FUZZ
@given(specs, st.data())
def test_random_content_headers(spec: ModuleType, data: st.DataObject) -> None:
    class_id = data.draw(st.sampled_from(sorted(spec.PROPERTIES)))
    flags = data.draw(st.integers(min_value=0, max_value=0xFFFF))
    rest = data.draw(st.binary(max_size=120))
    payload = struct.pack(">HHQH", class_id, 0, 5, flags) + rest
    drain(FrameReader(spec), struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce", 1000)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "truncate", "delete", "insert", "splice"]),
        st.integers(min_value=0, max_value=1 << 16),
        st.integers(min_value=0, max_value=255),
        st.binary(max_size=16),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, edits: list[tuple[str, int, int, bytes]]) -> bytes:
    stream = bytearray(data)
    for kind, where, value, blob in edits:
        if not stream:
            break
        at = where % len(stream)
        if kind == "flip":
            stream[at] ^= 1 << (value % 8)
        elif kind == "set":
            stream[at] = value
        elif kind == "truncate":
            del stream[at:]
        elif kind == "delete":
            del stream[at : at + 1 + value % 8]
        elif kind == "insert":
            stream[at:at] = blob
        else:  # splice: copy a piece of the stream somewhere else
            source = value * 7 % len(stream)
            stream[at:at] = stream[source : source + 1 + len(blob) * 4]
    return bytes(stream)


@FUZZ
@given(specs, mutations, st.integers(min_value=1, max_value=512))
def test_mutated_valid_streams(spec: ModuleType, edits: list[tuple[str, int, int, bytes]], chunk: int) -> None:
    drain(FrameReader(spec), mutate(STREAMS[spec.NAME], edits), chunk)


# Small frames, so that mutations land on frame headers as often as on payloads.
SMALL_FRAME_MAX = 64


def contents_stream(spec: ModuleType) -> bytes:
    """Contents of every shape (one body frame, none, three) among other frames."""
    basic = spec.Basic
    deliver = basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="e", routing_key="r")
    props = basic.Properties(content_type="text/plain", headers={"a": 1})
    pieces = [
        content_frames(1, deliver, props, b"body", SMALL_FRAME_MAX),
        method_frame(1, basic.Ack(delivery_tag=1)),
        content_frames(2, deliver, basic.Properties(), b"", SMALL_FRAME_MAX),
        HEARTBEAT_FRAME,
        content_frames(1, deliver, props, bytes(range(150)), SMALL_FRAME_MAX),
    ]
    return b"".join(piece for piece in pieces if isinstance(piece, bytes))


CONTENTS = {name: contents_stream(spec) for name, spec in SPECS.items()}


def read_all(reader: FrameReader, data: bytes, chunk: int) -> tuple[list[Frame], Any]:
    """(frames, error) from feeding ``data`` in ``chunk``-sized pieces; the frames as
    method/header/body frames, bodies merged, whether the reader combined them or not."""
    frames: list[Frame] = []
    error = None
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
            while (frame := reader.next_frame()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                frames.append(frame)
    except RemoteProtocolError as exc:
        error = (type(exc), str(exc))
    out: list[Frame] = []
    for f in frames:
        if isinstance(f, ContentFrame):
            out.append(MethodFrame(f.channel, f.method))
            out.append(HeaderFrame(f.channel, f.method.CLASS_ID, len(f.body), f.properties))
            f = BodyFrame(f.channel, f.body)
            if not f.payload:
                continue
        last = out[-1] if out else None
        if isinstance(f, BodyFrame) and isinstance(last, BodyFrame) and last.channel == f.channel:
            out[-1] = BodyFrame(f.channel, last.payload + f.payload)
        else:
            out.append(f)
    return out, error


@FUZZ
@given(specs, mutations, st.integers(min_value=1, max_value=10_000))
def test_combining_contents_changes_nothing_else(
    spec: ModuleType, edits: list[tuple[str, int, int, bytes]], chunk: int
) -> None:
    # Whatever the bytes and however they arrive, a reader that combines contents yields
    # the same frames (contents written out) and stops on the same error as one that does not.
    data = mutate(CONTENTS[spec.NAME], edits)
    combined = read_all(FrameReader(spec, SMALL_FRAME_MAX, combine_content=True), data, chunk)
    assert combined == read_all(FrameReader(spec, SMALL_FRAME_MAX), data, chunk)


def frame_sequences(spec: ModuleType) -> st.SearchStrategy[bytes]:
    """Contents, mostly regular but each part possibly off (channel, class, body sizes),
    among other frames and the odd garbage byte."""
    basic = spec.Basic
    deliver = basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="e", routing_key="r")

    @st.composite
    def content(draw: st.DrawFn) -> bytes:
        channel = draw(st.integers(min_value=0, max_value=2))

        def usually(value: int, others: st.SearchStrategy[int]) -> int:
            return draw(st.one_of(st.just(value), st.just(value), st.just(value), others))

        size = draw(st.integers(min_value=0, max_value=30))
        head_channel = usually(channel, st.integers(min_value=0, max_value=2))
        class_id = usually(basic.CLASS_ID, st.sampled_from([10, 20, 90]))
        out = method_frame(channel, deliver)
        out += struct.pack(">BHIHHQH", 2, head_channel, 14, class_id, 0, size, 0) + b"\xce"
        left = size + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
        while left > 0 or draw(st.integers(min_value=0, max_value=9)) == 0:
            if left > 0 and draw(st.booleans()):
                n = left  # the rest in one frame, the usual way
            else:
                n = min(max(left, 0), draw(st.integers(min_value=0, max_value=20)))
            body_channel = usually(channel, st.integers(min_value=0, max_value=2))
            out += struct.pack(">BHI", 3, body_channel, n) + bytes(n) + b"\xce"
            left -= n
            if left <= 0:
                break
        return out

    piece = st.one_of(
        content(),
        content(),
        st.just(method_frame(1, basic.Ack(delivery_tag=2))),
        st.just(HEARTBEAT_FRAME),
        st.binary(min_size=1, max_size=3),
    )
    return st.lists(piece, max_size=6).map(b"".join)


@FUZZ
@given(specs, st.data(), st.integers(min_value=1, max_value=1000))
def test_combining_frame_sequences_changes_nothing_else(
    spec: ModuleType, data: st.DataObject, chunk: int
) -> None:
    stream = data.draw(frame_sequences(spec))
    combined = read_all(FrameReader(spec, SMALL_FRAME_MAX, combine_content=True), stream, chunk)
    assert combined == read_all(FrameReader(spec, SMALL_FRAME_MAX), stream, chunk)


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_contents_stream_is_combined(spec: ModuleType) -> None:
    reader = FrameReader(spec, SMALL_FRAME_MAX, combine_content=True)
    reader.feed(CONTENTS[spec.NAME])
    kinds = [type(f) for f in reader.read_frames()]
    assert kinds == [ContentFrame, MethodFrame, ContentFrame, HeartbeatFrame, ContentFrame]


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_valid_stream_reads_back(spec: ModuleType) -> None:
    # The seed the mutations start from must itself be valid, or the fuzzing proves little.
    frames = drain(FrameReader(spec), STREAMS[spec.NAME], 100)
    assert len(frames) == 6
