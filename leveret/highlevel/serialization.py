"""Message body serialization, with kombu's content types.

:func:`dumps` turns a Python value into ``(content_type, content_encoding, payload)``;
:func:`loads` turns a received body back into a value, choosing the decoder by the
message's content type.  The content types are kombu's, so both read each other's
messages:

==========  ==================================  ===========  ==============================
name        content type                        encoding     notes
==========  ==================================  ===========  ==============================
(raw)       ``application/data``                ``binary``   ``bytes`` sent as is
(raw)       ``text/plain``                      ``utf-8``    ``str`` sent UTF-8 encoded
``json``    ``application/json``                ``utf-8``    the default serializer
``pickle``  ``application/x-python-serialize``  ``binary``   refused on receipt by default
``yaml``    ``application/x-yaml``              ``utf-8``    if PyYAML imports; safe subset
``msgpack`` ``application/x-msgpack``           ``binary``   if msgpack imports
==========  ==================================  ===========  ==============================

**Receiving is allow-listed.**  :func:`loads` checks the content type against ``accept``
*before* it looks at the body, and raises :class:`ContentDisallowed` for anything else --
so a pickle (which runs code when loaded) is never loaded unless the caller accepted it.
When ``accept`` is None the registry's default set applies: ``application/json``,
``application/data`` and ``text/plain`` -- and any content type no serializer is registered
for (``application/octet-stream``, ``application/xml``...), whose body is returned as it is,
since nothing decodes it.  A registered serializer outside the default set (pickle, YAML,
msgpack, one of the program's own) must be accepted by name.
:func:`enable_insecure_serializers` and :func:`disable_insecure_serializers` change that
default, as in kombu.  ``force=True`` skips the check (for bodies the program produced
itself).

JSON extras (the same envelopes kombu 5.3+ writes, so each side gets the types back):
``datetime``/``date``/``time`` -> ``{"__type__": "datetime"|"date"|"time", "__value__":
isoformat}``, ``Decimal`` -> ``{"__type__": "decimal", "__value__": str}``, ``UUID`` ->
``{"__type__": "uuid", "__value__": {"hex": ...}}``, ``bytes`` -> ``{"__type__":
"bytes", "__value__": text}`` when it is valid UTF-8, else ``{"__type__": "base64", ...}``.
An object with a ``__json__()`` method is encoded as what that returns.  On receipt these
envelopes are turned back into the types; an envelope with an unknown ``__type__`` is left
as the dict it is.  Tuples come back as lists, and JSON has no sets.

YAML uses only ``safe_dump``/``safe_load`` (no arbitrary objects); msgpack uses
``use_bin_type=True`` / ``raw=False`` (``bytes`` and ``str`` stay apart).
"""

from __future__ import annotations

import base64
import importlib
import json
import pickle
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, overload

from .exceptions import ContentDisallowed, DecodeError, EncodeError, SerializerNotInstalled

__all__ = [
    "SerializerRegistry",
    "registry",
    "register",
    "unregister",
    "dumps",
    "loads",
    "check_accepted",
    "prepare_accept_content",
    "enable_insecure_serializers",
    "disable_insecure_serializers",
    "BINARY_ENCODINGS",
    "RAW_TYPES",
    "INSECURE_SERIALIZERS",
]

#: ``content_encoding`` values that mean "bytes, not text" (kombu's spellings).
BINARY_ENCODINGS = frozenset({"binary", "ascii-8bit"})

#: Raw content types: the body *is* the value (bytes, or text in ``content_encoding``).
RAW_TYPES = {"application/data": "binary", "text/plain": "utf-8"}

#: The serializers :func:`enable_insecure_serializers` turns on by default.
INSECURE_SERIALIZERS = ("pickle", "yaml", "msgpack")

_DEFAULT_ACCEPT = frozenset({"application/json", *RAW_TYPES})

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Codec:
    """A registered serializer.

    ``encoder(value)`` returns ``bytes``, or ``str`` to be encoded with
    ``content_encoding``; ``decoder`` receives ``str`` (the body decoded with the message's
    text encoding) unless ``content_encoding`` is binary, then ``bytes``.  Either may be
    None: a codec that only decodes, or a name whose package is not installed (both None).
    """

    name: str
    content_type: str
    content_encoding: str
    encoder: Callable[[Any], bytes | str] | None
    decoder: Callable[[Any], Any] | None

    @property
    def binary(self) -> bool:
        return self.content_encoding in BINARY_ENCODINGS


