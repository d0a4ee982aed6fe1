"""``leveret`` (``python -m leveret``): the command line.

Every command takes the broker's URL as its first argument or from ``AMQP_URL``.  Exit
codes: 0 success; 1 the command failed (the broker refused an operation, a conformance
check failed, ``get`` found the queue empty, publishes were nacked or returned); 2 bad
command line or URL; 3 the broker could not be reached or refused the connection
(credentials, virtual host); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .. import __version__
from . import commands
from .bench import PHASES, cmd_bench
from .commands import EXIT_INTERRUPTED, EXIT_USAGE, CLIError
from .progress import MODES

__all__ = ["build_parser", "main"]

_URL_HELP = ("broker URL, amqp[s]://user:password@host:port/vhost[?options] "
             "(default: $AMQP_URL)")

_EPILOG = """\
The URL comes first (or from AMQP_URL), e.g.
  leveret info amqp://guest:guest@localhost:5672/
  AMQP_URL=amqp://guest:guest@localhost/ leveret consume my-queue --count 10 --json

exit codes: 0 success, 1 the command failed (broker refusal, failed check, empty queue,
nacked or returned publishes), 2 bad command line or URL, 3 cannot connect or log in,
130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with our prefix on errors (exit code 2, as argparse does)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"leveret: {self.prog.split(' ', 1)[-1]}: {message}\n"
                  if " " in self.prog else f"leveret: {message}\n")


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=MODES, default="auto",
                   help="progress bar on stderr: auto (when it is a terminal), always, never")


