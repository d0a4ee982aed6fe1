"""leveret.highlevel.mixins: ConsumerMixin consumes, survives connection loss (the broker
closing every connection, the broker going away and coming back, memory:// connection
loss), stops on ``should_stop`` within about a second; ConsumerProducerMixin publishes on
its own connection.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
from hl_fixtures import *  # noqa: F401,F403
from hl_fixtures import closed_port, lose_memory_connection, unique

from broker import PrivateNode
from leveret.client import ConnectionForced, ConnectionLost
from leveret.highlevel import Connection, Consumer, ConsumerCancelled, Message, OperationalError, Producer, Queue
from leveret.highlevel.memory import MemoryBroker
from leveret.highlevel.mixins import ConsumerMixin, ConsumerProducerMixin, TokenBucket

FAST_RETRIES = {"interval_start": 0.1, "interval_step": 0.1, "interval_max": 0.5}


class Worker(ConsumerMixin):
    """Records everything the mixin tells it."""

    connect_retry_policy = FAST_RETRIES

    def __init__(self, connection: Connection, queue: str, delay: float = 0.0) -> None:
        self.connection = connection
        self.queue = Queue(queue)
        self.delay = delay
        self.lock = threading.Lock()
        self.received: list[Any] = []
        self.redelivered = 0
        self.errors: list[tuple[BaseException, float]] = []
        self.ready: list[Connection] = []
        self.revived = 0
        self.ended: list[Connection] = []
        self.iterations = 0
        self.ready_event = threading.Event()

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Consumer]:
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], prefetch_count=10)]

    def on_message(self, body: Any, message: Any) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.received.append(body)
            self.redelivered += bool(message.delivery_info.get("redelivered"))
        message.ack()

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        with self.lock:
            self.errors.append((exc, interval))

    def on_connection_revived(self) -> None:
        self.revived += 1

    def on_consume_ready(self, connection: Any, channel: Any, consumers: list[Consumer], **kwargs: Any) -> None:
        assert channel.is_open and all(c.consuming_from(self.queue) for c in consumers)
        with self.lock:
            self.ready.append(connection)
        self.ready_event.set()

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        self.ended.append(connection)

    def on_iteration(self) -> None:
        self.iterations += 1


class Runner:
    """``worker.run()`` in a thread."""

    def __init__(self, worker: ConsumerMixin, **kwargs: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.worker.run(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self, within: float = 2.0) -> float:
        """Set should_stop; returns how long run() took to return (fails past ``within``)."""
        start = time.monotonic()
        self.worker.should_stop = True
        self.thread.join(within + 5)
        elapsed = time.monotonic() - start
        assert not self.thread.is_alive(), "run() did not return"
        assert elapsed < within, f"run() took {elapsed:.2f} s to stop"
        if self.error is not None:
            raise self.error
        return elapsed


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def publish(conn: Connection, queue: str, bodies: list[Any]) -> None:
    producer = Producer(conn, routing_key=queue)
    for body in bodies:
        producer.publish(body)  # confirmed


def queue_state(conn: Connection, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    ch = conn.channel()
    try:
        ok = ch.queue_declare(queue, passive=True)
        return int(ok.message_count), int(ok.consumer_count)
    finally:
        ch.close()


@pytest.fixture
def queue_name(hl_conn: Connection) -> Iterator[str]:
    name = unique("mixin")
    ch = hl_conn.channel()
    Queue(name)(ch).declare()
    ch.close()
    yield name
    ch = hl_conn.channel()
    ch.queue_delete(name)
    ch.close()


# ------------------------------------------------------------------------------ basics


def test_run_consumes_and_stops(hl_conn: Connection, queue_name: str) -> None:
    publish(hl_conn, queue_name, [{"n": i} for i in range(5)])
    worker = Worker(hl_conn, queue_name)
    runner = Runner(worker)
    wait_until(lambda: len(worker.received) >= 5, what="the first messages")
    publish(hl_conn, queue_name, [{"n": i} for i in range(5, 10)])
    wait_until(lambda: len(worker.received) >= 10, what="the later messages")
    time.sleep(1.2)  # idle: run() keeps waiting, checking should_stop every second
    assert worker.iterations >= 2
    runner.stop(within=2.0)
    assert sorted(m["n"] for m in worker.received) == list(range(10))
    assert worker.errors == [] and len(worker.ready) == 1 and worker.revived == 1
    consumer_conn = worker.ready[0]
    assert consumer_conn is not hl_conn  # the mixin consumes on a clone
    assert worker.ended == [consumer_conn] and not consumer_conn.connected
    assert queue_state(hl_conn, queue_name) == (0, 0)  # all acked, consumer gone


def test_should_stop_before_run_returns_at_once(hl_conn: Connection, queue_name: str) -> None:
    worker = Worker(hl_conn, queue_name)
    worker.should_stop = True
    start = time.monotonic()
    worker.run()
    assert time.monotonic() - start < 0.5 and worker.ready == []


def test_consume_generator_limit_and_timeout(hl_conn: Connection, queue_name: str) -> None:
    publish(hl_conn, queue_name, ["a", "b", "c"])
    worker = Worker(hl_conn, queue_name)
    events = list(worker.consume(limit=1))
    assert len(events) == 1 and worker.received[:1] == ["a"]
    assert len(worker.ended) == 1  # consumers cancelled, connection closed
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        for _ in worker.consume(timeout=0.5):
            pass
    elapsed = time.monotonic() - start
    # Prefetched but unprocessed deliveries went back to the queue when the first
    # connection closed; the second round took them.
    assert sorted(worker.received) == ["a", "b", "c"]
    assert 0.4 <= elapsed < 3.0
    assert len(worker.ended) == 1  # the TimeoutError is not a normal end
    assert queue_state(hl_conn, queue_name) == (0, 0)


def test_properties_follow_the_connection(hl_conn: Connection, queue_name: str) -> None:
    worker = Worker(hl_conn, queue_name)
    assert worker.connection_errors == hl_conn.connection_errors
    assert worker.channel_errors == hl_conn.channel_errors
    assert isinstance(worker.restart_limit, TokenBucket)
    with worker.Consumer() as (conn, channel, consumers):
        assert conn is not hl_conn and conn.connected and channel is conn.default_channel
        assert len(consumers) == 1 and isinstance(consumers[0], Consumer)
        assert consumers[0].on_decode_error == worker.on_decode_error
        assert queue_state(hl_conn, queue_name) == (0, 1)
    assert not conn.connected


def test_token_bucket() -> None:
    bucket = TokenBucket(10, capacity=1)
    assert bucket.can_consume(1)
    assert not bucket.can_consume(1)
    assert 0 < bucket.expected_time(1) <= 0.1
    time.sleep(0.12)
    assert bucket.can_consume(1)


# ------------------------------------------------------------------------------ errors


def test_decode_errors_are_rejected(hl_conn: Connection, queue_name: str) -> None:
    ch = hl_conn.channel()
    ch.confirm_select()
    from leveret.client import Message as ClientMessage

    ch.publish_confirmed(ClientMessage(b"\x80\x04K\x01.", content_type="application/x-python-serialize"),
                         exchange="", routing_key=queue_name)
    ch.publish_confirmed(ClientMessage(b"{not json", content_type="application/json"),
                         exchange="", routing_key=queue_name)
    ch.close()
    publish(hl_conn, queue_name, ["fine"])
    worker = Worker(hl_conn, queue_name)
    runner = Runner(worker)
    wait_until(lambda: worker.received == ["fine"], what="the good message")
    wait_until(lambda: queue_state(hl_conn, queue_name)[0] == 0, what="the queue to drain")
    runner.stop()
    assert worker.errors == []  # a bad body is not a connection problem
    assert queue_state(hl_conn, queue_name) == (0, 0)  # the bad ones were rejected, not requeued


def test_custom_on_decode_error(hl_conn: Connection, queue_name: str) -> None:
    seen: list[tuple[Any, BaseException]] = []

    class Picky(Worker):
        def on_decode_error(self, message: Any, exc: BaseException) -> None:
            seen.append((message, exc))
            message.ack()

    publish(hl_conn, queue_name, [b"raw bytes are fine"])
    ch = hl_conn.channel()
    ch.confirm_select()
    from leveret.client import Message as ClientMessage

    ch.publish_confirmed(ClientMessage(b"x", content_type="application/x-python-serialize"),
                         exchange="", routing_key=queue_name)
    ch.close()
    worker = Picky(hl_conn, queue_name)
    for _ in worker.consume(limit=2, timeout=10):
        pass
    assert worker.received == [b"raw bytes are fine"]
    assert len(seen) == 1 and type(seen[0][1]).__name__ == "ContentDisallowed"


def test_callback_errors_propagate(hl_conn: Connection, queue_name: str) -> None:
    """An OSError of the program's own (not the connection's) is not a reason to reconnect
    and redeliver for ever: run() raises it."""

    class Failing(Worker):
        def on_message(self, body: Any, message: Any) -> None:
            open("/nonexistent/leveret/file")  # noqa: SIM115 - FileNotFoundError

    publish(hl_conn, queue_name, ["boom"])
    worker = Failing(hl_conn, queue_name)
    runner = Runner(worker)
    runner.thread.join(10)
    worker.should_stop = True  # in case it kept going
    runner.thread.join(5)
    assert isinstance(runner.error, FileNotFoundError)
    assert worker.errors == [] and len(worker.ready) == 1
    assert queue_state(hl_conn, queue_name) == (1, 0)  # back in the queue, unacked


def test_channel_closed_by_the_broker_restarts(hl_conn: Connection, queue_name: str) -> None:
    """A channel error (here: acking an unknown delivery tag) closes the consumers'
    channel; the mixin notices and consumes again on a new connection."""

    class Sloppy(Worker):
        sloppy = True

        def on_message(self, body: Any, message: Any) -> None:
            if self.sloppy:
                self.sloppy = False
                message.channel.basic_ack(999999)  # PRECONDITION_FAILED: unknown tag
                return
            super().on_message(body, message)

    publish(hl_conn, queue_name, ["x"])
    worker = Sloppy(hl_conn, queue_name)
    runner = Runner(worker)
    wait_until(lambda: worker.received == ["x"], what="the redelivered message")
    runner.stop()
    assert len(worker.ready) == 2
    assert len(worker.errors) == 1 and isinstance(worker.errors[0][0], hl_conn.channel_errors)
    assert queue_state(hl_conn, queue_name) == (0, 0)


def test_a_consumer_the_broker_cancels_restarts(hl_conn: Connection, queue_name: str) -> None:
    """Someone deletes the consumed queue: the broker cancels the consumer, which then gets
    nothing more.  The worker must not idle for ever: it starts a new round (as kombu's
    does), which declares the queue again, and consumes what is published to it."""
    publish(hl_conn, queue_name, ["before"])
    worker = Worker(hl_conn, queue_name)
    runner = Runner(worker)
    wait_until(lambda: worker.received == ["before"], what="the first message")
    ch = hl_conn.channel()
    ch.queue_delete(queue_name)
    ch.close()
    wait_until(lambda: len(worker.ready) == 2, what="the second round")
    publish(hl_conn, queue_name, ["after"])
    wait_until(lambda: worker.received == ["before", "after"], what="the message after the delete")
    runner.stop()
    assert len(worker.errors) == 1
    error = worker.errors[0][0]
    assert isinstance(error, ConsumerCancelled) and error.queues == [queue_name]
    assert queue_state(hl_conn, queue_name) == (0, 0)


def test_a_cancelled_consumer_is_not_logged_as_a_connection_error(caplog: pytest.LogCaptureFixture) -> None:
    from leveret.highlevel.mixins import ConsumerMixin

    class Plain(ConsumerMixin):  # the default on_connection_error
        pass

    worker = Plain()
    with caplog.at_level("WARNING", logger="leveret.highlevel"):
        worker.on_connection_error(ConsumerCancelled("the broker cancelled consumer ctag-1", ["q"]), 1.0)
        worker.on_connection_error(ConnectionRefusedError(111, "refused"), 2.0)
    first, second = (r.getMessage() for r in caplog.records)
    assert "cancelled a consumer" in first and "connection error" not in first
    assert "broker connection error" in second


def test_connect_max_retries_gives_up() -> None:
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{closed_port()}//")
    worker = Worker(conn, unique())
    worker.connect_max_retries = 2
    start = time.monotonic()
    runner = Runner(worker)
    runner.thread.join(10)
    worker.should_stop = True  # in case it kept going
    runner.thread.join(5)
    assert isinstance(runner.error, OperationalError)
    assert time.monotonic() - start < 5
    assert len(worker.errors) == 2  # one per failed attempt before the last
    assert all(isinstance(exc, ConnectionRefusedError) for exc, _ in worker.errors)
    assert worker.ready == []


def test_should_stop_while_connecting() -> None:
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{closed_port()}//")
    worker = Worker(conn, unique())
    worker.connect_retry_policy = {"interval_start": 5, "interval_step": 0, "interval_max": 5}
    runner = Runner(worker)
    wait_until(lambda: len(worker.errors) >= 1, what="the first failed connect")
    time.sleep(0.3)  # now in the 5 s sleep between attempts
    runner.stop(within=2.0)
    assert worker.ready == []


# ------------------------------------------------------------------------------ connection loss


def test_reconnects_after_broker_closes_connections(node: PrivateNode) -> None:
    conn = Connection(node.url)
    name = unique("mixin-cut")
    ch = conn.channel()
    Queue(name)(ch).declare()
    ch.close()
    before = [{"n": i} for i in range(30)]
    after = [{"n": i} for i in range(30, 60)]
    publish(conn, name, before)
    worker = Worker(conn, name, delay=0.02)
    runner = Runner(worker)
    try:
        wait_until(lambda: len(worker.received) >= 5, what="consuming to start")
        node.ctl("close_all_connections", "test")
        publisher = Connection(node.url)  # the old one was closed too
        publish(publisher, name, after)
        wait_until(lambda: {m["n"] for m in worker.received} == set(range(60)), what="every message")
        runner.stop(within=2.0)
    finally:
        worker.should_stop = True
        runner.thread.join(10)
    assert len(worker.errors) >= 1
    assert any(isinstance(exc, (ConnectionForced, ConnectionLost)) for exc, _ in worker.errors)
    assert len(worker.ready) >= 2 and worker.revived >= 2
    assert worker.ready[0] is not worker.ready[-1]
    assert not any(c.connected for c in worker.ready)
    assert queue_state(publisher, name) == (0, 0)  # every message acked
    ch = publisher.channel()
    ch.queue_delete(name)
    ch.close()
    publisher.release()
    conn.release()


def test_reconnects_after_memory_connection_loss() -> None:
    conn = Connection("memory://", transport_options={"broker": MemoryBroker()})
    name = unique("mixin-mem")
    ch = conn.channel()
    Queue(name)(ch).declare()
    ch.close()
    publish(conn, name, [{"n": i} for i in range(20)])
    worker = Worker(conn, name, delay=0.01)
    runner = Runner(worker)
    wait_until(lambda: len(worker.received) >= 5, what="consuming to start")
    first = worker.ready[0]
    lose_memory_connection(first)
    publish(conn, name, [{"n": i} for i in range(20, 40)])
    wait_until(lambda: {m["n"] for m in worker.received} == set(range(40)), what="every message")
    runner.stop(within=2.0)
    assert len(worker.errors) == 1 and isinstance(worker.errors[0][0], ConnectionLost)
    assert len(worker.ready) == 2 and worker.ready[1] is not first
    assert worker.redelivered >= 1  # the unacked prefetched ones came back
    assert queue_state(conn, name) == (0, 0)


def test_broker_down_and_back(fresh_node: PrivateNode) -> None:
    conn = Connection(fresh_node.url)
    name = unique("mixin-down")
    ch = conn.channel()
    Queue(name)(ch).declare()
    ch.close()
    publish(conn, name, ["first"])
    worker = Worker(conn, name)
    runner = Runner(worker)
    try:
        wait_until(lambda: worker.received == ["first"], what="the first message")
        fresh_node.stop_app()
        # The loss, then refused connects, each reported.
        wait_until(lambda: len(worker.errors) >= 3, what="failed reconnects")
        assert any(isinstance(exc, ConnectionRefusedError) for exc, _ in worker.errors)
        fresh_node.start_app()
        wait_until(lambda: len(worker.ready) >= 2, timeout=30, what="the reconnect")
        publisher = Connection(fresh_node.url)
        publish(publisher, name, ["second"])
        wait_until(lambda: worker.received == ["first", "second"], what="the second message")
        assert queue_state(publisher, name) == (0, 1)
        publisher.release()
        # Stopping while the broker is away (between connect attempts) is prompt too.
        fresh_node.stop_app()
        count = len(worker.errors)
        wait_until(lambda: len(worker.errors) >= count + 2, what="failed reconnects")
        runner.stop(within=2.0)
    finally:
        worker.should_stop = True
        runner.thread.join(10)
    assert worker.ended == []  # consuming never ended normally: the connection was lost


# ------------------------------------------------------------------------------ ConsumerProducerMixin


class Replier(ConsumerProducerMixin):
    connect_retry_policy = FAST_RETRIES

    def __init__(self, connection: Connection, queue: str) -> None:
        self.connection = connection
        self.queue = Queue(queue)
        self.producer_connections: list[Connection] = []
        self.consumer_connection: Connection | None = None

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Consumer]:
        return [Consumer(queues=[self.queue], callbacks=[self.on_request])]

    def on_consume_ready(self, connection: Any, channel: Any, consumers: list[Consumer], **kwargs: Any) -> None:
        self.consumer_connection = connection

    def on_request(self, body: Any, message: Any) -> None:
        producer = self.producer
        self.producer_connections.append(producer.connection)
        producer.publish({"reply": body}, routing_key=message.properties["reply_to"],
                         correlation_id=message.properties["correlation_id"])
        message.ack()


def test_consumer_producer_mixin_closes_its_producer_connection_when_run_raises(
    hl_conn: Connection, queue_name: str
) -> None:
    # kombu's (and leveret's) closed it from on_consume_end, which an exception skips: the
    # connection, its socket and I/O thread stayed until the object went.
    class Failing(Replier):
        def on_request(self, body: Any, message: Any) -> None:
            super().on_request(body, message)
            raise ValueError("the callback failed after publishing")

    replier = Failing(hl_conn, queue_name)
    Producer(hl_conn, routing_key=queue_name).publish("ping", reply_to=unique("nobody"), correlation_id="c1")
    with pytest.raises(ValueError, match="failed after publishing"):
        replier.run()
    [pconn] = replier.producer_connections
    assert not pconn.connected and replier._producer_connection is None


def test_consumer_producer_mixin(hl_conn: Connection, queue_name: str) -> None:
    reply_queue = Queue(unique("replies"), exclusive=True)
    got: list[tuple[Any, Any]] = []
    client = hl_conn.clone()
    def take(body: Any, message: Message) -> None:
        got.append((body, message.properties.get("correlation_id")))
        message.ack()

    replies = client.Consumer([reply_queue], callbacks=[take])
    replier = Replier(hl_conn, queue_name)
    runner = Runner(replier)
    try:
        with replies:
            Producer(client, routing_key=queue_name).publish("ping", reply_to=reply_queue.name, correlation_id="c1")
            Producer(client, routing_key=queue_name).publish("pong", reply_to=reply_queue.name, correlation_id="c2")
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                try:
                    client.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
        assert got == [({"reply": "ping"}, "c1"), ({"reply": "pong"}, "c2")]
        pconns = replier.producer_connections
        assert pconns[0] is pconns[1]  # one producer connection, reused
        assert pconns[0] is not replier.consumer_connection and pconns[0] is not hl_conn
        assert pconns[0].connected
        runner.stop()
        assert not pconns[0].connected  # closed when consuming ended
    finally:
        replier.should_stop = True
        runner.thread.join(10)
        client.release()
