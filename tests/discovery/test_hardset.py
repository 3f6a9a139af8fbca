"""Hard sets: one rule in code, stored with the model's and the problem set's digests, and a
stale one refused. The screens run the bundled model and the real sandbox."""

import asyncio
import inspect
import json
from dataclasses import asdict, replace
from operator import itemgetter

import pytest
import torch

from discovery.hardset import (
    TOY_HARDSET_FILE,
    HardSetRule,
    StaleHardSet,
    find_hard_set,
    load_hard_set,
    model_digest,
    save_hard_set,
    screen_here,
    screen_problem,
    select_hard_set,
)
from discovery.problems import load_source, toy_source
from discovery.run import DiscoveryConfig, model_folder, run_discovery
from problemsets.toy import toy_problems
from sdpo.problem_set import write_problem_set
from sdpo.settings import get_settings
from sdpo_serve import (
    cli_bench,  # not the command itself: pytest would collect `bench_hardset` and run it
)
from worker.engine import HFEngine
from worker.model import load_model
from worker.strategies import Runtime


@pytest.fixture(scope="module")
def toy_runtime(sandbox):
    return Runtime(HFEngine(load_model()), sandbox)


def test_the_cli_applies_the_rule_in_code():
    """`sdpo testbed hardset` once scanned 300 tasks while the rule said 600."""
    rule = asdict(HardSetRule())
    rule["tags"] = ",".join(rule["tags"])
    options = inspect.signature(cli_bench.bench_hardset).parameters.items()
    checked = [name for name, _ in options if name in rule]
    assert len(checked) == len(rule)
    for name, parameter in options:
        if name in rule:
            assert parameter.default == rule[name], name


def test_the_stored_toy_hard_set_matches_the_rule_the_model_and_the_family():
    stored = load_hard_set()
    rule = HardSetRule()
    assert stored["rule"] == json.loads(json.dumps(asdict(rule)))
    assert stored["model_digest"] == model_digest(model_folder("toy"))
    assert stored["problem_set_digest"] == toy_source().digest
    assert len(stored["problems"]) == rule.count
    source = toy_source()
    for problem in stored["problems"]:
        assert rule.min_rate <= problem["base_pass_rate"] <= rule.max_rate
        assert source.entries[problem["index"]].id == problem["id"]
        assert "hard-candidate" in source.entries[problem["index"]].tags


def test_a_hard_set_for_another_problem_set_or_model_is_refused(tmp_path):
    stored = load_hard_set()
    with pytest.raises(StaleHardSet, match="another problem set"):
        load_hard_set(TOY_HARDSET_FILE, problem_set_digest="0" * 16)
    with pytest.raises(StaleHardSet, match="another model"):
        load_hard_set(TOY_HARDSET_FILE, model_digest="0" * 16)
    same = load_hard_set(
        TOY_HARDSET_FILE,
        model_digest=stored["model_digest"],
        problem_set_digest=stored["problem_set_digest"],
    )
    assert same == stored


def test_two_stage_screen_stops_at_stage_one(toy_runtime):
    """A problem that misses the stage-1 bar gets no more samples; one that makes it gets the
    full count, with the stage-1 answers included."""
    source = toy_source(8)
    strict = HardSetRule(samples=12, batch=4, screen_samples=4, screen_min_passes=5, tags=())
    dropped = asyncio.run(screen_problem(toy_runtime, source, 0, strict))
    assert (dropped.stage, dropped.samples) == (1, 4)
    lenient = replace(strict, screen_min_passes=0)
    full = asyncio.run(screen_problem(toy_runtime, source, 0, lenient))
    assert (full.stage, full.samples) == (2, 12)
    # the same seeded sampler: stage 1 drew the first 4 answers of the full screen
    assert full.passed >= dropped.passed


