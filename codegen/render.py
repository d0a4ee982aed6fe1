"""Render the typed model into Python source: one module per version, plus ``replies.py``.

The emitted code is meant to be read: straight-line ``encode``/``decode`` per method, one
precompiled ``struct.Struct`` per run of fixed-width fields, bits packed into octets as the
spec lays them out.  Nothing in the output interprets a type string at run time.
"""

from __future__ import annotations

import builtins
import keyword
import textwrap

from .model import Class, Constant, Field, Method, Spec, SpecError

__all__ = ["HEADER", "render_version", "render_replies", "camel", "snake"]

HEADER = "# GENERATED FILE - DO NOT EDIT. Regenerate with: python -m codegen\n"
WIDTH = 99
# Method and properties classes sit two levels deep (container class, then their own).
_W = WIDTH - 8
# Every generated __init__ takes its fields by keyword only, through a guard rather than
# ``*,``: see leveret.wire._base.KeywordsOnly for why.
_KEYWORDS_GUARD = ["self", "_positional: _KeywordsOnly = _KEYWORDS_ONLY", "/"]
_KEYWORDS_CHECK = [
    "    if _positional is not _KEYWORDS_ONLY:  # keywords only: see _base.KeywordsOnly",
    "        raise _positional_error(self)",
]

_STRUCT_CODE = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}
_STRUCT_SIZE = {"B": 1, "H": 2, "I": 4, "Q": 8}
_ATTR_TYPE = {
    "bit": "bool",
    "octet": "int",
    "short": "int",
    "long": "int",
    "longlong": "int",
    "shortstr": "str",
    "longstr": "bytes",
    "table": "dict[str, Any] | None",
    "timestamp": "datetime | int | None",
}
_PARAM_TYPE = dict(_ATTR_TYPE, longstr="bytes | str")
_DEFAULT = {
    "bit": "False",
    "octet": "0",
    "short": "0",
    "long": "0",
    "longlong": "0",
    "shortstr": '""',
    "longstr": 'b""',
    "table": "None",
    "timestamp": "None",
}
#: Properties whose values are usually unique per message: not worth caching their encoding.
_UNIQUE_PROPERTIES = {"correlation-id", "message-id"}
#: Properties decoded one by one before a single test for "none of the rest is set".
_PROPERTY_HEAD = 4
_PROPERTY_TYPE = {
    "longstr": "bytes | str | None",
    "table": "dict[str, Any] | None",
    "timestamp": "datetime | int | None",
}

#: Fields whose value is a credential: ``repr`` prints ``<hidden>`` instead.
SENSITIVE = {
    ("connection", "start-ok"): ("response",),
    ("connection", "secure-ok"): ("response",),
    ("connection", "update-secret"): ("new_secret",),
}

#: The names leveret/wire/errors.py exports (its ``__all__``; tests/test_codegen.py checks
#: that none is reused).  replies.py is star-imported next to them (leveret.client), so a
#: reply class of the same name would shadow the hand-written exception.
_ERRORS_NAMES = {
    "LeveretError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError",
    "EncodeError", "DecodeError", "FrameError", "FrameTooLarge", "UnexpectedFrame",
    "UnknownMethod", "AMQPError", "SoftError", "HardError",
}
#: Reply-code class names that would shadow a Python builtin or a leveret.wire.errors name.
_RESERVED_NAMES = set(dir(builtins)) | _ERRORS_NAMES

#: One line per reply code, in our words, after the meanings the specs give them.
REPLY_DOCS = {
    "not-delivered": "The broker could not deliver a message (0-8 only).",
    "content-too-large": "The content was larger than the broker can accept at present; "
    "retry later or send less.",
    "no-consumers": "An ``immediate`` message could not be delivered: its queue has no "
    "consumers.",
    "connection-forced": "An operator or the broker itself closed the connection "
    "(for example on shutdown).",
    "invalid-path": "The virtual host or other path named by the client is not valid.",
    "access-refused": "The user has no permission for the resource (exchange, queue, "
    "virtual host) the method named.",
    "not-found": "The exchange, queue or other entity the method named does not exist.",
    "resource-locked": "Another connection holds the resource exclusively (for example an "
    "exclusive queue).",
    "precondition-failed": "The method's preconditions do not hold (for example redeclaring a "
    "queue with other arguments).",
    "frame-error": "A frame was malformed: bad length, bad frame-end octet or similar.",
    "syntax-error": "A frame's fields had values that are not valid.",
    "command-invalid": "A method arrived that is not valid in the current state.",
    "channel-error": "A channel was used that is not open, or opened twice.",
    "unexpected-frame": "A frame arrived that was not expected here (for example a body "
    "frame with no content header before it).",
    "resource-error": "The broker ran out of a resource (memory, channels, ...).",
    "not-allowed": "The broker does not allow what was asked (for example opening a virtual "
    "host the user may not access).",
    "not-implemented": "The peer does not implement the method or feature asked for.",
    "internal-error": "The broker hit an internal error and cannot continue the connection.",
}


def camel(name: str) -> str:
    """``update-secret-ok`` -> ``UpdateSecretOk``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def snake(name: str) -> str:
    """``routing-key`` -> ``routing_key``; keywords get a trailing underscore (``global_``)."""
    out = name.replace("-", "_")
    return out + "_" if keyword.iskeyword(out) else out


def reply_class_name(name: str) -> str:
    base = camel(name)
    return "AMQP" + base if base in _RESERVED_NAMES else base


def _wrapped(
    indent: int, head: str, items: list[str], tail: str, one: str = "", width: int = WIDTH
) -> list[str]:
    """``head item, item tail`` on one line if it fits, else one item per line.

    ``one`` is appended after a sole item on the single-line form (``","`` for tuples).
    """
    pad = " " * indent
    flat = f"{pad}{head}{', '.join(items)}{one if len(items) == 1 else ''}{tail}"
    if len(flat) <= width or not items:
        return [flat]
    inner = " " * (indent + 4)
    return [f"{pad}{head}"] + [f"{inner}{item}," for item in items] + [f"{pad}{tail}"]


def _docstring(indent: int, text: str, width: int = WIDTH) -> list[str]:
    pad = " " * indent
    paragraphs = text.strip().split("\n\n")
    lines: list[str] = []
    for i, para in enumerate(paragraphs):
        if i:
            lines.append("")
        lines.extend(textwrap.wrap(para, width - indent - 3, break_on_hyphens=False) or [""])
    if len(lines) == 1 and len(pad) + len(lines[0]) + 6 <= width:
        return [f'{pad}"""{lines[0]}"""']
    out = [f'{pad}"""{lines[0]}']
    out.extend(f"{pad}{line}" if line else "" for line in lines[1:])
    out.append(f'{pad}"""')
    return out


