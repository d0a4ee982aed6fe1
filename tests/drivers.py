"""The client drivers the broker tests run against: the blocking one, and the asyncio one
behind a small synchronous facade, so that the same test code proves both.

``connection_class(driver)`` is ``leveret.client.Connection`` for ``"blocking"`` and
:class:`AsyncDriven` for ``"asyncio"``; the ``driver`` and ``new_connection`` fixtures
(tests/conftest.py) hand it to the tests.

How the facade works
--------------------
* All facades share one event loop, run by a daemon thread (``_shared_loop``): a loop per
  connection would leave a thread and three file descriptors behind for every connection
  a test opens and never closes.
* ``AsyncDriven(url, **options)`` creates an :class:`~leveret.client.AsyncConnection` and
  forwards to it: each method call runs on the loop thread
  (``run_coroutine_threadsafe(...).result()``), awaiting the result when it is a coroutine --
  so the plain calls too (``basic_ack``...) touch the connection from the loop thread only.
  Properties and attributes are read straight through.  What comes back is wrapped: the
  connection is the facade, an ``AsyncChannel`` comes back as its :class:`DrivenChannel`,
  and a received ``Message`` gets the facade channel as ``.channel``, so ``msg.ack()`` goes
  through the loop too.
* Callbacks keep the blocking driver's rule -- they run inside ``drain_events``, in the
  thread that calls it.  Every callback a test hands over (``basic_consume``'s ``callback``
  and ``on_cancel``, ``channel.on_return``, ``on_blocked``/``on_unblocked``) is replaced by
  one that only queues ``(callback, args)``; the asyncio driver's delivery task calls it.
  ``drain_events(timeout)`` waits on the loop (``AsyncConnection.drain_events``: it raises
  ``TimeoutError``, the connection's error and a callback's error such as
  ``MessageTooLargeError``) and then runs what is queued in the caller's thread.  As in the
  blocking driver, ``wait_for_confirms`` and ``publish_confirmed`` also run their
  channel's return callbacks (first letting the delivery task hand over the returns that
  came with the confirms).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections import deque
from typing import Any, Callable

import pytest

from leveret.client import Connection, Message
from leveret.client.aio import AsyncChannel, AsyncConnection

__all__ = ["DRIVERS", "AsyncDriven", "DrivenChannel", "NewConnection", "blocking_only", "connection_class"]

DRIVERS = ["blocking", "asyncio"]

#: The ``new_connection`` fixture: called as ``Connection(url, **options)`` is.
NewConnection = Callable[..., Any]

#: For tests about the blocking driver's own machinery (its I/O thread, threads sharing a
#: connection, ``corked()``...): overrides the ``driver`` fixture's parameters.  Say why
#: beside each use.
blocking_only = pytest.mark.parametrize("driver", ["blocking"])


def connection_class(driver: str) -> NewConnection:
    """What a test calls instead of ``Connection(url, **options)`` for ``driver``."""
    return {"blocking": Connection, "asyncio": AsyncDriven}[driver]


_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_loop_lock = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_thread
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            _loop_thread = threading.Thread(target=_loop.run_forever, name="asyncio-driven", daemon=True)
            _loop_thread.start()
        return _loop


class AsyncDriven:
    """``leveret.client.Connection``'s behaviour, on an ``AsyncConnection`` (see above)."""

    _loop: asyncio.AbstractEventLoop
    _lock: threading.Lock
    # Callbacks the delivery task handed over, oldest first: (kind, channel, fn, args).
    _ready: deque[tuple[str, DrivenChannel | None, Callable[..., Any], tuple[Any, ...]]]
    _channels: dict[AsyncChannel, DrivenChannel]
    _target: AsyncConnection

    def __init__(self, url: str | None = None, *, on_blocked: Callable[[str], Any] | None = None,
                 on_unblocked: Callable[[], Any] | None = None, **options: Any) -> None:
        d = self.__dict__  # __setattr__ forwards to the AsyncConnection
        d["_loop"] = _shared_loop()
        d["_lock"] = threading.Lock()
        d["_ready"] = deque()
        d["_channels"] = {}
        d["_target"] = AsyncConnection(
            url, on_blocked=self._deferred("blocked", None, on_blocked),
            on_unblocked=self._deferred("unblocked", None, on_unblocked), **options,
        )

    # ------------------------------------------------------------------ forwarding

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the loop thread (awaited if it is a coroutine)."""
        assert threading.current_thread() is not _loop_thread, "a facade call on the loop thread"

        async def call() -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return self._wrap(asyncio.run_coroutine_threadsafe(call(), self._loop).result())

    def _wrap(self, value: Any) -> Any:
        if value is self._target:
            return self
        if isinstance(value, AsyncChannel):
            return self._channel(value)
        if isinstance(value, Message) and isinstance(value.channel, AsyncChannel):
            value.channel = self._channel(value.channel)
        return value

    def _channel(self, target: AsyncChannel) -> DrivenChannel:
        with self._lock:
            ch = self._channels.get(target)
            if ch is None:
                ch = self._channels[target] = DrivenChannel(self, target)
            return ch

    def _forward(self, target: Any, name: str) -> Any:
        value = getattr(target, name)
        if callable(getattr(type(target), name, None)):  # a method or an operation
            return functools.partial(self._call, value)
        return value

    def __getattr__(self, name: str) -> Any:
        return self._forward(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("on_blocked", "on_unblocked"):
            value = self._deferred(name[3:], None, value)
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return repr(self._target)

    def __enter__(self) -> AsyncDriven:
        return self._call(self._target.__aenter__)  # type: ignore[no-any-return]

    def __exit__(self, *exc_info: Any) -> None:
        self._call(self._target.__aexit__, *exc_info)

    # ------------------------------------------------------------------ callbacks

    def _deferred(self, kind: str, channel: DrivenChannel | None, fn: Callable[..., Any] | None) -> Any:
        """``fn`` as the asyncio driver gets it: a call that queues it for ``drain_events``."""
        if fn is None:
            return None

        def queue(*args: Any) -> None:  # runs in the delivery task, on the loop thread
            args = tuple(self._wrap(arg) for arg in args)
            with self._lock:
                self._ready.append((kind, channel, fn, args))

        return queue

    def _run_ready(self, returns_of: DrivenChannel | None = None) -> bool:
        """Run the queued callbacks in order (only ``returns_of``'s return callbacks when
        given) in this thread; True if any ran.  One that raises leaves the rest queued."""
        ran = False
        while True:
            with self._lock:
                entry = next(
                    (e for e in self._ready if returns_of is None or (e[0] == "return" and e[1] is returns_of)),
                    None,
                )
                if entry is None:
                    return ran
                self._ready.remove(entry)
            entry[2](*entry[3])
            ran = True

    async def _events(self, timeout: float | None) -> None:
        # A callback's error (MessageTooLargeError...) came before what was queued after it:
        # raise it first, as the blocking driver would.  (The driver keeps it in a private
        # attribute until its drain_events raises it.)
        if self._ready and not self._target._callback_errors:
            return
        await self._target.drain_events(timeout)

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait until callbacks are due, then run them here (see the module docstring)."""
        self._call(self._events, timeout)
        self._run_ready()


