"""`ops/stack up | status | down`: genq's whole stack as local processes, no containers.

`up` starts a redis-server with append-only persistence (unless GENQ_REDIS_URL names a Redis),
a relay, N workers and optionally Flower and the gateway (`genq serve`), each detached in a
session of its own so that they outlive the command, and waits until each is ready. The relay
runs under a supervisor (ops/supervisor.py) that starts it again whenever it exits: every job's
streams, checkpoints and resumes depend on it, and `up` has exited by then; `status` counts its
restarts.
With `--hosts` every process runs on a host of its own, a network namespace
(ops/stackhosts.py): Redis on `redis`, the relay, gateway and Flower on `gw`, workers on `w1`,
`w2` ...; `down` removes the hosts with the processes.
Everything it knows lives in one run directory (ops/stackstate.py); `status` and `down` read
it from there. `make demo` runs its
jobs against a stack it brings up and down with `up` and `down` below.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from genq.common.settings import redact_url
from ops import netns, stackhosts
from ops.localstack import (
    Flower,
    Gateway,
    GenqProcess,
    RedisServer,
    Relay,
    StackError,
    Worker,
    free_port,
)
from ops.processes import has_proc, start_time, stop_groups, with_environment
from ops.stackstate import ProcessRecord, Role, RunDir, StackState
from ops.supervisor import read_record

DEFAULT_DIR = Path(".genq-stack")
RUN_ID_VAR = "GENQ_STACK_RUN"  # in every process's environment: what `down` sweeps for
# Each process's own: not part of the configuration a producer shares with the stack.
PER_PROCESS_VARS = {"GENQ_METRICS_PORT", "GENQ_RELAY_METRICS_PORT", RUN_ID_VAR, "GENQ_STACK_DIR"}
STOP_ORDER: tuple[tuple[Role, ...], ...] = (
    ("gateway", "worker"),
    ("relay", "flower"),
    ("redis",),
    ("network",),  # the keeper that names the hosts (--hosts): they are removed after it
)
EXIT_ALL_RUNNING = 0
EXIT_SOME_DEAD = 1
EXIT_NONE_RUNNING = 3

Say = Callable[[str], None]
SUPERVISOR = Path(__file__).with_name("supervisor.py")
Started = GenqProcess | RedisServer | stackhosts.Keeper


class PartlyRunning(StackError):
    """Some of a stack's processes run and some do not: `down` first."""


@dataclass
class SupervisedRelay(Relay):
    """`genq relay` under ops/supervisor.py, which starts it again whenever it exits and
    keeps `record` (its pid and restarts) for `status`."""

    record: Path = Path("relay.supervisor.json")

    def argv(self) -> list[str]:
        supervisor = [sys.executable, str(SUPERVISOR), "--record", str(self.record)]
        return [*supervisor, "--", *super().argv()]


@dataclass
class StackOptions:
    workers: int = 1
    flower: bool = False
    gateway: bool = False  # `genq serve` on loopback (GENQ_HTTP_PORT, else a free port)
    hosts: bool = False  # each process on a namespace host (ops/stackhosts.py)
    env: Mapping[str, str] = field(default_factory=dict)  # for every process, e.g. a cache dir


@dataclass
class UpResult:
    state: StackState
    already_running: bool
    procs: list[Started] = field(default_factory=list)  # started by this call

    def reap(self) -> None:
        """After `down`, in a process that keeps running (the demo): collect the exit status
        of the processes this call started, its children, so that none lingers as a zombie."""
        _reap(self.procs)


def up(run: RunDir, options: StackOptions, say: Say = lambda _line: None) -> UpResult:
    """The stack in `run`, started unless it already runs there whole. PartlyRunning if some
    of it runs; a start that fails (or Ctrl-C) stops what it started and forgets it."""
    if options.hosts:
        _check_hosts(options)
    with run.locked():
        state = _existing(run)
        if state is not None:
            return UpResult(state, already_running=True)
        return _start(run, options, say)


