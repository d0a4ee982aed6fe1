"""Pools of connections, channels and producers, kombu's way (``leveret.pools`` is this module).

::

    from leveret import pools
    from leveret.highlevel import Connection

    conn = Connection("amqp://guest:guest@localhost//")
    with pools.connections[conn].acquire(block=True) as c:      # a pooled clone of conn
        c.default_channel.queue_declare("jobs", durable=True)
    with pools.producers[conn].acquire(block=True) as producer:  # on a pooled connection
        producer.publish({"job": 1}, routing_key="jobs")         # confirmed by the broker

* :class:`Resource` is the bounded pool: :meth:`~Resource.acquire` hands out a free resource
  or makes one, up to ``limit`` in use at once (None or 0: no limit); past it, it raises
  :class:`~leveret.highlevel.exceptions.LimitExceeded` at once, or with ``block=True``
  after waiting ``timeout`` seconds (None: for ever) for a release.  ``resource.release()``
  (or leaving ``with pool.acquire() as resource:``) gives it back; a resource that broke
  while out (a connection that died, a closed channel) is closed and dropped instead, and a
  new one is made when needed.
* :class:`ConnectionPool` holds lazy clones of a :class:`~leveret.highlevel.Connection`
  (nothing is sent until a clone is used); :class:`ChannelPool` channels of one connection;
  :class:`ProducerPool` :class:`~leveret.highlevel.Producer` objects that take a connection
  from a connection pool while acquired and give it back on release.
* :data:`connections` and :data:`producers` are process-wide :class:`PoolGroup` objects:
  ``connections[conn]`` is the pool for ``conn``'s parameters (two ``Connection`` objects
  with the same URLs and options share it).  Their pools get the global limit
  (:func:`get_limit`, default 10; :func:`set_limit` resizes them); :func:`reset` closes
  them all and empties the groups.

Threads: every pool and group may be used from any number of threads (a lock guards each).
What a pool hands out is for one thread at a time.

Processes: in a child made by ``os.fork()`` every pool and group forgets what it held
*without closing it*: closing would send ``connection.close`` on the socket the child shares
with its parent and end the parent's connection.  The child's copies of those sockets are
closed (``close()``, not ``shutdown()``: the parent's connection is untouched) and its pools
start empty, so it opens connections of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import weakref
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any, Hashable, Iterator, cast

from .exceptions import LimitExceeded
from .messaging import Producer
from .messaging import Producer as _Producer  # for annotations in ProducerPool, whose Producer is its class

if TYPE_CHECKING:  # pragma: no cover  (connection imports nothing of this module at load)
    from .connection import Connection

__all__ = [
    "Resource",
    "ConnectionPool",
    "ChannelPool",
    "ProducerPool",
    "PoolGroup",
    "Connections",
    "Producers",
    "ConnectionLimitExceeded",
    "ChannelLimitExceeded",
    "connections",
    "producers",
    "register_group",
    "get_limit",
    "set_limit",
    "reset",
    "use_global_limit",
    "connection_key",
]

log = logging.getLogger("leveret.highlevel")


class ConnectionLimitExceeded(LimitExceeded):
    """Every connection of a :class:`ConnectionPool` is in use and it may not make more."""


class ChannelLimitExceeded(LimitExceeded):
    """Every channel of a :class:`ChannelPool` is in use and it may not open more."""


#: A new resource is to be made (returned by the reservation step of ``acquire``).
_NEW: Any = object()

#: Every pool of this process, so that a forked child can make them forget (see module doc).
_resources: weakref.WeakSet[Resource] = weakref.WeakSet()


def _close_quietly(pool: Resource, resource: Any) -> None:
    try:
        pool.close_resource(resource)
    except Exception:  # noqa: BLE001 - it is being thrown away; nothing else to do
        log.debug("leveret: error closing a pooled resource %r", resource, exc_info=True)


class Resource:
    """A bounded pool of reusable resources; subclasses say how to make (:meth:`new`),
    check (:meth:`prepare`, :meth:`is_usable`) and close (:meth:`close_resource`) one.

    ``Resource(limit=None, preload=None)``: at most ``limit`` resources are handed out at
    once (None or 0: no limit); ``preload`` resources are made at once.  Free resources are
    reused most-recently-released first, so idle ones stay idle.  Blocked :meth:`acquire`
    calls are served first come, first served: a released place goes to the one that has
    waited longest, never to a newcomer or to the thread that released it.
    """

    #: What :meth:`acquire` raises when the limit is reached.
    LimitExceeded: type[LimitExceeded] = LimitExceeded

    def __init__(self, limit: int | None = None, preload: int | None = None) -> None:
        self._limit = limit
        self.preload = preload or 0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # The blocked acquires, in arrival order, each waiting on a condition of its own
        # (over the pool's lock): a change wakes the first, who alone may take a place.
        self._waiting: deque[threading.Condition] = deque()
        self._free: list[Any] = []  # a stack: the last released is the next acquired
        self._dirty: dict[int, Any] = {}  # id -> resource handed out
        self._in_use = 0  # handed out, or being made for an acquire in progress
        self._closed = False
        _resources.add(self)
        self.setup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} limit={self._limit} in_use={self._in_use} free={len(self._free)}>"

    # ------------------------------------------------------------------ for subclasses

    def setup(self) -> None:
        """Make ``preload`` resources (at most ``limit``) and keep them free."""
        count = self.preload if not self._limit else min(self.preload, self._limit)
        for _ in range(count):
            self._free.append(self.new())

    def new(self) -> Any:
        """Make a resource."""
        raise NotImplementedError("a pool must define new()")

    def prepare(self, resource: Any) -> Any:
        """Called on a free resource about to be handed out; returns what to hand out
        (the same resource, or a replacement when it broke while free)."""
        return resource

    def is_usable(self, resource: Any) -> bool:
        """Whether a released resource may be handed out again (else it is closed)."""
        return True

    def release_resource(self, resource: Any) -> None:
        """Called when ``resource`` comes back, before it is kept or closed."""

    def close_resource(self, resource: Any) -> None:
        """Close ``resource`` for good."""
        resource.close()

    def _reclaimable(self, resource: Any) -> bool:
        """Whether a resource still handed out is finished with for sure (a closed
        channel), so that its place may be given to someone else."""
        return False

    def _abandon(self, resource: Any) -> None:
        """In a forked child: let go of ``resource`` without a byte on the wire."""

    # ------------------------------------------------------------------ limit

    @property
    def limit(self) -> int | None:
        """How many resources may be handed out at once (None or 0: no limit).  Setting
        it is :meth:`resize`."""
        return self._limit

    @limit.setter
    def limit(self, limit: int | None) -> None:
        self.resize(limit)

    def _check_resize(self, limit: int | None) -> None:
        with self._cond:
            in_use = len(self._dirty)
            if limit and in_use > limit:
                raise RuntimeError(
                    f"cannot shrink the pool to {limit} while {in_use} of its resources are in use "
                    f"(force=True closes them all)"
                )

    def resize(self, limit: int | None, force: bool = False, ignore_errors: bool = False, reset: bool = False) -> None:
        """Change the limit.  Growing wakes blocked :meth:`acquire` calls.  Shrinking
        closes free resources above the new limit; below the number in use it raises
        ``RuntimeError`` unless ``force`` (then every resource is closed, those in use
        too, as with ``reset``) or ``ignore_errors`` (then the extra ones are closed as
        they come back)."""
        if not force and not ignore_errors:
            self._check_resize(limit)
        elif force:
            with self._cond:
                if limit and len(self._dirty) > limit:
                    reset = True
        with self._cond:
            self._limit = limit
            self._wake(every=True)
        if reset:
            self.force_close_all(close_pool=False)
        self._shrink_down()

    def _shrink_down(self) -> None:
        extra: list[Any] = []
        with self._cond:
            limit = self._limit
            while limit and self._free and len(self._free) + self._in_use > limit:
                extra.append(self._free.pop(0))  # the longest idle first
        for resource in extra:
            _close_quietly(self, resource)

    # ------------------------------------------------------------------ acquire / release

    def _reserve(self, block: bool, timeout: float | None) -> Any:
        """Take a place among the ``limit``: a free resource, or :data:`_NEW`.

        While acquires are waiting, a place goes to the first of them (a newcomer queues
        behind them, or with ``block=False`` is refused), so that under contention no one
        waits for ever while others are served over and over.
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            me: threading.Condition | None = None  # our place in the queue, once we wait
            try:
                while True:
                    if self._closed:
                        raise RuntimeError("acquire on a closed pool")
                    limit = self._limit
                    first = not self._waiting or self._waiting[0] is me
                    if first:
                        if not limit or self._in_use < limit:
                            self._in_use += 1
                            return self._free.pop() if self._free else _NEW
                        if self._reclaim_locked():
                            continue
                    remaining = None if deadline is None else deadline - monotonic()
                    if not block or (remaining is not None and remaining <= 0):
                        if not first:
                            why = f"{len(self._waiting)} acquire(s) waiting before this one"
                        else:
                            why = f"all {limit} resources of {type(self).__name__} are in use"
                        raise self.LimitExceeded(why + (f" (waited {timeout} s)" if block else ""))
                    if me is None:
                        me = threading.Condition(self._lock)
                        self._waiting.append(me)
                    me.wait(remaining)
            finally:
                if me is not None:
                    self._waiting.remove(me)
                    # Whoever is first now may find a place free (the one we took left
                    # more, or the one we gave up on).
                    self._wake()

    def _wake(self, every: bool = False) -> None:
        """Wake the first blocked acquire (``every``: all of them, after a change that
        ends or widens every wait).  Called with the lock held."""
        if every:
            for waiter in self._waiting:
                waiter.notify()
        elif self._waiting:
            self._waiting[0].notify()

    def _reclaim_locked(self) -> bool:
        done = [key for key, r in self._dirty.items() if self._reclaimable(r)]
        for key in done:
            del self._dirty[key]
            self._in_use -= 1
        return bool(done)

    def acquire(self, block: bool = False, timeout: float | None = None) -> Any:
        """A resource for the caller alone, until ``resource.release()`` (also done by
        leaving ``with pool.acquire() as resource:``).

        When ``limit`` resources are out: raises :attr:`LimitExceeded` at once, or with
        ``block`` waits for a release, at most ``timeout`` seconds (None: for ever), then
        raises it.  ``RuntimeError`` on a pool that :meth:`force_close_all` closed.
        """
        taken = self._reserve(block, timeout)
        try:
            resource = self.prepare(self.new() if taken is _NEW else taken)
        except BaseException:
            with self._cond:
                self._in_use -= 1
                if taken is not _NEW and not self._closed:
                    self._free.append(taken)
                self._wake()
            raise
        with self._cond:
            self._dirty[id(resource)] = resource
            closed = self._closed
        if closed:  # force_close_all ran meanwhile
            self.release(resource)
            raise RuntimeError("acquire on a closed pool")
        # kombu's way: the resource's own release() gives it back to this pool.
        try:
            resource.release = functools.partial(self.release, resource)
        except AttributeError:
            pass
        return resource

    def release(self, resource: Any) -> None:
        """Give ``resource`` back: kept for reuse when it still works and the pool is
        under its limit, else closed.  Releasing twice, or releasing what this pool did
        not hand out, does nothing -- unless the pool handed the same resource out again
        in between: then the second release gives back the new holder's (the pool hands
        out the object itself, as kombu's does, and cannot tell the holders apart), so do
        not keep using a resource once released."""
        with self._cond:
            if self._dirty.get(id(resource)) is not resource:
                return
            del self._dirty[id(resource)]
        try:
            self.release_resource(resource)
            usable = self.is_usable(resource)
        except Exception:  # noqa: BLE001 - a resource that fails its check is not reused
            log.debug("leveret: released resource %r failed its check", resource, exc_info=True)
            usable = False
        with self._cond:
            self._in_use -= 1
            limit = self._limit
            keep = usable and not self._closed and (not limit or len(self._free) + self._in_use < limit)
            if keep:
                self._free.append(resource)
            self._wake()
        if not keep:
            _close_quietly(self, resource)

    def replace(self, resource: Any) -> None:
        """Close ``resource`` (handed out by this pool) instead of reusing it; its place
        goes to the next :meth:`acquire`."""
        with self._cond:
            if self._dirty.get(id(resource)) is not resource:
                return
            del self._dirty[id(resource)]
            self._in_use -= 1
            self._wake()
        _close_quietly(self, resource)

    def force_close_all(self, close_pool: bool = True) -> None:
        """Close every resource, free or handed out.  With ``close_pool`` (the default)
        the pool is closed too: :meth:`acquire` raises ``RuntimeError`` from then on and
        released resources are closed."""
        with self._cond:
            items = self._free + list(self._dirty.values())
            self._free.clear()
            self._in_use -= len(self._dirty)
            self._dirty.clear()
            if close_pool:
                self._closed = True
            self._wake(every=True)
        for resource in items:
            _close_quietly(self, resource)

    @property
    def closed(self) -> bool:
        """True once :meth:`force_close_all` closed the pool."""
        return self._closed

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock when fork() ran: a new one.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._waiting = deque()
        items = self._free + list(self._dirty.values())
        self._free = []
        self._dirty = {}
        self._in_use = 0
        for resource in items:
            try:
                self._abandon(resource)
            except Exception:  # noqa: BLE001 - best effort in a fresh child
                log.debug("leveret: error abandoning %r after fork", resource, exc_info=True)


