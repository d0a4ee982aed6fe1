"""The sans-IO core as a third-party library uses it: a minimal driver over a plain socket,
written only against what the docs promise (bytes in via ``receive_data``, events and bytes
out via ``data_to_send``, time in via ``tick(now)``), run against a real RabbitMQ."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

import pytest

from broker import Broker
from leveret.client import events as ev
from leveret.client.core import ConnState, SansIOConnection


class Driver:
    """Loop: write ``data_to_send()``, read, ``receive_data``, collect events."""

    def __init__(self, broker: Any, **options: Any) -> None:
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

    def wait(self, pred: Callable[[ev.Event], bool], timeout: float = 15.0) -> ev.Event:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if pred(event):
                    del self.events[: i + 1]
                    return event
            self.flush()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(self.events)
            self.read(left)

    def open(self) -> ev.ConnectionOpened:
        return self.wait(lambda e: isinstance(e, ev.ConnectionOpened))  # type: ignore[return-value]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def driver(broker: Broker) -> Any:
    made: list[Driver] = []

    def make(target: Any = broker, **options: Any) -> Driver:
        d = Driver(target, **options)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def test_close_crossing_connection_blocked_completes(driver: Any, fresh_node: Any) -> None:
    # RabbitMQ blocks a publisher during a memory alarm: a publish and our close written
    # together get connection.blocked back before (much later) close-ok.
    d = driver(Broker(fresh_node.url))
    d.open()
    cid = d.core.open_channel()
    d.wait(lambda e: isinstance(e, ev.ChannelOpened))
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
    closed = d.wait(lambda e: isinstance(e, ev.ConnectionClosed))
    assert closed == ev.ConnectionClosed(None, False, {})
