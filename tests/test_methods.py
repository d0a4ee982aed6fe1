"""The generated method and content-properties codecs of both protocol versions."""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    INT_MAX,
    SAMPLE_VALUES,
    all_methods,
    all_properties,
    head_properties,
    methods,
    properties,
    sample,
)

from leveret.wire import amqp0_8, amqp0_9_1, replies
from leveret.wire._base import ContentProperties, Lenient, Method
from leveret.wire.frames import SMALL_CONTENT, _content_frames, content_frames
from leveret.wire.errors import (
    AMQPError,
    DecodeError,
    EncodeError,
    HardError,
    SoftError,
    UnknownMethod,
)

UTC = timezone.utc
METHODS = all_methods()
PROPERTIES = all_properties()
EVERY_CLASS: list[type[Any]] = [*METHODS, *PROPERTIES]


def _id(cls: Any) -> str:
    mod = "0-8" if cls.__module__.endswith("0_8") else "0-9-1"
    return f"{mod}:{cls.NAME}"


def _decode_method(payload: bytes | bytearray) -> Method:
    class_id, method_id = struct.unpack_from("!HH", payload)
    return amqp0_9_1.method_class(class_id, method_id).decode(payload, 4, len(payload))


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", METHODS, ids=_id)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_method_round_trip(cls: type[Method], data: st.DataObject) -> None:
    method = data.draw(methods(cls))
    payload = method.encode()
    assert struct.unpack_from("!HH", payload) == (cls.CLASS_ID, cls.METHOD_ID)
    decoded = cls.decode(payload, 4, len(payload))
    assert type(decoded) is cls
    assert decoded == method
    # bytearray input, and a payload in the middle of a larger buffer
    assert cls.decode(bytearray(payload), 4, len(payload)) == method
    framed = b"\x01\x00\x05" + payload + b"\xce"
    assert cls.decode(framed, 7, 3 + len(payload)) == method


@pytest.mark.parametrize("cls", METHODS, ids=_id)
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), channel=st.integers(0, 0xFFFF))
def test_encode_frame_is_the_method_frame(cls: type[Method], data: st.DataObject, channel: int) -> None:
    # Content-carrying methods have a generated encode_frame (on every publish's path);
    # the others use the base class's.  Either way: header, encode()'s payload, frame-end.
    method = data.draw(methods(cls))
    payload = method.encode()
    expected = struct.pack("!BHI", 1, channel, len(payload)) + payload + b"\xce"
    assert method.encode_frame(channel) == expected
    if cls.HAS_CONTENT and cls.FIELDS:
        assert "encode_frame" in vars(cls)


def _general_frames(
    channel: int, method: Method, props: ContentProperties | None, body: bytes, frame_max: int
) -> bytes:
    """The frames as the general path writes them, joined."""
    out = _content_frames(channel, method, props, bytearray(body), frame_max)
    return out if isinstance(out, bytes) else b"".join(out)


CONTENT_METHODS = [m for m in METHODS if m.HAS_CONTENT]


@pytest.mark.parametrize("cls", CONTENT_METHODS, ids=_id)
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    channel=st.integers(0, 0xFFFF),
    body=st.binary(max_size=300) | st.sampled_from([b"x" * 3500, b"y" * 70_000]),
    frame_max=st.sampled_from([4096, 8192, 131072, 1 << 20]),
)
def test_content_frames_is_the_general_path(
    cls: type[Method], data: st.DataObject, channel: int, body: bytes, frame_max: int
) -> None:
    # A content method's own content_frames packs a small body in one join (every publish
    # takes it); whatever it does must be byte for byte what the general path writes.
    method = data.draw(methods(cls))
    module = amqp0_8 if cls in amqp0_8.METHODS.values() else amqp0_9_1
    props_cls = module.PROPERTIES.get(cls.CLASS_ID)
    props = data.draw(st.none() | properties(props_cls)) if props_cls else None
    out = method.content_frames(channel, props, body, frame_max)
    got = out if isinstance(out, bytes) else b"".join(out)
    assert got == _general_frames(channel, method, props, body, frame_max)
    assert content_frames(channel, method, props, body, frame_max) == out
    if 0 < len(body) < SMALL_CONTENT:
        assert type(out) is bytes


