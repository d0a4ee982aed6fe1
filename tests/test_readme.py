"""The README's examples run, as written, against the test broker.

test_typing.py type-checks them; here each ```python block is executed with only its
``guest:guest@localhost`` (and ``:5672``) replaced by the test broker's address, and what
it is meant to do is checked: the message comes back, the high-level publish is confirmed
and consumed.  The high-level example also runs on ``memory://``, which the README says
runs the same code without a broker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from broker import Broker
from leveret.client import Connection as ClientConnection

README = Path(__file__).resolve().parent.parent / "README.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def run(source: str, broker: Broker | None, memory: bool = False) -> None:
    if memory:
        source = re.sub(r'"amqp://guest:guest@localhost[^"]*"', '"memory://"', source)
    elif broker is not None:
        netloc = f"guest:guest@{broker.host}:{broker.port}"
        source = source.replace("guest:guest@localhost:5672", netloc)
        source = source.replace("guest:guest@localhost", netloc)
    assert "localhost" not in source
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README


def example(word: str) -> str:
    found = [code for code in examples() if word in code]
    assert len(found) == 1, f"one README example with {word!r}"
    return found[0]


def test_the_readme_examples_are_the_three_checked_here() -> None:
    assert len(examples()) == 3


def test_client_example_runs(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    run(example("from leveret.client import Connection, Message"), broker)
    assert capsys.readouterr().out == "b'hello'\n"


def test_asyncio_example_runs(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    run(example("AsyncConnection"), broker)
    assert capsys.readouterr().out == "b'hello'\n"


def test_highlevel_example_runs(broker: Broker) -> None:
    code = example("from leveret import Connection, Exchange, Queue")
    # It uses the fixed names "media" and "video" (a test broker's): start and end clean.
    remove_example_entities(broker)
    try:
        run(code, broker)
        with ClientConnection(broker.url) as conn:
            ok = conn.channel().queue_declare("video", passive=True)
            assert (ok.message_count, ok.consumer_count) == (0, 0)  # consumed, acked, cancelled
    finally:
        remove_example_entities(broker)


def remove_example_entities(broker: Broker) -> None:
    with ClientConnection(broker.url) as conn:
        ch = conn.channel()
        ch.queue_delete("video")
        ch.exchange_delete("media")


def test_highlevel_example_runs_on_memory() -> None:
    run(example("from leveret import Connection, Exchange, Queue"), None, memory=True)
