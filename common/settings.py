"""genq's one settings object: every knob, with its unit, bounds and a description.

Built once at each entry point (CLI command, worker process, test session) and passed down;
a process the CLI starts is handed them whole, in GENQ_PLAN (genq.common.handover).
Every field reads from the environment with the ``GENQ_`` prefix, e.g. ``GENQ_REDIS_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, FieldSerializationInfo, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from genq.common import apikeys, sentinel
from genq.common.apikeys import ApiKeys
from genq.common.ids import JOB_ID_ALPHABET
from genq.common.logs import QUERY_PASSWORD
from genq.common.schemas import BUNDLE_JOBS_MAX, Device, ModelName

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# A serialization context key: write secrets in the clear (only for genq.common.handover's
# GENQ_PLAN); without it the API keys are masked, as in repr.
REVEAL_SECRETS = "reveal_secrets"
MAX_RELAY_SHARES = len(JOB_ID_ALPHABET)  # a share holds one character of an id at least


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "genq"


class Settings(BaseSettings):
    """Configuration shared by producers, workers and the relay."""

    # hide_input_in_errors: a rejected redis_url would otherwise be echoed with its password.
    model_config = SettingsConfigDict(
        env_prefix="GENQ_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        repr=False,  # may carry a password: shown only through `redacted_redis_url`
        description="Redis URL for broker, results and streams (redis://, rediss:// or unix://), "
        "or Sentinels that name the primary: redis+sentinel://[:password@]host:port[,host:port"
        "…]/<primary name>/<db> (rediss+sentinel://: TLS to Redis; ?sentinel_password=: the "
        "Sentinels' own).",
    )
    redis_retry_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="How long a client's reads (streams, results, batch waits) retry a lost "
        "Redis connection, with backoff, before raising RedisUnavailable; a Redis restart "
        "shorter than this goes unnoticed. 0: raise at the first failure.",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="Replicas that must hold a write before genq counts on it (Redis `WAIT`): "
        "a submit returns, and a window is streamed after its checkpoint, only once this many "
        "replicas have it, so that a failover cannot lose them. A submit not confirmed within "
        "GENQ_REDIS_WAIT_MS raises RedisUnavailable (the job may exist). 0: no wait; "
        "replication is asynchronous and a failover can lose the last writes.",
    )
    redis_wait_ms: int = Field(
        1000,
        ge=1,
        le=60_000,
        description="How long one replica wait (GENQ_REDIS_WAIT_REPLICAS) waits at most.",
    )
    key_prefix: str = Field(
        "genq",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key and channel genq uses.",
    )
    models_file: Path | None = Field(
        None, description="TOML model registry; the built-in `tiny` model is always present."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where generated files (the tiny model) are cached.",
    )
    tiny_seed: int = Field(0, ge=0, le=2**32 - 1, description="Weights seed of the tiny model.")
    chunk_tokens: int = Field(
        16, ge=1, le=4096, description="Flush a token chunk after this many tokens."
    )
    chunk_interval_ms: float = Field(
        20.0, ge=0.0, le=10_000.0, description="Flush a token chunk after this many milliseconds."
    )
    bundle_tokens: int = Field(
        512,
        ge=0,
        le=1_000_000,
        description="A batch's short jobs share a task message (a bundle, run by one worker "
        "process) while their max_tokens add up to at most this; a job asking for more goes "
        "alone. 0 sends every job alone.",
    )
    bundle_jobs: int = Field(32, ge=1, le=BUNDLE_JOBS_MAX, description="Most jobs in one bundle.")
    slots: int = Field(
        1,
        ge=1,
        le=256,
        description="Jobs one worker process runs at once per model (`genq worker --slots`): "
        "a local model decodes them together in one context (continuous batching), a remote "
        "one streams them at once. Every local job resumes bit-for-bit, whatever the slots. A "
        "registry "
        "entry's `slots` overrides it for that model.",
    )
    fair_share: bool = Field(
        True,
        description="Each model's slots are shared fairly between tenants (README: Fair share): "
        "a free slot takes the waiting job of the tenant with the least weighted tokens served "
        "(VTC). False: first come, first served, by priority.",
    )
    max_queued: int = Field(
        0,
        ge=0,
        le=100_000_000,
        description="Jobs waiting in one model's queue at most, every tenant's together: the "
        "model's ceiling above each tenant's own max_queued (README: Quotas). A job submitted "
        "beyond it is refused (QueueFull; the gateway answers 429), nothing queued. Batches "
        "are not counted against it. 0: no limit.",
    )
    model_budget_mb: float = Field(
        0.0,
        ge=0.0,
        description="Models one worker process keeps loaded, in MB of model files; the least "
        "recently used are unloaded to load another. 0: no limit.",
    )
    job_ttl_s: int = Field(
        86_400,
        ge=60,
        le=90 * 86_400,
        description="How long a job's record and result are kept after it is submitted or ends.",
    )
    lease_ttl_s: float = Field(
        30.0,
        ge=0.5,
        le=3600.0,
        description="A running job's lease; when it lapses (worker gone) the job is resumed "
        "elsewhere. Renewed every third of it while the job runs.",
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Starts a job may have before a lapsed lease fails it."
    )
    requeue_grace_s: float = Field(
        300.0,
        ge=1.0,
        description="A resumed job not started by a worker within this is requeued again.",
    )
    reap_interval_s: float = Field(
        0.5, gt=0.0, le=60.0, description="How often the relay looks for lapsed leases."
    )
    max_prompt_chars: int = Field(
        1_000_000, ge=1, le=100_000_000, description="Largest prompt accepted, in characters."
    )
    broker_visibility_timeout_s: int = Field(
        43_200,
        ge=60,
        description="Broker redelivery timeout for unacked tasks; long, since leases recover jobs.",
    )

    device: Device = Field(
        "cpu",
        description="A worker's device class: it serves the registry's models of this class.",
    )
    # NoDecode: read as `a,b` (split below), not as JSON.
    worker_models: Annotated[tuple[ModelName, ...], NoDecode] = Field(
        (),
        description="Models a worker serves, comma-separated; empty: every registry model of "
        "its device class.",
    )
    heartbeat_interval_s: float = Field(
        5.0,
        ge=0.1,
        le=300.0,
        description="A worker records itself in Redis this often; one silent for three "
        "intervals is considered gone.",
    )
    metrics_host: str = Field(
        "0.0.0.0",
        description="Address the Prometheus metrics endpoints of workers and relays listen on.",
    )
    metrics_port: int = Field(
        9540,
        ge=0,
        le=65535,
        description="A worker's Prometheus metrics port (its main process serves every pool "
        "process's figures). 0: no endpoint. Workers sharing a host need one port each.",
    )
    relay_metrics_port: int = Field(
        9541, ge=0, le=65535, description="The relay's Prometheus metrics port. 0: no endpoint."
    )
    relay_shard: str = Field(
        "1/1",
        pattern=r"^[0-9]{1,2}/[0-9]{1,2}$",
        description="`k/n`: this relay moves the frames of share k of n, the jobs whose id "
        "starts with its share of the id's characters (n relays started 1/n to n/n share the "
        "work, every job in exactly one share; n at most 16). Every relay reaps leases. "
        "`1/1`: every job.",
    )
    http_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="`genq serve`'s interface. Another than loopback needs API keys "
        "(GENQ_API_KEYS or GENQ_API_KEYS_FILE): without any the gateway listens on loopback only.",
    )
    http_port: int = Field(8000, ge=1, le=65535, description="`genq serve`'s HTTP port.")
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Bearer API keys the gateway accepts, comma-separated, for tenant "
        "`default`. Never logged; the gateway keeps only their SHA-256 digests.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="The gateway's keys file: TOML `[[keys]]` tables (`key` or `sha256`, "
        "`tenant`, `weight`, `max_queued`, `tokens_per_minute`, `admin`), or bare keys one per "
        "line (# comments) for tenant `default`. See the README's Tenants.",
    )
    reattach_grace_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="A gateway stream's job is cancelled when no client has reattached this "
        "long after its last one disconnected. 0: cancelled at once.",
    )
    gateway_max_streams: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Requests one gateway follows at once: SSE streams, and non-streaming "
        "requests waiting for their result. One more is answered 429 before its job is "
        "queued. Each holds a Redis connection and two file descriptors.",
    )
    file_bytes_max: int = Field(
        100 * 2**20,
        ge=1,
        le=2**30,
        description="The largest file the gateway takes at POST /v1/files (bytes); a larger "
        "upload is refused with 413. Files are kept in Redis for GENQ_JOB_TTL_S.",
    )
    progress_interval_s: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description="A running job reports its progress (tokens so far, current window) as a "
        "Celery task event, for Flower, at most this often. 0: never.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines of workers and relays: `text` (key=value fields after the "
        "message) or `json` (one object a line).",
    )

    @field_validator("worker_models", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """`a, b,a` -> ("a", "b"): blanks and repeats dropped, order kept."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            stripped = [str(name).strip() for name in value]
            return tuple(dict.fromkeys(name for name in stripped if name))
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """`k1, k2` -> two keys (blanks dropped)."""
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_serializer("api_keys", when_used="json")
    def _keys_json(self, keys: tuple[SecretStr, ...], info: FieldSerializationInfo) -> list[str]:
        reveal = bool(info.context and info.context.get(REVEAL_SECRETS))
        return [key.get_secret_value() if reveal else str(key) for key in keys]

    def with_options(self, **options: Any) -> Settings:
        """These settings with a command's options over them, validated as the variables
        are (`worker_models="a,b"` is split)."""
        return type(self).model_validate({**dict(self), **options})

    def api_key_table(self) -> ApiKeys:
        """The keys the gateway accepts, by digest, with their tenants and the tenants'
        policies: GENQ_API_KEYS (tenant `default`) and GENQ_API_KEYS_FILE (genq.common.apikeys).
        OSError if the file is unreadable, KeyFileError if it is wrong."""
        clear = [key.get_secret_value() for key in self.api_keys]
        path = self.api_keys_file
        text = path.read_text(encoding="utf-8") if path is not None else None
        return apikeys.load(clear, text, f"GENQ_API_KEYS_FILE {path}")

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme in sentinel.SCHEMES:
            sentinel.parse(url)  # its ValueError names the part, never the password
        elif scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                "redis_url must start with redis://, rediss://, unix:// or redis+sentinel:// "
                f"(got {scheme!r}:)"
            )
        return url

    @field_validator("relay_shard")
    @classmethod
    def _share_in_range(cls, text: str) -> str:
        share, shares = (int(part) for part in text.split("/"))
        if not 1 <= share <= shares <= MAX_RELAY_SHARES:
            raise ValueError(f"relay_shard k/n needs 1 <= k <= n <= {MAX_RELAY_SHARES}: {text}")
        return text

    @property
    def relay_share(self) -> tuple[int, int]:
        """GENQ_RELAY_SHARD as (k, n)."""
        share, shares = self.relay_shard.split("/")
        return int(share), int(shares)

    @property
    def redacted_redis_url(self) -> str:
        return redact_url(self.redis_url)


