import numpy as np

from discovery import stats
from discovery.run import _time_to_reach


def test_discovery_curve_counts_first_successes_within_k():
    curve = stats.discovery_curve([1, 3, None, 3], budget=4)
    np.testing.assert_allclose(curve, [0.25, 0.25, 0.75, 0.75])


def test_attempts_to_reach():
    curve = np.array([0.1, 0.2, 0.5, 0.5])
    assert stats.attempts_to_reach(curve, 0.5) == 3
    assert stats.attempts_to_reach(curve, 0.2) == 2
    assert stats.attempts_to_reach(curve, 0.6) is None


def test_attempts_ratio_counts_best_of_ks_own_attempts_when_it_levels_off():
    """Both solve every run by attempt 8 of 32: the same curve is ratio 1, not 32 / 8."""
    same = stats.discovery_curve([8, 8], budget=32)
    assert stats.attempts_ratio(same, same) == 1.0
    faster = stats.discovery_curve([2, 4], budget=32)
    assert stats.attempts_ratio(faster, same) == 2.0
    climbing = stats.discovery_curve([32, None], budget=32)  # still rising at the budget
    assert stats.attempts_ratio(faster, climbing) == 32 / 2
    nothing = stats.discovery_curve([None, None], budget=32)
    assert stats.attempts_ratio(faster, nothing) is None
    assert stats.attempts_ratio(nothing, same) == 0.0
    interval = stats.attempts_ratio_interval({"a": [8, 8]}, {"a": [8, 8]}, budget=32, n_boot=20)
    assert interval == (1.0, 1.0)


def test_bootstrap_band_brackets_the_estimate_and_collapses_without_variance():
    same = {"a": [2, 2], "b": [2, 2]}
    lo, hi = stats.bootstrap_band(same, budget=3, n_boot=50)
    np.testing.assert_allclose(lo, [0, 1, 1])
    np.testing.assert_allclose(hi, [0, 1, 1])
    mixed = {"a": [1, None], "b": [None, None], "c": [2, 1]}
    lo, hi = stats.bootstrap_band(mixed, budget=2, n_boot=400)
    point = stats.discovery_curve([1, None, None, None, 2, 1], 2)
    assert np.all(lo <= point) and np.all(point <= hi) and np.all(hi - lo > 0)


def test_attempts_ratio_interval_is_paired_and_brackets_the_estimate():
    always = {"a": [1, 1], "b": [1, 1]}
    late = {"a": [4, 4], "b": [4, 4]}
    assert stats.attempts_ratio_interval(always, late, budget=4, n_boot=50) == (4.0, 4.0)
    never = {"a": [None, None], "b": [None, None]}
    assert stats.attempts_ratio_interval(always, never, budget=4, n_boot=50) is None
    assert stats.attempts_ratio_interval(never, late, budget=4, n_boot=50) == (0.0, 0.0)
    # paired: seed i of SDPO goes with seed i of best-of-k; best-of-k solves half at 4
    sdpo = {"a": [1, 2], "b": [3, None]}
    bok = {"a": [4, None], "b": [4, None]}
    lo, hi = stats.attempts_ratio_interval(sdpo, bok, budget=4, n_boot=400)
    point = 4 / stats.attempts_to_reach(stats.discovery_curve([1, 2, 3, None], 4), 0.5)
    assert lo <= point <= hi and lo < hi


def test_time_to_reach_picks_the_needed_success():
    assert _time_to_reach([1.0, 2.0, 5.0], 0.5, runs=4) == 2.0
    assert _time_to_reach([1.0], 0.5, runs=4) is None
    assert _time_to_reach([1.0, 2.0], 0.0, runs=4) is None
    times = [float(t) for t in range(114)]
    assert _time_to_reach(times, round(114 / 140, 4), runs=140) == 113.0  # 0.8143 * 140 > 114


def test_report_from_runs_has_curves_ratios_and_a_plot(tmp_path):
    from discovery.run import DiscoveryConfig, Run, summarize, write_report

    def run(strategy, problem, seed, first):
        wall = 1.0 if first else 2.0
        phases = {"generate": 0.5, "judge": 0.2}
        return Run(
            strategy, problem, seed, first, first or 8, wall, first and wall, phases, "0" * 16
        )

    runs = [
        run("best_of_k", 1, 0, 6),
        run("best_of_k", 1, 1, None),
        run("best_of_k", 2, 0, 8),
        run("best_of_k", 2, 1, None),
        run("sdpo", 1, 0, 2),
        run("sdpo", 1, 1, None),
        run("sdpo", 2, 0, 4),
        run("sdpo", 2, 1, 1),
    ]
    config = DiscoveryConfig(out=tmp_path, budget=8, problems=2, seeds=2)
    report = summarize(runs, config, [1, 2])
    write_report(report, tmp_path)
    assert report["best_of_k_discovery_at_budget"] == 0.5
    assert report["sdpo_attempts_to_match"] == 2  # sdpo reaches 0.5 at k = 2
    assert report["attempts_ratio_vs_best_of_k"] == 4.0
    lo, hi = report["attempts_ratio_ci90"]
    assert 0 <= lo <= 4.0 <= hi <= 8
    assert report["strategies"]["sdpo"]["discovery"]["4"] == 0.75
    assert report["strategies"]["sdpo"]["mean_attempts_to_success"] == 7 / 3
    assert (tmp_path / "discovery.json").is_file() and (tmp_path / "discovery.png").is_file()
