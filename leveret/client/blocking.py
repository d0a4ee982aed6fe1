"""The blocking socket driver: :class:`Connection` and :class:`Channel`.

The driver is only a loop around :class:`~leveret.client.core.SansIOConnection`: it writes
what the core queued, reads what the socket has, feeds it to the core and routes the events.

Threads
-------
* Frames are queued in the core under the connection's lock and written by one writer at a
  time (a separate write lock), so frames of different threads are never interleaved.
* Synchronous calls write their request at once and then wait.  Publishes and acks are only
  queued and handed to the connection's I/O thread, which runs as soon as the calling thread
  blocks or the interpreter switches threads: a burst of publishes or of acks from consumer
  callbacks leaves in a few large writes instead of one system call each.  Every wait, and
  ``close()``, writes what is queued first; past a few hundred queued frames the publisher
  writes them itself, so memory stays bounded; at interpreter exit, queued bytes are written.
  Inside ``corked()`` (a high-level ``producer.batch()``, consumer callbacks) the thread
  writes its own frames, about a hundred at a time, and leaves the I/O thread asleep.
* One thread at a time reads the socket.  A thread that waits for something (a reply, a
  confirm, a delivery) reads when nobody else does and otherwise sleeps on a condition the
  reader wakes.  So different channels may be used from different threads; one channel
  should be used by one thread at a time (its replies come in order).  Reading and writing
  go on at once on plain TCP; on TLS each call into the ssl socket is brief (it is
  non-blocking) and made by one thread at a time, as OpenSSL requires.
* Consumer callbacks, return callbacks, cancel callbacks and ``on_blocked``/``on_unblocked``
  run only inside :meth:`Connection.drain_events` (and returns also in
  :meth:`Channel.wait_for_confirms`), in the thread that called it -- never inside another
  call.  A program that only publishes learns of a block from ``connection.blocked`` (the
  broker's reason, or None), which is current whatever the thread, and from the
  :class:`BlockedTimeout` a publish raises after waiting ``blocked_timeout``.
* The I/O thread also does the heartbeat duties: it writes heartbeat frames, reads the
  socket when no other thread does (so a callback that runs for minutes does not make the
  broker look dead, and a ``connection.blocked`` is noticed), and declares the connection
  lost when the broker has been silent for two heartbeat intervals.

Interrupts
----------
A signal handler's exception (``KeyboardInterrupt`` on Ctrl-C) reaches whichever call the
main thread is in.  In a wait for a reply or a delivery nothing is lost: the connection
carries on.  When it cuts short a read whose bytes were taken from the socket but not all
handled, or a write that has taken frames from the queue -- including one waiting for room
in the socket with part of a frame sent -- where the byte stream stands is no longer known:
the connection is dropped, and later calls raise :class:`ConnectionLost` saying so (the
broker requeues the deliveries it awaits acks for; the error lists the publishes left
unconfirmed).  Never are frames misread or half a frame followed by another, a second
interrupt included.  A delivery that had been taken for its callback is the program's: it
stays unacknowledged until the program settles it or the connection closes.

Processes
---------
A connection belongs to the process that opened it.  In a child made by ``os.fork()``
every connection the parent had open is abandoned at once (:meth:`Connection.abandon`):
the child writes nothing on the socket it shares with its parent (no frame, no
``connection.close`` at its exit, no TLS close_notify), closes only its own copy of the file
descriptor, and gets :class:`ConnectionLost` from every call on such a connection or its
channels; :meth:`Connection.connect` then opens a connection of the child's own.  The parent
carries on as if nothing happened.  (Without this, the child's frames would be interleaved
with the parent's on one TCP stream, the broker's replies would go to whichever process read
first, and a child that exits normally would close its parent's connection.)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import socket
import threading
import weakref
from threading import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, TypeVar, overload

from ..wire.errors import LeveretError
from ._shared import (
    BlockingDriver,
    ChannelBase,
    ConnectionBase,
    Op,
    QueueDeclareOk,
    _MAX_WAIT,
    deadline_after,
    inherited_through_fork,
    ssl_context,
    tls_handshake_lost,
)
from .core import _CLOSED, ConnState
from .errors import ConnectionLost
from .events import MessageReceived
from .message import Message

__all__ = ["Connection", "Channel", "QueueDeclareOk"]

log = logging.getLogger("leveret.client")
R = TypeVar("R")

_RECV_SIZE = 262144
#: What _read_some returns when it read what its caller waited for (see there).
_SATISFIED = object()
# Deliveries the heartbeat thread reads ahead while user code is busy before it stops
# reading (TCP then pushes back on the broker).
_READ_AHEAD_LIMIT = 20000
# And bytes: a read counts as _RECV_SIZE (at most what it took), from the last time no
# delivery was waiting.  20,000 deliveries of 1 MiB would be 20 GiB read ahead of a slow
# callback; a byte bound keeps it to about this, whatever the size of the messages.
_READ_AHEAD_BYTES = 16 * 1024 * 1024
# Queued frames (of publishes, acks...) past which the caller writes them itself instead of
# leaving them to the I/O thread: this bounds memory when a publisher outruns the socket.
_FLUSH_ITEMS = 512
# Inside corked() the caller writes every this many queued frames itself: the broker starts
# on the first publishes of a batch (or acks of a burst) while the rest are being made, and
# only the last few are left for it when the block ends.  Much smaller chunks cost both
# sides more than they save (a system call and a wakeup of the broker's reader each).
_CORK_ITEMS = 128
# Writes closer together than this (seconds) count as a burst, left to the I/O thread.
_BURST_GAP = 50e-6
# TLS writes hand the ssl module at most this many bytes per call; a call it could not
# finish must be repeated with the same bytes (see Connection._send_tls).
_TLS_CHUNK = 262144

class _NeverRaised(Exception):
    """Stands in for ssl's want-read/want-write errors on a plain TCP connection."""


