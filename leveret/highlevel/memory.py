"""The in-memory transport (``memory://``): an AMQP broker inside this process.

:class:`MemoryConnection` and :class:`MemoryChannel` have the blocking client's API
(:class:`leveret.client.Connection` / :class:`leveret.client.Channel`: the same method names,
signatures, return values and exceptions), so code written against the client runs on them
unchanged.  Behind them a :class:`MemoryBroker` keeps exchanges, queues, bindings and
consumers per virtual host and applies RabbitMQ's rules (checked against RabbitMQ 3.10):

* exchanges ``direct``, ``fanout``, ``topic``, ``headers``; the default exchange and the
  ``amq.*`` exchanges exist from the start; exchange-to-exchange bindings (a message visits
  each exchange once, so binding loops are harmless); ``alternate-exchange``; ``internal``
  exchanges; sender-selected distribution (``CC``/``BCC`` headers);
* queues: server-named (``amq.gen-...``), exclusive (owned by one connection, deleted with
  it), auto-delete (deleted when their last consumer goes), ``x-message-ttl`` and per-message
  ``expiration``, ``x-expires``, ``x-max-length``/``x-max-length-bytes`` with
  ``x-overflow``, ``x-max-priority``, dead-lettering (``x-dead-letter-exchange``/
  ``-routing-key``, with RabbitMQ's ``x-death`` header), ``x-single-active-consumer``;
  each queue type's arguments checked as RabbitMQ checks them (values, then arguments of
  another type: ``x-delivery-limit`` on a classic queue is refused, as there);
* quorum queues (``x-queue-type: quorum``): named, durable, neither exclusive nor
  auto-delete, without the arguments they do not take (``x-max-priority``,
  ``x-queue-mode``...), with RabbitMQ's texts and check order; a delivery carries
  ``x-delivery-count`` (``basic.get``: always; a consumer: from the first redelivery);
  ``x-delivery-limit`` dead-letters (reason ``delivery_limit``) or drops a message that
  came back more times; a message rejected, nacked or recovered goes back to the tail, one
  whose channel closed ahead of the others; ``reject-publish`` takes the message that goes
  over the limit, then refuses until the queue is down to 80 % (``reject-publish-dlx``
  is ``drop-head``); no channel-wide prefetch (``basic.consume`` after a global
  ``basic.qos`` is a connection error), consumers without a prefetch get at most 2000
  unacknowledged messages, the ``exclusive`` consume flag is ignored; ``basic.get`` with
  ``x-single-active-consumer`` and ``queue.delete`` with ``if_unused``/``if_empty`` are
  refused.  ``x-dead-letter-strategy``, ``x-max-in-memory-*``, ``x-queue-leader-locator``
  and ``x-quorum-initial-group-size`` are checked and accepted, and change nothing;
* stream queues are not implemented: a declaration RabbitMQ would accept (after its checks
  and errors) is refused with ``AMQPNotImplemented`` (540, a connection error) saying
  "memory:// does not implement stream queues", rather than made a classic queue;
* nor is direct reply-to: declaring or consuming ``amq.rabbitmq.reply-to``, publishing
  with it as ``reply_to`` or to one of its ``amq.rabbitmq.reply-to.*`` names is refused
  the same way ("memory:// does not implement direct reply-to");
* consumers: round-robin among the consumers of a queue (consumer priorities via
  ``x-priority``), ``basic.qos`` prefetch per consumer (``global=False``) and per channel
  (``global=True``), acks/nacks/rejects, requeue to the head with ``redelivered`` set,
  unacknowledged messages requeued when their channel closes, server-sent cancels;
* publisher confirms (every publish is confirmed at once, nacked only when a queue's
  ``x-overflow`` rejects it), mandatory returns, transactions.

Errors are RabbitMQ's, with its reply codes and texts: a channel error closes that channel
only (``NotFound``, ``PreconditionFailed``, ``ResourceLocked``, ``AccessRefused``); a
connection error (``CommandInvalid``, ``NotAllowed``, ``AMQPNotImplemented``, and
``InternalError`` where RabbitMQ 3.10's channel crashes: a server-named queue of an unknown
``x-queue-type``, an ``x-max-age`` without digits) closes the connection.  As on the wire,
an asynchronous method (``basic_publish``, ``basic_ack``...) that fails returns normally
and closes the channel; the next call on it raises the error.

Threads: one lock guards a broker and all its connections; each connection waits on its own
condition of that lock.  Deliveries are handed to the consumer's connection at once (as
RabbitMQ pushes them) but their callbacks run only inside
:meth:`MemoryConnection.drain_events`, in the thread that calls it, never inside another
call.  Message TTLs and ``x-expires`` are applied lazily: by every call on the virtual host
and by ``drain_events``, which wakes up when the next message is due to expire.

Processes: a child made by ``os.fork()`` has a copy of every broker as it stood at the fork
(what it does there stays in the child), with new locks: one held by a thread of the parent
at the fork would never be released in the child.

Messages are stored as the encoded content properties and the body bytes, so a message
cannot change after it was published, and every delivery decodes a fresh
:class:`leveret.client.Message` whose properties have exactly the types a real broker's
delivery has.
"""

from __future__ import annotations

import base64
import logging
import os
import platform
import re
import threading
import weakref
from collections import deque
from datetime import datetime, timezone
from decimal import Decimal
from time import monotonic
from typing import Any, Callable, Iterable, Literal, TypeVar, overload
from urllib.parse import unquote, urlsplit

from ..client import (
    AccessRefused,
    AMQPNotImplemented,
    ChannelClosedError,
    CommandInvalid,
    ConnectionClosedError,
    ConnectionLost,
    ConnectionParameters,
    InternalError,
    Message,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    PublishNacked,
    QueueDeclareOk,
    ResourceLocked,
    parse_url,
)
from ..client._shared import _MAX_WAIT, deadline_after
from ..wire import amqp0_9_1 as _spec
from ..wire._base import _field_problem
from ..wire.errors import AMQPError, EncodeError, LocalProtocolError, again
from ..wire.fields import decode_table, encode_table

__all__ = ["MemoryBroker", "MemoryConnection", "MemoryChannel", "default_broker"]

log = logging.getLogger("leveret.memory")

_T = TypeVar("_T")
_Props = _spec.Basic.Properties
_EMPTY_PROPS = _Props().encode()
_INF = float("inf")
_UTC = timezone.utc

#: (class id, method id) of each method, for the errors it causes (``caused by 50/10``).
_IDS: dict[str, tuple[int, int]] = {
    cls.NAME: (cls.CLASS_ID, cls.METHOD_ID) for cls in _spec.METHODS.values()
}
_CODE_NAMES = {
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    503: "COMMAND_INVALID",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
    541: "INTERNAL_ERROR",
}

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
#: The exchanges every virtual host starts with: name -> (type, internal).
PREDECLARED = {
    "amq.direct": ("direct", False),
    "amq.fanout": ("fanout", False),
    "amq.topic": ("topic", False),
    "amq.headers": ("headers", False),
    "amq.match": ("headers", False),
    "amq.rabbitmq.trace": ("topic", True),
}

#: What ``server_properties`` says (RabbitMQ's keys; no direct reply-to here).
SERVER_CAPABILITIES: dict[str, bool] = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}

#: The queue arguments of each queue type (RabbitMQ's ``queue_arguments`` capability, in
#: its order): a new queue may have only these of :data:`_KNOWN_QUEUE_ARGS`, and a queue
#: declared again is compared on these, in this order (others are ignored).
_QUEUE_TYPE_ARGS: dict[str, tuple[str, ...]] = {
    "classic": (
        "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
        "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
        "x-queue-version", "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
    ),
    "quorum": (
        "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
        "x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
        "x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
        "x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl",
        "x-queue-leader-locator",
    ),
    "stream": (
        "x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size", "x-queue-leader-locator",
    ),
}
_KNOWN_QUEUE_ARGS = frozenset(k for keys in _QUEUE_TYPE_ARGS.values() for k in keys)
#: The consumer arguments of each queue type, likewise (``x-credit`` is accepted, not used).
_CONSUMER_TYPE_ARGS: dict[str, tuple[str, ...]] = {
    "classic": ("x-cancel-on-ha-failover", "x-priority", "x-credit"),
    "quorum": ("x-priority", "x-credit"),
    "stream": ("x-stream-offset", "x-credit"),
}
_KNOWN_CONSUMER_ARGS = frozenset(k for keys in _CONSUMER_TYPE_ARGS.values() for k in keys)
#: RabbitMQ's module for each queue type, as its error texts name them.
_QUEUE_MODULES = {"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue",
                  "stream": "rabbit_stream_queue"}
#: A quorum queue consumer without a prefetch count gets at most this many unacknowledged
#: deliveries (RabbitMQ's default credit).
_QUORUM_PREFETCH = 2000
# Exchange arguments RabbitMQ compares on redeclaration.
_EXCHANGE_EQUIVALENCE_ARGS = ("alternate-exchange",)
_OVERFLOW = ("drop-head", "reject-publish", "reject-publish-dlx")
_DLX_STRATEGIES = ("at-most-once", "at-least-once")
_QUEUE_MODES = ("default", "lazy")
_LEADER_LOCATORS = ("client-local", "balanced", "random", "least-leaders")
_MAX_AGE = re.compile(r"([0-9]*)(.*)")  # as Erlang's re: "." stops at a newline
_MAX_AGE_UNITS = ("Y", "M", "D", "h", "m", "s")
_ERLANG_INTEGER = re.compile(r"[+-]?[0-9]+")
_X_MATCH = ("all", "any", "all-with-x", "any-with-x")

_DELIVER = 0
_CANCEL = 1
_CLOSED = 2  # a consumer's channel closed by an error no call raised (an ack's, a publish's)
_GONE = 3  # after basic_cancel of a no_ack consumer: its deliveries before this are run


_REPLY_TO = "amq.rabbitmq.reply-to"


def _direct_reply_to(name: str | None) -> bool:
    return name is not None and (name == _REPLY_TO or name.startswith(_REPLY_TO + "."))


def _no_direct_reply_to(method: str) -> AMQPError:
    """What memory:// answers where RabbitMQ would do direct reply-to: a plain refusal
    (540, a connection error), not a misleading NotFound or AccessRefused."""
    return _err(AMQPNotImplemented,
                f"memory:// does not implement direct reply-to ({_REPLY_TO})", method)


def _token() -> str:
    """22 URL-safe characters, like RabbitMQ's generated names."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


# --------------------------------------------------------------------------- values


def _type_name(value: Any) -> str:
    """The AMQP field type RabbitMQ would name for a value leveret encodes."""
    if value is None:
        return "void"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(1 << 31) <= value < (1 << 31) else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equality as RabbitMQ compares declared arguments: integers of any width with
    integers, floats with floats (10 is not 10.0), strings and binaries by their bytes,
    booleans only with booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogateescape")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogateescape")
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _term(value: Any) -> Any:
    """A header value as RabbitMQ's headers exchange compares it (Erlang ``==``): numbers
    by value (a timestamp is its integer seconds), strings and binaries by their bytes,
    a decimal by its scale and digits (1.5 is not 1.50), booleans only with booleans; a
    nested table or array is a list of typed fields, compared field by field, in order and
    with their types (so ``{"a": 1}`` is not ``{"a": 1.0}``)."""
    if value is None:
        return ("void",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return int(value.timestamp())
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        return ("decimal", -int(exponent), unscaled)
    if isinstance(value, dict):
        return ("table", tuple((_text(k).encode("utf-8", "surrogateescape"), _type_name(v), _term(v))
                               for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple((_type_name(v), _term(v)) for v in value))
    return (type(value).__name__, value)


def _freeze(value: Any) -> Any:
    """A hashable form of a decoded field value (binding identity includes arguments)."""
    if isinstance(value, dict):
        return ("F", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("A", tuple(_freeze(v) for v in value))
    return (type(value).__name__, value)


def _table(arguments: dict[str, Any] | None) -> dict[str, Any]:
    """``arguments`` as the broker receives them: encoded and decoded (so tuples become
    lists, naive datetimes UTC...).  Raises ``EncodeError`` like the client would."""
    if not arguments:
        return {}
    raw = encode_table(arguments)
    return decode_table(raw, 0, len(raw))[0]


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _topic_words(key: str) -> tuple[str, ...]:
    # RabbitMQ splits on every dot and treats the empty key as no words at all.
    return tuple(key.split(".")) if key else ()


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding ``pattern`` matches ``routing_key`` (``*`` is exactly one
    word, ``#`` zero or more, words are separated by dots)."""
    return _topic_match(_topic_words(pattern), _topic_words(routing_key))