def test_content_frames_fast_path_limits() -> None:
    # Every bounded content method has the generated one; the sizes at the edges of a single
    # body frame, and frame_max too small for the shortcut, match the general path.
    generated = {cls.NAME for cls in CONTENT_METHODS if "content_frames" in vars(cls)}
    assert {"basic.publish", "basic.deliver", "basic.return", "basic.get-ok"} <= generated
    assert "tunnel.request" not in generated  # a table field: no bound, the general path
    publish = amqp0_9_1.Basic.Publish(exchange="e" * 255, routing_key="r" * 255, immediate=True)
    props = amqp0_9_1.Basic.Properties(headers={"k": "v" * 500}, priority=9)
    for frame_max in (4096, 4600, 131072):
        for size in (1, frame_max - 600, frame_max - 9, frame_max - 8, frame_max - 7, 65535, 65536):
            if size < 1:
                continue
            body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            out = publish.content_frames(7, props, body, frame_max)
            got = out if isinstance(out, bytes) else b"".join(out)
            assert got == _general_frames(7, publish, props, body, frame_max), (frame_max, size)
    # A value that does not encode is reported as the general path reports it.
    for bad, match in (
        (amqp0_9_1.Basic.Publish(exchange="e" * 256), "exchange"),
        (amqp0_9_1.Basic.Publish(reserved_1=-1), "reserved_1"),
    ):
        with pytest.raises(EncodeError, match=match):
            bad.content_frames(1, None, b"body", 131072)
    with pytest.raises(EncodeError, match="headers"):
        publish.content_frames(1, amqp0_9_1.Basic.Properties(headers={"k": object()}), b"b", 131072)
    with pytest.raises(EncodeError, match="channel"):
        publish.content_frames(65536, None, b"b", 131072)
    with pytest.raises(EncodeError, match="bytes-like"):
        publish.content_frames(1, None, "text", 131072)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [m for m in METHODS if m.HAS_CONTENT], ids=_id)
@pytest.mark.parametrize("channel", [-1, 0x10000, "1", None])
def test_encode_frame_rejects_a_bad_channel(cls: type[Method], channel: Any) -> None:
    with pytest.raises(EncodeError, match=r"channel .* outside 0\.\.65535") as info:
        cls().encode_frame(channel)
    assert cls.NAME in str(info.value)


@pytest.mark.parametrize("cls", PROPERTIES, ids=_id)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_properties_round_trip(cls: type[ContentProperties], data: st.DataObject) -> None:
    props = data.draw(properties(cls))
    raw = props.encode()
    (flags,) = struct.unpack_from("!H", raw)
    expected_flags = 0
    for name in cls.FIELDS:
        if getattr(props, name) is not None:
            expected_flags |= cls.FLAGS[name]
    assert flags == expected_flags
    assert cls.decode(raw, 0, len(raw)) == props
    assert cls.decode(bytearray(b"xx" + raw + b"yy"), 2, 2 + len(raw)) == props


SPARSE = [cls for cls in PROPERTIES if len(cls.FIELDS) > 6]  # with a path for the first 4 only


@pytest.mark.parametrize("cls", SPARSE, ids=_id)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_head_only_properties_round_trip(cls: type[ContentProperties], data: st.DataObject) -> None:
    # Only the first four set: decoded on the path that tests their bits by comparison.
    props = data.draw(head_properties(cls))
    raw = props.encode()
    (flags,) = struct.unpack_from("!H", raw)
    assert flags & 0x0FFF == 0
    assert cls.decode(raw, 0, len(raw)) == props
    assert cls.decode(bytearray(b"xx" + raw + b"yy"), 4, 2 + len(raw), flags) == props


@pytest.mark.parametrize("cls", SPARSE, ids=_id)
def test_every_subset_of_the_head_properties_decodes_on_either_path(
    cls: type[ContentProperties],
) -> None:
    # Each subset of the first four, alone (the comparison path) and with a later property
    # set too (the bit-by-bit path), and with a string that is not UTF-8 (the retry).
    values = {
        "shortstr": "t\u00e9xt/pl\udcffin",
        "octet": 2,
        "table": {"x": 1, "y": "z"},
        "longstr": b"l",
        "short": 3,
        "long": 4,
        "longlong": 5,
        "timestamp": datetime(2001, 2, 3, tzinfo=timezone.utc),
    }
    head = list(zip(cls.FIELDS[:4], cls.FIELD_TYPES[:4]))
    last, last_type = cls.FIELDS[-1], cls.FIELD_TYPES[-1]
    for mask in range(16):
        fields = {n: values[t] for i, (n, t) in enumerate(head) if mask >> i & 1}
        for extra in ({}, {last: values[last_type]}):
            props = cls(**fields, **extra)
            raw = props.encode()
            (flags,) = struct.unpack_from("!H", raw)
            assert cls.decode(raw, 0, len(raw)) == props
            assert cls.decode(raw, 2, len(raw), flags) == props
            # A caller's flags with a bit past 16 set: that bit is ignored, as ever.
            assert cls.decode(raw, 2, len(raw), flags | 0x10000) == props


