"""The worker's conversions to stored records."""

from worker.records import Attempt
from worker.service_worker import attempt_public

ANSWER = (
    "```python\ndef add(x, y):\n    return x + y\n```\nUsage:\n```python\nprint(add(2, 3))\n```"
)


def test_attempt_record_shows_the_block_that_defines_the_entry_point():
    """The stored code (a passing attempt's is the session's solution) is the block the sandbox
    judged for that verifier."""
    attempt = Attempt(index=1, step=0, text=ANSWER, token_ids=[1, 2], logprobs=[-0.1, -0.2])
    assert attempt_public(attempt, "add").code == "def add(x, y):\n    return x + y"
    assert attempt_public(attempt).code == "print(add(2, 3))"


def test_attempt_record_without_a_block_has_no_code():
    attempt = Attempt(index=1, step=0, text="Just add them.", token_ids=[1], logprobs=[-0.1])
    record = attempt_public(attempt, "add")
    assert record.code is None and record.verdict == "not_judged" and record.tokens == 1