def down(run: RunDir, say: Say = lambda _line: None) -> StackState | None:
    """Stops what `up` started in `run` (workers first, Redis last) and forgets it; keeps the
    logs and Redis's data. None when there was no stack there."""
    with run.locked():
        state = run.load()
        if state is None:
            return None
        _stop(state, say)
        run.clear()
        return state


def shared_env(state: StackState, options_env: Mapping[str, str]) -> dict[str, str]:
    """The configuration producers need to use the stack: GENQ_REDIS_URL and every other
    GENQ_* variable the stack was given (a key prefix, a model registry ...)."""
    given = {**_genq_vars(os.environ), **_genq_vars(options_env)}
    given.pop("GENQ_REDIS_URL", None)  # an external Redis's URL is the state's
    return {"GENQ_REDIS_URL": state.redis_url, **given}


def _check_hosts(options: StackOptions) -> None:
    """--hosts can run here, as asked: StackError with one line if not."""
    stackhosts.check_possible()
    given = {**os.environ, **options.env}
    if given.get("GENQ_REDIS_URL"):
        raise StackError(
            "--hosts starts its own Redis on the `redis` host: unset GENQ_REDIS_URL "
            "(the hosts reach nothing beyond this machine)"
        )
    if options.gateway and not (given.get("GENQ_API_KEYS") or given.get("GENQ_API_KEYS_FILE")):
        raise StackError(
            "--hosts --gateway: the gateway listens on the `gw` host's address, not loopback, "
            "and so needs API keys: set GENQ_API_KEYS or GENQ_API_KEYS_FILE"
        )


def _existing(run: RunDir) -> StackState | None:
    """The stack already running in `run` whole; None (stale state cleared) if none runs."""
    state = run.load()
    if state is None:
        return None
    alive = state.alive()
    if state.complete and all(alive.values()):
        return state
    if any(alive.values()):
        dead = ", ".join(name for name, running in alive.items() if not running)
        raise PartlyRunning(
            f"the stack in {run.path} is partly running (not running: {dead}). "
            f"Run `ops/stack down{_dir_arg(run)}` first, then `ops/stack up` again."
        )
    run.clear()  # every process of it has gone: stale
    return None


def _start(run: RunDir, options: StackOptions, say: Say) -> UpResult:
    starting = _Starting(run, options, say)
    try:
        starting.start()
    except BaseException:
        say("start failed: stopping what was started")
        _stop(starting.state, say)
        _reap(starting.procs)
        run.clear()
        raise
    return UpResult(starting.state, already_running=False, procs=starting.procs)


