"""What ships: the sdist is the whole project (its tests run from it), and the lazily
imported public names show in ``dir()``."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_sdist_holds_what_its_tests_need(tmp_path: Path) -> None:
    # With no MANIFEST.in, setuptools put tests/test_*.py in but none of what they import
    # (conftest.py, helpers.py, broker.py, tests/data, scripts/rabbitmq.py), nor spec/ and
    # codegen/ for the freshness check: 27 collection errors from the unpacked sdist.
    # (In a subprocess: building writes leveret.egg-info, which .gitignore covers.)
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    listed = subprocess.run(
        ["git", "ls-files", "tests", "spec", "codegen", "scripts", "docs", "leveret"],
        cwd=ROOT, capture_output=True, text=True,
    )
    tracked = listed.stdout.split() if listed.returncode == 0 else []
    if tracked:  # (a git checkout: every tracked file of these folders ships)
        assert set(tracked) <= names, sorted(set(tracked) - names)
    for needed in ("tests/conftest.py", "tests/helpers.py", "tests/broker.py", "scripts/rabbitmq.py",
                   "spec/amqp0-9-1.stripped.extended.xml", "codegen/__main__.py", "Makefile",
                   "leveret/py.typed", "leveret/wire/amqp0_9_1.py"):
        assert needed in names, needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_lazily_imported_names_are_listed_by_dir() -> None:
    import leveret
    import leveret.client

    assert {"Connection", "Queue", "Producer", "LeveretError"} <= set(dir(leveret))
    assert {"AsyncConnection", "AsyncChannel", "Connection"} <= set(dir(leveret.client))
