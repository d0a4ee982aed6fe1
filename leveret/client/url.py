"""AMQP URLs: ``amqp[s]://user:pass@host:port/vhost?option=value&...``.

Every part is percent-decoded; the vhost is the whole path after the first ``/`` (so ``/``
itself is written ``%2F``); an empty path means the vhost ``/``.  An unknown option, a bad
value or a malformed URL raises :class:`URLError` naming the problem (never the password).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, TypedDict, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from ..wire.errors import LeveretError

__all__ = ["URLError", "ConnectionParameters", "parse_url"]


class URLError(LeveretError, ValueError):
    """A malformed AMQP URL or an unknown/invalid option in it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise URLError(f"option {name}={value!r} is not a boolean (use true or false)")


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        if not value.isascii():  # int() also takes other scripts' digits ("\u0663" is 3)
            raise ValueError(value)
        number = int(value)
    except ValueError:
        raise URLError(f"option {name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise URLError(f"option {name}={number} is out of range {low}..{high}")
    return number


def _float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise URLError(f"option {name}={value!r} is not a number") from None
    try:
        return positive_seconds(name, number)
    except ValueError as exc:
        raise URLError(f"option {exc}") from None


class ConnectionOptions(TypedDict, total=False):
    """The keyword options of ``Connection(url, **options)`` that override the URL: the
    fields of :class:`ConnectionParameters` (``userid`` is py-amqp's name for
    ``username``).  For type checkers: a misspelt option, or one of the wrong type, is
    reported where the connection is made (it raises ``TypeError`` or ``ValueError``
    there at run time)."""

    host: str
    port: Union[int, None]
    username: str
    userid: str
    password: str
    virtual_host: str
    ssl: bool
    heartbeat: float
    frame_max: int
    channel_max: int
    connection_timeout: float
    auth_mechanism: str
    cacertfile: Union[str, "os.PathLike[str]", None]
    certfile: Union[str, "os.PathLike[str]", None]
    keyfile: Union[str, "os.PathLike[str]", None]
    verify: bool
    check_hostname: bool
    server_name_indication: Union[str, None]
    protocol: str


@dataclass
class ConnectionParameters:
    """Everything needed to open a connection.  ``repr`` never shows the password."""

    host: str = "localhost"
    port: int = 5672
    username: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)
    virtual_host: str = "/"
    ssl: bool = False
    #: Seconds; the lower of this and the broker's wins, 0 meaning "the broker's" (see
    #: :class:`~leveret.client.core.SansIOConnection`).
    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    connection_timeout: float = 10.0
    auth_mechanism: str = "PLAIN"
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    #: Verify the broker's certificate chain (and, with :attr:`check_hostname`, its name).
    verify: bool = True
    #: With :attr:`verify`: the certificate must also name the host (or
    #: :attr:`server_name_indication`).  False checks the chain alone.
    check_hostname: bool = True
    server_name_indication: str | None = None
    protocol: str = "0-9-1"

    def check(self) -> None:
        """Check every field's type and range (as set by keyword options, not a URL).

        Raises ``TypeError`` for a value of the wrong type and ``ValueError`` for one out of
        range, naming the option (never showing the password).  Whole-number floats are
        taken for the integer options (``heartbeat=10.0``) and path-like objects for the
        certificate files; they are stored converted.
        """
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if type(value) is float and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"connection option {name} must be an int, not {type(value).__name__}")
            if not low <= value <= high:
                raise ValueError(f"connection option {name}={value} is out of range {low}..{high}")
            setattr(self, name, int(value))
        self.connection_timeout = positive_seconds("connection_timeout", self.connection_timeout)
        for name in ("host", "username", "password", "virtual_host", "auth_mechanism", "protocol"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"connection option {name} must be a str, not {type(value).__name__}")
        for name in ("host", "virtual_host"):
            if not getattr(self, name):
                raise ValueError(f"connection option {name} must not be empty")
        for name in ("username", "password", "virtual_host"):
            if not encodes_as_utf8(getattr(self, name)):
                # Raised outside the except clause: the UnicodeEncodeError, which quotes the
                # whole value (a password), must not ride along as __context__.
                raise ValueError(
                    f"connection option {name} is not valid Unicode text (a lone surrogate, as "
                    "os.environ and sys.argv give for bytes that are not UTF-8): it cannot be sent"
                )
        for name in ("ssl", "verify", "check_hostname"):
            value = getattr(self, name)
            if type(value) is not bool:
                raise TypeError(f"connection option {name} must be True or False, not {value!r}")
        for name in ("cacertfile", "certfile", "keyfile", "server_name_indication"):
            value = getattr(self, name)
            if value is None:
                continue
            if name != "server_name_indication" and isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, name, value)
            if not isinstance(value, str):
                raise TypeError(f"connection option {name} must be a str or None, not {type(value).__name__}")
        if self.keyfile is not None and self.certfile is None:
            # ssl would have no use for it: the client would go without a certificate,
            # silently, and fail later at SASL EXTERNAL or the broker's peer verification.
            raise ValueError("connection option keyfile is the key of certfile: give certfile as well")
        self.auth_mechanism = self.auth_mechanism.upper()
        if self.auth_mechanism not in _MECHANISMS:
            raise ValueError(
                f"auth_mechanism={self.auth_mechanism!r} is not one of {', '.join(sorted(_MECHANISMS))}"
            )
        if self.protocol not in _PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not one of {', '.join(sorted(_PROTOCOLS))}")

    def url(self, show_password: bool = False) -> str:
        """This connection as a URL; the password is masked unless asked for."""
        from urllib.parse import quote

        scheme = "amqps" if self.ssl else "amqp"
        password = quote(self.password, safe="") if show_password else "****"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"{scheme}://{quote(self.username, safe='')}:{password}@{host}:{self.port}/"
            f"{quote(self.virtual_host, safe='')}"
        )


