"""Base classes and slow-path helpers for the generated codecs in ``amqp0_9_1``/``amqp0_8``.

The generated ``encode``/``decode`` methods are straight-line code with no checks on the
fast path: a value that does not fit makes ``struct`` (or ``str.encode``) fail, and only then
does :func:`encode_error` walk the fields to say which one was wrong.  Nothing here runs per
field on a successful encode or decode, except the timestamp conversions.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, SupportsIndex, overload

from .errors import DecodeError, EncodeError
from .frames import _content_frames

__all__ = [
    "Method",
    "ContentProperties",
    "Lenient",
    "encode_error",
    "decode_error",
    "longstr_bytes",
    "timestamp_to_int",
    "int_to_timestamp",
    "skip_flag_words",
    "OCTETS",
    "OCTETS_END",
    "END",
    "frame_error",
    "SHORTSTRS",
    "shortstr",
    "cached_shortstr",
    "UndecodableProperties",
    "KeywordsOnly",
    "KEYWORDS_ONLY",
    "positional_error",
]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_SECOND = timedelta(seconds=1)
_unpack_H = struct.Struct("!H").unpack_from
_pack_H = struct.Struct("!H").pack
_pack_method_frame_header = struct.Struct("!BHI").pack

# Largest value per integer wire type, for the error messages of encode_error().
_INT_MAX = {
    "octet": 0xFF,
    "short": 0xFFFF,
    "long": 0xFFFF_FFFF,
    "longlong": 0xFFFF_FFFF_FFFF_FFFF,
    "timestamp": 0xFFFF_FFFF_FFFF_FFFF,
}


class _Fields:
    """What methods and content properties share: slots, equality, a safe repr."""

    __slots__ = ()

    #: Attribute names in wire order.
    FIELDS: ClassVar[tuple[str, ...]] = ()
    #: The AMQP type of each attribute in ``FIELDS`` (``"shortstr"``, ``"bit"``, ...).
    FIELD_TYPES: ClassVar[tuple[str, ...]] = ()
    #: Attributes whose value ``repr`` replaces with ``<hidden>`` (credentials).
    SENSITIVE: ClassVar[frozenset[str]] = frozenset()
    #: Dotted AMQP name, e.g. ``"basic.publish"`` or ``"basic.properties"``.
    NAME: ClassVar[str] = ""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    # Mutable and compared by value: not hashable.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        hidden = self.SENSITIVE
        parts = [
            f"{f}=<hidden>" if f in hidden else f"{f}={getattr(self, f)!r}" for f in self.FIELDS
        ]
        return f"{type(self).__qualname__}({', '.join(parts)})"


class Method(_Fields):
    """One AMQP method: the arguments of a method frame.

    Subclasses are generated, one per method, nested in a container class per AMQP class
    (``Basic.Publish``).  ``encode()`` returns the method frame payload starting with the
    class id and method id; ``decode(buf, offset, end)`` reads the arguments after them.
    """

    __slots__ = ()

    CLASS_ID: ClassVar[int] = 0
    METHOD_ID: ClassVar[int] = 0
    #: ``CLASS_ID << 16 | METHOD_ID``, the key of the module's ``METHODS``.
    INDEX: ClassVar[int] = 0
    #: True when the sender waits for one of ``RESPONSES``.
    SYNCHRONOUS: ClassVar[bool] = False
    #: The methods that answer this one (empty for asynchronous methods).
    RESPONSES: ClassVar[tuple[type[Method], ...]] = ()
    #: True when a content header and body frames follow this method.
    HAS_CONTENT: ClassVar[bool] = False
    #: Who may send it, from the spec's ``<chassis>`` (the peer that must implement a
    #: method is the one that receives it).
    SENT_BY_SERVER: ClassVar[bool] = False
    SENT_BY_CLIENT: ClassVar[bool] = False

    def encode(self) -> bytes:
        """The method frame payload: class id, method id, then the arguments."""
        raise NotImplementedError

    def encode_frame(self, channel: int) -> bytes:
        """The whole method frame for ``channel``: frame header, :meth:`encode`'s payload,
        frame-end octet.  (Content-carrying methods and methods of fixed-width fields only
        have a generated one that packs it all in one go: publishes and acks take it.)"""
        payload = self.encode()
        try:
            return _pack_method_frame_header(1, channel, len(payload)) + payload + END
        except struct.error as exc:
            raise frame_error(self, channel, exc) from exc

    def content_frames(
        self,
        channel: int,
        properties: ContentProperties | None,
        body: bytes | bytearray | memoryview,
        frame_max: int,
    ) -> bytes | list[bytes | memoryview]:
        """This method with its content header and body as frames for ``channel``: see
        :func:`~leveret.wire.frames.content_frames`.  (The content-carrying methods have a
        generated one that packs a small content in one go: every publish takes it.)"""
        return _content_frames(channel, self, properties, body, frame_max)

    @classmethod
    def decode(cls, buf: bytes | bytearray, offset: int, end: int) -> Method:
        """Decode the arguments in ``buf[offset:end]`` (``offset`` is after the two ids)."""
        raise NotImplementedError


class ContentProperties(_Fields):
    """The properties of a content header, for one content class (``Basic.Properties``).

    Every property defaults to ``None``, meaning "absent": its flag bit is clear and nothing
    of it is on the wire.  ``encode()`` returns the property-flags word(s) followed by the
    present values; the class id, weight and body size around them are the frame layer's.
    """

    __slots__ = ()

    CLASS_ID: ClassVar[int] = 0
    #: The flag bit of each property: the first is bit 15 of the first flags word.
    FLAGS: ClassVar[dict[str, int]] = {}

    def encode(self) -> bytes:
        """Property flags, then each present property's value in flag order."""
        flags, values = self.encode_values()
        return _pack_H(flags) + values

    def encode_values(self) -> tuple[int, bytes]:
        """The property-flags word and, apart, each present property's value in flag order:
        :meth:`encode` without the flags packed in front, for the frame writer to pack them
        with the header frame's other fixed fields.  (No content class has more than 15
        properties, so the flags always fit in one word.)"""
        raise NotImplementedError

    @classmethod
    def decode(
        cls, buf: bytes | bytearray, offset: int, end: int, flags: int | None = None
    ) -> ContentProperties:
        """Decode property flags and values from ``buf[offset:end]``.

        ``flags`` is the first property-flags word when the caller has read it already
        (the frame reader unpacks it with the header frame's fixed fields); ``offset`` is
        then just past it.
        """
        raise NotImplementedError


