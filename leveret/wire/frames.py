"""AMQP frames: the frame classes, a sans-IO frame reader and the frame writer.

Every AMQP frame (0-9-1 and 0-8 alike) is::

    type octet | channel short | size long | payload (size bytes) | frame-end octet 0xCE

with four frame types in use: method (1), content header (2), content body (3) and
heartbeat (8).  A content-carrying method (``basic.publish``, ``basic.deliver``...) is
followed on the same channel by one header frame, giving the body size and the content
properties, and then by as many body frames as it takes to carry the body, each at most
``frame_max - 8`` bytes long.

Theory of operation of :class:`FrameReader`: bytes go in with :meth:`FrameReader.feed`,
frames come out of :meth:`FrameReader.next_frame` (or, many at once, of
:meth:`FrameReader.read_frames`).  There is no socket and no clock in here.  Short input is
never an error, only :data:`NEED_DATA`; malformed input raises a
:class:`~leveret.wire.errors.RemoteProtocolError` subclass carrying the reply code the client
must close the connection with, and the reader then stays broken: every later call raises
the same exception.  Which frames may follow which (a header only after a content method,
...) is the client layer's business, not the reader's; a reader made with
``combine_content=True`` merely hands a content whose frames are all buffered, and regular,
as one :class:`ContentFrame`, and everything else frame by frame as usual.

The writer functions return the bytes to send.  Small contents come back as one ``bytes``;
big bodies come back as a list whose body chunks are ``memoryview`` slices of the caller's
body, so that a driver can hand them to ``socket.sendmsg`` without copying.
"""

from __future__ import annotations

import enum
import struct
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Final

from .errors import (
    DecodeError,
    EncodeError,
    FrameError,
    FrameTooLarge,
    RemoteProtocolError,
    UnknownMethod,
    again,
)

if TYPE_CHECKING:
    from ._base import ContentProperties, Method

__all__ = [
    "Frame",
    "MethodFrame",
    "HeaderFrame",
    "BodyFrame",
    "HeartbeatFrame",
    "ContentFrame",
    "NEED_DATA",
    "FrameReader",
    "method_frame",
    "header_frame",
    "body_frame",
    "content_frames",
    "heartbeat_frame",
    "encode_frame",
    "HEARTBEAT_FRAME",
    "FRAME_HEADER_SIZE",
    "FRAME_OVERHEAD",
    "SMALL_CONTENT",
]

# The frame-type octets and the frame-end octet are the same in 0-8 and 0-9-1; the
# hand-written layer must not depend on one version module, so they are repeated here.
FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_MIN_SIZE: Final = 4096

#: type + channel + size.
FRAME_HEADER_SIZE: Final = 7
#: Bytes a frame adds around its payload (header and frame-end octet).
FRAME_OVERHEAD: Final = 8
#: Contents (all frames together) below this many bytes are written as one ``bytes``.
SMALL_CONTENT: Final = 64 * 1024

_END = b"\xce"
_frame_header = struct.Struct(">BHI")
_unpack_frame_header = _frame_header.unpack_from
_pack_frame_header = _frame_header.pack
_unpack_ids = struct.Struct(">HH").unpack_from
# A frame header and the four bytes after it (a method frame's class and method ids).
_unpack_frame_header_and_ids = struct.Struct(">BHII").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_content_header = struct.Struct(">HHQ")
_unpack_content_header = _content_header.unpack_from
# A header frame up to its body size: frame type, channel, size, class id, weight, body size.
_header_frame_start = struct.Struct(">BHIHHQ")
_pack_header_frame_start = _header_frame_start.pack
_unpack_header_frame_start = _header_frame_start.unpack_from
# ... skipping the weight, and with the first property-flags word after it.
_unpack_header_frame_and_flags = struct.Struct(">BHIH2xQH").unpack_from
# The header frame's fixed part, up to and including the first property-flags word.
_pack_header_frame_and_flags = struct.Struct(">BHIHHQH").pack
_end_and_frame_header = struct.Struct(">BBHI")
_pack_end_and_frame_header = _end_and_frame_header.pack
_unpack_end_and_frame_header = _end_and_frame_header.unpack_from
_NO_PROPERTIES = b"\x00\x00"
_MethodDecoder = Callable[[bytes, int, int], "Method"]
_PropertiesDecoder = Callable[..., "ContentProperties"]
_new = object.__new__


# --------------------------------------------------------------------------- frames


class Frame:
    """Base of the four frame classes.  Frames are values: compare them with ``==``."""

    __slots__ = ("channel",)
    channel: int
    #: The frame-type octet.
    FRAME_TYPE: int = 0

    #: The attributes that make a frame's value, in order: ``channel`` and the subclass's
    #: slots (set by ``__init_subclass__``).
    _FIELDS: tuple[str, ...] = ("channel",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._FIELDS = ("channel", *cls.__dict__.get("__slots__", ()))

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Frame)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._FIELDS, self._key()))
        return f"{type(self).__name__}({fields})"