# ---------------------------------------------------------------------------------- fork


def _abandon_connection(conn: Any) -> None:
    """Make a high-level Connection forget, without a byte on the wire, the transport and
    channels it had in the parent: in the child it connects afresh on next use.  (Every
    Connection does this by itself in a forked child; a pool's hook may run first.)"""
    forget = getattr(conn, "_after_fork_in_child", None)
    if forget is not None:
        forget()


# ---------------------------------------------------------------------------------- pools


def _is_dead(conn: Any) -> bool:
    """A high-level Connection that was connected and is not any more (a lazy one that
    never connected is not dead: it has nothing to lose)."""
    tconn = getattr(conn, "_connection", None)
    return tconn is not None and not tconn.is_open


class ConnectionPool(Resource):
    """A pool of clones of ``connection`` (:meth:`Connection.clone`): lazy, so a clone
    connects on first use.  ``ConnectionPool(connection, limit=None, preload=None)``.

    A connection that died (closed by the broker, network lost) is closed and replaced
    by a new clone -- when it is released, and when it died while free.
    """

    LimitExceeded = ConnectionLimitExceeded

    def __init__(self, connection: Any, limit: int | None = None, preload: int | None = None) -> None:
        self.connection = connection
        super().__init__(limit=limit, preload=preload)

    def new(self) -> Any:
        return self.connection.clone()

    def acquire(self, block: bool = False, timeout: float | None = None) -> Connection:
        """A connection (a clone of :attr:`connection`) for the caller alone, until its
        ``release()``: see :meth:`Resource.acquire`."""
        return cast("Connection", super().acquire(block, timeout))

    def prepare(self, resource: Any) -> Any:
        if _is_dead(resource):
            _close_quietly(self, resource)
            return self.new()
        return resource

    def is_usable(self, resource: Any) -> bool:
        return not _is_dead(resource)

    def close_resource(self, resource: Any) -> None:
        # ``close`` is the class's release(): the instance's ``release`` is this pool's.
        resource.close()

    def _abandon(self, resource: Any) -> None:
        _abandon_connection(resource)

    @contextlib.contextmanager
    def acquire_channel(self, block: bool = False) -> Iterator[tuple[Any, Any]]:
        """``with pool.acquire_channel() as (connection, channel):`` a pooled connection
        and its default channel; the connection is released at the end."""
        with self.acquire(block=block) as connection:
            yield connection, connection.default_channel