def test_discovery_on_a_problem_set_file_and_a_stale_hard_set(toy_runtime, tmp_path):
    """The benchmark runs any problem-set file through its hard set; editing the file after
    the hard set was chosen makes the benchmark refuse it."""
    problems = tmp_path / "toy.jsonl"
    write_problem_set(problems, toy_problems(6))
    source = load_source(problems)
    rule = HardSetRule(samples=4, batch=4, min_rate=0, max_rate=1, count=2, tags=())
    hard = asyncio.run(
        select_hard_set(
            screen_here(toy_runtime, source, rule),
            source,
            rule,
            "toy",
            model_digest(model_folder("toy")),
        )
    )
    assert [p["id"] for p in hard["problems"]] == ["toy/heldout-0", "toy/heldout-1"]
    path = tmp_path / "hard.json"
    save_hard_set(hard, path)
    config = DiscoveryConfig(
        out=tmp_path / "out",
        strategies=("best_of_k",),
        budget=2,
        problems=2,
        seeds=1,
        params={"best_of_k": {"num_generations": 2}},
        model="toy",
        problem_set=str(problems),
        hard_set=path,
        jobs=1,
    )
    report = asyncio.run(run_discovery(config, progress=lambda line: None))
    assert report["problem_ids"] == ["toy/heldout-0", "toy/heldout-1"]
    assert report["hard_set"]["problem_set_digest"] == source.digest
    assert [r["problem_id"] for r in report["runs"]] == report["problem_ids"]

    write_problem_set(problems, toy_problems(7))  # one more problem: another file
    with pytest.raises(StaleHardSet, match="another problem set"):
        asyncio.run(run_discovery(config, progress=lambda line: None))


async def _cancelled_after(screened, count: int):
    """The screen as Ctrl-C leaves it: the cancellation arrives after `count` results."""
    async for result in screened:
        if count == 0:
            raise asyncio.CancelledError
        yield result
        count -= 1


def test_a_stopped_screen_keeps_what_it_measured_and_says_how_to_reproduce_it(toy_runtime):
    source = toy_source(8)
    rule = HardSetRule(samples=4, batch=4, min_rate=0, max_rate=1, count=8, tags=())
    digest = model_digest(model_folder("toy"))
    screened = _cancelled_after(screen_here(toy_runtime, source, rule), 3)
    partial = asyncio.run(select_hard_set(screened, source, rule, "toy", digest))
    assert partial["stopped_early"] is True and partial["rule"]["scan"] == 3
    assert [row["index"] for row in partial["scanned"]] == [0, 1, 2]
    again = replace(rule, scan=3)  # what the stored rule says reproduces the set
    full = asyncio.run(select_hard_set(screen_here(toy_runtime, source, again), source, again,
                                       "toy", digest))  # fmt: skip
    assert full["stopped_early"] is False
    assert full["scanned"] == partial["scanned"] and full["rule"] == partial["rule"]
    nothing = _cancelled_after(screen_here(toy_runtime, source, rule), 0)
    with pytest.raises(asyncio.CancelledError):  # nothing measured: nothing to keep
        asyncio.run(select_hard_set(nothing, source, rule, "toy", digest))


def test_the_benchmark_samples_at_the_temperature_of_its_hard_set(toy_runtime, tmp_path):
    with pytest.raises(ValueError, match="temperature must be in"):
        HardSetRule(temperature=0)
    hard, _, config = _toy_benchmark(toy_runtime, tmp_path, 1, temperature=0.5)
    assert hard["rule"]["temperature"] == 0.5
    report = asyncio.run(run_discovery(config, progress=lambda line: None))
    assert report["config"]["temperature"] == 0.5
    hotter = replace(config, out=tmp_path / "hot", temperature=1.0)  # an explicit one wins
    other = asyncio.run(run_discovery(hotter, progress=lambda line: None))
    assert other["config"]["temperature"] == 1.0
    assert other["runs"][0]["attempts_digest"] != report["runs"][0]["attempts_digest"]