def test_every_method_of_both_versions_is_generated() -> None:
    assert len(amqp0_9_1.METHODS) == 60 + 4  # the extended XML plus RabbitMQ's 4 additions
    names_08 = {cls.NAME for cls in amqp0_8.METHODS.values()}
    for name in ("access.request", "file.stage", "stream.deliver", "dtx.start", "tunnel.request",
                 "test.content-ok", "channel.alert", "connection.redirect"):
        assert name in names_08
    assert set(amqp0_8.PROPERTIES) == {60, 70, 80, 110, 120}
    assert set(amqp0_9_1.PROPERTIES) == {60}


# -- known bytes -------------------------------------------------------------------------


def test_basic_publish_bytes() -> None:
    m = amqp0_9_1.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)
    assert m.encode() == (
        b"\x00\x3c\x00\x28"  # class 60, method 40
        b"\x00\x00"  # reserved-1 (ticket)
        b"\x02ex"  # exchange
        b"\x02rk"  # routing-key
        b"\x01"  # mandatory=bit 0, immediate=bit 1
    )
    assert amqp0_9_1.Basic.Publish(immediate=True).encode()[-1:] == b"\x02"


def test_basic_deliver_bytes() -> None:
    raw = (
        b"\x00\x3c\x00\x3c"
        b"\x04ctag"
        b"\x00\x00\x00\x00\x00\x00\x01\x02"  # delivery-tag 258
        b"\x01"  # redelivered
        b"\x00"  # exchange ""
        b"\x05queue"
    )
    m = amqp0_9_1.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=258, redelivered=True, exchange="", routing_key="queue"
    )
    assert m.encode() == raw
    assert _decode_method(raw) == m


def test_connection_tune_bytes() -> None:
    raw = b"\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c"
    m = amqp0_9_1.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    assert m.encode() == raw
    assert _decode_method(raw) == m
    tune_08 = amqp0_8.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    assert tune_08.encode() == raw


@pytest.mark.parametrize(
    "kwargs, octet",
    [
        ({}, 0x00),
        ({"passive": True}, 0x01),
        ({"durable": True}, 0x02),
        ({"exclusive": True}, 0x04),
        ({"auto_delete": True}, 0x08),
        ({"no_wait": True}, 0x10),
        ({"durable": True, "auto_delete": True}, 0x0A),
        ({"passive": True, "durable": True, "exclusive": True, "auto_delete": True,
          "no_wait": True}, 0x1F),
    ],
)
def test_queue_declare_bit_packing(kwargs: dict[str, Any], octet: int) -> None:
    m = amqp0_9_1.Queue.Declare(queue="q", **kwargs)
    raw = b"\x00\x32\x00\x0a\x00\x00\x01q" + bytes([octet]) + b"\x00\x00\x00\x00"
    assert m.encode() == raw
    assert _decode_method(raw) == amqp0_9_1.Queue.Declare(queue="q", arguments={}, **kwargs)


def test_bits_split_by_other_fields_use_separate_octets() -> None:
    # 0-8 access.request: realm, then five bits in one octet
    m = amqp0_8.Access.Request(realm="/data", exclusive=True, read=True)
    assert m.encode() == b"\x00\x1e\x00\x0a\x05/data\x11"
    # basic.nack: longlong, then two bits sharing one octet
    n = amqp0_9_1.Basic.Nack(delivery_tag=7, multiple=False, requeue=True)
    assert n.encode() == b"\x00\x3c\x00\x78" + (7).to_bytes(8, "big") + b"\x02"