class ChannelPool(Resource):
    """A pool of channels of one connection.  ``ChannelPool(connection, limit=None,
    preload=None)``.

    A released channel that was closed (by the broker, after a channel error, or because
    the connection died) is dropped; one that closes while free is replaced by a new one at
    the next acquire.  ``with pool.acquire() as channel:`` *closes* the channel at the end
    (that is what a channel's ``with`` does); its place in the pool is given back.
    """

    LimitExceeded = ChannelLimitExceeded

    def __init__(self, connection: Any, limit: int | None = None, preload: int | None = None) -> None:
        self.connection = connection
        super().__init__(limit=limit, preload=preload)

    def new(self) -> Any:
        return self.connection.channel()

    def prepare(self, resource: Any) -> Any:
        return resource if resource.is_open else self.new()

    def is_usable(self, resource: Any) -> bool:
        return bool(resource.is_open)

    def close_resource(self, resource: Any) -> None:
        if resource.is_open:
            resource.close()

    def _reclaimable(self, resource: Any) -> bool:
        return not resource.is_open

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        # The channels lived on this connection's transport, the parent's socket.
        _abandon_connection(self.connection)


_releasing_classes: dict[type, type] = {}
_releasing_lock = threading.Lock()


def _release_on_exit(cls: type) -> type:
    """``cls`` with an ``__exit__`` that also calls ``release()`` (so that ``with
    pool.acquire() as producer:`` gives the producer back, as in kombu)."""
    with _releasing_lock:
        sub = _releasing_classes.get(cls)
        if sub is None:
            base_exit = cls.__exit__  # type: ignore[attr-defined]

            def __exit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
                try:
                    return base_exit(self, exc_type, exc, tb)
                finally:
                    self.release()

            sub = type(cls.__name__, (cls,), {
                "__exit__": __exit__, "__module__": cls.__module__,
                "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
            })
            _releasing_classes[cls] = sub
        return sub


