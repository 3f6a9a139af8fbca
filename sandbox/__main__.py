"""`python -m sandbox run --spec SPEC.json --code FILE`: judge one program, print one JSON object.

Exit status 0 when the code was judged (whatever the verdict), 2 for an invalid spec or
arguments, 3 when the sandbox cannot run (e.g. bubblewrap missing). Messages go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from . import Sandbox, SandboxError, SandboxUnavailable, parse_spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="judge one program against a verifier spec")
    run.add_argument("--spec", required=True, type=Path, help="verifier spec (JSON file)")
    run.add_argument("--code", required=True, type=Path, help="program file, or '-' for stdin")
    run.add_argument(
        "--raw-answer",
        action="store_true",
        help="treat the file as a model's raw answer and extract its code block first",
    )
    return parser


def _fail(message: str, status: int) -> int:
    print(f"sandbox: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = parse_spec(args.spec.read_bytes())
        code = sys.stdin.read() if str(args.code) == "-" else args.code.read_text("utf-8")
    except ValidationError as exc:
        return _fail(f"invalid spec {args.spec}:\n{exc}", 2)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(str(exc), 2)
    try:
        sandbox = Sandbox()
        judged = (sandbox.judge_answer if args.raw_answer else sandbox.judge)(spec, code)
        judgement = asyncio.run(judged)
    except (SandboxUnavailable, SandboxError) as exc:
        return _fail(str(exc), 3)
    print(judgement.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