def test_table_field_with_every_type_letter_decodes() -> None:
    entries = (
        b"\x01tt\x01"
        b"\x01bb\xff"
        b"\x01BB\xff"
        b"\x01ss\xff\xfe"
        b"\x01uu\xff\xfe"
        b"\x01II\xff\xff\xff\xfe"
        b"\x01ii\xff\xff\xff\xfe"
        b"\x01ll\xff\xff\xff\xff\xff\xff\xff\xfe"
        b"\x01ff" + struct.pack("!f", 1.5) + b"\x01dd" + struct.pack("!d", -2.25)
        + b"\x01DD\x02\x00\x00\x01\x3b"
        b"\x01SS\x00\x00\x00\x02hi"
        b"\x01AA\x00\x00\x00\x02t\x00"
        b"\x01TT\x00\x00\x00\x00\x00\x00\x00\x3c"
        b"\x01FF\x00\x00\x00\x00"
        b"\x01xx\x00\x00\x00\x01\x00"
        b"\x01VV"
    )
    table = struct.pack("!I", len(entries)) + entries
    raw = b"\x00\x32\x00\x0a\x00\x00\x01q\x00" + table
    m = _decode_method(raw)
    assert isinstance(m, amqp0_9_1.Queue.Declare)
    assert m.arguments == {
        "t": True, "b": -1, "B": 255, "s": -2, "u": 65534, "I": -2, "i": 4294967294, "l": -2,
        "f": 1.5, "d": -2.25, "D": Decimal("3.15"), "S": "hi", "A": [False],
        "T": datetime(1970, 1, 1, 0, 1, tzinfo=UTC), "F": {}, "x": b"\x00", "V": None,
    }


def test_basic_properties_bytes() -> None:
    p = amqp0_9_1.BasicProperties(content_type="text/plain", delivery_mode=2)
    raw = b"\x90\x00\x0atext/plain\x02"
    assert p.encode() == raw
    assert amqp0_9_1.Basic.Properties.decode(raw, 0, len(raw)) == p
    full = amqp0_9_1.Basic.Properties(cluster_id="c", app_id="a", timestamp=0)
    assert full.encode() == b"\x00\x4c" + (0).to_bytes(8, "big") + b"\x01a\x01c"
    assert amqp0_9_1.Basic.Properties.FIELDS[-1] == "cluster_id"
    assert len(amqp0_9_1.Basic.Properties.FIELDS) == 14
    assert amqp0_9_1.Basic.Properties.FLAGS["content_type"] == 0x8000
    assert amqp0_9_1.Basic.Properties.FLAGS["cluster_id"] == 0x0004


def test_property_flag_continuation_words() -> None:
    Props = amqp0_9_1.Basic.Properties
    # continuation bit set, then an empty second word: accepted
    raw = b"\x90\x01\x00\x00\x0atext/plain\x02"
    assert Props.decode(raw, 0, len(raw)) == Props(content_type="text/plain", delivery_mode=2)
    # a flag bit basic does not define
    with pytest.raises(DecodeError, match="unknown property flags"):
        Props.decode(b"\x00\x02", 0, 2)
    # a flag in the continuation word: a 16th property nobody defined
    with pytest.raises(DecodeError, match="unknown property flags"):
        Props.decode(b"\x00\x01\x80\x00", 0, 4)
    with pytest.raises(DecodeError):
        Props.decode(b"\x00\x01", 0, 2)


def test_timestamps() -> None:
    Props = amqp0_9_1.Basic.Properties
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    as_int = int(when.timestamp())
    by_int = Props(timestamp=as_int).encode()
    assert by_int == Props(timestamp=when).encode()
    assert Props(timestamp=when.replace(tzinfo=None)).encode() == by_int  # naive means UTC
    decoded = Props.decode(by_int, 0, len(by_int))
    assert isinstance(decoded.timestamp, datetime) and decoded.timestamp.tzinfo is not None
    assert decoded.timestamp == when
    # milliseconds by mistake: past year 9999, kept as the raw int instead of failing
    millis = Props(timestamp=as_int * 1000).encode()
    assert Props.decode(millis, 0, len(millis)).timestamp == as_int * 1000


def test_longstr_accepts_str_and_table_none_is_empty() -> None:
    m = amqp0_9_1.Connection.StartOk(mechanism="PLAIN", response="\x00guest\x00guest")
    assert m.response == b"\x00guest\x00guest"
    payload = m.encode()
    assert b"\x00\x00\x00\x0c\x00guest\x00guest" in payload
    decoded = _decode_method(payload)
    assert decoded.client_properties == {}  # type: ignore[attr-defined]