class ProducerPool(Resource):
    """A pool of :class:`~leveret.highlevel.Producer` objects.  ``ProducerPool(connections,
    limit=None, preload=None, Producer=None)``; ``connections`` is a
    :class:`ConnectionPool`.

    :meth:`acquire` hands out a producer bound to a connection it acquired from
    ``connections``; the producer publishes on
    that connection's default channel, in confirm mode.  ``producer.release()`` (or leaving
    ``with pool.acquire() as producer:``, which first flushes pipelined publishes) gives
    the connection back to ``connections`` and the producer to this pool.  A producer
    released with pipelined publishes still unconfirmed is not reused: flush first.
    """

    Producer: Any = Producer

    def __init__(
        self, connections: ConnectionPool, limit: int | None = None, preload: int | None = None,
        Producer: Any = None,
    ) -> None:
        self.connections = connections
        self.Producer = _release_on_exit(Producer or type(self).Producer)
        super().__init__(limit=limit, preload=preload)

    def create_producer(self) -> Any:
        """A producer bound to nothing yet."""
        return self.Producer(None)

    def new(self) -> Any:
        return self.create_producer()

    def acquire(self, block: bool = False, timeout: float | None = None) -> _Producer:
        """A producer bound to a connection of ``connections``.  ``block`` and
        ``timeout`` apply to both waits -- for a free producer, then for a free
        connection -- so with ``block=False`` a pool whose connections are all in use
        raises :class:`ConnectionLimitExceeded` at once."""
        deadline = None if timeout is None else monotonic() + timeout
        producer = super().acquire(block=block, timeout=timeout)
        if getattr(producer, "__connection__", None) is None:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                conn = self.connections.acquire(block=block, timeout=remaining)
            except BaseException:
                self.release(producer)
                raise
            try:
                producer.revive(conn)
            except BaseException:
                conn.release()
                self.release(producer)
                raise
            producer.__connection__ = conn
        return cast(_Producer, producer)

    def release_resource(self, resource: Any) -> None:
        conn = getattr(resource, "__connection__", None)
        resource.__connection__ = None
        try:
            resource.revive(None)
        finally:
            if conn is not None:
                conn.release()

    def release(self, resource: Any) -> None:
        with self._cond:
            ours = self._dirty.get(id(resource)) is resource
        if ours:
            # Publishes it has not settled (pipelined, or lost with a connection) would
            # reach the next user's flush(): such a producer is not reused.
            resource._pool_discard = bool(
                getattr(resource, "pending", 0) or getattr(resource, "_lost", None)
                or getattr(resource, "_stale_returns", None)
            )
        super().release(resource)

    def is_usable(self, resource: Any) -> bool:
        return not getattr(resource, "_pool_discard", False)

    def close_resource(self, resource: Any) -> None:
        """A producer owns no connection of its own; one still bound to it (the producer was
        out when :meth:`force_close_all` ran) is closed and its place in ``connections``
        given back -- the producer's user may still hold it, so it is not handed on."""
        conn = getattr(resource, "__connection__", None)
        if conn is None:
            return
        resource.__connection__ = None
        try:
            resource.revive(None)
        finally:
            self.connections.replace(conn)


