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
...) is the client layer's business, not the reader's.

The writer functions return the bytes to send.  Small contents come back as one ``bytes``;
big bodies come back as a list whose body chunks are ``memoryview`` slices of the caller's
body, so that a driver can hand them to ``socket.sendmsg`` without copying.
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from .errors import (
    DecodeError,
    EncodeError,
    FrameError,
    FrameTooLarge,
    RemoteProtocolError,
    UnknownMethod,
)

if TYPE_CHECKING:
    from ._base import ContentProperties, Method

__all__ = [
    "Frame",
    "MethodFrame",
    "HeaderFrame",
    "BodyFrame",
    "HeartbeatFrame",
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
_content_header = struct.Struct(">HHQ")
_unpack_content_header = _content_header.unpack_from
_pack_header_frame_start = struct.Struct(">BHIHHQ").pack
# The method frame's end octet and the header frame's fixed part, packed in one call.
_pack_end_and_header_frame_start = struct.Struct(">BBHIHHQ").pack
_pack_end_and_frame_header = struct.Struct(">BBHI").pack
_NO_PROPERTIES = b"\x00\x00"


# --------------------------------------------------------------------------- frames


class Frame:
    """Base of the four frame classes.  Frames are values: compare them with ``==``."""

    __slots__ = ("channel",)
    channel: int
    #: The frame-type octet.
    FRAME_TYPE: int = 0

    def _key(self) -> tuple[Any, ...]:
        return (self.channel,)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Frame)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields(), self._key()))
        return f"{type(self).__name__}({fields})"

    def _fields(self) -> tuple[str, ...]:
        return ("channel",)


class MethodFrame(Frame):
    """A method frame: ``method`` (a generated :class:`~leveret.wire._base.Method`) on ``channel``."""

    __slots__ = ("method",)
    FRAME_TYPE = FRAME_METHOD

    def __init__(self, channel: int, method: Method) -> None:
        self.channel = channel
        self.method = method

    def _key(self) -> tuple[Any, ...]:
        return (self.channel, self.method)

    def _fields(self) -> tuple[str, ...]:
        return ("channel", "method")


