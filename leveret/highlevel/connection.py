"""The high-level :class:`Connection` (alias :class:`BrokerConnection`), kombu's way.

A :class:`Connection` is a description of where the broker is (one URL, or several for
failover) plus, once used, one *transport connection* -- a :class:`leveret.client.Connection`
for ``amqp://``/``amqps://`` (also spelled ``pyamqp://``, ``leveret://``), or a
``leveret.highlevel.memory.MemoryConnection`` for ``memory://``.  It is lazy: nothing goes
on the wire until first use (:meth:`Connection.connect`, :attr:`Connection.connection`,
:attr:`Connection.default_channel`, :meth:`Connection.channel`,
:meth:`Connection.drain_events`).

URLs follow kombu: ``amqp://user:pass@host:port/vhost``; ``amqp://host//`` and
``amqp://host/`` (and ``amqp://host``) all mean the virtual host ``/``, which may also be
written ``%2F``.  Several URLs are separated by ``;`` (or given as a list); when one cannot
be reached the next is tried (``failover_strategy`` ``"round-robin"`` or ``"shuffle"``, or,
as in kombu, a callable that gets the list of URLs, as given, and returns an iterator over
them, endless like ``itertools.cycle`` or not: each attempt takes at most one URL per URL of
the connection from it, and the iterator is kept for the next attempt -- a new one is asked
for when it is exhausted).  Query options are :func:`leveret.client.parse_url`'s
(``heartbeat``, ``connection_timeout``, ``auth_mechanism``, ``verify``, ``cacertfile``...)
or kombu's names for them: ``ssl=true`` (TLS, port 5671 unless given), ``connect_timeout``,
``login_method``, ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile``, ``ssl_cert_reqs``
(``CERT_NONE`` turns verification off); ``insist`` is ignored.  Others are refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import threading
import time
import traceback
import weakref
from collections import deque
from itertools import count
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..client import (
    ChannelClosedError,
    ConnectionClosedError,
    ConnectionForced,
    ConnectionLost,
    ConnectionParameters,
    InternalError,
    ResourceError,
    URLError,
    parse_url,
)
from ..client import Connection as ClientConnection
from ..client._shared import inherited_through_fork
from ..client.url import _bool as url_bool
from ..wire.errors import HardError, RemoteProtocolError, SoftError, copy_error
from .compression import DEFAULT_MAX_SIZE
from .exceptions import OperationalError
from .recovery import LOSS_ERRORS, RecoveringChannel, RecoveryEvent, Topology, recover, replay
from .transport import TransportChannel, TransportConnection

if TYPE_CHECKING:  # pragma: no cover  (imported where used: they import this module)
    from ..client import Message as ClientMessage
    from .entity import Exchange, Queue
    from .exceptions import MessageReturned
    from .message import Message as HLMessage
    from .messaging import Consumer, Producer
    from .pools import ChannelPool, ConnectionPool
    from .simple import SimpleBuffer, SimpleQueue

__all__ = ["Connection", "BrokerConnection", "client_of", "parse_hostnames"]

log = logging.getLogger("leveret.highlevel")

#: URL scheme / transport name -> transport kind.
TRANSPORT_ALIASES = {
    "amqp": "amqp",
    "pyamqp": "amqp",
    "amqps": "amqp",
    "leveret": "amqp",
    "librabbitmq": "amqp",
    "memory": "memory",
}

# transport_options handed to leveret.client.Connection's constructor ...
_CLIENT_OPTIONS = frozenset({
    "rpc_timeout", "blocked_timeout", "max_body_size", "client_properties", "on_blocked",
    "on_unblocked", "ssl_context",
})
# ... and those that are ConnectionParameters fields.
_PARAM_OPTIONS = frozenset({
    "frame_max", "channel_max", "protocol", "auth_mechanism", "verify", "check_hostname",
    "cacertfile", "certfile", "keyfile", "server_name_indication",
})
# transport_options that set the retry policy of the implicit connect (kombu's names).
_RETRY_OPTIONS = frozenset({"max_retries", "interval_start", "interval_step", "interval_max", "timeout"})

_RECOVERABLE_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLost, ConnectionForced, InternalError, ResourceError, ConnectionClosedError,
    OperationalError, OSError,  # OSError covers refused, reset, TimeoutError (socket.timeout)
)
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLost, HardError, ConnectionClosedError, RemoteProtocolError, OperationalError,
    OSError,
)
_RECOVERABLE_CHANNEL_ERRORS: tuple[type[BaseException], ...] = (ChannelClosedError,)
_CHANNEL_ERRORS: tuple[type[BaseException], ...] = (SoftError, ChannelClosedError)

# Transport channels opened by a high-level Connection -> that Connection, weakly both ways:
# the Connection holds its default channel, and a value holding its own key would keep the
# entry, the Connection, its socket and its I/O thread alive for ever once dropped.
_owners: weakref.WeakKeyDictionary[Any, weakref.ref[Connection]] = weakref.WeakKeyDictionary()
# Every high-level Connection of this process, so that a forked child can make them forget
# the parent's (see Connection's docstring).
_connections: weakref.WeakSet[Connection] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: every Connection starts afresh."""
    for conn in list(_connections):
        try:
            conn._after_fork_in_child()
        except Exception:  # noqa: BLE001 - the child must go on
            log.debug("leveret: error resetting %r after fork", conn, exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def client_of(channel: Any) -> Connection | None:
    """The high-level :class:`Connection` a transport channel belongs to, if any (kombu's
    ``channel.connection.client``)."""
    try:
        ref = _owners.get(channel)
    except TypeError:
        ref = None
    owner = ref() if ref is not None else None
    if owner is not None:
        return owner
    return getattr(getattr(channel, "connection", None), "client", None)


@dataclasses.dataclass
class _Target:
    """One place to connect to."""

    kind: str  # "amqp" or "memory"
    scheme: str  # as written: amqp, pyamqp, amqps, memory, ...
    params: ConnectionParameters

    def as_uri(self, include_password: bool = False, mask: str = "**") -> str:
        p = self.params
        vhost = "/" if p.virtual_host == "/" else quote(p.virtual_host, safe="")
        if self.kind == "memory":
            return f"memory://{'' if vhost == '/' else '/' + vhost}"
        scheme = self.scheme
        if p.ssl and scheme == "amqp":
            scheme = "amqps"
        password = quote(p.password, safe="") if include_password else mask
        host = f"[{p.host}]" if ":" in p.host else p.host
        return f"{scheme}://{quote(p.username, safe='')}:{password}@{host}:{p.port}/{vhost}"


#: ``connect_timeout`` unless given or set by the URL (kombu's default).
DEFAULT_CONNECT_TIMEOUT = 5.0


def _url_sets(item: str, option: str) -> bool:
    """Whether the URL ``item`` names ``option`` (leveret's name) in its query string,
    or kombu's name for it."""
    if "://" not in item:
        return False
    given = parse_qs(urlsplit(item).query)
    return option in given or any(_KOMBU_QUERY.get(name) == option for name in given)


def parse_hostnames(hostname: str | Iterable[str] | None) -> list[str]:
    """``"url1;url2"`` or ``[url1, url2]`` -> ``[url1, url2]`` (stripped, empty ones dropped)."""
    if hostname is None:
        return ["localhost"]
    items = hostname.split(";") if isinstance(hostname, str) else list(hostname)
    out = [item.strip() for item in items if item and item.strip()]
    return out or ["localhost"]


#: URL options under kombu's names (its Connection's keywords) -> leveret.client's.
_KOMBU_QUERY = {
    "connect_timeout": "connection_timeout",
    "login_method": "auth_mechanism",
    "ssl_ca_certs": "cacertfile",
    "ssl_certfile": "certfile",
    "ssl_keyfile": "keyfile",
}


def _from_kombu_query(rest: str) -> tuple[str, bool]:
    """The part of an amqp URL after ``://`` with kombu's query options put in leveret's
    terms (``connect_timeout``, ``login_method``, ``ssl_ca_certs``/``ssl_certfile``/
    ``ssl_keyfile``, ``ssl_cert_reqs``, and ``insist``, which AMQP 0-9-1 has no more and
    is dropped), and whether ``ssl`` was asked for (``ssl=true``).  Other options pass
    through to :func:`leveret.client.parse_url`, which refuses what it does not know."""
    base, sep, query = rest.partition("?")
    if not sep or not query:
        return rest, False
    ssl = False
    out = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if name == "ssl":
            ssl = url_bool("ssl", unquote(value))  # as leveret's own boolean options
        elif name == "ssl_cert_reqs":
            # ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED, by name: a client verifies the
            # broker's certificate unless told CERT_NONE.
            reqs = unquote(value).strip().lower().removeprefix("ssl.").removeprefix("cert_")
            if reqs not in ("none", "optional", "required"):
                raise URLError(
                    f"ssl_cert_reqs={unquote(value)!r} in the URL must be CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED"
                )
            out.append(f"verify={'false' if reqs == 'none' else 'true'}")
        elif name == "insist":
            continue
        else:
            out.append(_KOMBU_QUERY.get(name, name) + eq + value)
    return base + ("?" + "&".join(out) if out else ""), ssl


def _parse_target(item: str, transport: str | None) -> tuple[_Target, bool]:
    """One URL or hostname -> a target, and whether it named its port."""
    if "://" in item:
        scheme, rest = item.split("://", 1)
        scheme = scheme.lower()
        kind = TRANSPORT_ALIASES.get(scheme)
        if kind is None:
            raise ValueError(
                f"unsupported transport {scheme!r} in {item.split('@')[-1]!r} "
                f"(known: {', '.join(sorted(TRANSPORT_ALIASES))})"
            )
        if kind == "memory":
            path = urlsplit(item).path
            vhost = unquote(path[1:]) if path not in ("", "/") else "/"
            return _Target("memory", "memory", ConnectionParameters(virtual_host=vhost)), False
        # leveret.client.parse_url already reads kombu's "//" (vhost "/") and "%2F".
        rest, ssl = _from_kombu_query(rest)
        params = parse_url(("amqps" if scheme == "amqps" else "amqp") + "://" + rest)
        has_port = urlsplit("amqp://" + rest).port is not None
        if ssl and not params.ssl:
            params.ssl = True
            if not has_port:
                params.port = 5671
        return _Target("amqp", scheme, params), has_port
    if "@" in item:
        # "user:password@host" is no host name; taken as one, the password would show in
        # repr(), as_uri(), info() and every connect error.  Not quoted here either.
        raise ValueError(
            "a host name cannot hold a user or password: write a URL "
            "(amqp://user:password@host:port/vhost) or pass userid= and password="
        )
    name = (transport or "amqp").lower()
    kind = TRANSPORT_ALIASES.get(name)
    if kind is None:
        raise ValueError(f"unsupported transport {name!r} (known: {', '.join(sorted(TRANSPORT_ALIASES))})")
    params = ConnectionParameters()
    host, has_port = item, False
    if kind == "amqp" and item.count(":") == 1 and not item.startswith("["):
        host, _, port = item.partition(":")
        if not port.isdigit():
            raise ValueError(f"the port in host name {item!r} must be a number")
        params.port = int(port)
        has_port = True
    params.host = host.strip("[]") or "localhost"
    if name == "amqps":
        params.ssl = True
        params.port = params.port if has_port else 5671
    return _Target(kind, name, params), has_port


class Connection:
    """A connection to a broker, kombu's way (``BrokerConnection`` is the same class).

    ``Connection("amqp://guest:guest@localhost:5672//")``; keyword arguments override the
    URL's parts: ``userid``, ``password``, ``virtual_host``, ``port``, ``ssl`` (True, a
    dict of kombu's ``ca_certs``/``certfile``/``keyfile``/``cert_reqs``/``server_hostname``/
    ``check_hostname`` -- False skips the host-name check only, the chain is still
    verified unless ``cert_reqs`` is ``CERT_NONE`` -- or an ``ssl.SSLContext``),
    ``connect_timeout`` (seconds; None = the URL's ``connection_timeout``, else 5),
    ``heartbeat`` (seconds; None =
    the URL's or the client's default of 60 -- the client's I/O thread sends and checks
    heartbeats by itself, so they cost nothing; 0 leaves the choice to the broker, as
    AMQP's tuning rule says), ``login_method``.
    ``transport`` picks the transport for a bare hostname (``"amqp"``, ``"memory"``);
    carrot's ``backend_cls`` is accepted and ignored (leveret is the backend).
    ``transport_options``: ``rpc_timeout``, ``blocked_timeout``, ``max_body_size``,
    ``client_properties``, ``frame_max``, ``channel_max``, ``protocol`` (``"0-8"``: it has
    no publisher confirms, so producers need ``confirm=False``, and ``SimpleQueue``, which
    always confirms, can only get: its put() raises), ``on_blocked``/``on_unblocked`` for
    the client connection; ``broker`` for ``memory://``;
    ``max_retries``/``interval_start``/``interval_step``/``interval_max`` as the retry
    policy of the implicit connect on first use (default: one attempt at each URL).

    ``autorecover=True`` (default False: a lost connection is reported, as it always was)
    makes the connection recover by itself (see :mod:`leveret.highlevel.recovery`): its
    channels record what they declare, bind and consume; when a producer's publish or
    :meth:`drain_events` (or any channel call) meets a lost connection, it reconnects with
    back-off (``recovery_policy``: ``max_retries`` (None: for ever), ``interval_start``,
    ``interval_step``, ``interval_max``, ``timeout``), re-declares that topology, moves
    the channels (with their consumers) to the new connection, and the operation carries
    on; producers republish what the broker had not confirmed.  A channel the broker closed
    with a channel error (``NotFound``...) is not recovered (see
    :mod:`~leveret.highlevel.recovery`).  ``on_connection_lost(exc)``,
    ``on_recovery_started()``, ``on_recovery_succeeded()``, ``on_recovery_failed(exc)``
    are called, and :attr:`recovery_events` lists what happened.

    Nothing is sent until the connection is first used.  Not thread-safe: share it
    between threads only through pools, or give each thread its own channels.

    In a child made by ``os.fork()`` the connection starts afresh, as after
    :meth:`release` but without a byte on the wire: the transport connection it had is the
    parent's (see :meth:`leveret.client.Connection.abandon`), its channels and consumers
    stay with the parent (the child's copies are closed), what it recorded is forgotten, and
    it connects anew, as the child's own, on first use.  The parent's connection is untouched.
    """

    _is_leveret_hl_connection = True

    def __init__(
        self,
        hostname: str | Iterable[str] | None = "amqp://guest:guest@localhost:5672//",
        userid: str | None = None,
        password: str | None = None,
        virtual_host: str | None = None,
        port: int | None = None,
        ssl: Any = False,
        transport: str | None = None,
        connect_timeout: float | None = None,
        heartbeat: float | None = None,
        transport_options: dict[str, Any] | None = None,
        failover_strategy: str | Callable[[list[str]], Iterable[str]] = "round-robin",
        login_method: str | None = None,
        insist: bool = False,
        uri_prefix: str | None = None,
        alternates: Iterable[str] | None = None,
        autorecover: bool = False,
        recovery_policy: dict[str, Any] | None = None,
        on_connection_lost: Callable[[BaseException | None], Any] | None = None,
        on_recovery_started: Callable[[], Any] | None = None,
        on_recovery_succeeded: Callable[[], Any] | None = None,
        on_recovery_failed: Callable[[BaseException], Any] | None = None,
        backend_cls: Any = None,
        **kwargs: Any,
    ) -> None:
        del backend_cls  # carrot's choice of backend library
        if kwargs:
            raise TypeError(f"unexpected Connection arguments: {', '.join(sorted(kwargs))}")
        self._init_args: dict[str, Any] = dict(
            hostname=hostname, userid=userid, password=password, virtual_host=virtual_host,
            port=port, ssl=ssl, transport=transport, connect_timeout=connect_timeout,
            heartbeat=heartbeat, transport_options=transport_options,
            failover_strategy=failover_strategy, login_method=login_method,
            alternates=alternates, autorecover=autorecover, recovery_policy=recovery_policy,
            on_connection_lost=on_connection_lost, on_recovery_started=on_recovery_started,
            on_recovery_succeeded=on_recovery_succeeded, on_recovery_failed=on_recovery_failed,
        )
        #: Recover by itself from a lost connection (see :mod:`leveret.highlevel.recovery`).
        self.autorecover = bool(autorecover)
        #: The back-off of a recovery (keys as :meth:`ensure_connection`'s arguments).
        self.recovery_policy: dict[str, Any] = dict(recovery_policy or {})
        self.on_connection_lost = on_connection_lost
        self.on_recovery_started = on_recovery_started
        self.on_recovery_succeeded = on_recovery_succeeded
        self.on_recovery_failed = on_recovery_failed
        #: What the channels of this connection declared, bound and consumed (recorded
        #: with ``autorecover``).
        self.topology = Topology()
        #: What recoveries happened (:class:`~leveret.highlevel.recovery.RecoveryEvent`),
        #: oldest first; the last 10000 are kept.  The latest 16 hold their error as it was
        #: raised; older ones a copy without traceback (a traceback's frames hold the lost
        #: transport connection).
        self.recovery_events: deque[RecoveryEvent] = deque(maxlen=10000)
        #: How many recoveries succeeded.
        self.recoveries = 0
        #: Counts the transport connections opened (a recovering channel's ``generation``).
        self.recovery_generation = 0
        self._was_connected = False
        # The parent's pid, in a forked child until this object connects or is released
        # there: what the parent made on it (channels, producers) is not to be recovered.
        self._forked_from: int | None = None
        self._in_recovery = False
        # A recovery that a wait with a deadline paused (see _drain_recovering): where its
        # back-off stood, for the next call to go on from there.  None when none is under way.
        self._recovery_resume: dict[str, Any] | None = None
        self.transport_options: dict[str, Any] = dict(transport_options or {})
        self.failover_strategy = failover_strategy
        self.insist = insist
        self.uri_prefix = uri_prefix
        if not (failover_strategy in ("round-robin", "shuffle") or callable(failover_strategy)):
            raise ValueError(f"failover_strategy must be 'round-robin', 'shuffle' or a callable, not {failover_strategy!r}")

        self._ssl_context: Any = self.transport_options.get("ssl_context")
        ssl_options: dict[str, Any] = {}
        if isinstance(ssl, dict):
            ssl_options = self._ssl_options(ssl)
            ssl = True
        elif ssl is not None and not isinstance(ssl, bool):
            self._ssl_context = ssl  # an ssl.SSLContext
            ssl = True

        names = parse_hostnames(hostname) + parse_hostnames(alternates) if alternates else parse_hostnames(hostname)
        targets: list[_Target] = []
        for item in names:
            target, has_port = _parse_target(item, transport)
            p = target.params
            if target.kind == "amqp":
                if userid is not None:
                    p.username = userid
                if password is not None:
                    p.password = password
                if port is not None:
                    p.port = int(port)
                    has_port = True
                if ssl and not p.ssl:
                    p.ssl = True
                    if not has_port:
                        p.port = 5671
                for name, value in ssl_options.items():
                    setattr(p, name, value)
                if heartbeat is not None:
                    p.heartbeat = int(heartbeat)
                if connect_timeout:
                    p.connection_timeout = float(connect_timeout)
                elif connect_timeout is None and not _url_sets(item, "connection_timeout"):
                    p.connection_timeout = DEFAULT_CONNECT_TIMEOUT
                if login_method:
                    p.auth_mechanism = login_method.upper()
                for name in _PARAM_OPTIONS & self.transport_options.keys():
                    setattr(p, name, self.transport_options[name])
            if virtual_host is not None:
                p.virtual_host = virtual_host or "/"
            if target.kind == "amqp":
                p.check()  # here, before as_uri() below quotes the password
            targets.append(target)
        self._targets = targets
        self._current = 0
        #: Seconds to wait for the TCP (and TLS) connection and the broker's handshake.
        self.connect_timeout = connect_timeout or targets[0].params.connection_timeout
        # A callable failover strategy gets the URLs as given (kombu's ``alt``) and
        # returns an iterator of them, endless or not; it is kept between attempts (kombu's
        # ``cycle``) and called again when exhausted.
        self._urls = names
        self._url_index: dict[str, int] = {}
        for index, (name, target) in enumerate(zip(names, targets)):
            for key in (name, target.as_uri(include_password=True), target.as_uri()):
                self._url_index.setdefault(key, index)
        self._cycle: Iterator[str] | None = None

        self._connection: TransportConnection | None = None
        self._default_channel: TransportChannel | None = None
        # The Consumers consuming on channels of this connection (id -> weak reference).
        self._consumers: dict[int, weakref.ref[Any]] = {}
        # The lock guards the transport connection, the default channel and the records.
        # A recovery holds it from start to end, back-off sleeps included, so that no other
        # thread connects (without the replay) or uses a half-replayed connection meanwhile.
        # release() alone does not wait for a recovery of another thread: it sets
        # _release_requested, which the recovery checks after each attempt and about once a
        # second while it sleeps; the recovery then gives up and releases (see _recover).
        self._lock = threading.RLock()
        self._release_requested = False
        _connections.add(self)

    # ------------------------------------------------------------------ description

    @staticmethod
    def _ssl_options(options: dict[str, Any]) -> dict[str, Any]:
        import ssl as _ssl

        out: dict[str, Any] = {}
        for key, value in options.items():
            if key in ("ca_certs", "cafile", "cacertfile"):
                out["cacertfile"] = value
            elif key in ("certfile", "keyfile"):
                out[key] = value
            elif key == "cert_reqs":
                out["verify"] = value != _ssl.CERT_NONE
            elif key in ("server_hostname", "server_name_indication"):
                out["server_name_indication"] = value
            elif key == "verify":
                out["verify"] = bool(value)
            elif key == "check_hostname":
                # The host name only: the chain is still verified (as in ssl and kombu).
                out["check_hostname"] = bool(value)
            else:
                raise ValueError(f"unknown ssl option {key!r}")
        return out

    @property
    def _target(self) -> _Target:
        return self._targets[self._current]

    @property
    def hostname(self) -> str:
        return self._target.params.host

    @property
    def port(self) -> int:
        return self._target.params.port

    @property
    def host(self) -> str:
        """``"hostname:port"`` (as kombu and carrot give it)."""
        return f"{self.hostname}:{self.port}"

    @property
    def userid(self) -> str:
        return self._target.params.username

    @property
    def password(self) -> str:
        return self._target.params.password

    @property
    def virtual_host(self) -> str:
        return self._target.params.virtual_host

    @property
    def ssl(self) -> bool:
        return self._target.params.ssl

    @property
    def heartbeat(self) -> float:
        return self._target.params.heartbeat

    @property
    def login_method(self) -> str:
        return self._target.params.auth_mechanism

    @property
    def transport_cls(self) -> str:
        """The transport's name as written (``amqp``, ``pyamqp``, ``memory``, ...)."""
        return self._target.scheme

    @property
    def alt(self) -> list[str]:
        """Every URL of this connection, passwords masked."""
        return [t.as_uri() for t in self._targets]

    def info(self) -> dict[str, Any]:
        """What this connection is, without the password: ``hostname``, ``userid``,
        ``virtual_host``, ``port``, ``insist``, ``ssl``, ``transport``, ``connect_timeout``,
        ``transport_options``, ``login_method``, ``uri_prefix``, ``heartbeat``,
        ``failover_strategy``, ``alternates`` (masked URLs)."""
        p = self._target.params
        options = {k: v for k, v in self.transport_options.items() if "password" not in k}
        return {
            "hostname": p.host,
            "userid": p.username,
            "virtual_host": p.virtual_host,
            "port": p.port,
            "insist": self.insist,
            "ssl": p.ssl,
            "transport": self._target.scheme,
            "connect_timeout": self.connect_timeout,
            "transport_options": options,
            "login_method": p.auth_mechanism,
            "uri_prefix": self.uri_prefix,
            "heartbeat": p.heartbeat,
            "failover_strategy": self.failover_strategy,
            "alternates": self.alt,
        }

    def as_uri(self, include_password: bool = False, mask: str = "**") -> str:
        """The current URL, kombu-style (``amqp://guest:**@localhost:5672//``); the
        password is replaced by ``mask`` unless ``include_password``."""
        return self._target.as_uri(include_password, mask)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<Connection: {self.as_uri()} ({state}) at {id(self):#x}>"

    def clone(self, **overrides: Any) -> Connection:
        """A new, unconnected :class:`Connection` with the same arguments, some replaced."""
        return type(self)(**{**self._init_args, **overrides})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its arguments, as kombu's is: unpickling gives an unconnected
        :meth:`clone` (for a worker process of ``multiprocessing`` or
        ``concurrent.futures``; the pickle holds the password, as the arguments do).
        Callbacks and transport options that do not pickle make it fail, saying which."""
        return (_unpickled_connection, (type(self), self._init_args))

    # ------------------------------------------------------------------ errors

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """What means the connection is gone or unusable: ``OSError`` (refused, reset,
        timeouts), :class:`~leveret.client.ConnectionLost`, every ``HardError`` (the
        broker closed the connection), ``ConnectionClosedError``."""
        return _CONNECTION_ERRORS

    @property
    def recoverable_connection_errors(self) -> tuple[type[BaseException], ...]:
        """Connection errors a reconnect may cure (not refused credentials or vhosts, nor
        protocol errors): what :meth:`ensure` and :meth:`ensure_connection` retry."""
        return _RECOVERABLE_CONNECTION_ERRORS

    @property
    def channel_errors(self) -> tuple[type[BaseException], ...]:
        """What a refused channel-level operation raises: every ``SoftError``
        (``NotFound``, ``PreconditionFailed``, ...) and ``ChannelClosedError``."""
        return _CHANNEL_ERRORS

    @property
    def recoverable_channel_errors(self) -> tuple[type[BaseException], ...]:
        """Channel errors a new channel may cure: what :meth:`ensure` retries."""
        return _RECOVERABLE_CHANNEL_ERRORS

    # ------------------------------------------------------------------ connecting

    @property
    def connected(self) -> bool:
        """True while the transport connection is open (False before first use)."""
        tconn = self._connection
        return tconn is not None and bool(tconn.is_open)

    def _make_transport(self, target: _Target) -> TransportConnection:
        if target.kind == "memory":
            from .memory import MemoryConnection

            return MemoryConnection(
                virtual_host=target.params.virtual_host, broker=self.transport_options.get("broker"),
            )
        options = {k: self.transport_options[k] for k in _CLIENT_OPTIONS & self.transport_options.keys()}
        if self._ssl_context is not None:
            options["ssl_context"] = self._ssl_context
        fields = dataclasses.asdict(target.params)
        return ClientConnection(None, **options, **fields)

    def _order(self) -> list[int]:
        n = len(self._targets)
        strategy = self.failover_strategy
        if strategy == "shuffle":
            order = list(range(n))
            random.shuffle(order)
            return order
        if callable(strategy):
            return self._strategy_order(strategy, n)
        return [(self._current + i) % n for i in range(n)]

    def _strategy_order(self, strategy: Callable[[list[str]], Iterable[str]], n: int) -> list[int]:
        """The next ``n`` URLs (at most) of a callable strategy's iterator, as indexes."""
        order: list[int] = []
        fresh = False
        while len(order) < n:
            if self._cycle is None:
                if fresh:
                    break  # a new iterator had nothing (more) to give
                self._cycle = iter(strategy(list(self._urls)))
                fresh = True
            for url in itertools.islice(self._cycle, n - len(order)):
                index = self._url_index.get(url) if isinstance(url, str) else None
                if index is None:
                    raise ValueError(f"failover_strategy returned {url!r}, not one of this connection's URLs")
                order.append(index)
            if len(order) < n:
                self._cycle = None  # exhausted: call the strategy again next time
                if order:
                    break
        if not order:
            raise ValueError("failover_strategy returned no URL")
        return order

    def _establish(self) -> TransportConnection:
        """One attempt at each URL, in failover order; the first that opens wins.
        Raises the last URL's error when none does."""
        errors: list[BaseException] = []
        order = self._order()
        for position, index in enumerate(order, 1):
            target = self._targets[index]
            tconn = self._make_transport(target)
            try:
                tconn.connect()
            except _CONNECTION_ERRORS as exc:
                if position < len(order):  # the last one's error is raised: not logged too
                    log.warning("leveret: cannot connect to %s: %r; trying the next URL", target.as_uri(), exc)
                errors.append(exc)
                continue
            self._current = index
            try:
                # kombu's channel.connection.client (see client_of); no transport declares it.
                tconn.client = self  # type: ignore[attr-defined]
            except AttributeError:
                pass
            self._connection = tconn
            self._forked_from = None  # connected in this process
            self.recovery_generation += 1
            if self.autorecover:
                if self._was_connected:
                    self._replay(tconn)
                self._was_connected = True
            return tconn
        last = errors[-1]
        if len(errors) > 1 and hasattr(last, "add_note"):
            last.add_note("every URL failed: " + "; ".join(
                f"{t.as_uri()}: {e!r}" for t, e in zip((self._targets[i] for i in order), errors)
            ))
        raise last

    def _replay(self, tconn: Any) -> None:
        """Re-create the recorded topology on a new transport connection; a failure drops
        that connection (the next attempt starts over)."""
        try:
            replay(self, tconn)
        except BaseException:
            self._connection = None
            try:
                tconn.close()
            except Exception:  # noqa: BLE001 - the replay's error is the one to see
                log.debug("leveret: error closing a connection whose recovery failed", exc_info=True)
            raise

    def _should_recover(self) -> bool:
        return self.autorecover and self._was_connected and not self._in_recovery

    def _recover(
        self, error: BaseException | None = None, deadline: float | None = None, **policy: Any
    ) -> None:
        """Recover a lost connection (nothing to do if it is connected, e.g. because another
        caller recovered it already).  Raises ``OperationalError`` when recovery gives up,
        and when :meth:`release` was called meanwhile (the connection is released then).
        Past ``deadline`` (``time.monotonic()``), ``RecoveryPaused``: the next call goes on
        with the recovery from where it stood."""
        with self._lock:
            if self.connected or self._in_recovery:
                return
            if not self._was_connected:
                if self._forked_from is not None:
                    raise OperationalError(
                        f"no recovery of {self.as_uri()} in this process: the connection, and "
                        f"what was made on it (channels, producers, consumers, SimpleQueues), "
                        f"belongs to process {self._forked_from}, which made it before fork(); "
                        "make them anew here (the Connection connects afresh on next use)"
                    ) from error
                # release() came in between (from another thread): what the caller lost is
                # the connection it closed, which is not to come back by itself.
                raise OperationalError(
                    f"no recovery of {self.as_uri()}: the connection was released"
                ) from error
            if error is None and self._connection is not None:
                tconn = self._connection
                error = getattr(tconn, "_error", None) or getattr(tconn, "_closed_error", None)
            try:
                recover(self, error, deadline=deadline, **policy)
            finally:
                # A release() that did not wait for this recovery left the work to it.
                released = self._release_requested
                if released:
                    self._release_locked()
            if released:
                raise OperationalError(f"recovery of {self.as_uri()} stopped: the connection was released")

    def _recovery_event(self, kind: str, error: BaseException | None = None, detail: Any = None) -> None:
        events = self.recovery_events
        events.append(RecoveryEvent(kind, error, detail))
        # An error's traceback holds the frames it passed through, and their variables the
        # lost transport connection with all its channels -- and the lost connection raises
        # that same error object again for every later call on it, each time with a new
        # traceback.  The latest events keep the error itself, for debugging; each older
        # one a copy without traceback or context, which holds none of that.
        if len(events) > _WHOLE_ERRORS:
            old = events[-_WHOLE_ERRORS - 1]
            if old.error is not None:
                events[-_WHOLE_ERRORS - 1] = dataclasses.replace(old, error=_detached(old.error))

    def _notify(self, name: str, *args: Any) -> None:
        listener = getattr(self, name, None)
        if listener is not None:
            try:
                listener(*args)
            except Exception:  # noqa: BLE001 - a listener must not break the recovery
                log.exception("leveret: recovery listener %s failed", name)

    def _drop_connection(self) -> None:
        """Forget the transport connection (closing it quietly if it still looks open).
        With ``autorecover`` the default channel stays: recovery moves it."""
        tconn, self._connection = self._connection, None
        if not self.autorecover:
            self._default_channel = None
        if tconn is not None:
            try:
                tconn.close()
            except Exception:  # noqa: BLE001 - it is being discarded; its error was reported
                log.debug("leveret: error while closing a discarded connection", exc_info=True)

    def _connect_on_first_use(self) -> TransportConnection:
        policy = {k: self.transport_options[k] for k in _RETRY_OPTIONS & self.transport_options.keys()}
        if policy:
            self.ensure_connection(**policy)
            return self._established()
        return self._establish()

    def _established(self) -> TransportConnection:
        """The transport connection that a connect or a recovery that did not raise has
        left in place."""
        tconn = self._connection
        if tconn is None:  # pragma: no cover  (they raise when they leave none)
            raise ConnectionClosedError("the connection is not open")
        return tconn

    def connect(self) -> Connection:
        """Open the transport connection now (one attempt at each URL); returns self.
        Raises the connection error of the last URL tried when none could be reached."""
        with self._lock:
            if not self.connected:
                if self._should_recover():
                    self._recover()
                    return self
                if self._connection is not None:
                    self._drop_connection()
                self._establish()
        return self

    @property
    def connection(self) -> TransportConnection:
        """The transport connection (``leveret.client.Connection`` or the memory one),
        opened on first use and reopened when it was lost."""
        with self._lock:
            tconn = self._connection
            if tconn is None or not tconn.is_open:
                if self._should_recover():
                    self._recover()
                    return self._established()
                if tconn is not None:
                    self._drop_connection()
                tconn = self._connect_on_first_use()
            return tconn

    def ensure_connection(
        self,
        errback: Callable[[BaseException, float], Any] | None = None,
        max_retries: int | None = None,
        interval_start: float = 2,
        interval_step: float = 2,
        interval_max: float = 30,
        callback: Callable[[], Any] | None = None,
        timeout: float | None = None,
        reraise_as_library_errors: bool = True,
        _resume: dict[str, Any] | None = None,
    ) -> Connection:
        """Connect, retrying while the failure is recoverable.

        Each attempt tries every URL once; between attempts it sleeps ``interval_start``
        seconds, then ``interval_step`` more each time, at most ``interval_max``, calling
        ``errback(exc, interval)`` before each sleep and ``callback()`` about once a second
        while sleeping.  ``max_retries`` (None: for ever) counts retries after the first
        attempt; ``timeout`` bounds the whole.  When it gives up it raises
        :class:`~leveret.highlevel.exceptions.OperationalError` (from the last error;
        the error itself with ``reraise_as_library_errors=False``).  Refused credentials
        or vhost are raised at once.  With ``autorecover``, reconnecting a connection that
        was lost also re-creates its topology (a recovery, reported as such).
        """
        if self._should_recover() and not self.connected:
            with self._lock:
                self._recover(
                    None, errback=errback, max_retries=max_retries, interval_start=interval_start,
                    interval_step=interval_step, interval_max=interval_max, callback=callback,
                    timeout=timeout, reraise_as_library_errors=reraise_as_library_errors,
                )
            return self
        # (``_resume``: a paused recovery's back-off -- its start, retries, next interval --
        # read and kept up to date here, so that pausing changes none of the policy.)
        if _resume is None:
            _resume = {}
        wait = _resume.get("next_at", 0.0) - time.monotonic()
        if wait > 0:
            self._sleep(wait, callback)  # the rest of the back-off the pause cut short
        started = _resume.setdefault("started", time.monotonic())
        deadline = None if timeout is None else started + timeout
        interval = _resume.setdefault("interval", interval_start)
        for retries in count(_resume.setdefault("retries", 0)):
            with self._lock:
                if self.connected:
                    return self
                if self._connection is not None:
                    self._drop_connection()
                try:
                    self._establish()
                    return self
                except _RECOVERABLE_CONNECTION_ERRORS as exc:
                    error: BaseException = exc
            give_up = max_retries is not None and retries >= max_retries
            if not give_up and deadline is not None and time.monotonic() + interval > deadline:
                give_up = True
            if give_up:
                if reraise_as_library_errors:
                    raise OperationalError(f"cannot connect to {self.as_uri()}: {error}") from error
                raise error
            _resume["retries"] = retries + 1
            _resume["interval"] = min(interval + interval_step, interval_max)
            _resume["next_at"] = time.monotonic() + interval
            if errback is not None:
                errback(error, interval)
            self._sleep(interval, callback)
            interval = _resume["interval"]
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _sleep(seconds: float, callback: Callable[[], Any] | None) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 1.0))
            if callback is not None:
                callback()

    def maybe_switch_next(self) -> None:
        """Make the next URL the current one (for the next connect)."""
        self._current = (self._current + 1) % len(self._targets)

    def ensure(
        self,
        obj: Any,
        fun: Callable[..., Any],
        errback: Callable[[BaseException, float], Any] | None = None,
        max_retries: int | None = None,
        interval_start: float = 1,
        interval_step: float = 1,
        interval_max: float = 1,
        on_revive: Callable[[Any], Any] | None = None,
        retry_errors: tuple[type[BaseException], ...] | None = None,
    ) -> Callable[..., Any]:
        """``fun`` wrapped so that it survives connection loss: ``ensure(producer,
        producer.publish)(...)``.

        On a recoverable connection error the wrapper drops the dead connection,
        reconnects (:meth:`ensure_connection` with the interval arguments), calls
        ``obj.revive(channel)`` with the new default channel (when ``obj`` has ``revive``)
        and ``on_revive(channel)``, and calls ``fun`` again; on a recoverable channel error
        it does the same with a new channel.  ``errback(exc, interval)`` hears of each
        failure.  After ``max_retries`` retries (None: no limit) the error is raised.
        ``retry_errors`` are more exception types to retry as channel errors.

        A publish is at-least-once across a reconnect: one whose confirm was lost with the
        connection is published again.  A ``TimeoutError`` while the connection is still
        open (a confirm that did not come in time, a broker blocking publishers) is no
        connection loss: it is raised, not retried.
        """
        extra = tuple(retry_errors or ())

        def _ensured(*args: Any, **kwargs: Any) -> Any:
            for retries in count():
                try:
                    return fun(*args, **kwargs)
                except (*_RECOVERABLE_CONNECTION_ERRORS, *_RECOVERABLE_CHANNEL_ERRORS, *extra) as exc:
                    if max_retries is not None and retries >= max_retries:
                        raise
                    if isinstance(exc, TimeoutError) and self.connected and not isinstance(exc, extra):
                        # A wait (a reply, a confirm, a blocked broker) ran out on a live
                        # connection: nothing was lost, and what was sent may yet arrive.
                        # Dropping the connection and calling again could do it twice.
                        raise
                    conn_error = isinstance(exc, _RECOVERABLE_CONNECTION_ERRORS) or not self.connected
                    log.info("leveret: ensure: %s failed (%r); retrying", getattr(fun, "__name__", fun), exc)
                    if errback is not None:
                        errback(exc, 0)
                    if conn_error:
                        with self._lock:
                            self._drop_connection()
                        remaining = None if max_retries is None else max(max_retries - retries, 1)
                        self.ensure_connection(
                            errback, remaining, interval_start, interval_step, interval_max,
                            reraise_as_library_errors=False,
                        )
                    channel = self.default_channel
                    revive = getattr(obj, "revive", None)
                    if revive is not None:
                        revive(channel)
                    if on_revive is not None:
                        on_revive(channel)
            raise AssertionError("unreachable")  # pragma: no cover

        _ensured.__name__ = getattr(fun, "__name__", "ensured")
        _ensured.__doc__ = getattr(fun, "__doc__", None)
        return _ensured

    def autoretry(self, fun: Callable[..., Any], channel: Any = None, **ensure_options: Any) -> Callable[..., Any]:
        """``fun(*args, channel=channel)`` retried across connection loss with a fresh
        channel each time (kombu's ``autoretry``).  The returned callable returns
        ``(retval, channel)``, as kombu's does: ``fun``'s result and the channel it ran on
        (the default channel when ``channel`` was None or has closed)."""
        holder = {"channel": channel}

        class _Revive:
            def revive(self, new_channel: Any) -> None:
                holder["channel"] = new_channel

        def _call(*args: Any, **kwargs: Any) -> Any:
            ch = holder["channel"]
            if ch is None or not ch.is_open:
                ch = holder["channel"] = self.default_channel
            return fun(*args, channel=ch, **kwargs), ch

        return self.ensure(_Revive(), _call, **ensure_options)

    # ------------------------------------------------------------------ channels, events

    def channel(self) -> TransportChannel:
        """A new transport channel (``channel.open``), connecting first if needed (with
        ``autorecover``: a :class:`~leveret.highlevel.recovery.RecoveringChannel`)."""
        with self._lock:
            ch = self.connection.channel()
            if self.autorecover:
                ch = RecoveringChannel(self, ch)
        try:
            _owners[ch] = weakref.ref(self)
        except TypeError:
            pass
        return ch

    @property
    def default_channel(self) -> TransportChannel:
        """One channel shared by everything that was given this connection instead of a
        channel (producers, entities, ...); opened on first use and reopened (on a
        reconnected connection if need be) when it was closed."""
        with self._lock:
            if self.autorecover:
                self.connection  # recovers a lost connection, and the default channel with it
                ch = self._default_channel
                if ch is None or not ch.is_open:
                    ch = self._default_channel = self.channel()
                return ch
            ch = self._default_channel
            if ch is None or not ch.is_open or not self.connected:
                tconn = self.connection
                ch = tconn.channel()
                try:
                    _owners[ch] = weakref.ref(self)
                except TypeError:
                    pass
                self._default_channel = ch
            return ch

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait for a delivery (or a return, a cancel...) and run its callbacks.

        Raises ``TimeoutError`` (``socket.timeout``) when nothing arrived within
        ``timeout`` seconds, and the connection's error when it was lost -- it does not
        reconnect: consumers of a lost connection are gone, and waiting on a new one would
        hide that.

        With ``autorecover`` it does: the connection is recovered (its consumers resume on
        the new one) and the wait goes on until an event or ``timeout`` (``TimeoutError``;
        :class:`~leveret.highlevel.exceptions.RecoveryPaused`, one, when the timeout ran out
        during the recovery, which the next call goes on with); ``OperationalError`` if
        recovery gives up.

        When the broker closed a channel that a :class:`~leveret.highlevel.Consumer` of this
        connection consumes on (a channel error: ``NotFound``, ``PreconditionFailed``...,
        even one that a call on that channel -- a producer's publish sharing the default
        channel, say -- has raised already), it raises that error, once: those consumers
        then consume from nothing (``consuming_from`` is False; :meth:`Consumer.revive` on a
        new channel consumes again), as kombu does.
        """
        if self._consumers:
            self._check_consumers()
        try:
            if self.autorecover:
                self._drain_recovering(timeout)
                return
            tconn = self._connection
            if tconn is None:
                tconn = self.connection
            tconn.drain_events(timeout=timeout)
        except SoftError as exc:
            self._consumers_closed(lambda channel: getattr(channel, "close_error", None) is exc)
            raise
        except TimeoutError:
            if self._consumers:
                self._check_consumers()  # a channel closed while waiting, its error reported
            raise

    def _watch_consumer(self, consumer: Any) -> None:
        """Called by a :class:`~leveret.highlevel.Consumer` that started consuming on a
        channel of this connection, so that :meth:`drain_events` reports that channel's
        death."""
        self._consumers[id(consumer)] = weakref.ref(consumer)

    def _check_consumers(self) -> None:
        """Raise the error of the first channel the broker closed under consuming
        consumers (after marking them as consuming nothing)."""
        closed: Any = None
        stale: list[int] = []
        for key, ref in self._consumers.items():
            consumer = ref()
            if consumer is None or not consumer._active:
                stale.append(key)
                continue
            channel = consumer.channel
            if channel is not None and not channel.is_open and isinstance(getattr(channel, "close_error", None), SoftError):
                closed = channel
                break
        for key in stale:
            del self._consumers[key]
        if closed is not None:
            error = closed.close_error
            self._consumers_closed(lambda channel: channel is closed)
            # Reported now: the transport's drain_events must not raise it again (it may
            # still hold the channel's close event), as after a call on the channel raised it.
            closed.mark_error_reported()
            raise error

    def _consumers_closed(self, match: Callable[[Any], bool]) -> None:
        """The consumers whose channel ``match``es were closed by the broker (and that
        has been raised): they consume from nothing now."""
        for key, ref in list(self._consumers.items()):
            consumer = ref()
            if consumer is None or match(consumer.channel):
                del self._consumers[key]
                if consumer is not None:
                    consumer._channel_closed()

    def _drain_recovering(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.connected and self._should_recover():
                # A recovery bounded by this call's timeout: RecoveryPaused (a TimeoutError)
                # past it, the next call going on with it -- as drain_events promises, and
                # so that ConsumerMixin sees should_stop during an outage.
                self._recover(None, deadline=deadline)
            tconn = self.connection
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                tconn.drain_events(timeout=remaining)
                return
            except TimeoutError:
                raise
            except OperationalError:
                raise  # a recovery gave up: not a loss to recover from again
            except LOSS_ERRORS as exc:
                if tconn.is_open and tconn is self._connection:
                    raise  # not a loss: a callback's own error
                self._recover(exc, deadline=deadline)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("timed out waiting for events")

    def heartbeat_check(self, rate: int = 2) -> None:
        """Nothing to do: the client's I/O thread sends and checks heartbeats itself."""

    @property
    def supports_heartbeats(self) -> bool:
        return self._target.kind == "amqp"

    @property
    def declared_entities(self) -> set[Any]:
        """What :func:`~leveret.highlevel.maybe_declare` remembers having declared on
        this connection (emptied by a reconnect)."""
        from .entity import declared_entities

        tconn = self._connection
        if tconn is None:
            return set()
        try:
            return declared_entities(tconn)
        except TypeError:
            return set()

    def release(self) -> None:
        """Close the default channel and the transport connection (``connection.close``).
        The object can be used again: it reconnects on next use.  While the broker blocks
        the connection (a memory or disk alarm), only ``connection.close`` is sent, and its
        close-ok awaited at most ``blocked_timeout`` (see the client's ``close``).

        With ``autorecover``, a recovery under way in another thread does not make this
        wait (its back-off may last for ever): that recovery gives up at its next step --
        after the attempt in progress, or within about a second of back-off -- raising
        ``OperationalError`` in its thread, and does the release there; this returns at
        once."""
        self._release_requested = True
        if not self._lock.acquire(blocking=False):
            if self._in_recovery:
                return  # the recovering thread holds the lock: it releases (see _recover)
            self._lock.acquire()
        try:
            self._release_locked()
        finally:
            self._lock.release()

    def _release_locked(self) -> None:
        """:meth:`release`'s work (under the lock, which its callers hold already)."""
        with self._lock:
            if not self._in_recovery:
                self._release_requested = False  # done; a recovery under way sees it still
            ch, self._default_channel = self._default_channel, None
            # While the broker blocks the connection (an alarm) it may read nothing from
            # it: a channel.close would wait for its close-ok as long as the
            # connection.close that follows, which closes the channel anyway.  Then the
            # connection goes first, and the channel is closed with nothing on the wire.
            tconn = self._connection
            blocked = tconn is not None and tconn.is_open and getattr(tconn, "blocked", None) is not None
            if blocked:
                self._drop_connection()
            if ch is not None:
                try:
                    if ch.is_open or blocked:
                        ch.close()
                except Exception:  # noqa: BLE001 - closing anyway
                    log.debug("leveret: error closing the default channel", exc_info=True)
            # What was recorded belongs to this use of the connection, which ends here.
            self.topology.clear()
            self._consumers.clear()
            self._was_connected = False
            self._forked_from = None
            self._recovery_resume = None
            self._drop_connection()

    close = release

    def _after_fork_in_child(self) -> None:
        """In a child made by ``os.fork()``: forget the parent's transport connection,
        channels and records, without a byte on the wire (see the class's docstring).  Takes
        no lock: one held by a thread of the parent at the fork would never be released."""
        self._lock = threading.RLock()
        tconn, self._connection = self._connection, None
        self._default_channel = None
        self._consumers.clear()
        if self._was_connected or tconn is not None:
            self._forked_from = os.getppid()
        self._was_connected = False
        self._in_recovery = False
        self._release_requested = False
        self._recovery_resume = None
        self.topology._after_fork_in_child()
        if isinstance(tconn, ClientConnection):  # done already if it was open; harmless
            tconn.abandon(inherited_through_fork(
                "the high-level Connection connects afresh on next use: make the channels, "
                "producers and consumers of this process on it"
            ))

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    # ------------------------------------------------------------------ shortcuts

    # The shortcuts repeat the classes' parameters (rather than take *args, **kwargs), so
    # that a type checker checks what is passed through them.

    def Producer(
        self,
        channel: Any = None,
        exchange: Exchange | str | None = None,
        routing_key: str | None = None,
        serializer: str | None = None,
        auto_declare: bool | None = None,
        compression: str | None = None,
        on_return: Callable[[MessageReturned, str, str, ClientMessage | None], Any] | None = None,
        confirm: bool = True,
        republish: bool = True,
    ) -> Producer:
        """A :class:`~leveret.highlevel.Producer` on ``channel`` (default: this
        connection's default channel, resolved on first publish)."""
        from .messaging import Producer

        return Producer(
            channel or self, exchange, routing_key, serializer, auto_declare, compression,
            on_return, confirm, republish,
        )

    def Consumer(
        self,
        queues: Queue | Iterable[Queue] | None = None,
        channel: Any = None,
        no_ack: bool | None = None,
        auto_declare: bool = True,
        callbacks: Iterable[Callable[[Any, HLMessage], Any]] | None = None,
        on_decode_error: Callable[[HLMessage, Exception], Any] | None = None,
        on_message: Callable[[HLMessage], Any] | None = None,
        accept: Iterable[str] | None = None,
        prefetch_count: int | None = None,
        tag_prefix: str | None = None,
        max_decompressed_size: int | None = DEFAULT_MAX_SIZE,
    ) -> Consumer:
        """A :class:`~leveret.highlevel.Consumer` of ``queues`` on ``channel`` (default:
        the default channel)."""
        from .messaging import Consumer

        return Consumer(
            channel or self, queues, no_ack, auto_declare, callbacks, on_decode_error, on_message,
            accept, prefetch_count, tag_prefix, max_decompressed_size,
        )

    def SimpleQueue(
        self, name: Any, no_ack: bool | None = None, queue_opts: dict[str, Any] | None = None,
        queue_args: dict[str, Any] | None = None, exchange_opts: dict[str, Any] | None = None,
        channel: Any = None, **kwargs: Any,
    ) -> SimpleQueue:
        """A :class:`~leveret.highlevel.SimpleQueue` (persistent, durable)."""
        from .simple import SimpleQueue

        return SimpleQueue(channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs)

    def SimpleBuffer(
        self, name: Any, no_ack: bool | None = None, queue_opts: dict[str, Any] | None = None,
        queue_args: dict[str, Any] | None = None, exchange_opts: dict[str, Any] | None = None,
        channel: Any = None, **kwargs: Any,
    ) -> SimpleBuffer:
        """A :class:`~leveret.highlevel.SimpleBuffer` (transient, auto-delete, no_ack)."""
        from .simple import SimpleBuffer

        return SimpleBuffer(channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs)

    def Pool(self, limit: int | None = None, **kwargs: Any) -> ConnectionPool:
        """A :class:`~leveret.highlevel.pools.ConnectionPool` of clones of this connection
        (at most ``limit`` at once; None = no limit)."""
        from .pools import ConnectionPool

        return ConnectionPool(self, limit=limit, **kwargs)

    def ChannelPool(self, limit: int | None = None, **kwargs: Any) -> ChannelPool:
        """A :class:`~leveret.highlevel.pools.ChannelPool` of channels of this connection
        (at most ``limit`` at once; None = no limit)."""
        from .pools import ChannelPool

        return ChannelPool(self, limit=limit, **kwargs)


BrokerConnection = Connection

#: How many of the latest recovery events keep their error object itself.
_WHOLE_ERRORS = 16


def _detached(error: BaseException) -> BaseException:
    """A copy of ``error`` (same type, arguments and attributes) without traceback, cause
    or context; ``error`` itself, with its frames' variables dropped, when it cannot be
    copied faithfully."""
    clone = copy_error(error)
    if clone is not None:
        return clone
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        todo += (exc.__cause__, exc.__context__)
    return error


def _unpickled_connection(cls: type[Connection], arguments: dict[str, Any]) -> Connection:
    return cls(**arguments)
