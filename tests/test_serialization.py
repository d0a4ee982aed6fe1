"""leveret.highlevel.serialization and leveret.highlevel.compression: content types, accept
rules, round trips, and the limits on what a received body may cost."""

from __future__ import annotations

import bz2
import gzip
import importlib
import json
import lzma
import pickle
import sys
import uuid
import zlib
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret.highlevel import compression, serialization
from leveret.highlevel.exceptions import (
    CompressionNotInstalled,
    ContentDisallowed,
    DecodeError,
    DecompressedSizeExceeded,
    DecompressionError,
    EncodeError,
    SerializerNotInstalled,
)
from leveret.highlevel.serialization import (
    SerializerRegistry,
    dumps,
    loads,
    prepare_accept_content,
    registry,
)
from leveret.wire.errors import LeveretError

PICKLE = "application/x-python-serialize"


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Tests that change the shared registry (accept set, serializers) leave it as found."""
    accept = registry.default_accept
    by_name = dict(registry._by_name)
    by_type = dict(registry._by_type)
    default = registry.default_serializer
    methods = dict(compression._methods)
    lookup = dict(compression._lookup)
    yield
    registry.default_accept = accept
    registry._by_name.clear()
    registry._by_name.update(by_name)
    registry._by_type.clear()
    registry._by_type.update(by_type)
    registry.default_serializer = default
    compression._methods.clear()
    compression._methods.update(methods)
    compression._lookup.clear()
    compression._lookup.update(lookup)


class Detonator:
    """Unpickling this object runs ``_detonate``: proof that a pickle was (not) loaded."""

    fired: list[str] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (_detonate, ("boom",))


def _detonate(arg: str) -> str:
    Detonator.fired.append(arg)
    return arg


class Raiser:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise, ())


def _raise() -> None:
    raise RuntimeError("unpickling ran")


# ---------------------------------------------------------------------- raw bodies


def test_bytes_go_out_as_is_without_copy() -> None:
    body = b"\x00\x01binary\xff"
    ct, ce, payload = dumps(body)
    assert (ct, ce) == ("application/data", "binary")
    assert payload is body


@pytest.mark.parametrize("make", [bytearray, memoryview])
def test_bytes_like_go_out_as_an_immutable_copy(make: Any) -> None:
    source = bytearray(b"abc")
    ct, ce, payload = dumps(make(source))
    assert (ct, ce, payload) == ("application/data", "binary", b"abc")
    assert type(payload) is bytes
    source[0] = ord("z")  # the caller mutating its buffer later does not change what was sent
    assert payload == b"abc"


def test_str_goes_out_as_utf8_text() -> None:
    assert dumps("héllo ✓") == ("text/plain", "utf-8", "héllo ✓".encode())


def test_str_with_lone_surrogate_is_an_encode_error() -> None:
    with pytest.raises(EncodeError) as info:
        dumps("\ud800")
    assert isinstance(info.value.__cause__, UnicodeEncodeError)


def test_raw_serializer_forces_as_is_and_refuses_other_types() -> None:
    assert dumps(b"x", "raw") == ("application/data", "binary", b"x")
    assert dumps("x", "raw") == ("text/plain", "utf-8", b"x")
    with pytest.raises(EncodeError):
        dumps({"a": 1}, "raw")


def test_other_values_use_the_default_serializer() -> None:
    assert dumps({"a": [1, 2]}) == ("application/json", "utf-8", b'{"a":[1,2]}')
    assert dumps(5) == ("application/json", "utf-8", b"5")
    registry.default_serializer = "pickle"
    ct, ce, payload = dumps({"a": 1})
    assert (ct, ce) == (PICKLE, "binary")
    assert pickle.loads(payload) == {"a": 1}


def test_raw_types_decode_to_bytes_or_text() -> None:
    assert loads(b"\xff\x00", "application/data", "binary") == b"\xff\x00"
    assert loads("é".encode(), "text/plain", "utf-8") == "é"
    assert loads("é".encode("latin-1"), "text/plain", "latin-1") == "é"
    assert loads("é".encode(), "text/plain", None) == "é"  # text/plain defaults to UTF-8
    assert loads(b"\xff", "application/data", None) == b"\xff"  # no encoding: bytes
    assert loads(memoryview(b"ab"), "application/data", "binary") == b"ab"
    # No content type at all is raw bytes (and accepted by default), as in kombu.
    assert loads(b"xy", None, None) == b"xy"
    assert loads(b"xy", "", "binary") == b"xy"


def test_raw_bytes_keep_identity() -> None:
    body = b"payload"
    assert loads(body, "application/data", "binary") is body


def test_unknown_content_types_are_raw_by_default_and_when_accepted() -> None:
    assert loads(b"<a/>", "application/xml", "utf-8") == "<a/>"  # see the test below
    assert loads(b"<a/>", "application/xml", "utf-8", accept={"application/xml"}) == "<a/>"
    assert loads(b"\x01", "application/octet-stream", "binary", accept={"application/octet-stream"}) == b"\x01"
    assert loads(b"\x01", "application/octet-stream", None, accept={"application/octet-stream"}) == b"\x01"
    assert loads(b"<a/>", "application/xml", "utf-8", force=True) == "<a/>"


def test_undecodable_text_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        loads(b"\xff\xfe\xfa", "text/plain", "utf-8")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    with pytest.raises(DecodeError) as info:
        loads(b"abc", "text/plain", "no-such-codec")
    assert isinstance(info.value.__cause__, LookupError)
    with pytest.raises(DecodeError):
        loads(b'"abc"', "application/json", "no-such-codec")


@given(st.binary())
def test_raw_bytes_round_trip(body: bytes) -> None:
    ct, ce, payload = dumps(body)
    assert loads(payload, ct, ce) == body


@given(st.text())
def test_raw_text_round_trip(text: str) -> None:
    try:
        ct, ce, payload = dumps(text)
    except EncodeError:  # lone surrogates are not UTF-8
        with pytest.raises(UnicodeEncodeError):
            text.encode("utf-8")
        return
    assert loads(payload, ct, ce) == text


# ---------------------------------------------------------------------- json


def test_json_round_trip_nested_unicode() -> None:
    value = {
        "ascii": "plain",
        "unicode": "日本語 ✓ émoji 🐇",
        "nested": {"list": [1, 2.5, None, True, False, [], {}], "big": 2**70, "neg": -1},
        "keys ✓": {"": ""},
    }
    ct, ce, payload = dumps(value, "json")
    assert (ct, ce) == ("application/json", "utf-8")
    assert loads(payload, ct, ce) == value
    # Compact: no blanks after separators; non-ASCII text as UTF-8, not \u escapes.
    assert b", " not in payload and b": " not in payload
    assert "日本語".encode() in payload
    assert json.loads(payload) == value  # plain JSON any decoder reads


def test_json_lone_surrogate_falls_back_to_escapes() -> None:
    ct, ce, payload = dumps({"s": "a\ud800b"}, "json")
    assert b"\\ud800" in payload
    assert loads(payload, ct, ce) == {"s": "a\ud800b"}


def test_json_extra_types_round_trip_with_their_types() -> None:
    value = {
        "dt": datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=2))),
        "naive": datetime(2020, 1, 1, 0, 0),
        "d": date(1999, 12, 31),
        "t": time(12, 30, 15),
        "dec": Decimal("3.14159265358979323846264338327950288"),
        "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "utf8": b"text bytes",
        "binary": b"\xff\x00\xfe",
    }
    ct, ce, payload = dumps(value, "json")
    back = loads(payload, ct, ce)
    assert back == value
    for key in value:
        assert type(back[key]) is type(value[key]), key
    doc = json.loads(payload)
    assert doc["dt"] == {"__type__": "datetime", "__value__": "2024-02-29T23:59:58.123456+02:00"}
    assert doc["dec"] == {"__type__": "decimal", "__value__": "3.14159265358979323846264338327950288"}
    assert doc["u"] == {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}
    assert doc["utf8"] == {"__type__": "bytes", "__value__": "text bytes"}
    assert doc["binary"] == {"__type__": "base64", "__value__": "/wD+"}


def test_json_unknown_envelope_stays_a_dict() -> None:
    doc = {"x": {"__type__": "frobnicator", "__value__": 1}, "y": {"__type__": "decimal"}}
    assert loads(json.dumps(doc).encode(), "application/json", "utf-8") == doc


def test_json_uses_dunder_json() -> None:
    class Point:
        def __json__(self) -> dict[str, int]:
            return {"x": 1, "y": 2}

    assert dumps([Point()], "json")[2] == b'[{"x":1,"y":2}]'


def test_json_unsupported_type_is_an_encode_error() -> None:
    with pytest.raises(EncodeError) as info:
        dumps({"s": {1, 2}}, "json")
    assert isinstance(info.value.__cause__, TypeError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LeveretError)


def test_json_invalid_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        loads(b'{"a": ', "application/json", "utf-8")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(DecodeError):  # an empty body is not JSON either
        loads(b"", "application/json", "utf-8")


def test_json_content_type_parameters_and_case() -> None:
    body = '{"k":"é"}'.encode("latin-1")
    assert loads(body, "Application/JSON; charset=latin-1", None) == {"k": "é"}
    assert loads(b'{"k":1}', "application/json; charset=utf-8", "utf-8") == {"k": 1}
    # A "binary" encoding on a text codec falls back to the codec's own (UTF-8).
    assert loads('"é"'.encode(), "application/json", "binary") == "é"
    # str bodies are fine too (kombu's encoders return str).
    assert loads('{"a":1}', "application/json", "utf-8") == {"a": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_json_round_trip_property(value: Any) -> None:
    ct, ce, payload = dumps(value, "json")
    assert loads(payload, ct, ce) == value


@given(json_values)
def test_json_bytes_are_the_stdlib_compact_encoding(value: Any) -> None:
    # The encoder built once (no cycle check) writes exactly what json.dumps writes.
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        assert dumps(value, "json")[2] == expected.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escaped instead (see above)
        assert dumps(value, "json")[2] == json.dumps(value, separators=(",", ":")).encode()


def test_json_cycle_is_json_s_error_and_leaves_no_trace() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    for _ in range(2):  # nothing is left behind by the first failure
        with pytest.raises(EncodeError) as info:
            dumps({"loop": loop}, "json")
        assert isinstance(info.value.__cause__, ValueError)
        assert "Circular reference" in str(info.value.__cause__)
    shared = [1, 2]
    assert dumps({"a": shared, "b": shared, "c": [shared, shared]}, "json")[2] == (
        b'{"a":[1,2],"b":[1,2],"c":[[1,2],[1,2]]}'
    )


# ---------------------------------------------------------------------- pickle and accept


def test_pickle_is_refused_by_default_and_never_runs() -> None:
    Detonator.fired.clear()
    ct, ce, payload = dumps(Detonator(), "pickle")
    assert (ct, ce) == (PICKLE, "binary")
    with pytest.raises(ContentDisallowed) as info:
        loads(payload, ct, ce)
    assert Detonator.fired == []
    assert PICKLE in str(info.value)
    # Refused also under an explicit accept set that does not name it.
    with pytest.raises(ContentDisallowed):
        loads(payload, ct, ce, accept={"application/json"})
    with pytest.raises(ContentDisallowed):
        loads(payload, ct, ce, accept=set())
    assert Detonator.fired == []


def test_pickle_runs_only_when_accepted() -> None:
    Detonator.fired.clear()
    _, _, payload = dumps(Detonator(), "pickle")
    assert loads(payload, PICKLE, "binary", accept={PICKLE}) == "boom"
    assert loads(payload, PICKLE, "binary", accept=["pickle"]) == "boom"  # names work too
    assert loads(payload, PICKLE, "binary", force=True) == "boom"
    assert Detonator.fired == ["boom"] * 3


def test_accept_given_as_one_string_is_one_name_or_type() -> None:
    # A str accept is one entry, as prepare_accept_content reads it: not a set of its
    # letters, and never a substring match (which let pickle through here).
    Detonator.fired.clear()
    _, _, payload = dumps(Detonator(), "pickle")
    for accept in (PICKLE + "-not-really", "x-python-serialize", "application/x-python"):
        with pytest.raises(ContentDisallowed):
            loads(payload, PICKLE, "binary", accept=accept)
    assert Detonator.fired == []
    assert loads(b"{}", "application/json", "utf-8", accept="json") == {}
    assert loads(payload, PICKLE, "binary", accept="pickle") == "boom"


def test_pickle_round_trip_uses_the_default_protocol() -> None:
    value = {"t": (1, 2), "s": {3}, "b": b"x", "dt": datetime(2020, 1, 1)}
    _, _, payload = dumps(value, "pickle")
    assert payload[1] == pickle.DEFAULT_PROTOCOL  # PROTO opcode's argument
    assert loads(payload, PICKLE, "binary", accept={PICKLE}) == value


def test_pickle_error_when_accepted_is_a_decode_error() -> None:
    _, _, payload = dumps(Raiser(), "pickle")
    with pytest.raises(DecodeError) as info:
        loads(payload, PICKLE, "binary", accept={PICKLE})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_enable_and_disable_insecure_serializers() -> None:
    _, _, payload = dumps([1, 2], "pickle")
    with pytest.raises(ContentDisallowed):
        loads(payload, PICKLE, "binary")
    serialization.enable_insecure_serializers()
    assert {PICKLE, "application/x-yaml", "application/x-msgpack"} <= registry.default_accept
    assert loads(payload, PICKLE, "binary") == [1, 2]
    serialization.disable_insecure_serializers()
    assert registry.default_accept == {"application/json", "application/data", "text/plain"}
    with pytest.raises(ContentDisallowed):
        loads(payload, PICKLE, "binary")
    serialization.enable_insecure_serializers(["pickle"])
    assert PICKLE in registry.default_accept and "application/x-yaml" not in registry.default_accept
    serialization.disable_insecure_serializers(allowed=[])  # raw only: not even json
    with pytest.raises(ContentDisallowed):
        loads(b"1", "application/json", "utf-8")
    assert loads(b"1", "application/data", "binary") == b"1"
    with pytest.raises(SerializerNotInstalled):
        serialization.enable_insecure_serializers(["no-such"])


def test_default_accept_set() -> None:
    assert registry.default_accept == {"application/json", "application/data", "text/plain"}
    for ct in ("application/x-yaml", "application/x-msgpack", PICKLE):
        with pytest.raises(ContentDisallowed):
            loads(b"whatever", ct, "binary")


def test_a_type_no_serializer_claims_is_its_body_by_default() -> None:
    # As kombu: a body of a content type nothing decodes (binary data, XML) is handed over
    # as it is -- no decoder runs -- rather than refused as if it were a pickle.  Under an
    # explicit accept set only what it names passes.
    assert loads(b"\x00\x01", "application/octet-stream", "binary") == b"\x00\x01"
    assert loads(b"<a/>", "application/xml", "utf-8") == "<a/>"
    assert loads(b"<a/>", "Application/XML; charset=utf-8", None) == "<a/>"
    with pytest.raises(ContentDisallowed):
        loads(b"<a/>", "application/xml", "utf-8", accept={"application/json"})
    # disable() refuses a type no serializer claims, as kombu's does; enable() undoes it.
    for ct in ("application/octet-stream", "text/plain"):
        registry.disable(ct)
        try:
            with pytest.raises(ContentDisallowed):
                loads(b"x", ct, "binary")
        finally:
            registry.enable(ct)
        assert loads(b"x", ct, "binary") == b"x"
    serialization.register("shout", str.upper, str.lower, "application/x-shout", "utf-8")
    try:
        with pytest.raises(ContentDisallowed):  # registered: accepted by name only
            loads(b"HI", "application/x-shout", "utf-8")
        assert loads(b"HI", "application/x-shout", "utf-8", accept=["shout"]) == "hi"
    finally:
        serialization.unregister("shout")


def test_prepare_accept_content() -> None:
    assert prepare_accept_content(None) is None
    assert prepare_accept_content(["json", "pickle"]) == {"application/json", PICKLE}
    assert prepare_accept_content(["Application/X-Custom; v=1"]) == {"application/x-custom"}
    assert prepare_accept_content(["raw"]) == {"application/data", "text/plain"}
    assert prepare_accept_content("json") == {"application/json"}  # one name, not letters
    assert prepare_accept_content(["yaml", "msgpack"]) == {"application/x-yaml", "application/x-msgpack"}
    assert prepare_accept_content([]) == set()
    with pytest.raises(SerializerNotInstalled):
        prepare_accept_content(["jsn"])


def test_accept_check_is_on_the_media_type() -> None:
    accept = prepare_accept_content(["json"])
    assert loads(b"[1]", "APPLICATION/JSON; charset=utf-8", None, accept=accept) == [1]
    assert loads(b"[1]", "application/json", None, accept={"Application/Json"}) == [1]
    with pytest.raises(ContentDisallowed):
        loads(b"x", "text/plain", "utf-8", accept=accept)
    assert loads(b"x", "text/plain", "utf-8", accept=["raw"]) == "x"


def test_exception_hierarchy() -> None:
    assert issubclass(ContentDisallowed, SerializerNotInstalled)
    for cls in (ContentDisallowed, SerializerNotInstalled, DecodeError, EncodeError, CompressionNotInstalled):
        assert issubclass(cls, ValueError) and issubclass(cls, LeveretError)
    assert issubclass(DecompressionError, DecodeError)
    assert issubclass(DecompressedSizeExceeded, DecompressionError)


def test_unknown_serializer() -> None:
    with pytest.raises(SerializerNotInstalled):
        dumps({"a": 1}, "jsonish")


# ---------------------------------------------------------------------- yaml and msgpack


def _registry_without(monkeypatch: pytest.MonkeyPatch, module: str) -> SerializerRegistry:
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" fail
    reg = SerializerRegistry()
    serialization._register_defaults(reg)
    return reg


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "module", "content_type"),
    [("yaml", "yaml", "application/x-yaml"), ("msgpack", "msgpack", "application/x-msgpack")],
)
def test_missing_optional_serializer_says_not_installed(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, content_type: str
) -> None:
    reg = _registry_without(monkeypatch, module)
    assert not reg.installed(name)
    assert reg.name_to_type[name] == content_type
    with pytest.raises(SerializerNotInstalled) as info:
        reg.dumps({"a": 1}, name)
    assert not isinstance(info.value, ContentDisallowed)
    with pytest.raises(SerializerNotInstalled) as info:
        reg.loads(b"a: 1", content_type, "utf-8", accept={content_type})
    assert not isinstance(info.value, ContentDisallowed)
    # Not accepted still means refused first.
    with pytest.raises(ContentDisallowed):
        reg.loads(b"a: 1", content_type, "utf-8")


def test_yaml() -> None:
    value = {"name": "lièvre", "list": [1, 2.5, None, True], "nested": {"k": "v"}}
    if not _installed("yaml"):
        assert not registry.installed("yaml")
        with pytest.raises(SerializerNotInstalled):
            dumps(value, "yaml")
        return
    ct, ce, payload = dumps(value, "yaml")
    assert (ct, ce) == ("application/x-yaml", "utf-8")
    with pytest.raises(ContentDisallowed):
        loads(payload, ct, ce)
    assert loads(payload, ct, ce, accept=["yaml"]) == value
    # safe_load only: a python object tag does not build anything.
    evil = b"!!python/object/apply:os.system ['true']"
    with pytest.raises(DecodeError):
        loads(evil, ct, ce, accept=["yaml"])
    with pytest.raises(EncodeError):  # safe_dump refuses arbitrary objects
        dumps(object(), "yaml")


def test_msgpack() -> None:
    value = {"s": "lièvre", "b": b"\x00\xff", "l": [1, -2, 3.5, None, True], "n": {"k": [1]}}
    if not _installed("msgpack"):
        assert not registry.installed("msgpack")
        with pytest.raises(SerializerNotInstalled):
            dumps(value, "msgpack")
        return
    ct, ce, payload = dumps(value, "msgpack")
    assert (ct, ce) == ("application/x-msgpack", "binary")
    with pytest.raises(ContentDisallowed):
        loads(payload, ct, ce)
    back = loads(payload, ct, ce, accept=["msgpack"])
    assert back == value and type(back["b"]) is bytes and type(back["s"]) is str
    with pytest.raises(DecodeError):
        loads(b"\xc1", ct, ce, accept=["msgpack"])


# ---------------------------------------------------------------------- custom serializers


def test_register_custom_serializer() -> None:
    serialization.register(
        "rev", lambda s: s[::-1], lambda s: s[::-1], "application/x-reversed", "utf-8"
    )
    ct, ce, payload = dumps("abc", "rev")
    assert (ct, ce, payload) == ("application/x-reversed", "utf-8", b"cba")
    with pytest.raises(ContentDisallowed):  # a new type is not accepted by default
        loads(payload, ct, ce)
    assert loads(payload, ct, ce, accept=["rev"]) == "abc"
    registry.enable("rev")
    assert loads(payload, ct, ce) == "abc"
    registry.disable("rev")
    with pytest.raises(ContentDisallowed):
        loads(payload, ct, ce)
    serialization.unregister("rev")
    with pytest.raises(SerializerNotInstalled):
        dumps("abc", "rev")
    # Unregistered: the type is unknown now, so an accepted body comes back raw.
    assert loads(payload, ct, ce, accept={ct}) == "cba"
    with pytest.raises(SerializerNotInstalled):
        serialization.unregister("rev")


def test_binary_custom_serializer_gets_bytes() -> None:
    seen: list[Any] = []

    def decode(body: Any) -> Any:
        seen.append(body)
        return body

    serialization.register("b", lambda v: v, decode, "application/x-b", "binary")
    assert loads(b"\xff", "application/x-b", "utf-8", accept={"application/x-b"}) == b"\xff"
    assert seen == [b"\xff"]


def test_replacing_a_serializer_drops_its_old_content_type() -> None:
    serialization.register("x", str.upper, str.lower, "application/x-one")
    serialization.register("x", str.upper, str.lower, "application/x-two")
    assert registry.name_to_type["x"] == "application/x-two"
    assert "application/x-one" not in registry.type_to_name
    assert dumps("a", "x")[0] == "application/x-two"


# ---------------------------------------------------------------------- compression


KOMBU_TYPES = {"zlib": "application/x-gzip", "bz2": "application/x-bz2", "lzma": "application/x-lzma"}
ALIASES = {"gzip": "zlib", "bzip2": "bz2", "xz": "lzma"}


@pytest.mark.parametrize("method", [*KOMBU_TYPES, *ALIASES, *KOMBU_TYPES.values()])
def test_compression_round_trip(method: str) -> None:
    body = b"leveret " * 1000
    packed, ct = compression.compress(body, method)
    canonical = ALIASES.get(method, method)
    assert ct == KOMBU_TYPES.get(canonical, canonical)
    assert len(packed) < len(body) // 10
    assert compression.decompress(packed, ct) == body
    assert compression.decompress(packed, method) == body  # names work on receipt too
    assert compression.decompress(memoryview(packed), ct.upper()) == body


def test_compression_formats_are_the_stdlib_ones() -> None:
    body = b"some body"
    assert zlib.decompress(compression.compress(body, "zlib")[0]) == body
    assert bz2.decompress(compression.compress(body, "bz2")[0]) == body
    assert lzma.decompress(compression.compress(body, "lzma")[0]) == body
    # Real gzip streams are read under application/x-gzip too.
    assert compression.decompress(gzip.compress(body), "application/x-gzip") == body


def test_empty_body_round_trip() -> None:
    for method in KOMBU_TYPES:
        packed, ct = compression.compress(b"", method)
        assert compression.decompress(packed, ct) == b""


def test_concatenated_streams_and_trailing_garbage_as_the_stdlib() -> None:
    two = bz2.compress(b"ab") + bz2.compress(b"cd")
    assert compression.decompress(two, "application/x-bz2") == bz2.decompress(two) == b"abcd"
    two = lzma.compress(b"ab") + lzma.compress(b"cd")
    assert compression.decompress(two, "application/x-lzma") == b"abcd"
    junk = zlib.compress(b"ab") + b"trailing junk"
    assert compression.decompress(junk, "application/x-gzip") == zlib.decompress(junk) == b"ab"


def test_encoders_lists_the_methods() -> None:
    names = compression.encoders()
    assert {"zlib", "bz2", "lzma"} <= set(names)
    assert names == sorted(names)
    assert compression.get_content_type("xz") == "application/x-lzma"


def test_zstd_only_where_the_stdlib_has_it() -> None:
    if _installed("compression.zstd"):
        packed, ct = compression.compress(b"z" * 100, "zstandard")
        assert ct == "application/zstd"
        assert compression.decompress(packed, ct) == b"z" * 100
    else:
        assert "zstd" not in compression.encoders()
        with pytest.raises(CompressionNotInstalled):
            compression.compress(b"z", "zstd")


def test_unknown_compression_method() -> None:
    with pytest.raises(CompressionNotInstalled) as info:
        compression.compress(b"x", "snappy")
    assert isinstance(info.value, ValueError) and "snappy" in str(info.value)
    with pytest.raises(CompressionNotInstalled):
        compression.decompress(b"x", "application/x-snappy")


@pytest.mark.parametrize("ct", KOMBU_TYPES.values())
def test_corrupt_and_truncated_bodies(ct: str) -> None:
    with pytest.raises(DecompressionError) as info:
        compression.decompress(b"this is not compressed at all", ct)
    assert info.value.__cause__ is not None
    packed, _ = compression.compress(bytes(range(256)) * 64, ct)
    with pytest.raises(DecompressionError, match="truncated"):
        compression.decompress(packed[: len(packed) // 2], ct)
    with pytest.raises(DecompressionError):
        compression.decompress(b"", ct)


@pytest.mark.parametrize("ct", KOMBU_TYPES.values())
def test_decompression_is_bounded(ct: str) -> None:
    size = 4 << 20
    packed, _ = compression.compress(bytes(size), ct)
    assert len(packed) < size // 100  # a small body ...
    with pytest.raises(DecompressedSizeExceeded) as info:  # ... that would become big
        compression.decompress(packed, ct, max_size=size - 1)
    assert info.value.max_size == size - 1
    assert isinstance(info.value, DecodeError)
    assert len(compression.decompress(packed, ct, max_size=size)) == size  # exactly at the limit
    assert len(compression.decompress(packed, ct, max_size=None)) == size
    assert compression.DEFAULT_MAX_SIZE == 1 << 30


@pytest.mark.parametrize("ct", KOMBU_TYPES.values())
def test_a_bomb_is_refused_holding_about_max_size_not_twice_that(ct: str) -> None:
    """The output comes in pieces: one call for the whole gathered max_size bytes in
    blocks and then joined them, so a bomb cost twice the bound before it was refused."""
    import tracemalloc

    bound = 16 << 20
    packed, _ = compression.compress(bytes(4 * bound), ct)
    small, _ = compression.compress(bytes(1000), ct)
    peaks = []
    for body, limit in ((small, None), (packed, bound)):
        tracemalloc.start()
        try:
            try:
                compression.decompress(body, ct, max_size=limit)
            except DecompressedSizeExceeded:
                assert limit is not None
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    codec_state, peak = peaks  # (lzma's dictionary alone is 8 MiB)
    assert peak - codec_state < bound * 1.25, (codec_state, peak)


@pytest.mark.parametrize("ct", KOMBU_TYPES.values())
@pytest.mark.parametrize("delta", [-1, 0, 1, 17])
def test_bounded_decompression_across_its_output_pieces(ct: str, delta: int) -> None:
    """Bodies around multiples of the piece size, two streams and trailing garbage, and a
    cut-off stream: as the stdlib's one-shot functions read them."""
    step = compression._STEP
    for size in (step + delta, 3 * step + delta):
        raw = (uuid.uuid4().bytes * (size // 16 + 1))[:size]
        packed, _ = compression.compress(raw, ct)
        assert compression.decompress(packed, ct, max_size=size) == raw
        with pytest.raises(DecompressedSizeExceeded):
            compression.decompress(packed, ct, max_size=size - 1)
        two = packed + compression.compress(b"tail", ct)[0] + b"not a stream"
        assert compression.decompress(two, ct) == raw + b"tail"
        with pytest.raises(DecompressionError, match="truncated"):
            compression.decompress(packed[:-8], ct)


def test_bound_counts_all_concatenated_streams() -> None:
    two = bz2.compress(bytes(1000)) + bz2.compress(bytes(1000))
    assert len(compression.decompress(two, "bz2", max_size=2000)) == 2000
    with pytest.raises(DecompressedSizeExceeded):
        compression.decompress(two, "bz2", max_size=1999)


def test_register_custom_compression() -> None:
    compression.register(
        "rot", lambda b: bytes(x ^ 0xFF for x in b), lambda b: bytes(x ^ 0xFF for x in b),
        "application/x-rot", aliases=["flip"],
    )
    packed, ct = compression.compress(b"abc", "flip")
    assert (packed, ct) == (bytes([0x9E, 0x9D, 0x9C]), "application/x-rot")
    assert compression.decompress(packed, ct) == b"abc"
    assert "rot" in compression.encoders()
    with pytest.raises(DecompressedSizeExceeded):  # custom codecs are checked afterwards
        compression.decompress(packed, ct, max_size=2)
    compression.unregister("rot")
    for key in ("rot", "flip", "application/x-rot"):
        with pytest.raises(CompressionNotInstalled):
            compression.compress(b"abc", key)
    with pytest.raises(CompressionNotInstalled):
        compression.unregister("rot")


def test_custom_decompressor_errors_are_decompression_errors() -> None:
    def broken(body: Any) -> bytes:
        raise OSError("bad")

    compression.register("broken", bytes, broken, "application/x-broken")
    with pytest.raises(DecompressionError) as info:
        compression.decompress(b"x", "application/x-broken")
    assert isinstance(info.value.__cause__, OSError)


@given(st.binary(max_size=4096), st.sampled_from(sorted(KOMBU_TYPES)))
def test_compression_round_trip_property(body: bytes, method: str) -> None:
    packed, ct = compression.compress(body, method)
    assert compression.decompress(packed, ct) == body
