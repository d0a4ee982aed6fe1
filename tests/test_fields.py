"""Field tables and arrays: exact bytes, round trips, and every way bad input must fail."""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.wire.errors import DecodeError, EncodeError
from leveret.wire.fields import (
    EMPTY_TABLE,
    MAX_DEPTH,
    decode_array,
    decode_table,
    encode_array,
    encode_table,
    encode_value,
)

UTC = timezone.utc


def roundtrip(table: Any) -> Any:
    data = encode_table(table)
    decoded, end = decode_table(data, 0, len(data))
    assert end == len(data)
    return decoded


def table_bytes(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# --------------------------------------------------------------------------- known bytes


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (None, b"\x00\x00\x00\x00"),
        ({}, b"\x00\x00\x00\x00"),
        ({"a": 1}, b"\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"),
        ({"a": -1}, b"\x00\x00\x00\x07\x01aI\xff\xff\xff\xff"),
        ({"a": 2**31}, b"\x00\x00\x00\x0b\x01al\x00\x00\x00\x00\x80\x00\x00\x00"),
        ({"a": -(2**31) - 1}, b"\x00\x00\x00\x0b\x01al\xff\xff\xff\xff\x7f\xff\xff\xff"),
        ({"a": True, "b": False}, b"\x00\x00\x00\x08\x01at\x01\x01bt\x00"),
        ({"s": "hé"}, b"\x00\x00\x00\x0a\x01sS\x00\x00\x00\x03h\xc3\xa9"),
        ({"x": b"\x00\xff"}, b"\x00\x00\x00\x09\x01xx\x00\x00\x00\x02\x00\xff"),
        ({"v": None}, b"\x00\x00\x00\x03\x01vV"),
        ({"f": 1.5}, b"\x00\x00\x00\x0b\x01fd" + struct.pack(">d", 1.5)),
        ({"d": Decimal("1.50")}, b"\x00\x00\x00\x08\x01dD\x02\x00\x00\x00\x96"),
        ({"d": Decimal("-3")}, b"\x00\x00\x00\x08\x01dD\x00\xff\xff\xff\xfd"),
        (
            {"t": datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)},
            b"\x00\x00\x00\x0b\x01tT" + struct.pack(">Q", 1_600_000_000),
        ),
        ({"n": {"a": 1}}, b"\x00\x00\x00\x0e\x01nF\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"),
        ({"l": [1, "a"]}, b"\x00\x00\x00\x12\x01lA\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01a"),
        ({"l": ()}, b"\x00\x00\x00\x07\x01lA\x00\x00\x00\x00"),
    ],
)
def test_known_bytes(table: Any, expected: bytes) -> None:
    assert encode_table(table) == expected
    decoded, end = decode_table(expected, 0, len(expected))
    assert end == len(expected)
    assert decoded == ({} if table is None else {k: (list(v) if isinstance(v, tuple) else v) for k, v in table.items()})


def test_array_known_bytes() -> None:
    data = encode_array([True, None, "x"])
    assert data == b"\x00\x00\x00\x09t\x01VS\x00\x00\x00\x01x"
    assert decode_array(data, 0, len(data)) == ([True, None, "x"], len(data))
    assert encode_array(None) == EMPTY_TABLE
    assert decode_array(EMPTY_TABLE, 0, 4) == ([], 4)


def test_encode_value() -> None:
    assert encode_value(7) == b"I\x00\x00\x00\x07"
    assert encode_value(None) == b"V"


def test_decode_at_offset_and_end() -> None:
    data = b"junk" + encode_table({"a": 1}) + b"more"
    table, end = decode_table(data, 4, len(data))
    assert table == {"a": 1}
    assert data[end:] == b"more"
    # the table must fit before ``end``
    with pytest.raises(DecodeError):
        decode_table(data, 4, end - 1)


