"""The typed model of an AMQP spec, and the XML reader that builds it.

Reading happens in one place so that the renderers never look at XML: they get classes,
methods and fields whose types are already resolved through the domains, whose names are
already normalised to hyphens (0-8 writes ``frame method``, 0-9-1 ``frame-method``), and
whose quirks (0-9-1's ``reserved`` basic property) are already dealt with.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "WIRE_TYPES",
    "Constant",
    "Domain",
    "Field",
    "Method",
    "Class",
    "Spec",
    "SpecError",
    "load_spec",
    "merge_extensions",
]

#: Every field type the spec grammar allows; a domain must end in one of these.
WIRE_TYPES = frozenset(
    {"bit", "octet", "short", "long", "longlong", "shortstr", "longstr", "table", "timestamp"}
)


class SpecError(Exception):
    """The XML does not describe a spec this generator can render."""


@dataclass(frozen=True)
class Constant:
    name: str  # hyphenated, e.g. "not-found"
    value: int
    error_class: str | None  # "soft", "hard" or None for plain constants


@dataclass(frozen=True)
class Domain:
    name: str
    type: str  # a WIRE_TYPES member


@dataclass(frozen=True)
class Field:
    name: str  # hyphenated
    type: str  # a WIRE_TYPES member, domains already resolved
    reserved: bool = False


@dataclass
class Method:
    name: str
    index: int
    synchronous: bool
    content: bool
    responses: list[str]  # names of methods of the same class
    fields: list[Field]
    #: The chassis that must implement this method, i.e. the peer that *receives* it.
    chassis: list[str] = field(default_factory=list)


@dataclass
class Class:
    name: str
    index: int
    methods: list[Method]
    #: Content-header properties in flag order; empty for classes without content.
    properties: list[Field]

    @property
    def has_content(self) -> bool:
        return bool(self.properties) or any(m.content for m in self.methods)


@dataclass
class Spec:
    version: tuple[int, int, int]
    port: int
    constants: list[Constant]
    domains: dict[str, Domain]
    classes: list[Class]
    sources: list[str]  # spec file names this model was read from, for the header

    @property
    def name(self) -> str:
        """``"0-9-1"`` or ``"0-8"``: the dashed version without a zero revision."""
        major, minor, revision = self.version
        return f"{major}-{minor}-{revision}" if revision else f"{major}-{minor}"

    @property
    def protocol_header(self) -> bytes:
        major, minor, revision = self.version
        if (major, minor) == (0, 8):
            # 0-8 predates the "AMQP 0 major minor revision" layout: it sends class 1,
            # instance 1, then major 8 and minor 0.
            return b"AMQP\x01\x01\x08\x00"
        return bytes(b"AMQP\x00" + bytes((major, minor, revision)))


def _norm(name: str) -> str:
    return "-".join(name.split())


def _int_attr(elem: ET.Element, attr: str, where: str) -> int:
    raw = elem.get(attr)
    if raw is None:
        raise SpecError(f"{where}: missing {attr}=")
    try:
        return int(raw)
    except ValueError:
        raise SpecError(f"{where}: {attr}={raw!r} is not an integer") from None


def _flag(elem: ET.Element, attr: str) -> bool:
    return elem.get(attr, "0") == "1"


def _read_field(elem: ET.Element, domains: dict[str, Domain], where: str) -> Field:
    name = _norm(elem.get("name", ""))
    if not name:
        raise SpecError(f"{where}: a field has no name")
    domain = elem.get("domain")
    type_ = elem.get("type")
    if type_ is None:
        if domain is None:
            raise SpecError(f"{where}.{name}: neither type= nor domain=")
        try:
            type_ = domains[_norm(domain)].type
        except KeyError:
            raise SpecError(f"{where}.{name}: unknown domain {domain!r}") from None
    type_ = _norm(type_)
    if type_ not in WIRE_TYPES:
        raise SpecError(f"{where}.{name}: {type_!r} is not an AMQP field type")
    return Field(name, type_, _flag(elem, "reserved"))


def _read_method(elem: ET.Element, domains: dict[str, Domain], cls_name: str) -> Method:
    name = _norm(elem.get("name", ""))
    where = f"{cls_name}.{name}"
    return Method(
        name=name,
        index=_int_attr(elem, "index", where),
        synchronous=_flag(elem, "synchronous"),
        content=_flag(elem, "content"),
        responses=[_norm(r.get("name", "")) for r in elem.findall("response")],
        fields=[_read_field(f, domains, where) for f in elem.findall("field")],
        chassis=[_norm(c.get("name", "")) for c in elem.findall("chassis")],
    )


def _read_class(elem: ET.Element, domains: dict[str, Domain]) -> Class:
    name = _norm(elem.get("name", ""))
    properties = [_read_field(f, domains, name) for f in elem.findall("field")]
    if name == "basic":
        # 0-9-1 renamed 0-8's cluster-id property to "reserved" when it deprecated it, but the
        # flag bit is still there and brokers still pass it through; keep one name for it.
        properties = [
            Field("cluster-id", p.type, True) if p.name == "reserved" else p for p in properties
        ]
    return Class(
        name=name,
        index=_int_attr(elem, "index", name),
        methods=[_read_method(m, domains, name) for m in elem.findall("method")],
        properties=properties,
    )


def load_spec(path: Path) -> Spec:
    """Read one working-group spec XML file into a :class:`Spec`."""
    root = ET.parse(path).getroot()
    if root.tag != "amqp":
        raise SpecError(f"{path.name}: root element is <{root.tag}>, expected <amqp>")
    major = _int_attr(root, "major", path.name)
    minor = _int_attr(root, "minor", path.name)
    revision = int(root.get("revision", "0"))
    if major == 8 and minor == 0:
        # The 0-8 XML says major=8 minor=0; the protocol calls itself 0-8.
        version = (0, 8, 0)
    else:
        version = (major, minor, revision)

    constants = []
    for c in root.findall("constant"):
        cname = _norm(c.get("name", ""))
        kind = c.get("class")
        error_class = None
        if kind is not None:
            kind = _norm(kind)
            if kind not in ("soft-error", "hard-error"):
                raise SpecError(f"{path.name}: constant {cname} has class {kind!r}")
            error_class = kind.split("-")[0]
        constants.append(Constant(cname, _int_attr(c, "value", cname), error_class))

    domains: dict[str, Domain] = {}
    for d in root.findall("domain"):
        dname = _norm(d.get("name", ""))
        dtype = _norm(d.get("type", ""))
        if dtype not in WIRE_TYPES:
            raise SpecError(f"{path.name}: domain {dname} has type {dtype!r}")
        domains[dname] = Domain(dname, dtype)

    classes = [_read_class(c, domains) for c in root.findall("class")]
    spec = Spec(
        version=version,
        port=_int_attr(root, "port", path.name),
        constants=constants,
        domains=domains,
        classes=classes,
        sources=[path.name],
    )
    _validate(spec)
    return spec


def merge_extensions(spec: Spec, path: Path) -> None:
    """Add the methods of an ``<amqp-extension>`` file to the classes of ``spec`` in place."""
    root = ET.parse(path).getroot()
    if root.tag != "amqp-extension":
        raise SpecError(f"{path.name}: root element is <{root.tag}>, expected <amqp-extension>")
    wanted = root.get("for")
    if wanted != spec.name:
        raise SpecError(f"{path.name} extends {wanted}, not {spec.name}")
    by_name = {c.name: c for c in spec.classes}
    for elem in root.findall("class"):
        ext = _read_class(elem, spec.domains)
        target = by_name.get(ext.name)
        if target is None:
            spec.classes.append(ext)
            by_name[ext.name] = ext
            continue
        if target.index != ext.index:
            raise SpecError(f"{path.name}: class {ext.name} has index {target.index} already")
        if ext.properties:
            raise SpecError(f"{path.name}: cannot add properties to class {ext.name}")
        taken = {m.index: m.name for m in target.methods}
        for m, m_elem in zip(ext.methods, elem.findall("method")):
            if m_elem.get("replaces") == "1":
                # An erratum: the method exists and is redefined (same name and index).
                if taken.get(m.index) != m.name:
                    raise SpecError(
                        f"{path.name}: {ext.name}.{m.name} replaces nothing at index {m.index}"
                    )
                target.methods = [m if old.index == m.index else old for old in target.methods]
                continue
            if m.index in taken:
                raise SpecError(
                    f"{path.name}: {ext.name}.{m.name} reuses index {m.index} "
                    f"of {ext.name}.{taken[m.index]}"
                )
            target.methods.append(m)
    spec.sources.append(path.name)
    _validate(spec)


def _validate(spec: Spec) -> None:
    seen_classes: set[int] = set()
    for cls in spec.classes:
        if cls.index in seen_classes:
            raise SpecError(f"class index {cls.index} used twice")
        seen_classes.add(cls.index)
        names = {m.name for m in cls.methods}
        indexes: set[int] = set()
        for m in cls.methods:
            if m.index in indexes:
                raise SpecError(f"{cls.name}: method index {m.index} used twice")
            indexes.add(m.index)
            for r in m.responses:
                if r not in names:
                    raise SpecError(f"{cls.name}.{m.name}: response {r} is not a method")
        if len(cls.properties) > 15:
            # One flag word holds 15 properties; no class of 0-8 or 0-9-1 needs a second, and
            # the renderer only decodes continuation words that carry no flags.
            raise SpecError(f"{cls.name}: more than 15 properties is not supported")