def test_sensitive_fields_hidden_in_repr() -> None:
    secret = b"\x00guest\x00s3cr3t"
    for m in (
        amqp0_9_1.Connection.StartOk(response=secret),
        amqp0_9_1.Connection.SecureOk(response=secret),
        amqp0_9_1.Connection.UpdateSecret(new_secret=secret, reason="rotate"),
        amqp0_8.Connection.StartOk(response=secret),
    ):
        text = repr(m)
        assert "s3cr3t" not in text and "<hidden>" in text
    assert repr(amqp0_9_1.Basic.Ack(delivery_tag=5)) == "Basic.Ack(delivery_tag=5, multiple=False)"


def test_rabbitmq_extensions() -> None:
    C = amqp0_9_1.Connection
    assert (C.Blocked.CLASS_ID, C.Blocked.METHOD_ID) == (10, 60)
    assert (C.Unblocked.CLASS_ID, C.Unblocked.METHOD_ID) == (10, 61)
    assert (C.UpdateSecret.CLASS_ID, C.UpdateSecret.METHOD_ID) == (10, 70)
    assert (C.UpdateSecretOk.CLASS_ID, C.UpdateSecretOk.METHOD_ID) == (10, 71)
    assert C.UpdateSecret.RESPONSES == (C.UpdateSecretOk,) and C.UpdateSecret.SYNCHRONOUS
    assert C.Blocked(reason="low on memory").encode() == b"\x00\x0a\x00\x3c\x0dlow on memory"
    assert C.Unblocked().encode() == b"\x00\x0a\x00\x3d"
    assert amqp0_9_1.method_class(10, 60) is C.Blocked


def test_module_level_api() -> None:
    assert amqp0_9_1.PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert amqp0_8.PROTOCOL_HEADER == b"AMQP\x01\x01\x08\x00"
    assert (amqp0_9_1.VERSION, amqp0_9_1.NAME) == ((0, 9, 1), "0-9-1")
    assert (amqp0_8.VERSION, amqp0_8.NAME) == ((0, 8, 0), "0-8")
    assert amqp0_9_1.PORT == amqp0_8.PORT == 5672
    assert amqp0_9_1.FRAME_METHOD == 1 and amqp0_9_1.FRAME_END == 206
    assert amqp0_9_1.FRAME_MIN_SIZE == 4096
    assert amqp0_8.FRAME_OOB_METHOD == 4
    assert amqp0_9_1.NOT_FOUND in amqp0_9_1.SOFT_ERRORS
    assert amqp0_9_1.CONNECTION_FORCED in amqp0_9_1.HARD_ERRORS
    assert amqp0_9_1.ERRORS[404] is replies.NotFound
    assert 313 in amqp0_9_1.ERRORS and 313 not in amqp0_8.ERRORS
    assert 310 in amqp0_8.ERRORS and 310 not in amqp0_9_1.ERRORS
    assert amqp0_9_1.BasicProperties is amqp0_9_1.Basic.Properties
    assert amqp0_9_1.method_class(60, 40) is amqp0_9_1.Basic.Publish
    assert amqp0_9_1.Basic.Publish.INDEX == 60 << 16 | 40
    assert amqp0_9_1.Basic.Publish.HAS_CONTENT and not amqp0_9_1.Basic.Ack.HAS_CONTENT
    assert amqp0_9_1.Basic.Get.RESPONSES == (amqp0_9_1.Basic.GetOk, amqp0_9_1.Basic.GetEmpty)
    assert amqp0_9_1.Basic.Qos.FIELDS == ("prefetch_size", "prefetch_count", "global_")
    assert amqp0_9_1.Basic.Properties.decode(b"\x00\x00", 0, 2) == amqp0_9_1.Basic.Properties()
    with pytest.raises(UnknownMethod) as info:
        amqp0_9_1.method_class(60, 999)
    assert info.value.reply_code == 540
    with pytest.raises(UnknownMethod):
        amqp0_9_1.method_class(30, 10)  # access.request exists only in 0-8
    assert amqp0_8.method_class(30, 10) is amqp0_8.Access.Request
    with pytest.raises(UnknownMethod):
        amqp0_9_1.properties_class(70)
    assert amqp0_8.properties_class(70) is amqp0_8.File.Properties