@pytest.mark.parametrize(
    ("letter", "payload", "value"),
    [
        (b"t", b"\x02", True),
        (b"b", b"\xff", -1),
        (b"B", b"\xff", 255),
        (b"s", b"\xff\xfe", -2),
        (b"u", b"\xff\xfe", 0xFFFE),
        (b"I", b"\x80\x00\x00\x00", -(2**31)),
        (b"i", b"\x80\x00\x00\x00", 2**31),
        (b"l", b"\x80" + b"\x00" * 7, -(2**63)),
        (b"f", struct.pack(">f", 0.5), 0.5),
        (b"d", struct.pack(">d", -0.25), -0.25),
        (b"D", b"\x03\x00\x00\x04\xd2", Decimal("1.234")),
        (b"T", struct.pack(">Q", 0), datetime(1970, 1, 1, tzinfo=UTC)),
        (b"S", b"\x00\x00\x00\x02\xff\xfe", b"\xff\xfe".decode("utf-8", "surrogateescape")),
        (b"x", b"\x00\x00\x00\x00", b""),
        (b"V", b"", None),
        (b"A", b"\x00\x00\x00\x02b\x05", [5]),
        (b"F", b"\x00\x00\x00\x00", {}),
    ],
)
def test_decode_every_letter(letter: bytes, payload: bytes, value: Any) -> None:
    data = table_bytes(b"\x01k" + letter + payload)
    table, end = decode_table(data, 0, len(data))
    assert table == {"k": value}
    assert type(table["k"]) is type(value)
    assert end == len(data)


def test_timestamp_past_year_9999_decodes_as_int() -> None:
    data = table_bytes(b"\x01kT" + struct.pack(">Q", 1_600_000_000_000))
    assert decode_table(data, 0, len(data))[0] == {"k": 1_600_000_000_000}


def test_non_utf8_bytes_survive() -> None:
    raw = b"\xff\xc3(\x80"
    data = table_bytes(b"\x02\xfe\xffS" + struct.pack(">I", len(raw)) + raw)
    table, _ = decode_table(data, 0, len(data))
    assert encode_table(table) == data


def test_encoding_choices() -> None:
    class Small(IntEnum):
        ONE = 1

    assert encode_table({"a": Small.ONE}) == encode_table({"a": 1})
    assert encode_table(OrderedDict(a=OrderedDict(b=1))) == encode_table({"a": {"b": 1}})
    assert encode_table({"a": bytearray(b"z")}) == encode_table({"a": b"z"})
    assert encode_table({"a": memoryview(b"z")}) == encode_table({"a": b"z"})
    # floats always as d, never f
    assert encode_table({"a": 0.5})[6:7] == b"d"
    # naive datetime is UTC; sub-second parts are dropped
    naive = datetime(2001, 2, 3, 4, 5, 6, 999_999)
    assert encode_table({"a": naive}) == encode_table({"a": naive.replace(microsecond=0, tzinfo=UTC)})
    other_zone = datetime(2001, 2, 3, 5, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    assert encode_table({"a": other_zone}) == encode_table({"a": naive.replace(microsecond=0)})


@pytest.mark.parametrize(
    ("value", "scale", "unscaled"),
    [
        (Decimal("0"), 0, 0),
        (Decimal("1E+3"), 0, 1000),
        (Decimal("2147483647"), 0, 2**31 - 1),
        (Decimal("-2147483648"), 0, -(2**31)),
        (Decimal("1.000000000000"), 9, 10**9),  # just enough trailing zeros dropped to fit
        (Decimal("0.5" + "0" * 300), 9, 5 * 10**8),  # scale over 255 shrinks to fit
        (Decimal("-2147483648E-3"), 3, -(2**31)),
        (Decimal("5" + "0" * 1000 + "E-1000"), 8, 5 * 10**8),
        (Decimal("0E-300"), 255, 0),
    ],
)
def test_decimal_encoding(value: Decimal, scale: int, unscaled: int) -> None:
    data = encode_value(value)
    assert data == b"D" + struct.pack(">Bi", scale, unscaled)
    assert roundtrip({"d": value}) == {"d": value}


# --------------------------------------------------------------------------- round trip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-2_000_000, max_value=2_000_000),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
    st.text(),
    st.binary(),
    st.none(),
)
keys = st.text(max_size=20)


