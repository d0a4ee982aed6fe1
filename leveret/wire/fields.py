"""AMQP field tables and field arrays, with the type letters RabbitMQ actually speaks.

The 0-9-1 specification's own table grammar disagrees with every broker in the field (it
uses ``I`` for int32 but also ``U``/``L``/``s`` in ways nobody implemented).  RabbitMQ, the
Java client and amqp091-go follow the errata published by RabbitMQ, and so do we:

======  =============================  ===========================================
letter  on the wire                    in Python
======  =============================  ===========================================
``t``   octet, 0 or not 0              ``bool``
``b``   int8                           ``int``
``B``   uint8                          ``int``
``s``   int16                          ``int``
``u``   uint16                         ``int``
``I``   int32                          ``int``
``i``   uint32                         ``int``
``l``   int64                          ``int``
``f``   IEEE-754 float32               ``float``
``d``   IEEE-754 float64               ``float``
``D``   scale octet + int32            ``decimal.Decimal``
``S``   uint32 length + bytes          ``str`` (UTF-8, ``surrogateescape``)
``A``   uint32 byte length + items     ``list``
``T``   uint64 seconds since epoch     aware UTC ``datetime`` [#]_
``F``   nested table                   ``dict``
``x``   uint32 length + bytes          ``bytes``
``V``   nothing                        ``None``
======  =============================  ===========================================

.. [#] A timestamp past the year 9999 (usually milliseconds written where seconds belong)
   decodes to the plain ``int`` instead, so that the message can still be consumed.

Encoding picks one letter per Python type: ``bool`` -> ``t``, ``int`` -> ``I`` when it fits
in 32 signed bits else ``l``, ``float`` -> ``d`` (never ``f``: it would lose precision),
``Decimal`` -> ``D``, ``datetime`` -> ``T`` (naive means UTC), ``str`` -> ``S``,
``bytes``/``bytearray``/``memoryview`` -> ``x``, ``dict`` -> ``F``, ``list``/``tuple`` ->
``A``, ``None`` -> ``V``.

A table is a uint32 byte length followed by (shortstr key, type letter, value) entries; an
array is a uint32 byte length followed by (type letter, value) items.  Strings decode with
``surrogateescape`` so that bytes which are not UTF-8 survive a decode/encode round trip
unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Union

from .errors import DecodeError, EncodeError

__all__ = [
    "encode_table",
    "decode_table",
    "encode_array",
    "decode_array",
    "encode_value",
    "MAX_DEPTH",
    "EMPTY_TABLE",
]

#: How deeply tables and arrays may nest, on either side.  Deeper input is an
#: ``EncodeError``/``DecodeError`` rather than a ``RecursionError`` half-way through.
MAX_DEPTH = 64

#: The encoding of an empty table (or of ``None`` where a table is expected).
EMPTY_TABLE = b"\x00\x00\x00\x00"

Buffer = Union[bytes, bytearray]

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_SECOND = timedelta(seconds=1)

# Pre-compiled structs.  The encoders pack the type letter together with the value, so an
# int costs a single pack call.
_u32 = struct.Struct(">I")
_pack_u32 = _u32.pack
_unpack_u32 = _u32.unpack_from
_pack_letter_i32 = struct.Struct(">Bi").pack
_pack_letter_i64 = struct.Struct(">Bq").pack
_pack_letter_f64 = struct.Struct(">Bd").pack
_pack_letter_u32 = struct.Struct(">BI").pack
_pack_letter_u64 = struct.Struct(">BQ").pack
_pack_letter_decimal = struct.Struct(">BBi").pack
_unpack_i8 = struct.Struct(">b").unpack_from
_unpack_i16 = struct.Struct(">h").unpack_from
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_i32 = struct.Struct(">i").unpack_from
_unpack_i64 = struct.Struct(">q").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from
_unpack_f32 = struct.Struct(">f").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from
_unpack_decimal = struct.Struct(">Bi").unpack_from

_TRUE = b"t\x01"
_FALSE = b"t\x00"
_VOID = b"V"

# Type letters as ints: indexing bytes gives ints, so decoding compares ints.
_S, _I, _L, _D, _F, _A, _X = b"SIlDFAx"


# --------------------------------------------------------------------------- encoding


def _key_prefix(key: Any) -> bytes:
    """The shortstr encoding of a table key (length octet + UTF-8), validated."""
    if not isinstance(key, str):
        raise EncodeError(f"field table key {key!r} must be str, not {type(key).__name__}")
    try:
        raw = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"field table key {key!r} is not encodable: {exc}") from None
    if len(raw) > 255:
        raise EncodeError(
            f"field table key {key[:32]!r}... is {len(raw)} bytes long; the limit is 255"
        )
    prefix = _OCTETS[len(raw)] + raw
    # Header keys repeat from message to message; remember the encoded form of plain str
    # keys, up to a bound so that a stream of unique keys cannot grow memory without end.
    if type(key) is str and len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[key] = prefix
    return prefix


_KEY_CACHE: dict[str, bytes] = {}
_key_cache_get = _KEY_CACHE.get
_KEY_CACHE_MAX = 4096
_OCTETS = [bytes((n,)) for n in range(256)]


def encode_table(table: Mapping[str, Any] | None, _depth: int = 0) -> bytes:
    """Encode ``table`` as an AMQP field table, *including* its 4-byte length prefix.

    ``None`` and ``{}`` both give the empty table ``b"\\x00\\x00\\x00\\x00"``.  Keys must be
    ``str`` of at most 255 UTF-8 bytes; values are typed as described in the module
    docstring.  Raises :class:`EncodeError` (naming the offending key) for anything that
    cannot be represented; nothing is returned in that case.  (``_depth`` is internal: the
    nesting level, counted so that cyclic or absurdly deep input fails cleanly.)
    """
    if not table:
        if table is None or type(table) is dict or isinstance(table, Mapping):
            return EMPTY_TABLE
        raise EncodeError(f"field table must be a mapping, not {type(table).__name__}")
    if type(table) is not dict or len(table) > _SMALL_TABLE:
        return _encode_table_chunked(table, _depth)
    # Message headers: a plain dict of a handful of entries, encoded on every publish.
    # Concatenating bytes is cheaper than a list and a join at this size, and the commonest
    # values are encoded here, without a call.  (Dict keys are hashable, so the cache
    # lookup cannot fail; a key that is not a str is never in it.)
    body = b""
    for key in table:  # a plain dict: iterating it and indexing beats .items() here
        value = table[key]
        prefix = _key_cache_get(key)
        if prefix is None:
            prefix = _key_prefix(key)
        kind = type(value)
        if kind is int:
            try:
                body += prefix + _pack_letter_i32(_I, value)
            except struct.error:  # beyond int32: an int64, or an EncodeError
                body += prefix + _encode_int(value, key, _depth)
        elif kind is str:
            try:
                raw = value.encode()
                body += prefix + _pack_letter_u32(_S, len(raw)) + raw
            except (UnicodeEncodeError, struct.error):  # surrogates, or 4 GiB: _encode_str
                body += prefix + _encode_str(value, key, _depth)
        elif kind is bool:
            body += prefix + (_TRUE if value else _FALSE)
        else:
            body += prefix + _encode_value(value, key, _depth)
    try:
        return _pack_u32(len(body)) + body
    except struct.error:
        raise EncodeError(f"field table of {len(body)} bytes exceeds 2**32-1") from None


def _encode_table_chunked(table: Mapping[str, Any], depth: int) -> bytes:
    """:func:`encode_table` for any mapping of any size: finished pieces of at most
    ``_CHUNK`` bytes are kept in a list and joined once, so that a big table still costs
    linear time."""
    try:
        items = table.items()
    except AttributeError:
        raise EncodeError(f"field table must be a mapping, not {type(table).__name__}") from None
    body = b""
    chunks: list[bytes] | None = None
    cache_get = _KEY_CACHE.get
    for key, value in items:
        prefix = cache_get(key) if type(key) is str else None
        if prefix is None:
            prefix = _key_prefix(key)
        body += prefix + _encode_value(value, key, depth)
        if len(body) > _CHUNK:
            if chunks is None:
                chunks = []
            chunks.append(body)
            body = b""
    if chunks is not None:
        chunks.append(body)
        body = b"".join(chunks)
        if len(body) > _UINT32_MAX:
            raise EncodeError(f"field table of {len(body)} bytes exceeds 2**32-1")
    return _pack_u32(len(body)) + body


_CHUNK = 4096
#: Dicts of at most this many entries take :func:`encode_table`'s inline path.
_SMALL_TABLE = 16


def encode_array(array: Sequence[Any] | None) -> bytes:
    """Encode ``array`` as an AMQP field array (``A`` payload), including its 4-byte length.

    Each item is written as a type letter and a value, typed as for tables.
    """
    if not array:
        return EMPTY_TABLE
    body = _encode_array_body(array, 0)
    if len(body) > _UINT32_MAX:
        raise EncodeError(f"field array of {len(body)} bytes exceeds 2**32-1")
    return _pack_u32(len(body)) + body


def encode_value(value: Any) -> bytes:
    """Encode one field value as its type letter followed by its bytes (as found in a table)."""
    return _encode_value(value, "<value>", 0)


def _encode_array_body(array: Sequence[Any], depth: int) -> bytes:
    if depth >= MAX_DEPTH:
        raise EncodeError(f"field arrays nested deeper than {MAX_DEPTH} levels")
    return b"".join([_encode_value(item, f"[{index}]", depth) for index, item in enumerate(array)])


def _encode_str(value: str, key: str, depth: int) -> bytes:
    try:
        # Strict UTF-8 first: without an error handler to look up it is the faster call,
        # and it only fails on lone surrogates, which surrogateescape may yet encode.
        raw = value.encode()
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"field {key!r}: string not encodable as UTF-8: {exc}") from None
    if len(raw) > _UINT32_MAX:
        raise EncodeError(f"field {key!r}: string longer than 2**32-1 bytes")
    return _pack_letter_u32(_S, len(raw)) + raw


def _encode_int(value: int, key: str, depth: int) -> bytes:
    if _INT32_MIN <= value <= _INT32_MAX:
        return _pack_letter_i32(_I, value)
    if _INT64_MIN <= value <= _INT64_MAX:
        return _pack_letter_i64(_L, value)
    raise EncodeError(f"field {key!r}: integer {value} does not fit in a signed 64-bit long")


def _encode_bool(value: bool, key: str, depth: int) -> bytes:
    return _TRUE if value else _FALSE


def _encode_float(value: float, key: str, depth: int) -> bytes:
    if value - value != 0.0:  # NaN or an infinity (x - x is NaN for those only)
        # The wire could carry it, but RabbitMQ cannot decode it: it closes the whole
        # connection (541 INTERNAL_ERROR) rather than refuse the one method.
        raise EncodeError(f"field {key!r}: float {value} (NaN or infinity) is not accepted by RabbitMQ")
    return _pack_letter_f64(ord("d"), value)


def _encode_decimal(value: Decimal, key: str, depth: int) -> bytes:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise EncodeError(f"field {key!r}: decimal {value} (NaN or infinity) has no AMQP form")
    significant = len(digits)
    while significant and digits[significant - 1] == 0:
        significant -= 1
    if not significant:
        return _pack_letter_decimal(_D, min(max(-exponent, 0), 255), 0)
    limit = _INT32_MAX + sign  # an int32 holds one more negative number than positive
    if significant <= 10:
        unscaled = 0
        for digit in digits[:significant]:
            unscaled = unscaled * 10 + digit
        written_scale = -exponent
        exponent += len(digits) - significant
        if exponent >= 0:
            unscaled *= 10 ** min(exponent, 10)
            scale = 0
        else:
            scale = -exponent
        # Put back the trailing zeros the caller wrote (1.50 stays 1.50, not 1.5) for as
        # long as they fit; the loop runs at most ten times.
        while scale < written_scale and scale < 255 and unscaled * 10 <= limit:
            unscaled *= 10
            scale += 1
        if scale <= 255 and unscaled <= limit:
            return _pack_letter_decimal(_D, scale, -unscaled if sign else unscaled)
    raise EncodeError(
        f"field {key!r}: decimal {value} cannot be written as scale 0..255 and an int32"
    )


def _encode_datetime(value: datetime, key: str, depth: int) -> bytes:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    delta = value - _EPOCH
    whole = delta.days * 86400 + delta.seconds  # integer floor; sub-second parts dropped
    if not 0 <= whole <= _UINT64_MAX:
        raise EncodeError(f"field {key!r}: timestamp {value} is before 1970 or out of range")
    return _pack_letter_u64(ord("T"), whole)


def _encode_bytes(value: bytes | bytearray | memoryview, key: str, depth: int) -> bytes:
    raw = bytes(value)
    if len(raw) > _UINT32_MAX:
        raise EncodeError(f"field {key!r}: byte array longer than 2**32-1 bytes")
    return _pack_letter_u32(_X, len(raw)) + raw


def _encode_dict(value: Mapping[str, Any], key: str, depth: int) -> bytes:
    # The nesting limit is checked here rather than in encode_table, whose top level (a
    # message's headers) then pays nothing for it.
    if depth + 1 >= MAX_DEPTH:  # empty or not: the decoder refuses the table itself
        raise EncodeError(f"field tables nested deeper than {MAX_DEPTH} levels")
    return b"F" + encode_table(value, depth + 1)


def _encode_list(value: Sequence[Any], key: str, depth: int) -> bytes:
    body = _encode_array_body(value, depth + 1)
    if len(body) > _UINT32_MAX:
        raise EncodeError(f"field {key!r}: array longer than 2**32-1 bytes")
    return _pack_letter_u32(_A, len(body)) + body


def _encode_none(value: None, key: str, depth: int) -> bytes:
    return _VOID


_Encoder = Callable[[Any, str, int], bytes]

# Exact-type dispatch first (one dict lookup); subclasses (IntEnum, OrderedDict, a str
# subclass...) fall through to the isinstance chain below, in which bool precedes int.
_ENCODERS: dict[type, _Encoder] = {
    str: _encode_str,
    int: _encode_int,
    bool: _encode_bool,
    float: _encode_float,
    Decimal: _encode_decimal,
    datetime: _encode_datetime,
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    memoryview: _encode_bytes,
    dict: _encode_dict,
    list: _encode_list,
    tuple: _encode_list,
    type(None): _encode_none,
}

_ENCODERS_BY_BASE: tuple[tuple[type | tuple[type, ...], _Encoder], ...] = (
    (bool, _encode_bool),
    (int, _encode_int),
    (float, _encode_float),
    (str, _encode_str),
    (Decimal, _encode_decimal),
    (datetime, _encode_datetime),
    ((bytes, bytearray, memoryview), _encode_bytes),
    (Mapping, _encode_dict),
    ((list, tuple), _encode_list),
)


def _encode_value(value: Any, key: str, depth: int) -> bytes:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        for base, candidate in _ENCODERS_BY_BASE:
            if isinstance(value, base):
                encoder = candidate
                break
        else:
            raise EncodeError(
                f"field {key!r}: values of type {type(value).__name__} cannot go in a field table"
            )
    return encoder(value, key, depth)


# --------------------------------------------------------------------------- decoding


def decode_table(
    buf: Buffer, offset: int, end: int, _depth: int = 0
) -> tuple[dict[str, Any], int]:
    """Decode the field table whose 4-byte length is at ``buf[offset]``.

    The table must end at or before ``end``.  Returns the table and the offset just past
    it.  Raises :class:`DecodeError` for unknown type letters, truncated values and lengths
    that run past ``end``; ``buf`` is never modified.  (``_depth`` is internal: the nesting
    level, for nested tables.)
    """
    # The usual table, whole within ``end`` and the buffer, is bounded by one struct call
    # and two comparisons; _table_bounds_error sorts out every other case, with the same
    # checks in the same order as ever.
    try:
        limit = offset + 4 + _unpack_u32(buf, offset)[0]
    except struct.error:
        limit = end + 1
    if limit > end or limit > len(buf):
        raise _table_bounds_error(buf, offset, end)
    # ``limit`` is the end of this table, within the buffer.  This loop runs for every
    # header of every message, so the letters headers mostly carry are decoded inline,
    # without a call, and without a bounds check per read: an entry that runs past
    # ``limit`` leaves ``o`` beyond it, which is checked once at the end (a read past
    # the buffer itself fails in struct or in indexing, and is reported the same way).
    # The other letters' decoders check against ``limit`` themselves.  A string (key or
    # value) starts at ``n`` and ends at ``o``, which moves past it before the slice.  The
    # two letters are literals (``S`` 83, ``I`` 73): a constant costs less than a global.
    result: dict[str, Any] = {}
    o = offset + 4
    try:
        while o < limit:
            n = o + 1
            o = n + buf[o]
            # Strict UTF-8 first: without an error handler it is the faster call.
            try:
                key = buf[n:o].decode()
            except UnicodeDecodeError:
                key = buf[n:o].decode("utf-8", "surrogateescape")
            letter = buf[o]
            o += 1
            if letter == 83:  # S
                n = o + 4
                o = n + _unpack_u32(buf, o)[0]
                try:
                    result[key] = buf[n:o].decode()
                except UnicodeDecodeError:
                    result[key] = buf[n:o].decode("utf-8", "surrogateescape")
            elif letter == 73:  # I
                result[key] = _unpack_i32(buf, o)[0]
                o += 4
            else:
                if o > limit:
                    raise _short("field table key", o - 1)
                decoder = _DECODERS.get(letter)
                if decoder is None:
                    raise DecodeError(
                        f"field table key {key!r}: unknown field type {bytes((letter,))!r}"
                    )
                result[key], o = decoder(buf, o, limit, _depth)
    except (struct.error, IndexError):
        o = limit + 1  # ran past the buffer: reported below
    if o != limit:
        raise DecodeError(f"field table at offset {offset}: an entry runs past its end")
    return result, limit


def _table_bounds_error(buf: Buffer, offset: int, end: int) -> Exception:
    """Why the table whose length is at ``buf[offset]`` does not fit before ``end`` (or
    the buffer's end): the length itself runs past, or the entries it claims do.  (A
    negative ``offset`` that struct cannot read gets struct's own error, as it always
    has.)"""
    if end > len(buf):
        end = len(buf)
    start = offset + 4
    if start > end:
        return DecodeError(f"field table length at offset {offset} runs past the end")
    (size,) = _unpack_u32(buf, offset)
    return DecodeError(
        f"field table at offset {offset} claims {size} bytes; only {end - start} remain"
    )


def decode_array(buf: Buffer, offset: int, end: int) -> tuple[list[Any], int]:
    """Decode the field array whose 4-byte length is at ``buf[offset]``; as :func:`decode_table`."""
    if end > len(buf):
        end = len(buf)
    start = offset + 4
    if start > end:
        raise DecodeError(f"field array length at offset {offset} runs past the end")
    (size,) = _unpack_u32(buf, offset)
    limit = start + size
    if limit > end:
        raise DecodeError(
            f"field array at offset {offset} claims {size} bytes; only {end - start} remain"
        )
    return _decode_array_body(buf, start, limit, 0), limit


def _short(what: str, offset: int) -> DecodeError:
    return DecodeError(f"truncated {what} at offset {offset}")


def _decode_array_body(buf: Buffer, offset: int, limit: int, depth: int) -> list[Any]:
    result: list[Any] = []
    append = result.append
    decoders = _DECODERS
    while offset < limit:
        decoder = decoders.get(buf[offset])
        if decoder is None:
            raise DecodeError(f"field array: unknown field type {bytes((buf[offset],))!r}")
        value, offset = decoder(buf, offset + 1, limit, depth)
        append(value)
    return result


_Decoded = tuple[Any, int]


def _decode_bool(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset >= limit:
        raise _short("boolean", offset)
    return buf[offset] != 0, offset + 1


def _decode_int8(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset >= limit:
        raise _short("int8", offset)
    return _unpack_i8(buf, offset)[0], offset + 1


def _decode_uint8(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset >= limit:
        raise _short("uint8", offset)
    return buf[offset], offset + 1


def _decode_int16(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 2 > limit:
        raise _short("int16", offset)
    return _unpack_i16(buf, offset)[0], offset + 2


def _decode_uint16(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 2 > limit:
        raise _short("uint16", offset)
    return _unpack_u16(buf, offset)[0], offset + 2


def _decode_int32(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 4 > limit:
        raise _short("int32", offset)
    return _unpack_i32(buf, offset)[0], offset + 4


def _decode_uint32(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 4 > limit:
        raise _short("uint32", offset)
    return _unpack_u32(buf, offset)[0], offset + 4


def _decode_int64(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 8 > limit:
        raise _short("int64", offset)
    return _unpack_i64(buf, offset)[0], offset + 8


def _decode_float32(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 4 > limit:
        raise _short("float32", offset)
    return _unpack_f32(buf, offset)[0], offset + 4


def _decode_float64(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 8 > limit:
        raise _short("float64", offset)
    return _unpack_f64(buf, offset)[0], offset + 8


def _decode_decimal(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 5 > limit:
        raise _short("decimal", offset)
    scale, unscaled = _unpack_decimal(buf, offset)
    # Built from a string so the result is exact whatever the caller's decimal context.
    return Decimal(f"{unscaled}E-{scale}"), offset + 5


def _decode_longstr(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    start = offset + 4
    if start > limit:
        raise _short("longstr length", offset)
    (n,) = _unpack_u32(buf, offset)
    end = start + n
    if end > limit:
        raise _short("longstr", start)
    return buf[start:end].decode("utf-8", "surrogateescape"), end


def _decode_bytes(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    start = offset + 4
    if start > limit:
        raise _short("byte array length", offset)
    (n,) = _unpack_u32(buf, offset)
    end = start + n
    if end > limit:
        raise _short("byte array", start)
    return bytes(buf[start:end]), end


def _decode_timestamp(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if offset + 8 > limit:
        raise _short("timestamp", offset)
    (seconds,) = _unpack_u64(buf, offset)
    try:
        return _EPOCH + seconds * _SECOND, offset + 8
    except OverflowError:
        # Past year 9999: typically a publisher that wrote milliseconds.  Hand back the
        # number rather than failing the whole frame (as the generated codecs do).
        return seconds, offset + 8


def _decode_nested_table(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if depth + 1 >= MAX_DEPTH:
        raise DecodeError(f"field tables nested deeper than {MAX_DEPTH} levels")
    if offset + 4 > limit:
        raise _short("nested table length", offset)
    if offset + 4 + _unpack_u32(buf, offset)[0] > limit:
        raise _short("nested table", offset + 4)
    return decode_table(buf, offset, limit, depth + 1)


def _decode_nested_array(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    if depth + 1 >= MAX_DEPTH:
        raise DecodeError(f"field arrays nested deeper than {MAX_DEPTH} levels")
    start = offset + 4
    if start > limit:
        raise _short("array length", offset)
    (size,) = _unpack_u32(buf, offset)
    end = start + size
    if end > limit:
        raise _short("array", start)
    return _decode_array_body(buf, start, end, depth + 1), end


def _decode_void(buf: Buffer, offset: int, limit: int, depth: int) -> _Decoded:
    return None, offset


_DECODERS: dict[int, Callable[[Buffer, int, int, int], _Decoded]] = {
    ord("S"): _decode_longstr,
    ord("I"): _decode_int32,
    ord("l"): _decode_int64,
    # 'L' is not among RabbitMQ's type letters, but py-amqp (and so kombu) writes every int
    # outside int32 as 'L' packed as a signed 64-bit integer: read it the way it was written.
    ord("L"): _decode_int64,
    ord("t"): _decode_bool,
    ord("F"): _decode_nested_table,
    ord("A"): _decode_nested_array,
    ord("d"): _decode_float64,
    ord("T"): _decode_timestamp,
    ord("x"): _decode_bytes,
    ord("V"): _decode_void,
    ord("D"): _decode_decimal,
    ord("f"): _decode_float32,
    ord("b"): _decode_int8,
    ord("B"): _decode_uint8,
    ord("s"): _decode_int16,
    ord("u"): _decode_uint16,
    ord("i"): _decode_uint32,
}
