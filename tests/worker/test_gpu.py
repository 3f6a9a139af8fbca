"""The hf engine and the SDPO update on CUDA: run by deploy/gpu_check.sh on a
lent GPU, skipped elsewhere. SDPO_GPU_TEST_DEVICE=cpu dry-runs them on the CPU, to check the
script before spending GPU time."""

import asyncio
import os

import pytest
import torch

from discovery.hardset import load_hard_set
from discovery.problems import heldout_problem
from sdpo.params import SDPOParams
from worker.adapter import SessionAdapter
from worker.engine import HFEngine
from worker.generation import SamplingConfig
from worker.loop import Budget, run_session
from worker.model import load_model
from worker.scoring import attempt_logits
from worker.strategies import Runtime, make_strategy
from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden

DEVICE = os.environ.get("SDPO_GPU_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA (a lent GPU)"
    ),
]


@pytest.fixture(scope="module")
def on_device():
    return load_model(device=DEVICE)


def _config(loaded):
    return SamplingConfig(stop_token_ids=loaded.stop_token_ids, max_new_tokens=64)


def test_scoring_on_device_matches_cpu(on_device):
    cpu = load_model()
    prompt_ids = cpu.chat_ids(heldout_problem(0).prompt)
    samples = HFEngine(cpu).generate(
        prompt_ids, 4, _config(cpu), generator=torch.Generator().manual_seed(0)
    )
    attempts = [s.token_ids for s in samples]
    contexts = [prompt_ids] * len(attempts)
    with torch.no_grad():
        want, mask = attempt_logits(cpu.model, contexts, attempts)
        got, _ = attempt_logits(on_device.model, contexts, attempts)
    want_lp, got_lp = want.log_softmax(-1), got.float().cpu().log_softmax(-1)
    assert torch.allclose(got_lp[mask.cpu()], want_lp[mask], atol=2e-4)


def test_generation_is_deterministic_and_reports_its_logprobs(on_device):
    engine = HFEngine(on_device)
    prompt_ids = on_device.chat_ids(heldout_problem(0).prompt)

    def draw():
        generator = torch.Generator().manual_seed(7)
        return engine.generate(prompt_ids, 8, _config(on_device), generator=generator)

    first, second = draw(), draw()
    assert [s.token_ids for s in first] == [s.token_ids for s in second]
    attempts = [s.token_ids for s in first]
    with torch.no_grad():
        logits, mask = attempt_logits(on_device.model, [prompt_ids] * 8, attempts)
    scored = logits.float().log_softmax(-1).gather(-1, _padded(attempts, logits.device)[..., None])
    reported = _padded([s.logprobs for s in first], logits.device, torch.float32)
    assert torch.allclose(scored[..., 0][mask], reported[mask], atol=2e-4)


def _padded(rows, device, dtype=torch.long):
    out = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out.to(device)


def test_sdpo_session_updates_the_adapter_and_leaves_the_base_untouched(on_device, sandbox):
    base_before = {n: p.detach().clone() for n, p in on_device.model.named_parameters()}
    runtime = Runtime(HFEngine(on_device), sandbox)
    hard = load_hard_set()["problems"][0]["index"]
    strategy = make_strategy("sdpo", heldout_problem(hard), {"num_generations": 8}, runtime, seed=0)
    records = []

    async def keep(record):
        records.append(record)

    try:
        asyncio.run(run_session(strategy, Budget(24), on_step=keep))
        lora = strategy.adapter.student_params()
        assert all(p.device.type == torch.device(DEVICE).type for p in lora)
    finally:
        model = strategy.adapter.close()
    trained = [r for r in records if r.metrics]
    assert trained, "no failed batch: the session was solved before any update"
    assert all(r.metrics["grad_norm"] > 0 for r in trained)
    assert all(set(r.phase_s) >= {"generate", "judge", "teacher", "train"} for r in trained)
    for name, param in model.named_parameters():
        assert torch.equal(param, base_before[name]), name


def test_bf16_update_is_finite():
    loaded = load_model(device=DEVICE, dtype="bfloat16")
    params = SDPOParams()
    adapter = SessionAdapter(loaded.model, params, seed=0)
    try:
        prompt_ids = loaded.chat_ids(heldout_problem(0).prompt)
        samples = HFEngine(loaded).generate(
            prompt_ids,
            4,
            _config(loaded),
            generator=torch.Generator().manual_seed(0),
            adapter=adapter,
        )
        batch = DistillBatch(
            student_contexts=[prompt_ids] * 4,
            teacher_contexts=[loaded.chat_ids(heldout_problem(0).prompt + "\nfeedback")] * 4,
            attempts=[s.token_ids for s in samples],
            sampler_logprobs=[s.logprobs for s in samples],
        )
        metrics = distill(
            adapter,
            make_optimizer(adapter, params),
            batch,
            teacher_hidden(adapter, batch),
            params,
        )
    finally:
        adapter.close()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert metrics["grad_norm"] > 0
