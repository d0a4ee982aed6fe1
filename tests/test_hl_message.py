"""leveret.highlevel.message.Message: decoding a delivery and settling it exactly once.

Messages arrive through the real sans-IO core from a scripted server (bytes in), and the
settlement methods are checked on the frames the core queued (bytes out): no broker, no
mocks.
"""

from __future__ import annotations

import functools
import logging
import pickle
import queue
import zlib
from typing import Any

import pytest
from scripted import Scripted

from leveret.client import ChannelClosedError
from leveret.client import Message as ClientMessage
from leveret.client import events as ev
from leveret.highlevel import compression, serialization
from leveret.highlevel.exceptions import (
    CompressionNotInstalled,
    ContentDisallowed,
    DecodeError,
    DecompressedSizeExceeded,
    DecompressionError,
    Empty,
    InconsistencyError,
    LimitExceeded,
    MessageReturned,
    MessageStateError,
    NotBoundError,
    OperationalError,
)
from leveret.highlevel.message import ACK, RECEIVED, REJECTED, REQUEUED, Message
from leveret.wire.errors import LeveretError


class CoreChannel:
    """The three settlement methods of ``leveret.client.Channel``, sending through a sans-IO
    core, so tests read what went on the wire."""

    def __init__(self, server: Scripted, channel_id: int) -> None:
        self.server = server
        self.channel_id = channel_id

    def _send(self, name: str, **fields: Any) -> None:
        self.server.core.send_method(self.channel_id, self.server.m(name, **fields))

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._send("basic.ack", delivery_tag=delivery_tag, multiple=multiple)

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._send("basic.nack", delivery_tag=delivery_tag, multiple=multiple, requeue=requeue)

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self._send("basic.reject", delivery_tag=delivery_tag, requeue=requeue)


class Wire:
    def __init__(self) -> None:
        self.server = Scripted("0-9-1")
        self.server.handshake()
        self.cid = self.server.open_channel()
        self.channel = CoreChannel(self.server, self.cid)

    def client_message(self, body: bytes, tag: int = 1, **props: Any) -> ClientMessage:
        events = self.server.feed(self.server.deliver(self.cid, body, tag=tag, **props))
        assert len(events) == 1 and isinstance(events[0], ev.MessageReceived), events
        e = events[0]
        return ClientMessage._received(self.channel, e.method, e.properties, e.body)  # type: ignore[arg-type]

    def deliver(self, body: bytes, tag: int = 1, *, accept: Any = None, no_ack: bool = False,
                **props: Any) -> Message:
        return Message(self.client_message(body, tag, **props), accept=accept, no_ack=no_ack)

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for cid, method in self.server.sent_methods():
            assert cid == self.cid
            out.append((method.NAME, {k: getattr(method, k) for k in method.FIELDS}))
        return out

    def close_channel_by_broker(self) -> None:
        self.server.feed(self.server.frame(
            self.cid, "channel.close", reply_code=404, reply_text="NOT_FOUND", class_id=60, method_id=40,
        ))
        assert self.server.sent_names() == [(self.cid, "channel.close-ok")]


@pytest.fixture
def wire() -> Wire:
    return Wire()


def ack_frame(tag: int, multiple: bool = False) -> tuple[str, dict[str, Any]]:
    return ("basic.ack", {"delivery_tag": tag, "multiple": multiple})


def reject_frame(tag: int, requeue: bool) -> tuple[str, dict[str, Any]]:
    return ("basic.reject", {"delivery_tag": tag, "requeue": requeue})


def nack_frame(tag: int, multiple: bool, requeue: bool) -> tuple[str, dict[str, Any]]:
    return ("basic.nack", {"delivery_tag": tag, "multiple": multiple, "requeue": requeue})


# ---------------------------------------------------------------------- attributes


def test_attributes_come_from_the_delivery(wire: Wire) -> None:
    m = wire.deliver(
        b'{"x":1}', tag=9, content_type="application/json", content_encoding="utf-8",
        headers={"h": "v"}, correlation_id="c1", delivery_mode=2,
    )
    assert m.delivery_tag == 9
    assert m.delivery_info == {
        "consumer_tag": "ctag", "delivery_tag": 9, "redelivered": False,
        "exchange": "ex", "routing_key": "rk",
    }
    assert m.properties == {
        "content_type": "application/json", "content_encoding": "utf-8",
        "headers": {"h": "v"}, "correlation_id": "c1", "delivery_mode": 2,
    }
    assert m.headers == {"h": "v"}
    assert (m.content_type, m.content_encoding) == ("application/json", "utf-8")
    assert m.channel is wire.channel
    assert m.body == b'{"x":1}' and type(m.body) is bytes
    assert m.errors == []
    assert m._state == RECEIVED and not m.acknowledged


