"""Declarations of exchanges, queues and bindings (kombu's ``Exchange``, ``Queue``,
``binding``) and :func:`maybe_declare`.

An entity is a plain, picklable description.  Bound to a channel (``exchange(channel)``,
``queue.bind(channel)``; a high-level :class:`~leveret.highlevel.Connection` stands for its
default channel) it becomes a handle for the AMQP methods on it: ``exchange.declare()``
sends ``exchange.declare``, ``queue.declare()`` sends ``exchange.declare`` for its exchange,
``queue.declare`` and ``queue.bind``, and so on.  Using an unbound entity for an operation
raises :class:`~leveret.highlevel.exceptions.NotBoundError` before anything is sent.

Every method waits for the broker's reply unless told ``nowait``; a refusal raises the
reply-code class from :mod:`leveret.wire.replies` (``NotFound``, ``PreconditionFailed``,
...) and leaves that channel closed (the connection stays usable).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable, Iterable, Mapping

from ..client import Message as ClientMessage
from .compression import DEFAULT_MAX_SIZE
from .exceptions import NotBoundError

__all__ = [
    "Exchange",
    "Queue",
    "binding",
    "maybe_declare",
    "declared_entities",
    "TRANSIENT_DELIVERY_MODE",
    "PERSISTENT_DELIVERY_MODE",
    "DELIVERY_MODES",
]

TRANSIENT_DELIVERY_MODE = 1
PERSISTENT_DELIVERY_MODE = 2
DELIVERY_MODES = {"transient": TRANSIENT_DELIVERY_MODE, "persistent": PERSISTENT_DELIVERY_MODE}


def delivery_mode_value(mode: int | str | None) -> int | None:
    """``'persistent'`` -> 2, ``'transient'`` -> 1; 1, 2 and None as given.  Any other
    value is a ``ValueError`` here: RabbitMQ refuses other delivery modes by closing the
    channel (406 PRECONDITION_FAILED)."""
    if mode is None or (isinstance(mode, int) and mode in (1, 2)):
        return mode
    if isinstance(mode, str) and mode in DELIVERY_MODES:
        return DELIVERY_MODES[mode]
    raise ValueError(f"delivery_mode must be 1, 2, 'transient' or 'persistent', not {mode!r}")


def _is_hl_connection(obj: Any) -> bool:
    # Duck-typed to avoid importing connection.py (which imports this module).
    return getattr(obj, "_is_leveret_hl_connection", False) is True


def maybe_channel(channel: Any) -> Any:
    """A high-level connection stands for its default channel; anything else as given."""
    if _is_hl_connection(channel):
        return channel.default_channel
    return channel


def _freeze(value: Any) -> Any:
    """A hashable stand-in for argument tables (dicts, lists) in declaration keys."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


# ---------------------------------------------------------------------------------- bound


