"""Operator settings of the sandbox (environment variables `SDPO_SANDBOX_*`)."""

from __future__ import annotations

import os
import sys
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    """Host-side limits; the per-test time and memory limits come from the verifier spec."""

    model_config = SettingsConfigDict(env_prefix="SDPO_SANDBOX_", extra="ignore")

    allow_weak: bool = Field(
        False,
        description="Run with rlimits only when bubblewrap is missing. Unsafe for untrusted code.",
    )
    bwrap: str = Field("bwrap", description="bubblewrap executable (name on PATH or a path).")
    python: str = Field(
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        description="Interpreter that runs candidate code (stdlib only, started with -I -S).",
    )
    python_prefix: str = Field(
        sys.base_prefix, description="Installation folder of that interpreter, mounted read-only."
    )
    max_parallel: int = Field(
        os.cpu_count() or 1, ge=1, le=256, description="Test processes running at once."
    )
    wall_factor: float = Field(
        2.0, ge=1.0, le=20.0, description="Wall limit = time_limit_s x this + wall_slack_s."
    )
    wall_slack_s: float = Field(0.5, ge=0.0, le=30.0, description="Added to every wall limit.")
    stdout_limit_kb: int = Field(1024, ge=1, description="stdout cap per test (output_limit).")
    stderr_limit_kb: int = Field(64, ge=1, description="stderr cap per test (output_limit).")
    max_processes: int = Field(8, ge=1, le=1024, description="RLIMIT_NPROC: processes+threads.")
    max_file_mb: int = Field(16, ge=1, description="RLIMIT_FSIZE: largest file a test may write.")
    max_open_files: int = Field(64, ge=16, description="RLIMIT_NOFILE.")
    tmpfs_mb: int = Field(64, ge=1, description="Size of the private writable /tmp.")
    sandbox_uid: int = Field(
        65534, description="When started as root, drop to this uid/gid (nobody) before bwrap."
    )


@lru_cache
def get_settings() -> SandboxSettings:
    return SandboxSettings()