def _topic_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # A small NFA over pattern positions: no recursion, linear in len(words) * len(pattern).
    n = len(pattern)

    def closure(states: set[int]) -> set[int]:
        out = set()
        for i in states:
            out.add(i)
            while i < n and pattern[i] == "#":
                i += 1
                out.add(i)
        return out

    states = closure({0})
    for word in words:
        nxt: set[int] = set()
        for i in states:
            if i < n:
                p = pattern[i]
                if p == "#":
                    nxt.add(i)
                elif p == "*" or p == word:
                    nxt.add(i + 1)
        if not nxt:
            return False
        states = closure(nxt)
    return n in states


def headers_match(binding: dict[str, Any], headers: dict[str, Any] | None) -> bool:
    """Whether a headers-exchange binding (its arguments) matches message ``headers``.

    ``x-match`` is ``all`` (default), ``any``, ``all-with-x`` or ``any-with-x``; binding keys
    starting with ``x-`` take part only in the ``-with-x`` modes; a binding value of
    ``None`` (void) matches any value of that header.
    """
    mode = _text(binding.get("x-match", "all"))
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    headers = headers or {}
    for key, value in binding.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        ok = key in headers and (value is None or _term(value) == _term(headers[key]))
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all


def _now_stamp() -> datetime:
    return datetime.now(_UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- broker state


class _Stored:
    """One published message as the broker keeps it (shared by the queues it went to)."""

    __slots__ = ("exchange", "routing_key", "routing_keys", "props", "headers", "body",
                 "size", "priority", "ttl")

    def __init__(self, exchange: str, routing_keys: list[str], props: bytes,
                 headers: dict[str, Any] | None, body: bytes, priority: int,
                 ttl: float | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_keys[0]
        self.routing_keys = routing_keys
        self.props = props
        self.headers = headers
        self.body = body
        self.size = len(body)
        self.priority = priority
        self.ttl = ttl


class _Entry:
    """A message in one queue."""

    __slots__ = ("msg", "seq", "expires_at", "redelivered", "delivery_count")

    def __init__(self, msg: _Stored, seq: int, expires_at: float | None) -> None:
        self.msg = msg
        self.seq = seq
        self.expires_at = expires_at
        self.redelivered = False
        self.delivery_count = 0  # times it came back to the queue (quorum queues count them)


class _Ready:
    """The ready messages of a queue: one FIFO, or one per priority level; and, for a
    quorum queue, the messages that came back, in the order they came back, ahead of them
    (:meth:`give_back`)."""

    __slots__ = ("levels", "top", "count", "bytes", "returned")

    def __init__(self, max_priority: int) -> None:
        self.levels: list[deque[_Entry]] = [deque() for _ in range(max_priority + 1)]
        self.top = max_priority
        self.count = 0
        self.bytes = 0
        self.returned: deque[_Entry] = deque()

    def __len__(self) -> int:
        return self.count

    def _level(self, entry: _Entry) -> deque[_Entry]:
        return self.levels[min(entry.msg.priority, self.top)]

    def append(self, entry: _Entry) -> None:
        self._level(entry).append(entry)
        self.count += 1
        self.bytes += entry.msg.size

    def restore(self, entries: list[_Entry]) -> None:
        """Put requeued messages back where they were: each level stays in publish order
        (RabbitMQ merges requeued messages by their position in the queue, so a message
        requeued later but published earlier still comes first)."""
        for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
            level = self._level(entry)
            if not level or entry.seq < level[0].seq:
                level.appendleft(entry)
            else:
                i = 0
                for i, other in enumerate(level):  # noqa: B007
                    if other.seq > entry.seq:
                        break
                else:
                    i = len(level)
                level.insert(i, entry)
            self.count += 1
            self.bytes += entry.msg.size

    def give_back(self, entries: list[_Entry]) -> None:
        """Put messages back as a quorum queue does: after those that came back before
        them, ahead of the others, in the order given (not in publish order)."""
        for entry in entries:
            self.returned.append(entry)
            self.count += 1
            self.bytes += entry.msg.size

    def popleft(self) -> _Entry | None:
        if self.returned:
            entry = self.returned.popleft()
            self.count -= 1
            self.bytes -= entry.msg.size
            return entry
        for level in reversed(self.levels):
            if level:
                entry = level.popleft()
                self.count -= 1
                self.bytes -= entry.msg.size
                return entry
        return None

    def expired(self, now: float) -> list[_Entry]:
        """Take the expired messages at the head of each level (RabbitMQ expires messages
        when they reach the head, so one that expires behind a longer-lived one waits)."""
        out: list[_Entry] = []
        for level in (self.returned, *self.levels):
            while level:
                due = level[0].expires_at
                if due is None or due >= now:
                    break
                entry = level.popleft()
                self.count -= 1
                self.bytes -= entry.msg.size
                out.append(entry)
        return out

    def next_expiry(self) -> float:
        due = _INF
        for level in (self.returned, *self.levels):
            if level and level[0].expires_at is not None and level[0].expires_at < due:
                due = level[0].expires_at
        return due

    def clear(self) -> int:
        n = self.count
        self.returned.clear()
        for level in self.levels:
            level.clear()
        self.count = 0
        self.bytes = 0
        return n


class _Binding:
    __slots__ = ("source", "dest", "routing_key", "arguments", "key", "words")

    def __init__(self, source: _Exchange, dest: _Queue | _Exchange, routing_key: str,
                 arguments: dict[str, Any]) -> None:
        self.source = source
        self.dest = dest
        self.routing_key = routing_key
        self.arguments = arguments
        self.key = (isinstance(dest, _Queue), dest.name, routing_key, _freeze(arguments))
        self.words = _topic_words(routing_key)


class _Exchange:
    __slots__ = ("name", "type", "durable", "auto_delete", "internal", "arguments",
                 "alternate", "bindings", "by_key", "deleted", "is_default")

    def __init__(self, name: str, type: str, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict[str, Any] | None = None) -> None:
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        ae = self.arguments.get("alternate-exchange")
        self.alternate = _text(ae) if isinstance(ae, (str, bytes)) else None
        self.bindings: dict[tuple[Any, ...], _Binding] = {}
        self.by_key: dict[str, dict[tuple[Any, ...], _Binding]] = {}  # direct exchanges
        self.deleted = False
        self.is_default = name == ""

    def add(self, binding: _Binding) -> None:
        if binding.key in self.bindings:
            return
        self.bindings[binding.key] = binding
        self.by_key.setdefault(binding.routing_key, {})[binding.key] = binding

    def remove(self, key: tuple[Any, ...]) -> _Binding | None:
        binding = self.bindings.pop(key, None)
        if binding is not None:
            same = self.by_key.get(binding.routing_key)
            if same is not None:
                same.pop(key, None)
                if not same:
                    del self.by_key[binding.routing_key]
        return binding

    def match(self, keys: list[str], headers: dict[str, Any] | None,
              queues: dict[str, _Queue]) -> list[_Queue | _Exchange]:
        """The destinations of a message with these routing keys and headers."""
        if self.is_default:
            return [queues[k] for k in keys if k in queues]
        kind = self.type
        if kind == "direct":
            if len(keys) == 1:
                return [b.dest for b in self.by_key.get(keys[0], {}).values()]
            return [b.dest for k in keys for b in self.by_key.get(k, {}).values()]
        if kind == "fanout":
            return [b.dest for b in self.bindings.values()]
        if kind == "topic":
            word_lists = [_topic_words(k) for k in keys]
            return [b.dest for b in self.bindings.values()
                    if any(_topic_match(b.words, w) for w in word_lists)]
        return [b.dest for b in self.bindings.values() if headers_match(b.arguments, headers)]


class _Consumer:
    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "prefetch", "unacked",
                 "priority")

    def __init__(self, tag: str, channel: MemoryChannel, queue: _Queue, no_ack: bool,
                 exclusive: bool, prefetch: int, priority: int) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.priority = priority

    def has_room(self) -> bool:
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        ch = self.channel
        if self.queue.kind != "classic":  # RabbitMQ's channel-wide limit is for classic queues
            return True
        return not (ch._global_prefetch and len(ch._unacked) >= ch._global_prefetch)


class _Unacked:
    __slots__ = ("tag", "queue", "entry", "consumer")

    def __init__(self, tag: int, queue: _Queue, entry: _Entry, consumer: _Consumer | None) -> None:
        self.tag = tag
        self.queue = queue
        self.entry = entry
        self.consumer = consumer


class _Queue:
    __slots__ = ("name", "kind", "durable", "owner", "auto_delete", "arguments", "ready",
                 "consumers", "rr", "ever_consumed", "last_used", "deleted", "seq", "ttl",
                 "expires", "max_length", "max_bytes", "overflow", "dlx", "dlrk",
                 "single_active", "delivery_limit", "blocked")

    def __init__(self, name: str, durable: bool, owner: MemoryConnection | None,
                 auto_delete: bool, arguments: dict[str, Any], now: float,
                 kind: str = "classic") -> None:
        self.name = name
        self.kind = kind
        self.durable = durable
        self.owner = owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        a = arguments
        self.ready = _Ready(int(a.get("x-max-priority", 0) or 0))
        self.consumers: list[_Consumer] = []
        self.rr = 0
        self.ever_consumed = False
        self.last_used = now
        self.deleted = False
        self.seq = 0
        ttl = a.get("x-message-ttl")
        self.ttl: float | None = None if ttl is None else ttl / 1000.0
        expires = a.get("x-expires")
        self.expires: float | None = None if expires is None else expires / 1000.0
        self.max_length: int | None = a.get("x-max-length")
        self.max_bytes: int | None = a.get("x-max-length-bytes")
        self.overflow = _text(a.get("x-overflow", "drop-head"))
        # Quorum queues: a message that came back more than x-delivery-limit times dies
        # (compared as Erlang does: a limit that is not a number is never exceeded);
        # reject-publish-dlx is drop-head there; reject-publish takes the message that
        # goes past the limit, then refuses publishes until the queue is down to 80 %.
        limit = a.get("x-delivery-limit")
        self.delivery_limit: float | None = None
        if kind == "quorum":
            if isinstance(limit, (int, float)) and not isinstance(limit, bool):
                self.delivery_limit = limit
            if self.overflow == "reject-publish-dlx":
                self.overflow = "drop-head"
        self.blocked = False
        dlx = a.get("x-dead-letter-exchange")
        self.dlx = None if dlx is None else _text(dlx)
        dlrk = a.get("x-dead-letter-routing-key")
        self.dlrk = None if dlrk is None else _text(dlrk)
        self.single_active = a.get("x-single-active-consumer") is True

    def full(self, extra: int) -> bool:
        """Whether one more message of ``extra`` bytes would exceed a length limit."""
        if self.max_length is not None and len(self.ready) >= self.max_length:
            return True
        return self.max_bytes is not None and self.ready.bytes + extra > self.max_bytes

    def over(self) -> bool:
        if self.max_length is not None and len(self.ready) > self.max_length:
            return True
        return self.max_bytes is not None and self.ready.bytes > self.max_bytes

    def below_soft_limit(self) -> bool:
        """Whether a blocked quorum queue takes publishes again (80 % of its limits)."""
        if self.max_length is not None and len(self.ready) > int(self.max_length * 0.8):
            return False
        return self.max_bytes is None or self.ready.bytes <= int(self.max_bytes * 0.8)

    def pick(self) -> _Consumer | None:
        """The consumer the next message goes to: round-robin among those with room, the
        highest ``x-priority`` first; only the first one with single-active-consumer."""
        consumers = self.consumers
        if self.single_active:
            first = consumers[0] if consumers else None
            return first if first is not None and first.has_room() else None
        n = len(consumers)
        best: _Consumer | None = None
        best_i = 0
        start = self.rr
        for i in range(n):
            j = (start + i) % n
            c = consumers[j]
            if (best is None or c.priority > best.priority) and c.has_room():
                best, best_i = c, j
        if best is not None:
            self.rr = (best_i + 1) % n
        return best


def _shortstrs(method: str, **fields: str) -> None:
    """Raise the client's :class:`EncodeError` for a method argument that does not fit in
    a shortstr (the client fails there, before anything goes on the wire)."""
    for name, value in fields.items():
        if type(value) is str and len(value) <= 85:  # 255 bytes even if all 3-byte UTF-8
            continue
        problem = _field_problem("shortstr", value)
        if problem is not None:
            raise EncodeError(f"{method}: {name} (shortstr): {problem}")


def _err(cls: type[AMQPError], text: str, method: str) -> AMQPError:
    class_id, method_id = _IDS.get(method, (0, 0))
    return cls(
        f"{_CODE_NAMES.get(cls.reply_code, '')} - {text}", cls.reply_code, class_id, method_id,
        method_name=method if class_id else None,
    )


class _VHost:
    """One virtual host's exchanges, queues and the rules between them.  Every method is
    called with the broker's lock held."""

    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.exchanges: dict[str, _Exchange] = {"": _Exchange("", "direct")}
        for xname, (kind, internal) in PREDECLARED.items():
            self.exchanges[xname] = _Exchange(xname, kind, internal=internal)
        self.queues: dict[str, _Queue] = {}
        self.connections: set[MemoryConnection] = set()
        # Queues whose messages or selves can expire, and a lower bound of the next time
        # anything in them does (so that most calls check one float).
        self.timed: set[_Queue] = set()
        self.deadline = _INF

    def where(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.name}'"

    # ------------------------------------------------------------------ time

    def note_deadline(self, due: float) -> None:
        if due < self.deadline:
            self.deadline = due
            for conn in self.connections:  # a drain_events may sleep past it
                conn._cond.notify_all()

    def tick(self, now: float) -> None:
        """Expire messages and unused ``x-expires`` queues that are due."""
        if now < self.deadline:
            return
        self.deadline = _INF
        for q in list(self.timed):
            if q.deleted:
                self.timed.discard(q)
                continue
            for entry in q.ready.expired(now):
                self.dead_letter(q, entry, "expired", now)
            if q.expires is not None and not q.consumers:
                if now - q.last_used >= q.expires:
                    self.delete_queue(q)
                    continue
                self.deadline = min(self.deadline, q.last_used + q.expires)
            self.deadline = min(self.deadline, q.ready.next_expiry())

    # ------------------------------------------------------------------ lookups

    def exchange(self, name: str, method: str) -> _Exchange:
        x = self.exchanges.get(name)
        if x is None:
            raise _err(NotFound, f"no {self.where('exchange', name)}", method)
        return x

    def queue(self, ch: MemoryChannel, name: str, method: str, check_owner: bool = True) -> _Queue:
        if name == "":
            name = ch._last_queue
            if not name:
                raise _err(NotFound, "no previously declared queue", method)
        if _direct_reply_to(name):
            raise _no_direct_reply_to(method)
        q = self.queues.get(name)
        if q is None:
            raise _err(NotFound, f"no {self.where('queue', name)}", method)
        if check_owner and q.owner is not None and q.owner is not ch.connection:
            raise self.locked(q, method)
        return q

    def locked(self, q: _Queue, method: str) -> AMQPError:
        return _err(
            ResourceLocked,
            f"cannot obtain exclusive access to locked {self.where('queue', q.name)}. It could "
            "be originally declared on another connection or the exclusive property value "
            "does not match that of the original declaration.",
            method,
        )

    def inequivalent(self, kind: str, name: str, field: str, received: Any, current: Any,
                     method: str) -> AMQPError:
        return _err(
            PreconditionFailed,
            f"inequivalent arg '{field}' for {self.where(kind, name)}: "
            f"received '{_shown(received)}' but current is '{_shown(current)}'",
            method,
        )

    def check_args(self, kind: str, name: str, keys: Iterable[str], received: dict[str, Any],
                   current: dict[str, Any], method: str) -> None:
        def describe(args: dict[str, Any], key: str) -> str:
            if key not in args:
                return "none"
            v = args[key]
            return f"the value '{_shown(v)}' of type '{_type_name(v)}'"

        for key in keys:
            a, b = received.get(key), current.get(key)
            if key == "x-queue-type":  # absent means classic
                a = a if a is not None else "classic"
                b = b if b is not None else "classic"
                if _same(a, b):
                    continue
            elif key not in received and key not in current:
                continue
            elif key in received and key in current and _same(a, b):
                continue
            if key in received and key in current:  # RabbitMQ names the values only
                shown = f"'{_shown(a)}' but current is '{_shown(b)}'"
            else:
                shown = f"{describe(received, key)} but current is {describe(current, key)}"
            raise _err(
                PreconditionFailed,
                f"inequivalent arg '{key}' for {self.where(kind, name)}: received {shown}",
                method,
            )

    # ------------------------------------------------------------------ exchanges

    def exchange_declare(self, name: str, type: str, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, arguments: dict[str, Any]) -> None:
        method = "exchange.declare"
        if passive:
            if name == "":
                raise _err(AccessRefused, "operation not permitted on the default exchange", method)
            self.exchange(name, method)
            return
        if type not in EXCHANGE_TYPES:
            raise _err(CommandInvalid, f"unknown exchange type '{type}'", method)  # RabbitMQ 3.10's words
        if name == "":
            raise _err(AccessRefused, "operation not permitted on the default exchange", method)
        x = self.exchanges.get(name)
        if x is None:
            if name.startswith("amq."):
                raise _err(AccessRefused, f"exchange name '{name}' contains reserved prefix 'amq.*'", method)
            self.exchanges[name] = _Exchange(name, type, durable, auto_delete, internal, arguments)
            return
        for field, received, current in (
            ("type", type, x.type),
            ("durable", durable, x.durable),
            ("auto_delete", auto_delete, x.auto_delete),
            ("internal", internal, x.internal),
        ):
            if received != current:
                raise self.inequivalent("exchange", name, field, received, current, method)
        self.check_args("exchange", name, _EXCHANGE_EQUIVALENCE_ARGS, arguments, x.arguments, method)

    def exchange_delete(self, name: str, if_unused: bool) -> None:
        method = "exchange.delete"
        if name == "":
            raise _err(AccessRefused, "operation not permitted on the default exchange", method)
        if name.startswith("amq."):
            raise _err(AccessRefused, f"deletion of system {self.where('exchange', name)} not allowed", method)
        x = self.exchanges.get(name)
        if x is None:
            return
        if if_unused and x.bindings:
            raise _err(PreconditionFailed, f"{self.where('exchange', name)} in use", method)
        self.delete_exchange(x)

    def delete_exchange(self, x: _Exchange) -> None:
        if x.deleted:
            return
        x.deleted = True
        self.exchanges.pop(x.name, None)
        x.bindings.clear()
        x.by_key.clear()
        self.drop_bindings_to(x)

    def drop_bindings_to(self, dest: _Queue | _Exchange) -> None:
        """Remove every binding whose destination is ``dest``; auto-delete exchanges left
        without bindings go too."""
        emptied = []
        for source in list(self.exchanges.values()):
            keys = [k for k, b in source.bindings.items() if b.dest is dest]
            for k in keys:
                source.remove(k)
            if keys and source.auto_delete and not source.bindings:
                emptied.append(source)
        for source in emptied:
            self.delete_exchange(source)

    def bind(self, ch: MemoryChannel, source_name: str, dest: _Queue | _Exchange,
             routing_key: str, arguments: dict[str, Any], method: str) -> None:
        if source_name == "":
            raise _err(AccessRefused, "operation not permitted on the default exchange", method)
        source = self.exchange(source_name, method)
        if source.type == "headers":
            mode = arguments.get("x-match", "all")
            if not isinstance(mode, str):
                raise _err(
                    PreconditionFailed,
                    f"Invalid x-match field type {_type_name(mode)} (value {_shown(mode)}); "
                    "expected longstr",
                    method,
                )
            if mode not in _X_MATCH:
                raise _err(
                    PreconditionFailed,
                    f'Invalid x-match field value <<"{mode}">>; expected all, any, all-with-x, '
                    "or any-with-x",
                    method,
                )
        source.add(_Binding(source, dest, routing_key, arguments))

    def unbind(self, source_name: str, dest: _Queue | _Exchange | None, routing_key: str,
               arguments: dict[str, Any], method: str) -> None:
        if source_name == "":
            raise _err(AccessRefused, "operation not permitted on the default exchange", method)
        source = self.exchanges.get(source_name)
        if source is None or dest is None:
            return  # RabbitMQ: unbinding what does not exist succeeds
        key = (isinstance(dest, _Queue), dest.name, routing_key, _freeze(arguments))
        if source.remove(key) is not None and source.auto_delete and not source.bindings:
            self.delete_exchange(source)

    # ------------------------------------------------------------------ queues

    def queue_declare(self, ch: MemoryChannel, name: str, passive: bool, durable: bool,
                      exclusive: bool, auto_delete: bool, arguments: dict[str, Any],
                      now: float) -> QueueDeclareOk:
        method = "queue.declare"
        conn = ch.connection
        if passive:
            q = self.queue(ch, name, method)
        else:
            if name == "":
                self.check_server_named(arguments, method)
                name = "amq.gen-" + _token()
            elif _direct_reply_to(name):
                raise _no_direct_reply_to(method)
            elif name.startswith("amq."):
                raise _err(AccessRefused, f"queue name '{name}' contains reserved prefix 'amq.*'", method)
            owner = conn if exclusive else None
            q_or_none = self.queues.get(name)
            if q_or_none is None:
                kind = self.validate_queue_args(name, arguments, method)
                self.check_queue_properties(name, kind, durable, exclusive, auto_delete, arguments, method)
                q = _Queue(name, durable, owner, auto_delete, arguments, now, kind)
                self.queues[name] = q
                if owner is not None:
                    conn._exclusive.add(q)
                if q.ttl is not None or q.expires is not None:
                    self.timed.add(q)
                    if q.expires is not None:
                        self.note_deadline(now + q.expires)
            else:
                q = q_or_none
                if q.owner is not owner:
                    raise self.locked(q, method)
                if durable != q.durable:
                    raise self.inequivalent("queue", name, "durable", durable, q.durable, method)
                if auto_delete != q.auto_delete:
                    raise self.inequivalent("queue", name, "auto_delete", auto_delete, q.auto_delete, method)
                self.check_args("queue", name, _QUEUE_TYPE_ARGS[q.kind], arguments, q.arguments, method)
        q.last_used = now
        ch._last_queue = q.name
        return QueueDeclareOk(q.name, len(q.ready), len(q.consumers))

    def check_server_named(self, args: dict[str, Any], method: str) -> None:
        """RabbitMQ names only classic queues; a queue type it does not know crashes its
        channel there (before the argument is checked): an internal error."""
        if "x-queue-type" not in args:
            return
        value = args["x-queue-type"]
        kind = _text(value) if isinstance(value, (str, bytes)) else None
        if kind in ("quorum", "stream"):
            raise _err(PreconditionFailed,
                       f"Cannot declare a server-named queue for type {_QUEUE_MODULES[kind]}", method)
        if kind != "classic":
            raise InternalError("INTERNAL_ERROR", InternalError.reply_code, 0, 0)

    def validate_queue_args(self, name: str, args: dict[str, Any], method: str) -> str:
        """Check a new queue's arguments as RabbitMQ does, in its order: the dead-letter
        exchange's type, ``x-queue-type``, then the values of the arguments the queue type
        takes (in RabbitMQ's order), then arguments of other queue types (in the order
        given).  Returns the queue type."""
        where = self.where("queue", name)
        dlx = args.get("x-dead-letter-exchange")
        if "x-dead-letter-exchange" in args and not isinstance(dlx, str):
            raise _err(PreconditionFailed,
                       f"invalid type '{_type_name(dlx)}' for arg 'x-dead-letter-exchange' in {where}",
                       method)

        def invalid(key: str, problem: str) -> AMQPError:
            return _err(PreconditionFailed, f"invalid arg '{key}' for {where}: {problem}", method)

        kind = "classic"
        if "x-queue-type" in args:
            value = args["x-queue-type"]
            if not isinstance(value, str):
                raise invalid("x-queue-type", f"{{unacceptable_type,{_type_name(value)}}}")
            if value not in _QUEUE_TYPE_ARGS:
                raise invalid("x-queue-type", f'"unsupported queue type \'{value}\'"')
            kind = value

        def integer(v: Any) -> str | None:
            if isinstance(v, bool) or not isinstance(v, int):
                return f'"expected integer, got {_type_name(v)}"'
            if v < 0:
                return f"{{value_negative,{v}}}"
            return None

        def positive(v: Any) -> str | None:
            problem = integer(v)
            if problem is None and v == 0:
                return "{value_zero,0}"
            return problem

        def priority(v: Any) -> str | None:
            problem = integer(v)
            if problem is None and v > 255:
                return f"{{max_value_exceeded,{v}}}"
            return problem

        def one_of(values: tuple[str, ...], wrong: Callable[[str], str]) -> Callable[[Any], str | None]:
            def check(v: Any) -> str | None:
                if not isinstance(v, str):
                    return f"{{unacceptable_type,{_type_name(v)}}}"
                return None if v in values else wrong(v)
            return check

        def string(v: Any) -> str | None:
            return None if isinstance(v, str) else f"{{unacceptable_type,{_type_name(v)}}}"

        def routing_key(v: Any) -> str | None:
            if not isinstance(v, str):
                return f"{{unacceptable_type,{_type_name(v)}}}"
            return None if "x-dead-letter-exchange" in args else "routing_key_but_no_dlx_defined"

        def version(v: Any) -> str | None:
            problem = integer(v)
            if problem is None and v not in (1, 2):
                return f"\"unsupported queue version '{v}'\""
            return problem

        def boolean(v: Any) -> str | None:
            return None if isinstance(v, bool) else f"{{unacceptable_type,{_type_name(v)}}}"

        def max_age(v: Any) -> str | None:
            if not isinstance(v, str):
                return f"{{unacceptable_type,{_type_name(v)}}}"
            match = _MAX_AGE.match(v)
            assert match is not None
            digits, unit = match.groups()
            if not digits:  # RabbitMQ's list_to_integer("") crashes the channel
                raise InternalError("INTERNAL_ERROR", InternalError.reply_code, 0, 0)
            return None if int(digits) > 0 and unit in _MAX_AGE_UNITS else "invalid_max_age"

        # RabbitMQ's declare_args(), in its order.
        rules: dict[str, Callable[[Any], str | None]] = {
            "x-expires": positive,
            "x-message-ttl": integer,
            "x-dead-letter-exchange": string,
            "x-dead-letter-routing-key": routing_key,
            "x-dead-letter-strategy": one_of(_DLX_STRATEGIES, lambda v: "invalid_dlx_strategy"),
            "x-max-length": integer,
            "x-max-length-bytes": integer,
            "x-max-in-memory-length": integer,
            "x-max-in-memory-bytes": integer,
            "x-max-priority": priority,
            "x-overflow": one_of(_OVERFLOW, lambda v: "invalid_overflow"),
            "x-queue-mode": one_of(_QUEUE_MODES, lambda v: f"\"unsupported queue mode '{v}'\""),
            "x-queue-version": version,
            "x-single-active-consumer": boolean,
            "x-quorum-initial-group-size": positive,
            "x-max-age": max_age,
            "x-stream-max-segment-size-bytes": integer,
            "x-initial-cluster-size": positive,
            "x-queue-leader-locator": one_of(_LEADER_LOCATORS, lambda v: "invalid_queue_locator_arg"),
        }
        takes = _QUEUE_TYPE_ARGS[kind]
        for key, rule in rules.items():
            if key in args and key in takes:
                problem = rule(args[key])
                if problem is not None:
                    raise invalid(key, problem)
        for key in args:
            if key in _KNOWN_QUEUE_ARGS and key not in takes:
                raise _err(PreconditionFailed,
                           f"invalid arg '{key}' for {where} of queue type {_QUEUE_MODULES[kind]}",
                           method)
        return kind

    def check_queue_properties(self, name: str, kind: str, durable: bool, exclusive: bool,
                               auto_delete: bool, args: dict[str, Any], method: str) -> None:
        """What a quorum or stream queue must be: durable, neither exclusive nor
        auto-delete.  memory:// then refuses a stream queue: it does not implement them."""
        if kind == "classic":
            return
        where = self.where("queue", name)
        for wrong, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"),
                            (not durable, "non-durable")):
            if wrong:
                raise _err(PreconditionFailed, f"invalid property '{prop}' for {where}", method)
        if kind == "stream":
            size = args.get("x-stream-max-segment-size-bytes")
            if isinstance(size, int) and size > 3_000_000_000:
                raise _err(PreconditionFailed,
                           "Exceeded max value for x-stream-max-segment-size-bytes", method)
            raise _err(AMQPNotImplemented,
                       f"cannot declare {where} of type rabbit_stream_queue: memory:// does not "
                       "implement stream queues",
                       method)

    def check_consume_args(self, q: _Queue, args: dict[str, Any], method: str) -> None:
        """RabbitMQ's checks of ``basic.consume`` arguments: the values of those the queue
        type takes, then arguments of other queue types (in the order given)."""
        where = self.where("queue", q.name)
        takes = _CONSUMER_TYPE_ARGS[q.kind]
        for key in ("x-priority", "x-cancel-on-ha-failover"):  # x-stream-offset: streams only
            if key not in args or key not in takes:
                continue
            v = args[key]
            if key == "x-priority" and (isinstance(v, bool) or not isinstance(v, int)):
                problem = f'"expected integer, got {_type_name(v)}"'
            elif key == "x-cancel-on-ha-failover" and not isinstance(v, bool):
                problem = f"{{unacceptable_type,{_type_name(v)}}}"
            else:
                continue
            raise _err(PreconditionFailed, f"invalid arg '{key}' for {where}: {problem}", method)
        for key in args:
            if key in _KNOWN_CONSUMER_ARGS and key not in takes:
                raise _err(PreconditionFailed,
                           f"invalid arg '{key}' for {where} of queue type {_QUEUE_MODULES[q.kind]}",
                           method)

    def delete_queue(self, q: _Queue) -> int:
        """Delete a queue: its bindings go, its consumers are cancelled (with a server-sent
        ``basic.cancel``), its ready messages are dropped.  Returns how many there were."""
        if q.deleted:
            return 0
        q.deleted = True
        self.queues.pop(q.name, None)
        self.timed.discard(q)
        if q.owner is not None:
            q.owner._exclusive.discard(q)
        self.drop_bindings_to(q)
        for c in q.consumers:
            ch = c.channel
            if ch._consumer_objs.pop(c.tag, None) is not None and not ch._closed:
                conn = ch.connection
                conn._pending.append((_CANCEL, ch, c.tag))
                conn._cond.notify_all()
        q.consumers.clear()
        return q.ready.clear()

    # ------------------------------------------------------------------ messages

    def route(self, x: _Exchange, keys: list[str], headers: dict[str, Any] | None) -> list[_Queue]:
        """The queues a message goes to, following exchange-to-exchange bindings and
        alternate exchanges; every exchange is visited once."""
        found: dict[int, _Queue] = {}
        seen: set[int] = set()
        work: deque[_Exchange] = deque([x])
        queues = self.queues
        while work:
            ex = work.popleft()
            if id(ex) in seen:
                continue
            seen.add(id(ex))
            dests = ex.match(keys, headers, queues)
            if not dests and ex.alternate is not None:
                ae = self.exchanges.get(ex.alternate)
                if ae is not None:
                    work.append(ae)
            for d in dests:
                if isinstance(d, _Queue):
                    found[id(d)] = d
                else:
                    work.append(d)
        return list(found.values())

    def enqueue(self, q: _Queue, msg: _Stored, now: float) -> bool:
        """Put a message in a queue (and hand it to a consumer if one has room).  Returns
        False when the queue's ``x-overflow`` rejected it."""
        if q.kind == "quorum" and q.overflow == "reject-publish":
            if q.blocked and not q.below_soft_limit():
                return False
            q.blocked = False
        elif q.overflow != "drop-head" and q.full(msg.size):
            if q.overflow == "reject-publish-dlx":
                self.dead_letter(q, _Entry(msg, 0, None), "maxlen", now)
            return False
        ttl = q.ttl
        if msg.ttl is not None and (ttl is None or msg.ttl < ttl):
            ttl = msg.ttl
        entry = _Entry(msg, q.seq, None if ttl is None else now + ttl)
        q.seq += 1
        q.ready.append(entry)
        if q.consumers:
            self.dispatch(q, now)
        if q.kind == "quorum" and q.overflow == "reject-publish":
            q.blocked = q.over()
        elif q.max_length is not None or q.max_bytes is not None:
            while q.over():
                head = q.ready.popleft()
                if head is None:
                    break
                self.dead_letter(q, head, "maxlen", now)
        if entry.expires_at is not None and q.ready.count:
            self.timed.add(q)
            self.note_deadline(entry.expires_at)
        return True

    def requeue(self, q: _Queue, entries: list[_Entry], now: float, settled: bool = False) -> None:
        """Put messages back in their queue.  A classic queue puts them back at its head,
        in their original order.  A quorum queue counts each return, dead-letters (reason
        ``delivery_limit``) a message that came back more than ``x-delivery-limit`` times,
        and puts the others back in the order they came back: at the tail when ``settled``
        (``basic.reject``/``basic.nack``/``basic.recover``), ahead of the ready messages
        when their channel closed."""
        if q.deleted:
            return
        if q.kind == "quorum":
            back = []
            for e in entries:
                e.delivery_count += 1
                if q.delivery_limit is not None and e.delivery_count > q.delivery_limit:
                    self.dead_letter(q, e, "delivery_limit", now)
                else:
                    e.redelivered = True
                    back.append(e)
            if settled:
                for e in back:
                    q.ready.append(e)
            else:
                q.ready.give_back(back)
        else:
            for e in entries:
                e.redelivered = True
            q.ready.restore(entries)
        if q in self.timed:
            self.note_deadline(q.ready.next_expiry())
        self.dispatch(q, now)

    def dispatch(self, q: _Queue, now: float) -> None:
        """Hand ready messages to consumers with room, as RabbitMQ pushes them."""
        if q.deleted:
            return
        ready = q.ready
        while ready.count and q.consumers:
            c = q.pick()
            if c is None:
                return
            entry = ready.popleft()
            assert entry is not None
            if entry.expires_at is not None and entry.expires_at < now:
                self.dead_letter(q, entry, "expired", now)
                continue
            c.channel._deliver(c, q, entry)

    def dead_letter(self, q: _Queue, entry: _Entry, reason: str, now: float) -> None:
        """Republish a message that died in ``q`` (``rejected``, ``expired``, ``maxlen``) to
        the queue's dead-letter exchange, with RabbitMQ's ``x-death`` bookkeeping; drop it
        when there is no such exchange or it would go round a cycle."""
        if q.dlx is None:
            return
        x = self.exchanges.get(q.dlx)
        if x is None:
            log.debug("dead-letter exchange %r of queue %r does not exist: message dropped", q.dlx, q.name)
            return
        msg = entry.msg
        props = _Props.decode(msg.props, 0, len(msg.props))
        headers = dict(props.headers or {})
        deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
        death = None
        for i, d in enumerate(deaths):
            if d.get("queue") == q.name and d.get("reason") == reason:
                death = dict(deaths.pop(i))
                count = death.get("count", 0)
                death["count"] = (count if isinstance(count, int) else 0) + 1
                break
        if death is None:
            death = {
                "count": 1,
                "reason": reason,
                "queue": q.name,
                "time": _now_stamp(),
                "exchange": msg.exchange,
                "routing-keys": list(msg.routing_keys),
            }
            if props.expiration is not None:
                death["original-expiration"] = props.expiration
        deaths.insert(0, death)
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-exchange", msg.exchange)
        headers.setdefault("x-first-death-queue", q.name)
        headers.setdefault("x-first-death-reason", reason)
        if q.dlrk is not None:  # RabbitMQ drops CC when it replaces the routing keys
            headers.pop("CC", None)
        props.headers = headers
        props.expiration = None
        keys = [q.dlrk] if q.dlrk is not None else list(msg.routing_keys)
        raw = props.encode()
        again = _Stored(q.dlx, keys, raw, _Props.decode(raw, 0, len(raw)).headers, msg.body,
                        msg.priority, None)
        targets = self.route(x, keys, again.headers)
        if reason != "rejected":
            targets = [t for t in targets if not _is_cycle(t.name, deaths)]
        for target in targets:
            self.enqueue(target, again, now)


