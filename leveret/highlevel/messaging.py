"""kombu's :class:`Producer` and :class:`Consumer`, safe by default.

* A :class:`Producer` puts its channel in confirm mode (``confirm.select``) and, unless told
  ``wait=False``, waits for the broker's ack of each publish: a nack raises
  :class:`~leveret.client.PublishNacked`, a publish to a missing exchange raises
  ``NotFound``, and a ``mandatory`` publish no queue took raises
  :class:`~leveret.highlevel.exceptions.MessageReturned` (or goes to ``on_return``).
  Pipelined publishes (``wait=False``, or ``with producer.batch():``) are settled by
  :meth:`Producer.flush`, which reports every nack and every return.
* A :class:`Consumer` hands each delivery to its callbacks as a high-level
  :class:`~leveret.highlevel.message.Message` that decodes only the content types in
  ``accept`` (JSON and raw bodies unless told otherwise -- never pickle by default).
  A consumer the broker cancels (its queue was deleted) is reported through
  :attr:`Consumer.on_cancel` and :attr:`Consumer.cancelled_by_broker`; the event loop keeps
  running.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import uuid
import weakref
from itertools import count
from typing import Any, Callable, Iterable, Iterator, Sequence, cast

from ..client import Message as ClientMessage
from ..client import ChannelClosedError, ConnectionClosedError, PublishNacked
from ..wire.errors import LocalProtocolError
from .compression import DEFAULT_MAX_SIZE, compress
from .connection import client_of
from .entity import Exchange, Queue, _is_hl_connection, delivery_mode_value, maybe_channel, maybe_declare, rebind
from .exceptions import MessageReturned, NotBoundError, OperationalError
from .message import Message
from .recovery import LOSS_ERRORS, RecoveringChannel, recovering_channel
from .serialization import prepare_accept_content, registry
from .transport import TransportChannel

__all__ = ["Producer", "Consumer"]

log = logging.getLogger("leveret.highlevel")

PERSISTENT = 2

# Returned messages nobody claims (raw publishes on a producer's channel) are moved to
# ``channel.returned`` past this many, so the per-channel store stays bounded.
_MAX_UNCLAIMED_RETURNS = 10000
# The most on_return callbacks of unconfirmed producers one channel keeps (see
# _ChannelState.untagged).
_MAX_RETURN_HANDLERS = 64


# ---------------------------------------------------------------------------------- returns


class _ChannelState:
    """What the high-level layer knows about one transport channel: whether it put it in
    confirm mode, and the returned messages (``basic.return``) by publish tag, waiting for
    the producer that published them to claim them."""

    def __init__(self, channel: Any) -> None:
        self.confirm = False
        self.returned: dict[int, ClientMessage] = {}
        # The on_return of each unconfirmed producer of this channel, held as kombu holds
        # them: a return may come long after its producer is gone (made for one publish
        # and dropped), and still goes to its on_return.  One entry per distinct callable;
        # past _MAX_RETURN_HANDLERS the oldest is dropped.
        self.untagged: list[Callable[..., Any]] = []
        self.previous: Callable[[ClientMessage], Any] | None = channel.on_return
        self.channel = weakref.ref(channel)

    def on_return(self, msg: ClientMessage) -> None:
        """Installed as the channel's ``on_return``; runs inside the client's waits."""
        tag = msg.delivery_info.get("publish_tag")
        if tag is not None:
            self.returned[tag] = msg
            if len(self.returned) > _MAX_UNCLAIMED_RETURNS:
                oldest = min(self.returned)
                self._fallback(self.returned.pop(oldest))
            return
        if self.untagged:
            for handler in list(self.untagged):
                exc = MessageReturned(msg)
                handler(exc, exc.exchange or "", exc.routing_key or "", msg)
        else:
            self._fallback(msg)

    def _fallback(self, msg: ClientMessage) -> None:
        if self.previous is not None:
            self.previous(msg)
            return
        channel = self.channel()
        if channel is not None:
            channel.returned.append(msg)

    def claim_latest(self) -> ClientMessage | None:
        if not self.returned:
            return None
        return self.returned.pop(max(self.returned))


_states: weakref.WeakKeyDictionary[Any, _ChannelState] = weakref.WeakKeyDictionary()


def _channel_state(channel: Any) -> _ChannelState:
    state = _states.get(channel)
    if state is None:
        state = _ChannelState(channel)
        _states[channel] = state
        channel.on_return = state.on_return
    return state


def _returned(msg: ClientMessage | None, exchange: str, routing_key: str) -> MessageReturned:
    if msg is None:
        return MessageReturned(None, 312, "NO_ROUTE", exchange, routing_key)
    return MessageReturned(msg)


# ---------------------------------------------------------------------------------- producer



def lost_connection_error(channel: Any, text: str) -> Exception | None:
    """When ``channel`` (not a recovering one) belongs to a transport connection that is
    gone -- lost or closed, the high-level connection may have connected again since --
    the error to raise for it: that connection's own (one of ``connection_errors``, as
    kombu's are), else a ConnectionClosedError with ``text``.  None while it is open."""
    if getattr(channel, "recovers", False):
        return None
    tconn = getattr(channel, "connection", None)
    if tconn is None or tconn.is_open:
        return None
    error = getattr(tconn, "_error", None) or getattr(tconn, "_closed_error", None)
    if isinstance(error, Exception):
        return error
    return ConnectionClosedError(text)


