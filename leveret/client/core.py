"""The sans-IO AMQP connection: bytes in, events and bytes out.

Theory of operation
-------------------
:class:`SansIOConnection` holds every protocol rule of a client connection and none of its
I/O.  A driver (the blocking one in :mod:`leveret.client.blocking`, or an asyncio one, or
another library) does four things in a loop:

1. ``data_to_send()`` and write those bytes to the transport;
2. read bytes from the transport and pass them to ``receive_data(data)`` (``b""`` at EOF),
   which returns a list of :mod:`~leveret.client.events` (pass ``now`` to it and to
   ``data_to_send`` as well for exact heartbeat timing; ``tick`` alone is enough);
3. call requests (``open_channel``, ``send_method``, ``publish``, ``ack``, ``close``...),
   which only queue bytes;
4. call ``tick(now)`` now and then so the core can queue heartbeats and notice a silent peer.

The core never blocks and never reads a clock: time comes in through ``now`` arguments.

States are kept in explicit tables.  ``CONNECTION_EXPECTS`` says which connection-class
methods the server may send in each connection state, ``CHANNEL_EXPECTS`` the same for
channel-class methods per channel state; anything else is a protocol violation by the peer,
answered with the ``connection.close`` the spec asks for (the core queues it) and raised as a
:class:`~leveret.wire.errors.RemoteProtocolError`.  After such an error the connection is in
state ``ERROR`` and every later call re-raises it.  A request that is illegal in the current
state raises :class:`~leveret.wire.errors.LocalProtocolError` and changes nothing.

Content (``basic.deliver``, ``get-ok``, ``return``) is assembled per channel: METHOD, then
HEADER, then BODY frames until ``body_size`` bytes; bodies arriving in many frames are kept
as a list of chunks and joined once.  A body larger than ``max_body_size`` is discarded as it
arrives, never buffered, and reported as :class:`~leveret.client.events.MessageTooLarge`.
A content whose properties do not decode (the frames sound, the values not: the broker passes
a publisher's properties through unread) is discarded the same way and reported as
:class:`~leveret.client.events.MessageUndecodable`; a content header frame may be as large as
the ``frame_max`` the broker offered, even when a smaller one was negotiated (RabbitMQ sends
publishers' headers whole).

Writing a driver
----------------
What the core leaves to its driver, and what its events do and do not say:

* **Time limits.**  The core keeps no timers but heartbeats.  ``tick`` returns None until
  ``ConnectionOpened`` (and always with heartbeats off), so the handshake, each reply a
  caller waits for and the ``close-ok`` after :meth:`SansIOConnection.close` need the
  driver's own deadline: a broker that is blocked, or just slow, may keep sending
  heartbeats and never answer.  When one passes, drop the transport and call
  ``connection_lost(reason)``.  (The bundled drivers use ``connection_timeout`` and
  ``rpc_timeout``.)  Keep calling ``tick`` after it returned None: heartbeats start with
  ``ConnectionOpened``.
* **Heartbeat inputs.**  ``last_received`` moves with ``receive_data(data, now)`` (bytes
  received without ``now`` count at the next ``tick``); ``last_sent`` moves only with
  ``data_to_send(now)``.  Without ``now`` there, heartbeats go out every half interval
  whatever else is sent, which is harmless.
* **The end of a connection** is one event: ``ConnectionClosed`` (after a close handshake,
  either side's; it lists unconfirmed publishes) or the ``ConnectionLost`` /
  ``RemoteProtocolError`` that ``receive_data`` or ``tick`` raises.  No ``ChannelClosed``
  follows per channel: every channel ends with the connection, and ``channel_state`` then
  reads ``CLOSED``.
* **Where replies come.**  Replies to synchronous requests (``queue.declare-ok``,
  ``basic.qos-ok``, ``confirm.select-ok``...) and ``update-secret-ok`` arrive as
  ``MethodReceived``, in the order the requests went out on their channel;
  ``basic.get-ok`` as ``MessageReceived`` and ``basic.get-empty`` as ``MethodReceived``;
  deliveries as ``MessageReceived``; confirms and nacks as ``PublishConfirmed`` (``ack``
  False for a nack);
  ``basic.return`` as ``MessageReturned``, held until the confirm that says which publish
  it returns; a consumer the broker cancels as ``ConsumerCancelled`` (the core answers
  ``basic.cancel`` itself when the broker asked for an answer); ``channel.open-ok``,
  ``channel.close`` / ``close-ok``, ``channel.flow``, ``connection.blocked`` /
  ``unblocked`` as their own events.  The core sends ``channel.close-ok``,
  ``connection.close-ok``, ``channel.flow-ok`` and heartbeats by itself.
* **AMQP 0-8** (``protocol="0-8"``, which RabbitMQ still accepts) has neither
  ``confirm.select`` nor ``basic.nack``, ``connection.blocked`` or
  ``connection.update-secret``: asking for one raises ``LocalProtocolError``, and the
  client properties do not claim those capabilities.  Its access tickets are the
  driver's: the core keeps one per channel (``set_ticket`` after ``access.request-ok``,
  ``ticket(channel_id)``) but does not fill the ``ticket`` field of the methods it is
  given; the bundled channels do, for every exchange, queue and basic method.  (RabbitMQ
  takes any ticket, 0 included.)
"""

from __future__ import annotations

import enum
import platform
from types import ModuleType
from typing import Any, Mapping

from ..wire import SPECS, UndecodableProperties
from ..wire.errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    SYNTAX_ERROR,
    AMQPError,
    EncodeError,
    FrameError,
    LocalProtocolError,
    RemoteProtocolError,
    UnexpectedFrame,
    again,
)
from ..wire.fields import encode_table
from ..wire.frames import (
    HEARTBEAT_FRAME,
    BodyFrame,
    ContentFrame,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    method_frame,
)
from ..wire.replies import error_for
from . import events as ev
from .events import _message_received, _publish_confirmed
from .url import encodes_as_utf8
from .errors import (
    AuthenticationError,
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionLost,
    VersionMismatch,
)

__all__ = [
    "SansIOConnection",
    "ConnState",
    "ChannelState",
    "PROTOCOLS",
    "DEFAULT_FRAME_MAX",
    "DEFAULT_CHANNEL_MAX",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_BODY_SIZE",
    "CLIENT_CAPABILITIES",
]

#: The protocol versions leveret speaks, by the name used in URLs (``?protocol=0-8``).
PROTOCOLS: Mapping[str, ModuleType] = SPECS  # 0-8's module is imported on first use

#: The SASL mechanisms the core can answer.
SASL_MECHANISMS = ("PLAIN", "AMQPLAIN", "EXTERNAL")

DEFAULT_FRAME_MAX = 131072
DEFAULT_CHANNEL_MAX = 2047
DEFAULT_HEARTBEAT = 60
DEFAULT_MAX_BODY_SIZE = 128 * 1024 * 1024

#: What the client announces in ``connection.start-ok``'s ``client-properties``.
CLIENT_CAPABILITIES: dict[str, bool] = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}


#: The method each capability is about, where the protocol versions differ.
_CAPABILITY_METHODS = {
    "publisher_confirms": "confirm.select",
    "exchange_exchange_bindings": "exchange.bind",
    "basic.nack": "basic.nack",
    "connection.blocked": "connection.blocked",
}


class ConnState(enum.Enum):
    AWAIT_START = "await-start"  # protocol header sent, waiting for connection.start
    AWAIT_TUNE = "await-tune"  # start-ok sent; secure or tune comes next
    AWAIT_OPEN_OK = "await-open-ok"  # tune-ok and open sent
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close, waiting for close-ok
    CLOSED = "closed"
    ERROR = "error"


