"""The client layer's message: a body and its content properties."""

from __future__ import annotations

from typing import Any, Protocol

from ..wire import amqp0_9_1

__all__ = ["Message", "MessageChannel", "PROPERTY_NAMES"]

#: Basic's content properties, in flag order (the same names in 0-9-1 and 0-8; a test checks).
PROPERTY_NAMES: tuple[str, ...] = amqp0_9_1.Basic.Properties.FIELDS
_NAMES = frozenset(PROPERTY_NAMES)
_new = object.__new__


def _body_error(body: object) -> TypeError:
    return TypeError(
        f"a message body is bytes, bytearray, memoryview or str, not {type(body).__name__} "
        "(serialize it first, or use the high-level Producer, which does)"
    )


def _compared(properties: dict[str, Any]) -> dict[str, Any]:
    """``properties`` as messages compare them: empty headers are no headers (reading
    :attr:`Message.headers` of a message without them sets them to ``{}``)."""
    if "headers" in properties and not properties["headers"]:
        return {name: value for name, value in properties.items() if name != "headers"}
    return properties


class MessageChannel(Protocol):
    """What a received message needs from the channel it arrived on, and so what
    :attr:`Message.channel` offers whatever the transport: :class:`leveret.client.Channel`,
    :class:`leveret.client.AsyncChannel`, the memory transport's ``MemoryChannel`` and
    the high-level layer's ``RecoveringChannel`` all have these members (a type checker
    proves it in ``tests/test_typing.py``).  Anything else belongs to one transport:
    narrow the type first.

    A :class:`typing.Protocol` for type checkers: nothing derives from it.  The three
    settle calls send ``basic.ack`` / ``basic.nack`` / ``basic.reject`` and do not wait
    for a reply.
    """

    @property
    def channel_id(self) -> int: ...

    @property
    def is_open(self) -> bool: ...

    def basic_ack(self, delivery_tag: int | None, multiple: bool = False) -> None: ...

    def basic_nack(self, delivery_tag: int | None, multiple: bool = False, requeue: bool = True) -> None: ...

    def basic_reject(self, delivery_tag: int | None, requeue: bool = True) -> None: ...