def _expiration_ms(seconds: Any) -> str:
    """``publish(expiration=seconds)`` as the ``expiration`` property: milliseconds, as a
    string.  A string given here is refused rather than guessed at (kombu multiplies it,
    ``"10" * 1000``): seconds or already milliseconds?"""
    number: float | None = None
    if not isinstance(seconds, (str, bytes, bool)):
        try:
            number = float(seconds)
        except (TypeError, ValueError):
            pass
    if number is None:
        raise TypeError(
            f"expiration is a number of seconds, not {type(seconds).__name__} (it becomes "
            "the expiration property, milliseconds as a string: expiration=10 sends '10000')"
        )
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expiration must be a finite number of seconds, 0 or more, not {seconds!r}")
    return str(int(seconds * 1000))


class Producer:
    """Publishes messages: ``Producer(channel_or_connection, exchange=None,
    routing_key=None, serializer=None, auto_declare=None, compression=None, on_return=None,
    confirm=True, republish=True)`` (None: the class attribute: ``""``, ``True``).

    Given a high-level :class:`~leveret.highlevel.Connection`, the producer uses its
    default channel, resolved at the first publish (and again if that channel closed).
    ``serializer`` None means: bytes as is (``application/data``), str as ``text/plain``,
    anything else JSON.  ``auto_declare`` declares ``exchange`` (once per connection, see
    :func:`~leveret.highlevel.maybe_declare`) before the first publish.

    ``confirm`` (default True) puts the channel in confirm mode; then every publish is
    confirmed by the broker before :meth:`publish` returns (or, pipelined, before
    :meth:`flush` returns).  ``on_return(exception, exchange, routing_key, message)``
    (kombu's signature; ``exception`` is a :class:`MessageReturned`, ``message`` the
    returned ``leveret.client.Message``) receives returned ``mandatory`` publishes; without
    it they raise :class:`MessageReturned`.  Without confirms a return comes whenever it
    comes: the channel keeps the ``on_return`` of its unconfirmed producers (as kombu
    does), so it is heard even once the producer is gone.

    On a connection made with ``autorecover=True`` a publish that meets a lost connection
    waits for the recovery and carries on.  ``republish`` (default True: at-least-once)
    then publishes again every publish whose confirm the loss swallowed -- pipelined ones
    at the next :meth:`publish` or :meth:`flush` -- so a message may arrive twice, never
    zero times; :attr:`republished` counts those second copies (an upper bound of the
    duplicates).  With ``republish=False`` they are reported instead: the publish raises
    the connection's error, :meth:`flush` an :class:`OperationalError` with
    ``.unconfirmed``.  A channel the broker closed with a channel error (a publish to a
    missing exchange: ``NotFound``) is no loss and is not recovered; the publish that met
    it raises that error, and the next publish goes out on the connection's default channel
    (as with ``retry=True``).  Without ``autorecover`` a producer given the connection does
    the same; one given a channel raises :class:`~leveret.client.ChannelClosedError` until
    revived (``retry=True`` revives it).
    """

    exchange: Exchange
    routing_key = ""
    serializer: str | None = None
    compression: str | None = None
    auto_declare = True
    on_return: Callable[[MessageReturned, str, str, ClientMessage | None], Any] | None = None

    def __init__(
        self,
        channel: Any,
        exchange: Exchange | str | None = None,
        routing_key: str | None = None,
        serializer: str | None = None,
        auto_declare: bool | None = None,
        compression: str | None = None,
        on_return: Callable[[MessageReturned, str, str, ClientMessage | None], Any] | None = None,
        confirm: bool = True,
        republish: bool = True,
    ) -> None:
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        self.exchange = exchange if exchange is not None else Exchange("")
        self.routing_key = routing_key or self.routing_key
        self.serializer = serializer or self.serializer
        self.compression = compression or self.compression
        self.on_return = on_return or self.on_return
        if auto_declare is not None:
            self.auto_declare = auto_declare
        self.confirm = confirm
        self._connection: Any = None  # the high-level Connection, when given one
        self._channel: TransportChannel | None = None
        self._plain: Any = None  # self._channel once set up, unless it is a RecoveringChannel
        self._state: _ChannelState | None = None  # _channel_state(self._plain)
        self._pending: dict[int, tuple[str, str]] = {}  # tag -> (exchange, routing_key)
        self._lost: list[tuple[str, str]] = []  # pipelined publishes on a lost channel
        self._batch_depth = 0
        #: Republish what a connection loss left unconfirmed (autorecover connections).
        self.republish = republish
        #: How many publishes were sent again after recoveries (at most this many arrived twice).
        self.republished = 0
        # With a recovering channel: what each pending tag published (to publish it again),
        # the generation of the channel the pending tags belong to, publishes waiting to be
        # sent again, and returns of publishes settled before a loss.
        self._retained: dict[int, tuple[ClientMessage, str, str, bool, bool]] = {}
        self._pending_gen: int | None = None
        self._orphans: list[tuple[ClientMessage, str, str, bool, bool]] = []
        self._stale_returns: list[MessageReturned] = []
        self.revive(channel)

    def __repr__(self) -> str:
        return f"<Producer: {self._channel or self._connection} exchange={self.exchange.name!r}>"

    def __reduce__(self) -> Any:
        return (Producer, (None, self.exchange, self.routing_key, self.serializer, self.auto_declare, self.compression))

    # -- channel

    def revive(self, channel: Any) -> None:
        """Use ``channel`` (or a connection's default channel) from now on: after a
        reconnect, :meth:`Connection.ensure` calls this with the new channel.  Pipelined
        publishes still unconfirmed on the old channel are remembered as lost:
        :meth:`flush` raises for them."""
        if self._pending:
            self._lost.extend(self._pending.values())
            self._pending.clear()
        self._forget_retained()
        if channel is None:
            self._channel = None
            return
        if _is_hl_connection(channel):
            self._connection = channel
            self._channel = None
            self.exchange = rebind(self.exchange, channel)
            return
        self._channel = channel
        self.exchange = rebind(self.exchange, channel)
        self._setup(channel)

    def _setup(self, channel: Any) -> None:
        state = _channel_state(channel)
        if self.confirm and not state.confirm:
            protocol = getattr(getattr(channel, "connection", None), "protocol", None)
            if protocol == "0-8":
                raise LocalProtocolError(
                    "AMQP 0-8 has no publisher confirms (confirm.select): this producer "
                    "cannot publish confirmed; make it with confirm=False"
                )
            channel.confirm_select()  # confirm.select / select-ok
            state.confirm = True
        # publish() goes straight to a channel it has set up, unless the channel recovers
        # (then the recovery loop of _publish runs every time).  Not before confirm mode is
        # on: a producer whose setup failed must not publish unconfirmed.
        self._state = state
        self._plain = None if isinstance(channel, RecoveringChannel) else channel
        if not self.confirm and self.on_return is not None:
            # A return without confirms comes whenever it comes: only on_return hears it.
            handlers = state.untagged
            if self.on_return not in handlers:
                handlers.append(self.on_return)
                if len(handlers) > _MAX_RETURN_HANDLERS:
                    # (a new callable per producer, a producer per message)
                    dropped = handlers.pop(0)
                    log.warning(
                        "leveret: more than %d distinct on_return callbacks on one channel; "
                        "the oldest (%r) hears no more returns", _MAX_RETURN_HANDLERS, dropped,
                    )

    @property
    def channel(self) -> TransportChannel:
        """The transport channel (for a connection: its default channel, opened on first
        use and replaced when it was closed -- unless publishes on it await confirms)."""
        ch = self._channel
        if ch is None or (self._connection is not None and not ch.is_open and not self._pending):
            if self._connection is None:
                raise NotBoundError("this producer has no channel (revive(channel) it)")
            if ch is not None:
                self._lost.extend(self._pending.values())
                self._pending.clear()
                self._forget_retained()
            ch = self._connection.default_channel
            self._channel = ch
            self._setup(ch)
        return ch

    @channel.setter
    def channel(self, value: Any) -> None:
        self.revive(value)

    @property
    def connection(self) -> Any:
        """The high-level :class:`~leveret.highlevel.Connection` (None if the channel is
        not one of its channels)."""
        if self._connection is not None:
            return self._connection
        return client_of(self._channel) if self._channel is not None else None

    def declare(self) -> None:
        """Declare the producer's exchange (``exchange.declare``; not the default one)."""
        if self.exchange.name:
            self.exchange.declare(channel=self.channel)

    def maybe_declare(self, entity: Any, retry: bool = False, **retry_policy: Any) -> bool:
        """:func:`~leveret.highlevel.maybe_declare` on this producer's channel."""
        if not entity:
            return False
        return maybe_declare(entity, self.channel, retry, **retry_policy)

    # -- publishing

    def publish(
        self,
        body: Any,
        routing_key: str | None = None,
        delivery_mode: int | str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        compression: str | None = None,
        exchange: Exchange | str | None = None,
        retry: bool = False,
        retry_policy: dict[str, Any] | None = None,
        declare: Iterable[Any] | None = None,
        expiration: float | None = None,
        timeout: float | None = None,
        wait: bool = True,
        confirm_timeout: float | None = None,
        **properties: Any,
    ) -> int | None:
        """Serialize ``body``, ``basic.publish`` it, and (in confirm mode, with ``wait``)
        wait for the broker's confirm.

        * ``body``: serialized with ``serializer`` (default: the producer's; None = bytes
          as is, str as text, else JSON) unless ``content_type`` is given -- then ``body``
          must be bytes or str and goes out as is.  ``compression`` (``"zlib"``, ``"bz2"``,
          ...) compresses it and names the method in the ``compression`` header.
        * ``delivery_mode``: default the exchange's, else persistent (2).
          ``expiration`` in seconds becomes the ``expiration`` property in milliseconds;
          ``priority``, when given (0 included), the ``priority`` property.
          Other keywords are content properties (``correlation_id``, ``reply_to`` (a
          :class:`Queue` stands for its name), ``message_id``, ...).
        * ``declare``: entities to :func:`~leveret.highlevel.maybe_declare` first (the
          producer's exchange is added when ``auto_declare``).
        * ``retry``: retry across connection loss through :meth:`Connection.ensure` with
          ``retry_policy`` (``max_retries``, ``interval_start``, ...) -- at-least-once.
        * ``wait`` (confirm mode): wait for the confirm -- a nack raises
          :class:`~leveret.client.PublishNacked`, a returned ``mandatory`` message raises
          :class:`MessageReturned` or goes to ``on_return``; ``timeout`` bounds the wait
          (``TimeoutError``: the message went out, and whether the broker takes it is not
          known -- e.g. while it blocks publishers for lack of memory; its subclass
          :class:`~leveret.client.BlockedTimeout` when the broker blocked the connection
          before the publish, which then did not go out).
          ``confirm_timeout`` (kombu 5.3's name), when given, is that bound instead of
          ``timeout``.  With ``wait=False`` the publish is pipelined and :meth:`flush`
          settles it.

        Returns the delivery tag of a pipelined publish, else None.
        """
        # Only what a publish asks for is built: with the defaults this is one serializer
        # call, one properties dict (the keywords') and one client Message.
        if headers:
            headers = dict(headers)  # the caller's dict is left alone
        if confirm_timeout is not None:
            timeout = confirm_timeout
        entities: Sequence[Any] = () if declare is None else list(declare)
        if routing_key is None:
            routing_key = self.routing_key
        target = self.exchange if exchange is None else exchange
        if isinstance(target, Exchange):
            exchange_name = target.name
            default_mode = target.delivery_mode
        else:
            exchange_name = target
            default_mode = self.exchange.delivery_mode
        if properties:
            reply_to = properties.get("reply_to")
            if reply_to is not None and isinstance(reply_to, Queue):
                properties["reply_to"] = reply_to.name
        if delivery_mode is not None:
            delivery_mode = delivery_mode_value(delivery_mode)
        properties["delivery_mode"] = delivery_mode or default_mode or PERSISTENT
        if priority is not None:
            properties["priority"] = priority
        if expiration is not None:
            properties["expiration"] = _expiration_ms(expiration)

        if not content_type:
            content_type, content_encoding, body = registry.dumps(body, serializer or self.serializer)
        elif isinstance(body, str):
            content_encoding = content_encoding or "utf-8"
            body = body.encode(content_encoding)
        elif isinstance(body, (bytes, bytearray, memoryview)):
            content_encoding = content_encoding or "binary"
        else:
            raise TypeError(
                f"with content_type={content_type!r} the body must be bytes or str (already "
                f"serialized), not {type(body).__name__}; or pass serializer= instead"
            )
        properties["content_type"] = content_type
        if content_encoding:
            properties["content_encoding"] = content_encoding
        if compression is None:
            compression = self.compression
        if compression:
            if not headers:
                headers = {}
            body, headers["compression"] = compress(body, compression)
        if headers:
            properties["headers"] = headers

        if self.auto_declare and self.exchange.name and self.exchange not in entities:
            entities = [*entities, self.exchange]
        wait = wait and self._batch_depth == 0

        if retry:
            conn = self.connection
            if conn is None:
                raise NotBoundError("retry=True needs a producer on a leveret.highlevel.Connection")
            fn = conn.ensure(self, self._publish, **(retry_policy or {}))
            return fn(  # type: ignore[no-any-return]
                body, properties, routing_key, mandatory, immediate, exchange_name, entities, timeout, wait,
            )
        channel = self._channel
        if channel is not None and channel is self._plain and channel.is_open:
            # The usual case: an open channel of a connection that does not recover.
            if not (wait or immediate or entities) and self._state.confirm:  # type: ignore[union-attr]
                # Pipelined (a batch, wait=False): what _publish_once does, inline.
                tag = channel.basic_publish(ClientMessage._outgoing(body, properties), exchange_name, routing_key, mandatory)
                self._pending[tag] = (exchange_name, routing_key)  # type: ignore[index]  # confirm mode: a tag
                return tag
            return self._publish_once(
                channel, None, None, body, properties, routing_key, mandatory, immediate,
                exchange_name, entities, timeout, wait,
            )
        return self._publish(body, properties, routing_key, mandatory, immediate, exchange_name, entities, timeout, wait)

    def _publish(
        self, body: Any, properties: dict[str, Any], routing_key: str, mandatory: bool,
        immediate: bool, exchange: str, declare: Sequence[Any], timeout: float | None, wait: bool,
    ) -> int | None:
        channel = self.channel
        rec = recovering_channel(channel)
        args = (body, properties, routing_key, mandatory, immediate, exchange, declare, timeout, wait)
        if rec is None:
            if not channel.is_open:
                error = lost_connection_error(channel, "the producer's connection is closed; nothing was published")
                if error is not None:
                    raise error
                # Say so plainly (the channel's own error is the cause), whatever the
                # transport's publish would make of a closed channel.
                raise ChannelClosedError(
                    f"the producer's channel {getattr(channel, 'channel_id', '?')} is closed; nothing was published"
                ) from getattr(channel, "close_error", None)
            return self._publish_once(channel, None, None, *args)
        while True:
            gen = rec.generation
            sent: list[bool] = []
            try:
                if self._pending or self._orphans:
                    self._resettle(rec)
                if rec.closed_by_broker:
                    # A channel error (a publish to a missing exchange...) closed it; recovery
                    # reopens only what a lost connection took.  Carry on where retry=True
                    # would: on the connection's default channel (kombu's producer on
                    # py-amqp publishes again too, on the channel py-amqp reopened).
                    # An autorecovering connection's channels are RecoveringChannels.
                    fresh = cast(RecoveringChannel, rec.client.default_channel)
                    self.revive(fresh)
                    rec = fresh
                    continue
                if not rec.is_open:
                    raise ChannelClosedError(
                        f"the producer's channel {getattr(rec, 'channel_id', '?')} is closed; nothing was published"
                    ) from rec.close_error
                return self._publish_once(rec, rec, sent, *args)
            except OperationalError:
                raise  # a recovery gave up: not a loss to recover from again
            except LOSS_ERRORS as exc:
                if rec.generation == gen and not rec.transport_lost():
                    raise  # not a lost connection
                rec.recover(exc)
                if sent:  # it may have reached the broker: the next copy is a republish
                    if not self.republish:
                        rec.client._recovery_event("publishes_lost", exc, 1)
                        raise
                    self._count_republished(rec, 1)

    def _publish_once(
        self, channel: Any, rec: RecoveringChannel | None, sent: list[bool] | None, body: Any,
        properties: dict[str, Any], routing_key: str, mandatory: bool, immediate: bool,
        exchange: str, declare: Sequence[Any], timeout: float | None, wait: bool,
    ) -> int | None:
        """One publish on an open ``channel``; ``sent`` (recovering channels) records that
        it may have left."""
        for entity in declare:
            maybe_declare(entity, channel)
        message = ClientMessage._outgoing(body, properties)
        state = self._state
        if state is None or channel is not self._plain:
            state = _channel_state(channel)
        if self.confirm and not state.confirm:
            self._setup(channel)  # its setup failed before: raises again rather than publish unconfirmed
            state = _channel_state(channel)
        if not state.confirm:
            if immediate:
                channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=True)
            else:
                channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)
            return None
        if sent is not None:
            sent.append(True)
        if wait and not immediate:
            ok = channel.publish_confirmed(
                message, exchange=exchange, routing_key=routing_key, mandatory=mandatory, timeout=timeout,
            )
            if not ok:
                # publish_confirmed ran the returns up to ours: ours has the highest tag.
                self._report_returns([_returned(state.claim_latest(), exchange, routing_key)])
            return None
        if immediate:
            tag = channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=True)
        else:
            tag = channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        self._pending[tag] = (exchange, routing_key)
        if rec is not None:
            self._retained[tag] = (message, exchange, routing_key, mandatory, immediate)
            self._pending_gen = rec.generation
        if wait:  # immediate: publish_confirmed does not take it
            self.flush(timeout)
            return None
        return tag  # type: ignore[no-any-return]

    # -- after a recovery

    def _forget_retained(self) -> None:
        """The pending publishes were reported lost: nothing to republish."""
        if self._orphans:
            self._lost.extend((o[1], o[2]) for o in self._orphans)
            self._orphans.clear()
        self._retained.clear()
        self._pending_gen = None

    def _count_republished(self, rec: RecoveringChannel, n: int) -> None:
        self.republished += n
        rec.client._recovery_event("republished", None, n)

    def _resettle(self, rec: RecoveringChannel) -> None:
        """After a recovery: the pipelined publishes of the lost channel that the broker had
        not confirmed are published again on the new one (or, ``republish=False``,
        reported lost at :meth:`flush`); returns of those it had confirmed are kept for
        :meth:`flush`."""
        if self._pending and self._pending_gen != rec.generation:
            unsettled = rec.unsettled(self._pending_gen) if self._pending_gen is not None else None
            state = _channel_state(rec)
            lost = 0
            for tag in sorted(self._pending):
                exchange, routing_key = self._pending[tag]
                returned = state.returned.pop(tag, None)
                if unsettled is not None and tag not in unsettled:
                    if returned is not None:  # confirmed before the loss, and returned
                        self._stale_returns.append(_returned(returned, exchange, routing_key))
                    continue
                retained = self._retained.get(tag)
                if retained is None or not self.republish:
                    self._lost.append((exchange, routing_key))
                    lost += 1
                else:
                    self._orphans.append(retained)
            self._pending.clear()
            self._retained.clear()
            self._pending_gen = None
            if lost:
                rec.client._recovery_event("publishes_lost", None, lost)
        attempts = 0
        try:
            while self._orphans:
                message, exchange, routing_key, mandatory, immediate = self._orphans[0]
                extra = {"immediate": True} if immediate else {}
                attempts += 1  # counted before: a copy may leave even if this call fails
                new_tag = rec.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory, **extra)
                self._orphans.pop(0)
                assert new_tag is not None  # the channel is in confirm mode
                self._pending[new_tag] = (exchange, routing_key)
                self._retained[new_tag] = (message, exchange, routing_key, mandatory, immediate)
                self._pending_gen = rec.generation
        finally:
            if attempts:
                self._count_republished(rec, attempts)

    def _report_returns(self, returns: list[MessageReturned]) -> None:
        if not returns:
            return
        if self.on_return is not None:
            for exc in returns:
                self.on_return(exc, exc.exchange or "", exc.routing_key or "", exc.message)
            return
        first = returns[0]
        first.returned = returns
        raise first

    @property
    def pending(self) -> int:
        """How many pipelined publishes await their confirm (or, after a recovery, to be
        published again)."""
        return len(self._pending) + len(self._orphans)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker confirmed every pipelined publish of this producer.

        Then reports, in this order: pipelined publishes lost with a previous channel
        (:class:`OperationalError`, ``.unconfirmed`` lists their ``(exchange,
        routing_key)``), nacks (:class:`~leveret.client.PublishNacked` listing the
        delivery tags; ``.returned`` holds any returns), returns (each to ``on_return``,
        else :class:`MessageReturned` for the first, with ``.returned`` listing all).
        ``TimeoutError`` past ``timeout`` (the publishes stay pending); a connection error
        if the connection died (its ``unconfirmed`` names the tags of unknown fate), the
        channel's error if the broker closed it -- publishes it had confirmed and returned
        before are still reported: to ``on_return``, else in the error's ``.returned``.

        On an ``autorecover`` connection a loss is waited out instead: the unconfirmed
        publishes are published again (``republish``) and their confirms awaited.
        """
        rec = recovering_channel(self._channel)
        if rec is not None:
            self._flush_recovering(rec, timeout)
            return
        if self._lost:
            lost, self._lost = self._lost, []
            exc = OperationalError(
                f"{len(lost)} pipelined publish(es) were on a channel that was lost before "
                f"the broker confirmed them: their fate is unknown"
            )
            exc.unconfirmed = lost  # type: ignore[attr-defined]
            raise exc
        if not self._pending:
            return
        channel = self._channel
        assert channel is not None  # publishes are pending on it
        state = _channel_state(channel)
        nacked: list[int] = []
        try:
            channel.wait_for_confirms(timeout)
        except PublishNacked as exc:
            nacked = [t for t in exc.delivery_tags if t in self._pending] or list(exc.delivery_tags)
        except TimeoutError:
            raise
        except BaseException as exc:
            pending, self._pending = self._pending, {}
            self._returns_at_failure(channel, state, pending, exc)
            raise
        pending, self._pending = self._pending, {}
        self._settle(state, pending, nacked, [])

    def _returns_at_failure(self, channel: Any, state: Any, pending: dict[int, Any], exc: BaseException) -> None:
        """The channel or connection failed during a flush: publishes the broker had
        confirmed before may have been returned, and those returns may still wait on the
        channel (they are handed over when someone waits on it).  Report them -- to
        ``on_return``, else as ``exc.returned`` -- lest they pass for delivered."""
        if getattr(channel, "_returns", None):
            try:
                channel._run_returns()
            except Exception:  # noqa: BLE001 - the failure being raised is the one to see
                log.exception("leveret: handing over returns after a failed flush failed")
        if not state.returned:
            return
        returns = [
            _returned(state.returned.pop(tag), *pending[tag])
            for tag in sorted(pending) if tag in state.returned
        ]
        if not returns:
            return
        if self.on_return is None:
            exc.returned = returns  # type: ignore[attr-defined]
            return
        try:
            self._report_returns(returns)
        except Exception:  # noqa: BLE001 - the failure being raised is the one to see
            log.exception("leveret: on_return failed after a failed flush")

    def _settle(self, state: Any, pending: dict[int, Any], nacked: list[int], returns: list[Any]) -> None:
        """The end of a flush: pair returned publishes with their messages, raise
        ``PublishNacked`` (carrying the returns) for any nack, else report the returns."""
        if state.returned:
            returns += [
                _returned(state.returned.pop(tag), *pending[tag])
                for tag in sorted(pending) if tag in state.returned
            ]
        if nacked:
            err = PublishNacked(f"the broker nacked {len(nacked)} publish(es): {nacked[:10]}", nacked)
            err.returned = returns
            raise err
        self._report_returns(returns)

    def _raise_lost(self) -> None:
        lost, self._lost = self._lost, []
        exc = OperationalError(
            f"{len(lost)} pipelined publish(es) were on a channel that was lost before "
            f"the broker confirmed them: their fate is unknown"
        )
        exc.unconfirmed = lost  # type: ignore[attr-defined]
        raise exc

    def _flush_recovering(self, rec: RecoveringChannel, timeout: float | None) -> None:
        """:meth:`flush` on a recovering channel: losses are recovered from, and what they
        left unconfirmed is published again before waiting again."""
        while True:
            gen = rec.generation
            nacked: list[int] = []
            try:
                if self._pending or self._orphans:
                    self._resettle(rec)
                if self._lost:
                    self._raise_lost()
                if not self._pending:
                    stale, self._stale_returns = self._stale_returns, []
                    self._report_returns(stale)
                    return
                gen = rec.generation
                try:
                    rec.wait_for_confirms(timeout)
                except PublishNacked as exc:
                    nacked = [t for t in exc.delivery_tags if t in self._pending] or list(exc.delivery_tags)
            except (TimeoutError, OperationalError):
                raise  # still pending / a recovery gave up (or lost publishes reported)
            except BaseException as exc:
                if isinstance(exc, LOSS_ERRORS) and (rec.generation != gen or rec.transport_lost()):
                    rec.recover(exc)  # OperationalError if it gives up: the publishes stay pending
                    continue
                # The channel failed (not the connection): as on any channel, the error
                # reports the pending publishes; those waiting to be sent again are lost.
                pending, self._pending = self._pending, {}
                self._forget_retained()
                self._returns_at_failure(rec.transport_channel, _channel_state(rec), pending, exc)
                raise
            state = _channel_state(rec)
            pending, self._pending = self._pending, {}
            self._retained.clear()
            self._pending_gen = None
            returns, self._stale_returns = self._stale_returns, []
            self._settle(state, pending, nacked, returns)
            return

    @contextlib.contextmanager
    def batch(self, timeout: float | None = None) -> Iterator[Producer]:
        """``with producer.batch(): producer.publish(...) ...``: the publishes inside are
        pipelined (as ``wait=False``) and :meth:`flush` runs at the end, raising for any
        nack or return: when the (outermost) block ends without an exception, every
        publish in it was confirmed.  On a broker connection they leave in chunks while
        the block runs, so the broker works on them while the rest are being made."""
        channel = self._channel
        if channel is None and self._batch_depth == 0 and self._connection is not None and self._connection.connected:
            channel = self.channel  # the default channel, which the first publish would open
        self._batch_depth += 1
        # The client connection writes the batch's publishes in chunks of about a hundred
        # (not one by one), from this thread, without waking its I/O thread.
        cork = getattr(getattr(channel, "connection", None), "corked", None)
        try:
            if cork is not None and self._batch_depth == 1:
                with cork():
                    yield self
            else:
                yield self
        except BaseException:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._pending:
                try:
                    self.flush(timeout)
                except Exception:  # noqa: BLE001 - the original error is the one to see
                    log.exception("leveret: flushing a failed batch also failed")
            raise
        self._batch_depth -= 1
        if self._batch_depth == 0:
            self.flush(timeout)

    def close(self) -> None:
        """Flush pipelined publishes (raising for any loss) and let go of the channel."""
        try:
            self.flush()
        finally:
            self._channel = None

    def release(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is None:
            self.flush()


# ---------------------------------------------------------------------------------- consumer

_tag_counter = count(1)
_TAG_PREFIX = f"leveret-{uuid.uuid4().hex[:12]}-"


class Consumer:
    """Consumes from queues: ``Consumer(channel_or_connection, queues=None, no_ack=None,
    auto_declare=True, callbacks=None, on_decode_error=None, on_message=None,
    accept=None, prefetch_count=None, tag_prefix=None,
    max_decompressed_size=DEFAULT_MAX_SIZE)``.

    At construction each queue is bound to the channel and (``auto_declare``) declared
    with its exchange and bindings, and ``basic.qos`` is sent when ``prefetch_count`` is
    given.  :meth:`consume` sends ``basic.consume`` per queue, with ``no_ack`` when the
    consumer says so or, left at None, when the queue does (``Queue(..., no_ack=True)``,
    as in kombu); deliveries then arrive
    during ``connection.drain_events()``: each becomes a
    :class:`~leveret.highlevel.message.Message` and goes to ``on_message(message)`` when
    set, else is decoded and handed to every ``callback(body, message)``.  A body that
    cannot be decoded -- or whose content type is not in ``accept`` (default JSON and raw
    bodies; :class:`~leveret.highlevel.exceptions.ContentDisallowed` is raised
    before anything is unpickled) -- goes to ``on_decode_error(message, exc)``, else the
    error propagates from ``drain_events`` (the message stays unacknowledged).

    When the broker cancels a consumer (its queue was deleted), ``on_cancel(queue_name,
    consumer_tag)`` is called if set, the queue's name is appended to
    :attr:`cancelled_by_broker`, and the queue is dropped from this consumer; the event
    loop is not interrupted.

    ``max_decompressed_size``: the most bytes a compressed body may expand to (None: no
    limit; see :mod:`~leveret.highlevel.compression`); a body past it goes to
    ``on_decode_error`` with :class:`~leveret.highlevel.exceptions.DecompressedSizeExceeded`.
    """

    def __init__(
        self,
        channel: Any,
        queues: Queue | Iterable[Queue] | None = None,
        no_ack: bool | None = None,
        auto_declare: bool = True,
        callbacks: Iterable[Callable[[Any, Message], Any]] | None = None,
        on_decode_error: Callable[[Message, Exception], Any] | None = None,
        on_message: Callable[[Message], Any] | None = None,
        accept: Iterable[str] | None = None,
        prefetch_count: int | None = None,
        tag_prefix: str | None = None,
        max_decompressed_size: int | None = DEFAULT_MAX_SIZE,
    ) -> None:
        #: The bound on a decompressed body (None: none).
        self.max_decompressed_size = max_decompressed_size
        #: True/False for every queue; None: each queue's own ``no_ack``.
        self.no_ack: bool | None = None if no_ack is None else bool(no_ack)
        self.auto_declare = True if auto_declare is None else bool(auto_declare)
        self.callbacks: list[Callable[[Any, Message], Any]] = list(callbacks or ())
        self.on_decode_error = on_decode_error
        self.on_message = on_message
        self.accept = prepare_accept_content(accept)
        self.prefetch_count = prefetch_count
        self.tag_prefix = _TAG_PREFIX if tag_prefix is None else tag_prefix
        #: ``on_cancel(queue_name, consumer_tag)``: the broker cancelled a consumer.
        self.on_cancel: Callable[[str | None, str], Any] | None = None
        #: Names of the queues whose consumers the broker cancelled.
        self.cancelled_by_broker: list[str] = []
        if queues is None:
            queue_list: list[Queue] = []
        elif isinstance(queues, Queue):
            queue_list = [queues]
        else:
            queue_list = list(queues)
        self._pending_queues = queue_list
        self._queues: dict[str, Queue] = {}
        self._active: dict[str, str] = {}  # queue name -> consumer tag
        self._active_no_ack: dict[str, bool] = {}
        self._tag_queue: dict[str, str] = {}  # consumer tag -> queue name
        #: The transport channel (None until :meth:`revive` gives it one, if not given).
        self.channel: TransportChannel | None = None
        self.revive(channel)

    def __repr__(self) -> str:
        return f"<Consumer: {list(self._queues)}>"

    @property
    def queues(self) -> list[Queue]:
        return list(self._queues.values())

    @property
    def connection(self) -> Any:
        return client_of(self.channel)

    def revive(self, channel: Any) -> None:
        """Move to ``channel`` (or a connection's default channel): rebind and (with
        ``auto_declare``) redeclare the queues, reapply ``prefetch_count``, and consume
        again from the queues that were consumed from."""
        channel = maybe_channel(channel)
        self.channel = channel
        rec = recovering_channel(channel)
        if rec is not None and getattr(self, "_renames_from", None) is not rec.topology:
            # Server-named queues get a new name when the connection recovers.
            rec.topology.add_rename_listener(self._queue_renamed, weak=True)
            self._renames_from = rec.topology
        previously = dict(self._active_no_ack)
        self._active.clear()
        self._active_no_ack.clear()
        self._tag_queue.clear()
        queues = list(self._queues.values()) or self._pending_queues
        self._pending_queues = []
        self._queues = {}
        for queue in queues:
            self._add(queue)
        if self.prefetch_count is not None:
            self.qos(prefetch_count=self.prefetch_count)
        for name, no_ack in previously.items():
            if name in self._queues:
                self._consume_one(self._queues[name], no_ack)

    def _queue_renamed(self, old: str, new: str) -> None:
        """A recovery re-declared the server-named queue ``old`` as ``new``."""
        queue = self._queues.pop(old, None)
        if queue is None:
            return
        queue.name = new
        self._queues[new] = queue
        for table in (self._active, self._active_no_ack):
            if old in table:
                table[new] = table.pop(old)  # type: ignore[assignment]
        for tag, name in list(self._tag_queue.items()):
            if name == old:
                self._tag_queue[tag] = new

    def _add(self, queue: Queue) -> Queue:
        queue = rebind(queue, self.channel)
        if self.auto_declare:
            queue.declare(channel=self.channel)
        self._queues[queue.name] = queue
        return queue

    def declare(self) -> None:
        """Declare every queue (with its exchange and bindings)."""
        for queue in self._queues.values():
            queue.declare(channel=self.channel)

    def add_queue(self, queue: Queue) -> Queue:
        """Add (and with ``auto_declare`` declare) a queue; :meth:`consume` starts
        consuming from it.  Returns the bound copy."""
        return self._add(queue)

    def register_callback(self, callback: Callable[[Any, Message], Any]) -> None:
        """Add a ``callback(body, message)``."""
        self.callbacks.append(callback)

    def consume(self, no_ack: bool | None = None) -> None:
        """``basic.consume`` on every queue not consumed from yet (each with a tag of
        ``tag_prefix`` + a counter)."""
        no_ack = self.no_ack if no_ack is None else no_ack
        for queue in list(self._queues.values()):
            if queue.name not in self._active:
                self._consume_one(queue, no_ack)

    def _consume_one(self, queue: Queue, no_ack: bool | None) -> None:
        if no_ack is None:
            no_ack = queue.no_ack
        tag = f"{self.tag_prefix}{next(_tag_counter)}"
        self._tag_queue[tag] = queue.name
        try:
            queue.consume(
                tag, callback=functools.partial(self._receive_callback, no_ack), no_ack=no_ack,
                on_cancel=self._on_broker_cancel, channel=self.channel,
            )
        except BaseException:
            self._tag_queue.pop(tag, None)
            raise
        self._active[queue.name] = tag
        self._active_no_ack[queue.name] = no_ack
        watch = getattr(client_of(self.channel), "_watch_consumer", None)
        if watch is not None:
            watch(self)

    def _channel_closed(self) -> None:
        """The broker closed this consumer's channel (its connection's ``drain_events``
        raised why): nothing is consumed any more; :meth:`revive` consumes again."""
        self._active.clear()
        self._tag_queue.clear()

    def consuming_from(self, queue: Queue | str) -> bool:
        """Whether a consumer is active on ``queue`` (a :class:`Queue` or a name)."""
        name = queue.name if isinstance(queue, Queue) else queue
        return name in self._active

    def _cancel_tag(self, tag: str) -> None:
        if self.channel is not None and self.channel.is_open:
            self.channel.basic_cancel(tag)

    def cancel(self) -> None:
        """``basic.cancel`` every active consumer (nothing is sent on a closed channel).
        Deliveries already received still reach the callbacks in ``drain_events``."""
        active = list(self._active.values())
        self._active.clear()
        self._active_no_ack.clear()
        for tag in active:
            self._tag_queue.pop(tag, None)
            self._cancel_tag(tag)

    def cancel_by_queue(self, queue: Queue | str) -> None:
        """Stop consuming from ``queue`` and drop it from this consumer."""
        name = queue.name if isinstance(queue, Queue) else queue
        tag = self._active.pop(name, None)
        self._active_no_ack.pop(name, None)
        self._queues.pop(name, None)
        if tag is not None:
            self._tag_queue.pop(tag, None)
            self._cancel_tag(tag)

    def purge(self) -> int:
        """``queue.purge`` every queue; returns the number of messages removed."""
        return sum(queue.purge(channel=self.channel) for queue in self._queues.values())

    def qos(self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False) -> None:
        """``basic.qos``: at most ``prefetch_count`` unacknowledged deliveries (0: no
        limit) for consumers started after this on the channel (``apply_global``: for
        the whole channel)."""
        self._bound().basic_qos(prefetch_size, prefetch_count, a_global=apply_global)

    def recover(self, requeue: bool = False) -> None:
        """``basic.recover``: redeliver this channel's unacknowledged messages."""
        self._bound().basic_recover(requeue=requeue)

    def flow(self, active: bool) -> bool:
        """``channel.flow``: ask the broker to pause or resume deliveries (RabbitMQ
        refuses to pause: 540 not-implemented, which closes the connection)."""
        return self._bound().flow(active)

    def _bound(self) -> TransportChannel:
        if self.channel is None:
            raise NotBoundError("this consumer has no channel (revive(channel) it)")
        return self.channel

    def _receive_callback(self, no_ack: bool, raw: ClientMessage) -> None:
        message = Message(raw, accept=self.accept, no_ack=no_ack, max_decompressed_size=self.max_decompressed_size)
        if self.on_message is not None:
            self.on_message(message)
            return
        try:
            decoded = message.decode()
        except Exception as exc:
            if self.on_decode_error is None:
                raise
            self.on_decode_error(message, exc)
            return
        self.receive(decoded, message)

    def receive(self, body: Any, message: Message) -> None:
        """Call every callback with ``(body, message)``; ``NotImplementedError`` if
        there is none (the message would otherwise be left unhandled)."""
        callbacks = self.callbacks
        if not callbacks:
            raise NotImplementedError("Consumer does not have any callbacks")
        for callback in callbacks:
            callback(body, message)

    def _on_broker_cancel(self, tag: str) -> None:
        name = self._tag_queue.pop(tag, None)
        if name is not None:
            self._active.pop(name, None)
            self._active_no_ack.pop(name, None)
            self._queues.pop(name, None)
        self.cancelled_by_broker.append(name if name is not None else tag)
        if self.on_cancel is not None:
            self.on_cancel(name, tag)
        else:
            log.warning("leveret: the broker cancelled consumer %s of queue %r", tag, name)

    def __enter__(self) -> Consumer:
        self.consume()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn = self.connection
        errors = conn.connection_errors if conn is not None else ()
        if exc is not None and isinstance(exc, errors):
            return
        try:
            self.cancel()
        except errors:
            log.debug("leveret: cancel at consumer exit failed", exc_info=True)
