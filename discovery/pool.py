"""Processes that each hold a model, a sandbox and the problem source, for benchmarks on CPUs.

The models these benchmarks run on the CPU are too small for torch's threads to pay (1.5x on
2 threads at best), so one process per core with one thread each goes faster. Every unit of
work is seeded on its own, so results do not depend on which process runs it (up to float
reduction order).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

import torch

from worker.runtime import EngineName, build_runtime
from worker.strategies import Runtime

from .problems import ProblemSource, load_source

_state: tuple[Runtime, ProblemSource] | None = None


def default_jobs(engine: EngineName) -> int:
    """One process per core for the hf engine on the CPU; one GPU or one vLLM engine: 1."""
    if engine == "vllm" or torch.cuda.is_available():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _die_with_parent() -> None:
    """A killed benchmark must not leave its pool computing on (Linux: PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _start(engine: EngineName, model: str | None, problem_set: str) -> None:
    global _state
    _die_with_parent()
    torch.set_num_threads(1)
    _state = (build_runtime(engine, model), load_source(problem_set))


def state() -> tuple[Runtime, ProblemSource]:
    """This pool process's runtime and problem source."""
    assert _state is not None, "not inside a benchmark pool process"
    return _state


def open_pool(
    jobs: int, engine: EngineName, model: str | None, problem_set: str
) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(engine, model, problem_set),
    )
