#!/usr/bin/env python3
"""A private RabbitMQ node for leveret's tests, demo and benchmarks.

Importable (``from rabbitmq import PrivateNode`` with ``scripts/`` on ``sys.path``) and
runnable::

    python scripts/rabbitmq.py start            # print the URL, keep the node until Ctrl-C
    python scripts/rabbitmq.py run -- CMD ...   # run CMD with AMQP_URL set, then stop
    python scripts/rabbitmq.py install          # only make sure rabbitmq-server is there

The node is entirely ours: its own name (``leveret-<pid>-<random>@localhost``), its own
AMQP, distribution and epmd ports (all on 127.0.0.1), its own Erlang cookie, database, logs
and configuration in a temporary folder that ``stop()`` removes.  A system node that
Debian's package may have started is neither needed nor touched: the system's
``/etc/rabbitmq`` files are bypassed, and no ``RABBITMQ_*`` variable of the caller leaks in.

Debian's ``/usr/sbin/rabbitmq-server`` wrapper switches to the ``rabbitmq`` user when run as
root, which cannot write to our folder; we run the scripts in ``/usr/lib/rabbitmq/bin``
directly instead, which works as root and as any other user.

Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Iterable, Sequence

# Where the real (unwrapped) scripts live in Debian's package, then the usual wrappers.
_BIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/sbin", "/usr/local/sbin", "/usr/local/bin")

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


class RabbitMQError(RuntimeError):
    """The private node could not be installed, started, queried or stopped."""


# --------------------------------------------------------------------------- installation


def find_bin_dir() -> Path | None:
    """The folder holding ``rabbitmq-server`` and ``rabbitmqctl``, or None."""
    candidates = [Path(d) for d in _BIN_DIRS]
    on_path = shutil.which("rabbitmq-server")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "rabbitmq-server").is_file() and (folder / "rabbitmqctl").is_file():
            if folder == Path("/usr/sbin") and Path("/usr/lib/rabbitmq/bin/rabbitmq-server").is_file():
                continue  # prefer the unwrapped scripts (see the module docstring)
            return folder
    return None


def ensure_installed() -> Path:
    """Return the RabbitMQ scripts folder, installing Debian's package first if needed.

    Installing needs root and apt-get; anything else is a clear ``RabbitMQError``.
    """
    folder = find_bin_dir()
    if folder is not None:
        return folder
    if shutil.which("apt-get") is None:
        raise RabbitMQError(
            "rabbitmq-server is not installed and apt-get is not available: "
            "install RabbitMQ (3.10 or later) so that rabbitmq-server is on PATH"
        )
    if os.geteuid() != 0:
        raise RabbitMQError(
            "rabbitmq-server is not installed; run as root or install it first: "
            "sudo apt-get install -y rabbitmq-server"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("rabbitmq.py: installing rabbitmq-server with apt-get ...", file=sys.stderr, flush=True)
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "rabbitmq-server"],
    ):
        result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, check=False)
        if result.returncode != 0:
            raise RabbitMQError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                                + _tail(result.stdout, 40))
    folder = find_bin_dir()
    if folder is None:
        raise RabbitMQError("apt-get installed rabbitmq-server but its scripts were not found")
    return folder


# --------------------------------------------------------------------------- helpers


def free_port(below: int = 65536) -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel's choice)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port
    raise RabbitMQError(f"no free port below {below}")


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _find_epmd() -> str:
    found = shutil.which("epmd")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"), reverse=True):
        return str(candidate)
    raise RabbitMQError("epmd (Erlang's port mapper) was not found; is erlang-base installed?")


# --------------------------------------------------------------------------- the reaper

# Run in a process of its own for every node (``python -c``), so that a node never outlives
# its owner: stop() and atexit cover a normal exit and Ctrl-C, but not a SIGKILL, a SIGTERM
# (a CI job's time limit), or a crash of the interpreter.  The reaper reads lines from a
# pipe whose only writer is the owner: "group N" for each process group started,
# "forget N" for a group the owner has killed itself, "done" when stop() has finished.
# End of file without "done" means the owner is gone: it kills every group still listed
# and removes the node's folder.  It ignores SIGINT and has a session of its own, so
# neither Ctrl-C in the terminal nor a signal to the owner's process group reaches it.
_REAPER = """
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
folder, groups = sys.argv[1], set()
for line in sys.stdin:
    word, _, arg = line.strip().partition(" ")
    if word == "done":
        sys.exit(0)
    if word == "group":
        groups.add(int(arg))
    elif word == "forget":
        groups.discard(int(arg))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