def _is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ's rule: a message that already died in ``queue`` with no rejection since
    would go round for ever, so it is dropped."""
    for i, d in enumerate(deaths):
        if d.get("queue") == queue:
            return all(x.get("reason") != "rejected" for x in deaths[: i + 1])
    return False


class MemoryBroker:
    """A broker in this process: virtual hosts of exchanges, queues and consumers.

    ``MemoryConnection(broker=None)`` uses the process-wide :func:`default_broker`; tests
    that want isolation pass a fresh ``MemoryBroker()``.  Virtual hosts are created on first
    use.  Thread-safe: one lock guards everything.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._vhosts: dict[str, _VHost] = {}
        _brokers.add(self)

    def __repr__(self) -> str:
        return f"<MemoryBroker vhosts={sorted(self._vhosts)!r}>"

    def _vhost(self, name: str) -> _VHost:
        with self._lock:
            vh = self._vhosts.get(name)
            if vh is None:
                vh = self._vhosts[name] = _VHost(self, name)
            return vh

    def queue_names(self, virtual_host: str = "/") -> list[str]:
        """The queues that exist in a virtual host (for tests and debugging)."""
        with self._lock:
            vh = self._vhosts.get(virtual_host)
            return sorted(vh.queues) if vh else []

    def exchange_names(self, virtual_host: str = "/") -> list[str]:
        """The exchanges that exist in a virtual host, the default one as ``""``."""
        with self._lock:
            vh = self._vhosts.get(virtual_host)
            return sorted(vh.exchanges) if vh else sorted(("", *PREDECLARED))


