"""carrot compatibility (``leveret.highlevel.compat``): the examples of carrot's documentation,
adapted to run, against the real broker and memory://.

Every name is unique per test; what a test declares is deleted afterwards.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import unique

from leveret.client import ChannelClosedError, NotFound, PreconditionFailed
from leveret.highlevel import Connection, ContentDisallowed, Message, MessageReturned
from leveret.highlevel.compat import (
    BrokerConnection,
    Consumer,
    ConsumerSet,
    Messaging,
    Publisher,
    QueueAlreadyExistsWarning,
)

WAIT = 10  # seconds a step may wait before the test fails instead of hanging


class Names:
    """Unique queue and exchange names, deleted when the test ends."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, prefix: str = "compat-q") -> str:
        name = unique(prefix)
        self.queues.append(name)
        return name

    def exchange(self, prefix: str = "compat-x") -> str:
        name = unique(prefix)
        self.exchanges.append(name)
        return name

    def cleanup(self) -> None:
        for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
            for name in names:
                channel = self.conn.channel()
                try:
                    getattr(channel, f"{kind}_delete")(name)
                except NotFound:
                    pass
                finally:
                    if channel.is_open:
                        channel.close()


@pytest.fixture
def names(hl_conn: Connection) -> Iterator[Names]:
    n = Names(hl_conn)
    yield n
    n.cleanup()


def collect_and_ack(into: list[Any]) -> Callable[[Any, Message], None]:
    """A carrot callback that records the decoded data and acks the message."""

    def callback(message_data: Any, message: Message) -> None:
        into.append(message_data)
        message.ack()

    return callback


def ready(conn: Connection, queue: str) -> int:
    """How many messages are ready in ``queue`` (passive ``queue.declare``)."""
    channel = conn.channel()
    try:
        ok = channel.queue_declare(queue=queue, passive=True)
        assert ok is not None
        return int(ok.message_count)
    finally:
        channel.close()


def queue_exists(conn: Connection, queue: str) -> bool:
    channel = conn.channel()
    try:
        channel.queue_declare(queue=queue, passive=True)
        return True
    except NotFound:
        return False
    finally:
        if channel.is_open:
            channel.close()


# ---------------------------------------------------------------------------------- connection


def test_broker_connection_with_carrot_keywords(amqp_url: str) -> None:
    """carrot's ``BrokerConnection(hostname=..., port=..., userid=..., password=...,
    virtual_host=...)`` connects, and the compat classes work on it."""
    url = urlsplit(amqp_url)
    vhost = unquote(url.path[1:]) if url.path not in ("", "/", "//") else "/"
    conn = BrokerConnection(
        hostname=url.hostname, port=url.port or 5672, userid=unquote(url.username or "guest"),
        password=unquote(url.password or "guest"), virtual_host=vhost,
        backend_cls="carrot.backends.pyamqplib.Backend",  # carrot's choice: ignored
    )
    queue, exchange = unique("compat-q"), unique("compat-x")
    try:
        assert (conn.hostname, conn.port, conn.virtual_host) == (url.hostname, url.port or 5672, vhost)
        assert conn.host == f"{url.hostname}:{url.port or 5672}"
        with Consumer(conn, queue=queue, exchange=exchange, routing_key="importer", backend=None) as consumer:
            with Publisher(conn, exchange=exchange, routing_key="importer", backend=None) as publisher:
                publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
            message = consumer.fetch()
            assert message is not None
            assert message.payload == {"import_feed": "http://cnn.com/rss/edition.rss"}
            message.ack()
        assert conn.connected
    finally:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        conn.release()


# ---------------------------------------------------------------------------------- the README


