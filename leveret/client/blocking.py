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
* One thread at a time reads the socket.  A thread that waits for something (a reply, a
  confirm, a delivery) reads when nobody else does and otherwise sleeps on a condition the
  reader wakes.  So different channels may be used from different threads; one channel
  should be used by one thread at a time (its replies come in order).
* Consumer callbacks, return callbacks and cancel callbacks run only inside
  :meth:`Connection.drain_events` (and returns also in :meth:`Channel.wait_for_confirms`), in
  the thread that called it -- never inside another call.
* The I/O thread also does the heartbeat duties: it writes heartbeat frames, reads the
  socket when no other thread does (so a callback that runs for minutes does not make the
  broker look dead, and a ``connection.blocked`` is noticed), and declares the connection
  lost when the broker has been silent for two heartbeat intervals.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import select
import socket
import ssl
import threading
import weakref
from collections import deque
from time import monotonic
from typing import Any, Callable, Iterator, NamedTuple

from ..wire.errors import AMQPError, LeveretError, LocalProtocolError
from . import events as ev
from .core import DEFAULT_MAX_BODY_SIZE, ConnState, SansIOConnection
from .errors import (
    BlockedTimeout,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLost,
    MessageTooLargeError,
    PublishNacked,
)
from .message import Message
from .url import ConnectionParameters, parse_url

__all__ = ["Connection", "Channel", "QueueDeclareOk"]

log = logging.getLogger("leveret.client")

_RECV_SIZE = 262144
# Deliveries the heartbeat thread reads ahead while user code is busy before it stops
# reading (TCP then pushes back on the broker).
_READ_AHEAD_LIMIT = 20000
# Queued frames (of publishes, acks...) past which the caller writes them itself instead of
# leaving them to the I/O thread: this bounds memory when a publisher outruns the socket.
_FLUSH_ITEMS = 512
# Writes closer together than this (seconds) count as a burst, left to the I/O thread.
_BURST_GAP = 50e-6

# Connections with an I/O thread, so that bytes still queued at interpreter exit get written.
_live: weakref.WeakSet[Connection] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for conn in list(_live):
        try:
            conn._flush()
        except Exception:  # noqa: BLE001 - best effort while the interpreter exits
            pass


class QueueDeclareOk(NamedTuple):
    """What ``queue.declare-ok`` says."""

    queue: str
    message_count: int
    consumer_count: int


def _ssl_context(params: ConnectionParameters) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=params.cacertfile)
    if not params.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if params.certfile:
        ctx.load_cert_chain(params.certfile, params.keyfile)
    return ctx


