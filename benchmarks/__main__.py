"""``python -m benchmarks [codec|client|highlevel|asyncio] [options]``; with no sub-command, codec
then client (quick scale).

See benchmarks/README.md.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m benchmarks {codec,client,highlevel,asyncio} [options]

  codec    frame encode/decode per message, no broker      (python -m benchmarks codec -h)
  client   whole clients against one RabbitMQ node          (python -m benchmarks client -h)
  highlevel  leveret.highlevel vs kombu (py-amqp), one node   (python -m benchmarks highlevel -h)
  asyncio  leveret's asyncio driver vs aiormq and aio-pika  (python -m benchmarks asyncio -h)

With no sub-command: the codec benchmark, then the client benchmark at --scale 0.1.
"""


def main(argv: list[str]) -> int:
    if not argv:
        from . import client, codec

        status = codec.main([])
        print()
        return status or client.main(["--scale", "0.1"])
    command, rest = argv[0], argv[1:]
    if command == "codec":
        from . import codec

        return codec.main(rest)
    if command == "client":
        from . import client

        return client.main(rest)
    if command == "highlevel":
        from . import highlevel

        return highlevel.main(rest)
    if command == "asyncio":
        from . import aio

        return aio.main(rest)
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