def redact_url(url: str) -> str:
    """The URL with any password (in the user part or as `?password=`) replaced by ***,
    safe for logs and error messages."""
    redacted = QUERY_PASSWORD.sub(r"\1***", url)
    parts = urlsplit(redacted)
    if parts.password is None:
        return redacted
    host = parts.netloc.rpartition("@")[2]  # keeps IPv6 brackets and the port as written
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


Process = Literal["worker", "relay", "gateway", "client"]
EVERY_PROCESS: tuple[Process, ...] = ("worker", "relay", "gateway", "client")

# The processes whose behaviour each setting sets: `client` is the Python client and the `genq`
# commands that submit or read (the gateway runs a client too, and is named where it uses the
# setting). The README's settings table is generated from this (`python -m ops.readme_settings`)
# and tests/unit/test_readme.py holds it to the fields above, one entry each.
READ_BY: dict[str, tuple[Process, ...]] = {
    "redis_url": EVERY_PROCESS,
    "redis_retry_s": ("gateway", "client"),
    "redis_wait_replicas": ("relay", "gateway", "client"),
    "redis_wait_ms": ("relay", "gateway", "client"),
    "key_prefix": EVERY_PROCESS,
    "models_file": EVERY_PROCESS,
    "cache_dir": EVERY_PROCESS,
    "tiny_seed": EVERY_PROCESS,
    "chunk_tokens": ("worker",),
    "chunk_interval_ms": ("worker",),
    "bundle_tokens": ("gateway", "client"),
    "bundle_jobs": ("gateway", "client"),
    "slots": ("worker",),
    "fair_share": ("worker",),
    "max_queued": ("gateway", "client"),
    "model_budget_mb": ("worker",),
    "job_ttl_s": EVERY_PROCESS,
    "lease_ttl_s": ("worker",),
    "max_attempts": ("relay",),
    "requeue_grace_s": ("worker", "relay"),
    "reap_interval_s": ("relay",),
    "max_prompt_chars": ("gateway", "client"),
    "broker_visibility_timeout_s": ("worker",),
    "device": ("worker",),
    "worker_models": ("worker",),
    "heartbeat_interval_s": ("worker",),
    "metrics_host": ("worker", "relay"),
    "metrics_port": ("worker",),
    "relay_metrics_port": ("relay",),
    "relay_shard": ("relay",),
    "http_host": ("gateway",),
    "http_port": ("gateway",),
    "api_keys": ("gateway",),
    "api_keys_file": ("gateway",),
    "reattach_grace_s": ("gateway",),
    "gateway_max_streams": ("gateway",),
    "file_bytes_max": ("gateway",),
    "progress_interval_s": ("worker",),
    "log_format": ("worker", "relay"),
}