class HeaderFrame(Frame):
    """A content header frame: the content's class id, total body size and properties.

    The weight field (always 0) is dropped when reading and written as 0.
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

    def _key(self) -> tuple[Any, ...]:
        return (self.channel, self.class_id, self.body_size, self.properties)

    def _fields(self) -> tuple[str, ...]:
        return ("channel", "class_id", "body_size", "properties")


class BodyFrame(Frame):
    """A content body frame: one piece of the body, ``payload``, on ``channel``."""

    __slots__ = ("payload",)
    FRAME_TYPE = FRAME_BODY

    def __init__(self, channel: int, payload: bytes) -> None:
        self.channel = channel
        self.payload = payload

    def _key(self) -> tuple[Any, ...]:
        return (self.channel, self.payload)

    def _fields(self) -> tuple[str, ...]:
        return ("channel", "payload")

    def __repr__(self) -> str:
        # Bodies can be megabytes; show the start only.
        shown = self.payload[:32]
        more = f"+{len(self.payload) - 32} bytes" if len(self.payload) > 32 else ""
        return f"BodyFrame(channel={self.channel!r}, payload={shown!r}{more})"


class HeartbeatFrame(Frame):
    """A heartbeat frame (always on channel 0 when read from the wire)."""

    __slots__ = ()
    FRAME_TYPE = FRAME_HEARTBEAT

    def __init__(self, channel: int = 0) -> None:
        self.channel = channel


class _NeedData:
    """Type of :data:`NEED_DATA`; there is only ever one instance."""

    __slots__ = ()
    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameReader.next_frame` when no complete frame is buffered yet.
NEED_DATA: Final = _NeedData()

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
    """

    __slots__ = (
        "spec",
        "_frame_max",
        "_methods",
        "_properties",
        "_buf",
        "_pos",
        "_pending",
        "_pending_size",
        "_error",
    )

    def __init__(self, spec: ModuleType, frame_max: int = FRAME_MIN_SIZE) -> None:
        self.spec = spec
        self._methods: dict[int, Any] = spec.METHODS
        self._properties: dict[int, Any] = spec.PROPERTIES
        self._frame_max = FRAME_MIN_SIZE
        self.frame_max = frame_max
        # Unconsumed input is ``_buf[_pos:]`` followed by the chunks in ``_pending``.  Chunks
        # are only joined into ``_buf`` once a whole frame (or a whole frame header) is
        # there, so a big frame arriving in many small pieces is copied once, not once per
        # piece.
        self._buf: bytes = b""
        self._pos = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._error: RemoteProtocolError | None = None

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
            raise self._error
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
        frames: list[Frame] = []
        self._read(frames, True)
        return frames[0] if frames else NEED_DATA

    def read_frames(self) -> list[Frame]:
        """Return every complete frame buffered, in order (possibly none).

        Errors as for :meth:`next_frame`; the frames decoded before the bad one are lost
        with it, which does not matter since the connection must be closed anyway.
        """
        frames: list[Frame] = []
        self._read(frames, False)
        return frames

    def _read(self, out: list[Frame], once: bool) -> None:
        # One loop serves both entry points so that the many-frames path keeps its state in
        # locals; ``self._pos`` is written back whenever the loop stops or joins chunks.
        if self._error is not None:
            raise self._error
        append = out.append
        buf = self._buf
        pos = self._pos
        frame_max = self._frame_max
        try:
            while True:
                have = len(buf) - pos
                if have < 7:
                    if have + self._pending_size < 7:
                        break
                    self._pos = pos
                    buf = self._join()
                    pos = 0
                    have = len(buf)
                frame_type, channel, size = _unpack_frame_header(buf, pos)
                if size + 8 > frame_max:
                    raise FrameTooLarge(
                        f"frame of {size + 8} bytes on channel {channel} exceeds "
                        f"frame_max {frame_max}"
                    )
                if have < size + 8:
                    if have + self._pending_size < size + 8:
                        break
                    self._pos = pos
                    buf = self._join()
                    pos = 0
                start = pos + 7
                end = start + size
                if buf[end] != FRAME_END:
                    raise FrameError(
                        f"frame-end octet is {buf[end]:#04x}, not 0xce (frame type "
                        f"{frame_type}, channel {channel}, size {size})"
                    )
                pos = end + 1

                if frame_type == FRAME_METHOD:
                    if size < 4:
                        raise DecodeError(
                            f"method frame payload of {size} bytes on channel {channel}"
                        )
                    class_id, method_id = _unpack_ids(buf, start)
                    cls = self._methods.get((class_id << 16) | method_id)
                    if cls is None:
                        cls = self.spec.method_class(class_id, method_id)  # UnknownMethod
                    try:
                        method = cls.decode(buf, start + 4, end)
                    except RemoteProtocolError:
                        raise
                    except _SLIPS as exc:
                        # The generated decoders promise DecodeError only; this keeps the
                        # promise towards the caller should one of them slip.
                        raise DecodeError(f"{cls.NAME}: malformed arguments: {exc}") from exc
                    append(MethodFrame(channel, method))
                elif frame_type == FRAME_BODY:
                    append(BodyFrame(channel, buf[start:end]))
                elif frame_type == FRAME_HEADER:
                    if size < 14:
                        raise DecodeError(
                            f"content header payload of {size} bytes on channel {channel}"
                        )
                    class_id, _weight, body_size = _unpack_content_header(buf, start)
                    properties_cls = self._properties.get(class_id)
                    if properties_cls is None:
                        raise UnknownMethod(
                            f"content header for class {class_id}, which has no content"
                        )
                    try:
                        properties = properties_cls.decode(buf, start + 12, end)
                    except RemoteProtocolError:
                        raise
                    except _SLIPS as exc:
                        raise DecodeError(f"content properties of class {class_id}: {exc}") from exc
                    append(HeaderFrame(channel, class_id, body_size, properties))
                elif frame_type == FRAME_HEARTBEAT:
                    if channel != 0:
                        raise FrameError(f"heartbeat frame on channel {channel}, not 0")
                    if size:
                        raise FrameError(f"heartbeat frame with a {size}-byte payload")
                    append(_HEARTBEAT)
                else:
                    raise FrameError(f"unknown frame type {frame_type} on channel {channel}")
                if once:
                    break
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        self._pos = pos


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
    """
    if not 0 <= channel <= 0xFFFF:
        raise EncodeError(f"channel {channel} is outside 0..65535")
    payload = method.encode()
    return _pack_frame_header(FRAME_METHOD, channel, len(payload)) + payload + _END


def header_frame(
    channel: int, class_id: int, body_size: int, properties: ContentProperties | None
) -> bytes:
    """Encode a content header frame (weight 0); ``None`` properties means none set."""
    _check_channel(channel)
    if not 0 <= body_size <= 0xFFFFFFFFFFFFFFFF:
        raise EncodeError(f"body size {body_size} does not fit in 64 bits")
    props = properties.encode() if properties is not None else _NO_PROPERTIES
    return (
        _pack_header_frame_start(FRAME_HEADER, channel, 12 + len(props), class_id, 0, body_size)
        + props
        + _END
    )


def body_frame(channel: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Encode one body frame carrying ``payload`` (which must fit the peer's frame_max)."""
    _check_channel(channel)
    return _pack_frame_header(FRAME_BODY, channel, len(payload)) + bytes(payload) + _END


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame object back to its bytes (the inverse of :class:`FrameReader`)."""
    if isinstance(frame, MethodFrame):
        return method_frame(frame.channel, frame.method)
    if isinstance(frame, HeaderFrame):
        return header_frame(frame.channel, frame.class_id, frame.body_size, frame.properties)
    if isinstance(frame, BodyFrame):
        return body_frame(frame.channel, frame.payload)
    if isinstance(frame, HeartbeatFrame):
        _check_channel(frame.channel)
        return _pack_frame_header(FRAME_HEARTBEAT, frame.channel, 0) + _END
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
    """
    if not 0 <= channel <= 0xFFFF:
        raise EncodeError(f"channel {channel} is outside 0..65535")
    if type(body) is not bytes and not isinstance(body, (bytes, bytearray, memoryview)):
        raise EncodeError(f"a body must be bytes-like, not {type(body).__name__}")
    payload = method.encode()
    props = properties.encode() if properties is not None else _NO_PROPERTIES
    if len(payload) + 8 > frame_max or len(props) + 20 > frame_max:
        raise EncodeError(
            f"{method.NAME} or its content header does not fit in a frame of frame_max "
            f"{frame_max} bytes (method {len(payload) + 8}, header {len(props) + 20})"
        )
    size = len(body)
    if type(body) is memoryview and body.itemsize != 1:  # len() counts items, not bytes
        body = body.cast("B")
        size = len(body)
    if size + 8 <= frame_max and size < SMALL_CONTENT:
        # The common case, one body frame at most: a single join, and each end octet
        # packed together with the next frame's header.
        if size:
            return b"".join(
                (
                    _pack_frame_header(FRAME_METHOD, channel, len(payload)),
                    payload,
                    _pack_end_and_header_frame_start(
                        FRAME_END, FRAME_HEADER, channel, 12 + len(props), method.CLASS_ID, 0, size
                    ),
                    props,
                    _pack_end_and_frame_header(FRAME_END, FRAME_BODY, channel, size),
                    body,
                    _END,
                )
            )
        return b"".join(
            (
                _pack_frame_header(FRAME_METHOD, channel, len(payload)),
                payload,
                _pack_end_and_header_frame_start(
                    FRAME_END, FRAME_HEADER, channel, 12 + len(props), method.CLASS_ID, 0, 0
                ),
                props,
                _END,
            )
        )
    chunk = frame_max - 8
    if chunk < 1:
        raise EncodeError(f"frame_max {frame_max} leaves no room for a body")
    head = [
        _pack_frame_header(FRAME_METHOD, channel, len(payload)),
        payload,
        _pack_end_and_header_frame_start(
            FRAME_END, FRAME_HEADER, channel, 12 + len(props), method.CLASS_ID, 0, size
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
            head.append(_pack_frame_header(FRAME_BODY, channel, len(piece)))
            head.append(piece)  # type: ignore[arg-type]
            head.append(_END)
        return b"".join(head)
    view = memoryview(body)
    out: list[bytes | memoryview] = [b"".join(head)]
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