def test_the_shipped_smollm2_humaneval_hard_set_matches_its_rule(
    smollm2_source, tmp_path, monkeypatch
):
    """discovery/hardsets/ ships the SmolLM2 x HumanEval set that the README's benchmark ran
    on: it must still fit the model the catalogue converts and the problems the importer
    writes, and the benchmark must find it without --hard-set."""
    from problemsets.humaneval import humaneval_problems

    problems = tmp_path / "humaneval.jsonl"
    write_problem_set(problems, humaneval_problems())
    source = load_source(problems)
    monkeypatch.chdir(tmp_path)  # no bench/results/hardsets/ here: the shipped set is found
    path = find_hard_set("smollm2-135m-instruct", str(problems))
    assert path.parent.name == "hardsets" and path.parent.parent.name == "discovery"
    stored = load_hard_set(
        path,
        model_digest=model_digest(smollm2_source.folder),
        problem_set_digest=source.digest,
    )
    rule = HardSetRule(**{**stored["rule"], "tags": tuple(stored["rule"]["tags"])})
    assert len(stored["problems"]) == rule.count and rule.temperature == 0.7
    for problem in stored["problems"]:
        assert rule.min_rate <= problem["base_pass_rate"] <= rule.max_rate
        assert source.entries[problem["index"]].id == problem["id"]
    assert [s["index"] for s in stored["scanned"]] == list(range(len(stored["scanned"])))


def test_a_stopped_benchmark_reports_its_whole_problems(toy_runtime, tmp_path):
    _, _, config = _toy_benchmark(toy_runtime, tmp_path, 3)
    config = replace(
        config,
        strategies=("best_of_k", "multi_turn"),
        seeds=2,
        params={"best_of_k": {"num_generations": 2}, "multi_turn": {"num_generations": 2}},
    )
    full = asyncio.run(run_discovery(config, progress=lambda line: None))
    assert full["stopped_early"] is False and len(full["runs"]) == 12
    log = config.out / "runs.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:7]) + "\n")  # stopped in the second problem's runs
    partial = asyncio.run(run_discovery(replace(config, report_only=True), progress=print))
    assert partial["stopped_early"] is True and partial["problems"] == full["problems"][:1]
    assert partial["runs"] == full["runs"][:4]
    log.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match="no problem has all its runs"):
        asyncio.run(run_discovery(replace(config, report_only=True), progress=print))


def test_a_stopped_benchmark_resumes_with_only_its_missing_runs(toy_runtime, tmp_path):
    _, _, config = _toy_benchmark(toy_runtime, tmp_path, 3)
    config = replace(
        config, strategies=("best_of_k",), seeds=2, params={"best_of_k": {"num_generations": 2}}
    )
    full = asyncio.run(run_discovery(config, progress=lambda line: None))
    log = config.out / "runs.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])  # killed while writing run 5
    said: list[str] = []
    resumed = asyncio.run(run_discovery(replace(config, resume=True), progress=said.append))
    assert said[0] == "resuming: 4 of 6 runs already logged"
    assert len([line for line in said if " problem " in line]) == 2  # only the missing runs ran
    key = itemgetter("strategy", "problem", "seed")
    kept = {key(json.loads(line)): json.loads(line) for line in lines[:4]}
    for run, want in zip(resumed["runs"], full["runs"], strict=True):
        assert key(run) == key(want) and run["attempts_digest"] == want["attempts_digest"]
        if key(run) in kept:
            assert run == kept[key(run)]  # logged runs are kept as they were, not rerun
    assert len(log.read_text().splitlines()) == 6
    with pytest.raises(ValueError, match=r"other settings \(budget\)"):
        asyncio.run(run_discovery(replace(config, resume=True, budget=3), progress=print))


def test_sessions_run_at_once_sample_together_and_match_the_sequential_runs(
    toy_runtime, tmp_path, monkeypatch
):
    """--concurrency 4: the three strategies' sessions share generation ticks on one model,
    and SDPO sessions ready to learn at once would share update passes (SDPO_WORKER_BATCH_UPDATE
    on).
    Co-batched rows draw the same random numbers as alone and differ only in float rounding:
    best-of-k and multi-turn runs sample exactly their sequential attempts (their sampler
    log-probs feed nothing), every run spends the same budget, and SDPO runs, whose loss reads
    the sampler log-probs and whose updates share passes, may drift after their first update."""
    monkeypatch.setenv("SDPO_WORKER_BATCH_UPDATE", "true")
    get_settings.cache_clear()
    threads = torch.get_num_threads()
    try:
        _run_at_once_and_alone(toy_runtime, tmp_path)
    finally:
        get_settings.cache_clear()
        torch.set_num_threads(threads)