for _ in range(20):
    time.sleep(0.25)
    shutil.rmtree(folder, ignore_errors=True)
    if not os.path.exists(folder):
        break
"""


class _Reaper:
    """The owner's end of the reaper process (see ``_REAPER``)."""

    def __init__(self, folder: Path) -> None:
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable or "python3", "-c", _REAPER, str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def tell(self, message: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(message.encode() + b"\n")
            proc.stdin.flush()
        except OSError:  # it died: nothing more it could do for us
            pass

    def dismiss(self) -> None:
        """Everything is cleaned up: let the reaper exit without doing anything."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.write(b"done\n")
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the node


class PrivateNode:
    """One RabbitMQ node of our own, in a temporary folder.

    ``start()`` blocks until the broker accepts AMQP connections; ``stop()`` (also called
    by ``with`` and at interpreter exit) shuts it down and removes every file it wrote.
    Should the owning process die without calling it (SIGKILL, SIGTERM, a crash), a reaper
    process kills the node and removes its folder instead.
    """

    def __init__(self, plugins: Iterable[str] = (), config: str = "",
                 start_timeout: float = START_TIMEOUT) -> None:
        self.plugins: list[str] = list(plugins)
        self.extra_config = config
        self.start_timeout = start_timeout
        self.bin_dir: Path | None = None
        self.dir: Path | None = None
        self.nodename = f"leveret-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port = 0
        self.dist_port = 0
        self.epmd_port = 0
        self.env: dict[str, str] = {}
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._reaper: _Reaper | None = None
        self._beam_pid: int | None = None
        self._paused = False

    # ---- life cycle

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/``; guest may log in because we use loopback."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def epmd_pid(self) -> int | None:
        """The process id of the node's own epmd (None when not started)."""
        return self._epmd.pid if self._epmd is not None else None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def start(self) -> "PrivateNode":
        if self._server is not None:
            raise RabbitMQError("this node was already started")
        self.bin_dir = ensure_installed()
        self.dir = Path(tempfile.mkdtemp(prefix="leveret-rabbitmq-"))
        atexit.register(self.stop)
        self._reaper = _Reaper(self.dir)
        try:
            self._prepare()
            self._launch()
            self._await_startup()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        assert self.dir is not None
        home = self.dir / "home"
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir()
        # One cookie shared by the server and every rabbitmqctl: both get HOME=home.
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)

        self.port = free_port()
        # rabbitmqctl's own defaults put its distribution ports at 35672-35682; keep ours clear.
        self.dist_port = free_port()
        self.epmd_port = free_port()

        conf = self.dir / "rabbitmq.conf"
        conf.write_text(
            "# written by leveret's scripts/rabbitmq.py\n"
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # The default embeds the machine's host name in every connection.start.
            "cluster_name = leveret\n"
            # The server proposes 60 s; a client asking for less (or 0) gets what it asks.
            "heartbeat = 60\n"
            # Test machines often have little free disk; an alarm would block publishers.
            "disk_free_limit.absolute = 1MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
            + self.extra_config
            + ("\n" if self.extra_config and not self.extra_config.endswith("\n") else "")
        )
        self._write_plugins_file()
        (self.dir / "rabbitmq-env.conf").write_text("# empty: keeps /etc/rabbitmq out\n")

        # Distribution on loopback only; and never let erl start an epmd of its own (it
        # would listen on every interface and outlive the node): ours is started first.
        erl_args = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RABBITMQ_") and not k.startswith("ERL_")}
        env.update(
            HOME=str(home),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(conf),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=erl_args,
            RABBITMQ_CTL_ERL_ARGS=erl_args,
        )
        self.env = env

    def _write_plugins_file(self) -> None:
        assert self.dir is not None
        names = ",".join(self.plugins)
        (self.dir / "enabled_plugins").write_text(f"[{names}].\n")

    def _launch(self) -> None:
        assert self.dir is not None and self.bin_dir is not None
        # Our own epmd, so that none is left behind and a system one is never used.
        self._epmd = subprocess.Popen(
            [_find_epmd(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._watch(self._epmd)
        self._await_epmd()
        console = open(self.dir / "log" / "console.log", "wb")
        with console:
            # A new session: a Ctrl-C in the caller's terminal must not reach the broker;
            # stop() shuts it down in order.
            self._server = subprocess.Popen(
                [str(self.bin_dir / "rabbitmq-server")], cwd=self.dir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._watch(self._server)

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        # start_new_session: the process id is also its group's id.
        if self._reaper is not None:
            self._reaper.tell(f"group {proc.pid}")

    def _await_epmd(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._epmd is None or self._epmd.poll() is not None:
                raise RabbitMQError(f"epmd could not listen on 127.0.0.1:{self.epmd_port}")
            try:
                with socket.create_connection(("127.0.0.1", self.epmd_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RabbitMQError(f"epmd did not listen on 127.0.0.1:{self.epmd_port} "
                                        f"within {timeout:.0f} s") from None
                time.sleep(0.05)

    def _await_startup(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            if self._server is None or self._server.poll() is not None:
                raise RabbitMQError(self._failure("rabbitmq-server exited during start-up"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RabbitMQError(self._failure(
                    f"the node did not start within {self.start_timeout:.0f} s; "
                    f"last rabbitmqctl output:\n{last}"))
            # await_startup fails at once while the node is not yet registered with epmd.
            result = self._run_ctl(
                ["await_startup", "--timeout", str(max(1, int(remaining)))],
                timeout=remaining + 15)
            if result.returncode == 0 and self._accepts_tcp():
                return
            last = (result.stdout + result.stderr).strip()
            time.sleep(0.5)

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        """The end of the node's log files (for error messages)."""
        if self.dir is None:
            return ""
        parts = []
        for path in sorted((self.dir / "log").glob("*.log")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {path.name}\n{_tail(text, lines)}")
        return "\n".join(parts)

    def _failure(self, message: str) -> str:
        return f"{message}\nnode {self.nodename}, AMQP port {self.port}\n{self.log_tail()}"

    def stop(self) -> None:
        """Stop the node (rabbitmqctl stop, then SIGKILL), its epmd, and remove its folder."""
        atexit.unregister(self.stop)
        server, self._server = self._server, None
        if server is not None:
            if self._paused:
                self.resume()
            if server.poll() is None:
                self._run_ctl(["stop"], timeout=STOP_TIMEOUT)
                try:
                    server.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group(server)
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            self._kill_group(epmd)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._beam_pid = None
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.dismiss()

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        # start_new_session made the process the leader of its own group, which also holds
        # beam.smp and its helpers (erl_child_setup, inet_gethost).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if self._reaper is not None:
            self._reaper.tell(f"forget {proc.pid}")

    def __enter__(self) -> "PrivateNode":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- management

    def _run_ctl(self, args: Sequence[str], timeout: float = 60.0,
                 tool: str = "rabbitmqctl") -> subprocess.CompletedProcess[str]:
        if self.bin_dir is None or self._epmd is None:
            # Without our epmd, the CLI would start a system-wide one that outlives us.
            return subprocess.CompletedProcess([tool, *args], 69, "",
                                               f"node {self.nodename} is not running")
        try:
            return subprocess.run(
                [str(self.bin_dir / tool), "-n", self.nodename, *args],
                env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGS...`` and return its stdout; non-zero exit raises."""
        result = self._run_ctl(args, timeout=timeout)
        if result.returncode != 0:
            raise RabbitMQError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n"
                                f"{result.stdout}{result.stderr}")
        return result.stdout

    def eval(self, expression: str) -> str:
        """Evaluate an Erlang expression on the node; returns the printed result, stripped."""
        return self.ctl("eval", expression).strip()

    def enable_plugins(self, *names: str) -> None:
        """Enable plugins: written to the node's enabled-plugins file before start, or
        enabled at once with rabbitmq-plugins if it is running.

        Note that rabbitmq_auth_mechanism_ssl offers EXTERNAL on TLS connections only.
        """
        for name in names:
            if name not in self.plugins:
                self.plugins.append(name)
        if self.dir is None:
            return
        if self.running:
            result = self._run_ctl(["enable", *names], tool="rabbitmq-plugins", timeout=120)
            if result.returncode != 0:
                raise RabbitMQError(f"rabbitmq-plugins enable {' '.join(names)} failed:\n"
                                    f"{result.stdout}{result.stderr}")
        else:
            self._write_plugins_file()

    def add_user(self, name: str, password: str, tags: Sequence[str] = ()) -> None:
        self.ctl("add_user", name, password)
        if tags:
            self.ctl("set_user_tags", name, *tags)

    def delete_user(self, name: str) -> None:
        self.ctl("delete_user", name)

    def add_vhost(self, name: str) -> None:
        self.ctl("add_vhost", name)

    def delete_vhost(self, name: str) -> None:
        self.ctl("delete_vhost", name)

    def set_permissions(self, user: str, vhost: str = "/", configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None:
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def list_connections(self, *items: str) -> list[list[str]]:
        """One row per client connection, with the requested items (default: pid, name)."""
        out = self.ctl("list_connections", "-q", "--no-table-headers", *(items or ("pid", "name")))
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def close_all_connections(self, reason: str = "closed by test") -> None:
        """The broker sends connection.close (320 CONNECTION_FORCED) on every connection."""
        self.ctl("close_all_connections", reason)

    def close_connection(self, pid: str, reason: str = "closed by test") -> None:
        self.ctl("close_connection", pid, reason)

    def set_vm_memory_high_watermark(self, fraction: float) -> None:
        """0 blocks every publisher at once (connection.blocked); 0.4 is the default."""
        self.ctl("set_vm_memory_high_watermark", repr(float(fraction)))

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    @property
    def beam_pid(self) -> int:
        """The OS process id of the node's Erlang VM."""
        if self._beam_pid is None:
            text = self.eval("os:getpid().")
            self._beam_pid = int(text.strip().strip('"'))
        return self._beam_pid

    def pause(self) -> None:
        """Freeze the Erlang VM (SIGSTOP): sockets stay open but nothing answers."""
        pid = self.beam_pid
        os.kill(pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._beam_pid is not None:
            try:
                os.kill(self._beam_pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._paused = False


# --------------------------------------------------------------------------- CLI


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a node, print its URL, keep it until Ctrl-C")
    run = sub.add_parser("run", help="start a node, run CMD with AMQP_URL set, stop the node")
    for p in (start, run):
        p.add_argument("--plugin", action="append", default=[], help="plugin to enable")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    sub.add_parser("install", help="install rabbitmq-server if it is missing")
    args = parser.parse_args(argv)

    if args.command == "install":
        print(ensure_installed())
        return 0

    _raise_on_sigterm()
    node = PrivateNode(plugins=args.plugin)
    try:
        node.start()
        if args.command == "start":
            print(node.url, flush=True)
            print(f"node {node.nodename}; Ctrl-C to stop", file=sys.stderr, flush=True)
            while node.running:
                time.sleep(1)
            print("the node exited by itself", file=sys.stderr)
            return 1
        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            parser.error("run needs a command after --")
        env = dict(os.environ, AMQP_URL=node.url)
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130 if args.command == "run" else 0
    except RabbitMQError as exc:
        print(f"rabbitmq.py: {exc}", file=sys.stderr)
        return 1
    finally:
        node.stop()


if __name__ == "__main__":
    sys.exit(main())