_default: MemoryBroker | None = None
_default_lock = threading.Lock()
# Every broker and connection of this process, for the at-fork hook below.
_brokers: weakref.WeakSet[MemoryBroker] = weakref.WeakSet()
_connections: weakref.WeakSet[MemoryConnection] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: new locks everywhere (see the module's
    notes on processes).  A connection waits on a condition of its broker's lock."""
    global _default_lock
    _default_lock = threading.Lock()
    for broker in list(_brokers):
        broker._lock = threading.RLock()
    for conn in list(_connections):
        conn._lock = conn.broker._lock
        conn._cond = threading.Condition(conn._lock)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_broker() -> MemoryBroker:
    """The process-wide broker that ``memory://`` connections share by default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MemoryBroker()
        return _default


# --------------------------------------------------------------------------- connection


def _decode_props(raw: bytes) -> dict[str, Any]:
    if raw == _EMPTY_PROPS:
        return {}
    p = _Props.decode(raw, 0, len(raw))
    return {n: v for n in _Props.FIELDS if (v := getattr(p, n)) is not None}


class MemoryConnection:
    """A connection to a :class:`MemoryBroker`, with :class:`leveret.client.Connection`'s API.

    ``MemoryConnection(virtual_host="/", broker=None)``; a first positional argument may be
    a URL (``memory://``, ``memory:///vhost``; an ``amqp://`` URL is read for its vhost and
    user) or a bare virtual host name.  The blocking client's other options are accepted and
    ignored; unknown ones are a ``TypeError`` as there.  Nothing is open until
    :meth:`connect` (or ``with MemoryConnection(...)``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        virtual_host: str | None = None,
        broker: MemoryBroker | None = None,
        ssl_context: Any = None,
        blocked_timeout: float = 60.0,
        rpc_timeout: float = 60.0,
        max_body_size: int = 128 * 1024 * 1024,
        client_properties: dict[str, Any] | None = None,
        on_blocked: Callable[[str], None] | None = None,
        on_unblocked: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        params = ConnectionParameters(host="memory", port=0)
        if url:
            if "://" not in url:
                params.virtual_host = url
            elif url.lower().startswith(("amqp://", "amqps://")):
                params = parse_url(url)
            else:
                parts = urlsplit(url)
                if parts.username:
                    params.username = unquote(parts.username)
                if parts.path and parts.path != "/":
                    params.virtual_host = unquote(parts.path[1:])
        for name, value in options.items():
            if name == "userid":
                name = "username"
            if not hasattr(params, name) or name.startswith("_"):
                raise TypeError(f"unknown connection option {name!r}")
            if value is not None:
                setattr(params, name, value)
        if virtual_host is not None:
            params.virtual_host = virtual_host
        if params.protocol != "0-9-1":
            raise ValueError(f"the memory transport speaks AMQP 0-9-1 only, not {params.protocol}")
        self.params = params
        self.broker = broker if broker is not None else default_broker()
        self.ssl_context = ssl_context
        self.blocked_timeout = blocked_timeout
        self.rpc_timeout = rpc_timeout
        self.max_body_size = max_body_size
        self.client_properties = client_properties
        self.on_blocked = on_blocked
        self.on_unblocked = on_unblocked
        self.server_properties: dict[str, Any] = {}
        self._lock = self.broker._lock
        self._cond = threading.Condition(self._lock)
        self._vhost: _VHost | None = None
        self._open = False
        self._error: BaseException | None = None
        self._channels: dict[int, MemoryChannel] = {}
        self._pending: deque[tuple[Any, ...]] = deque()
        self._exclusive: set[_Queue] = set()
        _connections.add(self)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<leveret.highlevel.memory.MemoryConnection vhost={self.params.virtual_host!r} {state}>"

    # ------------------------------------------------------------------ info

    @property
    def is_open(self) -> bool:
        return self._open

    connected = is_open

    @property
    def blocked(self) -> str | None:
        """Always None: the memory broker never blocks publishers."""
        return None

    @property
    def heartbeat(self) -> int:
        return 0

    @property
    def protocol(self) -> str:
        return "0-9-1"

    @property
    def channel_max(self) -> int:
        return (self.params.channel_max or 2047) if self._open else 0

    @property
    def frame_max(self) -> int:
        return self.params.frame_max if self._open else 0

    @property
    def virtual_host(self) -> str:
        return self.params.virtual_host

    # ------------------------------------------------------------------ connect / close

    def connect(self) -> MemoryConnection:
        """Open the connection (a no-op when it is open).  Returns ``self``."""
        if self._open:
            return self
        from .. import __version__

        vh = self.broker._vhost(self.params.virtual_host)
        with self._lock:
            self._vhost = vh
            self._open = True
            self._error = None
            self._channels.clear()
            self._pending.clear()
            vh.connections.add(self)
        self.server_properties = {
            "capabilities": dict(SERVER_CAPABILITIES),
            "cluster_name": "memory",
            "copyright": "",
            "information": "leveret's in-memory broker",
            "platform": f"Python {platform.python_version()}",
            "product": "leveret-memory",
            "version": __version__,
        }
        return self

    def __enter__(self) -> MemoryConnection:
        return self.connect()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown",
              timeout: float | None = None) -> None:
        """Close the connection: its channels close (their unacknowledged messages are
        requeued) and its exclusive queues are deleted.  Safe to call more than once."""
        with self._lock:
            if self._open:
                self._shutdown(None)

    def _shutdown(self, error: BaseException | None) -> None:
        """Close everything of this connection (lock held)."""
        self._open = False
        self._error = error
        vh = self._vhost
        for ch in list(self._channels.values()):
            ch._shutdown(error if isinstance(error, AMQPError) else None)
        self._channels.clear()
        self._pending.clear()
        if vh is not None:
            for q in list(self._exclusive):
                vh.delete_queue(q)
            vh.connections.discard(self)
        self._exclusive.clear()
        self._cond.notify_all()

    def _fail(self, error: AMQPError) -> None:
        """A connection error (a hard reply code): the connection closes with it."""
        if self._open:
            self._shutdown(error)

    def simulate_connection_loss(self, reason: str = "connection lost (simulated)") -> None:
        """Drop the connection as if the network failed: every later call raises
        :class:`ConnectionLost` (a ``ConnectionError``), as the blocking client does; the
        broker requeues its unacknowledged messages and deletes its exclusive queues.  For
        testing recovery code."""
        with self._lock:
            if self._open:
                self._shutdown(ConnectionLost(reason))

    def _dead_error(self) -> BaseException:
        if self._error is not None:
            return again(self._error)
        return ConnectionClosedError("the connection is closed")

    def _check_open(self) -> None:
        if not self._open:
            if self._error is not None:
                raise again(self._error)
            raise ConnectionClosedError("the connection is not open (call connect())")

    # ------------------------------------------------------------------ channels

    def channel(self, channel_id: int | None = None) -> MemoryChannel:
        """Open a channel; the lowest free id unless given."""
        with self._lock:
            self._check_open()
            limit = self.params.channel_max or 65535
            if channel_id is None:
                channel_id = 1
                while channel_id in self._channels:
                    channel_id += 1
                if channel_id > limit:
                    raise LocalProtocolError(f"all {limit} channels of this connection are in use")
            elif not 1 <= channel_id <= limit or channel_id in self._channels:
                raise LocalProtocolError(f"channel id {channel_id} is not available")
            ch = MemoryChannel(self, channel_id)
            self._channels[channel_id] = ch
            return ch

    # ------------------------------------------------------------------ events

    def drain_events(self, timeout: float | None = None) -> None:
        """Run the callbacks of deliveries, returns and server-sent cancels, in this thread.

        Returns after running at least one -- those that were waiting when it started, not
        the ones their callbacks cause.  Raises ``TimeoutError`` when nothing arrived
        within ``timeout`` seconds (``None`` waits for ever), the connection's error when it
        is closed, and the error that closed a channel with consumers when no call has
        raised it (an ack of an unknown delivery tag), as the client does.
        """
        deadline = None if timeout is None else deadline_after(timeout)
        while not self._run_pending():
            with self._cond:
                while True:
                    if not self._open:
                        raise self._dead_error()
                    vh = self._vhost
                    assert vh is not None
                    now = monotonic()
                    vh.tick(now)
                    if self._has_pending():
                        break
                    remaining = None if deadline is None else deadline - now
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("timed out waiting for events")
                    wait = remaining
                    if vh.deadline < _INF:  # wake up to expire messages in time
                        due = max(vh.deadline - now, 0.0005)
                        wait = due if wait is None else min(wait, due)
                    self._cond.wait(None if wait is None else min(wait, _MAX_WAIT))

    def _has_pending(self) -> bool:
        if self._pending:
            return True
        return any(ch._returns for ch in self._channels.values())

    def _run_pending(self) -> bool:
        # Only what was pending when the call started: callbacks that requeue, reject or
        # publish to their own queue add more, which the next call runs (as the client runs
        # the frames it has read), so drain_events returns and its timeout holds.
        ran = False
        pending = self._pending
        with self._lock:
            left = len(pending)
        while left:
            left -= 1
            with self._lock:
                if not pending:
                    break
                item = pending.popleft()
            ch: MemoryChannel = item[1]
            if item[0] == _CLOSED:
                # Raised unless a call on the channel has raised it already; the channel's
                # next call raises it too (see leveret.client.Connection.drain_events).
                if not ch._error_reported and ch._error is not None:
                    raise again(ch._error)
                continue
            if item[0] == _GONE:  # bookkeeping only: no callback runs
                ch._cancelled_no_ack.pop(item[2], None)
                continue
            ran = True
            if item[0] == _DELIVER:
                _, _, ctag, dtag, redelivered, stored, no_ack, count = item
                if ch._closed and not no_ack:
                    continue  # the broker requeued it when the channel closed
                # (A no_ack delivery is settled: its callback runs, as the client's does.)
                cb = ch._consumers.get(ctag)
                if cb is None:
                    # A consumer cancelled since (as the client does): a no_ack consumer's
                    # message cannot go back, so its callback still runs; another's is
                    # given back to the queue.
                    cb = ch._cancelled_no_ack.get(ctag)
                    if cb is None:
                        if not ch._closed:
                            ch.basic_reject(dtag, requeue=True)
                        continue
                msg = ch._message(stored, {
                    "consumer_tag": ctag,
                    "delivery_tag": dtag,
                    "redelivered": redelivered,
                    "exchange": stored.exchange,
                    "routing_key": stored.routing_key,
                }, count)
                cb(msg)
            else:
                tag = item[2]
                ch._consumers.pop(tag, None)
                ch._cancelled_no_ack.pop(tag, None)
                cancel_cb = ch._cancel_callbacks.pop(tag, None)
                if cancel_cb is not None:
                    cancel_cb(tag)
        with self._lock:
            channels = list(self._channels.values())
        for ch in channels:
            if ch._returns:
                ch._run_returns()
                ran = True
        return ran

    def update_secret(self, new_secret: str | bytes, reason: str = "", timeout: float | None = None) -> None:
        """Accepted and ignored (the memory broker has no credentials)."""
        self._check_open()