class KeywordsOnly:
    """The type of :data:`KEYWORDS_ONLY`, the default of the hidden first parameter of every
    generated ``__init__``.

    Fields are set by keyword (``Queue.Declare(queue="q", durable=True)``): with a reserved
    field first in so many methods, a positional call would put values in the wrong fields.
    A plain keyword-only signature (``*,``) would say so, but it costs: CPython fills each
    keyword-only parameter left out from a dict, one lookup each, while ordinary parameters
    take their defaults from a tuple.  ``Basic.Properties()`` with three of its fourteen
    properties given, on every publish, took about a quarter longer (a third of a
    microsecond more on the machine the benchmarks run on).  So the fields are ordinary
    parameters behind one positional-only guard: any positional argument lands in the
    guard, which ``__init__`` checks first (one identity test), and which a type checker
    refuses since nothing else has this type.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<keywords only>"


KEYWORDS_ONLY = KeywordsOnly()


def positional_error(obj: _Fields) -> TypeError:
    """The error of a generated ``__init__`` called with positional arguments."""
    return TypeError(
        f"{type(obj).__qualname__}() takes its fields as keyword arguments only, "
        f"in wire order: {', '.join(obj.FIELDS)}"
    )


class UndecodableProperties(ContentProperties):
    """In a :class:`~leveret.wire.frames.HeaderFrame` in place of the properties when they
    did not decode (only from a reader made with ``lenient_properties=True``).

    The frame itself was sound -- its size, class id and frame-end octet -- but the property
    values were not: a field table nested deeper than :data:`~leveret.wire.fields.MAX_DEPTH`,
    an unknown type letter, a length running past the frame.  A broker passes what a
    publisher sent through unread, so such a header says nothing about the connection: the
    client reports that one message and carries on.  ``raw`` holds the property flags and
    values as received, ``error`` the :class:`DecodeError` they raised.  It has none of the
    properties' attributes; :meth:`encode` gives ``raw`` back (so a proxy or a test can send
    them on as they came).
    """

    __slots__ = ("class_id", "raw", "error")

    NAME = "undecodable properties"

    def __init__(self, class_id: int, raw: bytes, error: DecodeError) -> None:
        self.class_id = class_id
        self.raw = raw
        self.error = error

    def encode(self) -> bytes:
        return self.raw

    def encode_values(self) -> tuple[int, bytes]:
        flags = int.from_bytes(self.raw[:2], "big")
        if len(self.raw) < 2 or flags & 1:
            raise EncodeError(
                "undecodable properties with more than one flags word cannot be split into "
                "flags and values (encode() gives them whole)"
            )
        return flags, self.raw[2:]

    def __eq__(self, other: object) -> bool:
        if type(other) is not UndecodableProperties:
            return NotImplemented
        return (self.class_id, self.raw) == (other.class_id, other.raw)

    def __repr__(self) -> str:
        return (
            f"UndecodableProperties(class_id={self.class_id}, {len(self.raw)} bytes: "
            f"{self.error})"
        )


class Lenient(bytes):
    """A copy of a received buffer whose slices decode as UTF-8 with ``surrogateescape``.

    The generated decoders read each string with a bare ``.decode()``: strict UTF-8, the
    fastest call there is.  Should a string not be UTF-8, the decoder starts again on a
    ``Lenient`` copy of just its payload (``buf[offset:end]``: not the whole read, which
    may hold hundreds of such frames), where the very same code now keeps the odd bytes as
    lone surrogates (which encode back to the same bytes), as the wire layer promises for
    every string.  Only that rare retry pays for the copy and for the slower indexing here.
    """

    __slots__ = ()

    @overload
    def __getitem__(self, index: SupportsIndex) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Lenient: ...

    def __getitem__(self, index: SupportsIndex | slice) -> int | Lenient:
        if isinstance(index, slice):
            return Lenient(bytes.__getitem__(self, index))
        return bytes.__getitem__(self, index)

    def decode(self, encoding: str = "utf-8", errors: str = "surrogateescape") -> str:
        return bytes.decode(self, encoding, errors)


def _field_problem(type_: str, value: Any) -> str | None:
    """Why ``value`` cannot be encoded as ``type_``, or None when it can."""
    if type_ in _INT_MAX:
        if type_ == "timestamp" and isinstance(value, datetime):
            try:
                value = timestamp_to_int(value)
            except (OverflowError, ValueError) as exc:
                return str(exc)
        if not isinstance(value, int):
            return f"expected int, got {type(value).__name__}"
        if not 0 <= value <= _INT_MAX[type_]:
            return f"{value} is outside 0..{_INT_MAX[type_]}"
        return None
    if type_ == "shortstr":
        if not isinstance(value, str):
            return f"expected str, got {type(value).__name__}"
        try:
            size = len(value.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError as exc:
            return f"not encodable as UTF-8 ({exc.reason})"
        if size > 255:
            return f"{size} bytes of UTF-8; a shortstr holds at most 255"
        return None
    if type_ == "longstr":
        if isinstance(value, str):
            try:
                value = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                return f"not encodable as UTF-8 ({exc.reason})"
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return f"expected bytes or str, got {type(value).__name__}"
        if len(value) > 0xFFFF_FFFF:
            return f"{len(value)} bytes; a longstr holds at most 2**32 - 1"
        return None
    return None


def encode_error(obj: _Fields, exc: BaseException) -> EncodeError:
    """The :class:`EncodeError` for a failed ``obj.encode()``, naming the bad field.

    Only called after the generated fast path raised; ``exc`` is what it raised.
    """
    none_ok = isinstance(obj, ContentProperties)
    for name, type_ in zip(obj.FIELDS, obj.FIELD_TYPES):
        value = getattr(obj, name)
        if value is None and (none_ok or type_ in ("table", "timestamp")):
            continue
        problem = _field_problem(type_, value)
        if problem is not None:
            return EncodeError(f"{obj.NAME}: {name} ({type_}): {problem}")
    return EncodeError(f"{obj.NAME}: cannot encode: {exc}")


def frame_error(obj: Method, channel: int, exc: BaseException) -> EncodeError:
    """The :class:`EncodeError` for a failed ``obj.encode_frame(channel)``: the channel
    number, or else the field, that did not fit."""
    if not isinstance(channel, int) or not 0 <= channel <= 0xFFFF:
        return EncodeError(f"{obj.NAME}: channel {channel!r} is outside 0..65535")
    return encode_error(obj, exc)


def decode_error(name: str, exc: BaseException | None, offset: int, end: int) -> DecodeError:
    """The :class:`DecodeError` for a payload of ``name`` that did not decode cleanly."""
    if exc is None:
        if offset > end:
            return DecodeError(f"{name}: payload truncated ({offset - end} bytes missing)")
        return DecodeError(f"{name}: {end - offset} unexpected trailing bytes")
    return DecodeError(f"{name}: payload truncated or malformed ({exc})")


#: ``OCTETS[n] == bytes((n,))``: a length octet or a bit octet without a struct call.
OCTETS: tuple[bytes, ...] = tuple(bytes((n,)) for n in range(256))

#: The frame-end octet.
END = b"\xce"

#: ``OCTETS_END[n] == bytes((n, 0xCE))``: a method's last bit octet and the frame-end octet.
OCTETS_END: tuple[bytes, ...] = tuple(bytes((n, 0xCE)) for n in range(256))

#: Encoded shortstrs (length octet and UTF-8) by value, filled by :func:`cached_shortstr`.
#: Exchange names, routing keys and content types repeat from message to message, and a
#: dict lookup is cheaper than encoding them again.  Bounded: emptied when full, so that a
#: stream of unique values cannot grow it, while the repeating ones come back at once.
SHORTSTRS: dict[str, bytes] = {}
SHORTSTRS_MAX = 512


def shortstr(value: str) -> bytes:
    """A shortstr as it goes on the wire: length octet, then UTF-8 (``surrogateescape``).

    Raises ``ValueError`` (or ``AttributeError`` for a non-str) rather than
    :class:`EncodeError`: the generated encoders catch it and call :func:`encode_error`,
    which names the field.
    """
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"shortstr of {len(raw)} bytes")
    return OCTETS[len(raw)] + raw


def cached_shortstr(value: str) -> bytes:
    """:func:`shortstr`, remembered in :data:`SHORTSTRS`.  The generated encoders look in
    :data:`SHORTSTRS` themselves and only call this on a miss."""
    data = shortstr(value)
    if type(value) is str:  # not a subclass, whose equality could be anything
        if len(SHORTSTRS) >= SHORTSTRS_MAX:
            SHORTSTRS.clear()
        SHORTSTRS[value] = data
    return data


def longstr_bytes(value: str, name: str, field: str) -> bytes:
    """A longstr given as ``str``, as the UTF-8 that goes on the wire."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise EncodeError(
            f"{name}: {field} (longstr): not encodable as UTF-8 ({exc.reason})"
        ) from None


