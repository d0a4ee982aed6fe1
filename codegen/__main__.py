"""``python -m codegen [--check] [--root DIR]``: regenerate, or verify, the generated codecs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ROOT, check, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate in memory; exit 1 naming each committed file that differs",
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="repository root (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.root)
        for rel in stale:
            print(f"{rel}: out of date; run: python -m codegen", file=sys.stderr)
        if stale:
            return 1
        print("codegen: generated files are up to date")
        return 0
    for rel in write(args.root):
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