def tables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(keys, children, max_size=5)


values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=5), tables(children)), max_leaves=30
)


@settings(max_examples=300)
@given(tables(values))
def test_table_roundtrip(table: dict[str, Any]) -> None:
    decoded = roundtrip(table)
    assert decoded == table
    assert encode_table(decoded) == encode_table(table)


@given(st.lists(values, max_size=8))
def test_array_roundtrip(array: list[Any]) -> None:
    data = encode_array(array)
    decoded, end = decode_array(data, 0, len(data))
    assert end == len(data)
    assert decoded == array


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_letter_choice(n: int) -> None:
    letter = encode_value(n)[:1]
    assert letter == (b"I" if -(2**31) <= n < 2**31 else b"l")
    assert roundtrip({"n": n}) == {"n": n}


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_bits_survive(x: float) -> None:
    (y,) = roundtrip({"x": x}).values()
    assert struct.pack(">d", x) == struct.pack(">d", y)


@pytest.mark.parametrize("x", [math.inf, -math.inf, math.nan])
def test_nan_and_infinity_are_refused_but_decoded(x: float) -> None:
    # RabbitMQ cannot decode them and closes the whole connection (541): refused here,
    # with the key named.  What another peer sends still decodes, bit for bit.
    with pytest.raises(EncodeError, match="'x'.*NaN or infinity"):
        encode_table({"x": x})
    with pytest.raises(EncodeError, match="NaN or infinity"):
        encode_table({"list": [1.0, x]})
    raw = b"\x01xd" + struct.pack(">d", x)
    (y,) = decode_table(struct.pack(">I", len(raw)) + raw, 0, 4 + len(raw))[0].values()
    assert struct.pack(">d", x) == struct.pack(">d", y)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"k" * 256: 1}, "255"),
        ({1: 1}, "str"),
        ({"big": 2**63}, "'big'"),
        ({"small": -(2**63) - 1}, "'small'"),
        ({"obj": object()}, "object"),
        ({"set": {1}}, "set"),
        ({"nan": Decimal("NaN")}, "'nan'"),
        ({"inf": Decimal("Infinity")}, "'inf'"),
        ({"dec": Decimal("2147483648")}, "'dec'"),
        ({"dec": Decimal("1E+20")}, "'dec'"),
        ({"dec": Decimal("1E-256")}, "'dec'"),
        ({"dec": Decimal("2147483648E-3")}, "'dec'"),
        ({"dec": Decimal("1" * 100000)}, "'dec'"),
        ({"old": datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)}, "'old'"),
        ({"surrogate": "\ud800x"}, "'surrogate'"),
        ({"nested": {"deep": [object()]}}, "object"),
        # Not mappings, though as falsy as an empty one: not taken for "no table".
        (0, "mapping, not int"),
        ("", "mapping, not str"),
        ([], "mapping, not list"),
        (b"", "mapping, not bytes"),
    ],
)
def test_encode_errors(table: Any, needle: str) -> None:
    with pytest.raises(EncodeError, match=needle) as info:
        encode_table(table)
    assert info.value.reply_code == 502


def test_encode_too_deep() -> None:
    table: dict[str, Any] = {}
    node = table
    for _ in range(MAX_DEPTH + 1):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(EncodeError):
        encode_table(table)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(EncodeError):
        encode_array(cyclic)


