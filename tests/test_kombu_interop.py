"""Byte-level compatibility with kombu's message conventions, without a broker.

Each direction goes as far as the bytes that would cross the wire:

* kombu -> leveret: kombu's own ``Producer`` (on a channel stub that keeps the
  ``amqp.Message`` it would publish) or kombu's ``dumps``/``compress``; the content header
  is serialized by py-amqp and parsed by leveret's wire layer; leveret's high-level
  ``Message`` (or ``loads``/``decompress``) must give back the original value.
* leveret -> kombu: leveret's ``dumps``/``compress``; the content header is encoded by
  leveret and parsed by py-amqp; kombu's consumer-side ``Message`` (the one its pyamqp
  transport builds) or kombu's ``loads``/``decompress`` must give back the original value.

A broker in the middle is the integration suite's business.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import amqp
import kombu.compression
import kombu.serialization
import kombu.transport.pyamqp
import pytest
from kombu.messaging import Producer

from leveret.client import Message as ClientMessage
from leveret.highlevel import compression, serialization
from leveret.highlevel.exceptions import ContentDisallowed, SerializerNotInstalled
from leveret.highlevel.message import Message
from leveret.wire import amqp0_9_1 as spec

PICKLE = "application/x-python-serialize"

NESTED = {
    "text": "lièvre ✓ 日本語 🐇",
    "list": [1, -2, 3.5, None, True, False, "x"],
    "nested": {"deep": {"deeper": [{"k": "v"}, []]}},
    "big": 2**64 + 1,
}
EXTRAS = {
    "when": datetime(2024, 5, 17, 8, 30, 1, 250000, tzinfo=timezone.utc),
    "day": date(2000, 2, 29),
    "amount": Decimal("12345.678901234567890"),
    "id": uuid.UUID("0b8a5f7e-2f7e-4c1a-9d8e-2a8b4c6d8e0f"),
    "utf8_bytes": b"hello",
    "binary_bytes": b"\x00\xff\xfe",
}


class Pickled:
    """A user class, to show pickle carries real objects both ways."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pickled) and other.n == self.n


# (value, serializer name for both libraries)
CASES: list[tuple[str, Any, str | None]] = [
    ("json-nested", NESTED, "json"),
    ("json-extras", EXTRAS, "json"),
    ("json-scalar", "just a string", "json"),
    ("str", "plain text é", None),
    ("bytes", b"\x00\x01\x02 raw \xff", None),
    ("pickle", {"obj": Pickled(7), "tuple": (1, 2), "set": {3}}, "pickle"),
]
# The names both libraries know (kombu has no "bz2"; leveret takes its "bzip2"/"bzip" too).
COMPRESSIONS = [None, "zlib", "gzip", "bzip2", "bzip", "lzma", "xz"]
ACCEPT_ALL = {"application/json", "application/data", "text/plain", PICKLE}


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _wire_body(body: Any, content_encoding: str | None) -> bytes:
    # kombu's json encoder returns str; py-amqp encodes str bodies before they go out.
    return body.encode(content_encoding or "utf-8") if isinstance(body, str) else bytes(body)


class KombuChannelStub:
    """The two transport-channel methods kombu's Producer uses to publish, keeping what it
    would have sent (as the pyamqp transport builds it)."""

    def __init__(self) -> None:
        self.sent: list[amqp.Message] = []

    def prepare_message(self, body: Any, priority: Any = None, content_type: Any = None,
                        content_encoding: Any = None, headers: Any = None,
                        properties: Any = None) -> amqp.Message:
        return amqp.Message(body, priority=priority, content_type=content_type,
                            content_encoding=content_encoding, application_headers=headers,
                            **(properties or {}))

    def basic_publish(self, message: amqp.Message, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False, **kwargs: Any) -> None:
        self.sent.append(message)


def kombu_publish(value: Any, serializer: str | None, compress: str | None) -> amqp.Message:
    channel = KombuChannelStub()
    producer = Producer(channel, auto_declare=False)
    kwargs: dict[str, Any] = {"routing_key": "rk", "compression": compress}
    if serializer is not None:
        kwargs["serializer"] = serializer
    producer.publish(value, **kwargs)
    [message] = channel.sent
    return message


def leveret_received(body: bytes, properties_bytes: bytes, tag: int = 1) -> ClientMessage:
    """A client message as leveret's core would build it from these wire bytes."""
    props = spec.Basic.Properties.decode(properties_bytes, 0, len(properties_bytes))
    method = spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, redelivered=False,
                                exchange="ex", routing_key="rk")
    return ClientMessage._received(None, method, props, body)


def leveret_publish(value: Any, serializer: str | None, compress: str | None) -> ClientMessage:
    """What a leveret producer sends: serialize, compress, name it in the header."""
    content_type, content_encoding, body = serialization.dumps(value, serializer)
    headers: dict[str, Any] = {"x-app": "leveret"}
    if compress is not None:
        body, headers["compression"] = compression.compress(body, compress)
    return ClientMessage(body, content_type=content_type, content_encoding=content_encoding,
                         headers=headers, delivery_mode=2)


def kombu_received(message: ClientMessage, accept: Any) -> Any:
    """kombu's consumer-side message (what its pyamqp transport builds) for these bytes."""
    raw = spec.Basic.Properties(**message.properties).encode()
    amqp_msg = amqp.Message()
    amqp_msg._load_properties(spec.Basic.CLASS_ID, raw, 0)
    amqp_msg.body = bytes(message.body)
    amqp_msg.delivery_info = {"consumer_tag": "ctag", "delivery_tag": 1, "redelivered": False,
                              "exchange": "ex", "routing_key": "rk"}
    return kombu.transport.pyamqp.Message(amqp_msg, channel=None, accept=accept)


