"""The chaos benchmark, short: real processes, every kind of fault, and the same end checks
(bench/chaos.py runs 200 sessions)."""

import pytest

from bench.chaos import ChaosConfig, Faults, run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_faults_lose_double_and_strand_nothing(tmp_path):
    config = ChaosConfig(sessions=24, workers=3, seed=1, fault_every_s=2.0, min_faults=6)
    report = run_chaos(config, tmp_path)
    assert set(report.faults) == set(Faults.KINDS), report.faults
    assert (report.lost, report.doubled, report.stuck, report.over_budget) == (0, 0, 0, 0)
    assert report.solutions_failing == 0 and report.checkpoint_folders_left == 0
    assert report.quota_exceeded == 0 and 0 < report.quota_peak
    assert sum(report.statuses.values()) == 24 and report.attempts > 0