def test_missing_properties(wire: Wire) -> None:
    m = wire.deliver(b"raw")
    assert m.headers == {} and m.content_type is None and m.content_encoding is None
    assert m.payload == b"raw"  # no content type: raw bytes


def test_delivery_info_and_properties_can_be_replaced(wire: Wire) -> None:
    m = wire.deliver(b"x", tag=3, content_type="text/plain")
    m.properties = {"content_type": "application/json"}
    m.delivery_info = {"delivery_tag": 3, "redelivered": True}
    assert m.properties == {"content_type": "application/json"}
    assert m.delivery_info == {"delivery_tag": 3, "redelivered": True}


def test_a_client_message_built_in_memory(wire: Wire) -> None:
    # As memory:// delivers: a client Message made from a body and properties, with its
    # delivery_info set by hand.
    cm = ClientMessage(b'{"a":1}', content_type="application/json", headers={"k": 1}, priority=4)
    cm.delivery_info = {"consumer_tag": "c", "delivery_tag": 5, "redelivered": False,
                        "exchange": "", "routing_key": "q"}
    cm.channel = wire.channel  # type: ignore[assignment]
    m = Message(cm)
    assert (m.delivery_tag, m.content_type, m.content_encoding) == (5, "application/json", None)
    assert m.headers == {"k": 1}
    assert m.properties == {"content_type": "application/json", "headers": {"k": 1}, "priority": 4}
    assert m.delivery_info["routing_key"] == "q"
    assert m.payload == {"a": 1}
    m.ack()
    assert wire.sent() == [ack_frame(5)]


def test_client_message_properties_one_by_one(wire: Wire) -> None:
    # leveret.client.Message's attribute access to single properties (what Message reads).
    cm = wire.client_message(b"x", tag=2, content_type="text/plain", headers={"h": 1}, priority=7)
    assert (cm.content_type, cm.content_encoding, cm.priority, cm.reply_to) == ("text/plain", None, 7, None)
    assert cm.headers == {"h": 1}
    assert cm.delivery_tag == 2
    with pytest.raises(AttributeError):
        cm.no_such_property  # noqa: B018
    cm.properties = {"content_type": "a/b"}  # a replaced dict is what they read from then on
    assert (cm.content_type, cm.priority, cm.headers) == ("a/b", None, {})
    bare = wire.client_message(b"y")
    assert (bare.content_type, bare.properties) == (None, {})
    # Headers read where none were set: an empty dict that becomes the message's own, so
    # that changes to it are kept (a republished message carries them).
    assert bare.headers == {} and bare.properties == {"headers": {}}
    bare.headers["x"] = 1
    assert bare.properties == {"headers": {"x": 1}}
    # The high-level message reads the client message's headers without that effect.
    plain = wire.client_message(b"z")
    hl = Message(plain, channel=None)
    assert hl.headers == {} and hl.properties == {}


def test_client_message_settlement(wire: Wire) -> None:
    wire.client_message(b"a", tag=4).ack(multiple=True)
    wire.client_message(b"b", tag=5).reject(requeue=False)
    wire.client_message(b"c", tag=6).nack(requeue=False)
    assert wire.sent() == [ack_frame(4, True), reject_frame(5, False), nack_frame(6, False, False)]
    for settle in ("ack", "nack", "reject"):
        with pytest.raises(ValueError, match="not delivered by a broker"):
            getattr(ClientMessage(b"never delivered"), settle)()
    assert wire.sent() == []


def test_explicit_channel_overrides_the_client_messages(wire: Wire) -> None:
    other = CoreChannel(wire.server, wire.cid)
    m = Message(wire.client_message(b"x"), channel=other)
    assert m.channel is other


def test_repr_shows_state_not_body(wire: Wire) -> None:
    m = wire.deliver(b"SECRET" * 100, tag=4, content_type="text/plain")
    text = repr(m)
    assert "SECRET" not in text
    for part in ("state=RECEIVED", "content_type='text/plain'", "delivery_tag=4", "body_length=600",
                 "exchange='ex'", "routing_key='rk'"):
        assert part in text, part
    m.ack()
    assert "state=ACK" in repr(m)