class Message:
    """A message to publish or one that arrived.

    ``Message(body, **properties)``: ``body`` is bytes (a ``str`` is sent UTF-8 encoded, and
    ``content_encoding`` defaults to ``"utf-8"`` then); the keywords are Basic's content
    properties (``content_type``, ``delivery_mode``, ``headers``, ...).  Unknown keywords are
    a ``TypeError``.

    A received message also has ``delivery_info`` (``consumer_tag``, ``delivery_tag``,
    ``redelivered``, ``exchange``, ``routing_key``, and ``message_count`` for ``basic.get``),
    ``channel`` (the :class:`MessageChannel` it arrived on; None on a message built here),
    and ``ack()``, ``nack()``, ``reject()``.
    """

    __slots__ = ("body", "_properties", "_info", "channel", "_props", "_method")

    #: The body.  Always ``bytes`` on a received message, and so typed; a message built
    #: from a ``bytearray`` or ``memoryview`` keeps that object as it is (a publish sends
    #: a copy taken when it is called, so the object may change once the publish has
    #: returned), and a ``str`` is stored UTF-8 encoded.
    body: bytes

    def __init__(self, body: bytes | bytearray | memoryview | str = b"", **properties: Any) -> None:
        if type(body) is not bytes:
            if isinstance(body, str):
                body = body.encode("utf-8")
                properties.setdefault("content_encoding", "utf-8")
            elif not isinstance(body, (bytes, bytearray, memoryview)):
                raise _body_error(body)
        unknown = properties.keys() - _NAMES
        if unknown:
            raise TypeError(f"unknown message properties: {', '.join(sorted(unknown))}")
        self.body = body  # type: ignore[assignment]  # bytes-like, kept as given (see body)
        self._properties: dict[str, Any] | None = properties
        self._info: dict[str, Any] | None = {}
        self.channel: MessageChannel | None = None
        self._props: Any = None
        self._method: Any = None

    @classmethod
    def _outgoing(cls, body: bytes | bytearray | memoryview | str, properties: dict[str, Any]) -> Message:
        """``Message(body, **properties)`` for a caller that owns ``properties`` (the dict is
        kept, not copied); an unknown name is still a ``TypeError``, from the publish."""
        if type(body) is not bytes and not isinstance(body, (bytearray, memoryview)):
            return cls(body, **properties)  # a str, or the TypeError
        self = cls.__new__(cls)
        self.body = body  # type: ignore[assignment]  # bytes-like, kept as given (see body)
        self._properties = properties
        self._info = {}
        self.channel = None
        self._props = None
        self._method = None
        return self

    @classmethod
    def _received(cls, channel: MessageChannel | None, method: Any, props: Any, body: bytes) -> Message:
        self = _new(cls)
        self.body = body
        self._props = props
        self._properties = None  # built from _props on first use
        self._info = None  # built from _method on first use
        self._method = method
        self.channel = channel
        return self

    @property
    def delivery_info(self) -> dict[str, Any]:
        """What the delivering method said: ``consumer_tag``, ``delivery_tag``,
        ``redelivered``, ``exchange``, ``routing_key`` (``message_count`` for ``basic.get``;
        ``reply_code``/``reply_text`` for a returned message)."""
        info = self._info
        if info is None:
            method = self._method
            info = {
                name: getattr(method, name)
                for name in method.FIELDS
                if not name.startswith(("reserved", "ticket"))
            }
            self._info = info
        return info

    @delivery_info.setter
    def delivery_info(self, value: dict[str, Any]) -> None:
        self._info = value

    @property
    def properties(self) -> dict[str, Any]:
        """The content properties that are set, as a dict."""
        value = self._properties
        if value is None:
            props = self._props
            value = {} if props is None else {
                n: v for n in props.FIELDS if (v := getattr(props, n)) is not None
            }
            self._properties = value
        return value

    @properties.setter
    def properties(self, value: dict[str, Any]) -> None:
        self._properties = value

    def __getattr__(self, name: str) -> Any:
        # msg.content_type, msg.priority, ... as in py-amqp
        if name in _NAMES:
            return self._property(name)
        raise AttributeError(name)

    def _property(self, name: str) -> Any:
        """One content property (None if not set), without building :attr:`properties`."""
        properties = self._properties
        if properties is None:
            props = self._props
            return None if props is None else getattr(props, name)
        return properties.get(name)

    @property
    def delivery_tag(self) -> int | None:
        """The broker's tag for this delivery (None for a message not delivered)."""
        if self._info is None:
            return getattr(self._method, "delivery_tag", None)
        return self._info.get("delivery_tag")

    def set_delivery_tag(self, delivery_tag: int) -> None:
        """Replace the tag :attr:`delivery_tag` (and ``delivery_info``) reports, and that
        :meth:`ack`, :meth:`nack` and :meth:`reject` send.  Nothing goes on the wire.  For
        code that wraps a channel and hands its deliveries on: leveret's autorecovering
        channels give each tag an ``int`` subclass that remembers the transport channel
        it counts on, so that a tag from before a recovery is refused, not sent."""
        if self._info is None and self._method is not None:
            self._method.delivery_tag = delivery_tag
        else:
            self.delivery_info["delivery_tag"] = delivery_tag

    @property
    def redelivered(self) -> bool | None:
        """Whether the broker delivered this message before (the ``redelivered`` bit of
        ``basic.deliver`` / ``basic.get-ok``); None for a message not delivered."""
        if self._info is None:
            return getattr(self._method, "redelivered", None)
        return self._info.get("redelivered")

    @property
    def headers(self) -> dict[str, Any]:
        """The ``headers`` property, the message's own dict: changes to it are the
        message's (``message.headers["x-retries"] = 1`` before publishing it again).  When
        the property is not set, an empty dict that becomes its value."""
        headers = self._property("headers")
        if headers is None:
            headers = {}
            props = self._props
            if self._properties is None and props is not None:
                props.headers = headers  # a received message's properties, not built yet
            else:
                self.properties["headers"] = headers
        return headers  # type: ignore[no-any-return]

    @property
    def content_type(self) -> str | None:
        return self._property("content_type")  # type: ignore[no-any-return]

    @property
    def content_encoding(self) -> str | None:
        return self._property("content_encoding")  # type: ignore[no-any-return]

    def ack(self, multiple: bool = False) -> None:
        """Send ``basic.ack`` for this delivery on the channel it arrived on."""
        channel, tag = self._delivered()
        channel.basic_ack(tag, multiple)

    def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Send ``basic.nack`` (RabbitMQ; 0-9-1) for this delivery."""
        channel, tag = self._delivered()
        channel.basic_nack(tag, multiple=multiple, requeue=requeue)

    def reject(self, requeue: bool = True) -> None:
        """Send ``basic.reject`` for this delivery."""
        channel, tag = self._delivered()
        channel.basic_reject(tag, requeue=requeue)

    def _delivered(self) -> tuple[MessageChannel, int]:
        """The channel and delivery tag to settle this message with."""
        channel = self.channel
        tag = self.delivery_tag
        if channel is None or not tag:
            raise ValueError(
                "this message has no channel to settle it on: it was built here, not "
                "delivered by a broker (or it was unpickled: channels do not travel)"
            )
        return channel, tag

    def __repr__(self) -> str:
        body = self.body
        shown = bytes(body[:40]) if not isinstance(body, str) else body[:40]
        more = "..." if len(body) > 40 else ""
        return f"<Message body={shown!r}{more} properties={self.properties!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as body, properties and ``delivery_info``, without :attr:`channel`: a
        channel belongs to its connection and process.  An unpickled message (say, the one
        a ``MessageReturned`` from a worker process holds) cannot be acknowledged."""
        return (_unpickled, (bytes(self.body), self.properties, self.delivery_info))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return bytes(self.body) == bytes(other.body) and _compared(self.properties) == _compared(
            other.properties
        )

    __hash__ = None  # type: ignore[assignment]


def _unpickled(body: bytes, properties: dict[str, Any], delivery_info: dict[str, Any]) -> Message:
    message = Message._outgoing(body, properties)
    message._info = delivery_info
    return message