def test_keyword_only_construction_and_defaults() -> None:
    # Queue.Declare's first field is reserved: Declare("q", True) would put "q" there.
    declare: Any = amqp0_9_1.Queue.Declare
    with pytest.raises(TypeError, match=r"Queue\.Declare\(\) takes its fields as keyword"):
        declare("q", True)
    with pytest.raises(TypeError, match="reserved_1, queue, passive"):
        declare("q")
    with pytest.raises(TypeError):  # the guard is not a field, by any name
        declare(_positional="q")
    properties: Any = amqp0_8.Basic.Properties
    with pytest.raises(TypeError, match=r"Basic\.Properties\(\) takes"):
        properties("text/plain")
    with pytest.raises(TypeError):
        properties(None, content_type="text/plain")
    q = amqp0_9_1.Queue.Declare()
    assert (q.queue, q.durable, q.arguments, q.reserved_1) == ("", False, None, 0)
    assert amqp0_9_1.Basic.Properties().headers is None
    assert amqp0_9_1.Basic.Ack(delivery_tag=1) != amqp0_9_1.Basic.Ack(delivery_tag=2)
    assert amqp0_9_1.Basic.Ack(delivery_tag=1) != amqp0_9_1.Basic.Nack(delivery_tag=1)


def test_replies() -> None:
    assert issubclass(replies.NotFound, SoftError) and replies.NotFound.reply_code == 404
    assert issubclass(replies.ConnectionForced, HardError)
    assert replies.AMQPSyntaxError.reply_code == 502
    assert replies.AMQPNotImplemented.reply_code == 540
    assert replies.AMQPFrameError.reply_code == 501
    assert not hasattr(replies, "SyntaxError") and not hasattr(replies, "NotImplemented")
    err = replies.error_for(404, "NOT_FOUND - no queue 'q'", 50, 10)
    assert type(err) is replies.NotFound
    assert (err.reply_code, err.reply_text, err.class_id, err.method_id) == (
        404, "NOT_FOUND - no queue 'q'", 50, 10)
    unknown_hard = replies.error_for(599, "?")
    assert type(unknown_hard) is HardError and unknown_hard.reply_code == 599
    unknown_soft = replies.error_for(499, "?")
    assert type(unknown_soft) is SoftError and unknown_soft.reply_code == 499
    assert set(replies.REPLY_ERRORS) == set(amqp0_9_1.ERRORS) | set(amqp0_8.ERRORS)
    for code, cls in replies.REPLY_ERRORS.items():
        assert issubclass(cls, AMQPError) and cls.reply_code == code and cls.__doc__
        in_091 = amqp0_9_1.SOFT_ERRORS if cls.soft else amqp0_9_1.HARD_ERRORS
        in_08 = amqp0_8.SOFT_ERRORS if cls.soft else amqp0_8.HARD_ERRORS
        assert code in in_091 or code in in_08


# -- encode errors -------------------------------------------------------------------------


def _field_cases() -> list[tuple[type[Any], str, str]]:
    out = []
    for cls in EVERY_CLASS:
        for name, type_ in zip(cls.FIELDS, cls.FIELD_TYPES):
            out.append((cls, name, type_))
    return out


BAD_VALUES: dict[str, list[Any]] = {
    "octet": [-1, 256],
    "short": [-1, 65536],
    "long": [-1, 2**32],
    "longlong": [-1, 2**64],
    "timestamp": [-1, 2**64],
    "shortstr": ["x" * 256, "\u00e9" * 128, 7, "\ud800"],
    "longstr": [12, "\ud800"],
    "table": [{"bad": object()}, {"big": 2**64}],
    "bit": [],
}


@pytest.mark.parametrize(
    "cls, name, type_",
    [c for c in _field_cases() if BAD_VALUES[c[2]]],
    ids=lambda v: v if isinstance(v, str) else _id(v),
)
def test_encode_errors_name_the_field(cls: type[Any], name: str, type_: str) -> None:
    for bad in BAD_VALUES[type_]:
        # a longstr given as str is converted (and may fail) on construction already
        with pytest.raises(EncodeError) as info:
            cls(**{name: bad}).encode()
        assert cls.NAME in str(info.value)
        assert name in str(info.value)


@pytest.mark.parametrize(
    "cls, name, type_",
    [c for c in _field_cases() if BAD_VALUES[c[2]] and c[0] in METHODS and c[0].HAS_CONTENT],
    ids=lambda v: v if isinstance(v, str) else _id(v),
)
def test_encode_frame_errors_name_the_field(cls: type[Any], name: str, type_: str) -> None:
    for bad in BAD_VALUES[type_]:
        with pytest.raises(EncodeError) as info:
            cls(**{name: bad}).encode_frame(1)
        assert cls.NAME in str(info.value)
        assert name in str(info.value)