def timestamp_to_int(value: datetime | int) -> int:
    """Seconds since the Unix epoch for a timestamp field; a naive datetime means UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return (value - _EPOCH) // _SECOND
    if isinstance(value, int):
        return value
    raise TypeError(f"expected datetime or int, got {type(value).__name__}")


def int_to_timestamp(value: int) -> datetime | int:
    """An aware UTC datetime for a decoded timestamp.

    A value beyond ``datetime``'s range (year 9999) -- typically a publisher that wrote
    milliseconds instead of seconds -- is returned as the raw int rather than failing the
    whole frame, so that such a message can still be consumed.
    """
    try:
        return _EPOCH + value * _SECOND
    except OverflowError:
        return value


def skip_flag_words(name: str, buf: bytes | bytearray, o: int, flags: int, unknown: int) -> int:
    """Handle the rare bits of a first property-flags word; return the offset after the flags.

    ``unknown`` is the mask of first-word bits that name no property of this class: one set
    means a property we cannot even skip (its type is unknown), so the header is rejected.
    Continuation words are read while bit 0 is set; they must carry no flags, as no class of
    0-8 or 0-9-1 has more than 15 properties.
    """
    if flags & unknown:
        raise DecodeError(f"{name}: unknown property flags 0x{flags & unknown:04x}")
    while flags & 1:
        try:
            (flags,) = _unpack_H(buf, o)
        except struct.error:
            raise DecodeError(f"{name}: property flags truncated") from None
        o += 2
        if flags & 0xFFFE:
            raise DecodeError(f"{name}: unknown property flags 0x{flags & 0xFFFE:04x} in word 2+")
    return o
