"""Isolated execution and judging of untrusted candidate programs.

Standalone: imports nothing else of sdpo-serve. The worker uses `Sandbox`; operators and
scripts use `python -m sandbox run --spec SPEC.json --code FILE`.
"""

from .extract import NO_CODE_FEEDBACK, extract_code
from .isolation import SandboxUnavailable
from .judge import Sandbox, SandboxError
from .result import Judgement, TestResult, Verdict
from .settings import SandboxSettings, get_settings
from .spec import CheckerSpec, FunctionTestsSpec, IoTestsSpec, Spec, UnitTestsSpec, parse_spec

__all__ = [
    "NO_CODE_FEEDBACK",
    "CheckerSpec",
    "FunctionTestsSpec",
    "IoTestsSpec",
    "Judgement",
    "Sandbox",
    "SandboxError",
    "SandboxSettings",
    "SandboxUnavailable",
    "Spec",
    "TestResult",
    "UnitTestsSpec",
    "Verdict",
    "extract_code",
    "get_settings",
    "parse_spec",
]