def _pollers(sock: socket.socket) -> tuple[Callable[[float | None], Any], Callable[[float | None], Any]]:
    """Two calls that wait for ``sock`` to be readable and writable: each takes a timeout in
    milliseconds (None: for ever) and returns something true once the socket is ready.

    poll() where the platform has it: select() cannot watch a descriptor numbered 1024 or
    more, which a process with many open files does get.  select() elsewhere (Windows)."""
    if hasattr(select, "poll"):
        readable = select.poll()
        readable.register(sock, select.POLLIN)
        writable = select.poll()
        writable.register(sock, select.POLLOUT)
        return readable.poll, writable.poll

    def wait_readable(ms: float | None) -> Any:
        return select.select([sock], [], [], None if ms is None else ms / 1000.0)[0]

    def wait_writable(ms: float | None) -> Any:
        return select.select([], [sock], [], None if ms is None else ms / 1000.0)[1]

    return wait_readable, wait_writable


def _never_ready(ms: float | None) -> Any:
    return ()


# Connections with an I/O thread (every connected one), closed at interpreter exit.
_live: weakref.WeakSet[Connection] = weakref.WeakSet()
# Connections in connect(), not yet in _live: a fork meanwhile leaves the child their
# connect lock held by a thread it does not have (see _after_fork_in_child).
_connecting: weakref.WeakSet[Connection] = weakref.WeakSet()
# How long, in all, the connections still open at interpreter exit may take to close.
_EXIT_CLOSE_BUDGET = 5.0


@atexit.register
def _close_at_exit() -> None:
    """Close the connections still open when the interpreter exits, with the
    ``connection.close`` handshake, so that what a script published last is not lost.

    Writing the queued bytes is not enough: a socket closed with bytes from the broker
    unread (publisher confirms, deliveries) is reset, and the broker then drops what it
    had not read yet.  The broker answers ``close-ok`` only after everything sent before
    it.  At most ``_EXIT_CLOSE_BUDGET`` seconds in all (a dead broker must not hold up the
    exit).
    """
    end = monotonic() + _EXIT_CLOSE_BUDGET
    for conn in list(_live):
        try:
            conn.close(timeout=max(0.1, end - monotonic()))
        except Exception:  # noqa: BLE001 - best effort while the interpreter exits
            pass


