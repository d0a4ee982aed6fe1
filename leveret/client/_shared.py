"""What the blocking and the asyncio driver share: everything but the I/O.

Theory of operation
-------------------
Both drivers are loops around one :class:`~leveret.client.core.SansIOConnection`.  What a
call *means* -- which method it sends, what it waits for, what it returns, how replies,
confirms, returns, deliveries and closes are routed to channels -- is written once, here.
What differs is only how a driver moves bytes and how it waits.

A call that has to wait for the broker (``queue_declare``, ``wait_for_confirms``,
``close``...) is written as an *operation*: a generator that queues its frames through the
driver (``_flush`` writes now, ``_kick`` writes soon) and ``yield``\\ s a :class:`Wait` --
a predicate over the routing state, a deadline and what it waits for -- each time it needs
the broker to answer.  The driver resumes it once the predicate holds, or throws
``TimeoutError`` (or, in asyncio, ``CancelledError``) into it.  The blocking driver runs an
operation by blocking in each wait (reading the socket meanwhile); the asyncio driver awaits.

The :class:`operation` descriptor turns such a generator into the public method: a plain
call on the blocking classes (:class:`BlockingDriver`), a coroutine function on the asyncio
ones (:class:`AsyncDriver`) -- with the same name, signature, docstring, and static types
(``ch.queue_declare(q)`` is a ``QueueDeclareOk`` on a blocking channel, an
``Awaitable[QueueDeclareOk]`` on an asyncio one).

A channel has at most one synchronous request awaiting its reply, as the spec asks (RabbitMQ
may answer a second request before the first): the next one is sent when that reply is in.
When a caller stops waiting for a reply (a timeout, a cancelled task), its reply is still on
its way; the channel drops it when it comes (requeueing a fetched message, cancelling a
consumer nobody knows) and only then sends the next request, so every call gets its own
reply and the channel stays usable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from time import monotonic
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Concatenate,
    Generator,
    Generic,
    NamedTuple,
    ParamSpec,
    TypeVar,
    overload,
)
from urllib.parse import urlsplit

from ..wire.errors import AMQPError, EncodeError, LeveretError, LocalProtocolError, again
from . import events as ev
from .core import _CLOSED, _OPEN, DEFAULT_MAX_BODY_SIZE, ConnState, SansIOConnection
from .errors import (
    BlockedTimeout,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLost,
    MessageDecodeError,
    MessageTooLargeError,
    PublishNacked,
)
from .message import Message, _body_error
from .url import ConnectionOptions, ConnectionParameters, parse_url, positive_seconds, split_host_port

if TYPE_CHECKING:  # pragma: no cover
    import ssl
    from typing import ContextManager

    from typing_extensions import Unpack  # typing's from 3.12 (3.11 without **kwargs use)

__all__ = ["QueueDeclareOk", "Wait", "operation", "ConnectionBase", "ChannelBase"]

log = logging.getLogger("leveret.client")

P = ParamSpec("P")
R = TypeVar("R")


class Wait(NamedTuple):
    """What an operation waits for: ``predicate()`` to become true before ``deadline``
    (``monotonic()`` seconds; None: no limit); ``what`` names it in the TimeoutError.

    ``local``: while it returns true, what is awaited is another call's doing, not the
    broker's (a channel's request slot, which its holder gives back and then notifies):
    the blocking driver waits to be notified then rather than take the reading role --
    a reader blocked in ``poll()`` would hear of it only with the next bytes."""

    predicate: Callable[[], Any]
    deadline: float | None
    what: str
    local: Callable[[], Any] | None = None


#: An operation: yields what it waits for, returns its result.
Op = Generator[Wait, None, R]


class BlockingDriver:
    """Marks the classes whose operations are plain calls."""

    def _run(self, op: Op[R]) -> R:
        raise NotImplementedError


class AsyncDriver:
    """Marks the classes whose operations are coroutine functions."""

    async def _run(self, op: Op[R]) -> R:
        raise NotImplementedError


class operation(Generic[P, R]):
    """Makes an operation (a generator method) the public method of both drivers."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Op[R]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__wrapped__ = fn
        self._async_unbound: Callable[..., Any] | None = None

    @property
    def __signature__(self) -> Any:
        """What help() and inspect show: the call, not the generator (computed on demand:
        ``inspect`` is a heavy import)."""
        import inspect

        sig = inspect.signature(self.fn)
        returns = sig.return_annotation
        if isinstance(returns, str) and returns.startswith("Op[") and returns.endswith("]"):
            sig = sig.replace(return_annotation=returns[3:-1])
        return sig

    def __call__(self, obj: Any, *args: P.args, **kwargs: P.kwargs) -> Any:
        """``Channel.queue_declare(channel, ...)``: the unbound call, as for a function."""
        return obj._run(self.fn(obj, *args, **kwargs))

    @overload
    def __get__(self, obj: None, owner: type) -> operation[P, R]: ...
    @overload
    def __get__(self, obj: BlockingDriver, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, obj: AsyncDriver, owner: type) -> Callable[P, Awaitable[R]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        fn = self.fn
        if obj is None:
            if issubclass(owner, AsyncDriver):
                return self._unbound_coroutine_function()
            return self
        run = obj._run
        call: Any
        if isinstance(obj, AsyncDriver):
            # A real coroutine function, so that inspect.iscoroutinefunction() and the like
            # say so (the cost, one more coroutine frame, is nothing beside a round trip).
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                return await run(fn(obj, *args, **kwargs))

            call = async_call
        else:
            def blocking_call(*args: Any, **kwargs: Any) -> Any:
                return run(fn(obj, *args, **kwargs))

            call = blocking_call
        call.__doc__ = fn.__doc__
        call.__name__ = fn.__name__
        call.__qualname__ = fn.__qualname__
        call.__wrapped__ = fn.__get__(obj)
        return call

    def _unbound_coroutine_function(self) -> Callable[..., Any]:
        """``AsyncChannel.queue_declare``: the operation as a coroutine function taking the
        object first (made once)."""
        unbound = self._async_unbound
        if unbound is None:
            fn = self.fn

            async def unbound(obj: Any, *args: Any, **kwargs: Any) -> Any:
                return await obj._run(fn(obj, *args, **kwargs))

            unbound.__doc__ = fn.__doc__
            unbound.__name__ = fn.__name__
            unbound.__qualname__ = fn.__qualname__
            unbound.__wrapped__ = self  # type: ignore[attr-defined]  # its __signature__
            self._async_unbound = unbound
        return unbound


class QueueDeclareOk(NamedTuple):
    """What ``queue.declare-ok`` says."""

    queue: str
    message_count: int
    consumer_count: int


#: The longest single wait in poll(), a socket timeout or a lock (seconds): longer waits (a
#: timeout of inf or 1e300) are made of several, which no C-level timeout can overflow.
_MAX_WAIT = 86400.0


def deadline_after(timeout: float, name: str = "timeout") -> float:
    """The ``monotonic()`` time ``timeout`` seconds from now, for a timeout a caller gave.

    Any number of seconds will do: ``inf`` waits without limit, 0 or less does not wait.
    NaN is a ``ValueError`` and anything but a number a ``TypeError``, both naming
    ``name``, raised before anything is sent (a bad argument must not cost the
    connection).
    """
    try:
        if timeout == timeout:  # False only for NaN
            return monotonic() + timeout
    except TypeError:
        pass
    else:
        raise ValueError(f"{name} is NaN: give a number of seconds")
    raise TypeError(f"{name} must be a number of seconds, not {type(timeout).__name__}")


def ssl_context(params: ConnectionParameters) -> ssl.SSLContext:
    """The TLS context for ``params``: the system's CAs (or ``cacertfile``), verification on
    unless ``verify`` is false (the chain and the host name; the chain alone when
    ``check_hostname`` is false), the client certificate when one is given.

    Each file is opened first, so that a missing or unreadable one raises the ``OSError``
    of its kind (``FileNotFoundError``...) naming the option and the path -- ssl's own
    errors name neither -- and one that holds no certificate or key raises
    ``ssl.SSLError`` naming them.  Both drivers call this before they open the socket.
    """
    import ssl  # only for TLS: the module costs several MiB of memory

    files = [(name, getattr(params, name)) for name in ("cacertfile", "certfile", "keyfile")]
    for name, path in files:
        if path is None:
            continue
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise type(exc)(exc.errno, f"connection option {name}: {exc.strerror}", path) from None
    try:
        ctx = ssl.create_default_context(cafile=params.cacertfile)
        if not params.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not params.check_hostname:
            ctx.check_hostname = False  # the chain is still verified: CERT_REQUIRED stays
        if params.certfile:
            ctx.load_cert_chain(params.certfile, params.keyfile)
    except ssl.SSLError as exc:
        given = ", ".join(f"{name}={path!r}" for name, path in files if path is not None)
        raise ssl.SSLError(
            f"cannot load the TLS certificates or key ({given}): {exc} -- a file without a PEM "
            "certificate, a certfile without its key and no keyfile, or a key that is not "
            "the certificate's"
        ) from exc
    return ctx


def inherited_through_fork(how_to_reconnect: str) -> str:
    """Why a connection open at ``os.fork()`` cannot be used in the child (the drivers'
    at-fork hooks abandon every such connection with this as its error)."""
    return (
        f"this connection belongs to process {os.getppid()}, which opened it before fork(); "
        f"{how_to_reconnect}"
    )


def tls_handshake_lost(exc: BaseException) -> ConnectionLost | None:
    """A :class:`ConnectionLost` for ``exc`` if it says the peer hung up during the TLS
    handshake (EOF, reset), as it would be during the AMQP handshake; ``None`` for other
    errors, which ssl words best itself (a certificate refused, a peer that speaks no TLS)."""
    import ssl

    hung_up = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, ConnectionAbortedError,
               BrokenPipeError)
    if not isinstance(exc, hung_up):
        return None
    return ConnectionLost(
        f"the server closed the connection during the TLS handshake ({str(exc) or type(exc).__name__})"
    )


