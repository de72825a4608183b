"""The `genq` command line: the group, its error handling, and `main` (the console script).

One module per command group, each on the public client API (`genq.producer.Client`):

- producer/cli/jobs.py       `genq run`, `genq tail`, `genq status`, `genq cancel`
- producer/cli/batches.py    `genq submit`, `genq wait`, `genq results`
- producer/cli/processes.py  `genq worker`, `genq relay`, `genq flower`, `genq serve`
- producer/cli/registry.py   `genq models`, `genq workers`, `genq make-tiny-model`
- producer/cli/keys.py       `genq keys hash`
- producer/cli/output.py     exit codes, the one-line error, stderr notes, tables
- producer/cli/options.py    options several commands take (durations, priority, tenant)

Every command reads its settings from GENQ_* environment variables (see
`common/settings.py`); `--redis-url` overrides GENQ_REDIS_URL. A GenqError (bad input, an
unreachable Redis, a failed job) is shown as one line on stderr, never a traceback: exit 2
for bad input (nothing was queued), 1 for a failure."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from genq.common.errors import GenqError, InvalidJob
from genq.common.schemas import describe_validation
from genq.common.settings import Settings
from genq.producer.cli import batches, jobs, keys, processes, registry
from genq.producer.cli.output import EXIT_FAILED, EXIT_USAGE, fail, terminal_safe

__all__ = ["cli", "main", "terminal_safe"]


class _Cli(click.Group):
    """Shows genq's errors as one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidJob as exc:
            fail(str(exc), EXIT_USAGE)
        except GenqError as exc:
            fail(str(exc), EXIT_FAILED)
        except ValidationError as exc:
            fail(f"invalid settings: {describe_validation(exc)}", EXIT_USAGE)


# Every command, by group; `genq --help` lists them by name.
COMMANDS = (
    *(jobs.run, jobs.tail, jobs.status, jobs.cancel),
    *(batches.submit, batches.wait, batches.results),
    *(processes.worker, processes.relay, processes.flower, processes.serve),
    *(registry.models, registry.workers, registry.make_tiny_model),
    keys.keys,
)


@click.group(cls=_Cli, commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url",
    envvar="GENQ_REDIS_URL",
    metavar="URL",
    help="Redis for broker and streams [env GENQ_REDIS_URL; default redis://localhost:6379/0].",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """genq: a distributed queue for batch and streaming text generation.

    Producers submit jobs; Celery workers run GGUF models (llama-cpp-python) and stream
    tokens over Redis. Configuration comes from GENQ_* environment variables.
    """
    # The processes `genq worker`, `relay`, `flower` and `serve` start are handed these
    # settings (genq.common.handover), --redis-url included.
    ctx.obj = Settings(redis_url=redis_url) if redis_url else Settings()


def main() -> None:
    cli(prog_name="genq")
