"""Shared fixtures.  See tests/broker.py for how the test broker is chosen.

``broker``      the broker the protocol tests talk to (``.url``, ``.host``, ``.port``):
                LEVERET_TEST_URL if set, else the shared private node.  Session-wide.
``amqp_url``    ``broker.url``.
``node``        the shared private node itself, for tests that manage it (``ctl``,
                users, vhosts).  Do not break it: no pause, stop_app, alarms.
``fresh_node``  a private node for this test alone, to pause, stop or alarm at will
                (costs a few seconds).

Tests using any of these are marked ``broker`` automatically, so ``pytest -m "not broker"``
runs only the offline tests.  When the broker cannot start, they fail; never skip.

``driver``      "blocking" or "asyncio": the client driver under test (tests/drivers.py);
                a test that asks for it, or for ``new_connection``, runs once per driver
                (``drivers.blocking_only`` narrows it to the blocking one).
``new_connection``  what such a test calls instead of ``Connection(url, **options)``:
                the blocking ``Connection``, or the asyncio driver behind a synchronous
                facade that behaves like it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker import Broker, PrivateNode, external_url, private_node  # noqa: E402
from drivers import DRIVERS, NewConnection, connection_class  # noqa: E402

BROKER_FIXTURES = frozenset({"broker", "amqp_url", "node", "fresh_node"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


def pytest_report_header(config: pytest.Config) -> str:
    url = external_url()
    return f"broker: {url} (LEVERET_TEST_URL)" if url else "broker: private RabbitMQ node, started on demand"


@pytest.fixture(scope="session")
def node() -> Iterator[PrivateNode]:
    # A start-up failure raises here; pytest caches it for the session, so every test
    # that needs the node errors with the same message instead of retrying for 90 s.
    started = private_node()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Broker:
    url = external_url()
    if url:
        return Broker(url)
    started: PrivateNode = request.getfixturevalue("node")
    return Broker(started.url, started)


@pytest.fixture(scope="session")
def amqp_url(broker: Broker) -> str:
    return broker.url


@pytest.fixture
def fresh_node() -> Iterator[PrivateNode]:
    started = private_node()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def new_connection(driver: str) -> NewConnection:
    return connection_class(driver)