def _normalize(content_type: str | None) -> tuple[str, str | None]:
    """``"Application/JSON; charset=UTF-8"`` -> ``("application/json", "UTF-8")``.

    No content type at all means raw bytes (``application/data``), as in kombu.
    """
    if not content_type:
        return "application/data", None
    if ";" not in content_type:
        return (content_type if content_type.islower() else content_type.lower()).strip(), None
    media, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media.strip().lower(), charset


class SerializerRegistry:
    """Serializers by name and by content type, and the default ``accept`` set.

    The module-level functions (:func:`dumps`, :func:`loads`, :func:`register`, ...) use
    the shared instance :data:`registry`.  Mutations take a lock; lookups do not (each
    table is replaced or updated atomically).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Codec] = {}
        self._by_type: dict[str, Codec] = {}
        #: The serializer :func:`dumps` uses for values that are not ``bytes``/``str``.
        self.default_serializer = "json"
        #: The content types :meth:`loads` accepts when called with ``accept=None``.
        self.default_accept: frozenset[str] = _DEFAULT_ACCEPT
        #: Types :meth:`disable` took out of the default: refused even where no serializer
        #: claims them (which, with ``accept=None``, otherwise pass as raw bodies).
        self._disabled: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ registration

    def register(
        self,
        name: str,
        encoder: Callable[[Any], bytes | str] | None,
        decoder: Callable[[Any], Any] | None,
        content_type: str,
        content_encoding: str = "utf-8",
    ) -> None:
        """Register (or replace) the serializer ``name`` for ``content_type``.

        A newly registered content type is *not* accepted by default: consumers name it in
        ``accept``, or call :meth:`enable` to add it to the default set.
        """
        media, _ = _normalize(content_type)
        codec = Codec(name, media, content_encoding.lower(), encoder, decoder)
        with self._lock:
            old = self._by_name.get(name)
            if old is not None and self._by_type.get(old.content_type) is old:
                del self._by_type[old.content_type]
            self._by_name[name] = codec
            self._by_type[media] = codec

    def unregister(self, name: str) -> None:
        """Remove a serializer; unknown names raise :class:`SerializerNotInstalled`."""
        with self._lock:
            codec = self._by_name.pop(name, None)
            if codec is None:
                raise SerializerNotInstalled(f"no serializer named {name!r}")
            if self._by_type.get(codec.content_type) is codec:
                del self._by_type[codec.content_type]

    def _register_missing(self, name: str, content_type: str, content_encoding: str) -> None:
        # Known by name and type, so using it says "not installed" rather than "unknown".
        self.register(name, None, None, content_type, content_encoding)

    @property
    def name_to_type(self) -> dict[str, str]:
        """Serializer names and their content types (installed or not)."""
        return {name: codec.content_type for name, codec in self._by_name.items()}

    @property
    def type_to_name(self) -> dict[str, str]:
        """Content types and the serializer names that decode them."""
        return {ct: codec.name for ct, codec in self._by_type.items()}

    def installed(self, name: str) -> bool:
        """True when ``name`` is registered and its package imported."""
        codec = self._by_name.get(name)
        return codec is not None and (codec.encoder is not None or codec.decoder is not None)

    # ------------------------------------------------------------------ accept sets

    @overload
    def prepare_accept_content(self, names_or_types: None) -> None: ...

    @overload
    def prepare_accept_content(self, names_or_types: Iterable[str]) -> set[str]: ...

    def prepare_accept_content(self, names_or_types: Iterable[str] | None) -> set[str] | None:
        """Turn serializer names and/or content types into a set of content types.

        ``["json", "application/x-python-serialize"]`` -> ``{"application/json",
        "application/x-python-serialize"}``; ``"raw"`` stands for both raw types.  A
        string with a ``/`` is a content type (kept, lower-cased); any other string must
        be a registered name, else :class:`SerializerNotInstalled`.  ``None`` stays None
        (meaning "the default set").  A single string is one name, not its letters.
        """
        if names_or_types is None:
            return None
        if isinstance(names_or_types, str):
            names_or_types = (names_or_types,)
        out: set[str] = set()
        for item in names_or_types:
            if "/" in item:
                out.add(_normalize(item)[0])
            elif item == "raw":
                out.update(RAW_TYPES)
            else:
                codec = self._by_name.get(item)
                if codec is None:
                    raise SerializerNotInstalled(f"no serializer named {item!r}")
                out.add(codec.content_type)
        return out

    def enable(self, name_or_type: str) -> None:
        """Add a serializer (by name or content type) to the default accept set."""
        types = self.prepare_accept_content((name_or_type,))
        with self._lock:
            self.default_accept = self.default_accept | types
            self._disabled = self._disabled - types

    def disable(self, name_or_type: str) -> None:
        """Remove a serializer (by name or content type) from the default accept set; a
        content type no serializer claims is refused from then on too."""
        types = self.prepare_accept_content((name_or_type,))
        with self._lock:
            self.default_accept = self.default_accept - types
            self._disabled = self._disabled | types

    def enable_insecure_serializers(self, choices: Iterable[str] = INSECURE_SERIALIZERS) -> None:
        """Let :meth:`loads` with ``accept=None`` decode these serializers too (by default
        pickle, yaml and msgpack).  Pickle runs code from the message: only for trusted
        brokers and producers.  Unknown names raise :class:`SerializerNotInstalled`."""
        types = self.prepare_accept_content(choices)
        with self._lock:
            self.default_accept = self.default_accept | types
            self._disabled = self._disabled - types

    def disable_insecure_serializers(self, allowed: Iterable[str] = ("json",)) -> None:
        """Reset the default accept set to the raw types plus ``allowed`` (default: json);
        what :meth:`disable` refused is forgotten."""
        types = self.prepare_accept_content(allowed)
        with self._lock:
            self.default_accept = frozenset(_DEFAULT_ACCEPT - {"application/json"} | types)
            self._disabled = frozenset()

    # ------------------------------------------------------------------ encoding

    def dumps(self, data: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
        """Serialize ``data``; returns ``(content_type, content_encoding, payload)``.

        With ``serializer=None``: ``bytes`` goes out as is (the same object, no copy) and
        ``bytearray``/``memoryview`` as a ``bytes`` copy, all as ``application/data`` /
        ``binary``; ``str`` as UTF-8 ``text/plain`` / ``utf-8``; anything else with
        :attr:`default_serializer` (json).  ``serializer="raw"`` takes only those
        bytes-like or ``str`` values.  An unknown or uninstalled serializer raises
        :class:`SerializerNotInstalled`; an encoder failure :class:`EncodeError` (with the
        encoder's exception as ``__cause__``).
        """
        if serializer is None or serializer == "raw":
            if type(data) is bytes:
                return "application/data", "binary", data
            if isinstance(data, (bytes, bytearray, memoryview)):
                return "application/data", "binary", bytes(data)
            if isinstance(data, str):
                try:
                    return "text/plain", "utf-8", data.encode("utf-8")
                except UnicodeEncodeError as exc:  # lone surrogates
                    raise EncodeError(f"str body is not encodable as UTF-8: {exc}") from exc
            if serializer == "raw":
                raise EncodeError(
                    f"the raw serializer takes bytes or str, not {type(data).__name__}"
                )
            serializer = self.default_serializer
        codec = self._by_name.get(serializer)
        if codec is None:
            raise SerializerNotInstalled(f"no serializer named {serializer!r}")
        if codec.encoder is None:
            raise SerializerNotInstalled(
                f"the {serializer!r} serializer cannot encode (is its package installed?)"
            )
        try:
            out = codec.encoder(data)
            if isinstance(out, str):
                out = out.encode("utf-8" if codec.binary else codec.content_encoding)
        except Exception as exc:
            raise EncodeError(f"cannot encode {type(data).__name__} as {serializer}: {exc}") from exc
        return codec.content_type, codec.content_encoding, out

    # ------------------------------------------------------------------ decoding

    def check_accepted(self, content_type: str | None, accept: Collection[str] | None = None) -> None:
        """Raise :class:`ContentDisallowed` unless :meth:`loads` would decode a body of
        ``content_type`` with ``accept`` (its step 1), without looking at any body."""
        self._check_accepted(_normalize(content_type)[0], accept)

    def _check_accepted(self, media: str, accept: Collection[str] | None) -> None:
        allowed = self.default_accept if accept is None else accept
        if isinstance(allowed, str):  # one name or type, not a set of its letters
            allowed = (allowed,)  # (and "in" must not match a substring of it)
        if (
            media not in allowed
            and not self._accepted_by_name(media, allowed)
            and (accept is not None or media in self._by_type or media in self._disabled)
        ):
            # (With accept None, a content type no serializer is registered for passes:
            # no decoder runs on it, its body is returned as it is -- as in kombu.)
            raise ContentDisallowed(
                f"refusing to decode content type {media!r} "
                f"(accepted: {', '.join(sorted(allowed)) or 'nothing'})"
            )

    def loads(
        self,
        data: Buffer | str,
        content_type: str | None,
        content_encoding: str | None,
        accept: Collection[str] | None = None,
        force: bool = False,
    ) -> Any:
        """Decode a received body by its content type.

        1. Unless ``force``, the content type (parameters dropped, lower case; none at all
           counts as ``application/data``) must be in ``accept`` -- a set of content types
           as made by :meth:`prepare_accept_content` (serializer names are understood too)
           -- or, when ``accept`` is None, in :attr:`default_accept` or be a type no
           serializer is registered for.  Otherwise :class:`ContentDisallowed` is raised
           and the body is not looked at.
        2. A registered serializer decodes it (text codecs get the body decoded with
           ``content_encoding``, or the ``charset`` parameter, or the codec's own encoding).
           One that is known but not installed raises :class:`SerializerNotInstalled`.
        3. Raw and unknown content types return the body itself: ``bytes`` when the
           encoding is binary or absent (``text/plain`` defaults to UTF-8), else ``str``.

        Any failure while decoding raises :class:`DecodeError` with the original exception
        as ``__cause__``.
        """
        media, charset = _normalize(content_type)
        if not force:
            self._check_accepted(media, accept)
        encoding = content_encoding or charset
        if encoding:
            encoding = encoding.lower()
        codec = self._by_type.get(media)
        if codec is None:
            if not encoding:
                encoding = RAW_TYPES.get(media, "binary")
            return _raw(data, encoding)
        if codec.decoder is None:
            raise SerializerNotInstalled(
                f"cannot decode {media!r}: the {codec.name!r} serializer is not installed"
            )
        try:
            if codec.binary:
                body: Any = data.encode("utf-8") if isinstance(data, str) else data
            else:
                if not encoding or encoding in BINARY_ENCODINGS:
                    encoding = codec.content_encoding
                body = data if isinstance(data, str) else str(data, encoding)
            return codec.decoder(body)
        except Exception as exc:
            raise DecodeError(f"cannot decode {media} body: {exc}") from exc

    def _accepted_by_name(self, media: str, allowed: Collection[str]) -> bool:
        # Slow path, only on refusal: let accept={"json"} mean what the user meant.
        for item in allowed:
            if "/" in item:
                if _normalize(item)[0] == media:  # "Application/JSON; charset=utf-8"
                    return True
                continue
            if item == "raw" and media in RAW_TYPES:
                return True
            codec = self._by_name.get(item)
            if codec is not None and codec.content_type == media:
                return True
        return False


def _raw(data: Buffer | str, encoding: str) -> bytes | str:
    if encoding in BINARY_ENCODINGS:
        if type(data) is bytes:
            return data
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if isinstance(data, str):
        return data
    try:
        return str(data, encoding)
    except Exception as exc:
        raise DecodeError(f"cannot decode body as {encoding}: {exc}") from exc


# ---------------------------------------------------------------------- json

def _envelope(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _json_default(o: Any) -> Any:
    reducer = getattr(o, "__json__", None)
    if reducer is not None:
        return reducer()
    # datetime before date: a datetime is a date too.
    if isinstance(o, datetime):
        return _envelope("datetime", o.isoformat())
    if isinstance(o, date):
        return _envelope("date", o.isoformat())
    if isinstance(o, time):
        return _envelope("time", o.isoformat())
    if isinstance(o, Decimal):
        return _envelope("decimal", str(o))
    if isinstance(o, uuid.UUID):
        return _envelope("uuid", {"hex": o.hex})
    if isinstance(o, (bytes, bytearray, memoryview)):
        raw = bytes(o)
        try:
            return _envelope("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _envelope("base64", base64.b64encode(raw).decode("ascii"))
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(**v) if isinstance(v, dict) else uuid.UUID(v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
}


def _json_hook(o: dict[str, Any]) -> Any:
    if len(o) == 2 and "__type__" in o and "__value__" in o:
        decode = _JSON_DECODERS.get(o["__type__"])
        if decode is not None:
            return decode(o["__value__"])
    return o


# Compact separators and no ASCII escaping: smaller bodies, and the C encoder does the work.
_json_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_json_ascii = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_json_plain_loads = json.JSONDecoder().decode
_json_hook_loads = json.JSONDecoder(object_hook=_json_hook).decode


def _fast_json_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder ``_json_compact`` uses, built once and without the circular-reference
    check: ``JSONEncoder.encode`` builds a new one (with a fresh check table) for every
    call, which is most of the cost of encoding a small message.  None when the C
    accelerator is missing or does not write exactly what ``_json_compact`` writes."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder = make(None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
        sample = {"a": [1, -2.5, "\u00e9\"\n", None, True, False, {"b": 10**20}], "c": "x", "d": Decimal("1.5")}
        if "".join(encoder(sample, 0)) != _json_compact.encode(sample):
            return None
    except Exception:  # noqa: BLE001 - another json module: use the documented API
        return None
    return encoder  # type: ignore[no-any-return]


_json_fast = _fast_json_encoder()


def _json_dumps(data: Any) -> bytes:
    text = None
    if _json_fast is not None:
        try:
            text = "".join(_json_fast(data, 0))
        except Exception:  # noqa: BLE001, S110 - a cycle (not checked there), or not encodable:
            pass  # _json_compact encodes it again and raises what json says
    if text is None:
        text = _json_compact.encode(data)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: \u-escape them instead
        return _json_ascii.encode(data).encode("ascii")


def _json_loads(text: str) -> Any:
    # The object hook costs a Python call per JSON object; skip it when no envelope can be in
    # the text.
    if "__type__" in text:
        return _json_hook_loads(text)
    return _json_plain_loads(text)


# ---------------------------------------------------------------------- the others

def _pickle_dumps(data: Any) -> bytes:
    return pickle.dumps(data, protocol=pickle.DEFAULT_PROTOCOL)


def _register_defaults(reg: SerializerRegistry) -> None:
    reg.register("json", _json_dumps, _json_loads, "application/json", "utf-8")
    reg.register("pickle", _pickle_dumps, pickle.loads, "application/x-python-serialize", "binary")
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        reg._register_missing("yaml", "application/x-yaml", "utf-8")
    else:
        reg.register(
            "yaml",
            lambda data: yaml.safe_dump(data, allow_unicode=True),
            yaml.safe_load,
            "application/x-yaml",
            "utf-8",
        )
    try:
        msgpack: Any = importlib.import_module("msgpack")
    except ImportError:
        reg._register_missing("msgpack", "application/x-msgpack", "binary")
    else:
        reg.register(
            "msgpack",
            lambda data: msgpack.packb(data, use_bin_type=True),
            lambda body: msgpack.unpackb(body, raw=False),
            "application/x-msgpack",
            "binary",
        )


#: The shared registry the module-level functions use.
registry = SerializerRegistry()
_register_defaults(registry)


def register(
    name: str,
    encoder: Callable[[Any], bytes | str] | None,
    decoder: Callable[[Any], Any] | None,
    content_type: str,
    content_encoding: str = "utf-8",
) -> None:
    """Register a serializer in :data:`registry` (see :meth:`SerializerRegistry.register`)."""
    registry.register(name, encoder, decoder, content_type, content_encoding)


def unregister(name: str) -> None:
    """Remove a serializer from :data:`registry`."""
    registry.unregister(name)


def dumps(data: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
    """Serialize with :data:`registry` (see :meth:`SerializerRegistry.dumps`)."""
    return registry.dumps(data, serializer)


def loads(
    data: Buffer | str,
    content_type: str | None,
    content_encoding: str | None,
    accept: Collection[str] | None = None,
    force: bool = False,
) -> Any:
    """Deserialize with :data:`registry` (see :meth:`SerializerRegistry.loads`)."""
    return registry.loads(data, content_type, content_encoding, accept, force)


def check_accepted(content_type: str | None, accept: Collection[str] | None = None) -> None:
    """Raise :class:`ContentDisallowed` unless :func:`loads` would decode ``content_type``
    (see :meth:`SerializerRegistry.check_accepted`)."""
    registry.check_accepted(content_type, accept)


@overload
def prepare_accept_content(names_or_types: None) -> None: ...


@overload
def prepare_accept_content(names_or_types: Iterable[str]) -> set[str]: ...


def prepare_accept_content(names_or_types: Iterable[str] | None) -> set[str] | None:
    """Names and/or content types -> content types (see
    :meth:`SerializerRegistry.prepare_accept_content`)."""
    return registry.prepare_accept_content(names_or_types)


def enable_insecure_serializers(choices: Iterable[str] = INSECURE_SERIALIZERS) -> None:
    """Add pickle, yaml and msgpack (or ``choices``) to the default accept set."""
    registry.enable_insecure_serializers(choices)


def disable_insecure_serializers(allowed: Iterable[str] = ("json",)) -> None:
    """Reset the default accept set to the raw types plus ``allowed``."""
    registry.disable_insecure_serializers(allowed)
