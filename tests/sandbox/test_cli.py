"""`python -m sandbox run`: one JSON object on stdout, exit 0 / 2 / 3."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sandbox import Sandbox
from sandbox.isolation import DIR_PREFIX
from tests.sandbox.test_hostile import processes_with

SPEC = {"type": "io_tests", "tests": [{"input": "2\n", "output": "4"}]}


def run_cli(tmp_path, spec, code, *extra, env=None):
    spec_file, code_file = tmp_path / "spec.json", tmp_path / "code.py"
    spec_file.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    code_file.write_text(code)
    argv = [sys.executable, "-m", "sandbox", "run", "--spec", str(spec_file), "--code"]
    return subprocess.run(
        [*argv, str(code_file), *extra], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_judged_code_prints_one_json_object(tmp_path):
    done = run_cli(tmp_path, SPEC, "print(int(input()) * 2)\n")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is True and result["verdict"] == "accepted"
    assert set(result) == {"passed", "verdict", "feedback", "tests", "time_s"}
    wrong = run_cli(tmp_path, SPEC, "print(5)\n")
    assert wrong.returncode == 0 and json.loads(wrong.stdout)["verdict"] == "wrong_answer"


def test_a_flood_of_output_prints_a_short_result(tmp_path):
    done = run_cli(tmp_path, SPEC, "while True:\n    print('x' * 4096)\n")
    result = json.loads(done.stdout)
    assert result["verdict"] == "output_limit" and result["tests"][0]["truncated"] is True
    assert len(done.stdout) < 4096  # the sandbox captured 1 MiB of it


def test_raw_answer_flag_extracts_code(tmp_path):
    done = run_cli(tmp_path, SPEC, "Here:\n```python\nprint(4)\n```\n", "--raw-answer")
    assert json.loads(done.stdout)["passed"] is True


def test_invalid_spec_exits_2_naming_the_field(tmp_path):
    done = run_cli(tmp_path, {"type": "io_tests", "tests": [{"input": "1"}]}, "print(1)")
    assert done.returncode == 2 and done.stdout == ""
    assert "output" in done.stderr and "Field required" in done.stderr
    broken = run_cli(tmp_path, "{not json", "print(1)")
    assert broken.returncode == 2 and "invalid spec" in broken.stderr


def test_bad_arguments_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sandbox", "run"], capture_output=True, timeout=30)
    assert done.returncode == 2
    argv = [sys.executable, "-m", "sandbox", "run", "--spec", str(tmp_path / "nope.json")]
    missing = subprocess.run([*argv, "--code", "x"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_refuses_without_bwrap_unless_weak_mode_allowed(tmp_path):
    no_bwrap = {"SDPO_SANDBOX_BWRAP": "/nonexistent/bwrap"}
    refused = run_cli(tmp_path, SPEC, "print(4)", env=no_bwrap)
    assert refused.returncode == 3
    assert "bubblewrap" in refused.stderr and "SDPO_SANDBOX_ALLOW_WEAK=1" in refused.stderr
    weak = run_cli(tmp_path, SPEC, "print(4)", env={**no_bwrap, "SDPO_SANDBOX_ALLOW_WEAK": "1"})
    assert weak.returncode == 0 and json.loads(weak.stdout)["passed"] is True


def test_sandbox_dies_with_a_killed_judge(tmp_path):
    marker = f"sdpo-orphan-{uuid.uuid4().hex}"
    spec = {"type": "io_tests", "tests": [{"input": "", "output": ""}], "time_limit_s": 30}
    sleeper = f"[sys.executable, '-c', 'import time; time.sleep(60)', '{marker}']"
    code = f"import os, sys\nos.execv(sys.executable, {sleeper})\n"
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "code.py").write_text(code)
    argv = [sys.executable, "-m", "sandbox", "run", "--spec", str(tmp_path / "spec.json")]
    judge = subprocess.Popen([*argv, "--code", str(tmp_path / "code.py")])
    deadline = time.time() + 20
    while not processes_with(marker) and time.time() < deadline:
        time.sleep(0.05)
    assert processes_with(marker), "the candidate never started"
    os.kill(judge.pid, signal.SIGKILL)  # like a worker killed mid-judgement
    judge.wait()
    deadline = time.time() + 5
    while processes_with(marker) and time.time() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    leftovers = list(Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}{judge.pid}-*"))
    assert leftovers, "a SIGKILLed judge cannot clean up after itself"
    Sandbox()  # the next sandbox sweeps what dead processes left behind
    assert not any(p.exists() for p in leftovers)
