"""Frames captured from a real RabbitMQ 3.10.8 decode to what the broker meant.

The files in tests/data were captured from the private node (see tests/data/README.md);
decoding them checks the codec against a real peer's bytes rather than against itself.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from leveret.wire import NEED_DATA, FrameReader, MethodFrame, amqp0_8, amqp0_9_1

DATA = Path(__file__).parent / "data"


def _start(spec: ModuleType, name: str) -> object:
    raw = (DATA / f"rabbitmq-3.10-connection-start-{name}.bin").read_bytes()
    reader = FrameReader(spec)
    reader.feed(raw)
    frame = reader.next_frame()
    assert isinstance(frame, MethodFrame)
    assert reader.next_frame() is NEED_DATA and reader.buffered == 0
    assert frame.channel == 0
    return frame.method


@pytest.mark.parametrize(
    ("spec", "name", "major", "minor"),
    [(amqp0_9_1, "0-9-1", 0, 9), (amqp0_8, "0-8", 8, 0)],
)
def test_rabbitmq_connection_start(spec: ModuleType, name: str, major: int, minor: int) -> None:
    start = _start(spec, name)
    assert isinstance(start, spec.Connection.Start)
    assert (start.version_major, start.version_minor) == (major, minor)
    assert start.mechanisms.split() == [b"PLAIN", b"AMQPLAIN"]
    assert start.locales == b"en_US"
    props = start.server_properties
    assert props["product"] == "RabbitMQ"
    assert props["version"] == "3.10.8"
    assert props["cluster_name"] == "leveret"
    assert props["platform"].startswith("Erlang/OTP")
    assert isinstance(props["copyright"], str) and isinstance(props["information"], str)


def test_rabbitmq_0_9_1_capabilities() -> None:
    caps = _start(amqp0_9_1, "0-9-1").server_properties["capabilities"]  # type: ignore[attr-defined]
    assert caps == {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "consumer_priorities": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
        "direct_reply_to": True,
    }


def test_rabbitmq_0_8_has_no_capabilities() -> None:
    assert _start(amqp0_8, "0-8").server_properties["capabilities"] == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("spec", "name"), [(amqp0_9_1, "0-9-1"), (amqp0_8, "0-8")])
def test_reencoding_gives_the_same_payload(spec: ModuleType, name: str) -> None:
    raw = (DATA / f"rabbitmq-3.10-connection-start-{name}.bin").read_bytes()
    start = _start(spec, name)
    # The broker's table encodes booleans, strings and nested tables with the same type
    # letters leveret picks, so the payload comes back byte for byte.
    assert start.encode() == raw[7:-1]  # type: ignore[attr-defined]
