"""Process launchers: `genq worker` (Celery worker on genq's queues), `genq relay` (streams,
checkpoints, resumes), `genq flower` (the dashboard) and `genq serve` (the gateway). Each
resolves its settings once (the GENQ_* variables, its options over them), checks what it can,
then becomes the long-running process (exec) and hands the settings over in one variable,
GENQ_PLAN (genq.common.handover): it writes no other GENQ_* variable.

These are services: when Redis is unreachable they keep trying to connect (Celery's retries,
the relay's reconnect loop) rather than exit, so that a stack rides through a Redis restart.
What they do exit on, with one line, before starting (`check_primary`): a GENQ_REDIS_URL that
leads to a replica, Sentinels that know no primary by its name, or none of its Sentinels
answering."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from genq.common.connection import check_primary
from genq.common.errors import KeyFileError, RegistryError
from genq.common.handover import PLAN_ENV, ProcessPlan, child_environment
from genq.common.registry import ModelRegistry
from genq.common.routing import serving
from genq.common.settings import Settings
from genq.producer.cli.output import EXIT_USAGE, fail

# The tasks page's columns: args (job id, epoch, model; never the prompt) and result (progress
# while a job runs, its summary after) are what tell genq's tasks apart.
FLOWER_COLUMNS = "name,uuid,state,result,args,received,runtime,worker"


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--models",
    envvar="GENQ_WORKER_MODELS",
    metavar="A,B",
    help="Models to serve, comma-separated [env GENQ_WORKER_MODELS; default: every registry "
    "model of --device].",
)
@click.option(
    "--device",
    envvar="GENQ_DEVICE",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Device class to serve [env GENQ_DEVICE]; gpu needs a CUDA build of llama-cpp-python.",
)
@click.option(
    "--slots",
    envvar="GENQ_SLOTS",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Jobs at once per model in one process [env GENQ_SLOTS]: a local model decodes them "
    "together (continuous batching), a remote one streams them at once; a registry entry's "
    "`slots` overrides it. Every local job resumes bit-for-bit, whatever the slots.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 1024),
    help="Worker processes, each with its own copy of its models (default 1); only with "
    "--slots 1 (more slots run in one process).",
)
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.option("-n", "--hostname", help="Node name (default genq@HOST).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def worker(
    settings: Settings,
    /,
    models: str | None,
    device: str,
    slots: int,
    concurrency: int | None,
    loglevel: str,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> NoReturn:
    """Start a worker: `celery -A genq.workers.app worker` with genq's defaults, consuming the
    queues of the models it serves (`cpu.tiny`: device class and model).

    Checks first that it can serve them (known models of its device class, model files and
    API keys present, a GPU for --device gpu) and exits with status 2 if not. Extra
    arguments go to celery unchanged. The plain celery command works as well, configured by
    the same GENQ_* variables.

    The worker process is handed these settings (GENQ_PLAN) and resolves from them what it
    serves, its queues and its pool (threads for slots) as this command did, by the same rules.
    """
    if any(arg.startswith(("-Q", "--queues")) for arg in celery_args):
        fail("-Q/--queues is replaced by --models and --device (queues are per model)", EXIT_USAGE)
    options: dict[str, Any] = {"device": device, "slots": slots}
    if models is not None:
        options["worker_models"] = models
    settings = settings.with_options(**options)
    try:
        served = serving(settings, ModelRegistry.from_settings(settings))
    except RegistryError as exc:
        fail(str(exc), EXIT_USAGE)
    if served.slots > 1 and concurrency not in (None, 1):
        fail(
            f"-c {concurrency} starts processes of one slot each, but this worker runs "
            f"{served.slots} slots in one process: give one of --slots and -c, or start more "
            "workers",
            EXIT_USAGE,
        )
    # With slots the app's configuration picks the threads pool (genq.workers.app.pool_config);
    # with one, Celery's prefork pool of -c processes, one unless asked.
    pool = [] if served.slots > 1 else ["-c", str(concurrency or 1)]
    check_primary(settings)
    _exec_celery(
        settings,
        "worker",
        *pool,
        "-l",
        loglevel,
        "-E",
        "-n",
        hostname or "genq@%h",
        *celery_args,
    )


def _exec_celery(settings: Settings, command: str, *args: str) -> NoReturn:
    """Become `celery -A genq.workers.app COMMAND ARGS` (genq's Celery app), handed
    `settings`."""
    argv = [sys.executable, "-m", "celery", "-A", "genq.workers.app", command, *args]
    os.execve(sys.executable, argv, child_environment(settings))


@click.command()
@click.pass_obj
def relay(settings: Settings) -> NoReturn:
    """Start a relay: turns every job's live frames into a replayable Redis Stream,
    checkpoints continuation windows, and resumes jobs whose worker died (lease reaper).

    Run one or two per deployment; two relays never duplicate or double-act.
    """
    check_primary(settings)
    argv = [sys.executable, "-m", "genq.workers.relay"]
    os.execve(sys.executable, argv, child_environment(settings))


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--port",
    envvar="FLOWER_PORT",
    type=click.IntRange(1, 65535),
    default=5555,
    show_default=True,
    help="HTTP port [env FLOWER_PORT].",
)
@click.option(
    "--address",
    envvar="FLOWER_ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on [env FLOWER_ADDRESS]. Flower can revoke tasks and shut "
    "workers down: give 0.0.0.0 (every interface) only with authentication, e.g. "
    "--basic_auth=user:password.",
)
@click.option(
    "--url-prefix",
    envvar="FLOWER_URL_PREFIX",
    metavar="PATH",
    help="Serve under /PATH/, behind a reverse proxy that forwards that path "
    "[env FLOWER_URL_PREFIX].",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def flower(
    settings: Settings,
    /,
    port: int,
    address: str,
    url_prefix: str | None,
    flower_args: tuple[str, ...],
) -> NoReturn:
    """Start Flower, Celery's web dashboard, on genq's workers and tasks: `celery -A
    genq.workers.app flower`, with the Redis of GENQ_REDIS_URL (its password never shown).

    Workers: each one's queues (`cpu.tiny`: device class and model) and, in its Config tab,
    `genq_device`, `genq_models`, and where it runs: `genq_host` and `genq_address` (the
    address it reaches Redis from). Tasks: `genq.generate` (one job) and `genq.generate_bundle`
    (short jobs of a batch); args name the job, epoch and model, never the prompt; a running
    job is in state PROGRESS with its tokens so far as its result (GENQ_PROGRESS_INTERVAL_S on
    the worker), and a finished one shows its summary. Prometheus metrics at /metrics.

    Extra arguments go to Flower unchanged (--basic_auth=user:pw, --max_tasks=N,
    --tasks_columns=..., --persistent=True), and so do its FLOWER_* variables. Its HTTP API
    (/api/...) answers only with authentication, or FLOWER_UNAUTHENTICATED_API=true.
    """
    _exec_celery(
        settings,
        "flower",
        f"--port={port}",
        f"--address={address}",
        *([] if "FLOWER_TASKS_COLUMNS" in os.environ else [f"--tasks_columns={FLOWER_COLUMNS}"]),
        *([f"--url_prefix={url_prefix.strip('/')}"] if url_prefix else []),
        *flower_args,  # last: Flower takes the last value of an option given twice
    )


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@click.command()
@click.option(
    "--host",
    envvar="GENQ_HTTP_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on [env GENQ_HTTP_HOST]; another than loopback needs API keys.",
)
@click.option(
    "--port",
    envvar="GENQ_HTTP_PORT",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="HTTP port [env GENQ_HTTP_PORT].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Gateway processes (uvicorn workers); any of them serves any stream.",
)
@click.pass_obj
def serve(settings: Settings, /, host: str, port: int, workers: int) -> None:
    """Start the OpenAI-compatible gateway: /v1/models, /v1/completions,
    /v1/chat/completions (streamed over SSE or not), /v1/files, /v1/batches, streams that
    survive disconnects (/v1/jobs/ID/stream with Last-Event-ID), and a page at /.

    It is a producer: it queues jobs for genq's workers and never loads a model. Clients
    authenticate with `Authorization: Bearer KEY`, one of GENQ_API_KEYS or of
    GENQ_API_KEYS_FILE (TOML `[[keys]]` tables that map each key to a tenant, or bare keys
    one per line; `genq keys hash` makes an entry that holds no key in clear); a key sees only
    its tenant's jobs, files and batches. Without any key configured it listens on loopback
    only.
    """
    import uvicorn

    settings = settings.with_options(http_host=host, http_port=port)
    try:
        keys = settings.api_key_table()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"GENQ_API_KEYS_FILE: cannot read {settings.api_keys_file}: {exc}", EXIT_USAGE)
    except KeyFileError as exc:
        fail(str(exc), EXIT_USAGE)
    if not keys and host not in LOOPBACK:
        fail(
            f"no API keys: the gateway listens on loopback only without them, not on {host}; "
            "set GENQ_API_KEYS or GENQ_API_KEYS_FILE",
            EXIT_USAGE,
        )
    check_primary(settings)
    if not keys:
        print(
            "genq serve: no API keys (GENQ_API_KEYS, GENQ_API_KEYS_FILE): accepting every "
            f"request, on loopback only ({host}:{port})",
            file=sys.stderr,
            flush=True,
        )
    # Each gateway process (uvicorn's workers inherit this environment) reads the settings
    # resolved here: the one variable this command writes.
    os.environ[PLAN_ENV] = ProcessPlan.of(settings).to_json()
    uvicorn.run(
        "genq.producer.gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # a request line may carry a job id; prompts never, keys never
    )