# ---------------------------------------------------------------------- decoding


def test_payload_decodes_json_and_is_cached(wire: Wire) -> None:
    m = wire.deliver('{"a":[1,"é"]}'.encode(), content_type="application/json", content_encoding="utf-8")
    first = m.payload
    assert first == {"a": [1, "é"]}
    assert m.payload is first and m.decode() is first


def test_falsy_payload_is_cached_too(wire: Wire) -> None:
    calls: list[str] = []

    def decoder(text: str) -> int:
        calls.append(text)
        return 0

    serialization.register("zero", str, decoder, "application/x-zero")
    try:
        m = wire.deliver(b"0", content_type="application/x-zero", accept={"application/x-zero"})
        assert m.payload == 0 and m.decode() == 0 and m.payload == 0
        assert calls == ["0"]
    finally:
        serialization.unregister("zero")


def test_text_and_bytes_payloads(wire: Wire) -> None:
    assert wire.deliver("é".encode(), content_type="text/plain", content_encoding="utf-8").payload == "é"
    assert wire.deliver(b"\xff", 2, content_type="application/data", content_encoding="binary").payload == b"\xff"


def test_pickle_refused_by_default_and_never_loaded(wire: Wire) -> None:
    ran: list[int] = []

    class Bomb:
        def __reduce__(self) -> tuple[Any, ...]:
            return (ran.append, (1,))

    body = pickle.dumps(Bomb())
    m = wire.deliver(body, content_type="application/x-python-serialize", content_encoding="binary")
    with pytest.raises(ContentDisallowed):
        m.payload
    with pytest.raises(ContentDisallowed):  # failures are not cached
        m.decode()
    assert ran == []
    # The message can still be settled after a refusal.
    m.reject()
    assert wire.sent() == [reject_frame(1, False)]


def test_pickle_loaded_when_accepted(wire: Wire) -> None:
    body = pickle.dumps({"k": (1, 2)})
    for accept in (["pickle"], {"application/x-python-serialize"}):
        m = wire.deliver(body, content_type="application/x-python-serialize",
                         content_encoding="binary", accept=accept)
        assert m.payload == {"k": (1, 2)}


def test_bad_json_is_a_decode_error(wire: Wire) -> None:
    m = wire.deliver(b"{nope", content_type="application/json", content_encoding="utf-8")
    with pytest.raises(DecodeError):
        m.payload


@pytest.mark.parametrize("method", ["zlib", "bz2", "lzma"])
def test_compressed_body_is_decompressed(wire: Wire, method: str) -> None:
    raw = b'{"big":"' + b"x" * 5000 + b'"}'
    packed, ct = compression.compress(raw, method)
    m = wire.deliver(packed, content_type="application/json", content_encoding="utf-8",
                     headers={"compression": ct})
    assert m.body == raw and m.errors == []
    assert m.client_message.body == packed  # the wire body is kept
    assert m.payload == {"big": "x" * 5000}
    assert "body_length=5010" in repr(m)


def test_corrupt_compressed_body_is_recorded_and_raised_on_decode(wire: Wire) -> None:
    m = wire.deliver(b"not zlib", content_type="application/json", headers={"compression": "application/x-gzip"})
    assert len(m.errors) == 1 and isinstance(m.errors[0], DecompressionError)
    assert m.body == b"not zlib"  # left as received
    with pytest.raises(DecompressionError):
        m.payload
    m.ack()  # still settleable
    assert wire.sent() == [ack_frame(1)]


def test_unknown_compression_is_recorded(wire: Wire) -> None:
    m = wire.deliver(b"x", headers={"compression": "application/x-snappy"})
    assert [type(e) for e in m.errors] == [CompressionNotInstalled]
    with pytest.raises(CompressionNotInstalled):
        m.decode()


def test_decompression_bomb_is_bounded(wire: Wire) -> None:
    packed = zlib.compress(bytes(1 << 20))
    m = Message(wire.client_message(packed, headers={"compression": "application/x-gzip"}),
                max_decompressed_size=1000)
    assert isinstance(m.errors[0], DecompressedSizeExceeded)
    with pytest.raises(DecompressedSizeExceeded):
        m.payload