def test_encode_depth_limit_is_inclusive() -> None:
    table: dict[str, Any] = {}
    node = table
    for _ in range(MAX_DEPTH - 1):
        node["a"] = {}
        node = node["a"]
    assert roundtrip(table) == table
    # One level more -- even an empty table, which the decoder refuses all the same -- is
    # refused when encoding: nothing leveret publishes is a message leveret cannot read.
    node["a"] = {}
    with pytest.raises(EncodeError, match="deeper"):
        encode_table(table)
    node["a"] = []
    with pytest.raises(EncodeError, match="deeper"):
        encode_table(table)


def test_decode_unknown_letter() -> None:
    data = table_bytes(b"\x01kZ")
    with pytest.raises(DecodeError, match="unknown field type"):
        decode_table(data, 0, len(data))
    with pytest.raises(DecodeError, match="unknown field type"):
        decode_array(table_bytes(b"U\x00\x00"), 0, 7)


def test_decode_too_deep() -> None:
    data = EMPTY_TABLE
    for _ in range(MAX_DEPTH + 5):
        data = table_bytes(b"\x01aF" + data)
    with pytest.raises(DecodeError, match="deeper"):
        decode_table(data, 0, len(data))
    array = EMPTY_TABLE
    for _ in range(10_000):  # would be a RecursionError without the limit
        array = table_bytes(b"A" + array)
    with pytest.raises(DecodeError, match="deeper"):
        decode_array(array, 0, len(array))


EVERYTHING = {
    "bool": True,
    "i32": -5,
    "i64": 2**40,
    "float": 2.5,
    "dec": Decimal("12.34"),
    "time": datetime(2000, 1, 1, tzinfo=UTC),
    "str": "text",
    "bytes": b"\x00\x01",
    "none": None,
    "table": {"a": [1, {"b": "c"}, None]},
    "array": [1, "two", [3.0]],
    "empty": {},
}


def test_truncation_at_every_offset() -> None:
    data = encode_table(EVERYTHING)
    for cut in range(len(data)):
        # cut short by ``end``...
        with pytest.raises(DecodeError):
            decode_table(data, 0, cut)
        # ...or by the buffer itself
        with pytest.raises(DecodeError):
            decode_table(data[:cut], 0, len(data))


def test_inner_length_running_past_outer() -> None:
    # The nested table claims more bytes than the outer table holds, though the buffer
    # has them: must not read across the outer table's end.
    inner = b"\x01aF\x00\x00\x00\x07\x01bI\x00\x00\x00\x01"
    data = table_bytes(inner[:-5]) + inner[-5:]
    with pytest.raises(DecodeError):
        decode_table(data, 0, len(data))


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_random_bytes_only_decode_error(body: bytes) -> None:
    for data in (body, table_bytes(body)):
        try:
            table, end = decode_table(data, 0, len(data))
        except DecodeError:
            continue
        assert end <= len(data)
        assert isinstance(table, dict)
    try:
        decode_array(table_bytes(body), 0, len(body) + 4)
    except DecodeError:
        pass