class ChannelState(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"  # we sent channel.close; everything but close/close-ok is dropped
    CLOSED = "closed"


# The states the per-frame and per-publish paths test (here and in the drivers), as module
# globals: reading an Enum member through its class is several times slower in Python 3.11.
_OPEN = ConnState.OPEN
_CLOSING = ConnState.CLOSING
_CLOSED = ConnState.CLOSED
_CH_OPEN = ChannelState.OPEN
_CH_CLOSING = ChannelState.CLOSING
_CH_OPENING = ChannelState.OPENING

#: Connection-class methods the server may send, per connection state.
CONNECTION_EXPECTS: dict[ConnState, frozenset[str]] = {
    ConnState.AWAIT_START: frozenset({"connection.start"}),
    ConnState.AWAIT_TUNE: frozenset({"connection.secure", "connection.tune", "connection.close"}),
    ConnState.AWAIT_OPEN_OK: frozenset(
        {"connection.open-ok", "connection.close", "connection.redirect"}
    ),
    ConnState.OPEN: frozenset(
        {
            "connection.close",
            "connection.blocked",
            "connection.unblocked",
            "connection.update-secret-ok",
        }
    ),
    ConnState.CLOSING: frozenset({"connection.close", "connection.close-ok"}),
    # Our close crossed the server's: its close-ok for our close may still come.  (After a
    # close() during the handshake nothing is looked up: receive_data discards all input.)
    ConnState.CLOSED: frozenset({"connection.close-ok"}),
}

#: Channel-class methods the server may send, per channel state.
CHANNEL_EXPECTS: dict[ChannelState, frozenset[str]] = {
    ChannelState.OPENING: frozenset({"channel.open-ok", "channel.close"}),
    ChannelState.OPEN: frozenset(
        {"channel.flow", "channel.flow-ok", "channel.close", "channel.alert"}
    ),
    ChannelState.CLOSING: frozenset({"channel.close", "channel.close-ok"}),
}

# Methods only a server sends; a client asking to send one is a local error.
_SERVER_ONLY = frozenset(
    {
        "connection.start",
        "connection.secure",
        "connection.tune",
        "connection.open-ok",
        "connection.redirect",
        "connection.blocked",
        "connection.unblocked",
        "connection.update-secret-ok",
        "channel.open-ok",
        "channel.alert",
        "basic.deliver",
        "basic.return",
        "basic.get-ok",
        "basic.get-empty",
        "file.deliver",
        "file.return",
        "file.open-ok",
        "stream.deliver",
        "stream.return",
        "tunnel.request",
    }
)
# Methods the spec's chassis says only clients send, which RabbitMQ sends too: basic.cancel
# when a consumer's queue goes away (consumer_cancel_notify), in 0-8 as well.
_SERVER_SENDS_TOO = frozenset({"basic.cancel"})
# Methods with a dedicated request call in the core, so the state can follow them.
_DEDICATED = frozenset(
    {
        "connection.start-ok",
        "connection.secure-ok",
        "connection.tune-ok",
        "connection.open",
        "connection.close",
        "connection.close-ok",
        "connection.update-secret",
        "channel.open",
        "channel.close",
        "channel.close-ok",
        "channel.flow-ok",
    }
)


_SEND_PLAIN = 0  # asynchronous request: just queue it
_SEND_SYNC = 1  # synchronous request: remember the reply it waits for
_SEND_SPECIAL = 2  # synchronous and changes the channel's mode (confirm.select, tx.select)


def _send_kind(method: Any) -> int | str:
    """How :meth:`SansIOConnection.send_method` treats a method class; a str is the reason
    it refuses it."""
    name = method.NAME
    if name in _SERVER_ONLY or name in _DEDICATED or name.endswith("-ok"):
        return f"{name} is not a request a client sends this way"
    if method.HAS_CONTENT:
        return f"{name} carries content: use publish()"
    if name.startswith("connection."):
        return f"{name} belongs on channel 0"
    if name in ("confirm.select", "tx.select"):
        return _SEND_SPECIAL
    if method.SYNCHRONOUS and method.RESPONSES:
        return _SEND_SYNC
    return _SEND_PLAIN


class _Channel:
    """Per-channel protocol state (not a user-facing object)."""

    __slots__ = (
        "id",
        "state",
        "expect",
        "confirm",
        "tx",
        "next_tag",
        "unconfirmed",
        "c_method",
        "c_props",
        "c_size",
        "c_chunks",
        "c_received",
        "c_discard",
        "ticket",
        "flow_active",
        "close_error",
        "held_returns",
    )

    def __init__(self, channel_id: int) -> None:
        self.id = channel_id
        self.state = ChannelState.OPENING
        # Names of the replies we wait for, oldest first: a reply the channel did not ask
        # for is a protocol error of the peer.
        self.expect: list[frozenset[str]] = []
        self.confirm = False
        self.tx = False
        self.next_tag = 1
        # delivery tag -> ((exchange, routing_key), body, properties) for mandatory
        # publishes, else None.
        self.unconfirmed: dict[int, Any] = {}
        # basic.return events waiting for the confirm that says which publish they return.
        self.held_returns: list[ev.MessageReturned] = []
        self.c_method: Any = None  # content being assembled: method, then header, then body
        self.c_props: Any = None
        self.c_size = 0
        self.c_chunks: list[bytes] = []
        self.c_received = 0
        self.c_discard = False
        self.ticket = 0
        self.flow_active = True
        self.close_error: AMQPError | None = None


def _encoded_properties(properties: Any) -> Any:
    """Content properties as (flags, bytes), to compare what was published with what came
    back; ``None`` (no properties) is the empty header, and what cannot be encoded compares
    unequal to everything."""
    if properties is None:
        return (0, b"")
    try:
        return properties.encode_values()
    except Exception:  # noqa: BLE001 -- any failure just means "no match"
        return object()


def _rename_for(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map keyword names between 0-9-1 and 0-8 spellings (``no_wait``/``nowait``)."""
    fields = cls.FIELDS  # type: ignore[attr-defined]
    if "no_wait" in kwargs and "no_wait" not in fields and "nowait" in fields:
        kwargs["nowait"] = kwargs.pop("no_wait")
    elif "nowait" in kwargs and "nowait" not in fields and "no_wait" in fields:
        kwargs["no_wait"] = kwargs.pop("nowait")
    return kwargs



def _before_open_ok(ch: _Channel, method: Any) -> RemoteProtocolError:
    """A method on a channel the server has not yet answered channel.open for: it must
    send channel.open-ok first (or channel.close), so this is a violation, not something
    to drop unseen."""
    return RemoteProtocolError(
        f"{method.NAME} on channel {ch.id} before channel.open-ok", COMMAND_INVALID
    )

class SansIOConnection:
    """One client connection's protocol state.  See the module docstring.

    Construction queues the protocol header for ``protocol`` ("0-9-1" or "0-8"); the rest
    of the handshake (SASL, tune, open) runs inside :meth:`receive_data` as the server's
    methods arrive.  When ``connection.open-ok`` arrives a
    :class:`~leveret.client.events.ConnectionOpened` event is returned.

    ``frame_max``, ``channel_max`` and ``heartbeat`` are what the client would like; the
    ``connection.tune-ok`` it sends carries the lower of each and the server's value, where
    0 on either side means "no preference" -- RabbitMQ's rule, as its Java, .NET and Erlang
    clients apply it.  So ``heartbeat=0`` takes the broker's interval (60 s by default),
    and heartbeats are off only when the broker's is 0 as well.  Each must fit its field of
    ``tune-ok`` (``channel_max`` and ``heartbeat`` 0..65535, ``frame_max`` 0..2**32-1), or
    the constructor raises :class:`~leveret.wire.errors.EncodeError` (a ``ValueError``); a
    ``frame_max`` below the protocol's minimum frame size (4096) asks for that minimum.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        protocol: str = "0-9-1",
        auth_mechanism: str = "PLAIN",
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        heartbeat: int = DEFAULT_HEARTBEAT,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        client_properties: Mapping[str, Any] | None = None,
        locale: str = "en_US",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise LocalProtocolError(
                f"unknown protocol {protocol!r}; leveret speaks {', '.join(PROTOCOLS)}"
            )
        self.spec: ModuleType = PROTOCOLS[protocol]
        self.protocol = protocol
        for name, text in (("username", username), ("password", password), ("virtual_host", virtual_host)):
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a str, not {type(text).__name__}")
            if not encodes_as_utf8(text):
                # Outside the except clause: the UnicodeEncodeError quotes the value (a
                # password) and must not ride along as __context__.
                raise EncodeError(f"{name} is not valid Unicode text (a lone surrogate): it cannot be sent")
        self._username = username
        self._password = password
        self.virtual_host = virtual_host
        self.auth_mechanism = auth_mechanism.upper()
        if self.auth_mechanism not in SASL_MECHANISMS:
            raise LocalProtocolError(
                f"SASL mechanism {auth_mechanism!r} is not one leveret implements "
                f"({', '.join(SASL_MECHANISMS)})"
            )
        for name, value, high in (
            ("frame_max", frame_max, 2**32 - 1),
            ("channel_max", channel_max, 65535),
            ("heartbeat", heartbeat, 65535),
        ):
            # Checked here, not when connection.tune-ok cannot encode them mid-handshake.
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise EncodeError(f"{name}={value!r}: it must be an integer from 0 to {high}")
        self._want_frame_max = frame_max
        self._want_channel_max = channel_max
        self._want_heartbeat = heartbeat
        self.max_body_size = max_body_size
        self.locale = locale
        # Claimed only where the version has the methods (0-8 has none of these four).
        # For connection.blocked it matters: RabbitMQ would send it anyway, and the
        # connection would die on an unknown method at the first memory alarm.
        names = {cls.NAME for cls in self.spec.METHODS.values()}
        capabilities = {
            key: value for key, value in CLIENT_CAPABILITIES.items()
            if _CAPABILITY_METHODS.get(key, "connection.open") in names
        }
        props: dict[str, Any] = {
            "product": "leveret",
            "version": _version(),
            "platform": f"Python {platform.python_version()}",
            "information": "https://pypi.org/project/leveret/",
            "capabilities": capabilities,
        }
        if client_properties:
            for key, value in client_properties.items():
                if key == "capabilities" and isinstance(value, Mapping):
                    props["capabilities"].update(value)
                else:
                    props[key] = value
        self.client_properties = props

        self.state = ConnState.AWAIT_START
        self.server_properties: dict[str, Any] = {}
        self.mechanisms: list[str] = []
        self.channel_max = 0
        self.frame_max = 0
        self.heartbeat = 0
        self.blocked: str | None = None  # the reason while the broker blocks us
        self.close_error: AMQPError | None = None  # why the connection closed, if not 200
        self._error: BaseException | None = None
        self._abandoned = False  # close() came before open-ok: input is discarded

        self._reader = FrameReader(
            self.spec,
            max(self.spec.FRAME_MIN_SIZE, frame_max),
            combine_content=True,
            lenient_properties=True,
        )
        self._out: list[Any] = [self.spec.PROTOCOL_HEADER]
        self._ack_cls = self.spec.Basic.Ack
        self._header_checked = False
        self._pending: bytes = b""  # first bytes, until we know they are not a protocol header
        self._channels: dict[int, _Channel] = {}
        self._free_ids: list[int] = []
        # Why each released channel closed, if by an error, until its id is reused: the
        # __cause__ of the ChannelClosedError a later call on it raises.
        self._closed_errors: dict[int, AMQPError] = {}
        self._next_id = 1
        self._send_kinds: dict[type, Any] = {}
        self._return_types = frozenset(
            cls for cls in self.spec.METHODS.values() if cls.NAME.endswith(".return")
        )
        self._get_ok_types = frozenset(
            cls for cls in self.spec.METHODS.values() if cls.NAME.endswith(".get-ok")
        )
        # The plain case of a delivery: straight to a MessageReceived event.
        self._deliver_types = frozenset(
            cls for cls in self.spec.METHODS.values() if cls.NAME.endswith(".deliver")
        )
        self._by_name: dict[str, Any] = {
            cls.NAME: cls for cls in self.spec.METHODS.values()
        }
        self.last_received = 0.0
        self.last_sent = 0.0
        # Bytes came through receive_data without a ``now`` since the last tick: the next
        # tick counts them as received at its own ``now``.
        self._received_unclocked = False

    # ------------------------------------------------------------------ helpers

    def __repr__(self) -> str:
        # Never include the password.
        return (
            f"<SansIOConnection {self.protocol} user={self._username!r} "
            f"vhost={self.virtual_host!r} state={self.state.value}>"
        )

    def method(self, name: str, **fields: Any) -> Any:
        """Build the method called ``name`` ("queue.declare") for this connection's protocol.

        Keyword names follow the spec's field names; ``no_wait`` and ``nowait`` are accepted
        for either version.  An unknown method or field is a :class:`LocalProtocolError`.
        """
        cls = self._by_name.get(name)
        if cls is None:
            raise LocalProtocolError(f"{name} does not exist in AMQP {self.protocol}")
        fields = _rename_for(cls, fields)
        try:
            return cls(**fields)
        except TypeError as exc:
            raise LocalProtocolError(f"{name}: {exc}") from None

    def has_method(self, name: str) -> bool:
        return name in self._by_name

    def _check_usable(self) -> None:
        if self._error is not None:
            raise again(self._error)
        if self.state is not ConnState.OPEN:
            if self.state in (ConnState.CLOSED, ConnState.CLOSING):
                err = ConnectionClosedError(f"the connection is {self.state.value}")
                err.__cause__ = self.close_error
                raise err
            raise LocalProtocolError(f"the connection is not open yet ({self.state.value})")

    def _channel(self, channel_id: int) -> _Channel:
        ch = self._channels.get(channel_id)
        if ch is None:
            err = ChannelClosedError(f"channel {channel_id} is not open")
            err.__cause__ = self._closed_errors.get(channel_id)
            raise err
        if ch.state is ChannelState.OPENING:
            # Not closed: the caller is early.  The drivers only hand out open channels.
            raise LocalProtocolError(
                f"channel {channel_id} is still opening: wait for its ChannelOpened event "
                "(channel.open-ok) before sending on it"
            )
        if ch.state is not ChannelState.OPEN:
            err = ChannelClosedError(f"channel {channel_id} is {ch.state.value}")
            err.__cause__ = ch.close_error
            raise err
        return ch

    def _send(self, channel_id: int, method: Any) -> None:
        self._out.append(method_frame(channel_id, method))

    # ------------------------------------------------------------------ output

    def data_to_send(self, now: float | None = None) -> bytes:
        """Everything queued for the peer, as one ``bytes`` (empty when nothing is)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        if now is not None:
            self.last_sent = now
        if len(out) == 1 and type(out[0]) is bytes:
            return out[0]
        return b"".join(out)

    def buffers_to_send(self, now: float | None = None) -> list[Any]:
        """Like :meth:`data_to_send` but as a list of buffers (big bodies as memoryviews of
        the caller's object, not copies), for ``socket.sendmsg``."""
        out = self._out
        self._out = []
        if out and now is not None:
            self.last_sent = now
        return out

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes, now: float | None = None) -> list[ev.Event]:
        """Feed bytes read from the transport (``b""`` at EOF); returns the events they make.

        Raises :class:`RemoteProtocolError` (after queuing the ``connection.close`` the spec
        asks for) when the peer broke the protocol, :class:`ConnectionLost` at an EOF that
        came without a close handshake, :class:`VersionMismatch` when the server answered
        with its own protocol header, :class:`~leveret.wire.errors.FrameError` showing
        what it sent when it answered with anything but a method frame on channel 0 (it
        does not speak AMQP at all: an HTTP, SMTP, SSH server...), and
        :class:`AuthenticationError` when its ``connection.start`` offers none of the SASL
        mechanism asked for.  (Credentials the broker refuses come as a
        :class:`~leveret.client.events.ConnectionClosed` event whose ``error`` is an
        :class:`AuthenticationError`.)  When frames before the violation in the same
        ``data`` made events, those events are returned (the ``connection.close`` is
        queued all the same) and the next call raises the error.
        """
        if self._error is not None:
            raise again(self._error)
        if now is not None:
            self.last_received = now
            self._received_unclocked = False
        else:
            self._received_unclocked = True  # tick() dates it
        if not data:
            return self._eof()
        if self._abandoned or self.state is _CLOSED:
            # Closed during the handshake, or closed for good (close-ok sent or received):
            # nothing the broker says matters now, and the spec has it discarded.
            return []
        if not self._header_checked:
            data = self._check_header(data)
            if not data:
                return []
        events: list[ev.Event] = []
        reader = self._reader
        try:
            for frame in reader.read_frames(data):
                if self.state is _CLOSED:
                    return events  # frames behind the close that ended it: discarded
                self._handle_frame(frame, events)
            if reader.error is not None:
                # The reader stopped on a bad frame after the frames just handled.
                raise reader.error
        except RemoteProtocolError as exc:
            self._fail(exc)
            if events:
                # What the frames before the violation did (confirms, deliveries, closes)
                # has happened: hand it out; the next call raises the error.
                return events
            raise
        return events

    def _check_header(self, data: bytes) -> bytes:
        # A server that does not speak our version answers with its own protocol header
        # (b"AMQP" + 4 octets) and closes; frames never start with b"A" (0x41).  One that
        # speaks it starts with connection.start, a method frame on channel 0; anything
        # else is not AMQP (an HTTP, SMTP or SSH server: read as a frame header, its
        # first bytes would make a frame of a gigabyte on some channel).
        data = self._pending + data
        if (len(data) < 8 and b"AMQP".startswith(data[:4]) and data[:1] == b"A") or (
            len(data) < 3 and _START_FRAME.startswith(data)
        ):
            self._pending = data
            return b""
        self._pending = b""
        self._header_checked = True
        if data[:4] == b"AMQP":
            theirs = _describe_header(data[:8])
            exc = VersionMismatch(
                f"the server does not speak AMQP {self.protocol}: it answered with its own "
                f"protocol header for {theirs}"
            )
            self._error = exc
            self.state = ConnState.ERROR
            raise exc
        if data[:3] != _START_FRAME:
            shown = repr(bytes(data[:40])) + ("..." if len(data) > 40 else "")
            if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":
                hint = "a TLS record: connect with amqps:// (ssl=True)"
            else:
                hint = "is this the port of an AMQP broker?"
            error = FrameError(
                f"the server does not speak AMQP: it answered the protocol header with "
                f"{shown} ({hint})"
            )
            self._error = error
            self.state = ConnState.ERROR
            raise error
        return data

    def _eof(self) -> list[ev.Event]:
        state = self.state
        if state is ConnState.CLOSED:
            return []
        if state is ConnState.CLOSING:
            # The peer dropped the socket instead of sending close-ok; the close still stands.
            unconfirmed = self.unconfirmed()
            events: list[ev.Event] = []
            self._close_all_channels(events)  # held returns come out, as at close-ok
            self.state = ConnState.CLOSED
            events.append(ev.ConnectionClosed(self.close_error, False, unconfirmed))
            return events
        if state is ConnState.AWAIT_TUNE:
            msg = (
                "the server closed the connection during authentication "
                "(wrong credentials, or a mechanism it refuses)"
            )
        elif state is ConnState.AWAIT_START:
            msg = "the server closed the connection before connection.start"
        elif self._reader.buffered:
            msg = f"the server closed the connection in the middle of a frame ({self._reader.buffered} bytes of it received)"
        else:
            msg = "the server closed the connection without a close handshake"
        exc = ConnectionLost(msg, self.unconfirmed())
        self._error = exc
        self.state = ConnState.ERROR
        raise exc

    def connection_lost(self, reason: str) -> BaseException:
        """Tell the core the transport failed (reset, timeout); returns the error to raise.

        Every later call raises it; ``unconfirmed`` lists publishes whose fate is unknown.
        A transport that fails after the close handshake changes nothing: the error is then
        why the connection closed (e.g. the broker's ``ConnectionForced``), since RabbitMQ
        resets the socket right after its own ``connection.close``.
        """
        if self._error is None and self.state is ConnState.CLOSED:
            if self.close_error is not None:
                return self.close_error
            return ConnectionClosedError("the connection is closed")
        if self._error is None:
            self._error = ConnectionLost(reason, self.unconfirmed())
            self.state = ConnState.ERROR
        return self._error

    def _fail(self, exc: RemoteProtocolError) -> None:
        """The peer broke the protocol: owe it a connection.close, then refuse everything."""
        state = self.state
        self._error = exc
        self.state = ConnState.ERROR
        if state in (ConnState.OPEN, ConnState.AWAIT_OPEN_OK, ConnState.AWAIT_TUNE):
            # reply-text is a shortstr: at most 255 bytes of UTF-8, cut on a character.
            text = str(exc).encode("utf-8", "backslashreplace")[:255].decode("utf-8", "ignore")
            self._out.append(
                method_frame(0, self.spec.Connection.Close(reply_code=exc.reply_code, reply_text=text))
            )

    @property
    def error(self) -> BaseException | None:
        """The error that put the connection in state ERROR, if any."""
        return self._error

    def _method_name(self, class_id: int, method_id: int) -> str | None:
        """The name of this version's method with these ids (``"queue.declare"``), or None
        when it has none (0-8 and 0-9-1 do not give every id the same method)."""
        cls = self.spec.METHODS.get(class_id << 16 | method_id) if class_id else None
        return None if cls is None else str(cls.NAME)

    def _error_for(self, reply_code: int, reply_text: str, class_id: int, method_id: int) -> AMQPError:
        """The typed error of a close with these arguments, naming the method that caused
        it in this connection's protocol version."""
        error = error_for(reply_code, reply_text, class_id, method_id)
        error.method_name = self._method_name(class_id, method_id)
        return error

    # ------------------------------------------------------------------ frames

    def _handle_frame(self, frame: Any, events: list[ev.Event]) -> None:
        kind = type(frame)
        channel_id = frame.channel
        if channel_id == 0:
            if kind is MethodFrame:
                self._connection_method(frame.method, events)
            elif kind is not HeartbeatFrame:
                raise UnexpectedFrame("content frame on channel 0")
            return
        if self.state is _CLOSING:
            return  # after connection.close, everything but close/close-ok is dropped
        if self.state is not _OPEN:
            raise UnexpectedFrame(
                f"frame on channel {channel_id} before the connection is open"
            )
        ch = self._channels.get(channel_id)
        if ch is None:
            raise RemoteProtocolError(
                f"frame for channel {channel_id}, which is not open", CHANNEL_ERROR
            )
        if kind is ContentFrame:
            # A whole content at once (the reader combined method, header and body).
            method = frame.method
            body = frame.body
            if (
                type(method) in self._deliver_types
                and ch.c_method is None
                and ch.state is _CH_OPEN
                and len(body) <= self.max_body_size
            ):
                events.append(_message_received(channel_id, method, frame.properties, body))
                return
            if ch.c_method is not None:
                raise UnexpectedFrame(
                    f"method {method.NAME} on channel {channel_id} in the middle of a content"
                )
            if not method.SENT_BY_SERVER:
                raise RemoteProtocolError(f"{method.NAME} is not a method a server sends", COMMAND_INVALID)
            if ch.state is _CH_OPENING:
                raise _before_open_ok(ch, method)
            ch.c_method = method
            ch.c_props = frame.properties
            if ch.state is _CH_CLOSING:
                ch.c_discard = True  # dropped unseen, as frame by frame
            elif len(body) > self.max_body_size:
                ch.c_discard = True
                events.append(ev.MessageTooLarge(channel_id, method, frame.properties, len(body)))
            self._content_done(ch, body, events)
            return
        if kind is MethodFrame:
            if ch.c_method is not None:
                raise UnexpectedFrame(
                    f"method {frame.method.NAME} on channel {channel_id} in the middle of a content"
                )
            method = frame.method
            if method.HAS_CONTENT:
                if not method.SENT_BY_SERVER:
                    raise RemoteProtocolError(
                        f"{method.NAME} is not a method a server sends", COMMAND_INVALID
                    )
                if ch.state is _CH_CLOSING:
                    ch.c_discard = True  # assemble nothing, but keep frame order checked
                elif ch.state is _CH_OPENING:
                    raise _before_open_ok(ch, method)
                ch.c_method = method
                ch.c_props = None
                return
            self._channel_method(ch, method, events)
        elif kind is HeaderFrame:
            method = ch.c_method
            if method is None or ch.c_props is not None:
                raise UnexpectedFrame(f"content header on channel {channel_id} without a method")
            if frame.class_id != method.CLASS_ID:
                raise UnexpectedFrame(
                    f"content header for class {frame.class_id} after {method.NAME}"
                )
            size = frame.body_size
            ch.c_props = frame.properties
            ch.c_size = size
            ch.c_received = 0
            ch.c_chunks = []
            if ch.c_discard:
                pass  # dropped unseen: the channel is closing
            elif type(frame.properties) is UndecodableProperties:
                ch.c_discard = True
                events.append(ev.MessageUndecodable(channel_id, method, size, frame.properties.error))
            elif size > self.max_body_size:
                ch.c_discard = True
                events.append(ev.MessageTooLarge(channel_id, method, frame.properties, size))
            if size == 0:
                self._content_done(ch, b"", events)
        elif kind is BodyFrame:
            if ch.c_props is None:
                raise UnexpectedFrame(f"body frame on channel {channel_id} without a header")
            payload = frame.payload
            received = ch.c_received + len(payload)
            if received > ch.c_size:
                raise UnexpectedFrame(
                    f"body on channel {channel_id} longer than the {ch.c_size} bytes announced"
                )
            ch.c_received = received
            if ch.c_discard:
                if received == ch.c_size:
                    self._content_done(ch, b"", events)
                return
            if received == ch.c_size and not ch.c_chunks:
                self._content_done(ch, payload, events)
                return
            ch.c_chunks.append(payload)
            if received == ch.c_size:
                self._content_done(ch, b"".join(ch.c_chunks), events)
        else:  # heartbeat on a channel: the reader rejects it, this is defence in depth
            raise UnexpectedFrame(f"heartbeat on channel {channel_id}")

    def _content_done(self, ch: _Channel, body: bytes, events: list[ev.Event]) -> None:
        method = ch.c_method
        props = ch.c_props
        discard = ch.c_discard
        ch.c_method = ch.c_props = None
        ch.c_chunks = []
        ch.c_discard = False
        if discard or ch.state is not _CH_OPEN:
            if discard and ch.state is _CH_OPEN and method.NAME.endswith(".get-ok"):
                self._expect_reply(ch, method.NAME)  # the get is answered, if unreadably
            return
        kind = type(method)
        if kind in self._return_types:
            returned = ev.MessageReturned(ch.id, method, props, body, None)
            if ch.confirm and self._could_pair(ch, returned, ()):
                # Which publish this is, the confirm that follows says: see _pair_returns.
                ch.held_returns.append(returned)
            else:
                events.append(returned)
            return
        if kind in self._get_ok_types:
            self._expect_reply(ch, method.NAME)
        events.append(_message_received(ch.id, method, props, body))

    # RabbitMQ sends basic.return just before it records the publish's confirm, and its
    # acks need not come in publish order (a persistent message routed to a durable queue
    # is confirmed only once written, an unroutable one at once).  So a return is held
    # until a confirm settles it, and then paired with a settled mandatory publish of the
    # same exchange, routing key and body -- and the same properties, which a headers
    # exchange routes on.  Those events come out just before the confirm's own, so that a
    # waiter sees the return first.

    def _could_pair(self, ch: _Channel, returned: ev.MessageReturned, skip: Any) -> bool:
        """Whether an unconfirmed mandatory publish (not in ``skip``) may be ``returned``'s."""
        key = (returned.method.exchange, returned.method.routing_key)
        body = returned.body
        for tag, info in ch.unconfirmed.items():
            if info is not None and info[0] == key and info[1] == body and tag not in skip:
                return True
        return False

    def _pair_returns(self, ch: _Channel, settled: list[int], events: list[ev.Event]) -> None:
        pending = ch.unconfirmed
        candidates = [t for t in settled if pending.get(t) is not None]
        settled_set = frozenset(settled)
        held: list[ev.MessageReturned] = []
        for returned in ch.held_returns:
            key = (returned.method.exchange, returned.method.routing_key)
            body = returned.body
            same = [t for t in candidates if pending[t][0] == key and pending[t][1] == body]
            tag = None
            if same:
                wanted = _encoded_properties(returned.properties)
                for t in same:
                    if _encoded_properties(pending[t][2]) == wanted:
                        tag = t
                        break
                else:
                    # No exact match (a broker may rewrite a header, e.g. strip BCC): the
                    # same exchange, key and body will do, unless a publish that matches
                    # exactly is still to be confirmed.
                    exact = [
                        t for t, info in pending.items()
                        if info is not None and t not in settled_set and info[0] == key
                        and info[1] == body and _encoded_properties(info[2]) == wanted
                    ]
                    if not exact:
                        tag = same[0]
            if tag is None:
                held.append(returned)
                continue
            candidates.remove(tag)
            pending[tag] = None  # paired: not again
            events.append(
                ev.MessageReturned(returned.channel_id, returned.method, returned.properties, body, tag)
            )
        # What can no longer be paired is reported without a tag rather than kept.
        ch.held_returns = []
        for returned in held:
            if self._could_pair(ch, returned, settled_set):
                ch.held_returns.append(returned)
            else:
                events.append(returned)

    def _flush_returns(self, ch: _Channel, events: list[ev.Event]) -> None:
        """Report returns still held (the channel is closing): no publish named."""
        if ch.held_returns:
            events.extend(ch.held_returns)
            ch.held_returns = []

    def _expect_reply(self, ch: _Channel, name: str) -> None:
        expect = ch.expect
        if expect and name in expect[0]:
            del expect[0]
            return
        raise RemoteProtocolError(
            f"{name} on channel {ch.id}, which asked for no such reply", COMMAND_INVALID
        )

    def _channel_method(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        name = method.NAME
        state = ch.state
        if state is _CH_CLOSING and name != "channel.close" and name != "channel.close-ok":
            return  # after our channel.close, the spec says to discard the rest
        if not method.SENT_BY_SERVER and name not in _SERVER_SENDS_TOO:
            raise RemoteProtocolError(f"{name} is not a method a server sends", COMMAND_INVALID)
        if name.startswith("channel."):
            if name not in CHANNEL_EXPECTS.get(state, ()):
                raise RemoteProtocolError(
                    f"{name} on channel {ch.id} in state {state.value}", COMMAND_INVALID
                )
            getattr(self, "_on_" + name.replace(".", "_").replace("-", "_"))(ch, method, events)
            return
        if name.startswith("connection."):
            raise RemoteProtocolError(f"{name} on channel {ch.id}", COMMAND_INVALID)
        if state is not _CH_OPEN:
            if state is _CH_OPENING:
                raise _before_open_ok(ch, method)
            return  # closing: drop everything but channel.close / close-ok
        if name == "basic.ack" or name == "basic.nack":
            self._on_confirm(ch, method, name == "basic.ack", events)
        elif name == "basic.cancel":
            # The broker cancelled a consumer (queue deleted, ...).
            if not (getattr(method, "no_wait", False) or getattr(method, "nowait", False)):
                self._send(ch.id, self.method("basic.cancel-ok", consumer_tag=method.consumer_tag))
            events.append(ev.ConsumerCancelled(ch.id, method.consumer_tag))
        else:
            if method.SYNCHRONOUS:
                self._expect_reply(ch, name)
            events.append(ev.MethodReceived(ch.id, method))

    def _on_confirm(self, ch: _Channel, method: Any, ack: bool, events: list[ev.Event]) -> None:
        if not ch.confirm:
            raise RemoteProtocolError(
                f"{method.NAME} on channel {ch.id}, which is not in confirm mode", COMMAND_INVALID
            )
        tag = method.delivery_tag
        pending = ch.unconfirmed
        if tag >= ch.next_tag:
            raise RemoteProtocolError(
                f"{method.NAME} for delivery tag {tag}, never published on channel {ch.id}",
                COMMAND_INVALID,
            )
        if method.multiple:
            if tag == 0:  # "all outstanding"
                settled = list(pending)
            else:
                settled = []
                for t in pending:
                    if t > tag:
                        break
                    settled.append(t)
        elif tag in pending:
            settled = [tag]
        else:
            settled = []  # already settled: a duplicate confirm is harmless
        if ch.held_returns:
            self._pair_returns(ch, settled, events)
        for t in settled:
            del pending[t]
        if settled:
            events.append(_publish_confirmed(ch.id, settled, ack))

    # ------------------------------------------------------------------ channel-class replies

    def _on_channel_open_ok(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        ch.state = ChannelState.OPEN
        events.append(ev.ChannelOpened(ch.id))

    def _on_channel_close(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        self._send(ch.id, self.spec.Channel.CloseOk())
        error = (
            None
            if method.reply_code == 200
            else self._error_for(method.reply_code, method.reply_text, method.class_id, method.method_id)
        )
        if ch.state is ChannelState.CLOSING:
            # Both sides closed at once: our close-ok is sent; theirs will follow.
            ch.close_error = error
            return
        ch.close_error = error
        unconfirmed = tuple(ch.unconfirmed)
        self._flush_returns(ch, events)
        self._release(ch)
        events.append(ev.ChannelClosed(ch.id, error, True, unconfirmed))

    def _on_channel_close_ok(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        unconfirmed = tuple(ch.unconfirmed)
        self._flush_returns(ch, events)
        self._release(ch)
        events.append(ev.ChannelClosed(ch.id, ch.close_error, False, unconfirmed))

    def _on_channel_flow(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        ch.flow_active = bool(method.active)
        self._send(ch.id, self.spec.Channel.FlowOk(active=method.active))
        events.append(ev.FlowChanged(ch.id, bool(method.active)))

    def _on_channel_flow_ok(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        if ch.state is ChannelState.OPEN:
            self._expect_reply(ch, method.NAME)
            events.append(ev.MethodReceived(ch.id, method))

    def _on_channel_alert(self, ch: _Channel, method: Any, events: list[ev.Event]) -> None:
        events.append(ev.MethodReceived(ch.id, method))

    def _release(self, ch: _Channel) -> None:
        ch.state = ChannelState.CLOSED
        ch.expect.clear()
        ch.unconfirmed = {}
        ch.held_returns = []
        ch.c_method = ch.c_props = None
        ch.c_chunks = []
        if self._channels.pop(ch.id, None) is not None:
            self._free_ids.append(ch.id)
            if ch.close_error is not None:
                self._closed_errors[ch.id] = ch.close_error

    # ------------------------------------------------------------------ connection class

    def _connection_method(self, method: Any, events: list[ev.Event]) -> None:
        name = method.NAME
        state = self.state
        if name not in CONNECTION_EXPECTS.get(state, ()):
            if state is _CLOSING:
                # After our connection.close the spec says to discard everything but
                # close/close-ok: a blocked or update-secret-ok may cross our close.
                return
            if not name.startswith("connection."):
                raise RemoteProtocolError(f"{name} on channel 0", CHANNEL_ERROR)
            raise RemoteProtocolError(
                f"{name} in connection state {state.value}", COMMAND_INVALID
            )
        if name == "connection.start":
            self._on_start(method)
        elif name == "connection.secure":
            self._send(0, self.spec.Connection.SecureOk(response=self._sasl_response(method.challenge)))
        elif name == "connection.tune":
            self._on_tune(method)
        elif name == "connection.open-ok":
            self.state = ConnState.OPEN
            events.append(
                ev.ConnectionOpened(
                    self.server_properties,
                    self.channel_max,
                    self.frame_max,
                    self.heartbeat,
                    self.protocol,
                )
            )
        elif name == "connection.redirect":  # 0-8 only; we do not follow redirects
            self._send(0, self.spec.Connection.Close(reply_code=200, reply_text="redirect refused"))
            self.close_error = error_for(
                320, f"the server redirects to {method.host}; leveret does not follow redirects"
            )
            self.state = ConnState.CLOSING
        elif name == "connection.close":
            self._send(0, self.spec.Connection.CloseOk())
            error: AMQPError | None = None
            if method.reply_code != 200:
                if state is ConnState.AWAIT_TUNE and method.reply_code == 403:
                    error = AuthenticationError(
                        method.reply_text, 403, method.class_id, method.method_id,
                        method_name=self._method_name(method.class_id, method.method_id),
                    )
                else:
                    error = self._error_for(
                        method.reply_code, method.reply_text, method.class_id, method.method_id
                    )
            by_peer = state is not ConnState.CLOSING
            if by_peer or error is not None:
                # When our close crossed the broker's, its reply says why it closed: keep
                # it rather than our own (usually a plain 200).
                self.close_error = error
            unconfirmed = self.unconfirmed()
            self._close_all_channels(events)
            self.state = ConnState.CLOSED
            events.append(ev.ConnectionClosed(self.close_error, by_peer, unconfirmed))
        elif name == "connection.close-ok":
            if state is ConnState.CLOSED:
                return  # the crossed close's answer: both sides have closed already
            unconfirmed = self.unconfirmed()
            self._close_all_channels(events)
            self.state = ConnState.CLOSED
            events.append(ev.ConnectionClosed(self.close_error, False, unconfirmed))
        elif name == "connection.blocked":
            self.blocked = method.reason or "blocked"
            events.append(ev.ConnectionBlocked(self.blocked))
        elif name == "connection.unblocked":
            self.blocked = None
            events.append(ev.ConnectionUnblocked())
        else:  # update-secret-ok
            events.append(ev.MethodReceived(0, method))

    def _close_all_channels(self, events: list[ev.Event] | None = None) -> None:
        for ch in list(self._channels.values()):
            if events is not None:
                self._flush_returns(ch, events)
            self._release(ch)

    def _on_start(self, method: Any) -> None:
        self.server_properties = method.server_properties or {}
        self.mechanisms = _split(method.mechanisms)
        mechanism = self.auth_mechanism
        if mechanism not in self.mechanisms:
            exc = AuthenticationError(
                f"the server does not offer SASL mechanism {mechanism} "
                f"(it offers {', '.join(self.mechanisms) or 'none'})",
                403,
            )
            self._error = exc
            self.state = ConnState.ERROR
            raise exc
        locales = _split(method.locales)
        locale = self.locale if self.locale in locales or not locales else locales[0]
        response = self._sasl_response(None)
        frame = method_frame(
            0,
            self.spec.Connection.StartOk(
                client_properties=self.client_properties,
                mechanism=mechanism,
                response=response,
                locale=locale,
            ),
        )
        if len(frame) > self.spec.FRAME_MIN_SIZE:
            # Until connection.tune, frames may not exceed frame-min-size: RabbitMQ drops
            # the connection without a word (a long OAuth token as a password, say).
            too_big = LocalProtocolError(
                f"connection.start-ok would be a {len(frame)}-byte frame, more than the "
                f"{self.spec.FRAME_MIN_SIZE} bytes allowed before connection.tune: the "
                f"{mechanism} credentials take {len(response)} bytes and the client "
                f"properties {len(encode_table(self.client_properties))}"
            )
            self._error = too_big
            self.state = ConnState.ERROR
            raise too_big
        self._out.append(frame)
        self.state = ConnState.AWAIT_TUNE

    def _sasl_response(self, challenge: bytes | None) -> bytes:
        mechanism = self.auth_mechanism
        if mechanism == "PLAIN":
            return b"\0" + self._username.encode() + b"\0" + self._password.encode()
        if mechanism == "AMQPLAIN":
            # A field table without its length prefix (RabbitMQ's AMQPLAIN).
            return encode_table({"LOGIN": self._username, "PASSWORD": self._password})[4:]
        if mechanism == "EXTERNAL":
            return b""  # the identity comes from the TLS client certificate
        raise AuthenticationError(f"leveret does not implement SASL mechanism {mechanism}", 403)

    def _on_tune(self, method: Any) -> None:
        if 0 < method.frame_max < self.spec.FRAME_MIN_SIZE:
            # Below the spec's minimum, which the client may always send: a tune-ok of
            # 4096 would exceed the offer, and the server must then drop us.
            raise RemoteProtocolError(
                f"connection.tune offers frame_max {method.frame_max}, below the "
                f"{self.spec.FRAME_MIN_SIZE} bytes every peer must accept",
                SYNTAX_ERROR,
            )
        channel_max = _negotiate(self._want_channel_max, method.channel_max) or 65535
        frame_max = _negotiate(self._want_frame_max, method.frame_max) or DEFAULT_FRAME_MAX
        frame_max = max(frame_max, self.spec.FRAME_MIN_SIZE)
        heartbeat = _negotiate(self._want_heartbeat, method.heartbeat)
        self.channel_max = min(channel_max, 65535)
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self._reader.frame_max = frame_max
        # Content headers come whole, as large as the broker lets a publisher make them.
        self._reader.header_frame_max = max(frame_max, method.frame_max or DEFAULT_FRAME_MAX)
        self._send(
            0,
            self.spec.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=frame_max, heartbeat=heartbeat
            ),
        )
        self._send(0, self.method("connection.open", virtual_host=self.virtual_host))
        self.state = ConnState.AWAIT_OPEN_OK

    # ------------------------------------------------------------------ requests

    def open_channel(self, channel_id: int | None = None) -> int:
        """Queue ``channel.open``; returns the channel id (the lowest free one by default).

        A :class:`~leveret.client.events.ChannelOpened` event follows when ``open-ok``
        arrives.  Raises :class:`LocalProtocolError` when every id up to the negotiated
        ``channel_max`` is in use, or the id asked for is.
        """
        self._check_usable()
        if channel_id is None:
            if self._free_ids:
                self._free_ids.sort()
                channel_id = self._free_ids.pop(0)
            elif self._next_id <= self.channel_max:
                channel_id = self._next_id
                self._next_id += 1
            else:
                raise LocalProtocolError(
                    f"all {self.channel_max} channels of this connection are in use"
                )
        else:
            if isinstance(channel_id, bool) or not isinstance(channel_id, int):
                raise TypeError(f"a channel id is an int, not {type(channel_id).__name__}")
            if not 1 <= channel_id <= self.channel_max or channel_id in self._channels:
                raise LocalProtocolError(f"channel id {channel_id} is not available")
            if channel_id in self._free_ids:
                self._free_ids.remove(channel_id)
            elif channel_id >= self._next_id:
                self._free_ids.extend(range(self._next_id, channel_id))
                self._next_id = channel_id + 1
        self._closed_errors.pop(channel_id, None)
        ch = _Channel(channel_id)
        self._channels[channel_id] = ch
        self._send(channel_id, self.method("channel.open"))
        return channel_id

    def close_channel(
        self, channel_id: int, reply_code: int = 200, reply_text: str = "", class_id: int = 0, method_id: int = 0
    ) -> None:
        """Queue ``channel.close``; a :class:`ChannelClosed` event follows at ``close-ok``."""
        self._check_usable()
        ch = self._channels.get(channel_id)
        if ch is None or ch.state is ChannelState.CLOSED:
            self._channel(channel_id)  # raises, with the broker's error as the cause
        assert ch is not None
        if ch.state is ChannelState.CLOSING:
            return
        # Encode first: a reply_text that does not fit raises and changes nothing.
        frame = method_frame(
            channel_id,
            self.spec.Channel.Close(
                reply_code=reply_code, reply_text=reply_text, class_id=class_id, method_id=method_id
            ),
        )
        ch.state = ChannelState.CLOSING
        ch.expect.clear()
        self._out.append(frame)

    def channel_state(self, channel_id: int) -> ChannelState:
        """The channel's state; ``CLOSED`` for an id not in use, and for every channel once
        the connection has failed (state ``ERROR``: lost, or a protocol violation)."""
        ch = self._channels.get(channel_id)
        if ch is None or self.state is ConnState.ERROR:
            return ChannelState.CLOSED
        return ch.state

    def channel_error(self, channel_id: int) -> AMQPError | None:
        """Why the channel was closed, when by the broker's channel error (until its id is
        reused).  When the connection failed instead, :attr:`error` says why."""
        ch = self._channels.get(channel_id)
        return self._closed_errors.get(channel_id) if ch is None else ch.close_error

    def send_method(self, channel_id: int, method: Any) -> None:
        """Queue a method without content on an open channel.

        A synchronous request (``queue.declare`` without ``no_wait``...) is remembered so
        that its reply is checked when it arrives.  ``confirm.select`` switches the channel to
        confirm mode: publishes from then on get delivery tags.  Methods only a server sends,
        content methods (use :meth:`publish`) and methods the core sends itself are refused
        with :class:`LocalProtocolError`, and so is any request on a channel still waiting
        for ``channel.open-ok``; a channel that is closing or closed raises
        :class:`ChannelClosedError`.  A refused request queues nothing and changes nothing.
        """
        if self._error is not None or self.state is not ConnState.OPEN:
            self._check_usable()
        cls = type(method)
        kind = self._send_kinds.get(cls)
        if kind is None:
            kind = self._send_kinds[cls] = _send_kind(method)
        if type(kind) is str:
            raise LocalProtocolError(kind)
        ch = self._channels.get(channel_id)
        if ch is None or ch.state is not ChannelState.OPEN:
            ch = self._channel(channel_id)
        # Encode before touching any state: a value that does not fit changes nothing.
        frame = method_frame(channel_id, method)
        if len(frame) > self.frame_max:
            raise LocalProtocolError(
                f"{method.NAME} encodes to a {len(frame)}-byte frame, more than the "
                f"negotiated frame_max of {self.frame_max}"
            )
        if kind == _SEND_SPECIAL:
            name = method.NAME
            if name == "confirm.select":
                if ch.tx:
                    raise LocalProtocolError("a channel in transaction mode cannot use confirms")
                ch.confirm = True
            elif name == "tx.select":
                if ch.confirm:
                    raise LocalProtocolError("a channel in confirm mode cannot use transactions")
                ch.tx = True
        if kind != _SEND_PLAIN and not (
            getattr(method, "no_wait", False) or getattr(method, "nowait", False)
        ):
            ch.expect.append(frozenset(r.NAME for r in method.RESPONSES))
        self._out.append(frame)

    def ack(self, channel_id: int, delivery_tag: int, multiple: bool = False) -> None:
        """Queue ``basic.ack`` for ``delivery_tag`` (and every earlier one with
        ``multiple``): what ``send_method(channel_id, Basic.Ack(...))`` does, with less
        work, since a consumer sends one per message.  Raises as :meth:`send_method` does
        for a channel or connection that is not open, and :class:`EncodeError` for a tag
        that is not an unsigned 64-bit number."""
        ch = self._channels.get(channel_id)
        if ch is None or ch.state is not _CH_OPEN or self.state is not _OPEN:
            self._check_usable()
            self._channel(channel_id)
        self._out.append(self._ack_cls(delivery_tag=delivery_tag, multiple=multiple).encode_frame(channel_id))

    def publish(self, channel_id: int, method: Any, properties: Any, body: Any) -> int | None:
        """Queue a content method (``basic.publish``) with its header and body frames.

        Returns the delivery tag in confirm mode (the broker's ack/nack will name it), else
        ``None``.  Bodies are split at ``frame_max - 8``; a large body is queued as
        memoryview slices of ``body``, so it must not change until it has been sent.
        """
        ch = self._channels.get(channel_id)
        if ch is None or ch.state is not _CH_OPEN or self.state is not _OPEN:
            self._check_usable()
            self._channel(channel_id)
        if not method.HAS_CONTENT:
            raise LocalProtocolError(f"{method.NAME} carries no content")
        if type(body) is memoryview and not body.contiguous:
            raise LocalProtocolError("a message body must be contiguous bytes (copy it with bytes())")
        data = method.content_frames(channel_id, properties, body, self.frame_max)
        if type(data) is list:
            self._out.extend(data)
        else:
            self._out.append(data)
        if ch.confirm:  # type: ignore[union-attr]
            tag = ch.next_tag  # type: ignore[union-attr]
            ch.next_tag = tag + 1  # type: ignore[union-attr]
            ch.unconfirmed[tag] = (  # type: ignore[union-attr]
                ((method.exchange, method.routing_key), body, properties) if method.mandatory else None
            )
            return tag
        return None

    def unconfirmed(self) -> dict[int, list[int]]:
        """Delivery tags not yet confirmed, per channel in confirm mode."""
        return {
            cid: list(ch.unconfirmed) for cid, ch in self._channels.items() if ch.unconfirmed
        }

    def unconfirmed_count(self, channel_id: int) -> int:
        ch = self._channels.get(channel_id)
        return 0 if ch is None else len(ch.unconfirmed)

    def is_confirm_mode(self, channel_id: int) -> bool:
        ch = self._channels.get(channel_id)
        return bool(ch and ch.confirm)

    def set_ticket(self, channel_id: int, ticket: int) -> None:
        """Remember the 0-8 access ticket ``access.request-ok`` gave this channel."""
        self._channel(channel_id).ticket = ticket

    def ticket(self, channel_id: int) -> int:
        ch = self._channels.get(channel_id)
        return 0 if ch is None else ch.ticket

    def update_secret(self, new_secret: bytes | str, reason: str) -> None:
        """Queue ``connection.update-secret`` (RabbitMQ; 0-9-1 only), e.g. a refreshed OAuth
        token.  ``update-secret-ok`` comes back as a :class:`MethodReceived` on channel 0."""
        self._check_usable()
        if not self.has_method("connection.update-secret"):
            raise LocalProtocolError(f"connection.update-secret does not exist in AMQP {self.protocol}")
        if isinstance(new_secret, str):
            new_secret = new_secret.encode()
        frame = method_frame(
            0, self.method("connection.update-secret", new_secret=new_secret, reason=reason)
        )
        if len(frame) > self.frame_max:
            raise LocalProtocolError(
                f"connection.update-secret encodes to a {len(frame)}-byte frame, more than the "
                f"negotiated frame_max of {self.frame_max}"
            )
        self._out.append(frame)

    def close(
        self, reply_code: int = 200, reply_text: str = "Normal shutdown", class_id: int = 0, method_id: int = 0
    ) -> None:
        """Queue ``connection.close``.  A :class:`ConnectionClosed` event follows at
        ``close-ok``; until then incoming channel frames are dropped, as the spec says.
        When the broker's own ``connection.close`` crosses ours, the core answers it with
        ``close-ok`` and the event (and :attr:`close_error`) carry the broker's reply.

        Before the connection is open there is nothing to close politely: the state becomes
        CLOSED and the driver just drops the transport; whatever the broker sent meanwhile
        is discarded by :meth:`receive_data` (not a protocol error).
        """
        if self._error is not None or self.state in (ConnState.CLOSED, ConnState.CLOSING):
            return
        if self.state is not ConnState.OPEN:
            self.state = ConnState.CLOSED
            # What the broker sent before it saw the transport go (the next handshake
            # method, a heartbeat, its own close) may still be read: it is discarded.
            self._abandoned = True
            return
        # Encode first: a reply_text that does not fit raises and changes nothing.
        frame = method_frame(
            0,
            self.spec.Connection.Close(
                reply_code=reply_code, reply_text=reply_text, class_id=class_id, method_id=method_id
            ),
        )
        self.state = ConnState.CLOSING
        if reply_code != 200:
            self.close_error = self._error_for(reply_code, reply_text, class_id, method_id)
        self._out.append(frame)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> float | None:
        """Let time pass: queue a heartbeat when we have been silent for half the interval,
        and raise :class:`ConnectionLost` when the peer has been silent for two intervals.

        Returns the number of seconds after which ``tick`` should be called again, or
        ``None`` when heartbeats are off.  ``last_received`` / ``last_sent`` are kept up to
        date by the ``now`` arguments of :meth:`receive_data` and :meth:`data_to_send`;
        bytes received without a ``now`` count as received at the next ``tick``, and bytes
        sent without one do not count (heartbeats then go out every half interval).
        """
        if self._error is not None:
            raise again(self._error)
        if self._received_unclocked:
            self._received_unclocked = False
            self.last_received = now
        hb = self.heartbeat
        if not hb or self.state not in (ConnState.OPEN, ConnState.CLOSING):
            return None
        silent = now - self.last_received
        if silent > 2 * hb:
            raise self.connection_lost(
                f"missed heartbeats: nothing received from the server for {silent:.1f} s "
                f"(heartbeat {hb} s)"
            )
        half = hb / 2
        if now - self.last_sent >= half:
            self._out.append(HEARTBEAT_FRAME)
            self.last_sent = now
        return max(0.05, min(half - (now - self.last_sent), 2 * hb - silent))


def _negotiate(ours: int, theirs: int) -> int:
    """0 means "no limit"; otherwise the lower value wins."""
    if not ours:
        return theirs
    if not theirs:
        return ours
    return min(ours, theirs)


def _split(value: bytes | str) -> list[str]:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.split()


#: How the server's first frame, connection.start, begins: a method frame on channel 0.
_START_FRAME = b"\x01\x00\x00"


def _describe_header(header: bytes) -> str:
    a, b, c, d = header[4:8]
    known = {
        (0, 0, 9, 1): "AMQP 0-9-1",
        (1, 1, 8, 0): "AMQP 0-8",
        (1, 1, 9, 1): "AMQP 0-9-1 (old header)",
        (0, 1, 0, 0): "AMQP 1.0",
        (3, 1, 0, 0): "AMQP 1.0 (SASL)",
        (2, 1, 0, 0): "AMQP 1.0 (TLS)",
    }
    if (a, b, c, d) in known:
        return known[(a, b, c, d)]
    if (a, b) == (1, 1):  # the pre-0-9-1 layout: class 1, instance 1, major, minor
        return f"AMQP {c}-{d}"
    return f"an unknown protocol (header {header!r})"


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "0"