# ---------------------------------------------------------------------- whole messages


@pytest.mark.parametrize("compress", COMPRESSIONS)
@pytest.mark.parametrize(("case", "value", "serializer"), CASES, ids=[c[0] for c in CASES])
def test_kombu_producer_to_leveret_message(case: str, value: Any, serializer: str | None,
                                           compress: str | None) -> None:
    sent = kombu_publish(value, serializer, compress)
    body = _wire_body(sent.body, sent.properties.get("content_encoding"))
    received = leveret_received(body, sent._serialize_properties())
    accept = ["pickle"] if serializer == "pickle" else None
    m = Message(received, accept=accept)
    assert m.errors == []
    assert m.payload == value
    if compress is not None:
        assert m.headers["compression"] == compression.get_content_type(compress)


@pytest.mark.parametrize("compress", COMPRESSIONS)
@pytest.mark.parametrize(("case", "value", "serializer"), CASES, ids=[c[0] for c in CASES])
def test_leveret_message_to_kombu_message(case: str, value: Any, serializer: str | None,
                                          compress: str | None) -> None:
    sent = leveret_publish(value, serializer, compress)
    km = kombu_received(sent, accept=ACCEPT_ALL)
    assert km.errors == []
    assert km.decode() == value
    assert km.headers["x-app"] == "leveret"


def test_kombu_pickle_refused_by_leveret_by_default() -> None:
    ran: list[int] = []

    class Bomb:
        def __reduce__(self) -> tuple[Any, ...]:
            return (ran.append, (1,))

    sent = kombu_publish(Bomb(), "pickle", None)
    m = Message(leveret_received(sent.body, sent._serialize_properties()))
    with pytest.raises(ContentDisallowed):
        m.payload
    assert ran == []


def test_kombu_message_built_from_leveret_body_and_properties() -> None:
    """kombu's generic ``kombu.message.Message`` from leveret's body and properties."""
    for value, serializer, method in [(NESTED, "json", "zlib"), (b"\x01\x02", None, "bzip2"),
                                      ("texte", None, "lzma"), (EXTRAS, None, None)]:
        ct, ce, body = serialization.dumps(value, serializer)
        headers = {}
        if method:
            body, headers["compression"] = compression.compress(body, method)
        km = kombu.message.Message(body=body, content_type=ct, content_encoding=ce,
                                   headers=headers, accept=ACCEPT_ALL)
        assert km.decode() == value


def test_leveret_message_built_from_kombu_body_and_headers() -> None:
    for value, serializer, method in [(NESTED, "json", "zlib"), (b"\x01\x02", None, "bzip2"),
                                      ("texte", None, "lzma"), (EXTRAS, "json", None)]:
        ct, ce, payload = kombu.serialization.dumps(value, serializer)
        body = _wire_body(payload, ce)
        headers = {}
        if method:
            body, headers["compression"] = kombu.compression.compress(body, method)
        m = Message(ClientMessage(body, content_type=ct, content_encoding=ce, headers=headers))
        assert m.payload == value


# ---------------------------------------------------------------------- the functions


@pytest.mark.parametrize(("case", "value", "serializer"), CASES, ids=[c[0] for c in CASES])
def test_kombu_dumps_leveret_loads(case: str, value: Any, serializer: str | None) -> None:
    ct, ce, payload = kombu.serialization.dumps(value, serializer)
    accept = serialization.prepare_accept_content(["json", "raw", "pickle"])
    assert serialization.loads(_wire_body(payload, ce), ct, ce, accept=accept) == value


@pytest.mark.parametrize(("case", "value", "serializer"), CASES, ids=[c[0] for c in CASES])
def test_leveret_dumps_kombu_loads(case: str, value: Any, serializer: str | None) -> None:
    ct, ce, payload = serialization.dumps(value, serializer)
    assert kombu.serialization.loads(payload, ct, ce, accept=ACCEPT_ALL) == value


def test_content_types_match_kombus() -> None:
    for value, serializer in [(NESTED, "json"), ("s", None), (b"b", None), ([1], "pickle")]:
        ours = serialization.dumps(value, serializer)[:2]
        theirs = kombu.serialization.dumps(value, serializer)[:2]
        assert ours == theirs, (value, serializer)
    for name in ("json", "pickle", "yaml", "msgpack"):
        assert serialization.registry.name_to_type[name] == kombu.serialization.registry.name_to_type[name]


def test_optional_serializers_interoperate_when_installed() -> None:
    value = {"k": ["v", 1, 2.5, None, True], "u": "é"}
    for name, module in (("yaml", "yaml"), ("msgpack", "msgpack")):
        if not _installed(module):
            with pytest.raises(SerializerNotInstalled):
                serialization.dumps(value, name)
            continue
        ct, ce, payload = kombu.serialization.dumps(value, name)
        assert serialization.loads(_wire_body(payload, ce), ct, ce, accept=[name]) == value
        ct, ce, payload = serialization.dumps(value, name)
        assert kombu.serialization.loads(payload, ct, ce, accept={ct}) == value


@pytest.mark.parametrize("method", [m for m in COMPRESSIONS if m])
def test_compression_both_ways(method: str) -> None:
    body = ("lièvre " * 500).encode()
    packed, ct = kombu.compression.compress(body, method)
    assert ct == compression.get_content_type(method)
    assert compression.decompress(packed, ct) == body
    packed, ct = compression.compress(body, method)
    assert ct == kombu.compression.get_encoder(method)[1]
    assert kombu.compression.decompress(packed, ct) == body


def test_kombu_encoders_are_all_known_to_leveret() -> None:
    for ct in kombu.compression.encoders():
        packed, _ = kombu.compression.compress(b"payload", ct)
        assert compression.decompress(packed, ct) == b"payload"