class _Structs:
    """The precompiled structs a module needs, named after their format."""

    def __init__(self) -> None:
        self.pack: set[str] = set()
        self.unpack: set[str] = set()

    def packer(self, fmt: str) -> str:
        self.pack.add(fmt)
        return f"_pack_{fmt}"

    def unpacker(self, fmt: str) -> str:
        self.unpack.add(fmt)
        return f"_unpack_{fmt}"

    def render(self) -> list[str]:
        lines = []
        for fmt in sorted(self.pack | self.unpack, key=lambda f: (len(f), f)):
            lines.append(f'_{fmt} = struct.Struct("!{fmt}")')
        for fmt in sorted(self.pack, key=lambda f: (len(f), f)):
            lines.append(f"_pack_{fmt} = _{fmt}.pack")
        for fmt in sorted(self.unpack, key=lambda f: (len(f), f)):
            lines.append(f"_unpack_{fmt} = _{fmt}.unpack_from")
        return lines


def _ids_as_one(fmt: str) -> str:
    """A payload's struct format with its two leading ids ("HH") packed as one "I"."""
    assert fmt.startswith("HH")
    return "I" + fmt[2:]


def _ids(cls: Class, m: Method) -> str:
    """The class and method ids as one number (``60 << 16 | 40``, folded by the compiler)."""
    return f"{cls.index} << 16 | {m.index}"


def _method_frame_bound(m: Method) -> int | None:
    """The most bytes ``m``'s method frame can take (header, ids, fields, end octet), or
    None when a field (a table, a longstr) has no bound below 4 GiB."""
    size = 7 + 4 + 1
    for item in _bit_groups(m.fields):
        if isinstance(item, list):
            size += 1
        elif item.type == "timestamp":
            size += 8
        elif item.type in _STRUCT_CODE:
            size += _STRUCT_SIZE[_STRUCT_CODE[item.type]]
        elif item.type == "shortstr":
            size += 256
        else:
            return None
    return size


def _bit_groups(fields: list[Field]) -> list[list[Field] | Field]:
    """Fields in wire order, consecutive bits gathered into octets of at most eight."""
    out: list[list[Field] | Field] = []
    for f in fields:
        last = out[-1] if out else None
        if f.type == "bit" and isinstance(last, list) and len(last) < 8:
            last.append(f)
        elif f.type == "bit":
            out.append([f])
        else:
            out.append(f)
    return out


def _bits_expr(group: list[Field], prefix: str) -> str:
    terms = [f"({1 << i} if {prefix}{snake(f.name)} else 0)" for i, f in enumerate(group)]
    return " | ".join(terms)