def build_parser() -> argparse.ArgumentParser:
    """The ``leveret`` argument parser (sub-commands set ``func``)."""
    parser = _Parser(
        prog="leveret",
        description="leveret: an AMQP 0-9-1 / 0-8 client for RabbitMQ, from the command line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"leveret {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int],
                usage: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, usage=usage, epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    # info
    p = command("info", "show the broker's properties, capabilities and the negotiated "
                "channel_max / frame_max / heartbeat", commands.cmd_info)
    p.add_argument("url", nargs="?", metavar="URL", help=_URL_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")

    # publish
    p = command("publish", "publish messages: --body, --file, or one message per stdin line",
                commands.cmd_publish)
    p.add_argument("url", nargs="?", metavar="URL", help=_URL_HELP)
    p.add_argument("--exchange", "-e", default="", help="exchange (default: the default exchange '')")
    p.add_argument("--routing-key", "-k", default="", help="routing key (a queue name for the "
                   "default exchange)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--body", "-b", help="the message body (UTF-8)")
    src.add_argument("--file", "-f", help="a file whose whole content is the body ('-': stdin)")
    p.add_argument("--count", "-n", type=int, help="with --body/--file: publish it N times "
                   "(default 1); with stdin lines: stop after N lines")
    p.add_argument("--header", "-H", action="append", metavar="KEY=VALUE",
                   help="a message header (string value); repeatable")
    p.add_argument("--property", "-p", action="append", metavar="NAME=VALUE",
                   help="a message property (content_type, delivery_mode, priority, "
                   "correlation_id, reply_to, expiration, message_id, timestamp, type, "
                   "user_id, app_id, ...); repeatable")
    p.add_argument("--persistent", action="store_true", help="delivery_mode 2 (persistent)")
    p.add_argument("--confirm", action="store_true", help="publisher confirms: wait until "
                   "the broker confirmed every message (exit 1 on a nack)")
    p.add_argument("--mandatory", action="store_true", help="ask for unroutable messages "
                   "back (implies --confirm; exit 1 when any is returned)")
    p.add_argument("--confirm-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the confirms (default 60)")
    _progress_option(p)

    # consume / get
    queue_usage = "leveret {name} [URL] QUEUE [options]"
    p = command("consume", "consume messages from a queue and print them (ack after "
                "printing)", commands.cmd_consume, usage=queue_usage.format(name="consume"))
    p.add_argument("target", nargs="+", metavar="[URL] QUEUE", help=f"{_URL_HELP}; the queue")
    p.add_argument("--count", "-n", type=int, help="stop after N messages (default: run until "
                   "interrupted or --timeout)")
    p.add_argument("--no-ack", action="store_true", help="no acknowledgements (the broker "
                   "forgets messages as it sends them; with --count, any it sent beyond the "
                   "count are lost)")
    p.add_argument("--prefetch", type=int, help="basic.qos prefetch count")
    p.add_argument("--timeout", "-t", type=float, metavar="SECONDS", help="stop when no message "
                   "came for this long (exit 1 if --count was not reached)")
    p.add_argument("--json", action="store_true", help="one JSON object per message and line")

    p = command("get", "fetch messages with basic.get (exit 1 when the queue is empty)",
                commands.cmd_get, usage=queue_usage.format(name="get"))
    p.add_argument("target", nargs="+", metavar="[URL] QUEUE", help=f"{_URL_HELP}; the queue")
    p.add_argument("--count", "-n", type=int, default=1, help="fetch up to N messages (default 1)")
    p.add_argument("--no-ack", action="store_true", help="basic.get with no-ack")
    p.add_argument("--json", action="store_true", help="one JSON object per message and line")

    # declare / delete / purge
    p = command("declare", "declare an exchange, a queue or a binding", commands.cmd_declare,
                usage="leveret declare [URL] exchange NAME [--type TYPE] ...\n"
                      "       leveret declare [URL] queue [NAME] ...\n"
                      "       leveret declare [URL] binding SOURCE DESTINATION "
                      "[--routing-key KEY] [--destination-type queue|exchange]")
    p.add_argument("target", nargs="+", metavar="[URL] KIND NAME...",
                   help="exchange NAME | queue [NAME] (empty: a server-named queue, printed) | "
                        "binding SOURCE-EXCHANGE DESTINATION")
    p.add_argument("--type", default="direct", help="exchange type (default direct)")
    p.add_argument("--durable", action="store_true", help="survive a broker restart")
    p.add_argument("--auto-delete", action="store_true", help="delete when no longer used")
    p.add_argument("--internal", action="store_true", help="exchange: not for publishing")
    p.add_argument("--passive", action="store_true", help="only check that it exists")
    p.add_argument("--routing-key", "-k", default="", help="binding key")
    p.add_argument("--destination-type", choices=("queue", "exchange"), default="queue",
                   help="binding destination kind (default queue)")
    p.add_argument("--argument", "-a", action="append", metavar="KEY=VALUE",
                   help="an x-argument (integers and true/false are typed); repeatable")

    p = command("delete", "delete an exchange, a queue or a binding", commands.cmd_delete,
                usage="leveret delete [URL] exchange NAME [--if-unused]\n"
                      "       leveret delete [URL] queue NAME [--if-unused] [--if-empty]\n"
                      "       leveret delete [URL] binding SOURCE DESTINATION [--routing-key KEY]")
    p.add_argument("target", nargs="+", metavar="[URL] KIND NAME...",
                   help="exchange NAME | queue NAME | binding SOURCE-EXCHANGE DESTINATION")
    p.add_argument("--if-unused", action="store_true", help="only if unused")
    p.add_argument("--if-empty", action="store_true", help="queue: only if empty")
    p.add_argument("--routing-key", "-k", default="", help="binding key")
    p.add_argument("--destination-type", choices=("queue", "exchange"), default="queue",
                   help="binding destination kind (default queue)")
    p.add_argument("--argument", "-a", action="append", metavar="KEY=VALUE",
                   help="binding arguments; repeatable")

    p = command("purge", "remove every ready message from a queue", commands.cmd_purge,
                usage="leveret purge [URL] QUEUE")
    p.add_argument("target", nargs="+", metavar="[URL] QUEUE", help=f"{_URL_HELP}; the queue")

    # bench
    p = command("bench", "publish/consume throughput and round-trip latency", cmd_bench)
    p.add_argument("url", nargs="?", metavar="URL", help=_URL_HELP)
    p.add_argument("--count", "-n", type=int, default=10000, help="messages per publish phase "
                   "(default 10000)")
    p.add_argument("--size", "-s", type=int, default=256, help="body size in bytes (default 256)")
    p.add_argument("--latency-count", type=int, default=200, help="round trips measured "
                   "(default 200)")
    p.add_argument("--prefetch", type=int, default=1000, help="consumer prefetch (default 1000)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated phases to run (default {','.join(PHASES)})")
    p.add_argument("--json", action="store_true", help="print JSON")
    _progress_option(p)

    # conformance
    p = command("conformance", "run the protocol conformance battery against the broker",
                commands.cmd_conformance)
    p.add_argument("url", nargs="?", metavar="URL", help=_URL_HELP)
    p.add_argument("--check", "-c", action="append", default=[], metavar="PATTERN",
                   help="only checks matching this glob or group (e.g. 'frames', "
                   "'confirms.*'); repeatable")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--junit-xml", metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument("--jobs", "-j", type=int, default=8, help="checks run at once (default 8)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds each expectation waits "
                   "(default 5)")
    _progress_option(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        sys.stdout.flush()
        print(f"leveret: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("leveret: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`); nothing more can be written there.
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - keeps the exit flush quiet
        except OSError:
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