class MethodFrame(Frame):
    """A method frame: ``method`` (a generated :class:`~leveret.wire._base.Method`) on ``channel``."""

    __slots__ = ("method",)
    FRAME_TYPE = FRAME_METHOD

    def __init__(self, channel: int, method: Method) -> None:
        self.channel = channel
        self.method = method


class HeaderFrame(Frame):
    """A content header frame: the content's class id, total body size and properties.

    The weight field (always 0) is dropped when reading and written as 0.  From a reader
    made with ``lenient_properties=True``, ``properties`` may be an
    :class:`~leveret.wire.UndecodableProperties`.
    """

    __slots__ = ("class_id", "body_size", "properties")
    FRAME_TYPE = FRAME_HEADER

    def __init__(
        self, channel: int, class_id: int, body_size: int, properties: ContentProperties
    ) -> None:
        self.channel = channel
        self.class_id = class_id
        self.body_size = body_size
        self.properties = properties


class BodyFrame(Frame):
    """A content body frame: one piece of the body, ``payload``, on ``channel``."""

    __slots__ = ("payload",)
    FRAME_TYPE = FRAME_BODY

    def __init__(self, channel: int, payload: bytes) -> None:
        self.channel = channel
        self.payload = payload


    def __repr__(self) -> str:
        # Bodies can be megabytes; show the start only.
        shown = self.payload[:32]
        more = f"+{len(self.payload) - 32} bytes" if len(self.payload) > 32 else ""
        return f"BodyFrame(channel={self.channel!r}, payload={shown!r}{more})"


class ContentFrame(Frame):
    """A whole content read at once: a content-carrying ``method``, its header frame's
    ``properties`` and the complete ``body``.

    Only a reader made with ``combine_content=True`` returns these, and only when the
    method frame, a header frame of the same class on the same channel and body frames
    adding up to exactly ``body_size`` bytes are all in the buffer; anything else comes out
    frame by frame, for the client layer to judge.  It saves the client building three
    frame objects and assembling them for every delivery.
    """

    __slots__ = ("method", "properties", "body")
    FRAME_TYPE = -1  # not a wire frame type: three (or more) frames in one object

    def __init__(
        self, channel: int, method: Method, properties: ContentProperties, body: bytes
    ) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


    def __repr__(self) -> str:
        # As for BodyFrame: show the start of the body only.
        shown = self.body[:32]
        more = f"+{len(self.body) - 32} bytes" if len(self.body) > 32 else ""
        return (
            f"ContentFrame(channel={self.channel!r}, method={self.method!r}, "
            f"properties={self.properties!r}, body={shown!r}{more})"
        )


class HeartbeatFrame(Frame):
    """A heartbeat frame (always on channel 0 when read from the wire)."""

    __slots__ = ()
    FRAME_TYPE = FRAME_HEARTBEAT

    def __init__(self, channel: int = 0) -> None:
        self.channel = channel