class DrivenChannel:
    """``leveret.client.Channel``'s behaviour, on an ``AsyncChannel`` of an :class:`AsyncDriven`."""

    _driven: AsyncDriven
    _target: AsyncChannel

    def __init__(self, driven: AsyncDriven, target: AsyncChannel) -> None:
        self.__dict__.update(_driven=driven, _target=target)

    def __getattr__(self, name: str) -> Any:
        return self._driven._forward(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "on_return":
            value = self._driven._deferred("return", self, value)
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return repr(self._target)

    def __enter__(self) -> DrivenChannel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._driven._call(self._target.__aexit__, *exc_info)

    @property
    def connection(self) -> AsyncDriven:
        return self._driven

    def basic_consume(self, *args: Any, callback: Callable[[Message], Any] | None = None,
                      on_cancel: Callable[[str], Any] | None = None, **kwargs: Any) -> str:
        deferred = self._driven._deferred
        return self._driven._call(  # type: ignore[no-any-return]
            self._target.basic_consume, *args, callback=deferred("deliver", self, callback),
            on_cancel=deferred("cancel", self, on_cancel), **kwargs,
        )

    async def _returns_handed_over(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await op(...)``, then wait until the delivery task has handed over the
        returns that came with its confirms (the asyncio driver runs ``on_return`` there)."""
        target = self._target
        try:
            return await op(*args, **kwargs)
        finally:
            if target._returns and target.connection.is_open:
                await target.connection._wait_for(
                    lambda: not target._returns, time.monotonic() + 30, "the returns", from_broker=False
                )

    def wait_for_confirms(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return self._driven._call(  # type: ignore[no-any-return]
                self._returns_handed_over, self._target.wait_for_confirms, *args, **kwargs
            )
        finally:
            self._driven._run_ready(returns_of=self)

    def publish_confirmed(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return self._driven._call(  # type: ignore[no-any-return]
                self._returns_handed_over, self._target.publish_confirmed, *args, **kwargs
            )
        finally:
            self._driven._run_ready(returns_of=self)