class _Starting:
    """One `up`: starts the processes, recording each in the state file at once, so that a
    `down` finds them even if this command dies half way."""

    def __init__(self, run: RunDir, options: StackOptions, say: Say) -> None:
        self.run, self.options, self.say = run, options, say
        run_id = uuid.uuid4().hex
        external = options.env.get("GENQ_REDIS_URL") or os.environ.get("GENQ_REDIS_URL")
        self.redis: RedisServer | None = None
        redis_url = external
        if not redis_url:
            self.redis = RedisServer(
                workdir=run.path / "redis",
                persist=True,
                log=run.log("redis"),
                env={RUN_ID_VAR: run_id},
            )
            redis_url = self.redis.url
        self.state = StackState(
            run_id=run_id,
            redis_url=redis_url,
            external_redis=bool(external),
            started_at=time.time(),
        )
        self.procs: list[Started] = []
        self.network: netns.Network | None = None  # with --hosts
        self.redis_host: netns.Host | None = None
        # Metrics on loopback unless the caller says otherwise: a local stack is for this host.
        metrics_host = options.env.get("GENQ_METRICS_HOST") or os.environ.get(
            "GENQ_METRICS_HOST", "127.0.0.1"
        )
        self.env = {
            **options.env,
            RUN_ID_VAR: self.state.run_id,
            "GENQ_REDIS_URL": self.state.redis_url,
            "GENQ_METRICS_HOST": metrics_host,
        }

    def start(self) -> None:
        if self.options.hosts:
            self._make_hosts()
        if self.redis is None:
            self.say(f"using the Redis in GENQ_REDIS_URL: {redact_url(self.state.redis_url)}")
        else:
            self._record(self.redis, "redis", "redis", self.redis.port, host=self.redis_host)
            self.redis.wait_ready()
            self.say(f"started redis-server on {self.redis.host}:{self.redis.port}")
        genq = self._genq_processes()
        self.say(f"starting {_describe(genq)} ...")
        for proc in genq:
            proc.wait_ready()
        self.state.complete = True
        self.run.save(self.state)
        self.run.write_env(shared_env(self.state, self.options.env))

    def _make_hosts(self) -> None:
        """The namespace hosts, recorded before any process starts on them; Redis on its
        own host, reached at that host's address (and not protected mode, which answers
        loopback only: its clients are the other hosts, on a bridge that leads nowhere else)."""
        keeper = stackhosts.Keeper(env={RUN_ID_VAR: self.state.run_id}, log=self.run.log("network"))
        self._record(keeper, "network", "network", port=None)
        self.network = stackhosts.create_network(self.options.workers, keeper)
        self.state.network = stackhosts.record(self.network)
        self.run.save(self.state)
        self.say(f"made hosts {', '.join(self.network.hosts)} on {self.network.bridge}")
        assert self.redis is not None  # --hosts refuses an external Redis (_check_hosts)
        self.redis_host = host = self.network[stackhosts.REDIS_HOST]
        stackhosts.place(self.redis, host)
        self.redis.host = host.address
        self.redis.args = ("--protected-mode", "no")
        self.state.redis_url = self.env["GENQ_REDIS_URL"] = self.redis.url

    def _genq_processes(self) -> list[GenqProcess]:
        gw = stackhosts.GATEWAY_HOST
        relay_port = self._metrics_port("GENQ_RELAY_METRICS_PORT")
        relay_env = {**self._env(gw), "GENQ_RELAY_METRICS_PORT": str(relay_port)}
        record = self.run.supervisor_record("relay")
        record.unlink(missing_ok=True)  # a stale one's counts are not this relay's
        relay = SupervisedRelay(env=relay_env, log=self.run.log("relay"), record=record)
        url = self._metrics_url(relay_port, gw)
        started = [self._spawn(relay, "relay", "relay", relay_port, url, gw, record)]
        for n in range(1, self.options.workers + 1):
            started.append(self._worker(n))
        if self.options.flower:
            started.append(self._flower())
        if self.options.gateway:
            started.append(self._gateway())
        return started

    def _worker(self, n: int) -> GenqProcess:
        """worker<n>@HOST; with --hosts on host w<n>, as worker<n>@w<n>."""
        host = stackhosts.worker_host(n)
        port = self._metrics_port("GENQ_METRICS_PORT")
        env = {**self._env(host), "GENQ_METRICS_PORT": str(port)}
        worker = Worker(env=env, log=self.run.log(f"worker{n}"), name=f"worker{n}")
        if self.network is not None:
            worker.node_host = host
        return self._spawn(
            worker, f"worker{n}", "worker", port, self._metrics_url(port, host), host
        )

    def _flower(self) -> GenqProcess:
        # Loopback only (or the gw host's address): its API answers without a login, as its
        # dashboard does.
        gw = stackhosts.GATEWAY_HOST
        env = {**self._env(gw), "FLOWER_UNAUTHENTICATED_API": "true"}
        flower = Flower(env=env, log=self.run.log("flower"), port=self._free_port())
        flower.host = self._address(gw)
        return self._spawn(flower, "flower", "flower", flower.port, flower.url, gw)

    def _gateway(self) -> GenqProcess:
        """`genq serve` on loopback (or the gw host's address); ready once GET /v1/models
        answers."""
        gw = stackhosts.GATEWAY_HOST
        given = self.options.env.get("GENQ_HTTP_PORT", os.environ.get("GENQ_HTTP_PORT"))
        port = int(given) if given else self._free_port()
        gateway = Gateway(env=self._env(gw), log=self.run.log("gateway"), port=port)
        gateway.host = self._address(gw)
        return self._spawn(gateway, "gateway", "gateway", port, gateway.url, gw)

    def _env(self, host: str) -> dict[str, str]:
        """A process's environment; on a namespace host, its metrics on that host's address
        (its loopback is reached from nowhere else)."""
        if self.network is None:
            return dict(self.env)
        return {**self.env, "GENQ_METRICS_HOST": self._address(host)}

    def _address(self, host: str) -> str:
        return "127.0.0.1" if self.network is None else self.network[host].address

    def _metrics_url(self, port: int, host: str) -> str | None:
        return f"http://{self._address(host)}:{port}/metrics" if port else None

    def _spawn(
        self,
        proc: GenqProcess,
        name: str,
        role: Role,
        port: int,
        url: str | None,
        host: str,
        supervisor: Path | None = None,
    ) -> GenqProcess:
        placed = None
        if self.network is not None:
            placed = self.network[host]
            stackhosts.place(proc, placed)
        self._record(proc, name, role, port or None, url, supervisor, placed)
        return proc

    def _record(
        self,
        proc: Started,
        name: str,
        role: Role,
        port: int | None,
        url: str | None = None,
        supervisor: Path | None = None,
        host: netns.Host | None = None,
    ) -> None:
        """Start `proc` and record it at once (with the host it runs on)."""
        proc.spawn()
        assert proc.proc is not None
        pid = proc.proc.pid
        record = ProcessRecord(
            name=name,
            role=role,
            pid=pid,
            start_time=start_time(pid),
            port=port,
            url=url,
            log=proc.log_path if isinstance(proc, RedisServer) else proc.log,
            supervisor=supervisor,
            host=None if host is None else host.name,
            address=None if host is None else host.address,
        )
        self.procs.append(proc)
        self.state.processes.append(record)
        self.run.save(self.state)

    def _metrics_port(self, name: str) -> int:
        """A free port of its own; 0 (no endpoint) where the caller's environment says 0."""
        given = self.options.env.get(name, os.environ.get(name))
        return 0 if given == "0" else self._free_port()

    def _free_port(self) -> int:
        """Free now and not handed to a process started before (which may not listen yet)."""
        taken = {record.port for record in self.state.processes}
        return next(port for port in iter(free_port, None) if port not in taken)