class _NeedData(enum.Enum):
    """Type of :data:`NEED_DATA`, its only member.  (An enum of one, so that a type
    checker narrows ``frame is NEED_DATA`` / ``is not NEED_DATA`` to a frame.)"""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameReader.next_frame` when no complete frame is buffered yet.
NEED_DATA: Final = _NeedData.NEED_DATA

_HEARTBEAT = HeartbeatFrame(0)


# --------------------------------------------------------------------------- reader


class FrameReader:
    """Turns received bytes into frames, sans-IO.

    ``spec`` is a generated version module (:mod:`leveret.wire.amqp0_9_1` or
    :mod:`leveret.wire.amqp0_8`); its ``METHODS`` and ``PROPERTIES`` decode the payloads.
    ``frame_max`` is the largest frame (payload plus 8) accepted; raise it once
    ``connection.tune`` has been negotiated.  A frame announcing a bigger size is rejected
    with :class:`FrameTooLarge` as soon as its 7-byte header arrives, before any of its
    payload is buffered.

    With ``combine_content=True``, a content-carrying method frame whose header frame and
    body frames are already buffered behind it comes out as one :class:`ContentFrame`
    instead of three (or more) frames; see :meth:`_combine` for exactly when.

    Two allowances for what brokers do, both off unless asked for (the client core asks):

    * ``header_frame_max``: the largest *content header* frame accepted, when larger than
      ``frame_max``.  RabbitMQ does not split a content header over frames (the spec has no
      way to), so a consumer that negotiated a smaller ``frame_max`` than a publisher's gets
      that publisher's headers whole: pika and py-amqp read them.  The client accepts
      headers up to the ``frame_max`` the broker offered, which is what the broker accepts
      from publishers.
    * ``lenient_properties=True``: a header frame that is sound but whose properties do not
      decode comes out with an :class:`~leveret.wire.UndecodableProperties` in place of its properties,
      instead of breaking the reader (see there).
    """

    __slots__ = (
        "spec",
        "_frame_max",
        "_method_decoders",
        "_property_decoders",
        "_buf",
        "_pos",
        "_pending",
        "_pending_size",
        "_error",
        "_header_frame_max",
        "combine_content",
        "lenient_properties",
    )

    def __init__(
        self,
        spec: ModuleType,
        frame_max: int = FRAME_MIN_SIZE,
        combine_content: bool = False,
        *,
        header_frame_max: int | None = None,
        lenient_properties: bool = False,
    ) -> None:
        self.spec = spec
        #: Return a whole content as one :class:`ContentFrame` when it is all buffered.
        self.combine_content = combine_content
        #: Return undecodable properties as :class:`UndecodableProperties` (see the class).
        self.lenient_properties = lenient_properties
        # The bound ``decode`` of each class, keyed as on the wire: looking up a classmethod
        # builds a bound method on every call, and this is done for every frame.  A method
        # carrying content comes with the ``decode`` of its class's properties, for
        # combining.
        self._property_decoders: dict[int, _PropertiesDecoder] = {
            class_id: cls.decode for class_id, cls in spec.PROPERTIES.items()
        }
        self._method_decoders: dict[int, tuple[_MethodDecoder, _PropertiesDecoder | None]] = {
            index: (
                cls.decode,
                self._property_decoders.get(cls.CLASS_ID) if cls.HAS_CONTENT else None,
            )
            for index, cls in spec.METHODS.items()
        }
        self._frame_max = FRAME_MIN_SIZE
        self.frame_max = frame_max
        self._header_frame_max = 0
        if header_frame_max is not None:
            self.header_frame_max = header_frame_max
        # Unconsumed input is ``_buf[_pos:]`` followed by the chunks in ``_pending``.  Chunks
        # are only joined into ``_buf`` once a whole frame (or a whole frame header) is
        # there, so a big frame arriving in many small pieces is copied once, not once per
        # piece.
        self._buf: bytes = b""
        self._pos = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._error: RemoteProtocolError | None = None

    def __repr__(self) -> str:
        buffered = len(self._buf) - self._pos + self._pending_size
        state = f"failed: {self._error!r}" if self._error is not None else f"{buffered} bytes buffered"
        return f"<FrameReader {self.spec.__name__.rsplit('.', 1)[-1]} frame_max={self._frame_max} {state}>"

    @property
    def frame_max(self) -> int:
        """The largest frame accepted, overhead included (the negotiated ``frame-max``)."""
        return self._frame_max

    @frame_max.setter
    def frame_max(self, value: int) -> None:
        # 0 means "no limit" in connection.tune; the client always settles on a concrete
        # number, so a 0 (or anything below the spec's minimum) here is a caller bug.
        if not isinstance(value, int) or value < FRAME_OVERHEAD:
            raise ValueError(f"frame_max must be an int of at least 8, not {value!r}")
        self._frame_max = value

    @property
    def header_frame_max(self) -> int:
        """The largest content header frame accepted: ``frame_max`` unless set higher (see
        the class)."""
        return max(self._frame_max, self._header_frame_max)

    @header_frame_max.setter
    def header_frame_max(self, value: int) -> None:
        if not isinstance(value, int) or value < FRAME_OVERHEAD:
            raise ValueError(f"header_frame_max must be an int of at least 8, not {value!r}")
        self._header_frame_max = value

    @property
    def buffered(self) -> int:
        """How many received bytes are held, not yet returned as frames."""
        return len(self._buf) - self._pos + self._pending_size

    @property
    def error(self) -> RemoteProtocolError | None:
        """The error the reader stopped on, or ``None`` while it is healthy."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.  Nothing is parsed until :meth:`next_frame` is called.

        Raises the reader's earlier error, if it has one.
        """
        if self._error is not None:
            raise again(self._error)
        if data:
            if type(data) is not bytes:
                data = bytes(data)
            if self._pos == len(self._buf) and not self._pending_size:
                # Nothing held: the new chunk simply becomes the buffer (the usual case
                # when each recv() brings whole frames).
                self._buf = data
                self._pos = 0
            else:
                self._pending.append(data)
                self._pending_size += len(data)

    def _join(self) -> bytes:
        pending = self._pending
        if self._pos == len(self._buf) and len(pending) == 1:
            buf = pending[0]
        else:
            buf = b"".join([self._buf[self._pos :], *pending])
        self._buf = buf
        self._pos = 0
        pending.clear()
        self._pending_size = 0
        return buf

    def next_frame(self) -> Frame | _NeedData:
        """Return the next complete frame, or :data:`NEED_DATA` if it is not all here yet.

        Raises :class:`FrameError` (bad frame-end octet, unknown frame type, a heartbeat
        off channel 0 or with a payload), :class:`FrameTooLarge`, :class:`DecodeError` (a
        payload that does not decode) or :class:`UnknownMethod` (a class or method id the
        version does not define).  After raising, the reader is broken for good and
        every later call raises the same exception.
        """
        frames = self.read_frames(_once=True)
        return frames[0] if frames else NEED_DATA

    def read_frames(
        self, data: bytes | bytearray | memoryview = b"", _once: bool = False
    ) -> list[Frame]:
        """Return every complete frame buffered, in order (possibly none).

        ``data``, if given, is fed first (as :meth:`feed` would): a connection reading the
        socket calls just this, once per read.  Errors as for :meth:`next_frame`, but when
        frames came before the bad one they are returned first: the reader stops there
        (:attr:`error` says why) and the next call raises the error.  What those frames
        said happened (an ack, a ``no_ack`` delivery the broker counts as delivered), however
        the bytes were split into reads.  (``_once`` is :meth:`next_frame`'s: stop after
        one frame.)
        """
        # One loop serves both entry points, keeping its state in locals; ``self._pos`` is
        # written back whenever the loop stops or joins chunks.  A delivery is three frames
        # and every one passes through here, so the frame objects are filled in directly
        # (``_new`` and slot stores, without a call to ``__init__``).
        if self._error is not None:
            raise again(self._error)
        # ``out.append(frame)``, not a saved ``append``: 3.11 runs the method form inline
        # (no call at all), which the bound method cannot be.
        out: list[Frame] = []
        buf = self._buf
        pos = self._pos
        limit = len(buf)
        if data:  # feed(data), inline
            if type(data) is not bytes:
                data = bytes(data)
            if pos == limit and not self._pending_size:
                self._buf = buf = data
                self._pos = pos = 0
                limit = len(buf)
            else:
                self._pending.append(data)
                self._pending_size += len(data)
        max_size = self._frame_max - 8  # the largest payload accepted
        try:
            while True:
                start = pos + 7
                if start + 4 <= limit:
                    # The frame header and the next four bytes in one call: for a method
                    # frame (the frame most often read) they are its class and method ids.
                    frame_type, channel, size, index = _unpack_frame_header_and_ids(buf, pos)
                else:
                    if start > limit:
                        if limit - pos + self._pending_size < 7:
                            break
                        self._pos = pos
                        buf = self._join()
                        pos = 0
                        start = 7
                        limit = len(buf)
                        continue
                    frame_type, channel, size = _unpack_frame_header(buf, pos)
                    index = -1  # a method frame this short is reported below
                if size > max_size and (
                    frame_type != FRAME_HEADER or size > self._header_frame_max - 8
                ):
                    raise self._too_large(frame_type, channel, size)
                end = start + size
                if end >= limit:
                    if limit - pos + self._pending_size < size + 8:
                        break
                    self._pos = pos
                    buf = self._join()
                    pos = 0
                    limit = len(buf)
                    continue
                if buf[end] != FRAME_END:
                    raise FrameError(
                        f"frame-end octet is {buf[end]:#04x}, not 0xce (frame type "
                        f"{frame_type}, channel {channel}, size {size})"
                    )
                pos = end + 1

                frame: Any
                if frame_type == FRAME_METHOD:
                    if size < 4:
                        raise DecodeError(
                            f"method frame payload of {size} bytes on channel {channel}"
                        )
                    # The class id and method id, read as one number, are the key.
                    try:
                        decode, decode_properties = self._method_decoders[index]
                    except KeyError:
                        raise self._unknown_method(buf, start) from None
                    try:
                        method = decode(buf, start + 4, end)
                    except RemoteProtocolError:
                        raise
                    except _SLIPS as exc:
                        # The generated decoders promise DecodeError only; this keeps the
                        # promise towards the caller should one of them slip.
                        name = decode.__self__.NAME  # type: ignore[attr-defined]
                        raise DecodeError(f"{name}: malformed arguments: {exc}") from exc
                    if decode_properties is not None and channel and self.combine_content:
                        # A content-carrying method.  The usual content, a header frame
                        # and one body frame (or none, for an empty body) all here, is
                        # combined inline; _combine makes every other decision.  Reads past
                        # the buffer fail (IndexError, struct.error) rather than being
                        # checked for: that only happens with part of the content still to
                        # come, and then _combine says so.
                        try:
                            (
                                header_type,
                                header_channel,
                                header_size,
                                class_id,
                                body_size,
                                flags,
                            ) = _unpack_header_frame_and_flags(buf, pos)
                            header_end = pos + 7 + header_size
                            if (
                                header_type == FRAME_HEADER
                                and header_channel == channel
                                and class_id == index >> 16
                                and 14 <= header_size <= max_size
                            ):
                                if body_size:
                                    # The header frame's end octet, then the body frame's header.
                                    header_end_octet, body_type, body_channel, body_frame_size = (
                                        _unpack_end_and_frame_header(buf, header_end)
                                    )
                                    body_end = header_end + 8 + body_frame_size
                                    if (
                                        header_end_octet == FRAME_END
                                        and body_type == FRAME_BODY
                                        and body_channel == channel
                                        and body_frame_size == body_size
                                        and body_size <= max_size
                                        and buf[body_end] == FRAME_END
                                    ):
                                        properties = decode_properties(
                                            buf, pos + 21, header_end, flags
                                        )
                                        frame = _new(ContentFrame)
                                        frame.channel = channel
                                        frame.method = method
                                        frame.properties = properties
                                        frame.body = buf[header_end + 8 : body_end]
                                        out.append(frame)
                                        pos = body_end + 1
                                        # All read (the usual end of a read): stop here
                                        # rather than at the top of the loop.
                                        if _once or (pos == limit and not self._pending_size):
                                            break
                                        continue
                                elif buf[header_end] == FRAME_END:
                                    properties = decode_properties(
                                        buf, pos + 21, header_end, flags
                                    )
                                    frame = _new(ContentFrame)
                                    frame.channel = channel
                                    frame.method = method
                                    frame.properties = properties
                                    frame.body = b""
                                    out.append(frame)
                                    pos = header_end + 1
                                    if _once or (pos == limit and not self._pending_size):
                                        break
                                    continue
                        except (RemoteProtocolError, *_SLIPS):
                            pass  # not combined here: left to _combine
                        frame = self._combine(buf, pos, channel, method)
                        if frame is not None:
                            out.append(frame)
                            pos = self._pos  # _combine left it after the content
                            if _once:
                                break
                            continue
                    frame = _new(MethodFrame)
                    frame.channel = channel
                    frame.method = method
                elif frame_type == FRAME_HEADER:
                    if size < 14:
                        raise DecodeError(
                            f"content header payload of {size} bytes on channel {channel}"
                        )
                    class_id, _weight, body_size = _unpack_content_header(buf, start)
                    decode_properties = self._property_decoders.get(class_id)
                    if decode_properties is None:
                        raise UnknownMethod(
                            f"content header for class {class_id}, which has no content"
                        )
                    try:
                        properties = decode_properties(buf, start + 12, end)
                    except (DecodeError, *_SLIPS) as exc:
                        error = exc if isinstance(exc, DecodeError) else DecodeError(
                            f"content properties of class {class_id}: {exc}"
                        )
                        if not self.lenient_properties:
                            if error is exc:
                                raise
                            raise error from exc
                        from ._base import UndecodableProperties  # (an import cycle at the top)

                        properties = UndecodableProperties(
                            class_id, bytes(buf[start + 12 : end]), error
                        )
                    frame = _new(HeaderFrame)
                    frame.channel = channel
                    frame.class_id = class_id
                    frame.body_size = body_size
                    frame.properties = properties
                elif frame_type == FRAME_BODY:
                    frame = _new(BodyFrame)
                    frame.channel = channel
                    frame.payload = buf[start:end]
                elif frame_type == FRAME_HEARTBEAT:
                    if channel != 0:
                        raise FrameError(f"heartbeat frame on channel {channel}, not 0")
                    if size:
                        raise FrameError(f"heartbeat frame with a {size}-byte payload")
                    frame = _HEARTBEAT
                else:
                    raise FrameError(f"unknown frame type {frame_type} on channel {channel}")
                out.append(frame)
                if _once:
                    break
        except RemoteProtocolError as exc:
            self._error = exc
            if out:
                return out  # the frames before the bad one; the next call raises
            raise
        self._pos = pos
        return out

    def _too_large(self, frame_type: int, channel: int, size: int) -> FrameTooLarge:
        limit = self._frame_max
        if frame_type == FRAME_HEADER and self._header_frame_max > limit:
            return FrameTooLarge(
                f"content header frame of {size + 8} bytes on channel {channel} exceeds "
                f"the {self._header_frame_max} bytes the broker offered as frame_max"
            )
        return FrameTooLarge(
            f"frame of {size + 8} bytes on channel {channel} exceeds frame_max {limit}"
        )

    def _unknown_method(self, buf: bytes, start: int) -> RemoteProtocolError:
        class_id, method_id = _unpack_ids(buf, start)
        try:
            self.spec.method_class(class_id, method_id)
        except UnknownMethod as exc:
            return exc
        return UnknownMethod(f"no method {class_id}/{method_id}")  # pragma: no cover

    def _combine(self, buf: bytes, pos: int, channel: int, method: Method) -> ContentFrame | None:
        """The :class:`ContentFrame` for ``method`` (just read, on ``channel``) and the
        frames that follow it at ``buf[pos:]``, or ``None`` to go on frame by frame.

        It is combined only when everything is regular and already in ``buf``: a header
        frame on the same channel for the method's class whose properties decode, then body
        frames on that channel carrying exactly the announced size (none for an empty
        body), each within ``frame_max`` and properly ended.  Anything else -- a frame of
        another channel in between, a short or long body, bytes still to come, a header
        that does not decode -- is left to the frame-by-frame path, which reports it (or
        lets the client report it) exactly as it would have without combining.  On success
        ``self._pos`` is set to the offset after the content.
        """
        limit = len(buf)
        if pos + 22 > limit:  # the smallest header frame
            return None
        # The header frame's own header and the fixed part of its payload, in one call.
        frame_type, frame_channel, size, class_id, _weight, body_size = (
            _unpack_header_frame_start(buf, pos)
        )
        start = pos + 7
        end = start + size
        max_size = self._frame_max - 8
        if (
            frame_type != FRAME_HEADER
            or frame_channel != channel
            or class_id != method.CLASS_ID
            or not 14 <= size <= max_size
            or end >= limit
            or buf[end] != FRAME_END
        ):
            return None
        pos = end + 1
        if not body_size:
            body = b""
        elif pos + 8 > limit:
            return None
        else:
            frame_type, frame_channel, size = _unpack_frame_header(buf, pos)
            body_start = pos + 7
            pos = body_start + size
            if (
                frame_type != FRAME_BODY
                or frame_channel != channel
                or size > max_size
                or pos >= limit
                or buf[pos] != FRAME_END
            ):
                return None
            pos += 1
            if size == body_size:  # the rule: one body frame
                body = buf[body_start : pos - 1]
            elif size > body_size:
                return None
            else:
                rest = self._more_body(buf, pos, channel, buf[body_start : pos - 1], body_size)
                if rest is None:
                    return None
                pos, body = rest
        decode = self._property_decoders.get(class_id)
        if decode is None:
            return None
        try:
            properties = decode(buf, start + 12, end)
        except (RemoteProtocolError, *_SLIPS):
            return None
        frame: ContentFrame = _new(ContentFrame)
        frame.channel = channel
        frame.method = method
        frame.properties = properties
        frame.body = body
        self._pos = pos
        return frame

    def _more_body(
        self, buf: bytes, pos: int, channel: int, first: bytes, body_size: int
    ) -> tuple[int, bytes] | None:
        """A body spread over several frames, ``first`` read already and the rest starting
        at ``buf[pos]``: the offset after it and the whole body, or ``None`` unless the rest
        is in ``buf``, in regular body frames on ``channel``, adding up to ``body_size``."""
        limit = len(buf)
        max_size = self._frame_max - 8
        chunks = [first]
        missing = body_size - len(first)
        while missing > 0:
            if pos + 8 > limit:
                return None
            frame_type, frame_channel, size = _unpack_frame_header(buf, pos)
            start = pos + 7
            pos = start + size
            missing -= size
            if (
                frame_type != FRAME_BODY
                or frame_channel != channel
                or missing < 0
                or size > max_size
                or pos >= limit
                or buf[pos] != FRAME_END
            ):
                return None
            chunks.append(buf[start:pos])
            pos += 1
        return pos, b"".join(chunks)


_SLIPS = (struct.error, IndexError, ValueError, OverflowError, TypeError)


# --------------------------------------------------------------------------- writer

#: A heartbeat frame, ready to send.
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def heartbeat_frame() -> bytes:
    """The 8 bytes of a heartbeat frame (type 8, channel 0, empty payload)."""
    return HEARTBEAT_FRAME


def _check_channel(channel: int) -> None:
    if not 0 <= channel <= 0xFFFF:
        raise EncodeError(f"channel {channel} is outside 0..65535")


def method_frame(channel: int, method: Method) -> bytes:
    """Encode ``method`` as one method frame on ``channel``.

    Raises :class:`EncodeError` if a field does not fit or the channel is out of range.
    (The same as ``method.encode_frame(channel)``.)
    """
    return method.encode_frame(channel)


def header_frame(
    channel: int, class_id: int, body_size: int, properties: ContentProperties | None
) -> bytes:
    """Encode a content header frame (weight 0); ``None`` properties means none set.

    Raises :class:`EncodeError` for a value out of range or of the wrong type.
    """
    try:
        _check_channel(channel)
        if not 0 <= body_size <= 0xFFFFFFFFFFFFFFFF:
            raise EncodeError(f"body size {body_size} does not fit in 64 bits")
        if not 0 <= class_id <= 0xFFFF:
            raise EncodeError(f"content header class id {class_id} is outside 0..65535")
        props = properties.encode() if properties is not None else _NO_PROPERTIES
        return (
            _pack_header_frame_start(FRAME_HEADER, channel, 12 + len(props), class_id, 0, body_size)
            + props
            + _END
        )
    except (TypeError, AttributeError, struct.error) as exc:
        # Only a wrong argument type gets here; the checks cost nothing on the way in.
        raise _argument_error(
            "header frame",
            exc,
            ("channel", channel, int),
            ("class id", class_id, int),
            ("body size", body_size, int),
            ("properties", properties, "properties"),
        ) from exc


def body_frame(channel: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Encode one body frame carrying ``payload`` (which must fit the peer's frame_max).

    Raises :class:`EncodeError` for a channel out of range or an argument of the wrong type.
    """
    try:
        _check_channel(channel)
        if type(payload) is not bytes:
            # The size is in bytes: len() of a memoryview of wider items counts items.
            payload = memoryview(payload).tobytes()
        return _pack_frame_header(FRAME_BODY, channel, len(payload)) + payload + _END
    except (TypeError, struct.error) as exc:
        raise _argument_error(
            "body frame", exc, ("channel", channel, int), ("payload", payload, _BYTES_LIKE)
        ) from exc


_BYTES_LIKE = (bytes, bytearray, memoryview)
_TYPE_NAMES = {
    int: "an int",
    _BYTES_LIKE: "bytes-like (bytes, bytearray or memoryview)",
    "properties": "a ContentProperties (e.g. Basic.Properties) or None",
}


def _argument_error(what: str, exc: Exception, *arguments: tuple[str, Any, Any]) -> EncodeError:
    """The EncodeError for a writer called with an argument of the wrong type, naming the
    first such argument (``"properties"`` as the type: anything with ``encode()``)."""
    for name, value, types in arguments:
        if types == "properties":
            wrong = value is not None and not hasattr(value, "encode")
        else:
            wrong = not isinstance(value, types)
        if wrong:
            return EncodeError(
                f"{what}: {name} must be {_TYPE_NAMES[types]}, not {type(value).__name__}"
            )
    return EncodeError(f"{what}: cannot encode ({exc})")


#: Large enough for any body in one body frame (its size field is 32 bits).
_NO_FRAME_MAX = 0xFFFFFFFF + 8


def encode_frame(frame: Frame, *, frame_max: int | None = None) -> bytes:
    """Encode any frame object back to its bytes (the inverse of :class:`FrameReader`).

    A :class:`ContentFrame` (what a reader made with ``combine_content=True`` returns)
    comes out as the frames it stands for, as :func:`content_frames` writes them: the
    method frame, a header frame of the method's class (``None`` properties meaning none
    set), then the body in body frames of at most ``frame_max - 8`` bytes -- or, without
    a ``frame_max``, in a single body frame (none for an empty body).  ``frame_max``
    matters for contents only.  Raises :class:`EncodeError` for what cannot be written.
    """
    if isinstance(frame, MethodFrame):
        return method_frame(frame.channel, frame.method)
    if isinstance(frame, HeaderFrame):
        return header_frame(frame.channel, frame.class_id, frame.body_size, frame.properties)
    if isinstance(frame, BodyFrame):
        return body_frame(frame.channel, frame.payload)
    if isinstance(frame, HeartbeatFrame):
        _check_channel(frame.channel)
        return _pack_frame_header(FRAME_HEARTBEAT, frame.channel, 0) + _END
    if isinstance(frame, ContentFrame):
        method = frame.method
        if not getattr(method, "HAS_CONTENT", False):
            name = getattr(method, "NAME", type(method).__name__)
            raise EncodeError(f"a ContentFrame needs a content method; {name} carries no content")
        data = content_frames(
            frame.channel,
            method,
            frame.properties,
            frame.body,
            _NO_FRAME_MAX if frame_max is None else frame_max,
        )
        return data if isinstance(data, bytes) else b"".join(data)
    raise EncodeError(f"cannot encode {type(frame).__name__}")


def content_frames(
    channel: int,
    method: Method,
    properties: ContentProperties | None,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> bytes | list[bytes | memoryview]:
    """Encode a content-carrying method with its header frame and body frames.

    On the wire: the method frame, a header frame (the method's class id, weight 0, the
    body size and ``properties.encode()``; ``None`` means no properties set), then the body
    cut into body frames of at most ``frame_max - 8`` bytes.  An empty body gets no body
    frame at all.

    When everything comes to less than :data:`SMALL_CONTENT` bytes the result is one
    ``bytes``.  Otherwise it is a list of buffers to send in order (e.g. with
    ``socket.sendmsg``, in batches of at most ``IOV_MAX``): body chunks are ``memoryview``
    slices of ``body`` itself, not copies, so ``body`` must not be changed until they are
    sent.  Raises :class:`EncodeError` for fields that do not fit, a channel out of range
    or a ``frame_max`` below 9.

    The same as ``method.content_frames(channel, properties, body, frame_max)``, which
    the client calls on every publish.
    """
    return method.content_frames(channel, properties, body, frame_max)


def _content_frames(
    channel: int,
    method: Method,
    properties: ContentProperties | None,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> bytes | list[bytes | memoryview]:
    """:func:`content_frames` for any method, properties and body (the content methods'
    generated ``content_frames`` take a small body themselves and hand the rest here)."""
    if type(body) is not bytes and not isinstance(body, (bytes, bytearray, memoryview)):
        raise EncodeError(f"a body must be bytes-like, not {type(body).__name__}")
    # The method frame, whole (its generated encode_frame packs the frame header with the
    # ids and the end octet with the last field); the property flags are packed with the
    # header frame's fixed fields, in one call.
    head = method.encode_frame(channel)
    flags, props = properties.encode_values() if properties is not None else (0, b"")
    size = len(body)
    props_size = len(props)
    # The common case, checked at once: one body frame; otherwise check everything and see
    # whether it is one body frame after all (a bytearray or memoryview body).
    single = (
        type(body) is bytes
        and 0 < size < SMALL_CONTENT
        and size + 8 <= frame_max
        and props_size + 22 <= frame_max
        and len(head) <= frame_max
    )
    if not single:
        if len(head) > frame_max or props_size + 22 > frame_max:
            raise EncodeError(
                f"{method.NAME} or its content header does not fit in a frame of frame_max "
                f"{frame_max} bytes (method {len(head)}, header {props_size + 22})"
            )
        if type(body) is memoryview and body.itemsize != 1:  # len() counts items, not bytes
            body = body.cast("B")
            size = len(body)
        single = 0 < size < SMALL_CONTENT and size + 8 <= frame_max
    if single:
        # The whole content in a single join, the body frame's header packed with the
        # header frame's end octet.
        return b"".join(
            (
                head,
                _pack_header_frame_and_flags(
                    FRAME_HEADER, channel, 14 + props_size, method.CLASS_ID, 0, size, flags
                ),
                props,
                _pack_end_and_frame_header(FRAME_END, FRAME_BODY, channel, size),
                body,
                _END,
            )
        )
    if size + 8 <= frame_max and size < SMALL_CONTENT:
        # No body at all.
        return b"".join(
            (
                head,
                _pack_header_frame_and_flags(
                    FRAME_HEADER, channel, 14 + props_size, method.CLASS_ID, 0, 0, flags
                ),
                props,
                _END,
            )
        )
    chunk = frame_max - 8
    if chunk < 1:
        raise EncodeError(f"frame_max {frame_max} leaves no room for a body")
    pieces = [
        head,
        _pack_header_frame_and_flags(
            FRAME_HEADER, channel, 14 + props_size, method.CLASS_ID, 0, size, flags
        ),
        props,
        _END,
    ]
    if size < SMALL_CONTENT:
        # Several body frames but still small: one copy into a single buffer is cheaper
        # than handing the driver a long list.
        view = memoryview(body)
        for at in range(0, size, chunk):
            piece = view[at : at + chunk]
            pieces.append(_pack_frame_header(FRAME_BODY, channel, len(piece)))
            pieces.append(piece)  # type: ignore[arg-type]
            pieces.append(_END)
        return b"".join(pieces)
    view = memoryview(body)
    out: list[bytes | memoryview] = [b"".join(pieces)]
    full_header = _pack_frame_header(FRAME_BODY, channel, chunk)
    # The end octet of one body frame and the header of the next go out as one buffer.
    full_joint = _END + full_header
    last = size - 1 - (size - 1) % chunk  # offset of the final (possibly short) chunk
    out.append(full_header if last else _pack_frame_header(FRAME_BODY, channel, size))
    for at in range(0, last, chunk):
        out.append(view[at : at + chunk])
        if at + chunk < last:
            out.append(full_joint)
        else:
            out.append(_END + _pack_frame_header(FRAME_BODY, channel, size - last))
    out.append(view[last:])
    out.append(_END)
    return out
