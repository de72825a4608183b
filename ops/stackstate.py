"""What `ops/stack up` leaves in its run directory for `status` and `down`: the state file
(every process it started: name, pid, start time, port, log), a pid file per process, the
`env` file to source, and the lock that keeps two commands off one directory at a time.
With `up --hosts`, also the network of namespace hosts the processes run on (ops/netns.py).

    <run dir>/state.json   stack.lock   env   <name>.pid   <name>.log   redis/ (append-only file)
              relay.supervisor.json (the relay's supervisor: its pid, restarts; ops/supervisor.py)
"""

from __future__ import annotations

import fcntl
import os
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ops.localstack import StackError
from ops.processes import Recorded

STATE_FILE = "state.json"
LOCK_FILE = "stack.lock"
ENV_FILE = "env"
LOCK_TIMEOUT_S = 180.0  # another `up` waits for its processes to be ready: a minute or two

Role = Literal["redis", "relay", "worker", "flower", "gateway", "network"]


class ProcessRecord(BaseModel):
    """One process the stack started."""

    name: str = Field(description="redis, relay, worker1, worker2, ..., flower, gateway")
    role: Role
    pid: int = Field(description="Its pid, also its process group's id (a session of its own).")
    start_time: int | None = Field(
        description="Clock ticks after boot (/proc/<pid>/stat); None where there is no /proc."
    )
    port: int | None = Field(
        None, description="Redis's, Flower's or the gateway's port, or a metrics port."
    )
    url: str | None = Field(
        None, description="Where to reach it: Flower, the gateway, a metrics endpoint."
    )
    log: Path
    supervisor: Path | None = Field(
        None,
        description="The record its supervisor keeps (ops/supervisor.py), when `pid` is a "
        "supervisor that starts the process again whenever it exits.",
    )
    host: str | None = Field(None, description="Its namespace host (`up --hosts`): w1, gw ...")
    address: str | None = Field(None, description="That host's address on the bridge.")

    @property
    def process(self) -> Recorded:
        return Recorded(self.pid, self.start_time)


class NetworkRecord(BaseModel):
    """The namespace hosts of `up --hosts` (ops/netns.py): what `down` removes."""

    tag: str = Field(description="gq<pid>: the prefix of every namespace and link of it.")
    bridge: str
    subnet: str = Field(description="198.18.N: hosts at .2 and up, this machine at .1.")
    hosts: dict[str, str] = Field(description="Each host's name and address.")


class StackState(BaseModel):
    """The state file: enough to find, report on and stop every process of one stack."""

    version: Literal[1] = 1
    run_id: str = Field(description="Random; every process of the stack has GENQ_STACK_RUN=it.")
    redis_url: str = Field(repr=False, description="May carry a password: the file is 0600.")
    external_redis: bool = Field(description="GENQ_REDIS_URL named it: not ours to stop.")
    started_at: float
    complete: bool = Field(False, description="Every process started and ready.")
    processes: list[ProcessRecord] = []
    network: NetworkRecord | None = Field(None, description="With `up --hosts`.")

    def alive(self) -> dict[str, bool]:
        return {record.name: record.process.alive() for record in self.processes}


class RunDir:
    """The run directory's files."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def env_file(self) -> Path:
        return self.path / ENV_FILE

    def log(self, name: str) -> Path:
        return self.path / f"{name}.log"

    def supervisor_record(self, name: str) -> Path:
        return self.path / f"{name}.supervisor.json"

    def load(self) -> StackState | None:
        try:
            return StackState.model_validate_json(self.state_file.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:  # pydantic's ValidationError is one
            raise StackError(f"{self.state_file} is not a stack state file: {exc}") from exc

    def save(self, state: StackState) -> None:
        """Written whole (a temporary file renamed over it), so a reader never sees half."""
        _write_private(self.state_file, state.model_dump_json(indent=2))
        for record in state.processes:
            (self.path / f"{record.name}.pid").write_text(f"{record.pid}\n")

    def write_env(self, variables: Mapping[str, str]) -> None:
        lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
        _write_private(self.env_file, "\n".join(["# source me", *lines, ""]))

    def clear(self) -> None:
        """Forget the stack: state, pid and env files; logs and Redis's data stay."""
        forget = [*self.path.glob("*.pid"), *self.path.glob("*.supervisor.json")]
        for path in [self.state_file, self.env_file, *forget]:
            path.unlink(missing_ok=True)

    @contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Held while `up` or `down` works on this directory; another waits its turn."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / LOCK_FILE).open("a") as lock:
            _acquire(lock.fileno(), self.path, timeout_s)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _acquire(fd: int, path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StackError(
                    f"another ops/stack command has held {path} for {timeout_s:.0f}s"
                ) from None
            time.sleep(0.1)


def _write_private(path: Path, text: str) -> None:
    """Only its owner may read it: it may carry a Redis password."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temporary.replace(path)
