"""Isolated execution and judging of untrusted candidate programs (DESIGN.md §4).

Standalone: imports nothing else of sdpo-serve. The worker uses `Sandbox`; operators and
scripts use `python -m sandbox run --spec SPEC.json --code FILE`.
"""

from .extract import NO_CODE_FEEDBACK, extract_code
from .isolation import SandboxUnavailable
from .judge import Sandbox, SandboxError, Spec
from .result import Judgement, TestResult, Verdict
from .settings import SandboxSettings, get_settings
from .spec import CheckerSpec, FunctionTestsSpec, IoTestsSpec, parse_spec

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
    "Verdict",
    "extract_code",
    "get_settings",
    "parse_spec",
]
