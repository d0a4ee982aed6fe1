"""The sans-IO core as a third-party library uses it: a minimal driver over a plain socket,
written only against what the docs promise (bytes in via ``receive_data``, events and bytes
out via ``data_to_send``, time in via ``tick(now)``), run against a real RabbitMQ."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterator, TypeVar

import pytest

from broker import Broker, PrivateNode
from leveret.client import events as ev
from leveret.client.core import ConnState, SansIOConnection
from leveret.wire.errors import LocalProtocolError

E = TypeVar("E", bound=ev.Event)


class Driver:
    """Loop: write ``data_to_send()``, read, ``receive_data``, collect events."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=10)
        self.core = SansIOConnection(**options)
        self.events: list[ev.Event] = []
        self.flush()

    def flush(self) -> None:
        data = self.core.data_to_send(time.monotonic())
        if data:
            self.sock.sendall(data)

    def read(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        self.events.extend(self.core.receive_data(data, time.monotonic()))
        self.flush()

    def wait(self, kind: type[E], timeout: float = 15.0) -> E:
        """The first event that is a ``kind``; those before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, kind):
                    del self.events[: i + 1]
                    return event
            self.flush()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(self.events)
            self.read(left)

    def open(self) -> ev.ConnectionOpened:
        return self.wait(ev.ConnectionOpened)

    def close(self) -> None:
        self.sock.close()


#: What the ``driver`` fixture gives: ``driver(target=broker, **options)`` -> a Driver.
MakeDriver = Callable[..., Driver]


@pytest.fixture
def driver(broker: Broker) -> Iterator[MakeDriver]:
    made: list[Driver] = []

    def make(target: Broker = broker, **options: Any) -> Driver:
        d = Driver(target, **options)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def test_close_crossing_connection_blocked_completes(driver: MakeDriver, fresh_node: PrivateNode) -> None:
    # RabbitMQ blocks a publisher during a memory alarm: a publish and our close written
    # together get connection.blocked back before (much later) close-ok.
    d = driver(Broker(fresh_node.url))
    d.open()
    cid = d.core.open_channel()
    d.wait(ev.ChannelOpened)
    try:
        fresh_node.set_vm_memory_high_watermark(0)
        d.core.publish(cid, d.core.method("basic.publish", routing_key="nowhere"), None, b"x")
        d.core.close()
        d.flush()
        d.read()  # connection.blocked, while we wait for close-ok
        assert d.core.error is None
        assert d.core.state is ConnState.CLOSING
    finally:
        fresh_node.set_vm_memory_high_watermark(0.4)
    closed = d.wait(ev.ConnectionClosed)
    assert closed == ev.ConnectionClosed(None, False, {})


@pytest.mark.parametrize("protocol", ["0-9-1", "0-8"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_handshake_and_tune_with_no_preferences(driver: MakeDriver, protocol: str, mechanism: str) -> None:
    # 0 is "no preference": the broker's values win (RabbitMQ: 2047 channels, 128 KiB
    # frames, 60 s heartbeat).
    d = driver(protocol=protocol, auth_mechanism=mechanism, channel_max=0, frame_max=0, heartbeat=0)
    opened = d.open()
    assert (opened.channel_max, opened.frame_max, opened.heartbeat) == (2047, 131072, 60)
    assert opened.version == protocol
    d.core.close()
    assert d.wait(ev.ConnectionClosed) == ev.ConnectionClosed(None, False, {})


def test_refused_credentials_close_with_authentication_error(driver: MakeDriver) -> None:
    from leveret.client.errors import AuthenticationError

    d = driver(password="wrong")
    closed = d.wait(ev.ConnectionClosed)
    assert isinstance(closed.error, AuthenticationError) and closed.by_peer


def test_tick_alone_keeps_a_heartbeat_connection_alive(driver: MakeDriver) -> None:
    # Time only through tick(now): receive_data and data_to_send get no clock.
    d = driver(heartbeat=1, channel_max=2, frame_max=4096)
    d.open()
    d.sock.settimeout(0.05)
    beats = 0
    started = time.monotonic()
    while time.monotonic() - started < 3.5:
        assert d.core.tick(time.monotonic()) is not None
        data = d.core.data_to_send()
        if data:
            d.sock.sendall(data)
        try:
            got = d.sock.recv(4096)
        except TimeoutError:
            continue
        assert got, "the broker dropped us"
        beats += got.count(b"\x08\x00\x00\x00\x00\x00\x00\xce")
        assert d.core.receive_data(got) == []
    assert beats >= 4 and d.core.state is ConnState.OPEN


def test_confirms_nacks_channel_reuse_and_frame_max(driver: MakeDriver) -> None:
    d = driver(frame_max=4096, channel_max=2)
    d.open()
    cid = d.core.open_channel()
    d.wait(ev.ChannelOpened)
    d.core.send_method(cid, d.core.method(
        "queue.declare", queue="", exclusive=True,
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    ))
    queue = d.wait(ev.MethodReceived).method.queue
    d.core.send_method(cid, d.core.method("confirm.select"))
    d.wait(ev.MethodReceived)
    body = bytes(range(256)) * 40  # 10240 bytes: three body frames
    tags = [d.core.publish(cid, d.core.method("basic.publish", routing_key=queue), None, body)
            for _ in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    settled: dict[int, bool] = {}
    while len(settled) < 5:
        e = d.wait(ev.PublishConfirmed)
        for tag in e.delivery_tags:
            assert tag not in settled
            settled[tag] = e.ack
    assert settled == {1: True, 2: False, 3: False, 4: False, 5: False}
    d.core.send_method(cid, d.core.method("basic.get", queue=queue, no_ack=True))
    got = d.wait(ev.MessageReceived)
    assert got.body == body
    # a second channel, then none left; the broker closes one and its id comes back
    other = d.core.open_channel()
    d.wait(ev.ChannelOpened)
    with pytest.raises(LocalProtocolError):
        d.core.open_channel()
    d.core.send_method(other, d.core.method("queue.declare", queue="no-such-queue", passive=True))
    closed = d.wait(ev.ChannelClosed)
    assert closed.by_peer and closed.error is not None and closed.error.reply_code == 404
    assert d.core.open_channel() == other
    d.wait(ev.ChannelOpened)