def _reap(procs: list[Started]) -> None:
    for proc in procs:
        proc.stop()  # each has exited (`down`): this only collects its exit status


def _describe(procs: list[GenqProcess]) -> str:
    """`genq relay, 2 genq workers, genq flower`"""
    counts = Counter(proc.what for proc in procs)
    return ", ".join(f"{n} {what}s" if n > 1 else what for what, n in counts.items())


def _stop(state: StackState, say: Say) -> None:
    for roles in STOP_ORDER:
        records = [r for r in state.processes if r.role in roles]
        if records:
            say(f"stopping {', '.join(r.name for r in records)}")
            stop_groups(r.process for r in records)
    if has_proc():  # anything of this run that left its process group (none should)
        for pid in with_environment(RUN_ID_VAR, state.run_id):
            _kill(pid)
    if state.network is not None:
        say(f"removing hosts {', '.join(state.network.hosts)}")
        stackhosts.remove(state.network)


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _genq_vars(env: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in env.items()
        if name.startswith("GENQ_") and name not in PER_PROCESS_VARS
    }


def _dir_arg(run: RunDir) -> str:
    return "" if run.path == DEFAULT_DIR.absolute() else f" --dir {run.path}"


# --- the command line --------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ops/stack: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except StackError as exc:
        _fail(str(exc))


