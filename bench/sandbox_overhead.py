"""Sandbox benchmark: per-test overhead vs a bare interpreter spawn, and parallel judging.

Both sides are measured in the same run, interleaved, and reported as ratios (these machines are
noisy). Writes bench/results/sandbox.json. Run: `make bench-sandbox` or
`python bench/sandbox_overhead.py --repeats 5`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from sandbox import Sandbox, SandboxSettings, parse_spec
from sandbox.isolation import sandbox_python

TRIVIAL = "pass\n"
SUM = "print(sum(map(int, input().split())))\n"


def bare_spawn_s(python: str, n: int) -> float:
    """Mean seconds of `python3 -c pass`, spawned one after another."""
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([python, "-c", "pass"], check=True)
    return (time.perf_counter() - started) / n


def sandboxed_test_s(n: int) -> float:
    """Mean seconds per test of a trivial program, tests run one at a time through the sandbox."""
    spec = parse_spec({"type": "io_tests", "tests": [{"output": ""}] * n})
    sandbox = Sandbox(SandboxSettings(max_parallel=1))
    started = time.perf_counter()
    result = asyncio.run(sandbox.judge(spec, TRIVIAL))
    assert result.passed, result.feedback
    return (time.perf_counter() - started) / n


def batch_s(max_parallel: int, attempts: int, tests: int) -> float:
    """Wall seconds to judge `attempts` answers x `tests` tests."""
    cases = [{"input": f"{i} {i + 1}\n", "output": str(2 * i + 1)} for i in range(tests)]
    spec = parse_spec({"type": "io_tests", "tests": cases})
    sandbox = Sandbox(SandboxSettings(max_parallel=max_parallel))
    answers = [f"```python\n{SUM}```"] * attempts
    started = time.perf_counter()
    results = asyncio.run(sandbox.judge_many(spec, answers))
    assert all(r.passed for r in results)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per figure")
    parser.add_argument("--spawns", type=int, default=20, help="processes per round")
    parser.add_argument("--attempts", type=int, default=16)
    parser.add_argument("--tests", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    python = sandbox_python(SandboxSettings())[0]
    parallel = os.cpu_count() or 1
    bare, boxed, serial, concurrent = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
        bare.append(bare_spawn_s(python, args.spawns))
        boxed.append(sandboxed_test_s(args.spawns))
        serial.append(batch_s(1, args.attempts, args.tests))
        concurrent.append(batch_s(parallel, args.attempts, args.tests))
    figures = {
        "python": python,
        "bare_spawn_ms": 1000 * statistics.median(bare),
        "sandboxed_test_ms": 1000 * statistics.median(boxed),
        "overhead_ratio": statistics.median(boxed) / statistics.median(bare),
        "batch": f"{args.attempts} attempts x {args.tests} tests",
        "serial_s": statistics.median(serial),
        "parallel_s": statistics.median(concurrent),
        "parallel_processes": parallel,
        "parallel_speedup": statistics.median(serial) / statistics.median(concurrent),
        "repeats": args.repeats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandbox.json").write_text(json.dumps(figures, indent=2))
    print(f"bare `{python} -c pass`: {figures['bare_spawn_ms']:.1f} ms")
    print(f"sandboxed trivial test: {figures['sandboxed_test_ms']:.1f} ms per test")
    print(f"overhead ratio: {figures['overhead_ratio']:.2f}x (target <= 2x)")
    print(
        f"{figures['batch']}: serial {figures['serial_s']:.2f} s, "
        f"{parallel} processes {figures['parallel_s']:.2f} s "
        f"({figures['parallel_speedup']:.2f}x)"
    )


if __name__ == "__main__":
    main()
