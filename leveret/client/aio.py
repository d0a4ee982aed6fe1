"""The asyncio driver: :class:`AsyncConnection` and :class:`AsyncChannel`.

The same client as :mod:`leveret.client.blocking`, name for name, for asyncio: every call
that waits for the broker is a coroutine (``await channel.queue_declare(...)``), and the
protocol logic is the very same code (:mod:`._shared` over the sans-IO core); only the I/O
differs.

Tasks and callbacks
-------------------
* The transport's protocol feeds what arrives to the core as it arrives and routes the
  events; replies wake the coroutines that wait for them.
* Consumer callbacks (plain functions or coroutine functions), ``on_cancel``, ``on_return``
  and ``on_blocked``/``on_unblocked`` run in one delivery task per connection, in the order
  the broker sent them; a coroutine callback is awaited before the next delivery.  (So a
  publish's ``on_return`` may run after the ``wait_for_confirms`` or ``publish_confirmed``
  that saw its confirm has returned; with no ``on_return``, returned messages are in
  ``channel.returned`` by then -- except a ``publish_confirmed``'s own, which its False
  reports.)  A callback may await other calls on the same connection.
  An exception from a callback is logged and raised by the next
  :meth:`AsyncConnection.drain_events` (a ``CancelledError`` -- say, from an operation the
  callback awaited that someone cancelled -- as a ``RuntimeError`` caused by it), and the
  next delivery runs.  When the connection closes or is lost while a callback runs (even
  one that awaits ``conn.close()`` itself), the callback is not cancelled: what it awaits on
  the connection raises the connection's error, and a pending ``drain_events`` returns (or
  raises what the callback raised) once it has finished, as in the blocking driver; the
  next call raises.  Should the delivery task itself end while the connection is open
  (cancelled from outside), the connection fails with :class:`ConnectionClosedError` rather
  than leave deliveries waiting for ever.  Or iterate instead: ``async with
  channel.deliveries(queue) as messages: async for message in messages: ...`` (the ``async
  with`` cancels the consumer when the block ends, ``break`` included).
* While more than ``read_ahead`` deliveries wait for their callbacks (or their iterators),
  or ``read_ahead_bytes`` have been read since none waited (big messages), the connection
  stops reading the socket, so TCP pushes back on the broker; meanwhile the
  broker counts as alive (a missed heartbeat cannot be told from our own backlog).  But
  while any call waits for the broker (a reply, a confirm, ``close-ok``, the socket to
  drain), reading goes on past ``read_ahead``: what it waits for is behind the deliveries,
  and the task that would work through them may be the one waiting.
* Writes: a call that waits for a reply writes at once; publishes and acks are written
  together at the next turn of the event loop, or at once after a few hundred frames.  When
  the socket cannot keep up, :meth:`AsyncChannel.basic_publish` waits until it drains
  (:meth:`AsyncConnection.drain`), so memory stays bounded.
* Heartbeats are sent and checked by a small task.  Like everything in asyncio, they need
  the event loop to run: a callback that blocks the loop for two heartbeat intervals gets the
  connection closed by the broker.
* Tasks may share a channel: its synchronous calls go one at a time (each waits for the
  previous reply), and each gets its own reply.
* Cancelling a task that awaits a call never leaves a half-written frame: frames are queued
  whole before the first ``await``.  The channel stays usable -- the late reply is dropped
  when it comes (a message fetched by a cancelled ``basic_get`` is given back to the queue
  unless it was fetched with ``no_ack``).  A cancelled ``close()`` still drops the transport.

Processes
---------
A connection belongs to the process that opened it, as in the blocking driver.  In a child
made by ``os.fork()`` every connection the parent had open is let go of at once: the child
writes nothing on the socket it shares with its parent, closes only its own copy of the
file descriptor, and leaves the event loop alone (the parent's: a child that unregistered
the socket from it would unregister it for the parent too, since the two share the kernel's
selector).  Every call on such a connection or its channels raises :class:`ConnectionLost`;
``await connect()``, in an event loop of the child's own (``asyncio.run``), opens a
connection of the child's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import socket
import weakref
from time import monotonic
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Literal, TypeVar, overload

from ..wire.errors import LeveretError
from ._shared import (
    AsyncDriver,
    ChannelBase,
    ConnectionBase,
    NoLock,
    Op,
    QueueDeclareOk,
    deadline_after,
    inherited_through_fork,
    ssl_context,
    tls_handshake_lost,
)
from .core import ConnState
from .errors import ConnectionClosedError, ConnectionLost, MessageDiscardedError
from .events import ChannelClosed
from .message import Message

__all__ = ["AsyncConnection", "AsyncChannel", "Deliveries", "QueueDeclareOk"]

log = logging.getLogger("leveret.client")
R = TypeVar("R")

# Queued frames past which a publish or an ack is written at once instead of at the next
# turn of the event loop.
_FLUSH_ITEMS = 512
_NO_LOCK = NoLock()
#: How many errors may wait for drain_events to raise them (see ``_report``).
_MAX_REPORTS = 10_000

# Connected connections, so that a forked child can let go of them (see "Processes").
_live: weakref.WeakSet[AsyncConnection] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: the connections open at the fork are
    the parent's; let go of them (see the module's notes on processes)."""
    reason = inherited_through_fork(
        "connect() again, in an event loop of this process, for a connection of its own"
    )
    for conn in list(_live):
        try:
            conn._abandon_after_fork(reason)
        except Exception:  # noqa: BLE001 - the child must go on; the connection is unusable anyway
            log.debug("leveret: error abandoning %r after fork", conn, exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Protocol(asyncio.Protocol):
    """Hands the transport's callbacks to the connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.connection._on_data(data)

    def eof_received(self) -> bool:
        self.connection._on_data(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection._on_lost(exc)

    def pause_writing(self) -> None:
        self.connection._write_paused = True

    def resume_writing(self) -> None:
        self.connection._write_paused = False
        self.connection._notify()


class AsyncConnection(ConnectionBase, AsyncDriver):
    """An AMQP connection for asyncio.

    Takes the same URL and options as the blocking :class:`~leveret.client.Connection`
    (``AsyncConnection("amqp://user:pass@host/vhost?heartbeat=30", rpc_timeout=10)``), plus
    ``read_ahead`` (deliveries kept waiting for callbacks before reading stops; default
    20000) and ``read_ahead_bytes`` (bytes read while deliveries wait before reading stops;
    default 16 MiB).  Nothing happens on the wire until ``await connect()`` or ``async
    with``.
    """

    read_ahead = 20000
    read_ahead_bytes = 16 * 1024 * 1024

    def _init_transport(self) -> None:
        self._lock = _NO_LOCK
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._high_water = 0
        self._reading_paused = False
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup: asyncio.Future[None] | None = None  # the delivery task's
        self._callbacks_run = 0
        self._in_callback = False  # the delivery task is running a consumer callback
        self._finishing: asyncio.Task[None] | None = None  # a torn-down one, in a callback
        # What drain_events raises, one per call, oldest first: a callback's exception, a
        # message discarded unread (MessageTooLargeError: its delivery tag must reach the
        # caller, to be rejected), a channel with consumers closed by the broker.
        self._callback_errors: collections.deque[BaseException] = collections.deque()
        self._backlog = 0  # deliveries in Deliveries iterators, not yet taken
        self._ahead_bytes = 0  # bytes read while deliveries waited (see read_ahead_bytes)
        # Calls waiting for something only the broker can send (a reply, a confirm,
        # close-ok, unblocked): reading never stays paused while there are any.
        self._broker_waiters = 0
        self._corked = 0
        self._was_abandoned = False  # see _abandon_after_fork()
        # Set while a connect() runs: other tasks' connect() waits for it.
        self._connecting: asyncio.Future[None] | None = None

    def _make_channel(self, channel_id: int) -> AsyncChannel:
        return AsyncChannel(self, channel_id)

    async def _run(self, op: Op[R]) -> R:
        """Run an operation (see :mod:`._shared`): await each of its waits; what stops a
        wait (TimeoutError, CancelledError, the connection's error) is thrown into it."""
        self._check_loop()
        failed: BaseException | None = None
        while True:
            try:
                wait = op.send(None) if failed is None else op.throw(failed)
            except StopIteration as stop:
                if self._pending:
                    self._wake_deliverer()  # the operation may have queued an item
                return stop.value  # type: ignore[no-any-return]
            failed = None
            try:
                await self._wait_for(wait.predicate, wait.deadline, wait.what)
            except BaseException as exc:
                failed = exc

    # ------------------------------------------------------------------ connect / close

    async def connect(self) -> AsyncConnection:
        """Connect and handshake as the blocking ``Connection.connect()`` does (TCP, TLS,
        protocol header, SASL, tune, open), with the same errors: AuthenticationError,
        the typed error of a refused vhost, TimeoutError, OSError.  Tasks may call it at the
        same time: one connects, the others wait for it and return the open connection (or
        try in turn, when it failed)."""
        loop = asyncio.get_running_loop()
        while not self.is_open:
            other = self._connecting
            if other is None or other.done() or other.get_loop() is not loop:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(other)
        if self.is_open:
            return self
        mine = self._connecting = loop.create_future()
        try:
            return await self._connect(loop)
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._connecting is mine:
                self._connecting = None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> AsyncConnection:
        if self._was_abandoned:
            # The parent's connection, let go of in this forked child: nothing of its
            # transport state (the parent loop's) is kept.
            self._init_transport()
        p = self.params
        self._loop = loop
        deadline = monotonic() + p.connection_timeout
        ctx = (self.ssl_context or ssl_context(p)) if p.ssl else None
        self._new_core()
        self._write_paused = self._reading_paused = False
        self._callback_errors.clear()
        self._in_callback = False
        self._backlog = 0
        self._ahead_bytes = 0
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self), p.host, p.port, ssl=ctx,
                    server_hostname=(p.server_name_indication or p.host) if ctx else None,
                ),
                p.connection_timeout,
            )
        except asyncio.TimeoutError:
            # wait_for's own TimeoutError says nothing at all.
            what = "the TCP connection and TLS handshake" if ctx else "the TCP connection"
            raise TimeoutError(f"timed out waiting for {what} to {p.host}:{p.port}") from None
        except OSError as exc:
            # asyncio reports a peer hanging up mid-handshake as a ConnectionResetError
            # without a word: the same ConnectionLost as the blocking driver.
            lost = tls_handshake_lost(exc) if ctx is not None else None
            if lost is not None:
                raise lost from exc
            raise
        self._transport = transport
        self._high_water = transport.get_write_buffer_limits()[1]
        _live.add(self)
        await self._run(self._handshake(deadline))
        deliverer = _start_delivery_task(loop, self._deliver_loop())
        deliverer.add_done_callback(self._deliverer_done)
        self._tasks = [deliverer]
        if self.heartbeat:
            self._tasks.append(loop.create_task(self._heartbeat_loop(), name="leveret-heartbeat"))
        return self

    async def __aenter__(self) -> AsyncConnection:
        return await self.connect()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def channel(self, channel_id: int | None = None) -> AsyncChannel:
        """Open a channel (``channel.open``/``open-ok``); the lowest free id unless given."""
        return await self._run(self._open_channel(channel_id))

    def _abandon_after_fork(self, reason: str) -> None:
        """In a child made by ``os.fork()``: let go of the parent's connection.

        On the wire: nothing (no ``connection.close``, no TLS close_notify, no
        ``shutdown()``); only this process's file descriptor is closed.  The transport,
        tasks, handles and futures belong to the parent's event loop, whose selector this
        process shares with the parent: they are dropped, not closed or cancelled (either
        would unregister the parent's socket or schedule callbacks there).  From then on
        every call raises :class:`ConnectionLost` with ``reason``; ``connect()`` starts
        afresh.
        """
        _live.discard(self)
        self._was_abandoned = True
        self._error = ConnectionLost(reason)
        self._closed = True
        for ch in list(self._channels.values()):
            ch._on_closed(None)  # their calls raise the connection's error; they stay closed
        transport, self._transport = self._transport, None
        if transport is not None:
            # asyncio hands out a wrapper of the socket (a TransportSocket); closing the
            # socket itself leaves its descriptor -1, so nothing closes the number again.
            wrapper = transport.get_extra_info("socket")
            sock = getattr(wrapper, "_sock", wrapper)
            if isinstance(sock, socket.socket):
                sock.close()
        self._flush_handle = None
        self._tasks = []
        self._waiters = []
        self._wakeup = None
        self._finishing = None
        self._loop = None

    def _teardown(self) -> None:
        _live.discard(self)
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            core = self._core
            if self._error is None and core is not None and core.state is ConnState.CLOSED:
                transport.close()  # a clean shutdown: what is queued (a close-ok) goes first
            else:
                # A silent or broken peer (missed heartbeats, a close() that timed out) may
                # never take what is queued: close() would wait for that, holding the socket.
                transport.abort()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        current = asyncio.current_task() if self._loop is not None and self._loop.is_running() else None
        for task in self._tasks:
            if task is current:
                continue
            if self._in_callback and task is self._tasks[0]:
                # The delivery task is inside a callback (one awaiting conn.close(), say):
                # let it finish, as in the blocking driver -- what it awaits on this
                # connection raises the connection's error rather than CancelledError --
                # and the task ends after it.
                self._finishing = task
                continue
            task.cancel()
        self._tasks = []
        self._notify()

    # ------------------------------------------------------------------ events

    async def drain_events(self, timeout: float | None = None) -> None:
        """Wait until at least one callback (delivery, return, cancel, blocked notice) has
        run in the delivery task.

        Raises ``TimeoutError`` when none ran within ``timeout`` seconds (``None`` waits
        for ever), the connection's error when it is lost or closed by the broker, the
        exception a callback raised (for a ``CancelledError``, a ``RuntimeError`` caused by
        it), a :class:`MessageDiscardedError` (``MessageTooLargeError``,
        ``MessageDecodeError``) for a delivery discarded unread (its ``delivery_tag`` says
        which, to reject it), and, as the
        blocking driver does, the broker's error when it closed a channel that has
        consumers, unless a call on that channel has raised it already.  Each of those
        once, one per call, in the order they happened.
        """
        start = self._callbacks_run
        deadline = None if timeout is None else deadline_after(timeout)

        errors = self._callback_errors

        def ran() -> bool:
            return self._callbacks_run != start or bool(errors)

        try:
            await self._wait_for(ran, deadline, "events", from_broker=False)
        except (LeveretError, OSError):
            # The connection died -- maybe closed by the callback running now (``await
            # conn.close()``), whose close-ok woke us before it returned.  As in the blocking
            # driver, a callback that ran ends this call normally: let it finish first.
            await self._callback_finished(deadline)
            if not ran():
                raise
        # (Not in a finally: a call cancelled, or timed out, leaves the error to the next.)
        if errors:
            raise errors.popleft()

    async def _callback_finished(self, deadline: float | None) -> None:
        """Wait (at most until ``deadline``) while the delivery task is inside a callback."""
        loop = self._loop
        if loop is None:  # never connected, or abandoned: no callback of ours is running
            return
        while self._in_callback:
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            timer = None if remaining is None else loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    async def drain(self) -> None:
        """Write what is queued and wait until the socket has taken it (down to the
        transport's low-water mark)."""
        self._flush()
        while self._write_paused:
            # The broker has to read: it may wait to write to us first, so keep reading.
            await self._wait_for(lambda: not self._write_paused, None, "the socket to drain")

    def _wake_deliverer(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _deliver_loop(self) -> None:
        """The delivery task: runs the callbacks of what arrived, in order."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        callback = self._callback
        core = self._core
        while not self._closed and self._core is core:
            if not pending and not self._has_pending():
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            while pending and not self._closed:
                ch, item = pending.popleft()
                if type(item) is ChannelClosed:
                    # A channel the broker closed.  The tasks its closing woke (a request
                    # on that channel) run first: the one that raises the error reports
                    # it, and drain_events then need not (see Connection._callback).
                    await asyncio.sleep(0)
                    if callback(ch, item) is not None and item.error is not None:
                        self._report(item.error)
                    self._notify()
                    continue
                try:
                    found = callback(ch, item)
                except MessageDiscardedError as exc:  # a message discarded unread: no callback
                    log.warning("leveret: %s", exc)
                    self._report(exc)
                    found = None
                try:
                    if found is not None:
                        self._in_callback = True
                        result = found[0](*found[1])
                        if inspect.isawaitable(result):
                            await result
                        self._callbacks_run += 1
                except (asyncio.CancelledError, Exception) as exc:  # the user's callback
                    self._callback_failed(exc)
                finally:
                    if self._core is core:
                        self._in_callback = False
                self._notify()
                self._maybe_resume_reading()
            for ch in self._returning_channels() if self._returning else ():
                returns = ch._returns
                while returns:
                    message = ch._returned_message(returns.popleft())
                    on_return = ch.on_return
                    try:
                        if on_return is None:
                            ch.returned.append(message)
                        else:
                            result = on_return(message)
                            if inspect.isawaitable(result):
                                await result
                    except (asyncio.CancelledError, Exception) as exc:  # the user's callback
                        self._callback_failed(exc)
                    self._callbacks_run += 1
                    self._notify()
            self._notify()

    def _callback_failed(self, exc: BaseException) -> None:
        """A callback raised ``exc``: log it; the next drain_events raises it (a
        CancelledError as a RuntimeError, so that it does not pass for the cancellation of
        the task that drains).  A CancelledError that is this task being stopped (the
        connection closing, the task cancelled) is raised again instead."""
        if isinstance(exc, asyncio.CancelledError) and (self._closed or _being_cancelled()):
            raise exc
        log.error("leveret: a callback failed", exc_info=exc)
        if isinstance(exc, asyncio.CancelledError):
            cancelled = exc
            exc = RuntimeError("a callback raised CancelledError (an operation it awaited was cancelled)")
            exc.__cause__ = cancelled
        self._report(exc)

    def _report(self, exc: BaseException) -> None:
        """Keep ``exc`` for a drain_events to raise (bounded: beyond ``_MAX_REPORTS`` waiting
        there, only logged)."""
        errors = self._callback_errors
        if len(errors) < _MAX_REPORTS:
            errors.append(exc)
        else:
            log.error("leveret: %d errors wait for drain_events already; dropped: %s", len(errors), exc)

    def _deliverer_done(self, task: asyncio.Task[None]) -> None:
        """The delivery task ended: fine when the connection is closing; otherwise (it was
        cancelled, or failed) nothing would run callbacks any more, and ``drain_events``
        would wait for ever -- fail the connection instead."""
        error = None if task.cancelled() else task.exception()
        self._notify()  # a drain_events waiting for the callback it was running
        if task not in self._tasks:
            return  # stopped by _teardown (possibly of an earlier connection)
        if error is not None:
            log.error("leveret: the delivery task failed", exc_info=error)
        failure = ConnectionClosedError(
            "the connection's delivery task " + ("failed" if error is not None else "was cancelled")
            + "; no callback can run any more"
        )
        failure.__cause__ = error
        self._fail(failure)

    def _maybe_resume_reading(self) -> None:
        if self._reading_paused:
            waiting = len(self._pending) + self._backlog
            if not waiting:
                self._ahead_bytes = 0
            if waiting <= self.read_ahead // 2 and self._ahead_bytes <= self.read_ahead_bytes:
                self._resume_reading()

    def _resume_reading(self) -> None:
        transport = self._transport
        self._reading_paused = False
        if transport is not None:
            transport.resume_reading()

    async def _heartbeat_loop(self) -> None:
        """Queue heartbeats and notice a silent broker (see ``SansIOConnection.tick``)."""
        core = self._core
        assert core is not None
        while not self._closed and self._error is None and core.state is not ConnState.CLOSED:
            if self._reading_paused:
                core.last_received = monotonic()  # our backlog, not a silent broker
            go_on, nxt = self._heartbeat_tick()
            if not go_on:
                return
            self._flush()
            if nxt is None:
                return
            await asyncio.sleep(min(nxt, 0.5))

    # ------------------------------------------------------------------ I/O

    def _on_data(self, data: bytes) -> None:
        core = self._core
        if core is None or self._error is not None:
            return
        try:
            events = core.receive_data(data, monotonic())
            late = core.error  # a violation after frames that made events: those came first
            if events:
                self._dispatch(events)
        except LeveretError as exc:
            self._fail(exc)
            return
        except BaseException as exc:
            # Cut short (a signal handler's exception, raised between any two calls): the
            # bytes were taken and not all handled, so the connection cannot go on -- its
            # events would be lost without a word.  It fails, saying why, and exc goes on.
            if self._error is None:
                self._fail(core.connection_lost(
                    f"handling data from the broker was cut short by {type(exc).__name__}; "
                    "the connection was dropped, as the byte stream could no longer be trusted"
                ))
            raise
        waiting = len(self._pending) + self._backlog
        if waiting:
            self._ahead_bytes += len(data)
        else:
            self._ahead_bytes = 0
        if events:
            if self._pending or self._has_pending():
                self._wake_deliverer()
                if (
                    not self._reading_paused
                    and (waiting > self.read_ahead or self._ahead_bytes > self.read_ahead_bytes)
                    and not self._broker_waiters
                ):
                    transport = self._transport
                    if transport is not None:
                        self._reading_paused = True
                        transport.pause_reading()
            self._notify()
        if late is not None:
            self._fail(late)
            return
        if core.wants_write:  # replies the core owes (close-ok, flow-ok, cancel-ok)
            self._flush()
        if not data or core.state is ConnState.CLOSED:
            self._teardown()

    def _on_lost(self, exc: Exception | None) -> None:
        core = self._core
        # (After _teardown the transport's end is our own doing -- a close() cut short by
        # a cancel or a timeout -- not a loss to report.)
        if core is not None and self._error is None and core.state is not ConnState.CLOSED and not self._closed:
            reason = f"the connection was lost: {exc}" if exc else "the broker closed the connection"
            self._fail(core.connection_lost(reason))
        self._teardown()

    def _fail(self, exc: BaseException) -> None:
        """The connection is unusable: try to send what the core owes (a connection.close),
        drop the transport without waiting for its buffer to drain, wake every waiter with
        ``exc``."""
        if self._error is None:
            self._error = exc
        core, transport = self._core, self._transport
        if core is not None and transport is not None and core.wants_write:
            transport.write(core.data_to_send())
        self._teardown()

    def _flush(self) -> None:
        """Hand everything the core queued to the transport, now."""
        core = self._core
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        if core is None or not core.wants_write:
            return
        transport = self._transport
        if transport is None:
            raise self._dead_error()
        transport.writelines(core.buffers_to_send(monotonic()))
        if not self._write_paused and transport.get_write_buffer_size() > self._high_water:
            # CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 (gh-127655): the socket transport's
            # writelines() buffers what the socket did not take without pausing the
            # protocol, so a publisher would never wait and the buffer would grow without
            # bound.  Setting the same limits again runs the transport's own check, which
            # pauses the protocol now and resumes it when the buffer has drained.
            low, high = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high, low)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        try:
            self._flush()
        except (LeveretError, OSError):
            pass  # the connection holds the error; the next call raises it

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """``with conn.corked(): ...``: publishes and acks inside the block are written
        together when it ends (or earlier past a few hundred frames, or when a call inside
        waits for the broker) -- even across ``await`` points that would otherwise let the
        loop write them."""
        self._corked += 1
        try:
            yield
        finally:
            self._corked -= 1
            if not self._corked:
                try:
                    self._flush()
                except (LeveretError, OSError):
                    pass  # the connection holds the error; the next call raises it

    def _kick(self) -> None:
        """Have what is queued written at the next turn of the loop (or now, past
        ``_FLUSH_ITEMS`` frames)."""
        core = self._core
        if core is not None and len(core._out) > _FLUSH_ITEMS:
            self._flush()
        elif self._flush_handle is None and self._loop is not None and not self._corked:
            self._check_loop()  # (once a turn of the loop: not on every publish)
            self._flush_handle = self._loop.call_soon(self._flush_soon)

    def _check_loop(self) -> None:
        """Refuse a call from another event loop (another thread's, typically): the
        connection's transport and futures belong to the loop it connected in, and asyncio
        would write from the wrong thread or fail with an error that does not say why."""
        loop = self._loop
        if loop is not None and not self._closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                raise RuntimeError(
                    "this AsyncConnection belongs to the event loop it connected in, not the "
                    "one running this call: use one connection per event loop"
                )

    def _notify(self) -> None:
        """Wake every waiting call; they look again at what they wait for."""
        if not self._waiters:
            return  # the common case on the delivery path: nobody waits
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_for(
        self, predicate: Callable[[], Any], deadline: float | None, what: str, from_broker: bool = True
    ) -> None:
        """Wait until ``predicate()`` is true; ``TimeoutError`` past ``deadline``, the
        connection's error when it dies.

        ``from_broker``: what is awaited depends on the broker alone (a reply, a confirm,
        ``close-ok``, ``connection.unblocked``, the broker reading what we wrote), so the
        socket is read meanwhile even past ``read_ahead`` -- the answer is queued behind
        the deliveries, and the task that would work through them may be the one waiting
        (a callback awaiting a call).  Waits for deliveries or callbacks pass False."""
        core = self._core
        if core is not None and core.wants_write:
            self._flush()  # what we wait for may depend on what is still queued
        if self._wait_over(predicate):
            return
        loop = self._loop
        assert loop is not None
        if from_broker:
            self._broker_waiters += 1
            if self._reading_paused:
                self._resume_reading()
        try:
            while not self._wait_over(predicate):
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                timer = None if remaining is None else loop.call_later(remaining, _wake, waiter)
                try:
                    await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
                    # Woken by its timer, or cancelled, rather than by _notify (which empties
                    # the list): out of the list, else a drain_events(timeout=1) loop on an
                    # idle connection would pile up a future per second.
                    waiters = self._waiters
                    if waiters and waiter in waiters:
                        waiters.remove(waiter)
        finally:
            if from_broker:
                self._broker_waiters -= 1


class _CountingTask(asyncio.Task[None]):
    """The delivery task on Python 3.10, whose tasks do not count the requests to cancel
    them (``Task.cancelling()`` came in 3.11): this one does, so that a callback raising
    CancelledError -- from an operation it awaited that somebody cancelled -- can be told
    from the delivery task itself being cancelled.  Without the count every such callback
    would end the delivery task and fail the connection."""

    cancel_requests = 0

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self.cancel_requests += 1
        return super().cancel(msg)


def _start_delivery_task(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[None]:
    if hasattr(asyncio.Task, "cancelling"):
        return loop.create_task(coro, name="leveret-deliver")
    return _CountingTask(coro, loop=loop, name="leveret-deliver")


def _being_cancelled() -> bool:
    """Whether the current task is being cancelled: ``Task.cancelling()`` on Python 3.11+,
    the delivery task's own count of cancel requests on 3.10 (see :class:`_CountingTask`);
    for any other task on 3.10 that cannot be told, and a CancelledError is taken to mean
    it is."""
    task = asyncio.current_task()
    if isinstance(task, _CountingTask):
        return task.cancel_requests > 0
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncChannel(ChannelBase, AsyncDriver):
    """An AMQP channel on an :class:`AsyncConnection`: the blocking
    :class:`~leveret.client.Channel`'s methods, name for name, as coroutines where they
    wait for the broker (``basic_ack``, ``basic_nack``, ``basic_reject`` and
    ``basic_recover_async`` only queue a frame and are plain calls, as in the blocking
    driver, so that ``message.ack()`` works in both).

    A call that is cancelled or times out leaves the channel usable: its late reply is
    dropped when it comes.
    """

    connection: AsyncConnection

    # What type checkers see of queue_declare, queue_purge and queue_delete (keep in step
    # with ChannelBase's; tests/test_typing.py checks the parameters): their results,
    # which are None only with nowait=True.
    if TYPE_CHECKING:

        @overload
        async def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, nowait: Literal[False] = False,
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> QueueDeclareOk: ...
        @overload
        async def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, *, nowait: Literal[True],
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> None: ...
        @overload
        async def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, nowait: bool = False,
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> QueueDeclareOk | None: ...
        async def queue_declare(self, *args: Any, **kwargs: Any) -> Any: ...

        @overload
        async def queue_purge(
            self, queue: str = "", nowait: Literal[False] = False, timeout: float | None = None,
        ) -> int: ...
        @overload
        async def queue_purge(
            self, queue: str = "", *, nowait: Literal[True], timeout: float | None = None,
        ) -> None: ...
        @overload
        async def queue_purge(
            self, queue: str = "", nowait: bool = False, timeout: float | None = None,
        ) -> int | None: ...
        async def queue_purge(self, *args: Any, **kwargs: Any) -> Any: ...

        @overload
        async def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
            nowait: Literal[False] = False, timeout: float | None = None,
        ) -> int: ...
        @overload
        async def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False, *,
            nowait: Literal[True], timeout: float | None = None,
        ) -> None: ...
        @overload
        async def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
            nowait: bool = False, timeout: float | None = None,
        ) -> int | None: ...
        async def queue_delete(self, *args: Any, **kwargs: Any) -> Any: ...

    async def _run(self, op: Op[R]) -> R:
        return await self.connection._run(op)

    def _run_returns(self) -> None:
        """``wait_for_confirms`` and ``publish_confirmed`` hand over returns: here the return
        callbacks run (awaited, if coroutines) in the delivery task, in order with
        everything else; only with no ``on_return`` are the returned messages added to
        :attr:`returned` at once."""
        if self.on_return is None:
            super()._run_returns()

    async def __aenter__(self) -> AsyncChannel:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if not self._closed and self.connection.is_open:
            await self.close()

    async def basic_publish(self, msg: Message | bytes | str, exchange: str = "", routing_key: str = "",
                            mandatory: bool = False, immediate: bool = False) -> int | None:
        """``basic.publish`` + content header + body frames, written together with the
        publishes that follow in the same turn of the event loop.

        Returns the delivery tag in confirm mode (see :meth:`confirm_select`), else None.
        While the broker blocks the connection (``connection.blocked``) this waits up to the
        connection's ``blocked_timeout`` and then raises :class:`BlockedTimeout`; while the
        socket cannot keep up it waits until it drains -- or until the broker blocks the
        connection (it stops reading then): what is written waits in the transport's
        buffer, and the next publish waits for ``connection.unblocked`` as above.

        The body may be reused once the call returns: a ``bytearray`` or ``memoryview``
        body (as such, or a :class:`Message`'s) is copied when the call is made, a
        ``bytes`` one is sent as it is.
        """
        conn = self.connection
        core = self._core
        if core.blocked is not None:
            await conn._run(self._unblocked())
        tag = self._publish_now(msg, exchange, routing_key, mandatory, immediate)
        conn._kick()
        if conn._write_paused:
            conn._flush()
            await conn._wait_for(
                lambda: not conn._write_paused or core.blocked is not None, None, "the socket to drain"
            )
        return tag

    def deliveries(
        self,
        queue: str = "",
        *,
        consumer_tag: str = "",
        no_local: bool = False,
        no_ack: bool = False,
        exclusive: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Deliveries:
        """``async with channel.deliveries(queue, no_ack=False) as messages: async for
        message in messages: ...``: consume ``queue`` (``basic.consume`` with the given
        keyword arguments, which mean what they mean to :meth:`basic_consume`) as an async
        iterator, cancelled (``basic.cancel``) when the ``async with`` block ends.  The
        iteration ends when the broker cancels the consumer; it raises the error when the
        channel or connection closes.  Messages it has not handed out when it is
        cancelled, and those still on their way, go back to the queue -- but ``no_ack``
        ones cannot, and are dropped."""
        return Deliveries(self, queue, dict(
            consumer_tag=consumer_tag, no_local=no_local, no_ack=no_ack, exclusive=exclusive,
            nowait=nowait, arguments=arguments, timeout=timeout,
        ))


class Deliveries:
    """An async iterator over a consumer's deliveries (see :meth:`AsyncChannel.deliveries`)."""

    def __init__(self, channel: AsyncChannel, queue: str, consume: dict[str, Any]) -> None:
        self.channel = channel
        self.queue = queue
        self._consume = consume
        self.consumer_tag: str | None = None
        self._buffer: list[Message] = []
        self._head = 0
        self._ended = False
        self._cancelled = False

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "ended" if self._ended else (
            "consuming" if self.consumer_tag is not None else "not started")
        return (f"<Deliveries queue={self.queue!r} consumer_tag={self.consumer_tag!r} {state}, "
                f"{len(self._buffer) - self._head} buffered>")

    def _on_message(self, message: Message) -> None:
        if self._cancelled:
            # On its way when cancel() was called: nobody will take it.  Back to the queue --
            # or, no_ack, lost (it was as good as lost once the iteration stopped).
            if not self._consume.get("no_ack") and self.channel.is_open:
                self.channel.basic_reject(message.delivery_tag, requeue=True)
            return
        self._buffer.append(message)
        self.channel.connection._backlog += 1

    def _on_cancel(self, consumer_tag: str) -> None:
        self._ended = True

    async def start(self) -> Deliveries:
        """Send ``basic.consume`` (``async with`` and the first iteration do this)."""
        if self._cancelled:
            # Its deliveries would be rejected as they came, and come back, for ever.
            raise RuntimeError(
                "this deliveries() iterator was cancelled (its async with block ended): "
                "call channel.deliveries() again for a new one"
            )
        if self.consumer_tag is None:
            self.consumer_tag = await self.channel.basic_consume(
                self.queue, callback=self._on_message, on_cancel=self._on_cancel, **self._consume
            )
        return self

    async def cancel(self) -> None:
        """Send ``basic.cancel`` (unless the channel is gone); messages still buffered, or
        arriving later, are given back to the queue -- except ``no_ack`` ones, which cannot
        go back: they are dropped."""
        tag, self.consumer_tag = self.consumer_tag, None
        ch = self.channel
        self._ended = True
        try:
            if tag is not None and ch.is_open:
                # What arrives meanwhile is buffered, not rejected: the consumer is still
                # there, and the broker would hand a requeued message straight back.
                await ch.basic_cancel(tag)
        finally:
            # The backlog is settled even when the cancel failed; what still comes is not
            # taken (see _on_message).
            self._cancelled = True
            rest = self._take_buffered()
            if ch.is_open and not self._consume.get("no_ack"):
                for message in rest:
                    ch.basic_reject(message.delivery_tag, requeue=True)

    def _take_buffered(self) -> list[Message]:
        """Empty the buffer (the connection's backlog counts them no more); what it held."""
        rest = self._buffer[self._head:]
        self._buffer, self._head = [], 0
        ch = self.channel
        conn = ch.connection
        if ch._core is conn._core:  # else counted by an earlier connection: not this one's
            conn._backlog -= len(rest)
            conn._maybe_resume_reading()
        return rest

    async def __aenter__(self) -> Deliveries:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.cancel()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self.consumer_tag is None and not self._ended:
            await self.start()
        conn = self.channel.connection
        if self._head == len(self._buffer) and not self._ended and not self.channel._closed:
            await conn._wait_for(
                lambda: self._head < len(self._buffer) or self._ended or self.channel._closed,
                None, "a delivery", from_broker=False,
            )
        if self.channel._closed and self._head < len(self._buffer) and not self._consume.get("no_ack"):
            # The broker has requeued every delivery not acknowledged when the channel (or
            # the connection) closed: handing them out would only have them processed twice
            # and their acks fail, so they go, as a callback consumer's do.
            self._take_buffered()
        if self._head < len(self._buffer):
            message = self._buffer[self._head]
            self._head += 1
            if self._head > 1024 and self._head * 2 > len(self._buffer):
                del self._buffer[: self._head]
                self._head = 0
            if self.channel._core is conn._core:  # see cancel()
                conn._backlog -= 1
                conn._maybe_resume_reading()
            return message
        if self._ended:
            raise StopAsyncIteration
        self.channel._raise_closed()
        raise StopAsyncIteration  # not reached