class _VersionRenderer:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.structs = _Structs()

    # -- methods ------------------------------------------------------------------------

    def method_doc(self, cls: Class, m: Method) -> str:
        what = ["carries content" if m.content else "no content"]
        what.append("synchronous" if m.synchronous else "asynchronous")
        receivers = set(m.chassis)
        if receivers == {"server"}:
            what.append("sent by the client")
        elif receivers == {"client"}:
            what.append("sent by the server")
        elif receivers:
            what.append("sent by either peer")
        text = f"{cls.name}.{m.name} ({cls.index}, {m.index}): {'; '.join(what)}."
        if m.responses:
            names = ", ".join(f"{camel(cls.name)}.{camel(r)}" for r in m.responses)
            text += f" Answered by {names}."
        if m.fields:
            parts = []
            for f in m.fields:
                note = ", reserved" if f.reserved else ""
                parts.append(f"{snake(f.name)} ({f.type}{note})")
            text += "\n\nFields, in wire order: " + ", ".join(parts) + "."
        else:
            text += "\n\nNo fields."
        return text

    def _encode_plan(self, m: Method) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
        """How a method's payload is encoded: statements to run first, then the segments to
        join, each ``("struct", fmt, args)`` (a run of fixed-width fields, ids first),
        ``("octet", expr, [])`` (a bit octet, always 0..255) or ``("bytes", expr, [])`` (an
        encoded shortstr, longstr data or table, held in a local)."""
        pre: list[str] = []
        segments: list[tuple[str, str, list[str]]] = []
        nbits = 0
        fmt = "HH"
        args: list[str] = []  # the ids are added by the renderers

        def flush() -> None:
            nonlocal fmt, args
            if fmt == "B" and args[0] in bit_exprs:
                segments.append(("octet", args[0], []))
            elif fmt:
                segments.append(("struct", fmt, args))
            fmt, args = "", []

        bit_exprs: set[str] = set()
        for item in _bit_groups(m.fields):
            if isinstance(item, list):
                fmt += "B"
                expr = _bits_expr(item, "self.")
                if len(expr) > 50:
                    local = f"_bits{nbits}" if nbits else "_bits"
                    nbits += 1
                    terms = expr.split(" | ")
                    pre.append(f"{local} = (")
                    pre.append(f"    {terms[0]}")
                    pre.extend(f"    | {t}" for t in terms[1:])
                    pre.append(")")
                    expr = local
                args.append(expr)
                bit_exprs.add(expr)
                continue
            attr = snake(item.name)
            if item.type == "timestamp":
                fmt += "Q"
                args.append(f"_timestamp_to_int(self.{attr} or 0)")
            elif item.type in _STRUCT_CODE:
                fmt += _STRUCT_CODE[item.type]
                args.append(f"self.{attr}")
            elif item.type == "shortstr":
                flush()
                pre.extend(_cached_shortstr(f"_{attr}", f"self.{attr}"))
                segments.append(("bytes", f"_{attr}", []))
            elif item.type == "longstr":
                pre.append(f"_{attr} = self.{attr}")
                pre.append(f"if isinstance(_{attr}, str):")
                pre.append(f'    _{attr} = _{attr}.encode("utf-8", "surrogateescape")')
                fmt += "I"
                args.append(f"len(_{attr})")
                flush()
                segments.append(("bytes", f"_{attr}", []))
            elif item.type == "table":
                flush()
                pre.append(f"_{attr} = _encode_table(self.{attr})")
                segments.append(("bytes", f"_{attr}", []))
            else:  # pragma: no cover - model validation rules this out
                raise SpecError(f"cannot encode {item.type}")
        flush()
        return pre, segments

    def _segment_exprs(self, segments: list[tuple[str, str, list[str]]]) -> list[str]:
        parts = []
        for kind, what, args in segments:
            if kind == "struct":
                parts.append(f"{self.structs.packer(what)}({', '.join(args)})")
            elif kind == "octet":
                parts.append(f"_OCTETS[{what}]")
            else:
                parts.append(what)
        return parts

    def _encode_body(
        self, name: str, cls: Class, m: Method, pre: list[str], parts: list[str], error: str,
        can_fail: bool,
    ) -> list[str]:
        """``def name`` returning the join of ``parts`` after ``pre``; when ``can_fail``,
        failures are reported by the ``error`` expression (which may use ``exc``)."""
        lines = [name]
        body_indent = 8 if can_fail else 4
        body = [" " * body_indent + line for line in pre]
        if len(parts) == 1:
            body.extend(self._wrap_expr(body_indent, "return ", parts[0]))
        else:
            flat = " " * body_indent + f'return b"".join(({", ".join(parts)}))'
            if len(flat) <= _W:
                body.append(flat)
            else:
                pad = " " * body_indent
                body.append(f'{pad}return b"".join(')
                body.append(f"{pad}    (")
                for p in parts:
                    body.extend(self._wrap_expr(body_indent + 8, "", p, ","))
                body.append(f"{pad}    )")
                body.append(f"{pad})")
        if not can_fail:
            return lines + body
        lines.append("    try:")
        lines.extend(body)
        tables = [snake(f.name) for f in m.fields if f.type == "table"]
        if tables:
            # encode_table raises EncodeError itself (a ValueError); say where it came from.
            lines.append("    except EncodeError as exc:")
            lines.append(
                f'        raise EncodeError(f"{cls.name}.{m.name}: {"/".join(tables)}: {{exc}}")'
                " from exc"
            )
        lines.append("    except _ENCODE_FAILURES as exc:")
        lines.append(f"        raise {error} from exc")
        return lines

    def method_encode(self, cls: Class, m: Method) -> list[str]:
        if not m.fields:
            data = (cls.index << 16 | m.index).to_bytes(4, "big")
            literal = "".join(f"\\x{b:02x}" for b in data)
            return ["def encode(self) -> bytes:", f'    return b"{literal}"']
        pre, segments = self._encode_plan(m)
        kind, fmt, args = segments[0]
        segments[0] = (kind, fmt, [str(cls.index), str(m.index), *args])
        parts = self._segment_exprs(segments)
        # Only bits cannot fail: every other type can be out of range or of the wrong type.
        can_fail = any(f.type != "bit" for f in m.fields)
        return self._encode_body(
            "def encode(self) -> bytes:", cls, m, pre, parts, "_encode_error(self, exc)", can_fail
        )

    def _frame_header_first(
        self, cls: Class, m: Method, segments: list[tuple[str, str, list[str]]]
    ) -> None:
        """Make the first segment of a payload's plan pack the method frame's header (type
        1, ``channel``, payload size) and the ids, as one number, ahead of its fields."""
        size = 0
        lengths = []
        for kind, what, args in segments:
            if kind == "struct":
                size += sum(_STRUCT_SIZE[c] for c in what)
            elif kind == "octet":
                size += 1
            else:
                lengths.append(f"len({what})")
        kind, fmt, args = segments[0]
        size_expr = " + ".join([str(size), *lengths])
        segments[0] = (kind, "BHI" + _ids_as_one(fmt), ["1", "channel", size_expr, _ids(cls, m), *args])

    def method_encode_frame(self, cls: Class, m: Method) -> list[str]:
        """``encode_frame(channel)``: the whole method frame in one join (one pack for a
        method of fixed-width fields only), its frame header packed with the ids and leading
        fields and its frame-end octet with the last fixed field (or bit octet)."""
        pre, segments = self._encode_plan(m)
        self._frame_header_first(cls, m, segments)
        kind, what, args = segments[-1]
        tail: list[str] = []
        if kind == "struct":
            segments[-1] = (kind, what + "B", [*args, "206"])
        elif kind == "octet":
            segments[-1] = ("bytes", f"_OCTETS_END[{what}]", [])
        else:
            tail = ["_END"]
        parts = self._segment_exprs(segments) + tail
        lines = self._encode_body(
            "def encode_frame(self, channel: int) -> bytes:",
            cls, m, pre, parts, "_frame_error(self, channel, exc)", can_fail=True,  # a bad channel
        )
        doc = [
            '    """The method frame for ``channel``: frame header, :meth:`encode`\'s payload,',
            '    frame-end octet."""',
        ]
        return lines[:1] + doc + lines[1:]

    def method_content_frames(self, cls: Class, m: Method) -> list[str]:
        """``content_frames(channel, properties, body, frame_max)``: a whole small content
        (method frame, header frame, one body frame) in one join; anything else goes to the
        general ``frames._content_frames``.  A publish is this: the method frame's end octet
        is packed with the header frame's fixed fields, the header frame's end octet with
        the body frame's header."""
        pre, segments = self._encode_plan(m)
        self._frame_header_first(cls, m, segments)
        # Constant neighbours are packed as one number (the compiler folds ``206 << 8 | 2``):
        # fewer arguments to convert.  The header frame: end octet of the method frame and
        # type 2, channel, size, class id and weight 0, body size, property flags.
        header = ["206 << 8 | 2", "channel", "14 + props_size", f"{cls.index} << 16", "size", "flags"]
        kind, what, args = segments[-1]
        if kind == "struct":
            segments[-1] = (kind, what + "HHIIQH", [*args, *header])
        elif kind == "octet":
            segments[-1] = ("struct", "BHHIIQH", [what, *header])
        else:
            segments.append(("struct", "HHIIQH", header))
        parts = self._segment_exprs(segments)
        # The body frame: the header frame's end octet and type 3, channel, size.
        body_head = f"{self.structs.packer('HHI')}(206 << 8 | 3, channel, size)"
        parts += ["props", body_head, "body", "_END"]
        # Every field is bounded (shortstrs and fixed widths: checked by the caller), so one
        # comparison covers both the method frame and the header frame.
        most = _method_frame_bound(m)
        assert most is not None  # the caller generates this only for bounded methods
        bound = max(most, 22)
        lines = [
            "def content_frames(",
            "    self,",
            "    channel: int,",
            "    properties: ContentProperties | None,",
            "    body: bytes | bytearray | memoryview,",
            "    frame_max: int,",
            ") -> bytes | list[bytes | memoryview]:",
            '    """This method with its content header and body as frames for ``channel``: see',
            "    :func:`~leveret.wire.frames.content_frames`.  A ``bytes`` body of one frame, less",
            '    than 64 KiB in all, is packed here in one join."""',
            "    if type(body) is bytes:",
            "        try:",
        ]
        body = [
            *pre,
            "if properties is None:",
            "    flags = 0",
            '    props = b""',
            "else:",
            "    flags, props = properties.encode_values()",
            "size = len(body)",
            "props_size = len(props)",
            # (The sum is a little stricter than needed; what it turns away is a tiny
            # frame_max, which the general path handles.)
            f"if 0 < size < 65536 and size + props_size + {bound} <= frame_max:",
            '    return b"".join(',
            "        (",
        ]
        lines.extend("            " + line for line in body)
        for p in parts:
            lines.extend(self._wrap_expr(24, "", p, ","))
        lines.append("                    )")
        lines.append("                )")
        # A value that does not encode (EncodeError is a ValueError too): the general path
        # encodes it again and reports it, as it would have.
        lines.append("        except _ENCODE_FAILURES:")
        lines.append("            pass  # a value that does not encode: the general path says which")
        lines.append("    return _content_frames(channel, self, properties, body, frame_max)")
        return lines

    def _wrap_expr(self, indent: int, head: str, expr: str, tail: str = "") -> list[str]:
        """Wrap ``name(arg, arg)`` one argument per line when it does not fit."""
        pad = " " * indent
        if len(pad + head + expr + tail) <= _W or "(" not in expr:
            return [pad + head + expr + tail]
        fn, _, rest = expr.partition("(")
        args = _split_args(rest[:-1])
        return _wrapped(indent, f"{head}{fn}(", args, f"){tail}", width=_W)

    def method_decode(self, cls: Class, m: Method) -> list[str]:
        qual = f"{camel(cls.name)}.{camel(m.name)}"
        name = f"{cls.name}.{m.name}"
        lines = ["@classmethod"] + _decode_signature(qual)
        if not m.fields:
            lines.append("    if offset != end:")
            lines.append(f'        raise _decode_error("{name}", None, offset, end)')
            lines.append("    return _new(cls)")
            return lines
        body: list[str] = []
        fmt = ""
        targets: list[str] = []
        after: list[str] = []  # statements that turn unpacked locals into attributes
        nbits = 0

        def flush() -> None:
            nonlocal fmt, targets, after
            if not fmt:
                return
            size = sum(_STRUCT_SIZE[c] for c in fmt)
            unpack = self.structs.unpacker(fmt)
            if fmt == "B":
                body.append(f"{targets[0]} = buf[o]")
            elif len(targets) == 1:
                body.append(f"{targets[0]} = {unpack}(buf, o)[0]")
            else:
                stmt = f"{', '.join(targets)} = {unpack}(buf, o)"
                if len(stmt) <= _W - 8:
                    body.append(stmt)
                else:
                    body.extend(_wrapped(0, "(", targets, f") = {unpack}(buf, o)", width=0))
            body.append(f"o += {size}")
            body.extend(after)
            fmt, targets, after = "", [], []

        for item in _bit_groups(m.fields):
            if isinstance(item, list):
                local = f"_bits{nbits}" if nbits else "_bits"
                nbits += 1
                fmt += "B"
                targets.append(local)
                for i, f in enumerate(item):
                    after.append(f"self.{snake(f.name)} = ({local} & {1 << i}) != 0")
                continue
            attr = snake(item.name)
            if item.type == "timestamp":
                fmt += "Q"
                targets.append(f"_{attr}")
                after.append(f"self.{attr} = _int_to_timestamp(_{attr})")
            elif item.type in _STRUCT_CODE:
                fmt += _STRUCT_CODE[item.type]
                targets.append(f"self.{attr}")
            elif item.type == "shortstr" and not fmt:
                # A length octet of its own: no struct call for it.
                body.extend(_shortstr_decode(f"self.{attr}"))
            elif item.type == "shortstr":
                fmt += "B"
                targets.append("n")
                flush()
                body.append(f"self.{attr} = buf[o : o + n].decode()")
                body.append("o += n")
            elif item.type == "longstr":
                fmt += "I"
                targets.append("n")
                flush()
                body.append(f"self.{attr} = bytes(buf[o : o + n])")
                body.append("o += n")
            elif item.type == "table":
                flush()
                body.append(f"self.{attr}, o = _decode_table(buf, o, end)")
        flush()

        lines.append("    self = _new(cls)")
        lines.append("    o = offset")
        lines.append("    try:")
        lines.extend(" " * 8 + line for line in body)
        if any(f.type == "shortstr" for f in m.fields):
            lines.extend(_LENIENT_RETRY)
        lines.append("    except _DECODE_FAILURES as exc:")
        lines.append(f'        raise _decode_error("{name}", exc, o, end) from exc')
        lines.append("    if o != end:")
        lines.append(f'        raise _decode_error("{name}", None, o, end)')
        lines.append("    return self")
        return lines

    def method_class(self, cls: Class, m: Method) -> list[str]:
        attrs = [snake(f.name) for f in m.fields]
        out = [f"class {camel(m.name)}(Method):"]
        out.extend(_docstring(0, self.method_doc(cls, m), _W))
        out.append("")
        out.extend(_wrapped(0, "__slots__ = (", [f'"{a}"' for a in attrs], ")", ",", width=_W))
        out.append("")
        out.append(f"CLASS_ID = {cls.index}")
        out.append(f"METHOD_ID = {m.index}")
        out.append(f"INDEX = {cls.index} << 16 | {m.index}")
        out.append(f'NAME = "{cls.name}.{m.name}"')
        out.append(f"SYNCHRONOUS = {m.synchronous}")
        out.append(f"HAS_CONTENT = {m.content}")
        out.append(f"SENT_BY_SERVER = {'client' in m.chassis}")
        out.append(f"SENT_BY_CLIENT = {'server' in m.chassis}")
        out.append("FIELDS = __slots__")
        types = [f'"{f.type}"' for f in m.fields]
        out.extend(_wrapped(0, "FIELD_TYPES = (", types, ")", ",", width=_W))
        sensitive = SENSITIVE.get((cls.name, m.name))
        if sensitive:
            out.append(f"SENSITIVE = frozenset({{{', '.join(repr(s) for s in sensitive)}}})")
        if m.fields:
            out.append("")
            for f in m.fields:
                out.append(f"{snake(f.name)}: {_ATTR_TYPE[f.type]}")
            out.append("")
            params = [*_KEYWORDS_GUARD] + [
                f"{snake(f.name)}: {_PARAM_TYPE[f.type]} = {_DEFAULT[f.type]}" for f in m.fields
            ]
            out.extend(_wrapped(0, "def __init__(", params, ") -> None:", width=_W))
            out.extend(_KEYWORDS_CHECK)
            for f in m.fields:
                a = snake(f.name)
                if f.type == "longstr":
                    out.append(f"    if isinstance({a}, str):")
                    out.append(f'        {a} = _longstr_bytes({a}, "{cls.name}.{m.name}", "{a}")')
                out.append(f"    self.{a} = {a}")
        out.append("")
        out.extend(self.method_encode(cls, m))
        if m.fields and (m.content or len(self._encode_plan(m)[1]) == 1):
            # Content methods (every publish and delivery), and methods of fixed-width fields
            # only (basic.ack, reject, nack, qos...: a consumer sends one per message), whose
            # whole frame is then a single struct pack.
            out.append("")
            out.extend(self.method_encode_frame(cls, m))
        if m.content and m.fields and _method_frame_bound(m) is not None:
            out.append("")
            out.extend(self.method_content_frames(cls, m))
        out.append("")
        out.extend(self.method_decode(cls, m))
        # The class body sits inside the container class: indent everything but line 1.
        return [out[0]] + [("    " + line) if line else "" for line in out[1:]]

    # -- content properties -------------------------------------------------------------

    def properties_class(self, cls: Class) -> list[str]:
        props = cls.properties
        attrs = [snake(p.name) for p in props]
        flags = {attr: 1 << (15 - i) for i, attr in enumerate(attrs)}
        name = f"{cls.name}.properties"
        out = ["class Properties(ContentProperties):"]
        doc = (
            f"Content-header properties of class {cls.name} ({cls.index}); every one defaults "
            "to None (absent, flag bit clear)."
        )
        if props:
            listed = ", ".join(
                f"{a} ({p.type}{', reserved' if p.reserved else ''})" for a, p in zip(attrs, props)
            )
            doc += f"\n\nIn flag order: {listed}."
        out.extend(_docstring(0, doc, _W))
        out.append("")
        out.extend(_wrapped(0, "__slots__ = (", [f'"{a}"' for a in attrs], ")", ",", width=_W))
        out.append("")
        out.append(f"CLASS_ID = {cls.index}")
        out.append(f'NAME = "{name}"')
        out.append("FIELDS = __slots__")
        types = [f'"{p.type}"' for p in props]
        out.extend(_wrapped(0, "FIELD_TYPES = (", types, ")", ",", width=_W))
        if props:
            out.append("FLAGS = {")
            for a in attrs:
                out.append(f'    "{a}": 0x{flags[a]:04X},')
            out.append("}")
        else:
            out.append("FLAGS: ClassVar[dict[str, int]] = {}")
        if props:
            out.append("")
            for p, a in zip(props, attrs):
                out.append(f"{a}: {_PROPERTY_TYPE.get(p.type, _ATTR_TYPE[p.type] + ' | None')}")
            out.append("")
            params = [*_KEYWORDS_GUARD] + [
                f"{a}: {_PROPERTY_TYPE.get(p.type, _ATTR_TYPE[p.type] + ' | None')} = None"
                for p, a in zip(props, attrs)
            ]
            out.extend(_wrapped(0, "def __init__(", params, ") -> None:", width=_W))
            out.extend(_KEYWORDS_CHECK)
            for a in attrs:
                out.append(f"    self.{a} = {a}")

        # encode_values: the flags and the present values in flag order (the base class's
        # encode() packs the flags in front).  A header is a few short values:
        # concatenating them beats a list and a join.
        out.append("")
        out.append("def encode_values(self) -> tuple[int, bytes]:")
        if not props:
            out.append('    return 0, b""')
        else:
            out.append("    flags = 0")
            out.append('    out = b""')
            out.append("    try:")
            for p, a in zip(props, attrs):
                out.append(f"        if self.{a} is not None:")
                out.append(f"            flags |= 0x{flags[a]:04X}")
                out.extend("            " + s for s in self._property_encode(p, a))
            tables = [a for p, a in zip(props, attrs) if p.type == "table"]
            if tables:
                out.append("    except EncodeError as exc:")
                out.append(
                    f'        raise EncodeError(f"{name}: {"/".join(tables)}: {{exc}}") from exc'
                )
            out.append("    except _ENCODE_FAILURES as exc:")
            out.append("        raise _encode_error(self, exc) from exc")
            out.append("    return flags, out")

        # decode
        used = 0
        for bit in flags.values():
            used |= bit
        unknown = 0xFFFE & ~used
        out.append("")
        out.append("@classmethod")
        out.extend(_decode_signature(f"{camel(cls.name)}.Properties", flags=True))
        out.append("    self = _new(cls)")
        out.append("    o = offset")
        out.append("    try:")
        out.append("        if flags is None:  # else the caller has read it; offset is past it")
        out.append(f"            flags = {self.structs.unpacker('H')}(buf, o)[0]")
        out.append("            offset = o = o + 2")
        skip = f'o = _skip_flag_words("{name}", buf, o, flags, 0x{unknown:04X})'
        # Every slot must be filled, absent properties with None.  The properties after
        # the first few are rarely set, so one test covers them all (and the flag bits
        # that mean more flag words) when none is; for a class with only a couple more,
        # the extra test would not pay.
        head = len(props) if len(props) <= _PROPERTY_HEAD + 2 else _PROPERTY_HEAD
        if head == len(props):
            out.append(f"        if flags & 0x{unknown | 1:04X}:")
            out.append(f"            {skip}")
            for p, a in zip(props, attrs):
                out.extend(self._property_decode_branch(p.type, a, flags[a], 8))
        else:
            # Any bit but the head's (even one past 16 bits, from a caller passing flags).
            head_bits = 0
            for a in attrs[:head]:
                head_bits |= flags[a]
            out.append(f"        if flags & ~0x{head_bits:04X}:")
            out.append(f"            if flags & 0x{unknown | 1:04X}:")
            out.append(f"                {skip}")
            for p, a in zip(props, attrs):
                out.extend(self._property_decode_branch(p.type, a, flags[a], 12))
            out.append("        else:")
            # Only the head's bits, the word's highest, can be set: test them from the
            # top by comparison, taking each off once read (a compare and a subtraction
            # of small ints are inlined by 3.11; an & is a call).
            out.append("            f = flags")
            for i, (p, a) in enumerate(zip(props[:head], attrs[:head])):
                out.append(f"            if f >= 0x{flags[a]:04X}:")
                out.extend(f"                {line}" for line in self._property_decode(p.type, a))
                if i < head - 1:
                    out.append(f"                f -= 0x{flags[a]:04X}")
                out.append("            else:")
                out.append(f"                self.{a} = None")
            out.extend(f"            self.{a} = None" for a in attrs[head:])
        if any(p.type == "shortstr" for p in props):
            out.append("    except UnicodeDecodeError:  # not UTF-8: see _base.Lenient")
            out.append("        return cls.decode(_Lenient(buf[offset:end]), 0, end - offset, flags)")
        out.append("    except _DECODE_FAILURES as exc:")
        out.append(f'        raise _decode_error("{name}", exc, o, end) from exc')
        out.append("    if o != end:")
        out.append(f'        raise _decode_error("{name}", None, o, end)')
        out.append("    return self")
        return [out[0]] + [("    " + line) if line else "" for line in out[1:]]

    def _property_encode(self, p: Field, a: str) -> list[str]:
        type_ = p.type
        if type_ == "shortstr" and p.name in _UNIQUE_PROPERTIES:
            return [f"out += _shortstr(self.{a})"]
        if type_ == "shortstr":
            return _cached_shortstr("value", f"self.{a}") + ["out += value"]
        if type_ == "longstr":
            return [
                f"_{a} = self.{a}",
                f"if isinstance(_{a}, str):",
                f'    _{a} = _{a}.encode("utf-8", "surrogateescape")',
                f"out += {self.structs.packer('I')}(len(_{a})) + bytes(_{a})",
            ]
        if type_ == "table":
            return [f"out += _encode_table(self.{a})"]
        if type_ == "timestamp":
            return [f"out += {self.structs.packer('Q')}(_timestamp_to_int(self.{a}))"]
        code = _STRUCT_CODE[type_]
        return [f"out += {self.structs.packer(code)}(self.{a})"]

    def _property_decode_branch(self, type_: str, a: str, flag: int, indent: int) -> list[str]:
        pad = " " * indent
        out = [f"{pad}if flags & 0x{flag:04X}:"]
        out.extend(f"{pad}    {line}" for line in self._property_decode(type_, a))
        out.append(f"{pad}else:")
        out.append(f"{pad}    self.{a} = None")
        return out

    def _property_decode(self, type_: str, a: str) -> list[str]:
        if type_ == "shortstr":
            return _shortstr_decode(f"self.{a}")
        if type_ == "longstr":
            return [
                f"n = {self.structs.unpacker('I')}(buf, o)[0]",
                "o += 4",
                f"self.{a} = bytes(buf[o : o + n])",
                "o += n",
            ]
        if type_ == "table":
            return [f"self.{a}, o = _decode_table(buf, o, end)"]
        if type_ == "timestamp":
            return [
                f"self.{a} = _int_to_timestamp({self.structs.unpacker('Q')}(buf, o)[0])",
                "o += 8",
            ]
        if type_ == "octet":
            return [f"self.{a} = buf[o]", "o += 1"]
        code = _STRUCT_CODE[type_]
        return [
            f"self.{a} = {self.structs.unpacker(code)}(buf, o)[0]",
            f"o += {_STRUCT_SIZE[code]}",
        ]

    # -- module ---------------------------------------------------------------------------

    def container(self, cls: Class) -> list[str]:
        out = [f"class {camel(cls.name)}:"]
        kinds = f"{len(cls.methods)} methods"
        if cls.has_content:
            kinds += ", content properties"
        out.extend(_docstring(4, f"AMQP class {cls.name} ({cls.index}): {kinds}."))
        out.append("")
        out.append(f"    CLASS_ID = {cls.index}")
        out.append(f'    NAME = "{cls.name}"')
        for m in cls.methods:
            out.append("")
            out.extend("    " + line if line else "" for line in self.method_class(cls, m))
        if cls.has_content:
            if any(p.type == "bit" for p in cls.properties):
                # Neither spec has one, and the spec does not say how one would be laid out.
                raise SpecError(f"{cls.name}: bit properties are not supported")
            out.append("")
            out.extend("    " + line if line else "" for line in self.properties_class(cls))
        return out

    def render(self) -> str:
        spec = self.spec
        classes: list[str] = []
        for cls in spec.classes:
            classes.append("")
            classes.append("")
            classes.extend(self.container(cls))

        errors = [c for c in spec.constants if c.error_class]
        plain = [c for c in spec.constants if not c.error_class]
        containers = [camel(c.name) for c in spec.classes]
        has_basic = any(c.name == "basic" for c in spec.classes)
        needs_classvar = any(c.has_content and not c.properties for c in spec.classes)
        exports = (
            ["VERSION", "NAME", "PORT", "PROTOCOL_HEADER"]
            + [snake(c.name).upper() for c in spec.constants]
            + ["SOFT_ERRORS", "HARD_ERRORS", "ERRORS"]
            + containers
            + (["BasicProperties"] if has_basic else [])
            + ["METHODS", "PROPERTIES", "method_class", "properties_class"]
        )
        header_bytes = "".join(f"\\x{b:02x}" for b in spec.protocol_header[4:])
        sources = " + ".join(f"spec/{s}" for s in spec.sources)

        out = [HEADER.rstrip("\n")]
        out.extend(
            _docstring(
                0,
                f"AMQP {spec.name}: constants, method classes and content properties.\n\n"
                f"Generated by ``codegen`` from {sources}.  Each method class encodes to a "
                "method frame payload (class id, method id, arguments) and decodes from the "
                "arguments that follow the ids; see docs/architecture.md.",
            )
        )
        out += [
            "",
            "from __future__ import annotations",
            "",
            "import struct",
            "from datetime import datetime",
            "from typing import Any, ClassVar" if needs_classvar else "from typing import Any",
            "",
            "from . import replies",
            "from ._base import END as _END",
            "from ._base import KEYWORDS_ONLY as _KEYWORDS_ONLY",
            "from ._base import OCTETS as _OCTETS",
            "from ._base import OCTETS_END as _OCTETS_END",
            "from ._base import SHORTSTRS as _SHORTSTRS",
            "from ._base import ContentProperties, Method",
            "from ._base import Lenient as _Lenient",
            "from ._base import cached_shortstr as _cached_shortstr",
            "from ._base import decode_error as _decode_error",
            "from ._base import encode_error as _encode_error",
            "from ._base import frame_error as _frame_error",
            "from ._base import KeywordsOnly as _KeywordsOnly",
            "from ._base import int_to_timestamp as _int_to_timestamp",
            "from ._base import longstr_bytes as _longstr_bytes",
            "from ._base import positional_error as _positional_error",
            "from ._base import shortstr as _shortstr",
            "from ._base import skip_flag_words as _skip_flag_words",
            "from ._base import timestamp_to_int as _timestamp_to_int",
            "from .errors import AMQPError, EncodeError, UnknownMethod",
            "from .fields import decode_table as _decode_table",
            "from .fields import encode_table as _encode_table",
            "from .frames import _content_frames",
            "",
        ]
        out.extend(_wrapped(0, "__all__ = [", [f'"{e}"' for e in exports], "]"))
        out += [
            "",
            f"VERSION = {spec.version!r}",
            f'NAME = "{spec.name}"',
            f"PORT = {spec.port}",
            f'PROTOCOL_HEADER = b"AMQP{header_bytes}"',
            "",
        ]
        for c in plain:
            out.append(f"{snake(c.name).upper()} = {c.value}")
        out.append("")
        out.append("# Reply codes; the exception class for each is in ERRORS.")
        for c in errors:
            out.append(f"{snake(c.name).upper()} = {c.value}  # {c.error_class} error")
        out.append("")
        soft = [snake(c.name).upper() for c in errors if c.error_class == "soft"]
        hard = [snake(c.name).upper() for c in errors if c.error_class == "hard"]
        out.extend(_wrapped(0, "SOFT_ERRORS = frozenset({", soft, "})"))
        out.extend(_wrapped(0, "HARD_ERRORS = frozenset({", hard, "})"))
        out.append("ERRORS: dict[int, type[AMQPError]] = {")
        for c in errors:
            out.append(f"    {snake(c.name).upper()}: replies.{reply_class_name(c.name)},")
        out.append("}")
        out += [
            "",
            "# The fast paths below let struct/str.encode fail on bad values; only then does",
            "# _encode_error look at the fields to say which one did not fit.",
            "_ENCODE_FAILURES = (struct.error, TypeError, AttributeError, ValueError, "
            "OverflowError)",
            "# Strings decode as strict UTF-8, the fastest call; on a UnicodeDecodeError the",
            "# decoder starts again from a _Lenient copy of the buffer (surrogateescape).",
            "_DECODE_FAILURES = (struct.error, IndexError, ValueError)",
            "# Decoding fills the slots directly, skipping __init__ and its keyword parsing.",
            "_new = object.__new__",
            "# Bound once here: Python 3.11 compiles a method call on an imported name without",
            "# its method-call fast path, building a bound method on every call.",
            "_shortstrs_get = _SHORTSTRS.get",
            "",
        ]
        out.extend(self.structs.render())
        out.extend(classes)
        out += ["", "", "# Responses refer to classes defined later in the module, so come last."]
        for cls in spec.classes:
            for m in cls.methods:
                if m.responses:
                    names = [f"{camel(cls.name)}.{camel(r)}" for r in m.responses]
                    head = f"{camel(cls.name)}.{camel(m.name)}.RESPONSES = ("
                    out.extend(_wrapped(0, head, names, ")", ","))
        out += ["", "METHODS: dict[int, type[Method]] = {"]
        for cls in spec.classes:
            for m in cls.methods:
                q = f"{camel(cls.name)}.{camel(m.name)}"
                out.append(f"    {q}.INDEX: {q},")
        out.append("}")
        out.append("PROPERTIES: dict[int, type[ContentProperties]] = {")
        for cls in spec.classes:
            if cls.has_content:
                out.append(f"    {cls.index}: {camel(cls.name)}.Properties,")
        out.append("}")
        if has_basic:
            out.append("BasicProperties = Basic.Properties")
        out += [
            "",
            "",
            "def method_class(class_id: int, method_id: int) -> type[Method]:",
            '    """The method class for ids read off the wire; ``UnknownMethod`` (reply code',
            f'    540) when AMQP {spec.name} defines no such method."""',
            "    try:",
            "        return METHODS[class_id << 16 | method_id]",
            "    except KeyError:",
            "        raise UnknownMethod(",
            f'            f"AMQP {spec.name} has no method {{class_id}}/{{method_id}}"',
            "        ) from None",
            "",
            "",
            "def properties_class(class_id: int) -> type[ContentProperties]:",
            '    """The content-properties class for a content header\'s class id; '
            "``UnknownMethod``",
            f'    when AMQP {spec.name} has no content class with that id."""',
            "    try:",
            "        return PROPERTIES[class_id]",
            "    except KeyError:",
            "        raise UnknownMethod(",
            f'            f"AMQP {spec.name} has no content class {{class_id}}"',
            "        ) from None",
        ]
        return "\n".join(out) + "\n"