def _run_at_once_and_alone(toy_runtime, tmp_path) -> None:
    _, _, config = _toy_benchmark(toy_runtime, tmp_path, 2)
    sampling = {"num_generations": 2}
    config = replace(
        config,
        strategies=("sdpo", "best_of_k", "multi_turn"),
        budget=6,
        seeds=2,
        params={"sdpo": {**sampling, "learning_rate": 0.05}, "best_of_k": sampling,
                "multi_turn": sampling},
    )  # fmt: skip
    said = {"alone": [], "together": []}
    alone = asyncio.run(run_discovery(config, progress=said["alone"].append))
    config = replace(config, out=tmp_path / "together", concurrency=4, threads=1)
    together = asyncio.run(run_discovery(config, progress=said["together"].append))
    assert torch.get_num_threads() == 1  # --threads
    assert (together["jobs"], together["concurrency"]) == (1, 4)
    ticks = {k: [x for x in lines if x.startswith("generation:")] for k, lines in said.items()}
    per_tick = {k: float(lines[0].split(", ")[-1].split()[0]) for k, lines in ticks.items()}
    assert per_tick["alone"] == 1.0 and per_tick["together"] > 1.0  # co-batched
    updates = {k: [x for x in lines if x.startswith("updates:")][0] for k, lines in said.items()}
    per_update = {k: float(line.split(", ")[-1].split()[0]) for k, line in updates.items()}
    # whether two SDPO sessions ask for their updates at once depends on judging times, so
    # only the mode is asserted here; tests/worker/test_joint_update.py makes them coincide
    assert per_update["alone"] == 1.0 and per_update["together"] >= 1.0
    assert "(shared passes)" in updates["together"]
    key = itemgetter("strategy", "problem", "seed")
    assert [key(r) for r in together["runs"]] == [key(r) for r in alone["runs"]]
    for run, solo in zip(together["runs"], alone["runs"], strict=True):
        first, used = run["first_success"], run["attempts_used"]
        assert used == 6 if first is None else first <= used <= 6 and used % 2 == 0  # whole steps
        if run["strategy"] != "sdpo":
            assert (run["first_success"], run["attempts_digest"]) == (
                solo["first_success"],
                solo["attempts_digest"],
            )
    assert any("wait" in r["phase_s"] for r in together["runs"])  # they did take turns
    assert not any("wait" in r["phase_s"] for r in alone["runs"])
    with pytest.raises(ValueError, match="leave --jobs at 1"):
        asyncio.run(run_discovery(replace(config, jobs=2), progress=print))


def _toy_benchmark(toy_runtime, tmp_path, count: int, **rule_fields):
    """A toy problem-set file of 4 problems, its hard set screened and saved, and a best-of-k
    discovery run on it: (the hard set, the source, the config)."""
    problems = tmp_path / "toy.jsonl"
    write_problem_set(problems, toy_problems(4))
    source = load_source(problems)
    rule = HardSetRule(samples=2, batch=2, min_rate=0, max_rate=1, count=count, tags=(),
                       **rule_fields)  # fmt: skip
    hard = asyncio.run(
        select_hard_set(screen_here(toy_runtime, source, rule), source, rule, "toy",
                        model_digest(model_folder("toy")))
    )  # fmt: skip
    save_hard_set(hard, tmp_path / "hard.json")
    config = DiscoveryConfig(
        out=tmp_path / "out",
        strategies=("best_of_k",),
        budget=2,
        problems=count,
        seeds=1,
        params={"best_of_k": {"num_generations": 2}},
        model="toy",
        problem_set=str(problems),
        hard_set=tmp_path / "hard.json",
        jobs=1,
    )
    return hard, source, config