# ---------------------------------------------------------------------------------- groups


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((str(k), _freeze(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value  # type: ignore[no-any-return]


# Connection arguments whose effect is in the parsed URLs (``_Target.params``).
_URL_ARGS = frozenset({
    "hostname", "userid", "password", "virtual_host", "port", "ssl", "transport",
    "connect_timeout", "heartbeat", "login_method", "alternates",
})


def connection_key(connection: Any) -> Hashable:
    """What :class:`PoolGroup` keys a connection by: its ``__eqhash__()`` when it has one
    (kombu's hook), else, for a high-level Connection, every URL's parsed parameters
    (host, port, credentials, virtual host, TLS, heartbeat, timeouts...) with its other
    arguments (transport options, failover strategy, recovery settings...) and TLS
    context -- so connections made alike share pools, however their URLs are spelled,
    and memory:// connections to different brokers do not.  Anything else is its own key.
    """
    eqhash = getattr(connection, "__eqhash__", None)
    if callable(eqhash):
        return eqhash()  # type: ignore[no-any-return]
    targets = getattr(connection, "_targets", None)
    if targets is None:
        return ("object", id(connection))
    init_args = getattr(connection, "_init_args", None) or {}
    return (
        type(connection),
        tuple((t.kind, dataclasses.astuple(t.params)) for t in targets),
        _freeze({k: v for k, v in init_args.items() if k not in _URL_ARGS}),
        _freeze(getattr(connection, "_ssl_context", None)),
    )


class _UseGlobalLimit:
    def __repr__(self) -> str:
        return "use_global_limit"


#: A group's ``limit`` meaning "the global limit (:func:`get_limit`) when the pool is made".
use_global_limit: Any = _UseGlobalLimit()

_limit: list[int] = [10]
_groups: list[PoolGroup] = []
_groups_lock = threading.RLock()


class PoolGroup:
    """Pools by connection: ``group[connection]`` is the pool for ``connection``'s
    parameters (see :func:`connection_key`), made on first use by :meth:`create` with the
    group's ``limit`` (:data:`use_global_limit`: the global one at that moment)."""

    def __init__(self, limit: Any = None) -> None:
        self.limit = limit
        self._pools: dict[Hashable, Resource] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self._pools)} pool(s), limit={self.limit!r}>"

    def create(self, resource: Any, limit: int | None) -> Resource:
        """Make the pool for ``resource`` (a connection)."""
        raise NotImplementedError("a PoolGroup must define create()")

    def __getitem__(self, resource: Any) -> Any:
        key = connection_key(resource)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                limit = get_limit() if self.limit is use_global_limit else self.limit
                pool = self._pools[key] = self.create(resource, limit)
            return pool

    def __contains__(self, resource: Any) -> bool:
        return connection_key(resource) in self._pools

    def __delitem__(self, resource: Any) -> None:
        with self._lock:
            del self._pools[connection_key(resource)]

    def __len__(self) -> int:
        return len(self._pools)

    def values(self) -> list[Resource]:
        """The pools made so far."""
        with self._lock:
            return list(self._pools.values())

    def clear(self) -> None:
        """Forget every pool (without closing them: see :func:`reset`)."""
        with self._lock:
            self._pools.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._pools = {}


class Connections(PoolGroup):
    """Connection pools by connection parameters (:data:`connections`)."""

    def __getitem__(self, resource: Any) -> ConnectionPool:
        return cast(ConnectionPool, super().__getitem__(resource))

    def create(self, resource: Any, limit: int | None) -> Resource:
        pool_factory = getattr(resource, "Pool", None)
        if pool_factory is None:
            return ConnectionPool(resource, limit=limit)
        return pool_factory(limit=limit)  # type: ignore[no-any-return]


class Producers(PoolGroup):
    """Producer pools by connection parameters (:data:`producers`), each on the
    matching pool of :data:`connections`."""

    def __getitem__(self, resource: Any) -> ProducerPool:
        return cast(ProducerPool, super().__getitem__(resource))

    def create(self, resource: Any, limit: int | None) -> Resource:
        return ProducerPool(connections[resource], limit=limit)


def register_group(group: PoolGroup) -> PoolGroup:
    """Have :func:`set_limit`, :func:`reset` and fork handling cover ``group``."""
    with _groups_lock:
        _groups.append(group)
    return group


#: Connection pools, by connection parameters: ``connections[conn].acquire()``.
connections: Connections = register_group(Connections(limit=use_global_limit))  # type: ignore[assignment]
#: Producer pools, by connection parameters: ``producers[conn].acquire()``.
producers: Producers = register_group(Producers(limit=use_global_limit))  # type: ignore[assignment]


def _all_pools() -> list[Resource]:
    with _groups_lock:
        groups = list(_groups)
    return [pool for group in groups for pool in group.values()]


def get_limit() -> int:
    """The limit of the pools the groups make (default 10; 0: no limit)."""
    return _limit[0]


def set_limit(limit: int | None, force: bool = False, reset_after: bool = False, ignore_errors: bool = False) -> int:
    """Set the global limit and resize every pool of the groups to it.

    Shrinking a pool below the number of its resources in use raises ``RuntimeError``
    (nothing is changed) unless ``force`` (such pools close all their resources) or
    ``ignore_errors`` (extra resources are closed as they come back).  ``reset_after``:
    :func:`reset` afterwards.  Returns the limit.
    """
    limit = limit or 0
    with _groups_lock:
        pools = _all_pools()
        if not force and not ignore_errors:
            for pool in pools:
                pool._check_resize(limit)
        _limit[0] = limit
        for pool in pools:
            pool.resize(limit, force=force, ignore_errors=ignore_errors)
    if reset_after:
        reset()
    return limit


def reset(*args: Any, **kwargs: Any) -> None:
    """Close every pool of the groups (their connections are closed, ``connection.close``
    on the wire) and empty the groups: the next ``connections[conn]`` makes a new pool.
    Pools made directly (``conn.Pool()``) are not touched."""
    for pool in _all_pools():
        try:
            pool.force_close_all()
        except Exception:  # noqa: BLE001 - close the others regardless
            log.warning("leveret: error closing pool %r", pool, exc_info=True)
    with _groups_lock:
        for group in _groups:
            group.clear()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: forget, never close (see module doc)."""
    global _groups_lock, _releasing_lock
    _groups_lock = threading.RLock()
    _releasing_lock = threading.Lock()
    for pool in list(_resources):
        pool._after_fork_in_child()
    for group in _groups:
        group._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