def _cached_shortstr(target: str, value: str) -> list[str]:
    """``target = `` the wire form of the shortstr ``value``, from the cache when it is there."""
    return [
        f"{target} = _shortstrs_get({value})",
        f"if {target} is None:",
        f"    {target} = _cached_shortstr({value})",
    ]


def _decode_signature(qual: str, flags: bool = False) -> list[str]:
    params = "cls, buf: bytes | bytearray, offset: int, end: int"
    if flags:
        params += ", flags: int | None = None"
    line = f"def decode({params}) -> {qual}:"
    if len(line) <= _W:
        return [line]
    return ["def decode(", f"    {params}", f") -> {qual}:"]


#: A method's decode, when a string turns out not to be UTF-8: the generated code decodes
#: strings strictly (the fastest call) and, should one fail, starts again from a copy of the
#: buffer whose strings keep their odd bytes as surrogates.
def _shortstr_decode(target: str) -> list[str]:
    """Decode the shortstr at ``buf[o]`` (length octet first) into ``target``, leaving ``o``
    after it.  ``n`` is its first byte; ``o`` moves before the slice is decoded, in two
    additions where the plainer ``n = o + 1 + buf[o]`` ... ``o = n`` takes three and an
    extra store, for every string of every message.  (A failed ``buf[o]`` leaves ``o``
    alone, for the error message.)"""
    return ["n = o + 1", "o = n + buf[o]", f"{target} = buf[n:o].decode()"]


