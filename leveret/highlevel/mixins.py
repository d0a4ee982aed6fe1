"""kombu's :class:`ConsumerMixin`: a consumer program that survives connection loss.

::

    from leveret.highlevel import Connection, Queue
    from leveret.highlevel.mixins import ConsumerMixin

    class Worker(ConsumerMixin):
        def __init__(self, connection):
            self.connection = connection

        def get_consumers(self, Consumer, channel):
            return [Consumer(queues=[Queue("jobs")], callbacks=[self.on_job])]

        def on_job(self, body, message):
            print(body)
            message.ack()

    Worker(Connection("amqp://guest:guest@localhost//")).run()   # until should_stop

:meth:`ConsumerMixin.run` connects (a clone of :attr:`connection`, retrying for as long as
it takes), makes the consumers on a fresh channel, and runs their callbacks as messages
arrive.  When the connection is lost (network failure, broker restart, the broker closing
it) it connects again and consumes again: messages that were delivered but not acked are
redelivered by the broker (``message.delivery_info["redelivered"]``), so processing is
at-least-once.  Setting :attr:`should_stop` to True (from any thread, or a signal handler)
makes :meth:`run` return within about a second.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
from itertools import count
from time import monotonic, sleep
from typing import Any, Iterator

from ..client import ChannelClosedError
from ..wire.errors import LeveretError
from .exceptions import ConsumerCancelled, OperationalError
from .messaging import Consumer, Producer

__all__ = ["ConsumerMixin", "ConsumerProducerMixin", "TokenBucket"]

log = logging.getLogger("leveret.highlevel")


class TokenBucket:
    """A rate limit: ``fill_rate`` tokens a second, at most ``capacity`` saved up.
    :meth:`run` takes one per (re)start, so a consumer that keeps failing restarts at most
    ``fill_rate`` times a second.  Thread-safe."""

    def __init__(self, fill_rate: float, capacity: float = 1) -> None:
        self.fill_rate = float(fill_rate)
        self.capacity = float(capacity)
        self._tokens = self.capacity
        self._stamp = monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.fill_rate)
        self._stamp = now

    def can_consume(self, tokens: float = 1) -> bool:
        """Take ``tokens`` if there are that many; returns whether it did."""
        with self._lock:
            self._refill()
            if tokens <= self._tokens:
                self._tokens -= tokens
                return True
            return False

    def expected_time(self, tokens: float = 1) -> float:
        """Seconds until ``tokens`` are there (0 if they are)."""
        with self._lock:
            self._refill()
            return max(0.0, (tokens - self._tokens) / self.fill_rate)


class _StopRequested(Exception):
    """Raised inside connection retries when :attr:`ConsumerMixin.should_stop` is set."""


# Transport failures that are not leveret's own exceptions (the client wraps failures of an
# open connection in ConnectionLost; these come from connecting).  Any other OSError --
# FileNotFoundError from a callback, say -- is the program's, not the connection's.
_TRANSPORT_OS_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError,
)


class ConsumerMixin:
    """Consume with automatic reconnection (kombu's ``ConsumerMixin``).

    Give the class a :attr:`connection` (a :class:`~leveret.highlevel.Connection`; the
    mixin consumes on clones of it) and a :meth:`get_consumers`; call :meth:`run`.  The
    hooks (:meth:`on_connection_error`, :meth:`on_connection_revived`,
    :meth:`on_consume_ready`, :meth:`on_iteration`, :meth:`on_consume_end`,
    :meth:`on_decode_error`) do nothing but log unless overridden.

    ``connect_max_retries`` (None: for ever) bounds the retries of each connect; past it
    :meth:`run` raises :class:`~leveret.highlevel.exceptions.OperationalError`.
    ``connect_retry_policy`` holds :meth:`Connection.ensure_connection`'s
    ``interval_start``/``interval_step``/``interval_max`` (seconds).
    """

    #: The connection to consume from (set it in ``__init__``).
    connection: Any
    #: Retries of each connect before giving up (None: no limit).
    connect_max_retries: int | None = None
    #: Intervals between connect attempts: ``interval_start``, ``interval_step``, ``interval_max``.
    connect_retry_policy: dict[str, float] = {}
    #: Set to True to make :meth:`run` (and :meth:`consume`) return, within about a second.
    should_stop: bool = False

    # ------------------------------------------------------------------ to override

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Consumer]:
        """The consumers to run: ``Consumer(queues=[...], callbacks=[...])``
        (``Consumer`` is already bound to ``channel``, a fresh channel of a fresh
        connection, and to :meth:`on_decode_error`).  Called after every (re)connect."""
        raise NotImplementedError("a ConsumerMixin must define get_consumers()")

    def on_connection_revived(self) -> None:
        """A connection was established (first time or again), before the consumers are
        made."""

    def on_consume_ready(self, connection: Any, channel: Any, consumers: list[Consumer], **kwargs: Any) -> None:
        """The consumers are consuming (``basic.consume`` acknowledged) on ``channel`` of
        ``connection``; ``kwargs`` are :meth:`run`'s extra keywords."""

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Consuming ended normally (the consumers were cancelled; :attr:`should_stop`, or
        :meth:`consume`'s ``limit``); not called when the connection was lost."""

    def on_iteration(self) -> None:
        """Called before each wait for events (at least once a second)."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """A message's body could not be decoded, or its content type is not accepted.
        By default: log it and reject it without requeue (it is dropped, or
        dead-lettered where its queue has a dead-letter exchange) -- requeued, it would
        come straight back."""
        log.error(
            "leveret: cannot decode message body: %r (type: %r, encoding: %r, raw: %r)",
            exc, message.content_type, message.content_encoding, bytes(message.body[:256]),
        )
        if not message.acknowledged:
            message.reject(requeue=False)

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        """A connect attempt failed, or the connection (or the consumers' channel) was
        lost, or the broker cancelled a consumer; the next attempt is in ``interval``
        seconds."""
        if isinstance(exc, ConsumerCancelled):  # not a connection error: say what it is
            log.warning("leveret: the broker cancelled a consumer, starting again in %s seconds: %s", interval, exc)
        else:
            log.warning("leveret: broker connection error, trying again in %s seconds: %r", interval, exc)

    @contextlib.contextmanager
    def extra_context(self, connection: Any, channel: Any) -> Iterator[None]:
        """A context entered around consuming, after the consumers started."""
        yield

    # ------------------------------------------------------------------ machinery

    @property
    def restart_limit(self) -> TokenBucket:
        """The rate limit of (re)starts: one a second."""
        bucket = self.__dict__.get("_restart_limit")
        if bucket is None:
            bucket = self.__dict__["_restart_limit"] = TokenBucket(1)
        return bucket

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """The connection's ``connection_errors``."""
        return tuple(self.connection.connection_errors)

    @property
    def channel_errors(self) -> tuple[type[BaseException], ...]:
        """The connection's ``channel_errors``."""
        return tuple(self.connection.channel_errors)

    def _restart_errors(self) -> tuple[type[BaseException], ...]:
        return tuple(self.connection.recoverable_connection_errors) + self.channel_errors

    def _is_restartable(self, exc: BaseException) -> bool:
        if isinstance(exc, ConsumerCancelled):
            return True
        if not isinstance(exc, self._restart_errors()):
            return False
        if exc is self.__dict__.get("_connect_gave_up"):
            return False
        return isinstance(exc, LeveretError) or isinstance(exc, _TRANSPORT_OS_ERRORS)

    def _check_stop(self) -> None:
        if self.should_stop:
            raise _StopRequested()

    def _sleep(self, seconds: float) -> None:
        end = monotonic() + seconds
        while not self.should_stop:
            left = end - monotonic()
            if left <= 0:
                return
            sleep(min(left, 0.1))

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume until :attr:`should_stop` is set.

        Each round connects (retrying for as long as it takes, calling
        :meth:`on_connection_error` after each failed attempt), makes the consumers and
        consumes (:meth:`consume`).  When the connection or the consumers' channel is
        lost -- a recoverable connection error (``ConnectionLost``, ``ConnectionForced``,
        refused connects, ...) or a channel error -- or the broker cancels a consumer (its
        queue was deleted: the new round declares it again, as kombu's mixin does),
        :meth:`on_connection_error` is called and a new round starts, at most one a second.  Other exceptions (those of your
        callbacks, refused credentials) propagate.  ``kwargs`` go to :meth:`consume` and
        :meth:`on_consume_ready`.
        """
        bucket = self.restart_limit
        while not self.should_stop:
            if not bucket.can_consume(_tokens):
                self._sleep(bucket.expected_time(_tokens))
                continue
            try:
                for _ in self.consume(limit=None, **kwargs):
                    pass
            except Exception as exc:
                if not self._is_restartable(exc):
                    raise
                if self.should_stop:
                    break
                log.info("leveret: consumer connection lost: %r", exc)
                self.on_connection_error(exc, bucket.expected_time(_tokens))

    def consume(self, limit: int | None = None, timeout: float | None = None, safety_interval: float = 1,
                **kwargs: Any) -> Iterator[None]:
        """Connect, start the consumers, and yield after each event handled (a delivery
        whose callbacks ran, a return, a cancel...), ``limit`` times (None: until
        :attr:`should_stop`).

        Waits at most ``safety_interval`` seconds at a time, so :attr:`should_stop` is
        seen that often.  ``timeout``: raise ``TimeoutError`` when nothing happened for
        that long.  Connection errors propagate (:meth:`run` handles them), and so do
        ``ChannelClosedError`` when the broker closed the consumers' channel and
        :class:`~leveret.highlevel.exceptions.ConsumerCancelled` when it cancelled a
        consumer (its queue was deleted).
        """
        try:
            with self.consumer_context(**kwargs) as (conn, channel, consumers):
                idle_since = monotonic()
                for _ in range(limit) if limit is not None else count():
                    if self.should_stop:
                        break
                    self.on_iteration()
                    if not channel.is_open:
                        # The broker closed it (a channel error); the connection may be
                        # fine, but these consumers get nothing more.
                        raise ChannelClosedError(
                            "the consumers' channel was closed"
                        ) from getattr(channel, "_error", None)
                    wait = safety_interval
                    if timeout is not None:
                        wait = max(0.0, min(wait, timeout - (monotonic() - idle_since)))
                    try:
                        conn.drain_events(timeout=wait)
                    except TimeoutError:
                        conn.heartbeat_check()
                        if timeout is not None and monotonic() - idle_since >= timeout:
                            raise
                    except OSError:
                        if not self.should_stop:
                            raise
                    else:
                        idle_since = monotonic()
                        cancelled = [name for c in consumers for name in c.cancelled_by_broker]
                        if cancelled:
                            # Their queues were deleted: these consumers get nothing more.
                            raise ConsumerCancelled(
                                f"the broker cancelled the consumers of {', '.join(map(repr, cancelled))}",
                                cancelled,
                            )
                        yield
        except _StopRequested:
            return

    @contextlib.contextmanager
    def consumer_context(self, **kwargs: Any) -> Iterator[tuple[Any, Any, list[Consumer]]]:
        """``with self.consumer_context() as (connection, channel, consumers):``
        :meth:`Consumer` plus :meth:`extra_context` and :meth:`on_consume_ready`."""
        with self.Consumer() as (connection, channel, consumers):
            with self.extra_context(connection, channel):
                self.on_consume_ready(connection, channel, consumers, **kwargs)
                yield connection, channel, consumers

    def create_connection(self) -> Any:
        """A new connection like :attr:`connection` (a clone: lazy, not connected)."""
        return self.connection.clone()

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[Any]:
        """``with self.establish_connection() as conn:`` a new connection, connected
        (retrying as the class says, calling :meth:`on_connection_error`); closed at the
        end."""
        with self.create_connection() as conn:
            try:
                conn.ensure_connection(
                    self.on_connection_error, self.connect_max_retries,
                    callback=self._check_stop, **self.connect_retry_policy,
                )
            except OperationalError as exc:
                self.__dict__["_connect_gave_up"] = exc  # run() lets this one out
                raise
            yield conn

    @contextlib.contextmanager
    def Consumer(self) -> Iterator[tuple[Any, Any, list[Consumer]]]:
        """``with self.Consumer() as (connection, channel, consumers):`` connect, open
        a channel, make the consumers (:meth:`get_consumers`) and start them; at the end
        cancel them (:meth:`on_consume_end`) and close the connection."""
        with self.establish_connection() as conn:
            self.on_connection_revived()
            log.info("leveret: connected to %s", conn.as_uri())
            channel = conn.default_channel
            bound = functools.partial(Consumer, channel, on_decode_error=self.on_decode_error)
            consumers = list(self.get_consumers(bound, channel))
            with contextlib.ExitStack() as stack:
                for consumer in consumers:
                    stack.enter_context(consumer)
                yield conn, channel, consumers
            log.debug("leveret: consumers cancelled")
            self.on_consume_end(conn, channel)


class ConsumerProducerMixin(ConsumerMixin):
    """A :class:`ConsumerMixin` that also publishes (replies, follow-up tasks) through
    :attr:`producer`, on a connection of its own: publishing never waits behind the
    consumers' traffic, and a blocked publisher connection (``connection.blocked``) does
    not stop consumption."""

    _producer_connection: Any = None

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Closes the producer connection."""
        self._release_producer_connection()

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """:meth:`ConsumerMixin.run`, and the producer connection closed however it ends
        (an exception included, unlike kombu's, which leaves it open until the object goes)."""
        try:
            super().run(_tokens, **kwargs)
        finally:
            self._release_producer_connection()

    def _release_producer_connection(self) -> None:
        conn, self._producer_connection = self._producer_connection, None
        if conn is not None:
            conn.release()

    @property
    def producer(self) -> Producer:
        """A :class:`~leveret.highlevel.Producer` on :attr:`producer_connection`'s
        default channel (confirmed publishes)."""
        return Producer(self.producer_connection)

    @property
    def producer_connection(self) -> Any:
        """A clone of :attr:`connection` used only for publishing, connected on first
        use (retrying as for consuming)."""
        conn = self._producer_connection
        if conn is None:
            conn = self.connection.clone()
            conn.ensure_connection(
                self.on_connection_error, self.connect_max_retries, **self.connect_retry_policy,
            )
            self._producer_connection = conn
        return conn
