"""Fixtures shared by the high-level tests (``tests/test_hl_*.py``).

``hl_url``   the URL a high-level test connects to: the private RabbitMQ node's
             (``amqp_url``, marked ``broker``), and ``memory://`` once the memory
             transport (``leveret/highlevel/memory.py``) exists.
``hl_conn``  a :class:`leveret.highlevel.Connection` to ``hl_url``, released afterwards.
``node_hl_url``  like ``hl_url`` but always the private node for ``amqp``, even with
             LEVERET_TEST_URL: for tests that close connections with ``node.ctl``.
``kind``     ``"amqp"`` or ``"memory"``, for the rare check only one transport can make.

Import them into a test module with ``from hl_fixtures import *``.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

import leveret.highlevel
from leveret.client import Message as ClientMessage
from leveret.highlevel import Connection, Message, MessageReturned

__all__ = [
    "TRANSPORTS", "hl_url", "node_hl_url", "hl_conn", "kind", "unique", "closed_port", "CountingChannel",
    "ack_into", "return_bodies_into", "returns_of", "lose_memory_connection", "got",
]

HAVE_MEMORY = (Path(leveret.highlevel.__file__).parent / "memory.py").exists()

TRANSPORTS = [pytest.param("amqp", marks=pytest.mark.broker)] + (["memory"] if HAVE_MEMORY else [])


def ack_into(got: list[Any]) -> Callable[[Any, Message], None]:
    """A consumer callback ``(body, message)`` that appends ``body`` to ``got``, then acks."""

    def callback(body: Any, message: Message) -> None:
        got.append(body)
        message.ack()

    return callback


def return_bodies_into(seen: list[bytes]) -> Callable[[MessageReturned, str, str, ClientMessage | None], None]:
    """A Producer ``on_return`` that appends the returned message's body to ``seen``."""

    def on_return(exc: MessageReturned, exchange: str, routing_key: str, message: ClientMessage | None) -> None:
        assert message is not None, exc
        seen.append(message.body)

    return on_return


T = TypeVar("T")


def got(value: T | None) -> T:
    """``value``, asserted present (``basic_get`` of a queue known to hold messages)."""
    assert value is not None
    return value


def lose_memory_connection(conn: Connection) -> None:
    """memory://: the transport connection of ``conn`` simulates a connection loss."""
    from leveret.highlevel.memory import MemoryConnection

    transport = conn.connection
    assert isinstance(transport, MemoryConnection), transport
    transport.simulate_connection_loss()


def returns_of(exc: BaseException) -> list[MessageReturned]:
    """``exc.returned``: the returns a failed flush reports (on MessageReturned,
    PublishNacked or the channel's error).  The attribute is set at raise time and not
    declared on the exception classes, so it is read (and checked) here."""
    returned = getattr(exc, "returned")
    assert isinstance(returned, list) and all(isinstance(r, MessageReturned) for r in returned), returned
    return returned


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hl_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "amqp":
        return str(request.getfixturevalue("amqp_url"))
    return "memory://"


@pytest.fixture
def node_hl_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "amqp":
        return str(request.getfixturevalue("node").url)
    return "memory://"


@pytest.fixture
def hl_conn(hl_url: str, kind: str) -> Iterator[Connection]:
    options: dict[str, Any] = {}
    if kind == "memory":
        # A broker of its own for each test, when the memory transport offers one.
        from leveret.highlevel import memory

        broker_cls = getattr(memory, "MemoryBroker", None)
        if broker_cls is not None:
            options["broker"] = broker_cls()
    conn = Connection(hl_url, transport_options=options)
    try:
        yield conn
    finally:
        conn.release()


def unique(prefix: str = "hl") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingChannel:
    """A transport channel that counts the declarations sent through it."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.calls: list[tuple[str, str]] = []

    def exchange_declare(self, exchange: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("exchange", exchange))
        return self._channel.exchange_declare(exchange, *args, **kwargs)

    def queue_declare(self, queue: str = "", *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("queue", queue))
        return self._channel.queue_declare(queue, *args, **kwargs)

    def queue_bind(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("bind", queue))
        return self._channel.queue_bind(queue, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)