_LENIENT_RETRY = [
    "    except UnicodeDecodeError:  # not UTF-8: see _base.Lenient",
    "        return cls.decode(_Lenient(buf[offset:end]), 0, end - offset)",
]


def _split_args(text: str) -> list[str]:
    """Split a call's argument text at top-level commas."""
    args, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    args.append(text[start:].strip())
    return [a for a in args if a]


def render_version(spec: Spec) -> str:
    """The source of ``leveret/wire/amqp<version>.py`` for ``spec``."""
    return _VersionRenderer(spec).render()


def render_replies(specs: list[Spec]) -> str:
    """The source of ``leveret/wire/replies.py``: the union of the specs' error constants."""
    codes: dict[int, tuple[Constant, list[str]]] = {}
    for spec in specs:
        for c in spec.constants:
            if not c.error_class:
                continue
            if c.value in codes:
                known, versions = codes[c.value]
                if (known.name, known.error_class) != (c.name, c.error_class):
                    raise SpecError(f"reply code {c.value} differs between versions")
                versions.append(spec.name)
            else:
                codes[c.value] = (c, [spec.name])
    out = [HEADER.rstrip("\n")]
    out.extend(
        _docstring(
            0,
            "One exception class per AMQP reply code of 0-8 or 0-9-1, generated by ``codegen`` "
            "from the specs' error constants.\n\n"
            "A channel.close or connection.close with reply code 404 becomes ``NotFound`` (a "
            "``SoftError``: only the channel closed); 320 becomes ``ConnectionForced`` (a "
            "``HardError``: the connection closed).  ``error_for`` picks the class for a code.",
        )
    )
    out += [
        "",
        "from __future__ import annotations",
        "",
        "from .errors import AMQPError, HardError, SoftError",
        "",
    ]
    names = [reply_class_name(codes[v][0].name) for v in sorted(codes)]
    exports = [f'"{n}"' for n in names + ["REPLY_ERRORS", "error_for"]]
    out.extend(_wrapped(0, "__all__ = [", exports, "]"))
    renamed = [
        f"{camel(codes[v][0].name)} -> {reply_class_name(codes[v][0].name)}"
        for v in sorted(codes)
        if reply_class_name(codes[v][0].name) != camel(codes[v][0].name)
    ]
    if renamed:
        note = (
            "Names that would shadow a Python builtin or a class of leveret.wire.errors get "
            "an AMQP prefix: " + ", ".join(renamed) + "."
        )
        out += [""] + ["# " + line for line in textwrap.wrap(note, WIDTH - 2)]
    for value in sorted(codes):
        c, versions = codes[value]
        base = "SoftError" if c.error_class == "soft" else "HardError"
        closes = "the channel" if c.error_class == "soft" else "the connection"
        doc = REPLY_DOCS.get(c.name, f"Reply code {c.name}.")
        doc += (
            f"\n\nReply code {value} ``{c.name}``, a {c.error_class} error: closes {closes}. "
            f"Defined in AMQP {' and '.join(versions)}."
        )
        out += ["", ""]
        out.append(f"class {reply_class_name(c.name)}({base}):")
        out.extend(_docstring(4, doc))
        out.append("")
        out.append(f"    reply_code = {value}")
    out += ["", "", "REPLY_ERRORS: dict[int, type[AMQPError]] = {"]
    for value in sorted(codes):
        out.append(f"    {value}: {reply_class_name(codes[value][0].name)},")
    out.append("}")
    out += [
        "",
        "",
        "def error_for(",
        '    reply_code: int, reply_text: str = "", class_id: int = 0, method_id: int = 0',
        ") -> AMQPError:",
        '    """The exception for a channel.close / connection.close with these arguments.',
        "",
        "    A code neither spec defines becomes a plain ``HardError`` when it is 500 or more",
        "    (the spec's hard errors are the 5xx codes, plus 320 and 402 which are known) and a",
        "    plain ``SoftError`` otherwise; either way ``reply_code`` keeps the code received.",
        '    """',
        "    cls = REPLY_ERRORS.get(reply_code)",
        "    if cls is None:",
        "        cls = HardError if reply_code >= 500 else SoftError",
        "    return cls(reply_text, reply_code, class_id, method_id)",
    ]
    return "\n".join(out) + "\n"
