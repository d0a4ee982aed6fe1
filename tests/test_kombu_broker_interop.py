"""leveret and real kombu (``pyamqp`` transport, i.e. py-amqp) through the same broker.

* leveret ``Producer`` -> broker -> kombu ``Consumer``: json, str, bytes and pickle bodies,
  uncompressed and zlib/bz2/lzma-compressed, with headers and priorities; kombu must decode
  each to exactly the value sent (same type, same value) and see the same properties.
* kombu ``Producer`` -> broker -> leveret ``Consumer``: the same, the other way.

The queue is a priority queue and every message is published (and confirmed) before the
consumer starts, so the delivery order also shows the priority went across: highest first.
Queue and exchange names are unique per test and deleted afterwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import amqp
import kombu
import pytest

from leveret.highlevel import Connection, Consumer, Exchange, Message, Producer, Queue

PICKLE = "application/x-python-serialize"
ACCEPT = ["json", "pickle", "text/plain", "application/data"]
WAIT = 10


class Pickled:
    """A user class: pickle carries real objects."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return type(other) is Pickled and other.n == self.n

    def __repr__(self) -> str:
        return f"Pickled({self.n})"


# (case, value, serializer for both libraries, content type on the wire, encoding)
CASES: list[tuple[str, Any, str | None, str, str]] = [
    ("json", {
        "text": "lièvre ✓ 日本語 🐇", "ints": [0, -1, 2**31, 2**63 - 1], "float": 1.5,
        "flags": [True, False, None], "nested": {"deep": {"deeper": [{"k": "v"}, []]}},
    }, "json", "application/json", "utf-8"),
    ("json-extras", {
        "when": datetime(2024, 5, 17, 8, 30, 1, 250000, tzinfo=timezone.utc),
        "amount": Decimal("12345.678901234567890"),
        "id": uuid.UUID("0b8a5f7e-2f7e-4c1a-9d8e-2a8b4c6d8e0f"),
    }, "json", "application/json", "utf-8"),
    ("str", "plain text é 🐇", None, "text/plain", "utf-8"),
    ("bytes", bytes(range(256)) * 3, None, "application/data", "binary"),
    ("pickle", {"obj": Pickled(7), "tuple": (1, 2), "set": {3}, "bytes": b"\x00"}, "pickle", PICKLE, "binary"),
]

# leveret's name -> (kombu's name, the ``compression`` header both write)
COMPRESSIONS: dict[str | None, tuple[str | None, str | None]] = {
    None: (None, None),
    "zlib": ("zlib", "application/x-gzip"),
    "bz2": ("bzip2", "application/x-bz2"),
    "lzma": ("lzma", "application/x-lzma"),
}


def headers_for(index: int, case: str, big: bool = False) -> dict[str, Any]:
    """Headers of many field types.  ``big`` adds a 64-bit integer, which py-amqp writes
    with the letter ``L`` (see :func:`test_kombu_64bit_header_int_reaches_leveret`)."""
    headers = {
        "case": case, "index": index, "negative": -7, "flag": True, "none": None,
        "nested": {"list": [1, "two", False], "text": "é"},
    }
    if big:
        headers["big"] = 2**40
        headers["big_negative"] = -(2**62)
    return headers


def assert_same(received: Any, sent: Any) -> None:
    assert type(received) is type(sent), (type(received), type(sent))
    assert received == sent


@pytest.fixture
def url_parts(amqp_url: str) -> dict[str, Any]:
    url = urlsplit(amqp_url)
    return {
        "hostname": url.hostname or "127.0.0.1",
        "port": url.port or 5672,
        "userid": unquote(url.username or "guest"),
        "password": unquote(url.password or "guest"),
        "virtual_host": unquote(url.path[1:]) if url.path not in ("", "/", "//") else "/",
    }


@pytest.fixture
def kconn(url_parts: dict[str, Any]) -> Iterator[kombu.Connection]:
    # confirm_publish: kombu's publish returns once the broker confirmed it.
    conn = kombu.Connection(transport="pyamqp", transport_options={"confirm_publish": True}, **url_parts)
    try:
        conn.connect()
        assert isinstance(conn.connection, amqp.Connection)  # really py-amqp on the wire
        yield conn
    finally:
        conn.release()


@pytest.fixture
def lconn(amqp_url: str) -> Iterator[Connection]:
    conn = Connection(amqp_url)
    try:
        yield conn
    finally:
        conn.release()


@pytest.fixture
def names(lconn: Connection) -> Iterator[tuple[str, str]]:
    queue, exchange = f"interop-q-{uuid.uuid4().hex[:10]}", f"interop-x-{uuid.uuid4().hex[:10]}"
    yield queue, exchange
    channel = lconn.channel()
    channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    channel.close()