def test_a_compressed_body_of_a_refused_content_type_is_never_decompressed(wire: Wire) -> None:
    """decode() checks the content type first: a pickle body is refused before a byte of it
    is decompressed (a small body may expand to max_decompressed_size)."""
    calls: list[int] = []

    def counting(body: Any) -> bytes:
        calls.append(len(body))
        return bytes(body)

    compression.register("counted", bytes, counting, "application/x-counted")
    try:
        m = wire.deliver(b"pickled", content_type="application/x-python-serialize",
                         headers={"compression": "application/x-counted"})
        with pytest.raises(ContentDisallowed):
            m.decode()
        assert calls == []
        accepted = wire.deliver(b'"ok"', content_type="application/json",
                                headers={"compression": "application/x-counted"})
        assert accepted.payload == "ok" and calls == [4]
        assert m.body == b"pickled" and calls == [4, 7]  # the body itself: on first use
    finally:
        compression.unregister("counted")


def test_a_thread_reading_the_body_while_another_decompresses_it_never_sees_it_compressed(wire: Wire) -> None:
    """The body is decompressed on first use: a second thread asking meanwhile got the
    compressed bytes (and decode() decoded them) -- now it decompresses too."""
    import threading

    first_started, release_first = threading.Event(), threading.Event()
    calls = 0

    def slow_once(body: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            release_first.wait(10)
        return bytes(body).upper()

    compression.register("slow", bytes, slow_once, "application/x-slow")
    try:
        m = wire.deliver(b"text", content_type="text/plain", headers={"compression": "application/x-slow"})
        seen: list[bytes] = []
        first = threading.Thread(target=lambda: seen.append(m.body))
        first.start()
        assert first_started.wait(10)
        assert m.body == b"TEXT" and m.payload == "TEXT" and m.errors == []  # not b"text"
        release_first.set()
        first.join(10)
        assert seen == [b"TEXT"] and m.body == b"TEXT"
    finally:
        release_first.set()
        compression.unregister("slow")


# ---------------------------------------------------------------------- settlement


def test_ack(wire: Wire) -> None:
    m = wire.deliver(b"x", tag=3)
    m.ack()
    assert wire.sent() == [ack_frame(3)]
    assert m._state == ACK and m.acknowledged


def test_ack_multiple(wire: Wire) -> None:
    wire.deliver(b"x", tag=1)
    m = wire.deliver(b"y", tag=2)
    m.ack(multiple=True)
    assert wire.sent() == [ack_frame(2, multiple=True)]


@pytest.mark.parametrize(
    ("first", "expected_state", "expected_frame"),
    [
        (lambda m: m.ack(), ACK, ack_frame(5)),
        (lambda m: m.reject(), REJECTED, reject_frame(5, False)),
        (lambda m: m.reject(requeue=True), REQUEUED, reject_frame(5, True)),
        (lambda m: m.requeue(), REQUEUED, reject_frame(5, True)),
        (lambda m: m.nack(), REQUEUED, nack_frame(5, False, True)),
        (lambda m: m.nack(requeue=False), REJECTED, nack_frame(5, False, False)),
        (lambda m: m.nack(multiple=True), REQUEUED, nack_frame(5, True, True)),
    ],
)
def test_each_settlement_once_then_every_other_refused(
    wire: Wire, first: Any, expected_state: str, expected_frame: Any
) -> None:
    m = wire.deliver(b"x", tag=5)
    first(m)
    assert wire.sent() == [expected_frame]
    assert m._state == expected_state and m.acknowledged
    for again in (m.ack, m.reject, m.requeue, m.nack):
        with pytest.raises(MessageStateError, match=f"already acknowledged with state: {expected_state}"):
            again()
    assert wire.sent() == []  # nothing more went out
    assert m._state == expected_state


def test_no_ack_delivery_is_already_settled(wire: Wire) -> None:
    # As kombu ignores ack() for a no_ack consumer's message: a callback that always acks
    # works with either kind of consumer.  Nothing goes to the broker (it would refuse an
    # unknown delivery tag and close the channel).
    m = wire.deliver(b"x", tag=2, no_ack=True)
    assert m._state == ACK and m.acknowledged
    for settle in (m.ack, m.reject, functools.partial(m.nack, requeue=False), m.ack):
        settle()
    assert m.ack_log_error(logging.getLogger("t"), MessageStateError) is True
    # It cannot go back to the queue: a requeue says so rather than losing it silently.
    for requeue in (m.requeue, m.nack, functools.partial(m.reject, requeue=True)):
        with pytest.raises(MessageStateError, match="cannot be requeued"):
            requeue()
    assert wire.sent() == []
    assert m._state == ACK


def test_no_channel_or_no_tag_cannot_be_settled(wire: Wire) -> None:
    local = ClientMessage(b"x", content_type="text/plain")  # built, never delivered
    m = Message(local)
    assert m.delivery_tag is None and m.channel is None
    with pytest.raises(MessageStateError, match="receiving channel"):
        m.ack()
    m = Message(local, channel=wire.channel)
    with pytest.raises(MessageStateError, match="delivery tag"):
        m.reject()
    assert m._state == RECEIVED
    assert wire.sent() == []


def test_failed_send_leaves_the_message_received(wire: Wire) -> None:
    m = wire.deliver(b"x", tag=6)
    wire.close_channel_by_broker()
    with pytest.raises(ChannelClosedError):
        m.ack()
    assert m._state == RECEIVED and not m.acknowledged


def test_ack_log_error_logs_instead_of_raising(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.hl.message")
    m = wire.deliver(b"x", tag=6)
    wire.close_channel_by_broker()
    with caplog.at_level(logging.CRITICAL, logger="test.hl.message"):
        assert m.ack_log_error(log, (ChannelClosedError,)) is False
    [record] = caplog.records
    assert record.levelno == logging.CRITICAL
    assert "Couldn't ack 6" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ChannelClosedError
    # Errors not listed still propagate.
    with pytest.raises(ChannelClosedError):
        m.ack_log_error(log, (KeyError,))


def test_ack_log_error_on_double_ack(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.hl.message")
    m = wire.deliver(b"x", tag=7)
    assert m.ack_log_error(log, (MessageStateError,)) is True
    assert wire.sent() == [ack_frame(7)]
    with caplog.at_level(logging.CRITICAL, logger="test.hl.message"):
        assert m.ack_log_error(log, MessageStateError) is False
    assert "already acknowledged" in caplog.text
    assert wire.sent() == []


def test_reject_log_error(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.hl.message")
    m = wire.deliver(b"x", tag=8)
    assert m.reject_log_error(log, (MessageStateError,), requeue=True) is True
    assert wire.sent() == [reject_frame(8, True)]
    assert m._state == REQUEUED
    with caplog.at_level(logging.CRITICAL, logger="test.hl.message"):
        assert m.reject_log_error(log, (MessageStateError,)) is False
    assert "Couldn't reject 8" in caplog.text
    with pytest.raises(MessageStateError):
        m.reject_log_error(log, (ChannelClosedError,))


# ---------------------------------------------------------------------- exceptions


def test_message_returned_takes_its_fields_from_the_return(wire: Wire) -> None:
    method = wire.server.m("basic.return", reply_code=312, reply_text="NO_ROUTE",
                           exchange="ex", routing_key="nowhere")
    [event] = wire.server.feed(wire.server.content(wire.cid, method, b"lost"))
    assert isinstance(event, ev.MessageReturned)
    returned = ClientMessage._received(None, event.method, event.properties, event.body)
    exc = MessageReturned(returned)
    assert exc.message is returned
    assert (exc.reply_code, exc.reply_text, exc.exchange, exc.routing_key) == (312, "NO_ROUTE", "ex", "nowhere")
    assert "312 NO_ROUTE" in str(exc) and "'nowhere'" in str(exc)
    assert MessageReturned(returned, reply_code=313).reply_code == 313  # explicit wins
    assert isinstance(exc, LeveretError)


def test_exceptions_pickle() -> None:
    exc = MessageReturned(None, 312, "NO_ROUTE", "ex", "rk")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.reply_code, back.reply_text, back.exchange, back.routing_key) == (312, "NO_ROUTE", "ex", "rk")
    big = pickle.loads(pickle.dumps(DecompressedSizeExceeded("too big", 10)))
    assert big.max_size == 10 and str(big) == "too big"


def test_exception_builtin_bases() -> None:
    assert issubclass(OperationalError, ConnectionError) and issubclass(OperationalError, LeveretError)
    assert Empty is queue.Empty
    assert not issubclass(LimitExceeded, queue.Full)
    for cls in (NotBoundError, MessageStateError, LimitExceeded, InconsistencyError, MessageReturned):
        assert issubclass(cls, LeveretError)
