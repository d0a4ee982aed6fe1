"""Hypothesis strategies for AMQP values, derived from the generated modules' metadata.

``methods(cls)`` / ``properties(cls)`` build instances of any generated method or content
properties class from its ``FIELDS``/``FIELD_TYPES``; every value they produce survives an
encode/decode round trip unchanged (so no naive datetimes, no NaN, no lone surrogates that
would re-pair into a different string).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from leveret.wire import amqp0_8, amqp0_9_1
from leveret.wire._base import ContentProperties, Method

UTC = timezone.utc
VERSIONS = (amqp0_9_1, amqp0_8)

INT_MAX = {
    "octet": 2**8 - 1,
    "short": 2**16 - 1,
    "long": 2**32 - 1,
    "longlong": 2**64 - 1,
}


def _fits_shortstr(s: str) -> bool:
    return len(s.encode("utf-8", "surrogateescape")) <= 255


#: shortstr values: ordinary text up to 255 UTF-8 bytes, and arbitrary bytes decoded with
#: surrogateescape (what decode() gives for bytes that are not UTF-8).
shortstrs = st.one_of(
    st.text(max_size=100).filter(_fits_shortstr),
    st.binary(max_size=255).map(lambda b: b.decode("utf-8", "surrogateescape")),
)

#: Whole-second aware UTC datetimes: what a timestamp decodes to.
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0, tzinfo=UTC))

#: Values that field tables encode to the letters t I l d D T S x V and decode back equal
#: (floats finite: NaN and infinities are refused, see test_fields).
table_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(places=2, min_value=-1_000_000, max_value=1_000_000),
    timestamps,
    st.text(max_size=30),
    st.binary(max_size=30),
    st.none(),
)
table_keys = st.text(max_size=20).filter(_fits_shortstr)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # F (nested table) and A (array)
    return st.one_of(
        st.dictionaries(table_keys, children, max_size=4), st.lists(children, max_size=4)
    )


table_values = st.recursive(table_scalars, _containers, max_leaves=12)
tables = st.dictionaries(table_keys, table_values, max_size=6)

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, INT_MAX["octet"]),
    "short": st.integers(0, INT_MAX["short"]),
    "long": st.integers(0, INT_MAX["long"]),
    "longlong": st.integers(0, INT_MAX["longlong"]),
    "shortstr": shortstrs,
    "longstr": st.binary(max_size=300),
    "table": tables,
    "timestamp": timestamps,
}

#: A fixed value per type, non-zero and non-empty, for tests that need one instance.
SAMPLE_VALUES: dict[str, Any] = {
    "bit": True,
    "octet": 0xAB,
    "short": 0xABCD,
    "long": 0xABCDEF01,
    "longlong": 0x0123456789ABCDEF,
    "shortstr": "sh\u00f6rt",
    "longstr": b"\x00long\xff",
    "table": {"k": 1, "nested": {"a": [1, "x", None]}, "d": Decimal("1.5")},
    "timestamp": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
}


def all_methods() -> list[type[Method]]:
    return [cls for mod in VERSIONS for cls in mod.METHODS.values()]


def all_properties() -> list[type[ContentProperties]]:
    return [cls for mod in VERSIONS for cls in mod.PROPERTIES.values()]


def methods(cls: type[Method]) -> st.SearchStrategy[Method]:
    """Instances of ``cls`` with every field drawn from its wire type."""
    fields = {n: FIELD_VALUES[t] for n, t in zip(cls.FIELDS, cls.FIELD_TYPES)}
    return st.builds(cls, **fields)


def properties(cls: type[ContentProperties]) -> st.SearchStrategy[ContentProperties]:
    """Instances of ``cls`` with any subset of its properties present."""
    fields = {n: st.none() | FIELD_VALUES[t] for n, t in zip(cls.FIELDS, cls.FIELD_TYPES)}
    return st.builds(cls, **fields)


def head_properties(
    cls: type[ContentProperties], head: int = 4
) -> st.SearchStrategy[ContentProperties]:
    """Instances of ``cls`` with any subset of its first ``head`` properties present and
    none of the rest: the sparse shape generated decoders read on a path of their own."""
    fields = {
        n: st.none() | FIELD_VALUES[t] for n, t in zip(cls.FIELDS[:head], cls.FIELD_TYPES[:head])
    }
    return st.builds(cls, **fields)


def sample(cls: type[Method] | type[ContentProperties]) -> Any:
    """One instance of ``cls`` with every field set to its type's sample value."""
    return cls(**{n: SAMPLE_VALUES[t] for n, t in zip(cls.FIELDS, cls.FIELD_TYPES)})
