"""Small helpers the client-layer tests share (URLs with options, unique names, a hang
guard)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any, Callable, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

__all__ = ["with_options", "with_vhost", "unique", "within", "Interrupt", "interrupt_after_deliveries"]

T = TypeVar("T")


def with_options(url: str, **options: Any) -> str:
    """``url`` with query options added (keeping any it already has)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def with_vhost(url: str, path: str) -> str:
    """``url`` with its path replaced by ``path`` (already percent-encoded, without the /)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def unique(prefix: str) -> str:
    """A queue or exchange name no other test uses."""
    return f"leveret-test-{prefix}-{uuid.uuid4().hex[:10]}"


def within(seconds: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` in a thread; fail the test if it has not returned after ``seconds``."""
    value: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            value.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the test thread below
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} hung: no return within {seconds} s")
    if error:
        raise error[0]
    return value[0]


def in_threads(target: Callable[[], Any], count: int, seconds: float) -> None:
    """Run ``target`` in ``count`` threads at once and wait for them all; fail the test if
    one has not returned after ``seconds`` (each thread reports its own errors)."""
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        pytest.fail(f"{getattr(target, '__name__', target)}: a thread hung for {seconds} s")


def publish_until_blocked(ch: Any, queue: str, body: bytes, each_within: float, blocked_timeout: float = 1.0) -> int:
    """Publish ``body`` to ``queue`` until a publish raises BlockedTimeout (at most 100
    publishes); every publish must return or raise within ``blocked_timeout`` + 5 s (not
    after a write timeout), and ``each_within`` s at worst.  Returns how many returned."""
    from leveret.client import BlockedTimeout

    published = 0
    for _ in range(100):
        started = time.monotonic()
        try:
            within(each_within, ch.basic_publish, body, routing_key=queue)
        except BlockedTimeout:
            return published
        finally:
            took = time.monotonic() - started
            limit = blocked_timeout + 5
            assert took < limit, f"publish {published} took {took:.1f} s (blocked_timeout={blocked_timeout:g})"
        published += 1
    pytest.fail("the broker never blocked the publisher")


def in_forked_child(fn: Callable[[], str], timeout: float) -> str:
    """Run ``fn`` in a child made by ``os.fork()`` and return what it returned; the child's
    exception (its repr) is returned instead, and a child still running after ``timeout``
    seconds is killed and fails the test.  The child leaves with ``os._exit``: nothing of
    pytest's (or the parent's atexit handlers) runs there."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            try:
                report = fn()
                status = 0
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                report = f"child raised {exc!r}"
                status = 2
            os.write(write_fd, report.encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child ({getattr(fn, '__name__', fn)}) hung for {timeout} s")
            time.sleep(0.02)
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    assert os.WIFEXITED(wait_status), wait_status
    return b"".join(chunks).decode()


class Interrupt(BaseException):
    """A signal handler's exception, as KeyboardInterrupt is, under another name: a
    BaseException raised in the main thread between any two calls, which pytest (unlike
    a KeyboardInterrupt) leaves to the test."""


def interrupt_after_deliveries(core: Any, interrupt: Callable[[], Any]) -> list[int]:
    """Make ``core.receive_data`` call ``interrupt()`` once, right after it has made the
    events of a read that holds deliveries, in the main thread (the blocking driver's I/O
    thread reads too, and signals never reach it): where a signal handler's exception
    would cut the handling of that read short.  Returns a list that gets the number of
    events of that read when it fires."""
    receive_data = core.receive_data
    fired: list[int] = []

    def cut_short(data: bytes, now: float | None = None) -> Any:
        events = receive_data(data, now)
        if (
            not fired
            and threading.current_thread() is threading.main_thread()
            and any(type(e).__name__ == "MessageReceived" for e in events)
        ):
            fired.append(len(events))
            interrupt()
        return events

    core.receive_data = cut_short
    return fired


def raised_again(raised: BaseException, kept: BaseException) -> bool:
    """Whether ``raised`` is ``kept``, an error a connection or reader keeps and raises on
    every later call: ``kept`` itself the first time, then a copy of it caused by it (see
    leveret.wire.errors.again), so that retries do not grow its traceback."""
    return raised is kept or (
        type(raised) is type(kept) and raised.__cause__ is kept and str(raised) == str(kept)
    )


def publish_raw_properties(url: str, routing_key: str, raw_properties: bytes, body: bytes) -> None:
    """Publish ``body`` to the default exchange with a content header whose property flags
    and values are ``raw_properties``, bytes as they go on the wire: what another client
    could send that leveret's own encoder would refuse (a table nested deeper than it
    writes, say).  A few lines of driver over the sans-IO core, with the properties
    object that stands for undecodable ones (its ``encode()`` gives its bytes back)."""
    import socket

    from leveret.client import events as ev
    from leveret.client import parse_url
    from leveret.client.core import SansIOConnection
    from leveret.wire import UndecodableProperties
    from leveret.wire.errors import DecodeError

    params = parse_url(url)
    core = SansIOConnection(
        username=params.username, password=params.password, virtual_host=params.virtual_host,
        protocol=params.protocol,
    )
    with socket.create_connection((params.host, params.port), timeout=10) as sock:

        def until(kind: type) -> None:
            deadline = time.monotonic() + 10
            while True:
                data = core.data_to_send()
                if data:
                    sock.sendall(data)
                assert time.monotonic() < deadline, f"no {kind.__name__} from the broker"
                if any(isinstance(e, kind) for e in core.receive_data(sock.recv(65536))):
                    return

        until(ev.ConnectionOpened)
        channel = core.open_channel()
        until(ev.ChannelOpened)
        properties = UndecodableProperties(60, raw_properties, DecodeError("raw"))
        core.publish(channel, core.method("basic.publish", routing_key=routing_key), properties, body)
        core.close()
        until(ev.ConnectionClosed)