class Connection:
    """A blocking AMQP connection.

    ``Connection("amqp://user:pass@host:5672/vhost?heartbeat=30")``; keyword arguments
    override the URL (``host``, ``port``, ``username``, ``password``, ``virtual_host``,
    ``heartbeat``, ``frame_max``, ``channel_max``, ``connection_timeout``,
    ``auth_mechanism``, ``ssl``, ``cacertfile``, ``certfile``, ``keyfile``, ``verify``,
    ``server_name_indication``, ``protocol``).  Further options: ``ssl_context`` (used as
    given), ``blocked_timeout`` (how long a publish waits while the broker blocks the
    connection), ``rpc_timeout`` (default deadline of every synchronous call),
    ``max_body_size`` (incoming), ``client_properties``, ``on_blocked(reason)`` and
    ``on_unblocked()`` callbacks.

    Nothing happens on the wire until :meth:`connect` (or ``with Connection(...)``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        blocked_timeout: float = 60.0,
        rpc_timeout: float = 60.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        client_properties: dict[str, Any] | None = None,
        on_blocked: Callable[[str], None] | None = None,
        on_unblocked: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        params = parse_url(url) if url else ConnectionParameters()
        for name, value in options.items():
            if name == "userid":
                name = "username"
            if not hasattr(params, name) or name.startswith("_"):
                raise TypeError(f"unknown connection option {name!r}")
            if value is not None:
                setattr(params, name, value)
        if params.ssl and "port" not in options and (url is None or ":" not in url.split("@")[-1].split("/")[0]):
            params.port = 5671 if params.port == 5672 else params.port
        self.params = params
        self.ssl_context = ssl_context
        self.blocked_timeout = blocked_timeout
        self.rpc_timeout = rpc_timeout
        self.max_body_size = max_body_size
        self.client_properties = client_properties
        self.on_blocked = on_blocked
        self.on_unblocked = on_unblocked

        self._core: SansIOConnection | None = None
        self._sock: socket.socket | None = None
        # Lock order: _wlock (socket writes) before _lock (core and routing state).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._wlock = threading.Lock()
        # Taken from the core, not yet written (under _wlock): bytes or a memoryview.
        self._wrest: Any = b""
        self._last_kick = 0.0
        self._corked = 0  # > 0: writes wait for the end of a corked() block
        self._kick_event = threading.Event()
        self._reading = False
        self._error: BaseException | None = None
        self._closed_error: AMQPError | None = None
        self._closed = False
        self._channels: dict[int, Channel] = {}
        self._pending: deque[tuple[Channel | None, Any]] = deque()
        self._conn_replies: deque[Any] = deque()
        self._io_thread: threading.Thread | None = None
        self._stopping = False
        self._last_poll = 0.0
        self._get_ok: Any = None
        self.server_properties: dict[str, Any] = {}

    # ------------------------------------------------------------------ info

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<leveret.client.Connection {self.params.url()} {state}>"

    @property
    def is_open(self) -> bool:
        core = self._core
        return core is not None and core.state is ConnState.OPEN and self._error is None

    connected = is_open

    @property
    def blocked(self) -> str | None:
        """The broker's reason while it blocks this connection (``connection.blocked``)."""
        return self._core.blocked if self._core else None

    @property
    def channel_max(self) -> int:
        return self._core.channel_max if self._core else 0

    @property
    def frame_max(self) -> int:
        return self._core.frame_max if self._core else 0

    @property
    def heartbeat(self) -> int:
        return self._core.heartbeat if self._core else 0

    @property
    def protocol(self) -> str:
        return self.params.protocol

    @property
    def core(self) -> SansIOConnection:
        """The sans-IO core (for libraries building on leveret)."""
        if self._core is None:
            raise ConnectionClosedError("not connected")
        return self._core

    # ------------------------------------------------------------------ connect / close

    def connect(self) -> Connection:
        """Open the TCP (and TLS) connection and run the AMQP handshake: protocol header,
        ``start``/``start-ok`` (SASL), ``tune``/``tune-ok``, ``open``/``open-ok``.

        Raises :class:`AuthenticationError` for refused credentials, the typed error for a
        refused vhost (e.g. ``NotAllowed``), ``TimeoutError`` past ``connection_timeout``,
        ``OSError`` when the broker cannot be reached.
        """
        if self.is_open:
            return self
        p = self.params
        deadline = monotonic() + p.connection_timeout
        sock = socket.create_connection((p.host, p.port), timeout=p.connection_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if p.ssl:
                ctx = self.ssl_context or _ssl_context(p)
                sock = ctx.wrap_socket(sock, server_hostname=p.server_name_indication or p.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._error = None
        self._closed = False
        self._closed_error = None
        self._channels.clear()
        self._pending.clear()
        self._conn_replies.clear()
        self._core = core = SansIOConnection(
            username=p.username,
            password=p.password,
            virtual_host=p.virtual_host,
            protocol=p.protocol,
            auth_mechanism=p.auth_mechanism,
            frame_max=p.frame_max,
            channel_max=p.channel_max,
            heartbeat=p.heartbeat,
            max_body_size=self.max_body_size,
            client_properties=self.client_properties,
        )
        self._get_ok = core.spec.Basic.GetOk
        try:
            self._flush()
            self._wait_for(lambda: core.state is not ConnState.AWAIT_START and core.state is not ConnState.AWAIT_TUNE and core.state is not ConnState.AWAIT_OPEN_OK, deadline, "the AMQP handshake")
            if self._closed_error is not None:
                raise self._closed_error
        except BaseException:
            self._teardown()
            raise
        self.server_properties = core.server_properties
        # From now on reads wait in select(); the socket timeout bounds writes only.
        sock.settimeout(max(self.blocked_timeout, 1.0) + 30.0)
        self._stopping = False
        self._kick_event.clear()
        self._io_thread = threading.Thread(target=self._io_loop, name="leveret-io", daemon=True)
        self._io_thread.start()
        _live.add(self)
        return self

    def __enter__(self) -> Connection:
        return self.connect()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown", timeout: float | None = None) -> None:
        """Send ``connection.close``, wait for ``close-ok`` (at most ``timeout``, default
        ``rpc_timeout``) and close the socket.  Safe to call more than once, and on a
        connection that is already dead (then it only releases the socket)."""
        core = self._core
        if core is None or self._sock is None:
            return
        try:
            if self._error is None and core.state is ConnState.OPEN:
                with self._lock:
                    core.close(reply_code, reply_text)
                self._flush()
                deadline = monotonic() + (self.rpc_timeout if timeout is None else timeout)
                self._wait_for(lambda: core.state is ConnState.CLOSED, deadline, "connection.close-ok")
        except (LeveretError, OSError):
            pass
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._stopping = True
        self._kick_event.set()
        _live.discard(self)
        sock, self._sock = self._sock, None
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        t = self._io_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
        self._io_thread = None

    # ------------------------------------------------------------------ channels

    def channel(self, channel_id: int | None = None) -> Channel:
        """Open a channel (``channel.open``/``open-ok``); the lowest free id unless given."""
        self._check_open()
        core = self._core
        assert core is not None
        with self._lock:
            cid = core.open_channel(channel_id)
            ch = Channel(self, cid)
            self._channels[cid] = ch
        self._flush()
        self._wait_for(lambda: ch._open or ch._closed, monotonic() + self.rpc_timeout, "channel.open-ok")
        if ch._closed:
            ch._raise_closed()
        return ch

    # ------------------------------------------------------------------ events

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait for deliveries, returns, cancels or blocked notices and run their callbacks.

        Returns after running at least one callback.  Raises ``TimeoutError`` (the same class
        as ``socket.timeout``) when nothing arrived within ``timeout`` seconds (``None``
        waits for ever), the connection's error when it is lost or closed by the broker, and
        :class:`MessageTooLargeError` for a delivery over ``max_body_size``.
        """
        if self._run_pending():
            return
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            self._wait_for(self._has_pending, deadline, "events")
            if self._run_pending():
                return

    def _has_pending(self) -> bool:
        if self._pending:
            return True
        for ch in self._channels.values():
            if ch._returns:
                return True
        return False

    def _run_pending(self) -> bool:
        """Run the callbacks of what was received, corked (the acks they send leave
        together); True if any ran (or an event that has no callback to run was handed
        over, such as a consumer cancelled by the broker)."""
        if not self._pending and not self._has_returns():
            return False
        with self.corked():
            return self._run_pending_corked()

    def _has_returns(self) -> bool:
        for ch in self._channels.values():
            if ch._returns:
                return True
        return False

    def _run_pending_corked(self) -> bool:
        ran = False
        pending = self._pending
        while pending:
            ch, item = pending.popleft()
            kind = type(item)
            if kind is ev.MessageReceived:
                assert ch is not None
                tag = item.method.consumer_tag
                cb = ch._consumers.get(tag)
                if cb is None:
                    cb = ch._straggler_callback(tag, item.method.delivery_tag)
                if cb is not None:
                    ran = True
                    cb(Message._received(ch, item.method, item.properties, item.body))
            elif kind is ev.ConsumerCancelled:
                assert ch is not None
                ran = True
                cancel_cb = ch._cancel_callbacks.get(item.consumer_tag)
                ch._forget_consumer(item.consumer_tag)
                if cancel_cb is not None:
                    cancel_cb(item.consumer_tag)
            elif kind is ev.ConnectionBlocked:
                if self.on_blocked is not None:
                    ran = True
                    self.on_blocked(item.reason)
            elif kind is ev.ConnectionUnblocked:
                if self.on_unblocked is not None:
                    ran = True
                    self.on_unblocked()
            elif kind is ev.MessageTooLarge:
                assert ch is not None
                raise MessageTooLargeError(
                    f"a message of {item.body_size} bytes on channel {ch.channel_id} is larger "
                    f"than max_body_size={self.max_body_size}; it was discarded unread",
                    ch.channel_id,
                    getattr(item.method, "delivery_tag", None),
                    item.body_size,
                )
        for ch in list(self._channels.values()):
            if ch._returns:
                ch._run_returns()
                ran = True
        return ran

    def _dispatch(self, events: list[ev.Event]) -> None:
        """Route the core's events (called with the lock held)."""
        channels = self._channels
        for event in events:
            kind = type(event)
            if kind is ev.MessageReceived:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is None:
                    continue
                if type(event.method) is self._get_ok:  # type: ignore[attr-defined]
                    ch._replies.append(event)
                else:
                    self._pending.append((ch, event))
            elif kind is ev.MethodReceived:
                cid = event.channel_id  # type: ignore[attr-defined]
                if cid == 0:
                    self._conn_replies.append(event.method)  # type: ignore[attr-defined]
                else:
                    ch = channels.get(cid)
                    if ch is not None:
                        ch._replies.append(event.method)  # type: ignore[attr-defined]
            elif kind is ev.PublishConfirmed:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._on_confirm(event)  # type: ignore[arg-type]
            elif kind is ev.MessageReturned:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._returns.append(event)  # type: ignore[arg-type]
            elif kind is ev.ChannelOpened:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._open = True
            elif kind is ev.ChannelClosed:
                ch = channels.pop(event.channel_id, None)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._on_closed(event.error, event.unconfirmed)  # type: ignore[attr-defined]
            elif kind is ev.ConnectionClosed:
                self._closed_error = event.error  # type: ignore[attr-defined]
                unconfirmed = event.unconfirmed  # type: ignore[attr-defined]
                for ch in channels.values():
                    ch._on_closed(event.error, unconfirmed.get(ch.channel_id, ()))  # type: ignore[attr-defined]
                channels.clear()
            elif kind is ev.FlowChanged:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch.flow_active = event.active  # type: ignore[attr-defined]
            elif kind is ev.MessageTooLarge and event.method.NAME.endswith("get-ok"):  # type: ignore[attr-defined]
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._replies.append(event)  # basic_get raises it
            elif kind is ev.ConsumerCancelled or kind is ev.MessageTooLarge:
                self._pending.append((channels.get(event.channel_id), event))  # type: ignore[attr-defined]
            elif kind is ev.ConnectionBlocked or kind is ev.ConnectionUnblocked:
                self._pending.append((None, event))
            # ConnectionOpened: the handshake waiter looks at core.state

    # ------------------------------------------------------------------ I/O

    def _flush(self) -> None:
        """Write everything the core queued, now.  Never call it holding ``_lock``."""
        core = self._core
        if core is None or not (core.wants_write or self._wrest):
            return
        with self._wlock:
            with self._lock:
                bufs = core.buffers_to_send(monotonic())
            if self._wrest:  # what the I/O thread could not write yet goes first
                bufs = [self._wrest, *bufs]
                self._wrest = b""
            if bufs:
                self._write(bufs)

    def _flush_nowait(self) -> None:
        """The I/O thread's write: never waits for the write lock or for a full socket.

        What the socket cannot take now stays in ``_wrest`` (written first next time), so
        the I/O thread always gets back to its heartbeat duties -- a peer that stops
        reading is then found out by the missed heartbeats, not by a write timeout.
        """
        core = self._core
        sock = self._sock
        if core is None or sock is None or not (core.wants_write or self._wrest):
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
            view = memoryview(data).cast("B")
            try:
                while view:
                    if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                        if not select.select([], [sock], [], 0)[1]:
                            break
                    sent = sock.send(view)
                    view = view[sent:]
            except ssl.SSLWantWriteError:
                pass
            except OSError as exc:
                with self._lock:
                    err = core.connection_lost(f"writing to the socket failed: {exc}")
                self._fail(err)
                raise err from exc
            finally:
                if view:
                    # Keep the unsent tail as a view: copying it at every partial write
                    # would cost O(n^2) for a big body on a slow socket.
                    self._wrest = view
        finally:
            self._wlock.release()

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """``with conn.corked(): ...``: publishes and acks inside the block are not written
        one by one; they leave together (in as few writes as the socket allows) when the
        block ends -- or earlier when a few hundred frames pile up, or when a call inside
        the block has to wait for the broker.  Consumer callbacks run corked.  If that final
        write fails, the connection keeps the error and the next call raises it."""
        with self._lock:
            self._corked += 1
        try:
            yield
        finally:
            with self._lock:
                self._corked -= 1
            if not self._corked:
                try:
                    self._flush()
                except (LeveretError, OSError):
                    # Like any queued write that fails: the connection now holds the error
                    # and the next call (a wait for confirms, a publish...) raises it.
                    pass

    def _kick(self) -> None:
        """Have what is queued written soon.

        A lone write (the previous one was more than ``_BURST_GAP`` ago) is written now by
        the calling thread: handing it to another thread would cost a thread switch on the
        round trip.  Inside a burst of publishes or acks, the I/O thread writes -- it runs
        as soon as this thread blocks or the interpreter switches threads -- so the burst
        leaves in a few large writes.  Past ``_FLUSH_ITEMS`` queued frames the caller
        writes them itself (bounded memory)."""
        now = monotonic()
        last, self._last_kick = self._last_kick, now
        core = self._core
        if (now - last > _BURST_GAP and not self._corked) or (
            core is not None and len(core._out) > _FLUSH_ITEMS
        ):
            self._flush()
        elif not self._kick_event.is_set():  # set() costs a lock round trip; once is enough
            self._kick_event.set()

    def _write(self, bufs: list[Any]) -> None:
        """sendall() the buffers (``_wlock`` held)."""
        sock = self._sock
        if sock is None:
            raise self._dead_error()
        try:
            if len(bufs) == 1:
                sock.sendall(bufs[0])
            elif len(bufs) <= 64 or isinstance(sock, ssl.SSLSocket) or all(type(b) is bytes for b in bufs):
                sock.sendall(b"".join(bufs))
            else:
                self._sendmsg_all(sock, bufs)
        except OSError as exc:
            core = self._core
            assert core is not None
            with self._lock:
                err = core.connection_lost(f"writing to the socket failed: {exc}")
            self._fail(err)
            raise err from exc

    @staticmethod
    def _sendmsg_all(sock: socket.socket, bufs: list[Any]) -> None:
        # Big bodies: scatter/gather straight from the caller's buffer (no copy).
        views = [memoryview(b).cast("B") for b in bufs]
        while views:
            sent = sock.sendmsg(views[:512])
            while sent:
                first = views[0]
                if sent >= len(first):
                    sent -= len(first)
                    views.pop(0)
                else:
                    views[0] = first[sent:]
                    sent = 0

    def _read_some(self, timeout: float | None) -> bool:
        """Read once (the caller holds the reading role, not the lock)."""
        sock = self._sock
        core = self._core
        if sock is None or core is None:
            raise self._dead_error()
        try:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                if timeout is not None and timeout < 0:
                    timeout = 0
                readable, _, _ = select.select([sock], [], [], timeout)
                if not readable:
                    return False
            data = sock.recv(_RECV_SIZE)
        except ssl.SSLWantReadError:
            return False
        except (OSError, ValueError) as exc:
            if self._error is not None:
                raise self._error from None
            err = core.connection_lost(f"reading from the socket failed: {exc}")
            self._fail(err)
            raise err from exc
        with self._cond:
            try:
                events = core.receive_data(data, monotonic())
            except LeveretError as exc:
                self._fail(exc)
                raise
            self._dispatch(events)
            self._cond.notify_all()
        if not data:
            self._teardown()
            return True
        if core.wants_write:  # replies the core owes (close-ok, flow-ok, cancel-ok)
            try:
                self._flush()
            except LeveretError:
                pass
        if core.state is ConnState.CLOSED:
            # The handshake is over (RabbitMQ resets the socket right after its close):
            # later calls report why it closed, not what the dead socket says.
            self._teardown()
        return True

    def _fail(self, exc: BaseException) -> None:
        """The connection is unusable: send what the core owes (a connection.close), drop the
        socket, wake every waiter with ``exc``."""
        with self._cond:
            if self._error is None:
                self._error = exc
            core, sock = self._core, self._sock
            # Send what the core owes (a connection.close) unless another thread is in the
            # middle of a write: then the socket is as good as gone anyway.
            if core is not None and sock is not None and core.wants_write and self._wlock.acquire(blocking=False):
                try:
                    sock.settimeout(1.0)
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

    def _dead_error(self) -> BaseException:
        if self._error is not None:
            return self._error
        if self._closed_error is not None:
            return self._closed_error
        return ConnectionClosedError("the connection is closed")

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed_error is not None:
            raise self._closed_error
        if not self.is_open:
            raise ConnectionClosedError("the connection is not open (call connect())")

    def _wait_for(self, predicate: Callable[[], Any], deadline: float | None, what: str) -> None:
        """Block until ``predicate()`` is true, reading the socket when no other thread does.

        Raises ``TimeoutError`` past ``deadline`` and the connection's error when it dies.
        """
        cond = self._cond
        core = self._core
        if core is not None and core.wants_write:
            self._flush()  # what we wait for may depend on what is still queued
        while True:
            with cond:
                if predicate():
                    return
                if self._error is not None:
                    raise self._error
                core = self._core
                if self._closed or core is None or core.state is ConnState.CLOSED:
                    raise self._dead_error()
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                if self._reading:
                    cond.wait(0.5 if remaining is None else min(remaining, 0.5))
                    continue
                self._reading = True
            try:
                self._read_some(remaining)
            finally:
                with cond:
                    self._reading = False
                    cond.notify_all()

    def _poll(self) -> None:
        """Read whatever is already waiting, without blocking, if nobody else reads."""
        with self._cond:
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
            with self._cond:
                self._reading = False
                self._cond.notify_all()

    def _io_loop(self) -> None:
        """The I/O thread: writes what other threads queued (see :meth:`_kick`), and every
        few hundred milliseconds does the heartbeat duties -- reads when no other thread
        does, queues heartbeats, declares the connection lost after two silent intervals."""
        core = self._core
        kick = self._kick_event
        assert core is not None
        next_duty = 0.0
        while True:
            now = monotonic()
            kick.wait(max(0.0, next_duty - now))
            kick.clear()
            if self._stopping or self._sock is None or self._error is not None:
                return
            try:
                self._flush_nowait()
            except (LeveretError, OSError):
                return
            now = monotonic()
            if now < next_duty:
                continue
            with self._cond:
                take = not self._reading
                if take:
                    self._reading = True
            if take:
                try:
                    if len(self._pending) < _READ_AHEAD_LIMIT:
                        while self._read_some(0):
                            pass
                    else:
                        # The user is behind; the broker is alive if bytes are waiting.
                        sock = self._sock
                        if sock is not None and select.select([sock], [], [], 0)[0]:
                            core.last_received = monotonic()
                except (LeveretError, OSError):
                    return
                finally:
                    with self._cond:
                        self._reading = False
                        self._cond.notify_all()
            with self._cond:
                if core.state is ConnState.CLOSED:
                    return
                try:
                    nxt = core.tick(monotonic())
                except ConnectionLost as exc:
                    log.warning("leveret: %s", exc)
                    self._fail(exc)
                    return
                except LeveretError:
                    return
            try:
                self._flush_nowait()
            except (LeveretError, OSError):
                return
            if self._wrest:
                next_duty = monotonic() + 0.01  # the socket was full: try again soon
                continue
            next_duty = monotonic() + (0.2 if nxt is None else min(nxt, 0.5))

    # ------------------------------------------------------------------ misc

    def update_secret(self, new_secret: str | bytes, reason: str = "", timeout: float | None = None) -> None:
        """``connection.update-secret`` (RabbitMQ, 0-9-1): hand the broker a new secret
        (e.g. a refreshed OAuth 2 token) and wait for ``update-secret-ok``."""
        self._check_open()
        core = self._core
        assert core is not None
        with self._lock:
            core.update_secret(new_secret, reason)
        self._flush()
        deadline = monotonic() + (self.rpc_timeout if timeout is None else timeout)
        self._wait_for(lambda: bool(self._conn_replies), deadline, "connection.update-secret-ok")
        self._conn_replies.popleft()


class Channel:
    """An AMQP channel on a blocking :class:`Connection` (py-amqplib's method names).

    Every synchronous call sends its request and waits for the reply, at most ``timeout``
    seconds (default: the connection's ``rpc_timeout``).  When the broker closes the channel
    (e.g. ``queue.declare(passive=True)`` of a missing queue) the call raises the typed
    error for the reply code (``NotFound``, ``AccessRefused``, ``ResourceLocked``,
    ``PreconditionFailed``, ...): the channel is then closed, the connection stays usable.
    """

    def __init__(self, connection: Connection, channel_id: int) -> None:
        self.connection = connection
        self.channel_id = channel_id
        self._core = connection._core
        spec = connection._core.spec  # type: ignore[union-attr]
        self._spec = spec
        self._publish_cls = spec.Basic.Publish
        self._props_cls = spec.Basic.Properties
        self._ack_cls = spec.Basic.Ack
        self._ticket_field = "ticket" in spec.Basic.Publish.FIELDS
        self._open = False
        self._closed = False
        self._error: AMQPError | None = None
        self._error_reported = False
        self._lost_tags: list[int] = []  # unconfirmed when the channel closed
        self._replies: deque[Any] = deque()
        self._returns: deque[ev.MessageReturned] = deque()
        self._consumers: dict[str, Callable[[Message], Any] | None] = {}
        self._cancel_callbacks: dict[str, Callable[[str], Any]] = {}
        self._no_ack_tags: set[str] = set()
        # Callbacks of cancelled no_ack consumers, for deliveries that were already on their
        # way (they cannot be requeued).
        self._cancelled_no_ack: dict[str, Callable[[Message], Any] | None] = {}
        self._nacked: list[int] = []
        self._waited_tags: dict[int, bool | None] = {}
        self.flow_active = True
        #: Called with each returned :class:`Message` (``basic.return``); when None, returned
        #: messages are kept in :attr:`returned`.
        self.on_return: Callable[[Message], Any] | None = None
        self.returned: list[Message] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<leveret.client.Channel {self.channel_id} {state}>"

    @property
    def is_open(self) -> bool:
        """True while the channel and its connection are usable."""
        return self._open and not self._closed and self.connection.is_open

    @property
    def unconfirmed(self) -> list[int]:
        """Delivery tags of publishes (in confirm mode) whose fate is not known: not yet
        confirmed while the channel is open; never confirmed when it closed or its
        connection was lost (they may or may not have reached the queues)."""
        conn = self.connection
        core = self._core
        if self._closed:
            return list(self._lost_tags)
        if conn._error is not None and isinstance(conn._error, ConnectionLost):
            return list(conn._error.unconfirmed.get(self.channel_id, ()))
        if core is None:
            return []
        return list(core.unconfirmed().get(self.channel_id, ()))

    @property
    def nacked(self) -> list[int]:
        """Delivery tags the broker nacked and :meth:`wait_for_confirms` has not yet raised
        for."""
        return list(self._nacked)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._closed and self.connection.is_open:
            self.close()

    # ------------------------------------------------------------------ plumbing

    def _on_closed(self, error: AMQPError | None, unconfirmed: Any = ()) -> None:
        self._closed = True
        self._error = error
        self._lost_tags = list(unconfirmed)

    def _raise_closed(self) -> None:
        """Raise why the channel is closed: when the whole connection closed or was lost,
        that error, every time; when only the channel closed, the broker's typed error
        (``NotFound``...) the first time, then :class:`ChannelClosedError` with that error
        as its cause."""
        conn = self.connection
        if conn._error is not None:
            raise conn._error
        if conn._closed_error is not None:
            raise conn._closed_error
        error = self._error
        if error is not None:
            if not self._error_reported:
                self._error_reported = True
                raise error
            raise ChannelClosedError(
                f"channel {self.channel_id} was closed by the broker: {error}"
            ) from error
        conn = self.connection
        if conn._error is not None:
            raise conn._error
        if conn._closed_error is not None:
            raise conn._closed_error
        raise ChannelClosedError(f"channel {self.channel_id} is closed")

    def _method(self, name: str, fields: dict[str, Any]) -> Any:
        core = self._core
        assert core is not None
        if self._ticket_field and name.split(".")[0] in ("exchange", "queue", "basic"):
            cls = core._by_name.get(name)
            if cls is not None and "ticket" in cls.FIELDS:
                fields.setdefault("ticket", core.ticket(self.channel_id))
        return core.method(name, **fields)

    def _send(self, method: Any, now: bool = True) -> None:
        """Queue a method; write it at once (``now``) or leave it to the I/O thread."""
        conn = self.connection
        if self._closed:
            self._raise_closed()
        with conn._lock:
            if self._closed:
                self._raise_closed()
            conn._core.send_method(self.channel_id, method)  # type: ignore[union-attr]
        if now:
            conn._flush()
        else:
            conn._kick()

    def _rpc(self, name: str, timeout: float | None = None, **fields: Any) -> Any:
        method = self._method(name, fields)
        self._send(method)
        if not method.SYNCHRONOUS or not method.RESPONSES or fields.get("nowait") or fields.get("no_wait") or getattr(method, "nowait", False) or getattr(method, "no_wait", False):
            return None
        conn = self.connection
        deadline = monotonic() + (conn.rpc_timeout if timeout is None else timeout)
        try:
            conn._wait_for(lambda: self._replies or self._closed, deadline, name + " reply")
        except TimeoutError:
            # The reply may still come and would then answer the wrong request: this channel
            # cannot be trusted any more.
            try:
                self.close(timeout=1.0)
            except (LeveretError, OSError, TimeoutError):
                pass
            raise
        if self._replies:
            return self._replies.popleft()
        self._raise_closed()

    def close(self, reply_code: int = 200, reply_text: str = "", timeout: float | None = None) -> None:
        """``channel.close`` / ``close-ok``.  Closing a closed channel does nothing."""
        conn = self.connection
        if self._closed or conn._core is None:
            self._closed = True
            return
        try:
            with conn._lock:
                if self._closed:
                    return
                conn._core.close_channel(self.channel_id, reply_code, reply_text)
            conn._flush()
            deadline = monotonic() + (conn.rpc_timeout if timeout is None else timeout)
            conn._wait_for(lambda: self._closed, deadline, "channel.close-ok")
        except (ChannelClosedError, ConnectionClosedError):
            self._closed = True

    # ------------------------------------------------------------------ exchange

    def exchange_declare(
        self,
        exchange: str,
        type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        """``exchange.declare``; waits for ``declare-ok`` unless ``nowait``."""
        self._rpc(
            "exchange.declare", timeout, exchange=exchange, type=type, passive=passive,
            durable=durable, auto_delete=auto_delete, internal=internal, no_wait=nowait,
            arguments=arguments,
        )

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False, timeout: float | None = None) -> None:
        """``exchange.delete``."""
        self._rpc("exchange.delete", timeout, exchange=exchange, if_unused=if_unused, no_wait=nowait)

    def exchange_bind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.bind`` (RabbitMQ's exchange-to-exchange binding; 0-9-1)."""
        self._rpc(
            "exchange.bind", timeout, destination=destination, source=source,
            routing_key=routing_key, no_wait=nowait, arguments=arguments,
        )

    def exchange_unbind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.unbind`` (0-9-1)."""
        self._rpc(
            "exchange.unbind", timeout, destination=destination, source=source,
            routing_key=routing_key, no_wait=nowait, arguments=arguments,
        )

    # ------------------------------------------------------------------ queue

    def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> QueueDeclareOk | None:
        """``queue.declare``; returns ``(queue, message_count, consumer_count)`` (the name
        is the server's choice when ``queue`` is empty), or None with ``nowait``."""
        ok = self._rpc(
            "queue.declare", timeout, queue=queue, passive=passive, durable=durable,
            exclusive=exclusive, auto_delete=auto_delete, no_wait=nowait, arguments=arguments,
        )
        if ok is None:
            return None
        return QueueDeclareOk(ok.queue, ok.message_count, ok.consumer_count)

    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.bind``."""
        self._rpc(
            "queue.bind", timeout, queue=queue, exchange=exchange, routing_key=routing_key,
            no_wait=nowait, arguments=arguments,
        )

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "",
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.unbind`` (0-9-1; always synchronous)."""
        self._rpc(
            "queue.unbind", timeout, queue=queue, exchange=exchange, routing_key=routing_key,
            arguments=arguments,
        )

    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None:
        """``queue.purge``; returns the number of messages removed."""
        ok = self._rpc("queue.purge", timeout, queue=queue, no_wait=nowait)
        return None if ok is None else ok.message_count

    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> int | None:
        """``queue.delete``; returns the number of messages deleted with it."""
        ok = self._rpc(
            "queue.delete", timeout, queue=queue, if_unused=if_unused, if_empty=if_empty,
            no_wait=nowait,
        )
        return None if ok is None else ok.message_count

    # ------------------------------------------------------------------ basic

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
        timeout: float | None = None, **kwargs: Any,
    ) -> None:
        """``basic.qos``: limit unacknowledged deliveries (``global`` may be passed as
        ``a_global`` or ``global_``)."""
        self._rpc(
            "basic.qos", timeout, prefetch_size=prefetch_size, prefetch_count=prefetch_count,
            global_=kwargs.pop("global_", a_global), **kwargs,
        )

    def basic_publish(
        self,
        msg: Message | bytes | str,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
        _wait_tag: bool = False,
    ) -> int | None:
        """``basic.publish`` + content header + body frames, written as one buffer.

        Returns the delivery tag in confirm mode (see :meth:`confirm_select`), else None.
        While the broker blocks the connection (``connection.blocked``) this waits up to the
        connection's ``blocked_timeout`` and then raises :class:`BlockedTimeout`.
        """
        conn = self.connection
        core = self._core
        if type(msg) is bytes:
            body: Any = msg
            props = None  # no properties: the header's flags word is simply 0
        else:
            if not isinstance(msg, Message):
                msg = Message(msg)
            body = msg.body
            props = self._props_cls(**msg.properties) if msg.properties else None
        if self._ticket_field:
            method = self._publish_cls(
                ticket=core.ticket(self.channel_id), exchange=exchange,  # type: ignore[union-attr]
                routing_key=routing_key, mandatory=mandatory, immediate=immediate,
            )
        else:
            method = self._publish_cls(
                exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
            )
        now = monotonic()
        if now - conn._last_poll > 0.05:
            conn._last_poll = now
            conn._poll()  # notice connection.blocked even if nobody reads
        if core.blocked is not None:  # type: ignore[union-attr]
            try:
                conn._wait_for(lambda: core.blocked is None, now + conn.blocked_timeout, "connection.unblocked")  # type: ignore[union-attr]
            except TimeoutError:
                raise BlockedTimeout(
                    f"the broker has blocked this connection ({core.blocked}) for more than "  # type: ignore[union-attr]
                    f"blocked_timeout={conn.blocked_timeout} s"
                ) from None
        with conn._lock:
            if self._closed:
                self._raise_closed()
            tag = core.publish(self.channel_id, method, props, body)  # type: ignore[union-attr]
            if _wait_tag and tag is not None:
                self._waited_tags[tag] = None
        conn._kick()
        return tag

    def basic_get(self, queue: str = "", no_ack: bool = False, timeout: float | None = None) -> Message | None:
        """``basic.get``: one message, or None when the queue is empty (``get-empty``)."""
        reply = self._rpc("basic.get", timeout, queue=queue, no_ack=no_ack)
        if type(reply) is ev.MessageReceived:
            return Message._received(self, reply.method, reply.properties, reply.body)
        if type(reply) is ev.MessageTooLarge:
            raise MessageTooLargeError(
                f"the message basic.get fetched ({reply.body_size} bytes) is larger than "
                f"max_body_size={self.connection.max_body_size}; it was discarded unread",
                self.channel_id,
                reply.method.delivery_tag,
                reply.body_size,
            )
        return None

    def basic_consume(
        self,
        queue: str = "",
        consumer_tag: str = "",
        no_local: bool = False,
        no_ack: bool = False,
        exclusive: bool = False,
        nowait: bool = False,
        callback: Callable[[Message], Any] | None = None,
        arguments: dict[str, Any] | None = None,
        on_cancel: Callable[[str], Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """``basic.consume``; returns the consumer tag (the broker's when none is given).

        ``callback(message)`` runs inside :meth:`Connection.drain_events` for each
        delivery; ``on_cancel(consumer_tag)`` when the broker cancels the consumer (its queue
        was deleted, ...).
        """
        if nowait and not consumer_tag:
            raise LocalProtocolError("basic.consume with nowait needs a consumer_tag")
        fields: dict[str, Any] = dict(
            queue=queue, consumer_tag=consumer_tag, no_local=no_local, no_ack=no_ack,
            exclusive=exclusive, no_wait=nowait,
        )
        if "arguments" in (self._core._by_name["basic.consume"].FIELDS):  # type: ignore[union-attr]
            fields["arguments"] = arguments
        elif arguments:
            raise LocalProtocolError(f"basic.consume takes no arguments in AMQP {self.connection.protocol}")
        # Register first so deliveries that race the reply find their callback.
        if consumer_tag:
            self._consumers[consumer_tag] = callback
            if on_cancel is not None:
                self._cancel_callbacks[consumer_tag] = on_cancel
        ok = self._rpc("basic.consume", timeout, **fields)
        tag = consumer_tag if ok is None else ok.consumer_tag
        self._consumers[tag] = callback
        if no_ack:
            self._no_ack_tags.add(tag)
        if on_cancel is not None:
            self._cancel_callbacks[tag] = on_cancel
        return str(tag)

    def basic_cancel(self, consumer_tag: str, nowait: bool = False, timeout: float | None = None) -> None:
        """``basic.cancel``: stop a consumer.

        Deliveries that arrived before the cancel but were not yet run by
        :meth:`Connection.drain_events` are given back to the queue (``basic.reject`` with
        requeue) -- except for a ``no_ack`` consumer, whose messages cannot go back: its
        callback still runs for them.
        """
        self._rpc("basic.cancel", timeout, consumer_tag=consumer_tag, no_wait=nowait)
        self._forget_consumer(consumer_tag)

    def _forget_consumer(self, consumer_tag: str) -> None:
        callback = self._consumers.pop(consumer_tag, None)
        self._cancel_callbacks.pop(consumer_tag, None)
        if consumer_tag in self._no_ack_tags:
            self._no_ack_tags.discard(consumer_tag)
            if callback is not None:
                self._cancelled_no_ack[consumer_tag] = callback

    def _straggler_callback(self, consumer_tag: str, delivery_tag: int) -> Callable[[Message], Any] | None:
        """A delivery for a consumer that is gone: the callback to run it with, or None
        after handing it back to the broker."""
        callback = self._cancelled_no_ack.get(consumer_tag)
        if callback is not None:
            return callback
        if not self._closed:
            try:
                self.basic_reject(delivery_tag, requeue=True)
            except LeveretError:
                pass  # the channel is going away; the broker requeues it then
        return None

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """``basic.ack`` (no reply)."""
        self._send(self._ack_cls(delivery_tag=delivery_tag, multiple=multiple), now=False)

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """``basic.nack`` (RabbitMQ extension in 0-9-1; no reply)."""
        self._send(
            self._method("basic.nack", dict(delivery_tag=delivery_tag, multiple=multiple, requeue=requeue)),
            now=False,
        )

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        """``basic.reject`` (no reply)."""
        self._send(self._method("basic.reject", dict(delivery_tag=delivery_tag, requeue=requeue)), now=False)

    def basic_recover(self, requeue: bool = False, timeout: float | None = None) -> None:
        """``basic.recover``: redeliver unacknowledged messages (waits for ``recover-ok``
        in 0-9-1; 0-8's recover has no reply)."""
        self._rpc("basic.recover", timeout, requeue=requeue)

    def basic_recover_async(self, requeue: bool = False) -> None:
        """``basic.recover-async`` (0-9-1, deprecated by the spec; no reply)."""
        self._send(self._method("basic.recover-async", dict(requeue=requeue)))

    # ------------------------------------------------------------------ confirms

    def confirm_select(self, nowait: bool = False, timeout: float | None = None) -> None:
        """``confirm.select``: from now on the broker acks or nacks every publish;
        :meth:`basic_publish` returns delivery tags (RabbitMQ extension; 0-9-1)."""
        self._rpc("confirm.select", timeout, nowait=nowait)

    def _on_confirm(self, event: ev.PublishConfirmed) -> None:
        if not event.ack:
            self._nacked.extend(event.delivery_tags)
        waited = self._waited_tags
        if waited:
            for tag in event.delivery_tags:
                if tag in waited:
                    waited[tag] = event.ack

    def _run_returns(self) -> None:
        while self._returns:
            item = self._returns.popleft()
            msg = Message._received(self, item.method, item.properties, item.body)
            msg.delivery_info["publish_tag"] = item.delivery_tag
            if self.on_return is not None:
                self.on_return(msg)
            else:
                self.returned.append(msg)

    def wait_for_confirms(self, timeout: float | None = None) -> bool:
        """Wait until the broker has confirmed every publish of this channel.

        Runs the return callbacks of returned publishes first.  Returns True when all were
        acked; raises :class:`PublishNacked` listing the nacked tags (then forgets them),
        ``TimeoutError`` past ``timeout`` (default ``rpc_timeout``), and
        :class:`ConnectionLost` -- whose ``unconfirmed`` names the publishes of unknown
        fate -- when the connection dies first.
        """
        conn = self.connection
        core = self._core
        assert core is not None
        deadline = monotonic() + (conn.rpc_timeout if timeout is None else timeout)
        cid = self.channel_id
        conn._wait_for(lambda: core.unconfirmed_count(cid) == 0 or self._closed, deadline, "publisher confirms")
        if self._returns:
            self._run_returns()
        if self._closed and (self._lost_tags or core.unconfirmed_count(cid)):
            self._raise_closed()
        if self._nacked:
            tags, self._nacked = self._nacked, []
            raise PublishNacked(f"the broker nacked {len(tags)} publish(es): {tags[:10]}", tags)
        return True

    def publish_confirmed(
        self,
        msg: Message | bytes | str,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Publish and wait for this one publish's confirm (confirm mode must be on).

        Returns True when the broker acked it and did not return it; False when it was
        returned as unroutable (``mandatory``); raises :class:`PublishNacked` on a nack.
        """
        if self._closed:
            self._raise_closed()
        if not self._core.is_confirm_mode(self.channel_id):  # type: ignore[union-attr]
            raise LocalProtocolError("publish_confirmed needs confirm mode (confirm_select())")
        # The tag is registered (under the lock, in basic_publish) before the publish can
        # be written, so its confirm cannot arrive unnoticed.
        tag = self.basic_publish(msg, exchange, routing_key, mandatory, _wait_tag=True)
        assert tag is not None
        conn = self.connection
        waited = self._waited_tags
        try:
            deadline = monotonic() + (conn.rpc_timeout if timeout is None else timeout)
            conn._wait_for(lambda: waited[tag] is not None or self._closed, deadline, "the publish's confirm")
            ack = waited[tag]
        finally:
            waited.pop(tag, None)
        if ack is None:
            self._raise_closed()
        returned = False
        if self._returns:
            returned = any(r.delivery_tag == tag for r in self._returns)
            self._run_returns()
        if not ack:
            if tag in self._nacked:
                self._nacked.remove(tag)
            raise PublishNacked(f"the broker nacked publish {tag}", [tag])
        return not returned

    # ------------------------------------------------------------------ tx, flow, access

    def tx_select(self, timeout: float | None = None) -> None:
        """``tx.select``: the channel becomes transactional."""
        self._rpc("tx.select", timeout)

    def tx_commit(self, timeout: float | None = None) -> None:
        """``tx.commit``: publishes and acks since the last commit take effect."""
        self._rpc("tx.commit", timeout)

    def tx_rollback(self, timeout: float | None = None) -> None:
        """``tx.rollback``: publishes and acks since the last commit are discarded."""
        self._rpc("tx.rollback", timeout)

    def flow(self, active: bool, timeout: float | None = None) -> bool:
        """``channel.flow`` from the client: ask the broker to pause (False) or resume (True)
        deliveries.  Returns what ``flow-ok`` says.  (RabbitMQ refuses ``active=False`` with
        540 not-implemented, which closes the connection.)"""
        ok = self._rpc("channel.flow", timeout, active=active)
        return bool(ok.active)

    def access_request(
        self, realm: str = "/data", exclusive: bool = False, passive: bool = False,
        active: bool = True, write: bool = True, read: bool = True, timeout: float | None = None,
    ) -> int:
        """0-8's ``access.request``; the ticket it returns is used by later methods."""
        ok = self._rpc(
            "access.request", timeout, realm=realm, exclusive=exclusive, passive=passive,
            active=active, write=write, read=read,
        )
        with self.connection._lock:
            self._core.set_ticket(self.channel_id, ok.ticket)  # type: ignore[union-attr]
        return int(ok.ticket)
