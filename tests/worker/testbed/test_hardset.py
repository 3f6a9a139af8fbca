"""The hard-set rule: one set of defaults, whether applied from Python or from the CLI."""

import inspect
from dataclasses import asdict

from sdpo_serve import (
    cli,  # not the command itself: pytest would collect `testbed_hardset` and run it
)
from worker.testbed.hardset import HardSetRule, load_hard_set


def test_the_cli_applies_the_rule_in_code():
    """`sdpo testbed hardset` once scanned 300 tasks while the rule said 600."""
    rule = HardSetRule()
    for name, parameter in inspect.signature(cli.testbed_hardset).parameters.items():
        assert parameter.default == getattr(rule, name), name


def test_the_stored_hard_set_was_chosen_by_the_rule_in_code():
    stored = load_hard_set()
    rule = HardSetRule()
    assert stored["rule"] == asdict(rule)
    for problem in stored["problems"]:
        assert rule.min_rate <= problem["base_pass_rate"] <= rule.max_rate
