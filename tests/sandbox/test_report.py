"""Reports forged by the candidate (it can write to the report channel) never break the judge."""

import asyncio

import pytest

from sandbox import parse_spec
from sandbox.report import parse_report

IO = parse_spec({"type": "io_tests", "tests": [{"input": "", "output": "x"}]})
FUNCTION = parse_spec(
    {"type": "function_tests", "entry_point": "f", "tests": [{"args": [], "expected": 1}]}
)
FORGE = "import os, sys\nos.write(int(sys.argv[1]), {report!r})\nos._exit(0)\n"


@pytest.mark.parametrize(
    ("spec", "report"),
    [
        (IO, b'{"status": "compile_error"}'),
        (IO, b'{"status": "exception", "error": 5}'),
        (IO, b'{"status": "exit"}'),
        (IO, b'{"status": "ok", "cpu_s": "fast"}'),
        (FUNCTION, b'{"status": "ok", "results": [{"status": "ok", "json": "{bad"}]}'),
        (FUNCTION, b'{"status": "ok", "results": [{"status": "exception", "error": []}]}'),
    ],
)
def test_a_forged_report_gets_a_failing_verdict(sandbox, spec, report):
    result = asyncio.run(sandbox.judge(spec, FORGE.format(report=report)))
    assert not result.passed


def test_malformed_reports_are_dropped():
    assert parse_report({"status": "ok", "cpu_s": "x"}) == {}
    assert parse_report([1]) == {}
    kept = {"status": "exception", "error": {"type": "E", "message": "m", "frames": []}}
    assert parse_report({**kept, "cpu_s": 0.1}) == {**kept, "cpu_s": 0.1}