def test_readme_consumer_wait_and_publisher_send(hl_conn: Connection, names: Names) -> None:
    """carrot's first example: a Consumer with a callback in ``wait()``, a Publisher
    sending to the "feed" exchange with routing key "importer"."""
    queue, exchange = names.queue("feed"), names.exchange("feed")
    consumer = Consumer(connection=hl_conn, queue=queue, exchange=exchange, routing_key="importer")
    seen: list[str] = []

    def import_feed_callback(message_data: Any, message: Message) -> None:
        seen.append(message_data["import_feed"])
        message.ack()

    consumer.register_callback(import_feed_callback)
    publisher = Publisher(connection=hl_conn, exchange=exchange, routing_key="importer")
    publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
    publisher.close()
    consumer.wait(limit=1, timeout=WAIT)
    assert seen == ["http://cnn.com/rss/edition.rss"]
    consumer.close()
    assert ready(hl_conn, queue) == 0  # acked: not requeued by the close


def test_readme_subclassing(hl_conn: Connection, names: Names) -> None:
    """carrot's FeedPublisher/FeedConsumer: configuration by class attributes, a
    ``receive`` override instead of callbacks."""
    feed_queue, feed_exchange = names.queue("feed"), names.exchange("feed")
    imported: list[str] = []

    class FeedPublisher(Publisher):
        exchange = feed_exchange  # carrot's example says "feed"; the test needs its own
        routing_key = "importer"

        def import_feed(self, feed_url: str) -> None:
            self.send({"action": "import_feed", "feed_url": feed_url})

    class FeedConsumer(Consumer):
        queue = feed_queue
        exchange = feed_exchange
        routing_key = "importer"

        def receive(self, message_data: Any, message: Message) -> None:
            action = message_data["action"]
            if action == "import_feed":
                imported.append(message_data["feed_url"])
                message.ack()
            else:
                raise Exception(f"Unknown action: {action}")

    consumer = FeedConsumer(connection=hl_conn)
    assert (consumer.queue, consumer.exchange, consumer.routing_key) == (feed_queue, feed_exchange, "importer")
    publisher = FeedPublisher(connection=hl_conn)
    assert (publisher.exchange, publisher.routing_key, publisher.delivery_mode) == (feed_exchange, "importer", 2)
    publisher.import_feed("http://cnn.com/rss/edition.rss")
    publisher.import_feed("http://example.com/atom.xml")
    publisher.close()
    consumer.wait(limit=2, timeout=WAIT)
    assert imported == ["http://cnn.com/rss/edition.rss", "http://example.com/atom.xml"]

    publisher = FeedPublisher(connection=hl_conn)
    publisher.send({"action": "delete_everything"})
    publisher.close()
    with pytest.raises(Exception, match="Unknown action: delete_everything"):
        consumer.wait(limit=1, timeout=WAIT)
    consumer.close()
    assert ready(hl_conn, feed_queue) == 1  # the one that raised was not acked: requeued


def test_readme_fetch_without_callback(hl_conn: Connection, names: Names) -> None:
    """Polling with ``fetch``: a message or None; ``payload``, ``ack``."""
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(connection=hl_conn, queue=queue, exchange=exchange, routing_key="importer")
    assert consumer.fetch() is None
    with Publisher(hl_conn, exchange=exchange, routing_key="importer") as publisher:
        publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
    message = consumer.fetch()
    assert message is not None
    assert message.payload == {"import_feed": "http://cnn.com/rss/edition.rss"}
    assert message.decode() == message.payload
    assert message.content_type == "application/json" and message.content_encoding == "utf-8"
    assert message.delivery_info["routing_key"] == "importer"
    assert not message.acknowledged
    message.ack()
    assert message.acknowledged
    assert consumer.fetch() is None
    consumer.close()
    assert ready(hl_conn, queue) == 0


def test_readme_serialization_choices(hl_conn: Connection, names: Names) -> None:
    """The serializer per publisher and per send, and raw data with a content type."""
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="importer",
                        accept=["json", "pickle", "raw", "application/atom+xml"])
    publisher = Publisher(hl_conn, exchange=exchange, routing_key="importer", serializer="pickle")
    publisher.send({"import_feed": ("a", 1)})
    publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"}, serializer="json")
    publisher.send("<feed>...</feed>", content_type="application/atom+xml", content_encoding="utf-8")
    publisher.close()
    with Publisher(hl_conn, exchange=exchange, routing_key="importer") as raw:  # serializer None
        raw.send(b"\x00\xffraw")
        raw.send("plain text")

    got = []
    for _ in range(5):
        message = consumer.fetch(auto_ack=True)
        assert message is not None and message.acknowledged
        got.append((message.content_type, message.content_encoding, message.payload))
    assert got[0] == ("application/x-python-serialize", "binary", {"import_feed": ("a", 1)})
    assert got[1] == ("application/json", "utf-8", {"import_feed": "http://cnn.com/rss/edition.rss"})
    assert got[2] == ("application/atom+xml", "utf-8", "<feed>...</feed>")
    assert got[3] == ("application/data", "binary", b"\x00\xffraw")
    assert got[4] == ("text/plain", "utf-8", "plain text")
    consumer.close()