@given(tables(values), st.data())
def test_mutated_tables_only_decode_error(table: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(encode_table(table))
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[position] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decode_table(bytes(raw), 0, len(raw))
    except DecodeError:
        pass


def test_big_table_round_trip() -> None:
    # Encoded by concatenation in pieces: many entries, and values bigger than a piece.
    table: dict[str, Any] = {f"k{i}": (i if i % 3 else f"v{i}" * (i % 50)) for i in range(5000)}
    table["flag"] = True
    table["long"] = 2**40
    table["blob"] = b"x" * 100_000
    table["text"] = "y" * 100_000
    data = encode_table(table)
    assert decode_table(data, 0, len(data)) == (table, len(data))
    # the same bytes as encoding each entry on its own
    body = b"".join(
        bytes((len(k),)) + k.encode() + encode_value(v) for k, v in table.items()
    )
    assert data == struct.pack(">I", len(body)) + body


def test_decode_py_amqp_L_as_signed_int64() -> None:
    # py-amqp (kombu) writes ints outside int32 with the letter 'L', packed as '>q'.
    for value in (2**31, -(2**31) - 1, 2**63 - 1, -(2**63)):
        table = b"\x01kL" + struct.pack(">q", value)
        buf = struct.pack(">I", len(table)) + table
        assert decode_table(buf, 0, len(buf)) == ({"k": value}, len(buf))


@settings(max_examples=300)
@given(tables(values))
def test_small_dicts_encode_as_any_mapping(table: dict[str, Any]) -> None:
    # A plain dict of a few entries takes encode_table's inline path; any other mapping (and
    # a dict of more than 16 entries) the general one.  They must write the same bytes.
    expected = encode_table(OrderedDict(table))
    assert encode_table(table) == expected
    assert encode_table(MappingProxyType(table)) == expected
    big = {f"k{i}": i for i in range(17)} | table
    assert encode_table(big) == encode_table(OrderedDict(big))


def test_inline_table_values_that_need_the_general_encoders() -> None:
    # int beyond int32, str with a lone surrogate that surrogateescape encodes, and one it
    # cannot: the inline path hands them on, with the same results and errors.
    odd = b"\xff".decode("utf-8", "surrogateescape")
    table = {"big": 2**40, "odd": odd, "flag": False}
    assert encode_table(table) == encode_table(OrderedDict(table))
    assert decode_table(encode_table(table), 0, len(encode_table(table)))[0] == table
    for bad in ({"s": "\ud800"}, {"n": 2**64}):
        with pytest.raises(EncodeError, match="s'|n'"):
            encode_table(bad)
        with pytest.raises(EncodeError, match="s'|n'"):
            encode_table(OrderedDict(bad))


@pytest.mark.parametrize(
    "entry",
    [b"\x01xI\x00\x00\x00", b"\x01xS\x00\x00\x00\x05abc", b"\x05xI", b"\x01x"],
    ids=["int32", "longstr", "key", "letter"],
)
def test_table_entry_running_past_its_end(entry: bytes) -> None:
    # The inline letters read without a check per field; an entry that runs past the
    # table's end is caught once, whether the bytes after it are in the buffer or not.
    data = struct.pack(">I", len(entry)) + entry
    for buf in (data, data + b"\x00" * 16):
        with pytest.raises(DecodeError):
            decode_table(buf, 0, len(buf))


@pytest.mark.parametrize(
    ("buf", "offset", "end", "message"),
    [
        # The length itself does not fit, before ``end`` or before the buffer's end.
        (b"\x00\x00\x00\x00", 1, 4, "field table length at offset 1 runs past the end"),
        (b"\x00\x00\x00\x00", 0, 3, "field table length at offset 0 runs past the end"),
        (b"\x00\x00\x00", 0, 9, "field table length at offset 0 runs past the end"),
        # The entries it claims do not fit, before ``end`` or before the buffer's end.
        (b"\x00\x00\x00\x02\x00\x00", 0, 5,
         "field table at offset 0 claims 2 bytes; only 1 remain"),
        (b"\x00\x00\x00\x02\x00", 0, 9, "field table at offset 0 claims 2 bytes; only 1 remain"),
        (b"??\x00\x00\x00\x07\x01xI\x00\x00\x00", 2, 99,
         "field table at offset 2 claims 7 bytes; only 6 remain"),
        # It fits, but an entry runs past it.
        (b"??\x00\x00\x00\x03\x01xI\x00\x00\x00\x01", 2, 13,
         "field table at offset 2: an entry runs past its end"),
        (b"\x00\x00\x00\x02\x05x", 0, 6, "field table at offset 0: an entry runs past its end"),
        (b"\x00\x00\x00\x02\x01xt", 0, 7, "truncated field table key at offset 6"),
    ],
)
def test_decode_bounds_errors(buf: bytes, offset: int, end: int, message: str) -> None:
    # The messages name the offending offset and sizes, whichever check finds the fault.
    with pytest.raises(DecodeError) as info:
        decode_table(buf, offset, end)
    assert str(info.value) == message
