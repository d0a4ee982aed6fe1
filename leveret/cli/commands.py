"""The ``leveret`` sub-commands (except ``bench``, in :mod:`.bench`).

Every command gets the parsed arguments and returns an exit code; failures are raised as
:class:`CLIError` with the exit code they mean (see :mod:`.main`).  Status lines go to
stderr, data (messages, tables, JSON) to stdout.  No message ever shows the password: URLs
are printed with :meth:`ConnectionParameters.url`, which masks it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

from ..client import Connection
from ..client.errors import AuthenticationError, ConnectionLost, PublishNacked, VersionMismatch
from ..client.message import PROPERTY_NAMES, Message
from ..client.url import ConnectionParameters, URLError, parse_url
from ..wire.errors import AMQPError, LeveretError
from .progress import Progress

__all__ = [
    "CLIError",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "resolve_url",
    "open_connection",
    "jsonable",
    "cmd_info",
    "cmd_publish",
    "cmd_consume",
    "cmd_get",
    "cmd_declare",
    "cmd_delete",
    "cmd_purge",
    "cmd_conformance",
]

EXIT_OK = 0
#: The command ran and failed: the broker refused an operation, a check failed, a queue
#: was empty for ``get``, messages were nacked or returned.
EXIT_FAILURE = 1
#: Bad command line or bad URL (nothing was sent).
EXIT_USAGE = 2
#: The broker could not be reached, or refused the connection (credentials, vhost).
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class CLIError(Exception):
    """A failure to report as ``leveret: MESSAGE`` with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- plumbing


def looks_like_url(token: str) -> bool:
    """True for ``scheme://...`` (an AMQP URL, or a mistyped one parse_url will name)."""
    return bool(_URL_RE.match(token))


def resolve_url(given: str | None) -> tuple[str, ConnectionParameters]:
    """The URL to use (argument, else ``AMQP_URL``) and its parsed parameters.

    Raises :class:`CLIError` with :data:`EXIT_USAGE` when there is none or it is malformed;
    the message masks the password.
    """
    url = given or os.environ.get("AMQP_URL") or ""
    if not url:
        raise CLIError(
            "no broker URL: give one (amqp://user:password@host:5672/vhost) as the first "
            "argument, or set AMQP_URL", EXIT_USAGE)
    try:
        params = parse_url(url)
    except URLError as exc:
        source = "" if given else " (from AMQP_URL)"
        raise CLIError(f"bad URL{source}: {exc}", EXIT_USAGE) from None
    return url, params


def open_connection(url: str, params: ConnectionParameters, **options: Any) -> Connection:
    """Connect and run the handshake; connection failures become :data:`EXIT_CONNECT`."""
    where = f"{params.host}:{params.port}"
    conn = Connection(url, **options)
    try:
        conn.connect()
    except AuthenticationError as exc:
        raise CLIError(
            f"authentication failed: the broker at {where} refused user {params.username!r}"
            f"{': ' + exc.reply_text if exc.reply_text else ''}", EXIT_CONNECT) from None
    except VersionMismatch as exc:
        raise CLIError(f"{where}: {exc}", EXIT_CONNECT) from None
    except AMQPError as exc:
        raise CLIError(
            f"the broker at {where} refused to open virtual host {params.virtual_host!r}: {exc}",
            EXIT_CONNECT) from None
    except ConnectionLost as exc:
        raise CLIError(f"connection to {where} failed: {exc}", EXIT_CONNECT) from None
    except TimeoutError:
        raise CLIError(
            f"cannot connect to {where}: no answer within {params.connection_timeout:g} s",
            EXIT_CONNECT) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CLIError(f"cannot connect to {where}: {reason}", EXIT_CONNECT) from None
    except LeveretError as exc:
        raise CLIError(f"connection to {where} failed: {exc}", EXIT_CONNECT) from None
    return conn


def operation_error(what: str, exc: BaseException) -> CLIError:
    """A broker refusal or a lost connection during ``what``."""
    if isinstance(exc, AMQPError):
        return CLIError(f"{what}: the broker refused: {exc}")
    if isinstance(exc, TimeoutError):
        return CLIError(f"{what}: timed out")
    return CLIError(f"{what}: {exc}")