def test_pickle_is_refused_unless_accepted(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    with Publisher(hl_conn, exchange=exchange, routing_key="k", serializer="pickle") as publisher:
        publisher.send({"x": 1})
    message = consumer.fetch()
    assert message is not None
    with pytest.raises(ContentDisallowed):
        message.payload
    message.reject()
    consumer.close()
    assert ready(hl_conn, queue) == 0  # rejected without requeue: gone


# ---------------------------------------------------------------------------------- publisher


def test_create_message_and_delivery_modes(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    exchange_name = exchange

    class TransientPublisher(Publisher):
        exchange = exchange_name
        delivery_mode = 1
        routing_key = "k"

    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    publisher = TransientPublisher(hl_conn)
    made = publisher.create_message({"a": 1}, priority=5)
    assert json.loads(bytes(made.body)) == {"a": 1}
    assert made.properties == {
        "delivery_mode": 1, "content_type": "application/json", "content_encoding": "utf-8", "priority": 5,
    }
    assert publisher.create_message(b"x", content_type="application/x-thing").properties["content_encoding"] == "binary"
    assert "priority" not in publisher.create_message("no priority").properties
    assert publisher.create_message("lowest", priority=0).properties["priority"] == 0
    publisher.send("default")
    publisher.send("persistent", delivery_mode="persistent")
    publisher.send("non-persistent", delivery_mode="non-persistent", priority=3)
    publisher.send("with headers", headers={"h": "v"}, correlation_id="c-1")
    publisher.close()

    modes = []
    for _ in range(4):
        message = consumer.fetch(no_ack=True)
        assert message is not None
        modes.append((message.payload, message.properties["delivery_mode"]))
        if message.payload == "non-persistent":
            assert message.properties["priority"] == 3
        if message.payload == "with headers":
            assert message.headers == {"h": "v"}
            assert message.properties["correlation_id"] == "c-1"
    assert modes == [("default", 1), ("persistent", 2), ("non-persistent", 1), ("with headers", 1)]
    consumer.close()


def test_carrot_default_declarations(hl_conn: Connection, names: Names) -> None:
    """carrot's defaults: durable, non-auto-delete direct exchange and durable queue --
    an equivalent redeclaration is accepted, a different one refused."""
    queue, exchange = names.queue(), names.exchange()
    Publisher(hl_conn, exchange=exchange, routing_key="k").close()
    Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k").close()
    channel = hl_conn.channel()
    channel.exchange_declare(exchange, type="direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, auto_delete=False)
    with pytest.raises(PreconditionFailed):
        channel.exchange_declare(exchange, type="topic", durable=True)
    channel = hl_conn.channel()
    with pytest.raises(PreconditionFailed):
        channel.queue_declare(queue, durable=False)


def test_mandatory_unroutable_raises(hl_conn: Connection, names: Names) -> None:
    exchange = names.exchange()
    with Publisher(hl_conn, exchange=exchange, routing_key="nowhere") as publisher:
        with pytest.raises(MessageReturned) as info:
            publisher.send({"lost": True}, mandatory=True)
        assert info.value.reply_code == 312
        publisher.send({"dropped": True})  # not mandatory: silently dropped, as in AMQP


def test_a_channel_error_caught_leaves_the_publisher_and_consumer_usable(hl_conn: Connection, names: Names) -> None:
    """carrot reopened a backend's channel on next use: a program that caught a channel
    error (a missing exchange, a queue deleted meanwhile) carried on with the same objects."""
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    publisher = Publisher(hl_conn, exchange=exchange, routing_key="k")
    first_publisher_channel = publisher.channel
    with pytest.raises(NotFound):
        publisher.send("lost", exchange=names.exchange("compat-missing"))
    publisher.send("after the error")
    assert publisher.channel is not first_publisher_channel and publisher.channel.is_open

    hl_conn.channel().queue_delete(queue)  # from elsewhere
    first_consumer_channel = consumer.channel
    with pytest.raises(NotFound):
        consumer.fetch()
    consumer.declare()
    assert consumer.channel is not first_consumer_channel and consumer.channel.is_open
    publisher.send("after the redeclare")
    received: list[Any] = []
    consumer.register_callback(collect_and_ack(received))
    consumer.wait(limit=1, timeout=10)
    assert received == ["after the redeclare"]
    publisher.close()
    consumer.close()
    assert not publisher.channel.is_open and not consumer.channel.is_open
    with pytest.raises(ChannelClosedError, match="is closed: nothing was published"):
        publisher.send("after close")  # closed for good: not reopened
    assert not publisher.channel.is_open


def test_headers_exchange(hl_conn: Connection, names: Names) -> None:
    """With ``exchange_type="headers"`` carrot's ``routing_key`` is the header table."""
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, exchange_type="headers",
                        routing_key={"x-match": "all", "format": "pdf"})
    with Publisher(hl_conn, exchange=exchange, exchange_type="headers", routing_key={"format": "pdf"}) as pdf:
        pdf.send("a pdf")
        pdf.send("a zip", routing_key={"format": "zip"})
    message = consumer.fetch(no_ack=True)
    assert message is not None and message.payload == "a pdf"
    assert message.headers == {"format": "pdf"}
    assert consumer.fetch() is None
    consumer.close()


def test_publisher_context_manager_closes_its_channel(hl_conn: Connection, names: Names) -> None:
    with Publisher(hl_conn, exchange=names.exchange(), routing_key="k") as publisher:
        channel = publisher.channel
        assert channel.is_open and channel is not hl_conn.default_channel
    assert not channel.is_open
    publisher.close()  # a second close does nothing


# ---------------------------------------------------------------------------------- consumer


def test_iterconsume_limit_processes_exactly_that_many(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    seen: list[int] = []

    def record(data: Any, message: Message) -> None:
        seen.append(data["n"])
        message.ack()

    consumer.register_callback(record)
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        for n in range(5):
            publisher.send({"n": n})
    it = consumer.iterconsume(limit=2, timeout=WAIT)
    assert list(it) == [True, True]
    assert seen == [0, 1]
    assert list(consumer.iterconsume(limit=2, timeout=WAIT)) == [True, True]
    assert seen == [0, 1, 2, 3]
    consumer.close()
    assert seen == [0, 1, 2, 3]  # the fifth was not processed ...
    assert ready(hl_conn, queue) == 1  # ... but given back


def test_iterconsume_ends_when_cancelled(hl_conn: Connection, names: Names) -> None:
    consumer = Consumer(hl_conn, queue=names.queue(), exchange=names.exchange(), routing_key="k")
    consumer.register_callback(lambda data, message: message.ack())
    it = consumer.iterconsume()
    consumer.cancel()
    assert list(it) == []
    consumer.close()


def test_wait_ends_when_the_broker_cancels(hl_conn: Connection, names: Names) -> None:
    queue = names.queue()
    consumer = Consumer(hl_conn, queue=queue, exchange=names.exchange(), routing_key="k")
    consumer.register_callback(lambda data, message: message.ack())
    consumer.consume()
    channel = hl_conn.channel()
    channel.queue_delete(queue)
    channel.close()
    consumer.wait(timeout=WAIT)  # returns: the queue is gone, nothing is consumed
    consumer.close()


def test_fetch_with_callbacks_and_overrides(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        for n in range(4):
            publisher.send({"n": n})
    with pytest.raises(NotImplementedError):
        consumer.fetch(enable_callbacks=True)  # {"n": 0} was fetched; no callback to take it
    seen: list[Any] = []
    consumer.register_callback(lambda data, message: seen.append(data))
    first = consumer.fetch(enable_callbacks=True, auto_ack=True)
    assert first is not None and first.acknowledged
    assert seen == [{"n": 1}]
    second = consumer.fetch(no_ack=True)  # the broker settles it on delivery
    assert second is not None and second.payload == {"n": 2} and second.acknowledged
    third = consumer.fetch()  # neither: the caller settles it
    assert third is not None and third.payload == {"n": 3} and not third.acknowledged
    third.requeue()
    assert seen == [{"n": 1}]  # no callbacks without enable_callbacks
    consumer.close()
    assert ready(hl_conn, queue) == 2  # {"n": 0} (unsettled, back on close) and {"n": 3}


def test_process_next_is_deprecated_fetch_with_callbacks(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k", auto_ack=True)
    seen: list[Any] = []
    consumer.register_callback(lambda data, message: seen.append((data, message.acknowledged)))
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        publisher.send({"n": 1})
    with pytest.warns(DeprecationWarning, match="fetch"):
        message = consumer.process_next()
    assert message is not None
    assert seen == [({"n": 1}, True)]  # auto_ack acks before the callbacks run
    with pytest.warns(DeprecationWarning):
        assert consumer.process_next() is None
    consumer.close()
    assert ready(hl_conn, queue) == 0


def test_iterqueue(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k", auto_ack=True)
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        for n in range(4):
            publisher.send(n)
    assert [m.payload for m in consumer.iterqueue(limit=3) if m is not None] == [0, 1, 2]
    assert ready(hl_conn, queue) == 1  # the limit is checked before fetching
    assert [m.payload for m in consumer.iterqueue() if m is not None] == [3]
    it = consumer.iterqueue(infinite=True)
    assert next(it) is None and next(it) is None  # empty: None instead of stopping
    consumer.close()


def test_discard_all(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        for n in range(3):
            publisher.send({"n": n})
    assert consumer.discard_all() == 3
    assert consumer.fetch() is None
    assert consumer.discard_all() == 0
    consumer.close()


def test_discard_all_with_filterfunc(hl_conn: Connection, names: Names) -> None:
    """carrot's ``waiting_feeds_only`` filter: only matching messages are discarded, the
    others stay in the queue."""
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        for n in range(6):
            publisher.send({"type": "feed" if n % 2 == 0 else "other", "n": n})
        publisher.send(b"not json")

    def waiting_feeds_only(message: Message) -> bool:
        try:
            message_data = message.decode()
        except Exception:
            return False
        return isinstance(message_data, dict) and message_data.get("type") == "feed"

    assert consumer.discard_all(filterfunc=waiting_feeds_only) == 3
    assert ready(hl_conn, queue) == 4  # requeued at once, not when the channel closes
    left = []
    while (message := consumer.fetch(auto_ack=True)) is not None:
        left.append(message.payload)
    assert sorted(left, key=repr) == sorted([{"type": "other", "n": 1}, {"type": "other", "n": 3},
                                             {"type": "other", "n": 5}, b"not json"], key=repr)
    consumer.close()

    auto = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k", auto_ack=True)
    with pytest.raises(ValueError):
        auto.discard_all(filterfunc=waiting_feeds_only)
    auto.close()


def test_qos_prefetch_and_flow(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    consumer = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k")
    held: list[Message] = []
    consumer.register_callback(lambda data, message: held.append(message))
    consumer.qos(prefetch_count=1)
    assert consumer.flow(True) is True
    with Publisher(hl_conn, exchange=exchange, routing_key="k") as publisher:
        publisher.send(1)
        publisher.send(2)
    assert list(consumer.iterconsume(limit=1, timeout=WAIT)) == [True]
    assert [m.payload for m in held] == [1]
    with pytest.raises(TimeoutError):  # the unacked one holds the only prefetch slot
        next(consumer.iterconsume(timeout=0.5))
    held[0].ack()
    assert list(consumer.iterconsume(limit=1, timeout=WAIT)) == [True]
    assert [m.payload for m in held] == [1, 2]
    held[1].ack()
    consumer.close()


def test_exclusive_implies_auto_delete(hl_conn: Connection, names: Names) -> None:
    """carrot: "exclusive implies auto_delete", and ``auto_delete`` means "delete queue,
    exchange and binding after all consumers have finished": the exchange is declared
    auto-delete too."""
    exchange = names.exchange()
    exclusive = Consumer(hl_conn, queue=names.queue(), exchange=exchange, routing_key="k", exclusive=True)
    assert exclusive.auto_delete is True
    channel = hl_conn.channel()
    channel.exchange_declare(exchange, type="direct", durable=True, auto_delete=True)  # equivalent
    with pytest.raises(PreconditionFailed):
        channel.exchange_declare(exchange, type="direct", durable=True, auto_delete=False)
    exclusive.close()


def test_warn_if_exists(hl_conn: Connection, names: Names) -> None:
    exchange, queue = names.exchange(), names.queue()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k", warn_if_exists=True)
    with pytest.warns(QueueAlreadyExistsWarning, match=queue):
        second = Consumer(hl_conn, queue=queue, exchange=exchange, routing_key="k", warn_if_exists=True)
    assert first.channel.is_open and second.channel.is_open  # the probe used a channel of its own
    first.close()
    second.close()


def test_consumer_options(hl_conn: Connection, names: Names) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        Consumer(hl_conn, queue=names.queue(), no_such_option=1)
    with pytest.raises(TypeError, match="no_such_option"):
        Publisher(hl_conn, exchange=names.exchange(), no_such_option=1)
    # carrot dict configurations carry a publisher's default_routing_key: ignored
    consumer = Consumer(hl_conn, queue=names.queue(), exchange=names.exchange(),
                        binding_key="b.k", default_routing_key="b.k")
    assert consumer.routing_key == "b.k"
    consumer.close()
    consumer.close()  # a second close does nothing
    assert not consumer.channel.is_open


# ---------------------------------------------------------------------------------- ConsumerSet


def test_consumer_set_from_dict(hl_conn: Connection, names: Names) -> None:
    """carrot's ConsumerSet example: two queues on a topic exchange, from a dict."""
    exchange = names.exchange("link_exchange")
    webshot, retrieve = names.queue("webshot"), names.queue("retrieve")
    consumer_set = ConsumerSet(hl_conn, from_dict={
        webshot: {"exchange": exchange, "exchange_type": "topic",
                  "binding_key": "links.webshot", "default_routing_key": "links.webshot"},
        retrieve: {"exchange": exchange, "exchange_type": "topic",
                   "binding_key": "links.*", "default_routing_key": "links.retrieve"},
    })
    assert [c.queue for c in consumer_set.consumers] == [webshot, retrieve]
    assert [c.routing_key for c in consumer_set.consumers] == ["links.webshot", "links.*"]
    got: list[tuple[str, Any]] = []

    def on_link(data: Any, message: Message) -> None:
        got.append((message.delivery_info["routing_key"], data))
        message.ack()

    consumer_set.register_callback(on_link)
    with Publisher(hl_conn, exchange=exchange, exchange_type="topic") as publisher:
        publisher.send({"url": "a"}, routing_key="links.webshot")  # both queues
        publisher.send({"url": "b"}, routing_key="links.retrieve")  # retrieve only
        publisher.send({"url": "c"}, routing_key="other.thing")  # neither
    assert list(consumer_set.iterconsume(limit=3, timeout=WAIT)) == [True] * 3
    assert sorted(got, key=repr) == sorted(
        [("links.webshot", {"url": "a"}), ("links.webshot", {"url": "a"}), ("links.retrieve", {"url": "b"})],
        key=repr,
    )
    with pytest.raises(TimeoutError):
        next(consumer_set.iterconsume(timeout=0.5))
    consumer_set.close()
    assert ready(hl_conn, webshot) == 0 and ready(hl_conn, retrieve) == 0


def test_consumer_set_with_consumers_callbacks_and_discard_all(hl_conn: Connection, names: Names) -> None:
    exchange = names.exchange()
    q1, q2 = names.queue(), names.queue()
    own: list[Any] = []
    shared: list[Any] = []
    with_callback = Consumer(hl_conn, queue=q1, exchange=exchange, routing_key="one")
    with_callback.register_callback(collect_and_ack(own))
    without = Consumer(hl_conn, queue=q2, exchange=exchange, routing_key="two")
    decode_errors: list[Any] = []

    def on_decode_error(message: Message, exc: BaseException) -> None:
        decode_errors.append(type(exc))
        message.reject()

    consumer_set = ConsumerSet(
        hl_conn, consumers=[with_callback], callbacks=[collect_and_ack(shared)],
        on_decode_error=on_decode_error,
    )
    consumer_set.add_consumer(without)
    with Publisher(hl_conn, exchange=exchange) as publisher:
        publisher.send("to one", routing_key="one")
        publisher.send("to two", routing_key="two")
        publisher.send({"p": 1}, routing_key="two", serializer="pickle")
    assert list(consumer_set.iterconsume(limit=3, timeout=WAIT)) == [True] * 3
    assert own == ["to one"]  # the consumer's own callbacks
    assert shared == ["to two"]  # the set's
    assert decode_errors == [ContentDisallowed]
    consumer_set.cancel()
    with pytest.raises(KeyError):
        consumer_set.cancel_by_queue(q1)  # not consumed from any more

    with Publisher(hl_conn, exchange=exchange) as publisher:
        publisher.send(1, routing_key="one")
        publisher.send(2, routing_key="two")
        publisher.send(3, routing_key="two")
    assert consumer_set.discard_all() == 3
    consumer_set.close()
    assert not with_callback.channel.is_open and not without.channel.is_open


def test_consumer_set_cancel_by_queue(hl_conn: Connection, names: Names) -> None:
    exchange = names.exchange()
    q1, q2 = names.queue(), names.queue()
    got: list[Any] = []
    consumer_set = ConsumerSet(
        hl_conn, from_dict={q1: {"exchange": exchange, "routing_key": "one"},
                            q2: {"exchange": exchange, "routing_key": "two"}},
        callbacks=[collect_and_ack(got)],
    )
    consumer_set.consume()
    consumer_set.cancel_by_queue(q1)
    with Publisher(hl_conn, exchange=exchange) as publisher:
        publisher.send("one", routing_key="one")
        publisher.send("two", routing_key="two")
    assert list(consumer_set.iterconsume(limit=1, timeout=WAIT)) == [True]  # not resumed
    assert got == ["two"]
    assert ready(hl_conn, q1) == 1
    with pytest.raises(KeyError):
        consumer_set.cancel_by_queue(q1)
    consumer_set.close()


# ---------------------------------------------------------------------------------- Messaging


def test_messaging_round_trip(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()
    with Messaging(hl_conn, exchange=exchange, queue=queue, routing_key="rk") as messaging:
        messaging.send({"hello": "world"})
        message = messaging.fetch()
        assert message is not None and message.payload == {"hello": "world"}
        assert message.properties["delivery_mode"] == 2
        message.ack()
        assert messaging.fetch() is None

        got: list[Any] = []
        messaging.register_callback(collect_and_ack(got))
        messaging.send("transient", delivery_mode=1)
        messaging.consumer.wait(limit=1, timeout=WAIT)
        assert got == ["transient"]
    assert not messaging.publisher.channel.is_open and not messaging.consumer.channel.is_open
    assert ready(hl_conn, queue) == 0


def test_messaging_subclass(hl_conn: Connection, names: Names) -> None:
    queue, exchange = names.queue(), names.exchange()

    queue_name, exchange_name = queue, exchange

    class FeedMessaging(Messaging):
        queue = queue_name
        exchange = exchange_name
        routing_key = "importer"

    messaging = FeedMessaging(hl_conn)
    with pytest.raises(NotImplementedError):
        messaging.receive({}, None)  # type: ignore[arg-type]
    messaging.send([1, 2, 3])
    message = messaging.fetch(auto_ack=True)
    assert message is not None and message.payload == [1, 2, 3]
    assert message.delivery_info["exchange"] == exchange
    messaging.close()
