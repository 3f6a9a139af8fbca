"""Settings of the gateway, the workers and the embedded Redis: environment variables `SDPO_*`.

One class for all three, so that `sdpo serve` hands the same values to every process it starts.
API keys are hashed as they are read: only their SHA-256 digests live in memory, and a caller's
tenant is named after its key's digest. Without keys the gateway serves loopback only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .params import PARAMS_BY_STRATEGY

DIGEST_PREFIX = "sha256:"
LOCAL_TENANT = "local"  # every caller's tenant when no keys are configured


def hash_api_key(key: str) -> str:
    """The stored form of an API key."""
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _optional(settings: type[BaseSettings], name: str) -> bool:
    field = settings.model_fields.get(name)
    return field is not None and type(None) in get_args(field.annotation)


class Settings(BaseSettings):
    """Everything an operator may set. Field descriptions double as `--help` text."""

    model_config = SettingsConfigDict(env_prefix="SDPO_", extra="ignore")

    # -- gateway ------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the gateway binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the gateway.")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="API keys, comma-separated, each plain or as sha256:<hex digest>. Only the "
        "digests are kept. Empty: no authentication, and the gateway binds to loopback only.",
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        ("default",), description="Model names the gateway accepts (workers serve one each)."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body; larger ones get 413."
    )
    max_queue: int = Field(
        1000, ge=1, description="Jobs waiting or running per model; beyond that, POST gets 429."
    )
    quota_active_sessions: int = Field(
        50, ge=1, description="Queued + running sessions per API key; beyond that, POST gets 429."
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 429 or 503.")
    max_wall_s_limit: float = Field(
        4 * 3600.0,
        gt=0,
        description="Largest budget.max_wall_s a request may ask for (422 beyond); a session "
        "without one gets this.",
    )
    num_generations_limit: int = Field(
        64, ge=1, description="Largest params.num_generations a request may ask for (422 beyond)."
    )
    max_completion_length_limit: int = Field(
        4096,
        ge=1,
        description="Largest params.max_completion_length a request may ask for (422 beyond).",
    )
    event_streams_per_tenant: int = Field(
        8, ge=1, description="Open event streams (SSE) per API key; beyond that, 429."
    )
    event_stream_max_s: float = Field(
        600.0,
        gt=0,
        description="An event stream is closed after this long (a client resumes it with "
        "Last-Event-ID), so that long watches spread again over the gateway replicas.",
    )

    # -- store --------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None, description="External Redis (redis://host:port/db). Empty: start an embedded one."
    )
    data_dir: Path = Field(
        Path(".sdpo"), description="Embedded Redis data (AOF) and session checkpoints."
    )
    redis_fsync: Literal["always", "everysec"] = Field(
        "always",
        description="Embedded Redis AOF fsync: 'always' loses no acknowledged step on a crash.",
    )
    session_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long a finished session stays readable."
    )
    idempotency_ttl_s: int = Field(
        24 * 3600, ge=60, description="How long an Idempotency-Key maps to its sessions."
    )
    events_maxlen: int = Field(
        2000, ge=10, description="Events kept per session (older ones are trimmed)."
    )

    # -- worker -------------------------------------------------------------------------------
    model: str = Field(
        "toy",
        min_length=1,
        description="The worker's model: a catalogue name (`sdpo models` lists them) or a local "
        "Hugging Face folder.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None,
        description="Weights dtype of the worker's model. Empty: the model profile's (auto: "
        "bfloat16 on CUDA, float32 on the CPU). LoRA weights and optimizer state stay float32.",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where built-in GGUF models are converted to Hugging Face folders, once. "
        "Empty: <data_dir>/models.",
    )
    params: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Strategy parameter defaults as a JSON object, e.g. "
        '{"learning_rate": 1e-4}: they override the model profile, and a request\'s params '
        "override them. Each applies to the strategies that have it.",
    )
    model_name: str = Field("default", description="The model name this worker serves.")
    engine: Literal["hf", "vllm"] = Field("hf", description="Generation engine of the worker.")
    device: str | None = Field(None, description="Torch device. Empty: cuda if present, else cpu.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads per worker. Empty: torch's default."
    )
    checkpoint_dir: Path | None = Field(
        None,
        description="Session checkpoints, shared by all workers: with workers on several "
        "machines, a shared volume (e.g. ReadWriteMany), else a resumed session restarts its "
        "adapter (its step says resumed_without_checkpoint). Empty: <data_dir>/checkpoints.",
    )
    worker_name: str | None = Field(
        None, description="Consumer name in the job group. Empty: <hostname>-<pid>."
    )
    worker_max_sessions: int | None = Field(
        None,
        ge=1,
        description="Sessions one worker runs at once, taking turns on its model. Empty: 8 on "
        "a GPU, 4 on the CPU.",
    )
    worker_batch_generation: bool = Field(
        True,
        description="Sample the batches of a worker's sessions together, one forward pass per "
        "token for all of them. Off: each alone, so every session samples bit for bit what it "
        "would as the worker's only one (co-batched rows can differ in float rounding, which "
        "can flip a sampled token), at the cost of throughput.",
    )
    worker_batch_update: bool | None = Field(
        None,
        description="Update the SDPO sessions of a worker that are ready to learn together: "
        "one teacher pass and one forward and backward per row group for all of them, each "
        "row with its session's adapter, each session with its own optimizer. Off: each "
        "alone, bit for bit as the worker's only session. Empty: on a GPU only (on the CPU, "
        "where compute is the bound, shared passes save nothing).",
    )
    worker_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory one worker may give its sessions (adapters, teachers, optimizer "
        "state, the largest step's activations); it starts a session only while one more "
        "fits. Empty: 80% of what its device has free once the model is loaded.",
    )
    heartbeat_s: float = Field(2.0, gt=0, le=60, description="Worker heartbeat period.")
    claim_idle_ms: int = Field(
        30_000, ge=100, description="A job silent this long belongs to a dead worker: reclaim it."
    )
    block_ms: int = Field(2000, ge=10, le=60_000, description="Worker wait for a new job.")
    attempt_log_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Bytes of attempt records kept per session; past them, an attempt keeps "
        "its verdict and feedback but not its text and code (elided).",
    )
    update_tokens_per_pass: int = Field(
        1024,
        ge=1,
        description="Student tokens (padding included) per forward/backward pass of the SDPO "
        "update: a batch is split into row groups this size (at least one row each), whose "
        "gradients add up. Bounds the update's activation memory.",
    )
    max_claims: int = Field(
        5, ge=1, description="A session whose worker died this many times fails instead."
    )
    shutdown_grace_s: float = Field(
        60.0, gt=0, description="`sdpo serve`: how long workers may finish their step."
    )

    # -- vllm engine (SDPO_ENGINE=vllm) ---------------------------------------------------------
    vllm_max_loras: int = Field(
        4,
        ge=1,
        description="LoRA adapters one vLLM batch can mix: the sessions generating at once, "
        "plus the all-zero adapter that base-model requests use.",
    )
    vllm_max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        16, description="Largest LoRA rank vLLM accepts; a session with a larger lora_rank fails."
    )
    vllm_gpu_memory_utilization: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of GPU memory vLLM may take (its weights and KV cache). The rest holds "
        "the torch copy of the model, the session adapters and training.",
    )
    vllm_cpu_kvcache_gib: int = Field(
        1, ge=1, description="CPU builds of vLLM only: KV cache in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    vllm_max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + completion vLLM serves. Empty: the model's."
    )
    vllm_enforce_eager: bool = Field(
        False,
        description="No torch.compile or CUDA graphs: starts in seconds, generates slower on GPU.",
    )
    vllm_adapter_dir: Path | None = Field(
        None,
        description="Where adapter versions are saved for vLLM to load (a fresh subfolder per "
        "worker, deleted at exit). Empty: the system's temporary folder.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """An empty value of an optional setting means unset (SDPO_CHECKPOINT_DIR= would otherwise
        be Path('.'), the current folder)."""
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if not (v == "" and _optional(cls, k))}

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_keys(cls, value: object) -> tuple[str, ...]:
        keys = _split_commas(value) or []
        if not isinstance(keys, (list, tuple)):
            raise ValueError("must be a comma-separated list of keys")
        digests = []
        for key in keys:
            if str(key).startswith(DIGEST_PREFIX):
                digest = str(key)
                if len(digest) != len(DIGEST_PREFIX) + 64:
                    raise ValueError("a sha256: entry must hold 64 hex digits")
            elif len(str(key)) < 16:
                raise ValueError("an API key must be at least 16 characters long")
            else:
                digest = hash_api_key(str(key))
            digests.append(digest)
        return tuple(dict.fromkeys(digests))

    @field_validator("params", mode="before")
    @classmethod
    def _parse_params(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as error:
                raise ValueError(f"must be a JSON object ({error.msg})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object of strategy parameters")
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for params in PARAMS_BY_STRATEGY.values():
            accepted = {k: v for k, v in value.items() if k in params.model_fields}
            try:
                params.model_validate(accepted)
            except ValidationError as error:
                first = error.errors()[0]
                raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        known = {f for params in PARAMS_BY_STRATEGY.values() for f in params.model_fields}
        if unknown := sorted(set(value) - known):
            raise ValueError(f"unknown strategy parameters: {', '.join(unknown)}")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        return _split_commas(value)

    @model_validator(mode="after")
    def _refuse_open_bind(self) -> Settings:
        if not self.api_keys and not is_loopback(self.host):
            raise ValueError(
                f"host: refusing to bind to {self.host} without API keys; set SDPO_API_KEYS "
                "or bind to 127.0.0.1"
            )
        return self

    @model_validator(mode="after")
    def _sessions_outlive_their_keys(self) -> Settings:
        if self.session_ttl_s < self.idempotency_ttl_s:
            raise ValueError(
                f"session_ttl_s ({self.session_ttl_s}) must be at least idempotency_ttl_s "
                f"({self.idempotency_ttl_s}): a retried POST would find its key but not its "
                "session"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def tenant_for(self, key: str) -> str | None:
        """The tenant of a presented key, or None. Digests are compared, never plain keys."""
        digest = hash_api_key(key)
        return "key-" + digest[len(DIGEST_PREFIX) :][:16] if digest in self.api_keys else None

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.data_dir / "checkpoints"

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def consumer_name(self) -> str:
        return self.worker_name or f"{os.uname().nodename}-{os.getpid()}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment (tests call cache_clear)."""
    return Settings()