def _wait_for_room(ready: Callable[[float | None], Any], deadline: float, timeout: float, park: bool) -> None:
    """A write that the socket did not take: wait in ``ready`` (a poller, milliseconds) for
    room, but not past ``deadline``; ``TimeoutError`` once the socket has taken nothing for
    ``timeout`` seconds.  While the write may park (``park``), in slices of 0.2 s: the I/O
    thread may read a ``connection.blocked`` meanwhile, and the writer should then park."""
    remaining = deadline - monotonic()
    if remaining <= 0:
        raise TimeoutError(f"the socket took no data for {timeout:.0f} seconds") from None
    wait = min(remaining, 0.2 if park else _MAX_WAIT)
    if not ready(wait * 1000.0) and wait == remaining:
        raise TimeoutError(f"the socket took no data for {timeout:.0f} seconds") from None


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: the connections open at the fork are
    the parent's; abandon them (see the module's notes on processes)."""
    reason = inherited_through_fork("connect() again for a connection of this process's own")
    for conn in {*_live, *_connecting}:
        try:
            # A thread of the parent may have held any of the connection's locks at the
            # fork (the write lock, in a long write; the connect lock, in a handshake; the
            # I/O thread's wake-up event's): it does not exist here, and would never release
            # them.  This thread is the only one, so fresh locks are safe to set.
            conn._kick_event = threading.Event()
            conn._connect_lock = threading.RLock()
            conn._fresh_locks()
            conn.abandon(reason)
        except Exception:  # noqa: BLE001 - the child must go on; the connection is unusable anyway
            log.debug("leveret: error abandoning %r after fork", conn, exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Connection(ConnectionBase, BlockingDriver):
    """A blocking AMQP connection.

    ``Connection("amqp://user:pass@host:5672/vhost?heartbeat=30")``; keyword arguments
    override the URL (``host``, ``port``, ``username``, ``password``, ``virtual_host``,
    ``heartbeat``, ``frame_max``, ``channel_max``, ``connection_timeout``,
    ``auth_mechanism``, ``ssl``, ``cacertfile``, ``certfile``, ``keyfile``, ``verify``,
    ``check_hostname``, ``server_name_indication``, ``protocol``).  Further options:
    ``ssl_context`` (used as given), ``blocked_timeout`` (how long a publish waits while
    the broker blocks the connection), ``rpc_timeout`` (default deadline of every
    synchronous call),
    ``max_body_size`` (incoming), ``client_properties``, ``on_blocked(reason)`` and
    ``on_unblocked()`` callbacks.  Options are checked here, as strictly as a URL's:
    ``TypeError`` or ``ValueError`` naming the option.  The three default timeouts must be
    positive, finite seconds; a call's own ``timeout=`` may be any number of seconds
    (``inf``: no limit, 0: do not wait), NaN and non-numbers are refused before anything
    is sent.

    Nothing happens on the wire until :meth:`connect` (or ``with Connection(...)``).
    """

    def _init_transport(self) -> None:
        # One connect() at a time; the same lock for the life of the object (a new one only
        # in a forked child, see _after_fork_in_child).
        self._connect_lock: threading.RLock = getattr(self, "_connect_lock", None) or threading.RLock()
        self._fresh_locks()
        self._sock: socket.socket | None = None
        # The error a read or write cut short by an exception fails the connection with at
        # once, before any call (see _interrupted): made here, not when needed.
        self._cut_short = ConnectionLost(
            "a read or write on the socket was cut short by an exception (a signal "
            "handler's?); the connection was dropped, as the byte stream could no longer be trusted"
        )
        # Taken from the core, not yet written (under _wlock): bytes or a memoryview.
        self._wrest: Any = b""
        self._last_kick = 0.0
        # Thread id -> its corked() depth.  Each thread only changes its own entry (single
        # dict operations, atomic under the GIL), so no lock is needed.
        self._cork_depth: dict[int, int] = {}
        self._kick_event = threading.Event()
        self._reading = False
        self._read_ahead = 0  # bytes the I/O thread read while deliveries waited: see _io_duty
        self._io_thread: threading.Thread | None = None
        # Closes the socket of a connection dropped without close().
        self._finalizer: weakref.finalize[[socket.socket, threading.Event], Connection] | None = None
        self._stopping = False
        self._last_poll = 0.0
        # TLS only: the ssl module is imported when a connection uses it.
        self._tls = False
        # Sockets are non-blocking once the handshake is done: every read already waits in
        # poll(), and a socket timeout would make CPython poll() again before each send and
        # recv.  Writes then wait at most _write_timeout for room in the socket.  Plain TCP
        # (_nonblocking) writes with send()/sendmsg(); TLS (_tls_nonblocking) through
        # _send_tls (ssl sockets have no sendmsg(), and want their unfinished writes back).
        self._nonblocking = False
        self._tls_nonblocking = False
        self._write_timeout = 0.0
        # TLS only: the length of the chunk at the head of _wrest that SSL could not finish
        # and must be handed again as it is (0: none).  Under _wlock, like _wrest.
        self._wretry = 0
        # Wait for the socket to be readable / writable (see _pollers).
        self._poll_in: Callable[[float | None], Any] = _never_ready
        self._poll_out: Callable[[float | None], Any] = _never_ready
        self._want_read: type[BaseException] = _NeverRaised
        self._want_write: type[BaseException] = _NeverRaised
        self._was_abandoned = False  # see abandon() and _after_abandon()

    def _make_channel(self, channel_id: int) -> Channel:
        return Channel(self, channel_id)

    def channel(self, channel_id: int | None = None) -> Channel:
        """Open a channel (``channel.open``/``open-ok``); the lowest free id unless given."""
        return self._run(self._open_channel(channel_id))  # type: ignore[no-any-return]

    def _run(self, op: Op[R]) -> R:
        """Run an operation (see :mod:`._shared`): block in each of its waits."""
        try:
            wait = op.send(None)
            while True:
                try:
                    self._wait_for(*wait)
                except BaseException as exc:
                    wait = op.throw(exc)
                else:
                    wait = op.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ connect / close

    def connect(self) -> Connection:
        """Open the TCP (and TLS) connection and run the AMQP handshake: protocol header,
        ``start``/``start-ok`` (SASL), ``tune``/``tune-ok``, ``open``/``open-ok``.

        Raises :class:`AuthenticationError` for refused credentials, the typed error for a
        refused vhost (e.g. ``NotAllowed``), ``TimeoutError`` past ``connection_timeout``,
        ``OSError`` when the broker cannot be reached.

        Threads may call it at the same time (connecting lazily): one connects, the others
        wait for it and return the open connection (or try in turn, when it failed).
        """
        if self.is_open:
            return self
        with self._connect_lock:
            if self.is_open:
                return self
            _connecting.add(self)
            try:
                return self._connect()
            finally:
                _connecting.discard(self)

    def _connect(self) -> Connection:
        if self._was_abandoned:
            self._after_abandon()
        if self._sock is not None or self._io_thread is not None:
            # The last transport died without close(): release its socket and I/O thread
            # first (that thread would otherwise go on, on the new connection's state).
            self._teardown()
        p = self.params
        deadline = monotonic() + p.connection_timeout
        # The TLS context first: a certificate file that cannot be read is a mistake of
        # this side, to report before the broker sees a connection.
        ctx = (self.ssl_context or ssl_context(p)) if p.ssl else None
        sock = socket.create_connection((p.host, p.port), timeout=min(p.connection_timeout, _MAX_WAIT))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._tls = bool(p.ssl)
            if ctx is not None:
                import ssl

                self._want_read, self._want_write = ssl.SSLWantReadError, ssl.SSLWantWriteError
                sock = ctx.wrap_socket(sock, server_hostname=p.server_name_indication or p.host)
        except BaseException as exc:
            sock.close()
            lost = tls_handshake_lost(exc) if ctx is not None else None
            if lost is not None:
                raise lost from exc
            raise
        self._sock = sock
        if ctx is not None:
            # A read that outlasts this is retried (see _read_some), so that it cannot
            # carry the handshake far past its deadline.
            sock.settimeout(min(p.connection_timeout, 1.0))
        self._poll_in, self._poll_out = _pollers(sock)
        self._nonblocking = self._tls_nonblocking = False  # until the handshake is done
        # What the last transport parked was for its peer; its SSL is gone too.
        self._wrest = b""
        self._wretry = 0
        self._new_core()
        self._run(self._handshake(deadline))
        # From now on reads wait in poll(); writes wait at most _write_timeout for room.
        self._write_timeout = min(max(self.blocked_timeout, 1.0) + 30.0, _MAX_WAIT)
        sock.setblocking(False)
        if self._tls:
            self._tls_nonblocking = True
        else:
            self._nonblocking = True
        self._stopping = False
        self._kick_event.clear()
        self._io_thread = threading.Thread(
            target=_io_main, args=(weakref.ref(self), self._kick_event), name="leveret-io", daemon=True
        )
        self._io_thread.start()
        self._finalizer = weakref.finalize(self, _abandoned, sock, self._kick_event)
        self._finalizer.atexit = False  # at exit, _close_at_exit closes it properly
        _live.add(self)
        return self

    def _fresh_locks(self) -> None:
        # Lock order: _wlock (socket writes) before _lock (core and routing state).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0  # threads in self._cond.wait(): nobody to notify when 0
        self._wlock = threading.Lock()
        # TLS only: held around every call into the ssl socket (recv, send, pending).  One
        # thread reads while others write, and OpenSSL does not allow two threads in one
        # connection's SSL object at once (a read may have to write: a key update's answer).
        # The socket is non-blocking, so each hold is short.  Taken last, after any other.
        self._ssl_lock = threading.Lock()

    def __enter__(self) -> Connection:
        return self.connect()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def abandon(self, reason: str = "the connection was abandoned") -> None:
        """Stop using this connection without a word to the broker: for a process that got
        it through ``fork()``, whose parent goes on using it.  (A child made by ``os.fork()``
        does this for every connection open at the fork before anything else runs; see the
        module's notes on processes.)

        On the wire: nothing.  No ``connection.close``, no TLS close_notify, and no
        ``shutdown()`` of the socket, which would end the TCP connection for every process
        sharing it; only this process's file descriptor is closed (where it was the last
        one, the broker sees the TCP connection end without a close handshake, as when the
        network fails).  Bytes not yet written are dropped.  From then on every call on the
        connection and its channels raises :class:`ConnectionLost` with ``reason``, the I/O
        thread (if this process has one) ends, :meth:`close` does nothing, and the
        connection is not closed at interpreter exit.  Takes no lock (one held by a thread
        of the parent at the fork would never be released in the child).  Safe to call more
        than once, and on a connection that never connected.

        :meth:`connect` afterwards opens a new connection of this process's own, as on a
        connection never connected (with new locks and a new I/O thread; the abandoned
        connection's channels stay closed: their calls raise ``ChannelClosedError``).
        """
        self._was_abandoned = True
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _live.discard(self)
        self._error = ConnectionLost(reason)
        self._closed = True
        self._stopping = True
        self._wrest = b""
        self._wretry = 0
        sock, self._sock = self._sock, None
        self._kick_event.set()  # the I/O thread sees _stopping and ends
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        cond = self._cond
        if cond.acquire(blocking=False):  # wake this process's waiters, if any
            try:
                cond.notify_all()
            finally:
                cond.release()

    def _after_abandon(self) -> None:
        """Forget the transport that :meth:`abandon` dropped, before a new one.

        After a fork, a lock of the old transport may be held by a thread of the parent,
        which does not exist here, and its state (``_reading``, the cork depths) may be
        that thread's: take all of it afresh rather than wait on it.  Where no fork
        happened, the old I/O thread ends by itself (abandon() woke it); it is given a
        moment, so that it cannot work on the new transport.
        """
        old = self._io_thread
        if old is not None and old.is_alive() and old is not threading.current_thread():
            old.join(timeout=2)
        channels = list(self._channels.values())
        self._init_transport()
        for ch in channels:
            ch._on_closed(None)

    def _teardown(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._stopping = True
        self._kick_event.set()
        _live.discard(self)
        sock, self._sock = self._sock, None
        with self._lock:
            self._closed = True
            self._cond.notify_all()
        if sock is not None:
            try:
                # close() alone does not wake a thread waiting in poll() on the socket (a
                # drain_events() with no timeout); shutdown() does.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        t = self._io_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
        self._io_thread = None

    # ------------------------------------------------------------------ channels

    # ------------------------------------------------------------------ events

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait for deliveries, returns, cancels or blocked notices and run their callbacks.

        Returns after running at least one callback.  Raises ``TimeoutError`` (the same class
        as ``socket.timeout``) when nothing arrived within ``timeout`` seconds (``None``
        waits for ever), the connection's error when it is lost or closed by the broker,
        :class:`MessageTooLargeError` for a delivery over ``max_body_size``, and the
        broker's error (``PreconditionFailed``...) when it closed a channel that has
        consumers -- one did not acknowledge within RabbitMQ's ``consumer_timeout``, an ack
        named an unknown delivery tag -- unless a call on that channel has raised it
        already (the consumers are gone; the deliveries that came before the close have
        run).  A channel without consumers reports such an error on its next call.
        """
        deadline = None if timeout is None else deadline_after(timeout)
        if (self._pending or (self._returning and self._has_returns())) and self._run_pending():
            return
        while True:
            self._wait_for(self._has_pending, deadline, "events")
            if self._run_pending():
                return

    def _run_pending(self) -> bool:
        """Run the callbacks of what was received, corked (the acks they send leave
        together); True if any ran (or an event that has no callback to run was handed
        over, such as a consumer cancelled by the broker).

        Only what was received before it started: what arrives while the callbacks run --
        read by a callback's own wait, say a confirmed publish to the queue it consumes
        from -- waits for the next call, so that a callback that keeps making deliveries
        for itself cannot keep ``drain_events`` from returning."""
        if not self._pending and not (self._returning and self._has_returns()):
            return False
        # corked() and _uncork(), inline: this runs once per drain_events().
        me = get_ident()
        depth = self._cork_depth
        outer = depth.get(me, 0)
        depth[me] = outer + 1
        try:
            ran = False
            pending = self._pending
            received = Message._received
            left = len(pending)
            while left and pending:  # (another thread's drain_events may take some too)
                left -= 1
                ch, item = pending.popleft()
                if type(item) is MessageReceived:
                    # The usual item, a delivery to a live consumer, run here without the
                    # detour through _callback (which handles everything else).
                    method = item.method
                    consumer = ch._consumers.get(method.consumer_tag)
                    if consumer is not None:
                        ran = True
                        consumer(received(ch, method, item.properties, item.body))
                        continue
                found = self._callback(ch, item)
                if found is not None:
                    ran = True
                    found[0](*found[1])
            if self._returning:
                channels = self._returning_channels()
                for i, ch in enumerate(channels):
                    if ch._returns:
                        try:
                            ch._run_returns()
                        except BaseException:  # a return callback raised: the rest go next time
                            for rest in channels[i:]:
                                self._returning[rest] = None
                            raise
                        ran = True
            return ran
        finally:
            if outer:
                depth[me] = outer
            else:
                del depth[me]
                core = self._core
                if core is not None and (core._out or self._wrest):
                    self._flush_uncorked()

    # ------------------------------------------------------------------ I/O

    def _flush(self) -> None:
        """Write everything the core queued, now.  Never call it holding ``_lock``."""
        core = self._core
        if core is None or not (core._out or self._wrest):
            return
        with self._wlock:
            taken = False  # whether frames were taken from the core (see _interrupted)
            sock = self._sock
            try:
                now = monotonic()
                with self._lock:  # (an interrupt while waiting for it takes nothing)
                    taken = True
                    bufs = core.buffers_to_send(now)
                if self._wrest:  # what the I/O thread could not write yet goes first
                    bufs = [self._wrest, *bufs]
                    self._wrest = b""
                if bufs:
                    self._write(bufs)
            except BaseException as exc:
                # Frames taken from the core, maybe in part written (_write has failed the
                # connection for its own errors, and raised the close of another thread's
                # close(), which replaced the socket: nothing to protect then).
                if taken and self._sock is sock:
                    if self._error is None:
                        self._error = self._cut_short  # first, before any call: see _interrupted
                    self._interrupted(exc, "writing to the socket")
                raise

    def _flush_within(self, deadline: float) -> bool:
        core = self._core
        if core is None or not (core._out or self._wrest):
            return True
        remaining = deadline - monotonic()
        if not self._wlock.acquire(timeout=min(max(remaining, 0.0), _MAX_WAIT)):
            return False  # another thread's write is stuck
        taken = False
        sock = self._sock
        try:
            now = monotonic()
            with self._lock:
                taken = True
                bufs = core.buffers_to_send(now)
            if self._wrest:
                bufs = [self._wrest, *bufs]
                self._wrest = b""
            if bufs:
                if sock is None:
                    return False
                try:
                    if self._nonblocking:
                        self._send_views(sock, bufs, min(max(deadline - monotonic(), 0.001), _MAX_WAIT))
                    elif self._tls_nonblocking:
                        self._send_tls(sock, bufs, min(max(deadline - monotonic(), 0.001), _MAX_WAIT))
                    else:
                        self._write(bufs)
                except (OSError, LeveretError):
                    return False
        except BaseException as exc:
            if taken and self._sock is sock:
                if self._error is None:
                    self._error = self._cut_short  # first, before any call: see _interrupted
                self._interrupted(exc, "writing to the socket")
            raise
        finally:
            self._wlock.release()
        return True

    def _flush_nowait(self) -> None:
        """The I/O thread's write: never waits for the write lock or for a full socket.

        What the socket cannot take now stays in ``_wrest`` (written first next time), so
        the I/O thread always gets back to its heartbeat duties -- a peer that stops
        reading is then found out by the missed heartbeats, not by a write timeout.
        """
        core = self._core
        sock = self._sock
        if core is None or sock is None or not (core._out or self._wrest):
            return
        if not self._wlock.acquire(blocking=False):
            return  # another thread is writing; it takes everything queued with it
        try:
            with self._lock:
                bufs = core.buffers_to_send(monotonic())
            rest = self._wrest
            if not bufs:
                data: Any = rest
            elif not rest and len(bufs) == 1:
                data = bufs[0]
            else:
                data = b"".join([rest, *bufs])
            self._wrest = b""
            try:
                if self._nonblocking:
                    view = memoryview(data).cast("B")
                    try:
                        while view:
                            sent = sock.send(view)
                            view = view[sent:]
                    except BlockingIOError:
                        pass
                    finally:
                        if view:
                            # Keep the unsent tail as a view: copying it at every partial
                            # write would cost O(n^2) for a big body on a slow socket.
                            self._wrest = view
                else:
                    self._send_tls(sock, [data], None)  # what does not fit goes to _wrest
            except OSError as exc:
                if self._sock is not sock:
                    raise self._dead_error() from exc  # closed under this write: see _write
                with self._lock:
                    err = core.connection_lost(f"writing to the socket failed: {exc}")
                self._fail(err)
                raise err from exc
        finally:
            self._wlock.release()

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """``with conn.corked(): ...``: publishes and acks this thread makes inside the
        block are not written one by one: this thread writes them itself, about a hundred
        frames at a time (so the broker can start on them) and the rest when the block
        ends -- or earlier when a call inside the block has to wait for the broker.  No
        other thread is woken for them, and other threads' writes are not held back.
        Consumer callbacks run corked.  If a write fails, the connection keeps the error
        and the next call raises it."""
        me = get_ident()
        depth = self._cork_depth
        outer = depth.get(me, 0)
        depth[me] = outer + 1
        try:
            yield
        finally:
            self._uncork(me, outer)

    def _uncork(self, me: int, outer: int) -> None:
        """Leave one level of :meth:`corked` (``outer`` is the depth it was entered at);
        leaving the last one writes what is queued."""
        depth = self._cork_depth
        if outer:
            depth[me] = outer
            return
        del depth[me]
        core = self._core
        if core is not None and (core._out or self._wrest):
            self._flush_uncorked()

    def _flush_uncorked(self) -> None:
        """The write at the end of the outermost :meth:`corked` block."""
        try:
            self._flush()
        except (LeveretError, OSError):
            # Like any queued write that fails: the connection now holds the error
            # and the next call (a wait for confirms, a publish...) raises it.
            pass

    def _notify(self) -> None:
        with self._lock:
            if self._waiters:
                self._cond.notify_all()

    def _kick(self) -> None:
        """Have what is queued written soon.

        Inside :meth:`corked` the calling thread writes every ``_CORK_ITEMS`` queued frames
        (and the rest at the block's end) itself: waking the I/O thread would only make
        the two contend for the interpreter lock.  Otherwise a lone write (the previous one
        was more than ``_BURST_GAP`` ago) is written now by the calling thread: handing it
        to another thread would cost a thread switch on the round trip.  Inside a burst of
        publishes or acks, the I/O thread writes -- it runs as soon as this thread blocks or
        the interpreter switches threads -- so the burst leaves in a few large writes.
        Past ``_FLUSH_ITEMS`` queued frames the caller writes them itself (bounded memory)."""
        core = self._core
        if self._cork_depth and get_ident() in self._cork_depth:
            if core is not None and len(core._out) >= _CORK_ITEMS:
                self._flush()
            return
        now = monotonic()
        last, self._last_kick = self._last_kick, now
        if now - last > _BURST_GAP or (core is not None and len(core._out) > _FLUSH_ITEMS):
            self._flush()
        elif not self._kick_event.is_set():  # set() costs a lock round trip; once is enough
            self._kick_event.set()

    def _write(self, bufs: list[Any]) -> None:
        """Write all the buffers (``_wlock`` held), waiting for room in the socket at most
        ``_write_timeout`` seconds in all."""
        sock = self._sock
        if sock is None:
            raise self._dead_error()
        try:
            if not self._nonblocking:
                if self._tls_nonblocking:
                    self._send_tls(sock, bufs, self._write_timeout, park=True)
                else:
                    # The handshake: the socket has a timeout and sendall() waits for room
                    # itself (handshake frames are small).
                    sock.sendall(bufs[0] if len(bufs) == 1 else b"".join(bufs))
                return
            if len(bufs) == 1:
                data = bufs[0]
            elif memoryview not in map(type, bufs):  # no slices of a big body: join them
                data = b"".join(bufs)
            else:
                # Slices of a big body: scatter/gather, no copy of the body.
                self._send_views(sock, bufs, self._write_timeout, park=True)
                return
            # The usual write: it fits in the socket at once.
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent != len(data):
                self._send_views(sock, [memoryview(data).cast("B")[sent:]], self._write_timeout, park=True)
        except OSError as exc:
            if self._sock is not sock:
                # Another thread closed the connection (a close() whose handshake could not
                # finish drops the socket) while this write waited for room: that close is
                # what happened, not a lost connection.
                raise self._dead_error() from exc
            core = self._core
            assert core is not None
            with self._lock:
                err = core.connection_lost(f"writing to the socket failed: {exc}")
            self._fail(err)
            raise err from exc

    def _send_views(self, sock: socket.socket, bufs: list[Any], timeout: float, park: bool = False) -> None:
        """Write ``bufs`` to the non-blocking socket with scatter/gather writes, straight
        from the caller's buffers (no copy), waiting in poll() for room; fails when the
        socket takes nothing for ``timeout`` seconds (a big body on a slow link may take
        longer in all).

        ``park`` (``_wlock`` held, ``_wrest`` empty): when the socket is full because the
        broker has blocked the connection (``connection.blocked``: it stops reading until
        its alarm clears), what is left goes to ``_wrest`` for the I/O thread to write
        once there is room, and this returns.  Waiting for room instead would hold the
        caller for as long as the alarm lasts, not ``blocked_timeout``, and then fail a
        healthy connection with a write timeout.  The next publish waits for
        ``connection.unblocked`` as usual, so at most one publish is parked."""
        views = [memoryview(b).cast("B") for b in bufs]
        deadline = monotonic() + timeout
        core = self._core
        while views:
            try:
                sent = sock.sendmsg(views[:512])
            except BlockingIOError:
                if park and core is not None and core.blocked is not None:
                    self._wrest = views[0] if len(views) == 1 else b"".join(views)
                    self._kick_event.set()
                    return
                _wait_for_room(self._poll_out, deadline, timeout, park)
                continue
            if sent:
                deadline = monotonic() + timeout
            while sent:
                first = views[0]
                if sent >= len(first):
                    sent -= len(first)
                    views.pop(0)
                else:
                    views[0] = first[sent:]
                    sent = 0

    def _send_tls(self, sock: socket.socket, bufs: list[Any], timeout: float | None, park: bool = False) -> None:
        """Write ``bufs`` to the non-blocking TLS socket (``_wlock`` held), at most
        ``_TLS_CHUNK`` bytes per call into ssl, waiting in poll() for room; fails when the
        socket takes nothing for ``timeout`` seconds.  ``timeout`` None (the I/O thread):
        never wait, leave what the socket cannot take in ``_wrest``.  ``park``: as in
        :meth:`_send_views` (``_wrest`` was taken into ``bufs``).

        A chunk that ssl could not finish (want-write) is partly encrypted and sent already,
        and OpenSSL must be handed that chunk again, the same bytes and the same length
        (anything else breaks the connection): it stays at the head of what is left,
        its length in ``_wretry``, for whoever writes next."""
        data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
        view = memoryview(data).cast("B")
        size = self._wretry or _TLS_CHUNK
        deadline = 0.0 if timeout is None else monotonic() + timeout
        core = self._core
        while view:
            chunk = view[:size]
            try:
                with self._ssl_lock:
                    sent = sock.send(chunk)
            except (self._want_write, self._want_read) as exc:
                self._wretry = len(chunk)
                if timeout is None or (park and core is not None and core.blocked is not None):
                    self._wrest = view
                    if timeout is not None:
                        self._kick_event.set()
                    return
                ready = self._poll_in if isinstance(exc, self._want_read) else self._poll_out
                _wait_for_room(ready, deadline, timeout, park)
                continue
            self._wretry = 0
            size = _TLS_CHUNK
            view = view[sent:]
            if timeout is not None:
                deadline = monotonic() + timeout

    def _ssl_pending(self, sock: socket.socket) -> int:
        """TLS: how many decrypted bytes the ssl socket holds (under ``_ssl_lock``)."""
        with self._ssl_lock:
            return sock.pending()  # type: ignore[attr-defined,no-any-return]

    def _read_some(
        self, timeout: float | None, predicate: Callable[[], Any] | None = None, role: list[bool] | None = None
    ) -> Any:
        """Read once, waiting at most ``timeout`` seconds (None: for ever) for bytes to
        come; False if none came.  The caller holds the reading role, not the lock.

        With a ``predicate`` (a :meth:`_wait_for`'s): when what was read makes it true, and
        nothing more is to be done after the read (no reply the core owes, no close), the
        reading role is given back under the same hold of the lock (``role[0]`` set False
        with ``_reading``, no call between: an interrupt cannot leave the caller thinking
        it still holds the role), and this returns :data:`_SATISFIED` -- what the caller's
        next look under the lock would have found, without taking the lock again."""
        sock = self._sock
        core = self._core
        if sock is None or core is None:
            raise self._dead_error()
        # From recv() on, until what it returned is handed over (events in _pending), an
        # exception that escapes -- a KeyboardInterrupt from a signal handler, raised
        # between any two calls -- leaves bytes taken from the socket and not handled, or
        # the frame reader half way: see _interrupted.  (One in poll() took nothing.)
        busy = False
        try:
            try:
                if timeout is not None and timeout <= 0:
                    if not self._nonblocking and not (self._tls and self._ssl_pending(sock)):
                        if not self._poll_in(0):
                            return False
                elif not (self._tls and self._ssl_pending(sock)):
                    if not self._poll_in(None if timeout is None else min(timeout, _MAX_WAIT) * 1000.0):
                        return False
                busy = True  # after poll(): an interrupt there took nothing from the socket
                if self._tls:
                    with self._ssl_lock:
                        data = sock.recv(_RECV_SIZE)
                else:
                    data = sock.recv(_RECV_SIZE)
            except (BlockingIOError, self._want_read, self._want_write):
                # TLS: poll() saw bytes, but they were not a whole record of data (a session
                # ticket, half a record), or ssl has to write first (a key update's answer).
                return False
            except TimeoutError:
                # TLS during the handshake (the socket has a timeout then): as above, and the
                # timeout ran out waiting for the rest.  Nothing came, as far as the caller is
                # concerned; the session is intact.
                return False
            except (OSError, ValueError) as exc:
                busy = False  # recv() failed: it took nothing
                if self._error is not None or self._sock is not sock:
                    raise self._dead_error() from None  # closed while we waited
                err = core.connection_lost(f"reading from the socket failed: {exc}")
                self._fail(err)
                raise err from exc
            with self._lock:
                try:
                    events = core.receive_data(data, monotonic())
                except LeveretError as exc:
                    self._fail(exc)
                    raise
                self._dispatch(events)
                busy = False  # (no call between the return and this: nothing can cut in)
                if self._waiters:
                    self._cond.notify_all()
                late = core.error  # a violation after frames that made events: those came first
                if late is not None:
                    self._fail(late)
                    raise late
                if (
                    predicate is not None
                    and data
                    and not core._out
                    and core.state is not _CLOSED
                    and predicate()
                    and role is not None
                ):
                    self._reading = role[0] = False
                    if self._waiters:
                        self._cond.notify_all()
                    return _SATISFIED
            if not data:
                self._teardown()
                return True
            if core._out:  # replies the core owes (close-ok, flow-ok, cancel-ok)
                try:
                    self._flush()
                except LeveretError:
                    pass
            if core.state is _CLOSED:
                # The handshake is over (RabbitMQ resets the socket right after its close):
                # later calls report why it closed, not what the dead socket says.
                self._teardown()
            return True
        except BaseException as exc:
            # (Not when another thread's close() or connect() has replaced the socket since:
            # this read's bytes are that connection's no more.)
            if busy and self._sock is sock:
                if self._error is None:
                    self._error = self._cut_short  # first, before any call: see _interrupted
                self._interrupted(exc, "reading from the socket")
            raise

    def _interrupted(self, exc: BaseException, doing: str) -> None:
        """``exc`` cut ``doing`` short half way: bytes were taken from the socket and not
        all handled, or frames taken from the core and maybe written in part.  Typically a
        KeyboardInterrupt, which a signal handler raises between any two calls.  Where the
        byte stream stands is no longer known -- reading on would misread frames and lose
        events, writing on would follow half a frame -- so the connection fails now, with
        an error that says why (the broker requeues the deliveries it is owed acks for;
        the error lists the unconfirmed publishes), and ``exc`` goes on to the caller.
        Nothing is done when the connection failed or closed already.

        The caller has set ``_error`` to ``_cut_short`` already, before calling anything: a
        second interrupt landing in here (Ctrl-C twice) leaves the connection failed with
        that error rather than looking sound; this replaces it with one that says more."""
        core = self._core
        if core is None or self._error is not self._cut_short or self._sock is None:
            return
        with self._lock:
            err = core.connection_lost(
                f"{doing} was cut short by {type(exc).__name__}; the connection was "
                "dropped, as the byte stream could no longer be trusted"
            )
            core.buffers_to_send()  # nothing more goes out: it could follow half a frame
        self._error = err
        self._fail(err)

    def _fail(self, exc: BaseException) -> None:
        """The connection is unusable: send what the core owes (a connection.close), drop the
        socket, wake every waiter with ``exc``."""
        with self._lock:
            if self._error is None:
                self._error = exc
            core, sock = self._core, self._sock
            # Send what the core owes (a connection.close) unless another thread is in the
            # middle of a write: then the socket is as good as gone anyway.
            if core is not None and sock is not None and core.wants_write and self._wlock.acquire(blocking=False):
                try:
                    sock.settimeout(1.0)
                    if self._tls:
                        with self._ssl_lock:
                            sock.sendall(core.data_to_send())
                    else:
                        sock.sendall(core.data_to_send())
                except OSError:
                    pass
                finally:
                    self._wlock.release()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._cond.notify_all()

    def _wait_for(
        self, predicate: Callable[[], Any], deadline: float | None, what: str,
        local: Callable[[], Any] | None = None,
    ) -> None:
        """Block until ``predicate()`` is true, reading the socket when no other thread does
        (and, with ``local``, while ``local()`` is false: see :class:`Wait`).

        Raises ``TimeoutError`` past ``deadline`` and the connection's error when it dies.
        """
        lock = self._lock
        core = self._core
        if core is not None and (core._out or self._wrest):
            self._flush()  # what we wait for may depend on what is still queued
        reading = False  # whether this thread holds the reading role
        role = [True]  # role[0] False: _read_some gave the role back (and we are done)
        looked = False  # whether the socket was read once after the deadline
        try:
            while True:
                with lock:
                    if reading:  # give the role back (and look again) in one go
                        self._reading = reading = False
                        if self._waiters:
                            self._cond.notify_all()
                    # _wait_over(), inline: the predicate, then whether the connection died.
                    if predicate():
                        return
                    if self._error is not None or self._closed or self._core is None or self._core.state is _CLOSED:
                        self._wait_over(predicate)  # raises the connection's error
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        # Past the deadline (or timeout=0, a poll): one read of what the
                        # socket already holds, without waiting, before giving up.
                        if looked or self._reading or self._sock is None:
                            raise TimeoutError(f"timed out waiting for {what}")
                        looked = True
                        remaining = 0
                    elif self._reading or (local is not None and local()):
                        self._waiters += 1
                        try:
                            self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
                        finally:
                            self._waiters -= 1
                        continue
                    reading = self._reading = True  # this order: an interrupt between leaves no stuck role
                if self._read_some(remaining, predicate, role) is _SATISFIED:
                    return  # _read_some gave the role back
        finally:
            if reading and role[0]:
                with lock:
                    self._reading = False
                    if self._waiters:
                        self._cond.notify_all()

    def _poll(self) -> None:
        """Read whatever is already waiting, without blocking, if nobody else reads."""
        with self._lock:
            core = self._core
            if (
                self._reading
                or self._error is not None
                or self._sock is None
                or core is None
                or core.state is ConnState.CLOSED
            ):
                return
            self._reading = True
        try:
            self._read_some(0)
        finally:
            with self._lock:
                self._reading = False
                if self._waiters:
                    self._cond.notify_all()

    def _io_duty(self, next_duty: float) -> float | None:
        """One round of the I/O thread (see :func:`_io_main`): writes what other threads
        queued (see :meth:`_kick`), and every few hundred milliseconds does the heartbeat
        duties -- reads when no other thread does, queues heartbeats, declares the
        connection lost after two silent intervals.  Returns when the next duties are due,
        or None when the thread should end."""
        core = self._core
        if self._stopping or self._sock is None or self._error is not None or core is None:
            return None
        try:
            self._flush_nowait()
        except (LeveretError, OSError):
            return None
        now = monotonic()
        if now < next_duty:
            return next_duty
        with self._lock:
            take = not self._reading
            if take:
                self._reading = True
        if take:
            try:
                pending = self._pending
                if not pending:
                    self._read_ahead = 0
                if len(pending) < _READ_AHEAD_LIMIT and self._read_ahead < _READ_AHEAD_BYTES:
                    while (
                        len(pending) < _READ_AHEAD_LIMIT
                        and self._read_ahead < _READ_AHEAD_BYTES
                        and self._read_some(0)
                    ):
                        self._read_ahead += _RECV_SIZE
                else:
                    # The user is behind; the broker is alive if bytes are waiting.
                    if self._sock is not None and self._poll_in(0):
                        core.last_received = monotonic()
            except (LeveretError, OSError):
                return None
            finally:
                with self._lock:
                    self._reading = False
                    if self._waiters:
                        self._cond.notify_all()
        with self._lock:
            if core.state is ConnState.CLOSED:
                return None
            go_on, nxt = self._heartbeat_tick()
            if not go_on:
                return None
        try:
            self._flush_nowait()
        except (LeveretError, OSError):
            return None
        if self._wrest:
            return monotonic() + 0.01  # the socket was full: try again soon
        return monotonic() + (0.2 if nxt is None else min(nxt, 0.5))


def _io_main(ref: weakref.ReferenceType[Connection], kick: threading.Event) -> None:
    """The I/O thread of a :class:`Connection`: :meth:`Connection._io_duty` whenever
    kicked or due.  It holds the connection only while doing its duties, so that a
    connection its owner dropped without closing is collected (and its socket closed) like
    any other object, rather than kept alive by its own thread."""
    next_duty: float | None = 0.0
    while next_duty is not None:
        kick.wait(max(0.0, next_duty - monotonic()))
        kick.clear()
        conn = ref()
        if conn is None:
            return
        next_duty = conn._io_duty(next_duty)
        del conn


def _abandoned(sock: socket.socket, kick: threading.Event) -> None:
    """A connection was collected without being closed: drop its socket (no handshake is
    possible any more) and let its I/O thread end."""
    try:
        sock.close()
    except OSError:
        pass
    kick.set()


class Channel(ChannelBase, BlockingDriver):
    """An AMQP channel on a blocking :class:`Connection` (py-amqplib's method names).

    Every synchronous call sends its request and waits for the reply, at most ``timeout``
    seconds (default: the connection's ``rpc_timeout``).  When the broker closes the channel
    (e.g. ``queue.declare(passive=True)`` of a missing queue) the call raises the typed
    error for the reply code (``NotFound``, ``AccessRefused``, ``ResourceLocked``,
    ``PreconditionFailed``, ...): the channel is then closed, the connection stays usable.
    A call that times out leaves the channel usable: its late reply is dropped.
    """

    connection: Connection

    # What type checkers see of queue_declare, queue_purge and queue_delete (keep in step
    # with ChannelBase's; tests/test_typing.py checks the parameters): their results,
    # which are None only with nowait=True.
    if TYPE_CHECKING:

        @overload
        def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, nowait: Literal[False] = False,
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> QueueDeclareOk: ...
        @overload
        def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, *, nowait: Literal[True],
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> None: ...
        @overload
        def queue_declare(
            self, queue: str = "", passive: bool = False, durable: bool = False,
            exclusive: bool = False, auto_delete: bool = False, nowait: bool = False,
            arguments: dict[str, Any] | None = None, timeout: float | None = None,
        ) -> QueueDeclareOk | None: ...
        def queue_declare(self, *args: Any, **kwargs: Any) -> Any: ...

        @overload
        def queue_purge(
            self, queue: str = "", nowait: Literal[False] = False, timeout: float | None = None,
        ) -> int: ...
        @overload
        def queue_purge(
            self, queue: str = "", *, nowait: Literal[True], timeout: float | None = None,
        ) -> None: ...
        @overload
        def queue_purge(
            self, queue: str = "", nowait: bool = False, timeout: float | None = None,
        ) -> int | None: ...
        def queue_purge(self, *args: Any, **kwargs: Any) -> Any: ...

        @overload
        def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
            nowait: Literal[False] = False, timeout: float | None = None,
        ) -> int: ...
        @overload
        def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False, *,
            nowait: Literal[True], timeout: float | None = None,
        ) -> None: ...
        @overload
        def queue_delete(
            self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
            nowait: bool = False, timeout: float | None = None,
        ) -> int | None: ...
        def queue_delete(self, *args: Any, **kwargs: Any) -> Any: ...

    def _run(self, op: Op[R]) -> R:
        return self.connection._run(op)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._closed and self.connection.is_open:
            self.close()

    def basic_publish(self, msg: Message | bytes | str, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False) -> int | None:
        """``basic.publish`` + content header + body frames, written as one buffer.

        Returns the delivery tag in confirm mode (see :meth:`confirm_select`), else None.
        While the broker blocks the connection (``connection.blocked``) this waits up to the
        connection's ``blocked_timeout`` and then raises :class:`BlockedTimeout`.  The
        frames may be written after this returns (by the connection's I/O thread, with
        those that follow); the body may be reused all the same: a ``bytearray`` or
        ``memoryview`` body is copied when the call is made, a ``bytes`` one is sent as it is.
        """
        conn = self.connection
        now = monotonic()
        if now - conn._last_poll > 0.05:
            conn._last_poll = now
            conn._poll()  # notice connection.blocked even if nobody reads
        if self._core.blocked is not None:
            conn._run(self._unblocked())
        tag = self._publish_now(msg, exchange, routing_key, mandatory, immediate)
        conn._kick()
        return tag