# --------------------------------------------------------------------------- channel


class MemoryChannel:
    """A channel of a :class:`MemoryConnection`, with :class:`leveret.client.Channel`'s API.

    Synchronous methods raise the broker's error at once (the channel is then closed, the
    connection stays usable for a channel error).  ``basic_publish``, ``basic_ack``,
    ``basic_nack`` and ``basic_reject`` never wait for a reply: when one fails, the channel
    closes and the next call on it raises the error.
    """

    def __init__(self, connection: MemoryConnection, channel_id: int) -> None:
        self.connection = connection
        self.channel_id = channel_id
        self._open = True
        self._closed = False
        self._error: AMQPError | None = None
        self._error_reported = False
        self.flow_active = True
        #: Called with each returned :class:`Message`; when None they go to :attr:`returned`.
        self.on_return: Callable[[Message], Any] | None = None
        self.returned: list[Message] = []
        # Client side, as in leveret.client.Channel.
        self._consumers: dict[str, Callable[[Message], Any] | None] = {}
        self._cancel_callbacks: dict[str, Callable[[str], Any]] = {}
        # Cancelled no_ack consumers whose deliveries may still wait to run (until _GONE).
        self._cancelled_no_ack: dict[str, Callable[[Message], Any] | None] = {}
        self._returns: deque[tuple[_Stored, str, str, int | None]] = deque()
        self._nacked: list[int] = []
        # Broker side (guarded by the broker's lock).
        self._next_tag = 1
        self._unacked: dict[int, _Unacked] = {}
        self._consumer_objs: dict[str, _Consumer] = {}
        self._prefetch = 0
        self._global_prefetch = 0
        self._confirm = False
        self._next_publish = 1
        self._lost_publishes: set[int] = set()
        self._last_queue = ""
        self._tx = False
        self._tx_publishes: list[tuple[str, _Stored, bool, list[str], str]] = []
        self._tx_settles: list[tuple[str, list[_Unacked]]] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<leveret.highlevel.memory.MemoryChannel {self.channel_id} {state}>"

    @property
    def is_open(self) -> bool:
        return self._open and not self._closed

    @property
    def close_error(self) -> AMQPError | None:
        """The error that closed this channel, as :attr:`leveret.client.Channel.close_error`."""
        return self._error

    def mark_error_reported(self) -> None:
        """As :meth:`leveret.client.Channel.mark_error_reported`: :attr:`close_error` was
        raised to the application elsewhere; neither ``drain_events`` nor the channel's
        calls raise it again (they raise :class:`ChannelClosedError`)."""
        if self._error is not None:
            self._error_reported = True

    def __enter__(self) -> MemoryChannel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._closed and self.connection.is_open:
            self.close()

    # ------------------------------------------------------------------ plumbing

    def _raise_closed(self) -> None:
        """Raise why the channel is closed, as the blocking client does: when the whole
        connection closed with an error or was lost, that error, every time; when only the
        channel closed, the broker's typed error (``NotFound``...) the first time, then
        :class:`ChannelClosedError` with that error as its cause."""
        conn = self.connection
        if conn._error is not None:
            raise again(conn._error)
        error = self._error
        if error is not None:
            if not self._error_reported:
                self._error_reported = True
                raise again(error)
            raise ChannelClosedError(
                f"channel {self.channel_id} was closed by the broker: {error}"
            ) from error
        raise ChannelClosedError(f"channel {self.channel_id} is closed")

    def _call(self, fn: Callable[[_VHost, float], _T], sync: bool = True) -> _T | None:
        """Run a broker operation under the lock; a broker error closes this channel (or
        the connection) and is raised when ``sync``."""
        conn = self.connection
        with conn._lock:
            if self._closed:
                self._raise_closed()
            vh = conn._vhost
            assert vh is not None
            now = monotonic()
            vh.tick(now)
            try:
                return fn(vh, now)
            except AMQPError as err:
                if err.soft:
                    consuming = bool(self._consumers)
                    self._shutdown(err)
                    if consuming and not sync:  # drain_events reports it, as the client does
                        conn._pending.append((_CLOSED, self))
                        conn._cond.notify_all()
                else:
                    conn._fail(err)
                if sync:
                    self._error_reported = True
                    raise
                return None

    def _shutdown(self, error: AMQPError | None) -> None:
        """Close this channel (lock held): cancel its consumers, requeue what it has not
        acknowledged."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        conn = self.connection
        vh = conn._vhost
        conn._channels.pop(self.channel_id, None)
        if vh is None:
            return
        now = monotonic()
        for c in list(self._consumer_objs.values()):
            self._remove_consumer(vh, c)
        self._consumer_objs.clear()
        held = list(self._unacked.values())
        for _, records in self._tx_settles:
            held.extend(records)
        self._unacked.clear()
        self._tx_settles.clear()
        self._tx_publishes.clear()
        self._requeue(vh, held, now)

    def _remove_consumer(self, vh: _VHost, c: _Consumer) -> None:
        q = c.queue
        if c in q.consumers:
            q.consumers.remove(c)
            if q.rr >= len(q.consumers):
                q.rr = 0
            q.last_used = monotonic()
            if q.auto_delete and not q.consumers and q.ever_consumed:
                vh.delete_queue(q)
                return
            if q.consumers:
                vh.dispatch(q, q.last_used)  # single-active-consumer: the next one takes over
            elif q.expires is not None:
                vh.note_deadline(q.last_used + q.expires)

    def _requeue(self, vh: _VHost, records: list[_Unacked], now: float, settled: bool = False) -> None:
        by_queue: dict[int, tuple[_Queue, list[_Entry]]] = {}
        for r in records:
            by_queue.setdefault(id(r.queue), (r.queue, []))[1].append(r.entry)
        for q, entries in by_queue.values():
            vh.requeue(q, entries, now, settled)

    def _deliver(self, c: _Consumer, q: _Queue, entry: _Entry) -> None:
        tag = self._next_tag
        self._next_tag = tag + 1
        if not c.no_ack:
            self._unacked[tag] = _Unacked(tag, q, entry, c)
            c.unacked += 1
        conn = self.connection
        # A quorum queue adds x-delivery-count to a redelivery (basic.get: to every message).
        count = entry.delivery_count if q.kind == "quorum" and entry.delivery_count else None
        conn._pending.append((_DELIVER, self, c.tag, tag, entry.redelivered, entry.msg, c.no_ack, count))
        conn._cond.notify_all()

    def _message(self, stored: _Stored, info: dict[str, Any], delivery_count: int | None = None) -> Message:
        props = _decode_props(stored.props)
        if delivery_count is not None:
            props["headers"] = {**props.get("headers", {}), "x-delivery-count": delivery_count}
        msg = Message(stored.body, **props)
        msg.delivery_info = info
        msg.channel = self
        return msg

    def _redispatch(self, vh: _VHost, now: float) -> None:
        """Acks free room: offer this channel's consumers more messages."""
        seen: set[int] = set()
        for c in list(self._consumer_objs.values()):
            q = c.queue
            if id(q) not in seen:
                seen.add(id(q))
                vh.dispatch(q, now)

    def close(self, reply_code: int = 200, reply_text: str = "", timeout: float | None = None) -> None:
        """Close the channel: its consumers are cancelled and its unacknowledged messages
        requeued.  Closing a closed channel does nothing."""
        with self.connection._lock:
            self._shutdown(None)

    # ------------------------------------------------------------------ exchange

    def exchange_declare(
        self,
        exchange: str,
        type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        """``exchange.declare``: create the exchange, or check that it exists (``passive``)
        with the same type, flags and ``alternate-exchange`` (else ``PreconditionFailed``)."""
        _shortstrs("exchange.declare", exchange=exchange, type=type)
        args = _table(arguments)
        self._call(lambda vh, now: vh.exchange_declare(
            exchange, type, passive, durable, auto_delete, internal, args), sync=not nowait)

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False,
                        timeout: float | None = None) -> None:
        """``exchange.delete`` (deleting one that does not exist succeeds, as in RabbitMQ)."""
        _shortstrs("exchange.delete", exchange=exchange)
        self._call(lambda vh, now: vh.exchange_delete(exchange, if_unused), sync=not nowait)

    def exchange_bind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.bind``: messages routed by ``source`` also go through ``destination``."""
        args = _table(arguments)
        method = "exchange.bind"
        _shortstrs(method, destination=destination, source=source, routing_key=routing_key)

        def op(vh: _VHost, now: float) -> None:
            if destination == "":
                raise _err(AccessRefused, "operation not permitted on the default exchange", method)
            dest = vh.exchange(destination, method)
            vh.bind(self, source, dest, routing_key, args, method)

        self._call(op, sync=not nowait)

    def exchange_unbind(
        self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``exchange.unbind`` (removing a binding that does not exist succeeds)."""
        args = _table(arguments)
        method = "exchange.unbind"
        _shortstrs(method, destination=destination, source=source, routing_key=routing_key)

        def op(vh: _VHost, now: float) -> None:
            if destination == "":
                raise _err(AccessRefused, "operation not permitted on the default exchange", method)
            vh.unbind(source, vh.exchanges.get(destination), routing_key, args, method)

        self._call(op, sync=not nowait)

    # ------------------------------------------------------------------ queue

    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, nowait: Literal[False] = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> QueueDeclareOk: ...
    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, *, nowait: Literal[True],
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None: ...
    @overload
    def queue_declare(
        self, queue: str = "", passive: bool = False, durable: bool = False,
        exclusive: bool = False, auto_delete: bool = False, nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> QueueDeclareOk | None: ...

    def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> QueueDeclareOk | None:
        """``queue.declare``; returns ``(queue, message_count, consumer_count)`` (the name
        is ``amq.gen-...`` when ``queue`` is empty), or None with ``nowait``."""
        _shortstrs("queue.declare", queue=queue)
        args = _table(arguments)
        ok = self._call(lambda vh, now: vh.queue_declare(
            self, queue, passive, durable, exclusive, auto_delete, args, now), sync=not nowait)
        return None if nowait else ok

    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", nowait: bool = False,
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.bind``."""
        args = _table(arguments)
        method = "queue.bind"
        _shortstrs(method, queue=queue, exchange=exchange, routing_key=routing_key)

        def op(vh: _VHost, now: float) -> None:
            key = routing_key
            if queue == "" and key == "":
                key = self._last_queue
            if exchange == "":
                raise _err(AccessRefused, "operation not permitted on the default exchange", method)
            vh.exchange(exchange, method)
            q = vh.queue(self, queue, method)
            vh.bind(self, exchange, q, key, args, method)

        self._call(op, sync=not nowait)

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "",
        arguments: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> None:
        """``queue.unbind`` (removing a binding that does not exist succeeds)."""
        args = _table(arguments)
        method = "queue.unbind"
        _shortstrs(method, queue=queue, exchange=exchange, routing_key=routing_key)

        def op(vh: _VHost, now: float) -> None:
            name = queue or self._last_queue
            q = vh.queues.get(name)
            if q is not None and q.owner is not None and q.owner is not self.connection:
                x = vh.exchanges.get(exchange)
                key = (True, q.name, routing_key, _freeze(args))
                if x is not None and key in x.bindings:
                    raise vh.locked(q, method)
            vh.unbind(exchange, q, routing_key, args, method)

        self._call(op)

    @overload
    def queue_purge(self, queue: str = "", nowait: Literal[False] = False, timeout: float | None = None) -> int: ...
    @overload
    def queue_purge(self, queue: str = "", *, nowait: Literal[True], timeout: float | None = None) -> None: ...
    @overload
    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None: ...

    def queue_purge(self, queue: str = "", nowait: bool = False, timeout: float | None = None) -> int | None:
        """``queue.purge``: drop the ready messages; returns how many there were."""
        _shortstrs("queue.purge", queue=queue)
        count = self._call(lambda vh, now: vh.queue(self, queue, "queue.purge").ready.clear(),
                           sync=not nowait)
        return None if nowait else count

    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: Literal[False] = False, timeout: float | None = None,
    ) -> int: ...
    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False, *,
        nowait: Literal[True], timeout: float | None = None,
    ) -> None: ...
    @overload
    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> int | None: ...

    def queue_delete(
        self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
        nowait: bool = False, timeout: float | None = None,
    ) -> int | None:
        """``queue.delete``; returns the number of ready messages deleted with it (0 for a
        queue that does not exist).  Its consumers get a server-sent cancel."""
        method = "queue.delete"
        _shortstrs(method, queue=queue)

        def op(vh: _VHost, now: float) -> int:
            name = queue or self._last_queue
            if not name:
                raise _err(NotFound, "no previously declared queue", method)
            q = vh.queues.get(name)
            if q is None:
                return 0
            if q.owner is not None and q.owner is not self.connection:
                raise vh.locked(q, method)
            if q.kind == "quorum" and (if_unused or if_empty):
                flag = "if-unused" if if_unused else "if-empty"
                raise _err(
                    AMQPNotImplemented,
                    f"cannot delete {vh.where('queue', name)}. queue.delete operations with "
                    f"{flag} flag set are not supported by quorum queues",
                    method,
                )
            if if_unused and q.consumers:
                raise _err(PreconditionFailed, f"{vh.where('queue', name)} in use", method)
            if if_empty and len(q.ready):
                raise _err(PreconditionFailed, f"{vh.where('queue', name)} not empty", method)
            return vh.delete_queue(q)

        count = self._call(op, sync=not nowait)
        return None if nowait else count

    # ------------------------------------------------------------------ basic

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
        timeout: float | None = None, **kwargs: Any,
    ) -> None:
        """``basic.qos``: at most ``prefetch_count`` unacknowledged deliveries per consumer
        started after this call (``global=False``, RabbitMQ's meaning) or for the whole
        channel (``global=True``, also passed as ``a_global`` or ``global_``); 0 means no
        limit.  As in RabbitMQ, a per-consumer ``basic.qos`` removes the channel-wide limit.  ``prefetch_size`` other than 0 is not implemented (a connection error, as in
        RabbitMQ)."""
        global_ = bool(kwargs.pop("global_", a_global))
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        if not 0 <= prefetch_count <= 0xFFFF:
            raise EncodeError(f"prefetch_count={prefetch_count} does not fit in a short")

        def op(vh: _VHost, now: float) -> None:
            if prefetch_size:
                raise _err(AMQPNotImplemented, f"prefetch_size!=0 ({prefetch_size})", "basic.qos")
            if global_:
                self._global_prefetch = prefetch_count
                self._redispatch(vh, now)
            else:
                self._prefetch = prefetch_count
                # RabbitMQ's basic.qos(global=false) also lifts the channel-wide limit
                # ("unlimit_prefetch"), so a global limit set before it no longer applies.
                if self._global_prefetch:
                    self._global_prefetch = 0
                    self._redispatch(vh, now)

        self._call(op)

    def basic_publish(
        self,
        msg: Message | bytes | str,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
    ) -> int | None:
        """Publish a message (its body and properties are copied).

        Returns the delivery tag in confirm mode, else None.  Never raises for what the
        broker refuses (a missing or internal exchange, ...): the channel closes and the
        next call raises it, as with a real broker.  An unroutable ``mandatory`` message
        comes back through :attr:`on_return` / :attr:`returned`.
        """
        _shortstrs("basic.publish", exchange=exchange, routing_key=routing_key)
        if not isinstance(msg, Message):
            msg = Message(msg)
        properties = msg.properties
        raw = _Props(**properties).encode() if properties else _EMPTY_PROPS
        body = bytes(msg.body)
        with self.connection._lock:
            if self._closed:
                self._raise_closed()
            tag: int | None = None
            if self._confirm:
                tag = self._next_publish
                self._next_publish = tag + 1

            def op(vh: _VHost, now: float) -> None:
                self._publish(vh, now, raw, body, exchange, routing_key, mandatory, immediate, tag)

            self._call(op, sync=False)
            if self._closed and tag is not None:
                self._lost_publishes.add(tag)
            return tag

    def _publish(self, vh: _VHost, now: float, raw: bytes, body: bytes, exchange: str,
                 routing_key: str, mandatory: bool, immediate: bool, tag: int | None) -> None:
        method = "basic.publish"
        if immediate:
            raise _err(AMQPNotImplemented, "immediate=true", method)
        x = vh.exchange(exchange, method)
        if x.internal:
            raise _err(AccessRefused, f"cannot publish to internal {vh.where('exchange', exchange)}", method)
        props = _Props.decode(raw, 0, len(raw)) if raw != _EMPTY_PROPS else _Props()
        if _direct_reply_to(props.reply_to) or (not exchange and _direct_reply_to(routing_key)):
            raise _no_direct_reply_to(method)
        if props.delivery_mode is not None and props.delivery_mode not in (1, 2):
            raise _err(PreconditionFailed, f"invalid message: {{delivery_mode_unknown,{props.delivery_mode}}}", method)
        username = self.connection.params.username
        if props.user_id is not None and props.user_id != username:
            raise _err(
                PreconditionFailed,
                f"user_id property set to '{props.user_id}' but authenticated user was '{username}'",
                method,
            )
        ttl: float | None = None
        if props.expiration is not None:
            text = props.expiration
            # Erlang's string:to_integer: an optional sign and ASCII digits, nothing else
            # (no spaces, underscores or other scripts' digits, which Python's int() takes).
            number = _ERLANG_INTEGER.match(text)
            if number is None:
                raise _err(PreconditionFailed, f"invalid expiration '{text}': no_integer", method)
            rest = text[number.end():]
            if rest:
                shown = rest.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                shown = shown.replace("\r", "\\r").replace("\t", "\\t")
                raise _err(PreconditionFailed,
                           f'invalid expiration \'{text}\': {{leftover_string,"{shown}"}}', method)
            ms = int(number.group())
            if ms < 0:
                raise _err(PreconditionFailed, f"invalid expiration '{text}': {{value_negative,{ms}}}", method)
            ttl = ms / 1000.0
        # Sender-selected distribution: CC and BCC name more routing keys; BCC is removed
        # from the message and, unlike CC, not recorded in x-death.
        keys = [routing_key]
        route_keys = keys
        headers = props.headers
        if headers and ("CC" in headers or "BCC" in headers):
            cc, bcc = headers.get("CC"), headers.get("BCC")
            for name, value in (("CC", cc), ("BCC", bcc)):
                # An array of routing keys (its other elements ignored); anything else is
                # refused, as RabbitMQ does -- a single key given as a string too.
                if name in headers and not isinstance(value, (list, tuple)):
                    raise _err(
                        PreconditionFailed,
                        f'invalid message: {{unacceptable_type_in_header,"{name}",{_type_name(value)}}}',
                        method,
                    )
            if cc is not None:
                keys = keys + [_text(k) for k in cc if isinstance(k, (str, bytes))]
            route_keys = keys
            if bcc is not None:
                route_keys = keys + [_text(k) for k in bcc if isinstance(k, (str, bytes))]
            if "BCC" in headers:
                headers = {k: v for k, v in headers.items() if k != "BCC"}
                props.headers = headers
                raw = props.encode()
        stored = _Stored(exchange, keys, raw, headers, body, props.priority or 0, ttl)
        if self._tx:
            self._tx_publishes.append((exchange, stored, mandatory, route_keys, routing_key))
            return
        self._route(vh, now, x, stored, route_keys, mandatory, routing_key, tag)

    def _route(self, vh: _VHost, now: float, x: _Exchange, stored: _Stored,
               route_keys: list[str], mandatory: bool, routing_key: str, tag: int | None) -> None:
        queues = vh.route(x, route_keys, stored.headers)
        rejected = False
        for q in queues:
            if not vh.enqueue(q, stored, now):
                rejected = True
        if not queues and mandatory:
            self._returns.append((stored, x.name, routing_key, tag))
            self.connection._cond.notify_all()
        if rejected and tag is not None:
            self._nacked.append(tag)

    def basic_get(self, queue: str = "", no_ack: bool = False, timeout: float | None = None) -> Message | None:
        """``basic.get``: the message at the head of the queue, or None when it is empty.
        ``delivery_info`` has ``message_count``: how many stay ready."""
        method = "basic.get"
        _shortstrs(method, queue=queue)

        def op(vh: _VHost, now: float) -> tuple[_Stored, dict[str, Any], int | None] | None:
            q = vh.queue(self, queue, method)
            if q.kind == "quorum" and q.single_active:
                raise _err(
                    ResourceLocked,
                    f"cannot obtain access to locked {vh.where('queue', q.name)}. basic.get "
                    "operations are not supported by quorum queues with single active consumer",
                    method,
                )
            q.last_used = now
            for dead in q.ready.expired(now):
                vh.dead_letter(q, dead, "expired", now)
            entry = q.ready.popleft()
            if entry is None:
                return None
            tag = self._next_tag
            self._next_tag = tag + 1
            if not no_ack:
                self._unacked[tag] = _Unacked(tag, q, entry, None)
            info = {
                "delivery_tag": tag,
                "redelivered": entry.redelivered,
                "exchange": entry.msg.exchange,
                "routing_key": entry.msg.routing_key,
                "message_count": len(q.ready),
            }
            return entry.msg, info, entry.delivery_count if q.kind == "quorum" else None

        got = self._call(op)
        if got is None:
            return None
        return self._message(*got)

    def basic_consume(
        self,
        queue: str = "",
        consumer_tag: str = "",
        no_local: bool = False,
        no_ack: bool = False,
        exclusive: bool = False,
        nowait: bool = False,
        callback: Callable[[Message], Any] | None = None,
        arguments: dict[str, Any] | None = None,
        on_cancel: Callable[[str], Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """``basic.consume``; returns the consumer tag (``amq.ctag-...`` when none is given).

        ``callback(message)`` runs inside :meth:`MemoryConnection.drain_events` for each
        delivery; ``on_cancel(consumer_tag)`` when the broker cancels the consumer (its queue
        was deleted).  ``arguments`` may hold ``x-priority`` (an integer; other arguments
        are checked as RabbitMQ checks them).  A consumer needs a ``callback``
        (``TypeError``), as with the client.
        """
        if not callable(callback):
            raise TypeError(f"basic_consume needs a callback for the deliveries, not {callback!r}")
        if nowait and not consumer_tag:
            raise LocalProtocolError("basic.consume with nowait needs a consumer_tag")
        if consumer_tag and consumer_tag in self._consumer_objs:
            # As the client refuses it (RabbitMQ would close the connection: 530).
            raise LocalProtocolError(
                f"consumer tag {consumer_tag!r} is in use on channel {self.channel_id}: "
                "consumer tags are unique per channel (cancel that consumer first)"
            )
        args = _table(arguments)
        method = "basic.consume"
        _shortstrs(method, queue=queue, consumer_tag=consumer_tag)

        def op(vh: _VHost, now: float) -> str:
            if consumer_tag in self._consumer_objs:
                raise _err(NotAllowed, f"attempt to reuse consumer tag '{consumer_tag}'", method)
            q = vh.queue(self, queue, method)
            tag = consumer_tag or "amq.ctag-" + _token()
            vh.check_consume_args(q, args, method)
            prefetch = self._prefetch
            if q.kind == "quorum":
                # RabbitMQ 3.10: no channel-wide limit, no exclusive consumers (the flag
                # is accepted and ignored), a default prefetch of 2000.
                if self._global_prefetch:
                    raise _err(AMQPNotImplemented,
                               f"{vh.where('queue', q.name)} does not support global qos", method)
                prefetch = prefetch or _QUORUM_PREFETCH
            elif q.consumers and (exclusive or any(c.exclusive for c in q.consumers)):
                raise _err(AccessRefused, f"{vh.where('queue', q.name)} in exclusive use", method)
            priority = args.get("x-priority", 0)
            c = _Consumer(tag, self, q, no_ack, exclusive and q.kind == "classic", prefetch, priority)
            self._consumer_objs[tag] = c
            self._consumers[tag] = callback
            if on_cancel is not None:
                self._cancel_callbacks[tag] = on_cancel
            q.consumers.append(c)
            q.ever_consumed = True
            q.last_used = now
            vh.dispatch(q, now)
            return tag

        tag = self._call(op, sync=not nowait)
        return consumer_tag if tag is None else tag

    def basic_cancel(self, consumer_tag: str, nowait: bool = False, timeout: float | None = None) -> None:
        """``basic.cancel``: stop a consumer.  Messages its callback has received stay
        unacknowledged on this channel; deliveries whose callback has not run yet are given
        back to the queue (``basic.reject`` with requeue) -- except for a ``no_ack``
        consumer, whose messages cannot go back: its callback still runs for them, as with
        the client.  An auto-delete queue left without consumers is deleted."""
        _shortstrs("basic.cancel", consumer_tag=consumer_tag)
        no_ack: list[bool] = []

        def op(vh: _VHost, now: float) -> None:
            c = self._consumer_objs.pop(consumer_tag, None)
            if c is not None:
                no_ack.append(c.no_ack)
                self._remove_consumer(vh, c)

        self._call(op, sync=not nowait)
        callback = self._consumers.pop(consumer_tag, None)
        self._cancel_callbacks.pop(consumer_tag, None)
        if no_ack and no_ack[0] and callback is not None:
            conn = self.connection
            with conn._lock:
                self._cancelled_no_ack[consumer_tag] = callback
                conn._pending.append((_GONE, self, consumer_tag))

    def _take(self, delivery_tag: int, multiple: bool, method: str) -> list[_Unacked]:
        """Remove the acknowledged deliveries from the unacked set (RabbitMQ's rules: tag 0
        with ``multiple`` means all; an unknown tag is a channel error)."""
        unacked = self._unacked
        if multiple and delivery_tag == 0:
            records = list(unacked.values())
            unacked.clear()
            return records
        if delivery_tag not in unacked:
            raise _err(PreconditionFailed, f"unknown delivery tag {delivery_tag}", method)
        if not multiple:
            return [unacked.pop(delivery_tag)]
        tags = [t for t in unacked if t <= delivery_tag]
        return [unacked.pop(t) for t in tags]

    def _settle(self, action: str, delivery_tag: int | None, multiple: bool, method: str) -> None:
        if delivery_tag is None:  # as the client: nothing is sent
            raise EncodeError(
                f"{method} needs a delivery tag, not None: the message was not delivered by a "
                "broker (built here, or returned by basic.return); nothing was sent"
            )
        tag = delivery_tag

        def op(vh: _VHost, now: float) -> None:
            records = self._take(tag, multiple, method)
            if self._tx:
                self._tx_settles.append((action, records))
                return
            self._apply(vh, now, action, records)

        self._call(op, sync=False)

    def _apply(self, vh: _VHost, now: float, action: str, records: list[_Unacked]) -> None:
        for r in records:
            if r.consumer is not None:
                r.consumer.unacked -= 1
        if action == "requeue":
            self._requeue(vh, records, now, settled=True)
        elif action == "dead":
            for r in records:
                if not r.queue.deleted:
                    vh.dead_letter(r.queue, r.entry, "rejected", now)
        self._redispatch(vh, now)

    def basic_ack(self, delivery_tag: int | None, multiple: bool = False) -> None:
        """``basic.ack`` (an unknown tag closes the channel with ``PreconditionFailed``;
        None, a message no broker delivered, is the client's ``EncodeError``)."""
        self._settle("ack", delivery_tag, multiple, "basic.ack")

    def basic_nack(self, delivery_tag: int | None, multiple: bool = False, requeue: bool = True) -> None:
        """``basic.nack``: requeue (to the head, ``redelivered`` set) or dead-letter/drop."""
        self._settle("requeue" if requeue else "dead", delivery_tag, multiple, "basic.nack")

    def basic_reject(self, delivery_tag: int | None, requeue: bool = True) -> None:
        """``basic.reject``: requeue (to the head, ``redelivered`` set) or dead-letter/drop."""
        self._settle("requeue" if requeue else "dead", delivery_tag, False, "basic.reject")

    def basic_recover(self, requeue: bool = False, timeout: float | None = None) -> None:
        """``basic.recover``: requeue every unacknowledged message of this channel.  As in
        RabbitMQ, ``requeue=False`` is not implemented: a connection error."""
        self._recover(requeue, "basic.recover", sync=True)

    def basic_recover_async(self, requeue: bool = False) -> None:
        """``basic.recover-async``: as :meth:`basic_recover`, without a reply."""
        self._recover(requeue, "basic.recover-async", sync=False)

    def _recover(self, requeue: bool, method: str, sync: bool) -> None:
        def op(vh: _VHost, now: float) -> None:
            if not requeue:
                raise _err(AMQPNotImplemented, "requeue=false", method)
            records = list(self._unacked.values())
            self._unacked.clear()
            self._apply(vh, now, "requeue", records)

        self._call(op, sync=sync)

    # ------------------------------------------------------------------ confirms

    def confirm_select(self, nowait: bool = False, timeout: float | None = None) -> None:
        """Confirm mode: :meth:`basic_publish` returns delivery tags 1, 2, 3...; the memory
        broker confirms each publish at once."""
        if self._tx:
            raise LocalProtocolError("a channel in transaction mode cannot use confirms")

        def op(vh: _VHost, now: float) -> None:
            self._confirm = True

        self._call(op, sync=not nowait)

    def _run_returns(self) -> None:
        while self._returns:
            stored, exchange, routing_key, tag = self._returns.popleft()
            msg = self._message(stored, {
                "reply_code": 312,
                "reply_text": "NO_ROUTE",
                "exchange": exchange,
                "routing_key": routing_key,
                "publish_tag": tag,
            })
            if self.on_return is not None:
                self.on_return(msg)
            else:
                self.returned.append(msg)

    def wait_for_confirms(self, timeout: float | None = None) -> bool:
        """Run the return callbacks, then: True when every publish was acked; raises
        :class:`PublishNacked` listing the nacked tags (then forgets them), or the channel's
        error when a publish closed the channel before it could be confirmed.  Not in
        confirm mode, nothing is ever confirmed: ``LocalProtocolError`` (or, on a closed
        channel, why it closed), as the client raises."""
        if not self._confirm:
            if self._closed:
                self._raise_closed()
            raise LocalProtocolError("wait_for_confirms needs confirm mode (confirm_select())")
        if self._returns:
            self._run_returns()
        if self._closed and self._lost_publishes:
            self._raise_closed()
        if self._nacked:
            tags, self._nacked = self._nacked, []
            raise PublishNacked(f"the broker nacked {len(tags)} publish(es): {tags[:10]}", tags)
        return True

    def publish_confirmed(
        self,
        msg: Message | bytes | str,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Publish and return its confirm: True when acked and not returned, False when it
        was returned as unroutable (``mandatory``); raises :class:`PublishNacked` on a nack
        and the channel's error when the publish closed the channel.  As with the client,
        the returned message goes to ``on_return`` when set, and is not kept in
        :attr:`returned` otherwise (False reports it); nothing is published on a channel
        not in confirm mode (``LocalProtocolError``)."""
        if self._closed:
            self._raise_closed()
        if not self._confirm:
            raise LocalProtocolError("publish_confirmed needs confirm mode (confirm_select())")
        tag = self.basic_publish(msg, exchange, routing_key, mandatory)
        assert tag is not None
        if tag in self._lost_publishes:
            self._raise_closed()
        own = [r for r in self._returns if r[3] == tag]
        returned = bool(own)
        if own and self.on_return is None:
            self._returns.remove(own[0])
        if self._returns:
            self._run_returns()
        if tag in self._nacked:
            self._nacked.remove(tag)
            raise PublishNacked(f"the broker nacked publish {tag}", [tag])
        return not returned

    # ------------------------------------------------------------------ tx, flow

    def tx_select(self, timeout: float | None = None) -> None:
        """``tx.select``: from now on publishes and acks wait for :meth:`tx_commit`."""
        if self._confirm:
            raise LocalProtocolError("a channel in confirm mode cannot use transactions")

        def op(vh: _VHost, now: float) -> None:
            self._tx = True

        self._call(op)

    def _not_tx(self, method: str) -> AMQPError:
        return _err(PreconditionFailed, "channel is not transactional", method)

    def tx_commit(self, timeout: float | None = None) -> None:
        """``tx.commit``: the publishes and acks since the last commit take effect."""

        def op(vh: _VHost, now: float) -> None:
            if not self._tx:
                raise self._not_tx("tx.commit")
            publishes, self._tx_publishes = self._tx_publishes, []
            settles, self._tx_settles = self._tx_settles, []
            for xname, stored, mandatory, route_keys, routing_key in publishes:
                x = vh.exchanges.get(xname)
                if x is not None:
                    self._route(vh, now, x, stored, route_keys, mandatory, routing_key, None)
            for action, records in settles:
                self._apply(vh, now, action, records)

        self._call(op)

    def tx_rollback(self, timeout: float | None = None) -> None:
        """``tx.rollback``: forget the publishes and acks since the last commit (the
        messages acknowledged stay unacknowledged)."""

        def op(vh: _VHost, now: float) -> None:
            if not self._tx:
                raise self._not_tx("tx.rollback")
            self._tx_publishes.clear()
            settles, self._tx_settles = self._tx_settles, []
            if settles:
                restored = dict(self._unacked)
                for _, records in settles:
                    for r in records:
                        restored[r.tag] = r
                self._unacked = dict(sorted(restored.items()))

        self._call(op)

    def flow(self, active: bool, timeout: float | None = None) -> bool:
        """``channel.flow``: True (resume) is accepted; pausing (False) is not implemented
        by RabbitMQ, which closes the connection, and neither here."""

        def op(vh: _VHost, now: float) -> bool:
            if not active:
                raise _err(AMQPNotImplemented, "active=false", "channel.flow")
            return True

        return bool(self._call(op))