@pytest.mark.parametrize("compression", list(COMPRESSIONS), ids=lambda c: c or "none")
def test_leveret_producer_to_kombu_consumer(
    lconn: Connection, kconn: kombu.Connection, names: tuple[str, str], compression: str | None,
) -> None:
    queue_name, exchange_name = names
    kexchange = kombu.Exchange(exchange_name, type="direct", durable=False)
    kqueue = kombu.Queue(queue_name, kexchange, routing_key="rk", durable=False,
                         queue_arguments={"x-max-priority": 10})
    kqueue(kconn.default_channel).declare()

    producer = Producer(lconn, Exchange(exchange_name, type="direct", durable=False))
    for index, (case, value, serializer, _, _) in enumerate(CASES):
        producer.publish(
            value, routing_key="rk", serializer=serializer, compression=compression,
            headers=headers_for(index, case, big=True), priority=index + 1,  # confirmed
        )
    producer.close()

    received: list[tuple[Any, kombu.Message]] = []

    def on_message(body: Any, message: kombu.Message) -> None:
        received.append((body, message))
        message.ack()

    with kombu.Consumer(kconn, queues=[kqueue], callbacks=[on_message], accept=ACCEPT):
        while len(received) < len(CASES):
            kconn.drain_events(timeout=WAIT)

    # Highest priority first: the last published arrives first.
    assert [m.headers["index"] for _, m in received] == list(reversed(range(len(CASES))))
    _, wire_compression = COMPRESSIONS[compression]
    for body, message in received:
        index = message.headers["index"]
        case, value, _, content_type, encoding = CASES[index]
        assert_same(body, value)
        assert message.content_type == content_type
        assert message.content_encoding == encoding
        assert message.properties["priority"] == index + 1
        assert message.properties["delivery_mode"] == 2
        expected = headers_for(index, case, big=True)
        if wire_compression is not None:
            expected["compression"] = wire_compression
        assert message.headers == expected
        assert message.delivery_info["routing_key"] == "rk"
        assert message.delivery_info["exchange"] == exchange_name


@pytest.mark.parametrize("compression", list(COMPRESSIONS), ids=lambda c: c or "none")
def test_kombu_producer_to_leveret_consumer(
    lconn: Connection, kconn: kombu.Connection, names: tuple[str, str], compression: str | None,
) -> None:
    queue_name, exchange_name = names
    queue = Queue(queue_name, Exchange(exchange_name, type="direct", durable=False), "rk",
                  durable=False, max_priority=10)
    queue.declare(channel=lconn.default_channel)

    kombu_compression, wire_compression = COMPRESSIONS[compression]
    kexchange = kombu.Exchange(exchange_name, type="direct", durable=False)
    with kconn.Producer(exchange=kexchange) as kproducer:
        for index, (case, value, serializer, _, _) in enumerate(CASES):
            kproducer.publish(
                value, routing_key="rk", serializer=serializer, compression=kombu_compression,
                headers=headers_for(index, case), priority=index + 1,
            )
    ok = kconn.default_channel.queue_declare(queue_name, passive=True)  # all confirmed
    assert ok.message_count == len(CASES)

    received: list[tuple[Any, Message]] = []

    def on_message(body: Any, message: Message) -> None:
        received.append((body, message))
        message.ack()

    with Consumer(lconn, [queue], accept=ACCEPT, callbacks=[on_message]):
        while len(received) < len(CASES):
            lconn.drain_events(timeout=WAIT)

    assert [m.headers["index"] for _, m in received] == list(reversed(range(len(CASES))))
    for body, message in received:
        index = message.headers["index"]
        case, value, _, content_type, encoding = CASES[index]
        assert_same(body, value)
        assert message.content_type == content_type
        assert message.content_encoding == encoding
        assert message.properties["priority"] == index + 1
        assert message.properties["delivery_mode"] == 2
        expected = headers_for(index, case)
        if wire_compression is not None:
            expected["compression"] = wire_compression
        assert message.headers == expected
        assert message.delivery_info["routing_key"] == "rk"
        assert message.delivery_info["exchange"] == exchange_name
    assert lconn.default_channel.queue_declare(queue_name, passive=True).message_count == 0


def test_kombu_64bit_header_int_reaches_leveret(
    lconn: Connection, kconn: kombu.Connection, names: tuple[str, str],
) -> None:
    queue_name, exchange_name = names
    queue = Queue(queue_name, Exchange(exchange_name, type="direct", durable=False), "rk", durable=False)
    queue = queue(lconn.default_channel)
    queue.declare()
    with kconn.Producer(exchange=kombu.Exchange(exchange_name, type="direct", durable=False)) as kproducer:
        kproducer.publish({"n": 1}, routing_key="rk", headers=headers_for(0, "big", big=True))
    message = queue.get(no_ack=True)
    assert message is not None
    assert message.headers == headers_for(0, "big", big=True)