def _run_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir",
        "run_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="GENQ_STACK_DIR",
        default=DEFAULT_DIR,
        show_default=True,
        help="Run directory: logs, pid files, state, the env file, Redis's data "
        "[env GENQ_STACK_DIR].",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """genq's whole stack as local processes: redis-server, a relay, workers, Flower, the
    gateway.

    \b
      ops/stack up --workers 2 --flower   start it (once ready, it runs until `down`)
      ops/stack up --gateway              with the OpenAI-compatible gateway (genq serve)
      ops/stack up --hosts                each process on a host of its own (root: netns)
      source .genq-stack/env              GENQ_REDIS_URL and the rest, for genq commands
      genq run "hi"
      ops/stack status                    what runs (exit 0 all, 1 some, 3 none)
      ops/stack down                      stop it; logs and Redis's data stay

    Every process runs detached, its log and pid file in the run directory
    (./.genq-stack, or --dir / GENQ_STACK_DIR). GENQ_* variables in the environment
    configure every process, as they configure any genq command.
    """


@cli.command("up")
@_run_dir_option
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 64),
    help="`genq worker` processes [default: 1; with --hosts 2, one per host].",
)
@click.option("--flower", is_flag=True, help="Also Flower, Celery's dashboard, on loopback.")
@click.option(
    "--gateway",
    is_flag=True,
    help="Also `genq serve`, the OpenAI-compatible gateway and its page, on loopback "
    "(GENQ_HTTP_PORT, else a free port; GENQ_API_KEYS as for `genq serve`).",
)
@click.option(
    "--hosts",
    is_flag=True,
    help="Each process on a host of its own, a network namespace on a bridge in "
    "198.18.0.0/15: Redis on `redis`, the relay (gateway, Flower) on `gw`, workers on "
    "`w1`, `w2` ... Needs root and `ip`; `down` removes the hosts.",
)
def up_command(
    run_dir: Path, workers: int | None, flower: bool, gateway: bool, hosts: bool
) -> None:
    """Start the stack and wait until every process is ready.

    Starts redis-server with append-only persistence (data in DIR/redis) unless GENQ_REDIS_URL
    names a Redis to use (never stopped by `down`), then `genq relay`, WORKERS `genq worker`s
    (worker1@HOST, ...; each with its own metrics port), with --flower Flower and with
    --gateway `genq serve`. Writes
    DIR/env to source.

    With --hosts, Redis runs on the host `redis`, the relay, Flower and the gateway on `gw`
    and worker N on `wN` (node name workerN@wN), each reached at its host's address, which
    this machine reaches too: DIR/env names Redis there. The gateway then needs API keys
    (GENQ_API_KEYS), as any gateway off loopback does.

    Run again: exits 0 if the stack in DIR runs whole, refuses (exit 1) if only part of it
    runs (run `down` first), and starts afresh if all of it has gone.
    """
    run = RunDir(run_dir)
    with _errors():
        default_workers = stackhosts.DEFAULT_WORKERS if hosts else 1
        options = StackOptions(
            workers=workers or default_workers, flower=flower, gateway=gateway, hosts=hosts
        )
        result = up(run, options, say=click.echo)
    if result.already_running:
        click.echo(f"the stack in {run.path} is already running")
        _note_differences(result.state, options)
    _print_summary(run, result.state)


def _note_differences(state: StackState, options: StackOptions) -> None:
    running = sum(r.role == "worker" for r in state.processes)
    has_flower = any(r.role == "flower" for r in state.processes)
    has_gateway = any(r.role == "gateway" for r in state.processes)
    wanted = (options.workers, options.flower, options.gateway)
    if (running, has_flower, has_gateway) != wanted:
        more = " and Flower" * has_flower + " and the gateway" * has_gateway
        click.echo(
            f"(it has {running} worker{'s' * (running != 1)}{more}; "
            "to change that, `down` then `up`)"
        )