class NoLock:
    """The asyncio driver's stand-in for the blocking driver's locks (one thread)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: Any) -> None:
        return None


class ConnectionBase:
    """The connection state both drivers keep, the routing of the core's events to
    channels, and the connection-level operations.  A driver adds the transport:
    ``_flush()`` (write what the core queued, now), ``_kick()`` (write it soon),
    ``_teardown()`` (drop the transport, wake every waiter) and ``_run(op)``."""

    _lock: ContextManager[Any]
    _channels: dict[int, Any]

    def __init__(
        self,
        url: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        blocked_timeout: float = 60.0,
        rpc_timeout: float = 60.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        client_properties: dict[str, Any] | None = None,
        on_blocked: Callable[[str], Any] | None = None,
        on_unblocked: Callable[[], Any] | None = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        params = parse_url(url) if url else ConnectionParameters()
        port_given = options.get("port") is not None
        for name, value in options.items():
            if name == "userid":
                name = "username"
            if not hasattr(params, name) or name.startswith("_"):
                raise TypeError(f"unknown connection option {name!r}")
            if name == "host" and isinstance(value, str):
                # py-amqp's and kombu's "host:port" (which would otherwise fail at
                # connect(), as a name that does not resolve)
                value, port = split_host_port(value)
                if port is not None:
                    if port_given and options["port"] != port:
                        raise ValueError(
                            f"connection options host={options['host']!r} and "
                            f"port={options['port']!r} disagree"
                        )
                    params.port = port
                    port_given = True
            if value is not None:
                setattr(params, name, value)
        if params.ssl and params.port == 5672 and not port_given and (url is None or urlsplit(url).port is None):
            params.port = 5671  # ssl=True with no port given: the amqps port
        params.check()  # keyword options are checked as strictly as the URL's
        self.params = params
        self.ssl_context = ssl_context
        self.blocked_timeout = positive_seconds("blocked_timeout", blocked_timeout)
        self.rpc_timeout = positive_seconds("rpc_timeout", rpc_timeout)
        self.max_body_size = max_body_size
        self.client_properties = client_properties
        self.on_blocked = on_blocked
        self.on_unblocked = on_unblocked

        self._core: SansIOConnection | None = None
        self._error: BaseException | None = None
        self._closed_error: AMQPError | None = None
        self._closed = False
        self._channels = {}
        # Received, for callbacks to run: (channel or None, event).
        self._pending: deque[tuple[Any, Any]] = deque()
        # The open channels that may hold returned publishes to hand over (a channel's
        # wait_for_confirms may have handed them over already): looking at these, not at
        # every channel, keeps each wait independent of how many channels are open.
        self._returning: dict[Any, None] = {}
        self._conn_replies: deque[Any] = deque()
        self._conn_abandoned = 0  # connection-level replies nobody waits for any more
        self._get_ok: Any = None
        self.server_properties: dict[str, Any] = {}
        self._init_transport()

    def _init_transport(self) -> None:
        """The driver's own state (called at the end of ``__init__``)."""

    # ------------------------------------------------------------------ info

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__module__.rpartition('.')[0]}.{type(self).__name__} {self.params.url()} {state}>"

    @property
    def is_open(self) -> bool:
        """True while the connection is open and usable."""
        core = self._core
        return core is not None and core.state is _OPEN and self._error is None

    @property
    def connected(self) -> bool:
        """The same as :attr:`is_open` (py-amqp's name)."""
        return self.is_open

    @property
    def blocked(self) -> str | None:
        """The broker's reason while it blocks this connection (``connection.blocked``)."""
        return self._core.blocked if self._core else None

    @property
    def channel_max(self) -> int:
        """The negotiated highest channel id (0 before the handshake)."""
        return self._core.channel_max if self._core else 0

    @property
    def frame_max(self) -> int:
        """The negotiated largest frame size in bytes (0 before the handshake)."""
        return self._core.frame_max if self._core else 0

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat interval in seconds (0: off)."""
        return self._core.heartbeat if self._core else 0

    @property
    def protocol(self) -> str:
        """``"0-9-1"`` or ``"0-8"``."""
        return self.params.protocol

    @property
    def core(self) -> SansIOConnection:
        """The sans-IO core (for libraries building on leveret)."""
        if self._core is None:
            raise ConnectionClosedError("not connected")
        return self._core

    # ------------------------------------------------------------------ driver hooks

    def _flush(self) -> None:
        raise NotImplementedError

    def _flush_within(self, deadline: float) -> bool:
        """:meth:`_flush`, giving up at ``deadline`` (False then); a driver whose flush
        never waits keeps this."""
        self._flush()
        return True

    def _kick(self) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        """Wake every waiting call to look again at what it waits for (a state no event
        changed: a channel's request slot given back)."""
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _heartbeat_tick(self) -> tuple[bool, float | None]:
        """The heartbeat duty (see ``SansIOConnection.tick``): ``(go on, seconds until the
        next duty or None when heartbeats are off)``; a silent broker fails the connection."""
        core = self._core
        if core is None:
            return False, None
        try:
            return True, core.tick(monotonic())
        except ConnectionLost as exc:
            log.warning("leveret: %s", exc)
            self._fail(exc)
        except LeveretError:
            pass
        return False, None

    def _new_core(self) -> SansIOConnection:
        """A fresh core for a new transport; forgets the last connection's state.

        The last connection's channels that are still about (a connection lost, then
        connected again) are closed for good: their ids are the new connection's to give
        out, so not a byte of theirs may reach it."""
        p = self.params
        old_error = self._error or self._closed_error
        lost = old_error.unconfirmed if isinstance(old_error, ConnectionLost) else {}
        for ch in list(self._channels.values()):
            ch._on_closed(None, lost.get(ch.channel_id, ()))
            ch._gone_with = old_error
        self._error = None
        self._closed = False
        self._closed_error = None
        self._channels.clear()
        self._pending.clear()
        self._returning.clear()
        self._conn_replies.clear()
        self._conn_abandoned = 0
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
        return core

    def _handshake(self, deadline: float) -> Op[None]:
        """Protocol header, start/start-ok, tune/tune-ok, open/open-ok (the core does them
        as the frames arrive); tears the transport down when it fails."""
        core = self._core
        assert core is not None
        waiting = (ConnState.AWAIT_START, ConnState.AWAIT_TUNE, ConnState.AWAIT_OPEN_OK)
        try:
            self._flush()
            yield Wait(lambda: core.state not in waiting, deadline, "the AMQP handshake")
            if core.state is not ConnState.OPEN:
                # Closed by the broker, or failed (VersionMismatch, a protocol error): the
                # asyncio driver holds such an error in _error, it does not raise it here.
                raise self._dead_error()
        except BaseException:
            self._teardown()
            raise
        self.server_properties = core.server_properties

    # ------------------------------------------------------------------ routing

    def _dispatch(self, events: list[ev.Event]) -> None:
        """Route the core's events to channels (the blocking driver holds its lock)."""
        channels = self._channels
        for event in events:
            kind = type(event)
            if kind is ev.MessageReceived:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is None:
                    continue
                if type(event.method) is self._get_ok:  # type: ignore[attr-defined]
                    ch._reply(event)
                else:
                    self._pending.append((ch, event))
            elif kind is ev.MethodReceived:
                cid = event.channel_id  # type: ignore[attr-defined]
                if cid == 0:
                    if self._conn_abandoned:
                        self._conn_abandoned -= 1  # for an update_secret given up: drop it
                    else:
                        self._conn_replies.append(event.method)  # type: ignore[attr-defined]
                else:
                    ch = channels.get(cid)
                    if ch is not None:
                        ch._reply(event.method)  # type: ignore[attr-defined]
            elif kind is ev.PublishConfirmed:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._on_confirm(event)
            elif kind is ev.MessageReturned:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    if event.delivery_tag in ch._waited_tags:  # type: ignore[attr-defined]
                        ch._waited_returned.add(event.delivery_tag)  # type: ignore[attr-defined]
                        if ch.on_return is None:
                            # A publish_confirmed's own return: its False says so; kept in
                            # ``returned`` as well, such returns would pile up for ever.
                            continue
                    ch._returns.append(event)
                    self._returning[ch] = None  # after the append: see _has_returns
            elif kind is ev.ChannelOpened:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._open = True
            elif kind is ev.ChannelClosed:
                ch = channels.pop(event.channel_id, None)  # type: ignore[attr-defined]
                if ch is not None:
                    # Returns it still holds are handed over by its own wait_for_confirms.
                    self._returning.pop(ch, None)
                    if event.error is not None and ch._consumers:  # type: ignore[attr-defined]
                        # The broker closed a channel with consumers: drain_events, the
                        # consumers' loop, reports why after the deliveries that came
                        # before (see _callback).  Other channels report it on their next
                        # call only, so that nothing piles up where nobody drains.
                        self._pending.append((ch, event))
                    ch._on_closed(event.error, event.unconfirmed)  # type: ignore[attr-defined]
            elif kind is ev.ConnectionClosed:
                self._closed_error = event.error  # type: ignore[attr-defined]
                unconfirmed = event.unconfirmed  # type: ignore[attr-defined]
                for ch in channels.values():
                    ch._on_closed(event.error, unconfirmed.get(ch.channel_id, ()))  # type: ignore[attr-defined]
                channels.clear()
                self._returning.clear()
            elif kind is ev.FlowChanged:
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch.flow_active = event.active  # type: ignore[attr-defined]
            elif kind in _DISCARDED and event.method.NAME.endswith("get-ok"):  # type: ignore[attr-defined]
                ch = channels.get(event.channel_id)  # type: ignore[attr-defined]
                if ch is not None:
                    ch._reply(event)  # basic_get raises it
            elif kind is ev.ConsumerCancelled or kind in _DISCARDED:
                self._pending.append((channels.get(event.channel_id), event))  # type: ignore[attr-defined]
            elif kind is ev.ConnectionBlocked or kind is ev.ConnectionUnblocked:
                self._pending.append((None, event))
            # ConnectionOpened: the handshake waiter looks at core.state

    def _has_pending(self) -> bool:
        return bool(self._pending) or (bool(self._returning) and self._has_returns())

    def _has_returns(self) -> bool:
        """Whether an open channel holds returned publishes to hand over; forgets the
        channels that hold none any more.  Safe against a reader thread adding returns
        meanwhile: it appends to the channel's deque before it marks the channel, and a
        channel is unmarked here before its deque is looked at (and marked again if it
        is not empty)."""
        returning = self._returning
        for ch in list(returning):
            returning.pop(ch, None)
            if ch._returns:
                returning[ch] = None
                return True
        return False

    def _returning_channels(self) -> list[Any]:
        """The channels that may hold returned publishes, unmarked (in the same order as in
        :meth:`_has_returns`): the caller hands over what they hold, and marks a channel
        again if it could not.  One by one, not ``clear()``: a channel a reader thread
        marks meanwhile stays marked."""
        returning = self._returning
        channels = list(returning)
        for ch in channels:
            returning.pop(ch, None)
        return channels

    def _callback(self, ch: Any, item: Any) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """The callback to run for a received event and its arguments, or None when there
        is none (the event is handled); raises :class:`MessageTooLargeError` for a
        delivery that was too large to keep."""
        kind = type(item)
        if kind is ev.MessageReceived:
            tag = item.method.consumer_tag
            cb = ch._consumers.get(tag)
            if cb is None:
                cb = ch._straggler_callback(tag, item.method.delivery_tag)
                if cb is None:
                    return None
            return cb, (Message._received(ch, item.method, item.properties, item.body),)
        if kind is ev.ConsumerCancelled:
            cancel_cb = ch._cancel_callbacks.get(item.consumer_tag)
            ch._forget_consumer(item.consumer_tag)
            ch._cancelled_no_ack.pop(item.consumer_tag, None)  # its deliveries came before
            return (cancel_cb, (item.consumer_tag,)) if cancel_cb is not None else (_nothing, ())
        if kind is ev.ChannelClosed:
            # A channel with consumers that the broker closed (an ack timed out or named
            # an unknown delivery tag...).  drain_events raises the broker's error unless a
            # call on that channel has already raised it; it stays the error the channel's
            # next call raises first, as it would have been without this report.
            if ch._error_reported:
                return None
            return _raise, (item.error,)
        if kind is ev.ConnectionBlocked:
            return (self.on_blocked, (item.reason,)) if self.on_blocked is not None else None
        if kind is ev.ConnectionUnblocked:
            return (self.on_unblocked, ()) if self.on_unblocked is not None else None
        if kind is _ConsumerGone:
            ch._cancelled_no_ack.pop(item.consumer_tag, None)
            return None
        if kind in _DISCARDED:
            raise _discarded_error(item, self.max_body_size)
        return None

    def _wait_over(self, predicate: Callable[[], Any]) -> bool:
        """For a driver's wait: True once ``predicate()`` holds; raises the connection's
        error when it died first."""
        if predicate():
            return True
        if self._error is not None:
            raise again(self._error)
        core = self._core
        if self._closed or core is None or core.state is _CLOSED:
            raise self._dead_error()
        return False

    def _dead_error(self) -> BaseException:
        """Why the connection is unusable, to raise (see ``again``)."""
        if self._error is not None:
            return again(self._error)
        if self._closed_error is not None:
            return again(self._closed_error)
        return ConnectionClosedError("the connection is closed")

    def _check_open(self) -> None:
        if self._error is not None:
            raise again(self._error)
        if self._closed_error is not None:
            raise again(self._closed_error)
        if not self.is_open:
            raise ConnectionClosedError("the connection is not open (call connect())")

    # ------------------------------------------------------------------ operations

    def _make_channel(self, channel_id: int) -> Any:
        raise NotImplementedError

    def _open_channel(self, channel_id: int | None) -> Op[Any]:
        """``channel.open``/``open-ok``; the lowest free id unless given."""
        self._check_open()
        core = self._core
        assert core is not None
        with self._lock:
            cid = core.open_channel(channel_id)
            ch = self._make_channel(cid)
            self._channels[cid] = ch
        self._flush()
        try:
            yield Wait(lambda: ch._open or ch._closed, monotonic() + self.rpc_timeout, "channel.open-ok")
        except BaseException:
            # Nobody will get this channel: close it rather than leave it open on the broker.
            if not ch._closed and self._error is None:
                try:
                    with self._lock:
                        core.close_channel(cid, 200, "")
                    self._kick()
                except (LeveretError, OSError):
                    pass
            raise
        if ch._closed:
            ch._raise_closed()
        return ch

    @operation
    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown", timeout: float | None = None) -> Op[None]:
        """Send ``connection.close``, wait for ``close-ok`` (at most ``timeout``, default
        ``rpc_timeout``) and close the transport.  Safe to call more than once, and on a
        connection that is already dead (then it only releases the transport).

        While the broker blocks the connection (``connection.blocked``: a memory or disk
        alarm), it reads nothing from a connection that has published, so the close-ok
        may only come once the alarm is over: the wait is then also bounded by
        ``blocked_timeout``, after which the transport is closed without it."""
        core = self._core
        if core is None or self._closed:
            return
        try:
            if self._error is None and core.state is ConnState.OPEN:
                deadline = deadline_after(self.rpc_timeout if timeout is None else timeout)
                if core.blocked is not None:
                    deadline = min(deadline, deadline_after(self.blocked_timeout))
                with self._lock:
                    core.close(reply_code, reply_text)
                # Within the deadline too: another thread may be stuck writing to a peer
                # that reads nothing; then there is no handshake to wait for.
                if self._flush_within(deadline):
                    yield Wait(lambda: core.state is ConnState.CLOSED, deadline, "connection.close-ok")
            elif self._error is None and core.state is ConnState.CLOSING:
                # Another caller's close is under way (two tasks or threads closing at once):
                # wait for its close-ok too, rather than drop the transport under it.
                deadline = deadline_after(self.rpc_timeout if timeout is None else timeout)
                yield Wait(lambda: core.state is not ConnState.CLOSING, deadline, "connection.close-ok")
        except (LeveretError, OSError):
            pass
        finally:
            self._teardown()

    @operation
    def update_secret(self, new_secret: str | bytes, reason: str = "", timeout: float | None = None) -> Op[None]:
        """``connection.update-secret`` (RabbitMQ, 0-9-1): hand the broker a new secret
        (e.g. a refreshed OAuth 2 token) and wait for ``update-secret-ok``.  A call that
        stops waiting (timeout, cancelled task) leaves its late reply to be dropped."""
        self._check_open()
        core = self._core
        assert core is not None
        with self._lock:
            core.update_secret(new_secret, reason)
        self._flush()
        deadline = deadline_after(self.rpc_timeout if timeout is None else timeout)
        try:
            yield Wait(lambda: bool(self._conn_replies), deadline, "connection.update-secret-ok")
        except BaseException:
            with self._lock:
                if self._conn_replies:
                    self._conn_replies.popleft()  # it came just now
                else:
                    self._conn_abandoned += 1  # it may still come: not for the next call
            raise
        self._conn_replies.popleft()


class _ConsumerGone(NamedTuple):
    """Queued after the deliveries of a no_ack consumer cancelled by ``basic_cancel``:
    when the callbacks get here, its last delivery has run."""

    consumer_tag: str


def _nothing(*args: Any) -> None:
    return None


def _raise(error: BaseException) -> None:
    raise error


#: The events of a message the core discarded unread, for which a driver raises.
_DISCARDED = (ev.MessageTooLarge, ev.MessageUndecodable)


def _discarded_error(item: Any, max_body_size: int) -> LeveretError:
    """The error to raise for a message the core discarded (``item``, one of ``_DISCARDED``):
    from ``drain_events`` for a delivery or a return, from ``basic_get`` for what it fetched."""
    method = item.method
    fetched = method.NAME.endswith("get-ok")
    tag = getattr(method, "delivery_tag", None)
    if type(item) is ev.MessageTooLarge:
        what = (
            f"the message basic.get fetched ({item.body_size} bytes)" if fetched
            else f"a message of {item.body_size} bytes on channel {item.channel_id}"
        )
        return MessageTooLargeError(
            f"{what} is larger than max_body_size={max_body_size}; it was discarded unread",
            item.channel_id, tag, item.body_size,
        )
    what = (
        "the message basic.get fetched" if fetched
        else f"a message ({method.NAME}) on channel {item.channel_id}"
    )
    error = MessageDecodeError(
        f"{what} has properties leveret cannot decode ({item.error}); it was discarded "
        "unread" + (f" (delivery tag {tag})" if tag is not None else ""),
        item.channel_id, tag, item.body_size,
    )
    error.__cause__ = item.error
    return error


def _no_delivery_tag(method: str) -> EncodeError:
    return EncodeError(
        f"{method} needs a delivery tag, not None: the message was not delivered by a broker "
        "(built here, or returned by basic.return); nothing was sent"
    )


# Properties that make a property set worth no caching: a table (unhashable) and values that
# usually differ for every message.
_UNCACHED = frozenset({"headers", "message_id", "correlation_id", "timestamp"})


class _EncodedProperties:
    """A content header's properties, already encoded (what the frame writer asks of a
    properties object: ``encode_values()``)."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[int, bytes]) -> None:
        self._values = values

    def encode_values(self) -> tuple[int, bytes]:
        return self._values


class ChannelBase:
    """A channel's state and every channel operation, for both drivers.

    Every synchronous call sends its request and waits for the reply, at most ``timeout``
    seconds (default: the connection's ``rpc_timeout``).  When the broker closes the channel
    (e.g. ``queue.declare(passive=True)`` of a missing queue) the call raises the typed
    error for the reply code (``NotFound``, ``AccessRefused``, ``ResourceLocked``,
    ``PreconditionFailed``, ...): the channel is then closed, the connection stays usable.
    A call that stops waiting (``TimeoutError``, a cancelled task) leaves the channel usable:
    the late reply is dropped when it comes.
    """

    connection: Any

    def __init__(self, connection: Any, channel_id: int) -> None:
        self.connection = connection
        self.channel_id = channel_id
        self._core: SansIOConnection = connection._core
        spec = self._core.spec
        self._spec = spec
        self._publish_cls = spec.Basic.Publish
        self._props_cls = spec.Basic.Properties
        self._ticket_field = "ticket" in spec.Basic.Publish.FIELDS
        self._publish_methods: dict[tuple[str, str, bool, bool], Any] = {}
        self._encoded_props: dict[tuple[Any, ...], _EncodedProperties] = {}
        self._open = False
        self._closed = False
        self._error: AMQPError | None = None
        self._error_reported = False
        self._lost_tags: list[int] = []  # unconfirmed when the channel closed
        # Why the connection this channel was opened on went away, once the connection
        # object has connected again (see ConnectionBase._new_core).
        self._gone_with: BaseException | None = None
        self._replies: deque[Any] = deque()
        # Replies nobody waits for any more (timed out or cancelled), oldest first: for
        # each, what to do with it when it comes (None: drop it).
        self._abandoned: deque[Callable[[Any], None] | None] = deque()
        # basic.consume requests awaiting consume-ok: (callback, on_cancel, no_ack).  The
        # consumer is registered as its consume-ok is routed, before the deliveries that
        # follow it can run.
        self._consume_waiting: deque[tuple[Any, Any, bool]] = deque()
        self._consume_ok_cls = spec.Basic.ConsumeOk
        self._rpc_busy = False  # a synchronous request awaits its reply
        self._returns: deque[ev.MessageReturned] = deque()
        self._consumers: dict[str, Callable[[Message], Any] | None] = {}
        self._cancel_callbacks: dict[str, Callable[[str], Any]] = {}
        self._no_ack_tags: set[str] = set()
        # Callbacks of cancelled no_ack consumers, for deliveries that were already on their
        # way (they cannot be requeued).
        self._cancelled_no_ack: dict[str, Callable[[Message], Any] | None] = {}
        # Those cancelled with nowait (no cancel-ok says when their last delivery is in):
        # [tag, replies still to come to requests sent before the cancel].  The first reply
        # to a request sent after it comes after every delivery, as the broker sends them in
        # order; then the callback is dropped (see _reply).
        self._gone_after_reply: list[list[Any]] = []
        self._nacked: list[int] = []
        self._waited_tags: dict[int, bool | None] = {}
        # Those of _waited_tags that were returned: the asyncio delivery task may run (and
        # drop) the return before publish_confirmed resumes.
        self._waited_returned: set[int] = set()
        self._confirm_selected = False  # confirm_select() succeeded on this channel
        self.flow_active = True
        #: Called with each returned :class:`Message` (``basic.return``); when None, returned
        #: messages are kept in :attr:`returned`.
        self.on_return: Callable[[Message], Any] | None = None
        #: Returned messages (``basic.return``) when :attr:`on_return` is None: those of
        #: ``basic_publish(mandatory=True)`` stay here until the caller takes them out (say,
        #: ``returned.clear()``).  A :meth:`publish_confirmed` reports its own return by
        #: returning False, so its message is not kept here (with ``on_return`` set, the
        #: callback gets it all the same).
        self.returned: list[Message] = []

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"  # (closed with its connection too)
        return f"<{type(self).__module__.rpartition('.')[0]}.{type(self).__name__} {self.channel_id} {state}>"

    @property
    def is_open(self) -> bool:
        """True while the channel and its connection are usable."""
        return self._open and not self._closed and self.connection.is_open

    @property
    def close_error(self) -> AMQPError | None:
        """The error that closed this channel: the broker's channel error (``NotFound``,
        ``PreconditionFailed``, ...), or the connection's when the connection closed with
        one; None while the channel is open and after a normal close."""
        return self._error

    def mark_error_reported(self) -> None:
        """Say that :attr:`close_error` has reached the application some other way (a
        layer above raised it): from now on :meth:`drain_events` does not raise it for
        this channel, and the channel's calls raise :class:`ChannelClosedError` (with that
        error as ``__cause__``) instead of raising it again.  Nothing goes on the wire; a
        no-op while the channel has no error."""
        if self._error is not None:
            self._error_reported = True

    @property
    def unconfirmed(self) -> list[int]:
        """Delivery tags of publishes (in confirm mode) whose fate is not known: not yet
        confirmed while the channel is open; never confirmed when it closed or its
        connection was lost (they may or may not have reached the queues)."""
        conn = self.connection
        if self._closed:
            return list(self._lost_tags)
        if conn._error is not None and isinstance(conn._error, ConnectionLost):
            return list(conn._error.unconfirmed.get(self.channel_id, ()))
        return list(self._core.unconfirmed().get(self.channel_id, ()))

    @property
    def nacked(self) -> list[int]:
        """Delivery tags the broker nacked and :meth:`wait_for_confirms` has not yet raised
        for."""
        return list(self._nacked)

    # ------------------------------------------------------------------ plumbing

    def _on_closed(self, error: AMQPError | None, unconfirmed: Any = ()) -> None:
        self._closed = True
        self._consume_waiting.clear()
        # Deliveries read ahead but not yet run: the broker has requeued those of consumers
        # that acknowledge (the channel they were delivered on is gone, so they cannot be
        # acked, and they will come again), so their callbacks no longer run; a no_ack
        # consumer's messages cannot come back, so its callback still gets them.
        for tag, callback in self._consumers.items():
            if tag in self._no_ack_tags and callback is not None:
                self._cancelled_no_ack[tag] = callback
        self._consumers = {}
        self._no_ack_tags.clear()
        self._error = error
        self._lost_tags = list(unconfirmed)

    def _reply(self, reply: Any) -> None:
        """A reply arrived (a method, or a basic.get's message event)."""
        if self._gone_after_reply:
            self._count_reply_for_gone()
        if type(reply) is self._consume_ok_cls and self._consume_waiting:
            self._add_consumer(reply.consumer_tag, *self._consume_waiting.popleft())
        if self._abandoned:
            late = self._abandoned.popleft()
            if late is not None:
                late(reply)
            return
        self._replies.append(reply)

    # The late-reply handlers run while events are routed (in the blocking driver, under
    # the connection's lock): they only queue frames; the driver writes them after routing.

    def _give_back(self, reply: Any) -> None:
        """The late reply of a cancelled ``basic.get``: nobody takes the message; requeue it."""
        if type(reply) is ev.MessageReceived and not self._closed:
            method = self._method("basic.reject", dict(delivery_tag=reply.method.delivery_tag, requeue=True))
            self._core.send_method(self.channel_id, method)

    def _cancel_late_consumer(self, reply: Any) -> None:
        """The late consume-ok of a cancelled ``basic.consume``: nobody knows the consumer;
        cancel it (its deliveries in between go back to the queue)."""
        tag = reply.consumer_tag
        self._forget_consumer(tag)
        if not self._closed:
            method = self._method("basic.cancel", dict(consumer_tag=tag, no_wait=True))
            self._core.send_method(self.channel_id, method)
            self._forget_after_reply(tag)

    def _forget_after_reply(self, consumer_tag: str) -> None:
        """A no_ack consumer was cancelled with nowait: keep its callback for the deliveries
        still on their way until the reply to a request sent after now comes in."""
        if consumer_tag in self._cancelled_no_ack:
            before = len(self._abandoned) + (1 if self._rpc_busy and not self._replies else 0)
            self._gone_after_reply.append([consumer_tag, before])

    def _count_reply_for_gone(self) -> None:
        """A reply came: consumers cancelled with nowait before the request it answers
        was sent have had their last delivery; their callbacks go once it has run."""
        still = []
        for entry in self._gone_after_reply:
            if entry[1]:
                entry[1] -= 1
                still.append(entry)
            else:
                self.connection._pending.append((self, _ConsumerGone(entry[0])))
        self._gone_after_reply = still

    def _raise_closed(self) -> None:
        """Raise why the channel is closed: when the whole connection closed or was lost,
        that error, every time; when only the channel closed, the broker's typed error
        (``NotFound``...) the first time, then :class:`ChannelClosedError` with that error
        as its cause."""
        conn = self.connection
        if self._core is not conn._core:
            raise ChannelClosedError(
                f"channel {self.channel_id} was opened on an earlier connection, which has "
                "closed or been lost since; open a channel on the current one"
            ) from (self._gone_with or self._error)  # lost, or what the broker closed it with
        if conn._error is not None:
            raise again(conn._error)
        if conn._closed_error is not None:
            raise again(conn._closed_error)
        error = self._error
        if error is not None:
            if not self._error_reported:
                self._error_reported = True
                raise again(error)
            raise ChannelClosedError(
                f"channel {self.channel_id} was closed by the broker: {error}"
            ) from error
        raise ChannelClosedError(f"channel {self.channel_id} is closed")

    def _method(self, name: str, fields: dict[str, Any]) -> Any:
        core = self._core
        if self._ticket_field and name.split(".")[0] in ("exchange", "queue", "basic"):
            cls = core._by_name.get(name)
            if cls is not None and "ticket" in cls.FIELDS:
                fields.setdefault("ticket", core.ticket(self.channel_id))
        return core.method(name, **fields)

    def _send(self, method: Any, now: bool = True) -> None:
        """Queue a method; write it at once (``now``) or soon (with what follows it)."""
        conn = self.connection
        if self._closed:
            self._raise_closed()
        with conn._lock:
            if self._closed:
                self._raise_closed()
            self._core.send_method(self.channel_id, method)
        if now:
            conn._flush()
        else:
            conn._kick()

    def _rpc(self, name: str, timeout: float | None = None, **fields: Any) -> Op[Any]:
        """Send a method and wait for its reply (None for a method without one, or with
        ``nowait``)."""
        method = self._method(name, fields)
        if not method.SYNCHRONOUS or not method.RESPONSES or getattr(method, "nowait", False) or getattr(method, "no_wait", False):
            self._send(method)
            return None
        deadline = self._deadline(timeout)
        claimed = False
        try:
            yield from self._idle(deadline, name)  # gives the slot back itself if it fails
            claimed = True
            self._send(method)
        except BaseException:
            if claimed:
                self._give_slot_back()  # not sent
            raise
        late = self._give_back if name == "basic.get" and not fields.get("no_ack") else None
        return (yield from self._wait_reply(name, deadline, late))

    def _deadline(self, timeout: float | None) -> float:
        return deadline_after(self.connection.rpc_timeout if timeout is None else timeout)

    def _idle(self, deadline: float, name: str) -> Op[None]:
        """Wait until no synchronous request of this channel awaits its reply (another
        task's or thread's, or one given up whose reply has not come yet), and claim the
        channel's request slot (``_rpc_busy``): one at a time, as the spec asks -- RabbitMQ
        may answer a second request before the first.  The caller gives the slot back:
        :meth:`_wait_reply` does, or the caller itself when the request is not sent.

        The look and the claim are one step under the connection's lock (the blocking
        driver checks a wait's predicate under it too): two threads sharing a channel
        against the advice take turns, and neither gets the other's reply.  A channel
        that closes meanwhile raises why."""
        claimed = False

        def claim() -> bool:
            nonlocal claimed
            if self._closed:
                return True
            if self._rpc_busy or self._abandoned:
                return False
            self._rpc_busy = claimed = True
            return True

        try:
            with self.connection._lock:
                ready = claim()
            if not ready:
                yield Wait(
                    claim, deadline, f"the channel's previous request (before {name})",
                    lambda: self._rpc_busy,  # (abandoned requests' replies: those need reading)
                )
        except BaseException:
            # Cut short after the claim (an interrupt as the wait returned): not ours to keep.
            if claimed:
                self._give_slot_back()
            raise
        if not claimed:
            self._raise_closed()

    def _wait_reply(self, name: str, deadline: float, late: Callable[[Any], None] | None) -> Op[Any]:
        """Wait for the reply to the request just sent; ``late`` handles it when the wait is
        given up (a timeout, a cancelled task) and it comes anyway.  The request slot was
        claimed by :meth:`_idle`; it is given back here."""
        try:
            yield Wait(lambda: self._replies or self._closed, deadline, name + " reply")
        except BaseException:
            # Timed out or cancelled.  The reply may have come just now (a task cancelled
            # after its wait was satisfied): hand it to ``late`` at once.  Otherwise it may
            # still come: drop it then.
            if self._replies:
                reply = self._replies.popleft()
                if late is not None:
                    late(reply)
                    self.connection._kick()
            elif not self._closed:
                self._abandoned.append(late)
            raise
        finally:
            self._give_slot_back()
        if self._replies:
            return self._replies.popleft()
        self._raise_closed()

    def _give_slot_back(self) -> None:
        """Give back the request slot :meth:`_idle` claimed, and wake whoever waits for it
        (no event from the broker will).  Under the connection's lock, where a waiter looks
        at the slot: else it could see it taken, then free, and go and read instead of
        waiting for this notice."""
        conn = self.connection
        with conn._lock:
            self._rpc_busy = False
        conn._notify()

    def _publish_now(
        self, msg: Message | bytes | str, exchange: str, routing_key: str, mandatory: bool,
        immediate: bool, wait_tag: bool = False,
    ) -> int | None:
        """Queue basic.publish + header + body frames (the caller writes them)."""
        core = self._core
        if type(msg) is bytes:
            body: Any = msg
            props = None  # no properties: the header's flags word is simply 0
        else:
            if not isinstance(msg, Message):
                msg = Message(msg)
            body = msg.body
            if type(body) is not bytes:
                if not isinstance(body, (bytearray, memoryview)):
                    raise _body_error(body)
                # A bytearray or memoryview may change once the publish has returned, while
                # its frames (a big body's are slices of it, not copies) still wait to be
                # written, and a mandatory publish's body to be paired with its return: a
                # copy, once.  (A bytes body cannot change: it is sent as it is.)
                body = bytes(body)
            # An outgoing message's dict as it is (the property would only hand it back).
            properties = msg._properties if type(msg) is Message else None
            if properties is None:
                properties = msg.properties
            if not properties:
                props = None
            elif _UNCACHED.isdisjoint(properties):
                # The same few property sets again and again (a producer's content type,
                # encoding, delivery mode): their header bytes are encoded once.
                props_key = tuple(properties.items())
                try:
                    props = self._encoded_props.get(props_key)
                except TypeError:  # an unhashable value: let the encoder say what is wrong
                    props = self._props_cls(**properties)
                if props is None:
                    props = _EncodedProperties(self._props_cls(**properties).encode_values())
                    if len(self._encoded_props) >= 256:
                        self._encoded_props.clear()
                    self._encoded_props[props_key] = props
            else:
                props = self._props_cls(**properties)
        # A publisher sends to a handful of (exchange, routing key) pairs: their
        # basic.publish objects are built once (nothing changes them once built).
        key = (exchange, routing_key, mandatory, immediate)
        method = self._publish_methods.get(key)
        if method is None:
            if self._ticket_field:
                method = self._publish_cls(
                    ticket=core.ticket(self.channel_id), exchange=exchange,
                    routing_key=routing_key, mandatory=mandatory, immediate=immediate,
                )
            else:
                method = self._publish_cls(
                    exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
                )
            if len(self._publish_methods) >= 256:
                self._publish_methods.clear()
            self._publish_methods[key] = method
        with self.connection._lock:
            if self._closed:
                self._raise_closed()
            tag = core.publish(self.channel_id, method, props, body)
            if wait_tag and tag is not None:
                self._waited_tags[tag] = None
        return tag

    def _unblocked(self, deadline: float | None = None) -> Op[None]:
        """Wait while the broker blocks the connection, at most ``blocked_timeout`` -- or
        until ``deadline`` (a call's own timeout), when that comes first."""
        conn = self.connection
        core = self._core
        if core.blocked is None:
            return
        limit = monotonic() + conn.blocked_timeout
        own = deadline is not None and deadline < limit
        try:
            yield Wait(lambda: core.blocked is None, deadline if own else limit, "connection.unblocked")
        except TimeoutError:
            longer = "the call's timeout" if own else f"blocked_timeout={conn.blocked_timeout} s"
            raise BlockedTimeout(
                f"the broker has blocked this connection ({core.blocked}) for longer than {longer}; "
                "nothing was published"
            ) from None

    @operation
    def close(self, reply_code: int = 200, reply_text: str = "", timeout: float | None = None) -> Op[None]:
        """``channel.close`` / ``close-ok``.  Closing a closed channel does nothing (nor
        does closing a channel of an earlier connection of this object)."""
        conn = self.connection
        if self._closed or self._core is not conn._core:
            self._closed = True
            return
        try:
            with conn._lock:
                if self._closed or self._core is not conn._core:
                    self._closed = True
                    return
                self._core.close_channel(self.channel_id, reply_code, reply_text)
            conn._flush()
            yield Wait(lambda: self._closed, self._deadline(timeout), "channel.close-ok")
        except (ChannelClosedError, ConnectionClosedError):
            self._closed = True

    # ------------------------------------------------------------------ exchange

    @operation
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
    ) -> Op[None]:
        """``exchange.declare``; waits for ``declare-ok`` unless ``nowait``."""
        yield from self._rpc(
            "exchange.declare", timeout, exchange=exchange, type=type, passive=passive,
            durable=durable, auto_delete=auto_delete, internal=internal, no_wait=nowait,
            arguments=arguments,
        )

    @operation
    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False, timeout: float | None = None) -> Op[None]:
        """``exchange.delete``."""
        yield from self._rpc("exchange.delete", timeout, exchange=exchange, if_unused=if_unused, no_wait=nowait)

    @operation
    def exchange_bind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> Op[None]:
        """``exchange.bind`` (RabbitMQ's exchange-to-exchange binding; 0-9-1)."""
        yield from self._rpc(
            "exchange.bind", timeout, destination=destination, source=source,
            routing_key=routing_key, no_wait=nowait, arguments=arguments,
        )

    @operation
    def exchange_unbind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> Op[None]:
        """``exchange.unbind`` (0-9-1)."""
        yield from self._rpc(
            "exchange.unbind", timeout, destination=destination, source=source,
            routing_key=routing_key, no_wait=nowait, arguments=arguments,
        )

    # ------------------------------------------------------------------ queue

    @operation
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
    ) -> Op[QueueDeclareOk | None]:
        """``queue.declare``; returns ``(queue, message_count, consumer_count)`` (the name
        is the server's choice when ``queue`` is empty), or None with ``nowait``."""
        ok = yield from self._rpc(
            "queue.declare", timeout, queue=queue, passive=passive, durable=durable,
            exclusive=exclusive, auto_delete=auto_delete, no_wait=nowait, arguments=arguments,
        )
        if ok is None:
            return None
        return QueueDeclareOk(ok.queue, ok.message_count, ok.consumer_count)

    @operation
    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> Op[None]:
        """``queue.bind``."""
        yield from self._rpc(
            "queue.bind", timeout, queue=queue, exchange=exchange, routing_key=routing_key,
            no_wait=nowait, arguments=arguments,
        )

    @operation
    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "",
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> Op[None]:
        """``queue.unbind`` (0-9-1; always synchronous)."""
        yield from self._rpc(
            "queue.unbind", timeout, queue=queue, exchange=exchange, routing_key=routing_key,
            arguments=arguments,
        )

    @operation
    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> Op[int | None]:
        """``queue.purge``; returns the number of messages removed, or None with ``nowait``."""
        ok = yield from self._rpc("queue.purge", timeout, queue=queue, no_wait=nowait)
        return None if ok is None else int(ok.message_count)

    @operation
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> Op[int | None]:
        """``queue.delete``; returns the number of messages deleted with it, or None with
        ``nowait``."""
        ok = yield from self._rpc(
            "queue.delete", timeout, queue=queue, if_unused=if_unused, if_empty=if_empty,
            no_wait=nowait,
        )
        return None if ok is None else int(ok.message_count)

    # ------------------------------------------------------------------ basic

    @operation
    def basic_qos(
        self, /, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
        timeout: float | None = None, **kwargs: Any,
    ) -> Op[None]:
        """``basic.qos``: limit unacknowledged deliveries (``global`` may be passed as
        ``a_global`` or ``global_``)."""
        yield from self._rpc(
            "basic.qos", timeout, prefetch_size=prefetch_size, prefetch_count=prefetch_count,
            global_=kwargs.pop("global_", a_global), **kwargs,
        )

    @operation
    def basic_get(self, queue: str = "", no_ack: bool = False, timeout: float | None = None) -> Op[Message | None]:
        """``basic.get``: one message, or None when the queue is empty (``get-empty``)."""
        reply = yield from self._rpc("basic.get", timeout, queue=queue, no_ack=no_ack)
        if type(reply) is ev.MessageReceived:
            return Message._received(self, reply.method, reply.properties, reply.body)
        if type(reply) in _DISCARDED:
            raise _discarded_error(reply, self.connection.max_body_size)
        return None

    @operation
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
    ) -> Op[str]:
        """``basic.consume``; returns the consumer tag (the broker's when none is given).

        ``callback(message)`` runs for each delivery -- in the blocking driver inside
        :meth:`Connection.drain_events`, in the asyncio driver in the connection's delivery
        task (there it may be a coroutine function, awaited before the next delivery);
        ``on_cancel(consumer_tag)`` when the broker cancels the consumer (its queue was
        deleted, ...).  A consumer needs a ``callback``: without one (``TypeError``) its
        deliveries would have nowhere to go.
        """
        if not callable(callback):
            raise TypeError(f"basic_consume needs a callback for the deliveries, not {callback!r}")
        if nowait and not consumer_tag:
            raise LocalProtocolError("basic.consume with nowait needs a consumer_tag")
        if consumer_tag and consumer_tag in self._consumers:
            # The broker would close the whole connection (530 not-allowed), every channel
            # with it; with nowait, the new callback would have taken the old one's place.
            raise LocalProtocolError(
                f"consumer tag {consumer_tag!r} is in use on channel {self.channel_id}: "
                "consumer tags are unique per channel (cancel that consumer first)"
            )
        fields: dict[str, Any] = dict(
            queue=queue, consumer_tag=consumer_tag, no_local=no_local, no_ack=no_ack,
            exclusive=exclusive, no_wait=nowait,
        )
        if "arguments" in self._core._by_name["basic.consume"].FIELDS:
            fields["arguments"] = arguments
        elif arguments:
            raise LocalProtocolError(f"basic.consume takes no arguments in AMQP {self.connection.protocol}")
        method = self._method("basic.consume", fields)
        if nowait:
            self._add_consumer(consumer_tag, callback, on_cancel, no_ack)
            self._send(method)
            return consumer_tag
        deadline = self._deadline(timeout)
        # Registered when consume-ok is routed (see _reply), before any delivery runs.
        waiting = (callback, on_cancel, no_ack)
        claimed = False
        try:
            yield from self._idle(deadline, "basic.consume")  # gives the slot back itself if it fails
            claimed = True
            self._consume_waiting.append(waiting)
            self._send(method)
        except BaseException:
            # Not sent.  (Unless the send failed the connection: _on_closed has emptied the
            # list then, and the send's own error is what the caller must see.)
            if claimed:
                self._give_slot_back()
            with contextlib.suppress(ValueError):
                self._consume_waiting.remove(waiting)
            raise
        ok = yield from self._wait_reply("basic.consume", deadline, self._cancel_late_consumer)
        return str(ok.consumer_tag)

    def _add_consumer(self, tag: str, callback: Any, on_cancel: Any, no_ack: bool) -> None:
        self._consumers[tag] = callback
        if no_ack:
            self._no_ack_tags.add(tag)
        if on_cancel is not None:
            self._cancel_callbacks[tag] = on_cancel

    @operation
    def basic_cancel(self, consumer_tag: str, nowait: bool = False, timeout: float | None = None) -> Op[None]:
        """``basic.cancel``: stop a consumer.

        Deliveries that arrived before the cancel but whose callback has not run yet are
        given back to the queue (``basic.reject`` with requeue) -- except for a ``no_ack``
        consumer, whose messages cannot go back: its callback still runs for them.
        """
        yield from self._rpc("basic.cancel", timeout, consumer_tag=consumer_tag, no_wait=nowait)
        self._forget_consumer(consumer_tag)
        if nowait:
            with self.connection._lock:
                self._forget_after_reply(consumer_tag)
        elif consumer_tag in self._cancelled_no_ack:
            # cancel-ok is in: nothing comes after the deliveries already received, so the
            # callback is dropped once they have run (see ConnectionBase._callback).
            conn = self.connection
            with conn._lock:
                conn._pending.append((self, _ConsumerGone(consumer_tag)))

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

    # The settle calls take a received message's delivery_tag as it is typed (int | None:
    # None on a message no broker delivered), so that ch.basic_ack(message.delivery_tag)
    # type-checks; None is refused here, with nothing sent.

    def basic_ack(self, delivery_tag: int | None, multiple: bool = False) -> None:
        """``basic.ack`` (no reply; written soon, together with what follows it).
        ``delivery_tag`` is a received message's :attr:`Message.delivery_tag`; None (a
        message no broker delivered) is an :class:`EncodeError` and sends nothing."""
        if delivery_tag is None:
            raise _no_delivery_tag("basic.ack")
        conn = self.connection
        with conn._lock:
            if self._closed:
                self._raise_closed()
            self._core.ack(self.channel_id, delivery_tag, multiple)
        conn._kick()

    def basic_nack(self, delivery_tag: int | None, multiple: bool = False, requeue: bool = True) -> None:
        """``basic.nack`` (RabbitMQ extension in 0-9-1; no reply); ``delivery_tag`` as for
        :meth:`basic_ack`."""
        if delivery_tag is None:
            raise _no_delivery_tag("basic.nack")
        self._send(
            self._method("basic.nack", dict(delivery_tag=delivery_tag, multiple=multiple, requeue=requeue)),
            now=False,
        )

    def basic_reject(self, delivery_tag: int | None, requeue: bool = True) -> None:
        """``basic.reject`` (no reply); ``delivery_tag`` as for :meth:`basic_ack`."""
        if delivery_tag is None:
            raise _no_delivery_tag("basic.reject")
        self._send(self._method("basic.reject", dict(delivery_tag=delivery_tag, requeue=requeue)), now=False)

    @operation
    def basic_recover(self, requeue: bool = False, timeout: float | None = None) -> Op[None]:
        """``basic.recover``: redeliver unacknowledged messages (waits for ``recover-ok``
        in 0-9-1; 0-8's recover has no reply)."""
        yield from self._rpc("basic.recover", timeout, requeue=requeue)

    def basic_recover_async(self, requeue: bool = False) -> None:
        """``basic.recover-async`` (0-9-1, deprecated by the spec; no reply)."""
        self._send(self._method("basic.recover-async", dict(requeue=requeue)))

    # ------------------------------------------------------------------ confirms

    @operation
    def confirm_select(self, nowait: bool = False, timeout: float | None = None) -> Op[None]:
        """``confirm.select``: from now on the broker acks or nacks every publish;
        ``basic_publish`` returns delivery tags (RabbitMQ extension; 0-9-1)."""
        yield from self._rpc("confirm.select", timeout, nowait=nowait)
        self._confirm_selected = True  # still known once the channel has closed

    def _on_confirm(self, event: ev.PublishConfirmed) -> None:
        if not event.ack:
            self._nacked.extend(event.delivery_tags)
        waited = self._waited_tags
        if waited:
            for tag in event.delivery_tags:
                if tag in waited:
                    waited[tag] = event.ack

    def _returned_message(self, item: ev.MessageReturned) -> Message:
        msg = Message._received(self, item.method, item.properties, item.body)
        msg.delivery_info["publish_tag"] = item.delivery_tag
        return msg

    def _run_returns(self) -> None:
        """Hand over the returned publishes: to ``on_return``, or into :attr:`returned`.
        (The asyncio channel runs ``on_return`` in its delivery task instead.)"""
        while self._returns:
            msg = self._returned_message(self._returns.popleft())
            if self.on_return is not None:
                self.on_return(msg)
            else:
                self.returned.append(msg)

    @operation
    def wait_for_confirms(self, timeout: float | None = None) -> Op[bool]:
        """Wait until the broker has confirmed every publish of this channel.

        Hands over returned publishes first: runs their return callbacks (the asyncio
        driver runs them in its delivery task instead, maybe after this returns) or, with no
        ``on_return``, adds them to :attr:`returned`.  Returns True when all were
        acked; raises :class:`PublishNacked` listing the nacked tags (then forgets them),
        ``TimeoutError`` past ``timeout`` (default ``rpc_timeout``), and
        :class:`ConnectionLost` -- whose ``unconfirmed`` names the publishes of unknown
        fate -- when the connection dies first.  On a channel that is not in confirm mode
        (no :meth:`confirm_select`) nothing is ever confirmed: it raises
        :class:`LocalProtocolError` at once, as :meth:`publish_confirmed` does -- or, if
        such a channel is closed, why it closed.
        """
        core = self._core
        cid = self.channel_id
        # (The core is asked only while this channel is open: once it has closed, its id
        # may be another channel's.)
        if not self._confirm_selected and (self._closed or not core.is_confirm_mode(cid)):
            # Nothing would ever be confirmed: True would pass unconfirmed publishes off as
            # confirmed ones.
            if self._closed:
                self._raise_closed()
            raise LocalProtocolError("wait_for_confirms needs confirm mode (confirm_select())")
        deadline = self._deadline(timeout)
        yield Wait(lambda: core.unconfirmed_count(cid) == 0 or self._closed, deadline, "publisher confirms")
        if self._returns:
            self._run_returns()
        if self._closed and (self._lost_tags or core.unconfirmed_count(cid)):
            self._raise_closed()
        if self._nacked:
            tags, self._nacked = self._nacked, []
            raise PublishNacked(f"the broker nacked {len(tags)} publish(es): {tags[:10]}", tags)
        return True

    @operation
    def publish_confirmed(
        self,
        msg: Message | bytes | str,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        timeout: float | None = None,
    ) -> Op[bool]:
        """Publish and wait for this one publish's confirm (confirm mode must be on).

        Returns True when the broker acked it and did not return it; False when it was
        returned as unroutable (``mandatory``); raises :class:`PublishNacked` on a nack.
        The returned message itself goes to ``on_return`` when that is set; without it, it
        is dropped -- False is the report -- rather than kept in :attr:`returned`, where
        the returns of plain ``basic_publish(mandatory=True)`` calls wait for the caller
        (returns of earlier publishes that this call hands over still go there).
        ``timeout`` bounds the whole call: a wait while the broker blocks the connection
        (then :class:`BlockedTimeout`, nothing published), and the wait for the confirm.
        """
        if self._closed:
            self._raise_closed()
        if not self._core.is_confirm_mode(self.channel_id):
            raise LocalProtocolError("publish_confirmed needs confirm mode (confirm_select())")
        deadline = self._deadline(timeout)
        yield from self._unblocked(deadline)
        # The tag is registered (under the lock) before the publish can be written, so its
        # confirm cannot arrive unnoticed.
        tag = self._publish_now(msg, exchange, routing_key, mandatory, False, wait_tag=True)
        assert tag is not None
        waited = self._waited_tags
        try:
            yield Wait(lambda: waited[tag] is not None or self._closed, deadline, "the publish's confirm")
            ack = waited[tag]
        finally:
            waited.pop(tag, None)
            returned = tag in self._waited_returned
            self._waited_returned.discard(tag)
        if ack is None:
            self._raise_closed()
        if self._returns:
            self._run_returns()
        if not ack:
            if tag in self._nacked:
                self._nacked.remove(tag)
            raise PublishNacked(f"the broker nacked publish {tag}", [tag])
        return not returned

    # ------------------------------------------------------------------ tx, flow, access

    @operation
    def tx_select(self, timeout: float | None = None) -> Op[None]:
        """``tx.select``: the channel becomes transactional."""
        yield from self._rpc("tx.select", timeout)

    @operation
    def tx_commit(self, timeout: float | None = None) -> Op[None]:
        """``tx.commit``: publishes and acks since the last commit take effect."""
        yield from self._rpc("tx.commit", timeout)

    @operation
    def tx_rollback(self, timeout: float | None = None) -> Op[None]:
        """``tx.rollback``: publishes and acks since the last commit are discarded."""
        yield from self._rpc("tx.rollback", timeout)

    @operation
    def flow(self, active: bool, timeout: float | None = None) -> Op[bool]:
        """``channel.flow`` from the client: ask the broker to pause (False) or resume (True)
        deliveries.  Returns what ``flow-ok`` says.  (RabbitMQ refuses ``active=False`` with
        540 not-implemented, which closes the connection.)"""
        ok = yield from self._rpc("channel.flow", timeout, active=active)
        return bool(ok.active)

    @operation
    def access_request(
        self, realm: str = "/data", exclusive: bool = False, passive: bool = False,
        active: bool = True, write: bool = True, read: bool = True, timeout: float | None = None,
    ) -> Op[int]:
        """0-8's ``access.request``; the ticket it returns is used by later methods."""
        ok = yield from self._rpc(
            "access.request", timeout, realm=realm, exclusive=exclusive, passive=passive,
            active=active, write=write, read=read,
        )
        with self.connection._lock:
            self._core.set_ticket(self.channel_id, ok.ticket)
        self._publish_methods.clear()  # they carry the old ticket
        return int(ok.ticket)