def jsonable(value: Any) -> Any:
    """``value`` with AMQP field values made JSON-friendly (bytes as UTF-8 text when they
    are, else ``base64:...``; datetimes as ISO 8601; decimals as strings)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(data).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def parse_pairs(pairs: list[str] | None, option: str, typed: bool = False) -> dict[str, Any]:
    """``k=v`` strings into a dict.  With ``typed``, integers and true/false are converted
    (``x-max-length=10`` must reach the broker as a number)."""
    result: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"{option} takes KEY=VALUE, not {pair!r}", EXIT_USAGE)
        result[key] = _typed(value) if typed else value
    return result


def _typed(value: str) -> Any:
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _print_json(data: Any, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    """``leveret info``: what the broker says about itself and what was negotiated."""
    url, params = resolve_url(args.url)
    conn = open_connection(url, params)
    try:
        props = dict(conn.server_properties)
        info: dict[str, Any] = {
            "url": params.url(),
            "protocol": params.protocol,
            "product": props.get("product"),
            "version": props.get("version"),
            "platform": props.get("platform"),
            "cluster_name": props.get("cluster_name"),
            "channel_max": conn.channel_max,
            "frame_max": conn.frame_max,
            "heartbeat": conn.heartbeat,
            "mechanisms": list(conn.core.mechanisms),
            "capabilities": dict(props.get("capabilities") or {}),
            "server_properties": props,
        }
    finally:
        conn.close()
    if args.json:
        _print_json(info)
        return EXIT_OK
    out = sys.stdout
    rows = [
        ("broker", f"{info['product'] or '?'} {info['version'] or ''}".strip()),
        ("platform", info["platform"] or ""),
        ("cluster", info["cluster_name"] or ""),
        ("url", info["url"]),
        ("protocol", f"AMQP {info['protocol']}"),
        ("channel_max", str(info["channel_max"])),
        ("frame_max", str(info["frame_max"])),
        ("heartbeat", f"{info['heartbeat']} s" if info["heartbeat"] else "off"),
        ("mechanisms", " ".join(info["mechanisms"])),
    ]
    for key, value in rows:
        out.write(f"{key:<12} {value}\n")
    out.write("capabilities:\n")
    caps = info["capabilities"]
    width = max((len(k) for k in caps), default=0)
    for key in sorted(caps):
        out.write(f"  {key:<{width}}  {'yes' if caps[key] is True else jsonable(caps[key])}\n")
    others = {k: v for k, v in props.items() if k not in ("capabilities", "product", "version",
                                                           "platform", "cluster_name")}
    if others:
        out.write("server properties:\n")
        for key in sorted(others):
            out.write(f"  {key}: {jsonable(others[key])}\n")
    return EXIT_OK


# --------------------------------------------------------------------------- publish

_INT_PROPERTIES = {"delivery_mode", "priority"}


def _message_properties(args: argparse.Namespace) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key, value in parse_pairs(args.property, "--property").items():
        name = key.replace("-", "_")
        if name not in PROPERTY_NAMES or name == "headers":
            known = ", ".join(n for n in PROPERTY_NAMES if n != "headers")
            raise CLIError(f"unknown message property {key!r} (known: {known}; headers go "
                           f"in --header)", EXIT_USAGE)
        if name in _INT_PROPERTIES:
            try:
                props[name] = int(value)
            except ValueError:
                raise CLIError(f"--property {key} takes an integer, not {value!r}", EXIT_USAGE) from None
        elif name == "timestamp":
            props[name] = _timestamp(value)
        else:
            props[name] = value
    headers = parse_pairs(args.header, "--header")
    if headers:
        props["headers"] = headers
    if args.persistent:
        props["delivery_mode"] = 2
    return props


def _timestamp(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise CLIError(f"--property timestamp takes seconds since the epoch or an ISO 8601 "
                       f"date, not {value!r}", EXIT_USAGE) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _bodies(args: argparse.Namespace) -> tuple[Iterator[bytes], int]:
    """The bodies to publish and how many (0 when unknown: stdin lines)."""
    count = args.count
    if args.body is not None or args.file is not None:
        if args.body is not None:
            body = args.body.encode("utf-8")
        elif args.file == "-":
            body = sys.stdin.buffer.read()
        else:
            try:
                with open(args.file, "rb") as f:
                    body = f.read()
            except OSError as exc:
                raise CLIError(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_USAGE) from None
        n = 1 if count is None else count
        return (body for _ in range(n)), n

    def lines() -> Iterator[bytes]:
        if sys.stdin.isatty():
            _status("reading messages from stdin, one per line (Ctrl-D to end)")
        sent = 0
        for line in sys.stdin.buffer:
            if count is not None and sent >= count:
                return
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            yield line
            sent += 1

    return lines(), 0


def cmd_publish(args: argparse.Namespace) -> int:
    """``leveret publish``: one message per body (``--body``/``--file``, ``--count`` times)
    or per stdin line."""
    if args.count is not None and args.count < 0:
        raise CLIError("--count must be 0 or more", EXIT_USAGE)
    url, params = resolve_url(args.url)
    props = _message_properties(args)
    bodies, total = _bodies(args)
    confirm = args.confirm or args.mandatory
    conn = open_connection(url, params)
    published = 0
    try:
        try:
            ch = conn.channel()
            if confirm:
                ch.confirm_select()
            with Progress(total, "publish", mode=args.progress) as bar:
                for body in bodies:
                    ch.basic_publish(Message(body, **props), exchange=args.exchange,
                                     routing_key=args.routing_key, mandatory=args.mandatory)
                    published += 1
                    bar.update()
            if confirm:
                ch.wait_for_confirms(timeout=args.confirm_timeout)
            else:
                # A round trip: the broker has handled every publish when its reply comes,
                # so a refused publish (missing exchange) is reported here, not lost.
                ch.basic_qos(prefetch_count=0)
        except PublishNacked as exc:
            raise CLIError(f"the broker nacked {len(exc.delivery_tags)} of {published} "
                           f"message(s) (delivery tags {exc.delivery_tags[:10]})") from None
        except (LeveretError, OSError) as exc:
            raise operation_error(f"publish (after {published} message(s))", exc) from None
        returned = len(ch.returned)
    finally:
        conn.close()
    where = f"exchange {args.exchange!r} with routing key {args.routing_key!r}"
    state = " and confirmed" if confirm else ""
    if returned:
        raise CLIError(f"{returned} of {published} message(s) published to {where} were "
                       f"returned as unroutable")
    _status(f"published {published} message(s){state} to {where}")
    return EXIT_OK


# --------------------------------------------------------------------------- consume / get


def _emit(msg: Message, as_json: bool) -> None:
    body = bytes(msg.body)
    if as_json:
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        info = {k: v for k, v in msg.delivery_info.items() if k != "publish_tag"}
        record = {"body": text, "body_encoding": encoding,
                  "properties": jsonable(msg.properties), "delivery_info": jsonable(info)}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        out = sys.stdout.buffer
        out.write(body + b"\n")
        out.flush()


def _split_queue(args: argparse.Namespace, command: str) -> tuple[str | None, str]:
    tokens = list(args.target)
    url = tokens.pop(0) if tokens and looks_like_url(tokens[0]) else None
    if len(tokens) != 1:
        raise CLIError(f"{command} takes [URL] QUEUE", EXIT_USAGE)
    return url, tokens[0]


def cmd_consume(args: argparse.Namespace) -> int:
    """``leveret consume``: print messages as they arrive (ack after printing)."""
    given, queue = _split_queue(args, "consume")
    if args.count is not None and args.count < 1:
        raise CLIError("--count must be 1 or more", EXIT_USAGE)
    url, params = resolve_url(given)
    conn = open_connection(url, params)
    received = 0
    cancelled: list[str] = []
    try:
        try:
            ch = conn.channel()
            if args.prefetch:
                ch.basic_qos(prefetch_count=args.prefetch)

            def on_message(msg: Message) -> None:
                nonlocal received
                if args.count is not None and received >= args.count:
                    if not args.no_ack:  # beyond the count: back to the queue
                        msg.reject(requeue=True)
                    return
                _emit(msg, args.json)
                if not args.no_ack:
                    msg.ack()
                received += 1

            tag = ch.basic_consume(queue, no_ack=args.no_ack, callback=on_message,
                                   on_cancel=cancelled.append)
            last = time.monotonic()
            while args.count is None or received < args.count:
                if cancelled:
                    raise CLIError(f"the broker cancelled the consumer (queue {queue!r} was "
                                   f"deleted?) after {received} message(s)")
                wait = None if args.timeout is None else args.timeout - (time.monotonic() - last)
                if wait is not None and wait <= 0:
                    break
                before = received
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    break
                if received != before:
                    last = time.monotonic()
            if not cancelled:
                ch.basic_cancel(tag)
        except CLIError:
            raise
        except (LeveretError, OSError) as exc:
            raise operation_error(f"consume from queue {queue!r}", exc) from None
    finally:
        conn.close()
    if args.count is not None and received < args.count:
        raise CLIError(f"received {received} of {args.count} message(s) from queue {queue!r} "
                       f"before the --timeout of {args.timeout:g} s")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    """``leveret get``: fetch up to ``--count`` messages with basic.get (exit 1 when the
    queue is empty)."""
    given, queue = _split_queue(args, "get")
    if args.count < 1:
        raise CLIError("--count must be 1 or more", EXIT_USAGE)
    url, params = resolve_url(given)
    conn = open_connection(url, params)
    got = 0
    try:
        try:
            ch = conn.channel()
            for _ in range(args.count):
                msg = ch.basic_get(queue, no_ack=args.no_ack)
                if msg is None:
                    break
                _emit(msg, args.json)
                if not args.no_ack:
                    msg.ack()
                got += 1
            if got and not args.no_ack:
                ch.basic_qos(prefetch_count=0)  # a round trip: the acks are handled
        except (LeveretError, OSError) as exc:
            raise operation_error(f"get from queue {queue!r}", exc) from None
    finally:
        conn.close()
    if not got:
        raise CLIError(f"queue {queue!r} is empty")
    return EXIT_OK


# --------------------------------------------------------------------------- declare / delete / purge

_KINDS = ("exchange", "queue", "binding")


def _split_entity(args: argparse.Namespace, command: str) -> tuple[str | None, str, list[str]]:
    tokens = list(args.target)
    url = tokens.pop(0) if tokens and looks_like_url(tokens[0]) else None
    if not tokens or tokens[0] not in _KINDS:
        raise CLIError(f"{command} takes [URL] {{exchange,queue,binding}} ... "
                       f"(see leveret {command} --help)", EXIT_USAGE)
    kind, names = tokens[0], tokens[1:]
    wanted = {"exchange": (1, 1), "queue": (0 if command == "declare" else 1, 1), "binding": (2, 2)}[kind]
    if not wanted[0] <= len(names) <= wanted[1]:
        form = {"exchange": "exchange NAME", "queue": "queue NAME" if command != "declare" else "queue [NAME]",
                "binding": "binding SOURCE DESTINATION"}[kind]
        raise CLIError(f"{command} {kind} takes {form}", EXIT_USAGE)
    return url, kind, names


def cmd_declare(args: argparse.Namespace) -> int:
    """``leveret declare exchange|queue|binding``."""
    given, kind, names = _split_entity(args, "declare")
    url, params = resolve_url(given)
    arguments = parse_pairs(args.argument, "--argument", typed=True) or None
    conn = open_connection(url, params)
    try:
        try:
            ch = conn.channel()
            if kind == "exchange":
                ch.exchange_declare(names[0], type=args.type, passive=args.passive,
                                    durable=args.durable, auto_delete=args.auto_delete,
                                    internal=args.internal, arguments=arguments)
                _status(f"declared {args.type} exchange {names[0]!r}")
            elif kind == "queue":
                ok = ch.queue_declare(names[0] if names else "", passive=args.passive,
                                      durable=args.durable, auto_delete=args.auto_delete,
                                      arguments=arguments)
                assert ok is not None
                sys.stdout.write(ok.queue + "\n")
                _status(f"declared queue {ok.queue!r}: {ok.message_count} message(s), "
                        f"{ok.consumer_count} consumer(s)")
            else:
                source, destination = names
                if args.destination_type == "exchange":
                    ch.exchange_bind(destination, source, args.routing_key, arguments=arguments)
                else:
                    ch.queue_bind(destination, source, args.routing_key, arguments=arguments)
                _status(f"bound {args.destination_type} {destination!r} to exchange {source!r} "
                        f"with routing key {args.routing_key!r}")
        except (LeveretError, OSError) as exc:
            raise operation_error(f"declare {kind} {' '.join(repr(n) for n in names)}".rstrip(), exc) from None
    finally:
        conn.close()
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    """``leveret delete exchange|queue|binding``."""
    given, kind, names = _split_entity(args, "delete")
    url, params = resolve_url(given)
    arguments = parse_pairs(args.argument, "--argument", typed=True) or None
    conn = open_connection(url, params)
    try:
        try:
            ch = conn.channel()
            if kind == "exchange":
                ch.exchange_delete(names[0], if_unused=args.if_unused)
                _status(f"deleted exchange {names[0]!r}")
            elif kind == "queue":
                count = ch.queue_delete(names[0], if_unused=args.if_unused, if_empty=args.if_empty)
                _status(f"deleted queue {names[0]!r} ({count} message(s) with it)")
            else:
                source, destination = names
                if args.destination_type == "exchange":
                    ch.exchange_unbind(destination, source, args.routing_key, arguments=arguments)
                else:
                    ch.queue_unbind(destination, source, args.routing_key, arguments=arguments)
                _status(f"unbound {args.destination_type} {destination!r} from exchange {source!r}")
        except (LeveretError, OSError) as exc:
            raise operation_error(f"delete {kind} {' '.join(repr(n) for n in names)}", exc) from None
    finally:
        conn.close()
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    """``leveret purge QUEUE``."""
    given, queue = _split_queue(args, "purge")
    url, params = resolve_url(given)
    conn = open_connection(url, params)
    try:
        try:
            count = conn.channel().queue_purge(queue)
        except (LeveretError, OSError) as exc:
            raise operation_error(f"purge queue {queue!r}", exc) from None
    finally:
        conn.close()
    _status(f"purged {count} message(s) from queue {queue!r}")
    return EXIT_OK


# --------------------------------------------------------------------------- conformance


def cmd_conformance(args: argparse.Namespace) -> int:
    """``leveret conformance``: run the battery; exit 1 when a check fails."""
    from ..testing.conformance import CHECKS, ConformanceError, check_protocol, run_checks, select_checks

    chosen = select_checks(args.check)
    # Every pattern must select something: a mistyped one next to good ones would otherwise
    # drop its checks silently, and the run would pass without them (or --list say nothing).
    unmatched = [p for p in args.check if not select_checks([p])]
    if not chosen or unmatched:
        names = ", ".join(sorted({c.group for c in CHECKS}))
        raise CLIError(f"no check matches {' '.join(unmatched or args.check)} (groups: {names})",
                       EXIT_USAGE)
    if args.list:
        for c in chosen:
            sys.stdout.write(f"{c.name:<42} {c.spec}\n    {c.description}\n")
            if c.deviation:
                sys.stdout.write(f"    RabbitMQ deviation: {c.deviation}\n")
        return EXIT_OK
    url, _ = resolve_url(args.url)
    try:
        check_protocol(url)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if args.jobs < 1:
        raise CLIError("--jobs must be 1 or more", EXIT_USAGE)
    bar = Progress(len(chosen), "conformance", mode=args.progress, unit="checks")
    try:
        with bar:
            report = run_checks(url, args.check, jobs=args.jobs, timeout=args.timeout,
                                on_result=lambda result: bar.update())
    except ConformanceError as exc:
        raise CLIError(f"conformance: {exc}", EXIT_CONNECT) from None
    if args.junit_xml:
        try:
            with open(args.junit_xml, "w", encoding="utf-8") as f:
                f.write(report.to_junit_xml())
        except OSError as exc:
            raise CLIError(f"cannot write {args.junit_xml}: {exc.strerror or exc}") from None
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        sys.stdout.write(report.format_table(shutil.get_terminal_size((100, 20)).columns) + "\n")
    sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_FAILURE