def _print_summary(run: RunDir, state: StackState) -> None:
    where = "external" if state.external_redis else f"data in {run.path / 'redis'}"
    click.echo()
    if state.network is not None:
        hosts = ", ".join(f"{name} {address}" for name, address in state.network.hosts.items())
        click.echo(f"hosts    {hosts} (bridge {state.network.bridge})")
    click.echo(f"redis    {redact_url(state.redis_url)} ({where})")
    for record in state.processes:
        if record.role == "flower":
            click.echo(f"flower   {record.url}")
        elif record.role == "gateway":
            click.echo(f"gateway  {record.url}  (the page: {record.url}/)")
        elif record.url is not None:
            click.echo(f"metrics  {record.url}  ({record.name})")
    env = _shown_path(run.env_file)
    click.echo(f'\nuse it:   source {env}; genq run "hi"')
    click.echo(f"status:   ops/stack status{_dir_arg(run)}   (logs: {_shown_path(run.path)}/*.log)")
    click.echo(f"stop it:  ops/stack down{_dir_arg(run)}")


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cli.command("status")
@_run_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(run_dir: Path, as_json: bool) -> None:
    """Each process of the stack: its host and address (with --hosts), pid, running or dead,
    port, log; for the relay, which runs under a supervisor that starts it again whenever it
    exits, how often it was restarted (JSON: `restarts`, and `supervised_pid`, the relay's own
    pid; null for the others).

    Exit status: 0 when every process runs, 1 when some have died (run `down`, then `up`),
    3 when none runs or there is no stack in DIR.
    """
    run = RunDir(run_dir)
    with _errors():
        state = run.load()
    alive = state.alive() if state is not None else {}
    report = _status_report(run, state, alive)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(run, state, alive)
    sys.exit(_status_code(alive))


def _status_report(run: RunDir, state: StackState | None, alive: dict[str, bool]) -> dict[str, Any]:
    processes = [] if state is None else state.processes
    return {
        "dir": str(run.path),
        "redis_url": None if state is None else redact_url(state.redis_url),
        "external_redis": None if state is None else state.external_redis,
        "processes": [
            {
                **r.model_dump(mode="json", exclude={"start_time"}),
                "alive": alive[r.name],
                **_supervised(r),
            }
            for r in processes
        ],
    }


def _supervised(record: ProcessRecord) -> dict[str, int | None]:
    """Restarts and the supervised process's own pid, from its supervisor's record; None
    for a process without a supervisor (or one that has not written its record yet)."""
    written = read_record(record.supervisor) if record.supervisor is not None else None
    if written is None:
        return {"restarts": None, "supervised_pid": None}
    return {"restarts": int(written["restarts"]), "supervised_pid": written["pid"]}


def _print_status(run: RunDir, state: StackState | None, alive: dict[str, bool]) -> None:
    if state is None:
        click.echo(f"no stack in {run.path}")
        return
    click.echo(f"stack in {run.path}; Redis {redact_url(state.redis_url)}")
    for r in state.processes:
        port = "" if r.port is None else str(r.port)
        state_word = "running" if alive[r.name] else "DEAD"
        restarts = _supervised(r)["restarts"]
        more = "" if restarts is None else f"  (supervised; restarts: {restarts})"
        where = "" if state.network is None else f"{r.host or '-':6s} {r.address or '-':15s} "
        click.echo(f"  {r.name:9s} {where}pid {r.pid:<8d} {state_word:8s} {port:6s} {r.log}{more}")


def _status_code(alive: dict[str, bool]) -> int:
    if alive and all(alive.values()):
        return EXIT_ALL_RUNNING
    return EXIT_SOME_DEAD if any(alive.values()) else EXIT_NONE_RUNNING


@cli.command("down")
@_run_dir_option
def down_command(run_dir: Path) -> None:
    """Stop what `up` started in DIR; logs and Redis's data stay.

    Workers first (SIGTERM: Celery's warm shutdown; SIGKILL after a grace period), then the
    relay and Flower, Redis last. Only the processes `up` recorded are signalled (with their
    process groups), each checked by its start time, so a pid since reused by another process
    is left alone. Nothing running is not an error (exit 0).
    """
    run = RunDir(run_dir)
    with _errors():
        state = down(run, say=click.echo)
    if state is None:
        click.echo(f"no stack in {run.path}: nothing to stop")
    else:
        click.echo(f"stopped the stack in {run.path}; logs kept in {_shown_path(run.path)}")


def main() -> None:
    cli(prog_name="ops/stack")


if __name__ == "__main__":
    main()
