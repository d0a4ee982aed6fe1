"""The RabbitMQ that leveret's tests talk to.

By default each test run starts one private node (``scripts/rabbitmq.py``) the first time a
test asks for it and stops it when the run ends.  Set ``LEVERET_TEST_URL`` (for example
``amqp://guest:guest@127.0.0.1:5672/``) to run the protocol tests against a broker you
started yourself instead; tests that manage the broker (``ctl``, users, pausing) still get
a private node of their own.

A broker that cannot be reached or started makes the tests that need it fail with the
reason; they are never skipped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

_SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(_SCRIPTS) not in sys.path:
    sys.path.insert(0, str(_SCRIPTS))

from rabbitmq import PrivateNode, RabbitMQError  # noqa: E402

__all__ = ["ENV_URL", "Broker", "PrivateNode", "RabbitMQError", "external_url", "private_node"]

ENV_URL = "LEVERET_TEST_URL"


@dataclass(frozen=True)
class Broker:
    """Where the tests connect: an AMQP URL and its host and port."""

    url: str
    node: PrivateNode | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 5672

    @property
    def external(self) -> bool:
        return self.node is None


def external_url() -> str | None:
    """``LEVERET_TEST_URL`` if set and not empty."""
    return os.environ.get(ENV_URL) or None


def private_node(plugins: Iterable[str] = (), config: str = "") -> PrivateNode:
    """Start a private node; a failure raises ``RabbitMQError`` with the node's log tail.

    ``plugins`` are enabled before start; ``config`` is appended to its rabbitmq.conf.
    """
    return PrivateNode(plugins=plugins, config=config).start()