def positive_seconds(name: str, value: Any) -> float:
    """``value`` as a number of seconds that must be positive and finite (a default
    timeout); ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 < value < math.inf:  # also False for NaN
        raise ValueError(f"{name}={value} must be a positive, finite number of seconds")
    return float(value)


def encodes_as_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates): what a user name, password
    or virtual host must do to be sent."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


#: The integer options and their ranges (in URLs and as keywords).
_INT_RANGES = {
    "port": (1, 65535),
    "heartbeat": (0, 65535),
    "frame_max": (0, 2**32 - 1),
    "channel_max": (0, 65535),
}

# option name -> converter
_OPTIONS: dict[str, Any] = {
    "heartbeat": lambda v: _int("heartbeat", v, *_INT_RANGES["heartbeat"]),
    "frame_max": lambda v: _int("frame_max", v, *_INT_RANGES["frame_max"]),
    "channel_max": lambda v: _int("channel_max", v, *_INT_RANGES["channel_max"]),
    "connection_timeout": lambda v: _float("connection_timeout", v),
    "auth_mechanism": lambda v: v.upper(),
    "cacertfile": str,
    "certfile": str,
    "keyfile": str,
    "verify": lambda v: _bool("verify", v),
    "check_hostname": lambda v: _bool("check_hostname", v),
    "server_name_indication": str,
    "protocol": lambda v: v,
}
_MECHANISMS = {"PLAIN", "AMQPLAIN", "EXTERNAL"}
_PROTOCOLS = {"0-9-1", "0-8"}


def split_host_port(value: str) -> tuple[str, int | None]:
    """``host`` as py-amqp and kombu take it: ``"name"``, ``"name:5672"``, ``"[::1]:5672"``
    (a bare IPv6 address, ``"::1"``, has no port).  Returns the host and the port, or None
    when none is given; ``ValueError`` for a port that is not a number in 1..65535."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ValueError(f"connection option host={value!r} is not '[address]' or '[address]:port'")
        host, port_text = value[1:end], rest[1:] if rest else None
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        return value, None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(
            f"connection option host={value!r}: the port after ':' must be a number in 1..65535"
        )
    return host, int(port_text)