# -- decode errors ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", EVERY_CLASS, ids=_id)
def test_truncated_or_padded_payload_is_a_decode_error(cls: type[Any]) -> None:
    obj = sample(cls)
    encoded = obj.encode()
    start = 4 if issubclass(cls, Method) else 0
    payload = encoded[start:]
    assert cls.decode(payload, 0, len(payload)) == obj
    for cut in range(len(payload)):
        # the buffer ends where the payload is cut ...
        with pytest.raises(DecodeError):
            cls.decode(payload[:cut], 0, cut)
        # ... or goes on past `end` (the next frame's bytes are in the same buffer)
        with pytest.raises(DecodeError):
            cls.decode(bytearray(payload), 0, cut)
    with pytest.raises(DecodeError):
        cls.decode(payload + b"\x00", 0, len(payload) + 1)


@settings(max_examples=500)
@given(cls=st.sampled_from(EVERY_CLASS), data=st.binary(max_size=40))
def test_random_bytes_decode_or_raise_decode_error(cls: type[Any], data: bytes) -> None:
    try:
        obj = cls.decode(data, 0, len(data))
    except DecodeError:
        return
    assert isinstance(obj, cls)
    # What decoded is a valid instance: it encodes again (a table value such as a 'T' past
    # 2**63 may legitimately not fit back into a table; that is an EncodeError, nothing else).
    try:
        again = obj.encode()
    except EncodeError:
        return
    start = 4 if isinstance(obj, Method) else 0
    assert type(cls.decode(again, start, len(again))) is cls


def test_int_field_bounds_are_inclusive() -> None:
    for cls, name, type_ in _field_cases():
        if type_ in INT_MAX:
            types = zip(cls.FIELDS, cls.FIELD_TYPES)
            tables: dict[str, Any] = {n: {} for n, t in types if t == "table"}
            obj = cls(**{**tables, name: INT_MAX[type_]})
            raw = obj.encode()
            start = 4 if issubclass(cls, Method) else 0
            assert cls.decode(raw, start, len(raw)) == obj


# -- encoded shortstrs are cached -----------------------------------------------------------


def test_shortstr_cache_is_bounded_and_invisible() -> None:
    from leveret.wire import _base

    publish = amqp0_9_1.Basic.Publish
    expected = publish(exchange="ex", routing_key="rk").encode()
    # however full the cache, and across it being emptied, the bytes are the same
    for n in range(_base.SHORTSTRS_MAX * 2 + 3):
        assert publish(exchange=f"unique-{n}", routing_key="rk").encode()[6:] == (
            bytes((len(f"unique-{n}"),)) + f"unique-{n}".encode() + b"\x02rk\x00"
        )
        assert len(_base.SHORTSTRS) <= _base.SHORTSTRS_MAX
    assert publish(exchange="ex", routing_key="rk").encode() == expected
    # a str subclass is encoded as its value and not remembered
    class Name(str):
        pass

    _base.SHORTSTRS.clear()
    assert publish(exchange=Name("ex"), routing_key="rk").encode() == expected
    assert "ex" not in _base.SHORTSTRS and "rk" in _base.SHORTSTRS
    # bad values still fail naming the field, cached or not
    for _ in range(2):
        with pytest.raises(EncodeError, match="routing_key"):
            publish(routing_key="k" * 256).encode()
        with pytest.raises(EncodeError, match="content_type"):
            amqp0_9_1.Basic.Properties(content_type="\ud800x" * 200).encode()
    # properties whose values are unique per message are not cached
    amqp0_9_1.Basic.Properties(message_id="m-1", correlation_id="c-1", app_id="app").encode()
    assert "app" in _base.SHORTSTRS
    assert "m-1" not in _base.SHORTSTRS and "c-1" not in _base.SHORTSTRS


def test_properties_encode_is_flags_then_values() -> None:
    for cls in PROPERTIES:
        obj = sample(cls)
        flags, values = obj.encode_values()
        assert obj.encode() == struct.pack(">H", flags) + values
    assert amqp0_9_1.Basic.Properties().encode_values() == (0, b"")


# -- the fast paths must agree with the general ones ----------------------------------------


@pytest.mark.parametrize("cls", PROPERTIES, ids=_id)
def test_every_flags_combination_round_trips(cls: type[ContentProperties]) -> None:
    # Every subset of the properties, decoded as the frame-by-frame path does (the flags
    # read by decode itself) and as the combining reader does (the flags word passed in).
    values = {n: SAMPLE_VALUES[t] for n, t in zip(cls.FIELDS, cls.FIELD_TYPES)}
    for mask in range(1 << len(cls.FIELDS)):
        props = cls(**{n: values[n] for i, n in enumerate(cls.FIELDS) if mask >> i & 1})
        raw = props.encode()
        assert cls.decode(raw, 0, len(raw)) == props
        (flags,) = struct.unpack_from("!H", raw)
        assert cls.decode(raw, 2, len(raw), flags) == props
        framed = b"junk" + raw + b"\xce"
        assert cls.decode(bytearray(framed), 6, 4 + len(raw), flags) == props


