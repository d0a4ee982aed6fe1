"""Body compression, with kombu's header convention.

A producer compresses the (already serialized) body and names the method in the message
header ``compression`` by its *content type*; a consumer that sees the header decompresses
before decoding.  The content types are kombu's, so both read each other's messages:

=========  =====================  ==================  ==========================
method     header value           aliases             codec
=========  =====================  ==================  ==========================
``zlib``   ``application/x-gzip``  ``gzip``           :mod:`zlib` (zlib format)
``bz2``    ``application/x-bz2``   ``bzip2``, ``bzip``  :mod:`bz2`
``lzma``   ``application/x-lzma``  ``xz``             :mod:`lzma` (xz container)
``zstd``   ``application/zstd``    ``zstandard``      ``compression.zstd`` (Python 3.14+)
=========  =====================  ==================  ==========================

Despite its content type, ``application/x-gzip`` carries a *zlib* stream (as kombu sends
it); on receipt both zlib and real gzip streams are accepted.  Names, aliases and content
types are case-insensitive, and each can be used wherever a method is expected.

Decompression is bounded: :func:`decompress` stops as soon as the output would exceed
``max_size`` (default :data:`DEFAULT_MAX_SIZE`, 1 GiB; ``None`` for no limit) and raises
:class:`~leveret.highlevel.exceptions.DecompressedSizeExceeded`, so a small malicious body
is refused holding about ``max_size`` bytes.  (A body that fits costs twice its size for
a moment, its pieces and their join, as with the stdlib's one-shot functions.)  The built-in codecs
stop early; a codec added with :func:`register` is called in one piece and its output
checked afterwards.  Consumers (``Consumer``, ``SimpleQueue``, ``Queue.get``) take
``max_decompressed_size`` to set the bound, and decompress a body only when its content
type is one they accept.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .exceptions import CompressionNotInstalled, DecompressedSizeExceeded, DecompressionError

__all__ = [
    "HEADER",
    "DEFAULT_MAX_SIZE",
    "register",
    "unregister",
    "compress",
    "decompress",
    "encoders",
    "get_content_type",
]

#: The message header that names the compression method (kombu's).
HEADER = "compression"

#: Default bound on a decompressed body: 1 GiB.
DEFAULT_MAX_SIZE = 1 << 30

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class _Method:
    name: str
    content_type: str
    aliases: tuple[str, ...]
    compress: Callable[[Any], bytes]
    decompress: Callable[[Any], bytes] | None
    # (body, max_size) -> bytes, stopping early; for the built-in codecs only.
    bounded: Callable[[Any, int | None], bytes] | None = None


_lock = threading.Lock()
_methods: dict[str, _Method] = {}  # primary name -> method
_lookup: dict[str, _Method] = {}  # name, alias or content type (lower case) -> method


def register(
    name: str,
    compress_fn: Callable[[Any], bytes],
    decompress_fn: Callable[[Any], bytes],
    content_type: str,
    aliases: Iterable[str] = (),
) -> None:
    """Register a compression method.

    ``compress_fn(body) -> bytes`` and ``decompress_fn(body) -> bytes`` take any bytes-like
    object.  ``content_type`` is what goes in the ``compression`` header; ``name``,
    ``aliases`` and ``content_type`` all select the method afterwards.  Registering an
    existing name replaces that method (its old aliases go with it).
    """
    _add(_Method(name.lower(), content_type.lower(), tuple(a.lower() for a in aliases),
                 compress_fn, decompress_fn))


def _add(method: _Method) -> None:
    with _lock:
        old = _methods.pop(method.name, None)
        if old is not None:
            _drop(old)
        _methods[method.name] = method
        for key in (method.name, method.content_type, *method.aliases):
            _lookup[key] = method


def _drop(method: _Method) -> None:
    for key in (method.name, method.content_type, *method.aliases):
        if _lookup.get(key) is method:
            del _lookup[key]


def unregister(name: str) -> None:
    """Remove a method by its name (not an alias); unknown names raise
    :class:`CompressionNotInstalled`."""
    with _lock:
        method = _methods.pop(name.lower(), None)
        if method is None:
            raise CompressionNotInstalled(f"no compression method named {name!r}")
        _drop(method)


def _find(method: str) -> _Method:
    found = _lookup.get(method) or _lookup.get(method.lower())
    if found is None:
        known = ", ".join(sorted(_methods)) or "none"
        raise CompressionNotInstalled(
            f"unknown compression method {method!r} (registered: {known})"
        )
    return found


def encoders() -> list[str]:
    """The names of the registered methods (what :func:`compress` takes), sorted."""
    return sorted(_methods)


def get_content_type(method: str) -> str:
    """The ``compression`` header value for a method name, alias or content type."""
    return _find(method).content_type


def compress(body: Buffer, method: str) -> tuple[bytes, str]:
    """Compress ``body`` with ``method`` (a name, alias or content type).

    Returns ``(compressed_body, content_type)``: put ``content_type`` in the message's
    ``compression`` header.  Unknown methods raise :class:`CompressionNotInstalled`.
    """
    found = _find(method)
    return found.compress(body), found.content_type


def decompress(body: Buffer, content_type: str, max_size: int | None = DEFAULT_MAX_SIZE) -> bytes:
    """Undo :func:`compress`: ``content_type`` is the ``compression`` header's value (a
    method name or alias works too).

    Raises :class:`CompressionNotInstalled` for an unknown method,
    :class:`DecompressionError` (a ``DecodeError``) for a corrupt or truncated body, and
    :class:`DecompressedSizeExceeded` when the output would be larger than ``max_size``
    bytes (``None``: no limit).
    """
    found = _find(content_type)
    if found.bounded is not None:
        return found.bounded(body, max_size)
    if found.decompress is None:  # pragma: no cover - register() always sets one
        raise CompressionNotInstalled(f"{found.name!r} cannot decompress")
    try:
        out = found.decompress(body)
    except Exception as exc:
        raise DecompressionError(f"cannot decompress {found.content_type} body: {exc}") from exc
    if max_size is not None and len(out) > max_size:
        raise _too_big(found.content_type, max_size)
    return out


def _too_big(content_type: str, max_size: int) -> DecompressedSizeExceeded:
    return DecompressedSizeExceeded(
        f"{content_type} body decompresses to more than {max_size} bytes "
        f"(raise max_size to accept it)",
        max_size,
    )


def _bounded(
    content_type: str,
    new: Callable[[], Any],
    errors: type[Exception] | tuple[type[Exception], ...],
) -> Callable[[Any, int | None], bytes]:
    """A decompressor that stops at ``max_size``, for codecs whose decompressor objects have
    ``decompress(data, max_length)``, ``eof`` and ``unused_data``, and either
    ``unconsumed_tail`` (zlib: the input left when ``max_length`` was reached) or
    ``needs_input`` (bz2, lzma, zstd: False while output is left from the input given).

    The output comes in pieces of at most :data:`_STEP` bytes, so a body that expands past
    ``max_size`` is refused holding about ``max_size`` bytes -- one call for the whole would
    gather ``max_size`` in blocks and join them, twice that.  Like the stdlib's one-shot
    functions, it reads concatenated streams one after another and ignores trailing bytes
    that do not start a valid stream.
    """

    def run(body: Any, max_size: int | None) -> bytes:
        chunks: list[bytes] = []
        total = 0
        data = body
        streams = 0
        while True:  # one stream per turn
            d = new()
            while True:  # one piece of output per turn
                # One byte more than allowed: getting it proves the limit is exceeded.
                step = _STEP if max_size is None else min(_STEP, max_size - total + 1)
                try:
                    chunk = d.decompress(data, step)
                except errors as exc:
                    if streams:  # garbage after a complete stream: ignored, as the stdlib does
                        return b"".join(chunks)
                    raise DecompressionError(f"cannot decompress {content_type} body: {exc}") from exc
                total += len(chunk)
                if max_size is not None and total > max_size:
                    raise _too_big(content_type, max_size)
                if chunk:
                    chunks.append(chunk)
                if d.eof:
                    break
                tail = getattr(d, "unconsumed_tail", None)
                if tail is not None:  # zlib
                    if not tail and not chunk:
                        break  # all input read, no output: the stream is cut short
                    data = tail
                elif d.needs_input:
                    break  # all input read, more wanted: the stream is cut short
                else:
                    data = b""  # more output from the input already given
            if not d.eof:
                raise DecompressionError(
                    f"cannot decompress {content_type} body: truncated (no end-of-stream marker)"
                )
            streams += 1
            data = d.unused_data
            if not data:
                break
        return b"".join(chunks)

    return run


#: The most output one decompressor call may produce (see :func:`_bounded`).
_STEP = 1 << 20


def _register_builtins() -> None:
    _add(_Method(
        "zlib", "application/x-gzip", ("gzip",), zlib.compress, zlib.decompress,
        # wbits 32 + 15: accept a zlib or a gzip header.
        _bounded("application/x-gzip", lambda: zlib.decompressobj(32 + zlib.MAX_WBITS), zlib.error),
    ))
    _add(_Method(
        "bz2", "application/x-bz2", ("bzip2", "bzip"), bz2.compress, bz2.decompress,
        _bounded("application/x-bz2", bz2.BZ2Decompressor, (OSError, ValueError)),
    ))
    _add(_Method(
        "lzma", "application/x-lzma", ("xz",), lzma.compress, lzma.decompress,
        _bounded("application/x-lzma", lzma.LZMADecompressor, lzma.LZMAError),
    ))
    try:  # the stdlib's Zstandard, Python 3.14+
        zstd: Any = importlib.import_module("compression.zstd")
    except ImportError:
        return
    _add(_Method(
        "zstd", "application/zstd", ("zstandard",), zstd.compress, zstd.decompress,
        _bounded("application/zstd", zstd.ZstdDecompressor, zstd.ZstdError),
    ))


_register_builtins()