def parse_url(url: str) -> ConnectionParameters:
    """Parse an AMQP URL into :class:`ConnectionParameters`.

    ``amqp://`` defaults to port 5672, ``amqps://`` to 5671 with TLS; user and password
    default to ``guest``; the host to ``localhost``.  A user name, password, virtual host
    or option value must percent-encode '/', '?', '#' and '@' as the case may be: an '@'
    after the host (``amqp://u:p@ss/word@host/``, a password with an '@' and a '/') is
    refused rather than read as a virtual host, since the real host would follow it.
    """
    if not isinstance(url, str):
        raise URLError(f"an AMQP URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # urlsplit's own words, unless they quote the URL: a "port" they quote may be the
        # start of a password with an unencoded '/', '?' or '#'.
        detail = str(exc)
        if "'" in detail or '"' in detail:
            detail = "its host or port cannot be read"
        raise URLError(
            f"malformed AMQP URL: {_mask(url)} ({detail}; a user name or password must "
            "percent-encode '/', '?', '#' and '@')"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise URLError(f"an AMQP URL starts with amqp:// or amqps://, not {scheme or 'nothing'!r}: {_mask(url)}")
    if not url[len(parts.scheme) + 1 :].startswith("//"):
        # "amqp:/user:pw@host/" has no host part at all: urlsplit reads it all as a path,
        # which would make it a virtual host on localhost.
        raise URLError(f"an AMQP URL starts with {scheme}:// (two slashes): {_mask(url)}")
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # Most likely a password with an unencoded '/', '?' or '#': it ended the host
        # early (a password starting with digits would even pass for a port), and the rest
        # of it is here -- with the real host after it, so connecting would send the start
        # of the password to the wrong host.
        raise URLError(
            f"malformed AMQP URL: {_mask(url)} (an '@' after the host; a user name or "
            "password must percent-encode '/', '?', '#' and '@', and so must a virtual host "
            "or an option containing '@')"
        )
    if parts.fragment:
        raise URLError(f"an AMQP URL has no #fragment: {_mask(url)}")
    params = ConnectionParameters(ssl=scheme == "amqps", port=5671 if scheme == "amqps" else 5672)
    if parts.hostname:
        params.host = unquote(parts.hostname)
    if port is not None:
        if port == 0:
            raise URLError(f"port 0 is not a valid AMQP port: {_mask(url)}")
        params.port = port
    if parts.username is not None:
        params.username = unquote(parts.username)
    if parts.password is not None:
        params.password = unquote(parts.password)
    path = parts.path
    if path and path != "/":
        vhost = unquote(path[1:])
        if not vhost:
            raise URLError(f"empty virtual host in {_mask(url)}")
        params.virtual_host = vhost
    try:
        options = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise URLError(f"malformed query string in {_mask(url)}") from None
    for name, value in options:
        convert = _OPTIONS.get(name)
        if convert is None:
            raise URLError(
                f"unknown option {name!r} in AMQP URL (known: {', '.join(sorted(_OPTIONS))})"
            )
        setattr(params, name, convert(value))
    if params.auth_mechanism not in _MECHANISMS:
        raise URLError(
            f"auth_mechanism={params.auth_mechanism!r} is not one of {', '.join(sorted(_MECHANISMS))}"
        )
    if params.protocol not in _PROTOCOLS:
        raise URLError(f"protocol={params.protocol!r} is not one of {', '.join(sorted(_PROTOCOLS))}")
    return params


def _mask(url: str) -> str:
    """The URL with any password replaced, for error messages.

    Whatever comes before the last '@' may hold a password: a user name is shown only
    when what precedes it is plainly ``user:password`` (no '/', '?' or '#': with one, the
    password itself may run on past where a URL parser ends the host)."""
    head, sep, rest = url.partition("://")
    if not sep:
        # No '://': no URL parser finds user info here, yet a password may be there
        # ("user:pw@host", "amqp:/user:pw@host/"); hide all before the host.
        return f"****@{url.rpartition('@')[2]}" if "@" in url else url
    if "@" not in rest:
        return url
    userinfo, _, after = rest.rpartition("@")
    if any(c in userinfo for c in "/?#"):
        return f"{head}{sep}****@{after}"
    if ":" not in userinfo:
        return url  # a user name alone
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:****@{after}"