@pytest.mark.parametrize("spec", [amqp0_9_1, amqp0_8], ids=["0-9-1", "0-8"])
def test_strings_that_are_not_utf8_decode_with_surrogateescape(spec: Any) -> None:
    # Strings are decoded strictly first; one that is not UTF-8 makes the decoder start
    # again on a Lenient copy, and must come out as surrogateescape would have it.
    odd = b"\xff\xfe-\xc3(".decode("utf-8", "surrogateescape")
    deliver = spec.Basic.Deliver(
        consumer_tag="tag", delivery_tag=7, redelivered=True, exchange=odd, routing_key="rk" + odd
    )
    payload = deliver.encode()
    decoded = spec.Basic.Deliver.decode(payload, 4, len(payload))
    assert decoded == deliver and decoded.encode() == payload
    for field in ("content_type", "reply_to", "app_id"):
        props = spec.Basic.Properties(
            **{field: odd}, headers={odd: odd, "k": 1}, delivery_mode=2, priority=1
        )
        raw = props.encode()
        assert spec.Basic.Properties.decode(raw, 0, len(raw)) == props
        assert spec.Basic.Properties.decode(bytearray(raw), 0, len(raw)) == props
        (flags,) = struct.unpack_from("!H", raw)
        assert spec.Basic.Properties.decode(raw, 2, len(raw), flags) == props
    # ... and a malformed payload that also holds such a string is still a DecodeError.
    with pytest.raises(DecodeError):
        spec.Basic.Deliver.decode(payload[:-1], 4, len(payload) - 1)
    with pytest.raises(DecodeError):
        spec.Basic.Properties.decode(raw[:-1], 0, len(raw) - 1)


@pytest.mark.parametrize("spec", [amqp0_9_1, amqp0_8], ids=["0-9-1", "0-8"])
def test_the_lenient_retry_copies_one_payload_not_the_whole_read(spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read of many deliveries whose strings are not UTF-8 (publishers choose them; the
    # broker passes them on): each retry must copy its own payload only.  A copy of the
    # whole read per frame made such a read cost its size times its number of frames.
    from leveret.wire.frames import ContentFrame, FrameReader, content_frames

    odd = "text/\udcffplain"
    deliver = spec.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="x\udcfe", routing_key="q")
    one = content_frames(1, deliver, spec.Basic.Properties(content_type=odd), b"b" * 100, 131072)
    assert isinstance(one, bytes)
    copied: list[int] = []

    class Counting(Lenient):
        def __new__(cls, data: bytes) -> Counting:
            copied.append(len(data))
            return super().__new__(cls, data)

    monkeypatch.setattr(spec, "_Lenient", Counting)
    frames = FrameReader(spec, 131072, combine_content=True).read_frames(one * 200)
    assert len(frames) == 200
    assert all(isinstance(f, ContentFrame) and f.method == deliver and getattr(f.properties, "content_type") == odd
               for f in frames)
    assert len(copied) == 400 and max(copied) < 40  # a Deliver's or a Properties' payload


def test_lenient_buffer() -> None:
    buf = Lenient(b"ab\xffcd")
    assert buf[2] == 0xFF and buf[-1] == ord("d")
    part = buf[1:4]
    assert type(part) is Lenient and part == b"b\xffc"
    assert part.decode() == "b\udcffc"
    assert part.decode("latin-1") == "b\xffc"
    assert bytes(part) == b"b\xffc" and type(bytes(part)) is bytes
    assert struct.unpack_from("!H", buf, 1) == (0x62FF,)


def test_basic_properties_have_the_same_names_in_both_versions() -> None:
    """The client's Message takes one set of property names for either version
    (``leveret.client.message.PROPERTY_NAMES``)."""
    from leveret.client.message import PROPERTY_NAMES
    from leveret.wire import amqp0_8, amqp0_9_1

    assert amqp0_8.Basic.Properties.FIELDS == amqp0_9_1.Basic.Properties.FIELDS == PROPERTY_NAMES
