"""Run genq's parts as local processes: a redis-server, `genq relay`, `genq worker`s, Flower,
the gateway (`genq serve`).

Used by the local stack (ops/stackctl.py, which `make demo` uses), the benchmark and the
integration tests' session fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import redis

from genq.common.settings import Settings

READY_TIMEOUT_S = 60.0


class StackError(RuntimeError):
    """A local process would not start; the message says why and where its log is."""


def settings_for(env: Mapping[str, str]) -> Settings:
    """This process's Settings from the GENQ_* variables a subprocess is given."""
    fields: dict[str, Any] = {k.removeprefix("GENQ_").lower(): v for k, v in env.items()}
    return Settings(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until true; StackError naming `what` when `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A redis-server on a free loopback port. By default a throwaway one: its data in a
    temporary directory, removed on stop. With `persist`, an append-only file in `workdir`
    that outlives it (the local stack's Redis). `host` and `prefix` put it elsewhere: on a
    namespace host's address, started by `ip netns exec <ns>` (ops/netns.py)."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # the address it binds, and its URL's
    prefix: Sequence[str] = ()  # what runs the command (`ip netns exec <ns>`)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="genq-redis-")))
    persist: bool = False
    password: str | None = None  # required of clients when set (--requirepass); in `url`
    log: Path | None = None  # default: redis.log in workdir
    env: Mapping[str, str] = field(default_factory=dict)  # added to its environment
    args: Sequence[str] = ()  # more redis-server options (a TLS port, a Unix socket)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.log or self.workdir / "redis.log"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(
                "redis-server not found. Install it (Debian/Ubuntu: apt-get install redis-server; "
                "macOS: brew install redis) or set GENQ_REDIS_URL to a running Redis."
            )
        return [
            *self.prefix,
            binary,
            *("--port", str(self.port), "--bind", self.host, "--dir", str(self.workdir)),
            *("--save", "", "--appendonly", "yes" if self.persist else "no"),
            *("--databases", "1024"),  # the tests give each stack that kills things a database
            *("--logfile", str(self.log_path.absolute())),
            *(["--requirepass", self.password] if self.password else []),
            *self.args,
        ]

    def spawn(self) -> RedisServer:
        """Started, not yet waited for (`wait_ready`)."""
        command = self.command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop it last
        )
        return self

    def wait_ready(self) -> RedisServer:
        with _stop_on_failure(self):
            what = f"redis-server on port {self.port} (log: {self.log_path})"
            wait_for(self._ready, READY_TIMEOUT_S, what)
        return self

    def start(self) -> RedisServer:
        return self.spawn().wait_ready()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(
                f"redis-server exited with {self.proc.returncode}; see {self.log_path}"
            )
        try:
            client = redis.Redis(
                self.host, self.port, password=self.password, socket_connect_timeout=0.5
            )
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if not self.persist:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class GenqProcess:
    """A `genq` command as a subprocess in its own process group, so that the whole of it
    (a worker's main process and pool children) can be signalled together."""

    env: Mapping[str, str]
    log: Path
    prefix: Sequence[str] = field(default=(), kw_only=True)  # `ip netns exec <ns>` (ops/netns.py)
    stdin: int | None = field(default=None, kw_only=True)  # subprocess.PIPE: the caller writes it
    proc: subprocess.Popen[bytes] | None = None
    _log_start: int = 0
    ready_marker: ClassVar[str] = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def what(self) -> str:
        """How it is named in messages: `genq relay`."""
        return f"genq {self.command()[0]}"

    def argv(self) -> list[str]:
        """What runs: the genq command (ops/stack runs the relay under a supervisor)."""
        return [*self.prefix, str(genq_executable()), *self.command()]

    def spawn(self) -> Self:
        """Started, not yet waited for (`wait_ready`), so that several start side by side."""
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                env={**os.environ, **self.env},
                stdin=self.stdin,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self) -> Self:
        with _stop_on_failure(self):
            wait_for(self._ready, READY_TIMEOUT_S, f"{self.what} (log: {self.log})")
        return self

    def start(self) -> Self:
        return self.spawn().wait_ready()

    def _ready(self) -> bool:
        self._check_running()
        with self.log.open("rb") as log:
            log.seek(self._log_start)
            return self.ready_marker.encode() in log.read()

    def _check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"{self.what} exited with {self.proc.returncode}; see {self.log}")

    def signal(self, sig: signal.Signals) -> None:
        """Signal every process of it (tests: SIGKILL a worker mid-job, SIGSTOP one)."""
        if self.proc is not None:
            _signal(self.proc, sig, group=True)

    def stop(self) -> None:
        if self.proc is not None:
            _signal(self.proc, signal.SIGCONT, group=True)  # a stopped process cannot exit
            stop_process(self.proc, group=True)
            self.proc = None


@dataclass
class Worker(GenqProcess):
    """`genq worker`: it serves the registry's cpu models unless `args` say otherwise
    (`--models a,b`, `--device gpu`)."""

    args: tuple[str, ...] = ()
    name: str = "genq"
    node_host: str = "%h"  # its node name's host part: this machine's name, or a namespace host's
    ready_marker: ClassVar[str] = " ready."

    def command(self) -> list[str]:
        return ["worker", "-n", f"{self.name}@{self.node_host}", *self.args]


@dataclass
class Relay(GenqProcess):
    """`genq relay`."""

    ready_marker: ClassVar[str] = "relay: moving frames"

    def command(self) -> list[str]:
        return ["relay"]


@dataclass
class Flower(GenqProcess):
    """`genq flower` on a free loopback port (or `host`'s); ready when its HTTP server
    answers."""

    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return ["flower", "--address", self.host, "--port", str(self.port), *self.args]

    def get(self, path: str, timeout_s: float = 10.0) -> bytes:
        """GET `path` (e.g. /api/workers); urllib's errors as they are."""
        with urllib.request.urlopen(self.url + path, timeout=timeout_s) as reply:
            body: bytes = reply.read()
            return body

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def _ready(self) -> bool:
        self._check_running()
        try:
            return self.get("/healthcheck", timeout_s=1.0) == b"OK"
        except OSError:  # not listening yet (URLError is an OSError)
            return False


@dataclass
class Gateway(GenqProcess):
    """`genq serve` on a free loopback port (or `host`'s); ready when GET /v1/models answers
    (any status: with API keys it answers 401)."""

    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return ["serve", "--host", self.host, "--port", str(self.port), *self.args]

    def _ready(self) -> bool:
        self._check_running()
        try:
            with urllib.request.urlopen(self.url + "/v1/models", timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:  # not listening yet
            return False


def genq_executable() -> Path:
    """The `genq` console script beside this interpreter (the virtual environment's)."""
    beside = Path(sys.executable).with_name("genq")
    found = beside if beside.exists() else shutil.which("genq")
    if found is None:
        raise StackError(f"no genq command beside {sys.executable} or on PATH: install genq")
    return Path(found)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@contextmanager
def _stop_on_failure(process: _Stoppable) -> Iterator[None]:
    """A start that fails or is interrupted (Ctrl-C) stops what it spawned."""
    try:
        yield
    except BaseException:
        process.stop()
        raise


def stop_process(proc: subprocess.Popen[bytes], group: bool = False, grace_s: float = 10.0) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM, group)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, group)
        proc.wait()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