class MaybeChannelBound:
    """The binding machinery shared by :class:`Exchange` and :class:`Queue`.

    ``_channel`` is a transport channel, a high-level connection (resolved to its
    ``default_channel`` on first use, so binding to a connection does not connect), or None.
    Pickling drops it: an unpickled entity is unbound.
    """

    _channel: Any = None
    _is_bound: bool = False

    def __call__(self, channel: Any) -> Any:
        """A copy of this entity bound to ``channel``."""
        return self.bind(channel)

    def bind(self, channel: Any) -> Any:
        """A copy of this entity bound to ``channel`` (this one stays as it is)."""
        return copy.copy(self).maybe_bind(channel)

    def maybe_bind(self, channel: Any) -> Any:
        """Bind this entity in place unless it is bound already; returns it."""
        if not self.is_bound and channel is not None:
            self._channel = channel
            self._is_bound = True
            self.when_bound()
        return self

    def revive(self, channel: Any) -> None:
        """Rebind to ``channel`` after the old one was lost (only if bound before)."""
        if self._is_bound:
            self._channel = channel
            self.when_bound()

    def when_bound(self) -> None:
        """Hook run after binding."""

    @property
    def is_bound(self) -> bool:
        return self._is_bound and self._channel is not None

    @property
    def channel(self) -> Any:
        """The transport channel this entity is bound to; :class:`NotBoundError` if none."""
        channel = self._channel
        if channel is None:
            raise NotBoundError(
                f"{self!r} is not bound to a channel: bind it first "
                f"(entity.bind(channel) or entity(channel)); nothing was sent"
            )
        if _is_hl_connection(channel):
            return channel.default_channel
        return channel

    def _chan(self, channel: Any) -> Any:
        return maybe_channel(channel) if channel is not None else self.channel

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_channel", None)
        state.pop("_is_bound", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _repr_prefix(self) -> str:
        return "" if self.is_bound else "unbound "


def rebind(entity: Any, channel: Any) -> Any:
    """A copy of ``entity`` bound to ``channel``, even if it was bound elsewhere."""
    clone = copy.copy(entity)
    clone._channel = None
    clone._is_bound = False
    return clone.maybe_bind(channel)


# ---------------------------------------------------------------------------------- exchange


class Exchange(MaybeChannelBound):
    """An exchange: ``Exchange(name, type="direct", durable=True, ...)``.

    ``type`` is ``direct``, ``fanout``, ``topic``, ``headers`` (or a plugin's type);
    ``delivery_mode`` (``'persistent'``/2, ``'transient'``/1) is the default of messages a
    :class:`~leveret.highlevel.Producer` publishes to it; ``no_declare`` makes
    :meth:`declare` send nothing (for exchanges that exist already and may not be declared).
    The nameless default exchange is never declared.
    """

    TRANSIENT_DELIVERY_MODE = TRANSIENT_DELIVERY_MODE
    PERSISTENT_DELIVERY_MODE = PERSISTENT_DELIVERY_MODE

    def __init__(
        self,
        name: str = "",
        type: str = "direct",
        channel: Any = None,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        delivery_mode: int | str | None = None,
        arguments: dict[str, Any] | None = None,
        no_declare: bool = False,
        passive: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            # kombu's from_dict passes routing_key to Exchange; it means nothing here.
            kwargs.pop("routing_key", None)
            if kwargs:
                raise TypeError(f"unexpected Exchange arguments: {', '.join(sorted(kwargs))}")
        self.name = name or ""
        self.type = type or "direct"
        self.durable = True if durable is None else bool(durable)
        self.auto_delete = bool(auto_delete)
        self.internal = bool(internal)
        self.delivery_mode = delivery_mode_value(delivery_mode)
        self.arguments = arguments
        self.no_declare = bool(no_declare)
        self.passive = bool(passive)
        self.maybe_bind(channel)

    # -- identity

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Exchange):
            return NotImplemented
        return self._declaration_key() == other._declaration_key() and (
            self.delivery_mode == other.delivery_mode
        )

    def __hash__(self) -> int:
        return hash(("E", self.name))

    def __repr__(self) -> str:
        return f"<{self._repr_prefix()}Exchange {self.name or '(default)'}({self.type})>"

    def __str__(self) -> str:
        return f"Exchange {self.name!r}({self.type})"

    def _declaration_key(self) -> tuple[Any, ...]:
        return (
            "E", self.name, self.type, self.durable, self.auto_delete, self.internal,
            _freeze(self.arguments or {}),
        )

    @property
    def can_cache_declaration(self) -> bool:
        """An auto-delete exchange may vanish at any time: :func:`maybe_declare` always
        redeclares it."""
        return not self.auto_delete

    # -- methods

    def declare(self, nowait: bool = False, passive: bool | None = None, channel: Any = None) -> None:
        """``exchange.declare`` (nothing for the default exchange or with ``no_declare``).

        ``passive`` (default: the exchange's own flag) only checks that it exists:
        ``NotFound`` if not.  A declaration that differs from the existing exchange raises
        ``PreconditionFailed``.
        """
        if self.no_declare or not self.name:
            return None
        passive = self.passive if passive is None else passive
        self._chan(channel).exchange_declare(
            exchange=self.name, type=self.type, passive=passive, durable=self.durable,
            auto_delete=self.auto_delete, internal=self.internal, nowait=nowait,
            arguments=self.arguments,
        )
        return None

    def delete(self, if_unused: bool = False, nowait: bool = False, channel: Any = None) -> None:
        """``exchange.delete``; it is forgotten by :func:`maybe_declare`'s cache."""
        chan = self._chan(channel)
        chan.exchange_delete(exchange=self.name, if_unused=if_unused, nowait=nowait)
        _forget(chan, self)

    def bind_to(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        channel: Any = None,
        **kwargs: Any,
    ) -> None:
        """``exchange.bind``: messages ``exchange`` routes with ``routing_key`` also go
        to this exchange (RabbitMQ's exchange-to-exchange binding)."""
        source = exchange.name if isinstance(exchange, Exchange) else exchange
        self._chan(channel).exchange_bind(
            destination=self.name, source=source, routing_key=routing_key, nowait=nowait,
            arguments=arguments,
        )

    def unbind_from(
        self,
        source: Exchange | str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        channel: Any = None,
    ) -> None:
        """``exchange.unbind``: undo :meth:`bind_to`."""
        name = source.name if isinstance(source, Exchange) else source
        self._chan(channel).exchange_unbind(
            destination=self.name, source=name, routing_key=routing_key, nowait=nowait,
            arguments=arguments,
        )

    def binding(
        self, routing_key: str = "", arguments: dict[str, Any] | None = None,
        unbind_arguments: dict[str, Any] | None = None,
    ) -> binding:
        """A :class:`binding` to this exchange."""
        return binding(self, routing_key, arguments, unbind_arguments)

    def Message(
        self,
        body: bytes | str,
        delivery_mode: int | str | None = None,
        properties: dict[str, Any] | None = None,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ClientMessage:
        """A message for :meth:`publish`: ``body`` (bytes, or str sent UTF-8 encoded) as
        is -- no serializer -- with ``delivery_mode`` defaulting to the exchange's."""
        props: dict[str, Any] = dict(properties or {}, **kwargs)
        mode = delivery_mode_value(delivery_mode)
        if mode is None:
            mode = self.delivery_mode
        if mode is not None:
            props["delivery_mode"] = mode
        for name, value in (
            ("priority", priority), ("content_type", content_type),
            ("content_encoding", content_encoding), ("headers", headers),
        ):
            if value is not None:
                props[name] = value
        return ClientMessage(body, **props)

    def publish(
        self,
        message: ClientMessage | bytes | str,
        routing_key: str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        exchange: str | None = None,
    ) -> int | None:
        """``basic.publish`` of ``message`` (a :meth:`Message`, or bytes/str) to this
        exchange.

        The raw operation, as in kombu: it does not wait for anything.  On a channel in
        confirm mode it returns the delivery tag (``channel.wait_for_confirms()`` then
        says whether the broker took it); returned mandatory messages land in
        ``channel.returned``.  :class:`~leveret.highlevel.Producer` does all of this for you.
        """
        if not isinstance(message, ClientMessage):
            message = self.Message(message)
        return self.channel.basic_publish(  # type: ignore[no-any-return]
            message, exchange=self.name if exchange is None else exchange,
            routing_key=routing_key or "", mandatory=mandatory, immediate=immediate,
        )


# ---------------------------------------------------------------------------------- binding


class binding:
    """A binding of a queue (or exchange) to ``exchange`` with ``routing_key`` and
    ``arguments`` (the match table of a headers exchange).  For :class:`Queue`'s
    ``bindings=[...]``."""

    def __init__(
        self,
        exchange: Exchange | str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        unbind_arguments: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        self.exchange = exchange
        self.routing_key = routing_key or ""
        self.arguments = arguments
        self.unbind_arguments = unbind_arguments

    def declare(self, channel: Any, nowait: bool = False) -> None:
        """Declare the binding's exchange (not the default one)."""
        ex = self.exchange
        if ex is not None and ex.name:
            ex.declare(nowait=nowait, channel=channel)

    def bind(self, entity: Queue | Exchange, nowait: bool = False, channel: Any = None) -> None:
        """Bind ``entity`` (a queue or an exchange) with this binding."""
        entity.bind_to(
            exchange=self.exchange or "", routing_key=self.routing_key,
            arguments=self.arguments, nowait=nowait, channel=channel,
        )

    def unbind(self, entity: Queue | Exchange, nowait: bool = False, channel: Any = None) -> None:
        """Undo :meth:`bind`."""
        entity.unbind_from(
            self.exchange or "", routing_key=self.routing_key,
            arguments=self.unbind_arguments, nowait=nowait, channel=channel,
        )

    def _key(self) -> tuple[Any, ...]:
        ex = self.exchange
        return (
            ex._declaration_key() if ex is not None else None, self.routing_key,
            _freeze(self.arguments or {}),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, binding):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        ex = self.exchange
        return hash((ex.name if ex is not None else None, self.routing_key))

    def __repr__(self) -> str:
        name = self.exchange.name if self.exchange is not None else None
        return f"<binding: {name}->{self.routing_key!r}>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange, "routing_key": self.routing_key,
            "arguments": self.arguments, "unbind_arguments": self.unbind_arguments,
        }


# ---------------------------------------------------------------------------------- queue


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class Queue(MaybeChannelBound):
    """A queue and how it is bound: ``Queue(name, exchange, routing_key, ...)``.

    ``exchange`` may be an :class:`Exchange` or a name (a direct exchange of that name);
    the default is the nameless default exchange (no binding is made: every queue is
    reachable there by its name).  ``bindings=[binding(...), ...]`` adds more bindings;
    as in kombu, a list, tuple or set of bindings given as ``exchange``
    (``Queue(name, [binding(x, "a"), binding(x, "b")])``) is taken as ``bindings`` (and
    the exchange is then the default one).
    ``name=""`` lets the broker pick a name; :meth:`declare` sets it.

    ``max_priority``, ``message_ttl`` (seconds), ``expires`` (seconds), ``max_length`` and
    ``max_length_bytes`` become the ``x-max-priority``, ``x-message-ttl`` (milliseconds),
    ``x-expires`` (milliseconds), ``x-max-length``, ``x-max-length-bytes`` arguments of
    ``queue.declare``.  ``exclusive`` implies ``auto_delete`` (as in kombu).
    """

    def __init__(
        self,
        name: str = "",
        exchange: Exchange | str | Iterable[binding] | None = None,
        routing_key: str = "",
        channel: Any = None,
        bindings: Iterable[binding] | None = None,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        queue_arguments: dict[str, Any] | None = None,
        binding_arguments: dict[str, Any] | None = None,
        consumer_arguments: dict[str, Any] | None = None,
        no_ack: bool | None = None,
        max_priority: int | None = None,
        message_ttl: float | None = None,
        expires: float | None = None,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        alias: str | None = None,
        on_declared: Callable[[str, int, int], Any] | None = None,
        no_declare: bool | None = None,
    ) -> None:
        self.name = name or ""
        self.bindings: set[binding] = set(bindings or ())
        if isinstance(exchange, (list, tuple, set, frozenset)):
            # kombu's Queue(name, [binding(...), binding(...)]): the bindings alone.
            self.bindings |= set(exchange)
            exchange = None
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        elif not isinstance(exchange, Exchange):
            exchange = Exchange("")
        self.exchange: Exchange = exchange
        self.routing_key = routing_key or ""
        self.durable = True if durable is None else bool(durable)
        self.exclusive = bool(exclusive)
        self.auto_delete = bool(auto_delete) or self.exclusive
        self.queue_arguments = queue_arguments
        self.binding_arguments = binding_arguments
        self.consumer_arguments = consumer_arguments
        self.no_ack = bool(no_ack)
        self.max_priority = max_priority
        self.message_ttl = message_ttl
        self.expires = expires
        self.max_length = max_length
        self.max_length_bytes = max_length_bytes
        self.alias = alias
        self.on_declared = on_declared
        self.no_declare = bool(no_declare)
        self.maybe_bind(channel)

    def when_bound(self) -> None:
        if self.exchange is not None:
            self.exchange = rebind(self.exchange, self._channel)

    # -- identity

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Queue):
            return NotImplemented
        return self._declaration_key() == other._declaration_key() and (
            self.no_ack == other.no_ack and self.alias == other.alias
            and _freeze(self.consumer_arguments or {}) == _freeze(other.consumer_arguments or {})
        )

    def __hash__(self) -> int:
        return hash(("Q", self.name))

    def __repr__(self) -> str:
        ex = self.exchange.name if self.exchange is not None else ""
        return f"<{self._repr_prefix()}Queue {self.name or '(server-named)'} -> {ex or '(default)'} -> {self.routing_key!r}>"

    def _declaration_key(self) -> tuple[Any, ...]:
        return (
            "Q", self.name, self.durable, self.exclusive, self.auto_delete,
            _freeze(self.effective_arguments() or {}),
            self.exchange._declaration_key() if self.exchange is not None else None,
            self.routing_key, _freeze(self.binding_arguments or {}),
            frozenset(b._key() for b in self.bindings), self.no_declare,
        )

    @property
    def can_cache_declaration(self) -> bool:
        """Queues that may vanish by themselves (auto-delete, exclusive, ``x-expires``)
        are always redeclared by :func:`maybe_declare`."""
        args = self.effective_arguments() or {}
        return not self.auto_delete and "x-expires" not in args

    def effective_arguments(self) -> dict[str, Any] | None:
        """``queue_arguments`` plus the x-arguments of ``max_priority``, ``message_ttl``,
        ``expires``, ``max_length`` and ``max_length_bytes``."""
        args = dict(self.queue_arguments or {})
        for key, value in (
            ("x-expires", _ms(self.expires)),
            ("x-message-ttl", _ms(self.message_ttl)),
            ("x-max-length", self.max_length),
            ("x-max-length-bytes", self.max_length_bytes),
            ("x-max-priority", self.max_priority),
        ):
            if value is not None:
                args[key] = value
        return args or None

    @classmethod
    def from_dict(cls, queue: str, **options: Any) -> Queue:
        """A queue from a kombu-style options dict: ``exchange``, ``exchange_type``,
        ``routing_key``/``binding_key``, ``durable`` (or ``exchange_durable``,
        ``queue_durable``), ``auto_delete`` (or ``exchange_auto_delete``,
        ``queue_auto_delete``), ``exchange_arguments``, ``delivery_mode``, and any
        :class:`Queue` keyword (``queue_arguments``, ``expires``, ``bindings``, ...)."""
        def pick(specific: str, general: str) -> Any:
            value = options.get(specific)
            return options.get(general) if value is None else value

        exchange = Exchange(
            options.get("exchange") or "",
            type=options.get("exchange_type") or "direct",
            delivery_mode=options.get("delivery_mode"),
            durable=pick("exchange_durable", "durable"),
            auto_delete=bool(pick("exchange_auto_delete", "auto_delete")),
            arguments=options.get("exchange_arguments"),
        )
        explicit = {
            "exchange", "exchange_type", "delivery_mode", "exchange_durable", "durable",
            "exchange_auto_delete", "auto_delete", "exchange_arguments", "queue_durable",
            "queue_auto_delete", "routing_key", "binding_key", "name",
        }
        passthrough = {
            "bindings", "exclusive", "queue_arguments", "binding_arguments",
            "consumer_arguments", "no_ack", "max_priority", "message_ttl", "expires",
            "max_length", "max_length_bytes", "alias", "on_declared", "no_declare",
        }
        unknown = set(options) - explicit - passthrough
        if unknown:
            raise TypeError(f"unknown queue options: {', '.join(sorted(unknown))}")
        return cls(
            queue,
            exchange=exchange,
            routing_key=options.get("binding_key") or options.get("routing_key") or "",
            durable=pick("queue_durable", "durable"),
            auto_delete=bool(pick("queue_auto_delete", "auto_delete")),
            **{k: v for k, v in options.items() if k in passthrough},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "exchange": self.exchange, "routing_key": self.routing_key,
            "bindings": list(self.bindings), "durable": self.durable,
            "exclusive": self.exclusive, "auto_delete": self.auto_delete,
            "queue_arguments": self.queue_arguments, "binding_arguments": self.binding_arguments,
            "consumer_arguments": self.consumer_arguments, "no_ack": self.no_ack,
            "max_priority": self.max_priority, "message_ttl": self.message_ttl,
            "expires": self.expires, "max_length": self.max_length,
            "max_length_bytes": self.max_length_bytes, "alias": self.alias,
        }

    # -- declaring

    def declare(self, nowait: bool = False, channel: Any = None) -> str:
        """Declare everything this queue needs, in order: its exchange
        (``exchange.declare``), itself (``queue.declare``), its binding to that exchange
        (``queue.bind``), and each of ``bindings`` (their exchanges, then ``queue.bind``).
        Nothing with ``no_declare``.  Returns the queue's name (the broker's choice for a
        server-named queue, which is also stored in :attr:`name`)."""
        if not self.no_declare:
            chan = self._chan(channel)
            if self.exchange is not None and self.exchange.name:
                self.exchange.declare(nowait=nowait, channel=chan)
            self.queue_declare(nowait=nowait, passive=False, channel=chan)
            if self.exchange is not None and self.exchange.name:
                self.queue_bind(nowait=nowait, channel=chan)
            for b in self.bindings:
                b.declare(chan, nowait=nowait)
                b.bind(self, nowait=nowait, channel=chan)
        return self.name

    def queue_declare(self, nowait: bool = False, passive: bool = False, channel: Any = None) -> Any:
        """``queue.declare`` alone; returns ``(queue, message_count, consumer_count)``
        (None with ``nowait``).  ``passive`` only checks that it exists (``NotFound``
        if not).  A server-named queue gets its name from ``declare-ok``; ``on_declared``
        is called with the three values."""
        if not self.name and nowait:
            raise ValueError("a server-named queue cannot be declared with nowait: its name comes in declare-ok")
        ret = self._chan(channel).queue_declare(
            queue=self.name, passive=passive, durable=self.durable, exclusive=self.exclusive,
            auto_delete=self.auto_delete, arguments=self.effective_arguments(), nowait=nowait,
        )
        if ret is not None:
            if not self.name:
                self.name = ret[0]
            if self.on_declared is not None:
                self.on_declared(*ret)
        return ret

    def queue_bind(self, nowait: bool = False, channel: Any = None) -> None:
        """``queue.bind`` to this queue's own exchange with its routing key."""
        self.bind_to(self.exchange, self.routing_key, self.binding_arguments, nowait=nowait, channel=channel)

    def bind_to(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        channel: Any = None,
    ) -> None:
        """``queue.bind`` of this queue to ``exchange`` with ``routing_key``."""
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        self._chan(channel).queue_bind(
            queue=self.name, exchange=name, routing_key=routing_key or "", nowait=nowait,
            arguments=arguments,
        )

    def unbind_from(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        channel: Any = None,
    ) -> None:
        """``queue.unbind`` (always waits for ``unbind-ok``: the method has no nowait)."""
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        self._chan(channel).queue_unbind(
            queue=self.name, exchange=name, routing_key=routing_key or "", arguments=arguments,
        )

    def unbind(self, channel: Any = None) -> None:
        """Undo :meth:`queue_bind`."""
        self.unbind_from(self.exchange, self.routing_key, self.binding_arguments, channel=channel)

    # -- messages

    def get(
        self, no_ack: bool | None = None, accept: Iterable[str] | None = None,
        max_decompressed_size: int | None = DEFAULT_MAX_SIZE,
    ) -> Any:
        """``basic.get``: one message as a high-level
        :class:`~leveret.highlevel.message.Message`, or None when the queue is empty.

        ``accept`` (serializer names or content types) limits what ``message.decode()``
        will decode; the default is JSON and raw bodies (text, bytes, types no serializer claims) -- never pickle.  Unless
        ``no_ack`` (default: the queue's), the message must be acked (``message.ack()``).
        ``max_decompressed_size``: the most bytes a compressed body may expand to (None: no
        limit).
        """
        from .message import Message

        no_ack = self.no_ack if no_ack is None else no_ack
        chan = self.channel
        raw = chan.basic_get(queue=self.name, no_ack=no_ack)
        if raw is None:
            return None
        return Message(
            raw, channel=chan, accept=_accept_set(accept), no_ack=no_ack,
            max_decompressed_size=max_decompressed_size,
        )

    def purge(self, nowait: bool = False, channel: Any = None) -> int:
        """``queue.purge``: remove the ready messages; returns how many."""
        return self._chan(channel).queue_purge(queue=self.name, nowait=nowait) or 0

    def delete(self, if_unused: bool = False, if_empty: bool = False, nowait: bool = False, channel: Any = None) -> int | None:
        """``queue.delete``; returns the number of messages deleted with it.
        ``if_unused``/``if_empty`` make the broker refuse (``PreconditionFailed``) a queue
        with consumers / with messages.  The queue is forgotten by :func:`maybe_declare`."""
        chan = self._chan(channel)
        count = chan.queue_delete(queue=self.name, if_unused=if_unused, if_empty=if_empty, nowait=nowait)
        _forget(chan, self)
        return count  # type: ignore[no-any-return]

    def consume(
        self,
        consumer_tag: str = "",
        callback: Callable[[ClientMessage], Any] | None = None,
        no_ack: bool | None = None,
        nowait: bool = False,
        on_cancel: Callable[[str], Any] | None = None,
        channel: Any = None,
    ) -> str:
        """``basic.consume`` on this queue; ``callback(message)`` gets each delivery as a
        ``leveret.client.Message`` inside ``drain_events``.  Returns the consumer tag."""
        no_ack = self.no_ack if no_ack is None else no_ack
        return self._chan(channel).basic_consume(  # type: ignore[no-any-return]
            queue=self.name, consumer_tag=consumer_tag or "", no_ack=no_ack, nowait=nowait,
            callback=callback, arguments=self.consumer_arguments, on_cancel=on_cancel,
        )

    def cancel(self, consumer_tag: str, channel: Any = None) -> None:
        """``basic.cancel`` of one consumer."""
        self._chan(channel).basic_cancel(consumer_tag)


def _accept_set(accept: Iterable[str] | None) -> set[str] | None:
    """Content types from names and types; None stays None: the serialization registry's
    default set (JSON and raw bodies -- never pickle unless enabled there)."""
    from .serialization import prepare_accept_content

    return prepare_accept_content(accept)


# ---------------------------------------------------------------------------------- cache

# What maybe_declare declared, per transport connection: a reconnect makes a new transport
# connection and so starts with nothing declared (auto-delete and exclusive entities of the
# old connection may be gone).
_declared: weakref.WeakKeyDictionary[Any, set[Any]] = weakref.WeakKeyDictionary()


def _cache_owner(channel: Any) -> Any:
    conn = getattr(channel, "connection", None)
    return conn if conn is not None else channel


def declared_entities(channel: Any) -> set[Any]:
    """The declaration keys :func:`maybe_declare` remembers for ``channel``'s connection."""
    owner = _cache_owner(channel)
    try:
        return _declared[owner]
    except KeyError:
        cache: set[Any] = set()
        _declared[owner] = cache
        return cache
    except TypeError:  # not weak-referenceable: no cache
        return set()


def _forget(channel: Any, entity: Exchange | Queue) -> None:
    cache = declared_entities(channel)
    prefix = entity._declaration_key()[:2]
    for key in [k for k in cache if k[:2] == prefix]:
        cache.discard(key)


def maybe_declare(entity: Exchange | Queue, channel: Any = None, retry: bool = False, **retry_policy: Any) -> bool:
    """Declare ``entity`` unless this connection already declared exactly that.

    The cache is per connection (a reconnect forgets it) and keyed by everything the
    declaration says (name, type, flags, arguments, bindings), so a different declaration
    of the same name is sent -- and refused by the broker if it conflicts.  Entities that
    may vanish by themselves (auto-delete, exclusive, ``x-expires``) are always declared.
    Returns True when something was declared.  ``retry=True`` retries across connection
    loss with ``retry_policy`` (see :meth:`Connection.ensure`).
    """
    if retry:
        chan = maybe_channel(channel) if channel is not None else entity.channel
        from .connection import client_of

        client = client_of(chan)
        if client is None:
            raise NotBoundError(f"{entity!r}: retry=True needs a channel of a leveret.highlevel.Connection")
        target = _Revivable(entity, chan)
        return client.ensure(target, target.declare, **retry_policy)()  # type: ignore[no-any-return]
    return _maybe_declare(entity, channel)


def _maybe_declare(entity: Exchange | Queue, channel: Any) -> bool:
    # The entity is declared through ``channel`` without being bound to it (as kombu).
    chan = maybe_channel(channel) if channel is not None else entity.channel
    cache = declared_entities(chan) if entity.can_cache_declaration else None
    if cache is not None and entity._declaration_key() in cache:
        return False
    entity.declare(channel=chan)
    if cache is not None:
        # After declare: a server-named queue's key holds its name now.
        cache.add(entity._declaration_key())
    return True


class _Revivable:
    """What ``maybe_declare(retry=True)`` hands to ``Connection.ensure``: after a reconnect
    the declaration goes through the new channel."""

    def __init__(self, entity: Exchange | Queue, channel: Any) -> None:
        self.entity = entity
        self.channel = channel

    def revive(self, channel: Any) -> None:
        self.channel = channel
        self.entity.revive(channel)

    def declare(self) -> bool:
        return _maybe_declare(self.entity, self.channel)
