"""The adapter update: the chunked loss equals the full-vocabulary one, and its memory stays
bounded where the full one does not (a random Llama with a 150k vocabulary)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sdpo.params import SDPOParams
from sdpo.settings import get_settings
from worker.adapter import SessionAdapter
from worker.scoring import attempt_hidden, attempt_logits
from worker.sdpo_loss import SampledTokens, distillation_loss
from worker.update import (
    DistillBatch,
    LossSetup,
    chunked_loss,
    distill,
    distill_settings,
    make_optimizer,
    row_groups,
    teacher_hidden,
)


def _batch() -> DistillBatch:
    prompt = [4, 5, 6, 7]
    attempts = [[9, 10, 11], [12, 13, 14, 15, 16], [17]]
    return DistillBatch(
        student_contexts=[prompt] * 3,
        teacher_contexts=[prompt + [20, 21], prompt + [22], prompt + [23, 24, 25]],
        attempts=attempts,
        sampler_logprobs=[[-1.0] * len(a) for a in attempts],
    )


def _grads(adapter: SessionAdapter) -> list[torch.Tensor]:
    return [p.grad.clone() for p in adapter.student_params()]


def test_chunked_loss_matches_the_full_vocabulary_loss_and_its_gradients(tiny):
    params = SDPOParams(learning_rate=1e-2)
    adapter = SessionAdapter(tiny.model, params, seed=0)
    with torch.no_grad():  # a student that differs from the teacher
        for p in adapter.student_params():
            p.add_(0.05 * torch.randn_like(p))
    batch, settings = _batch(), distill_settings(params)
    try:
        with torch.no_grad(), adapter.teacher():
            teacher_full, _ = attempt_logits(adapter.model, batch.teacher_contexts, batch.attempts)
            teacher = attempt_hidden(adapter.model, batch.teacher_contexts, batch.attempts).hidden
        student_full, mask = attempt_logits(adapter.model, batch.student_contexts, batch.attempts)
        padded_ids = torch.zeros(mask.shape, dtype=torch.long)
        padded_ids[mask] = batch.sampled(torch.device("cpu")).token_ids
        sampled = SampledTokens(padded_ids, torch.full(mask.shape, -1.0))
        full = distillation_loss(
            student_full, teacher_full, mask, settings=settings, sampled=sampled
        )
        full.loss.backward()
        want = _grads(adapter)
        for p in adapter.student_params():
            p.grad = None

        student = attempt_hidden(adapter.model, batch.student_contexts, batch.attempts).hidden
        setup = LossSetup(adapter.model, settings, 1.0, chunk_tokens=3)
        loss, metrics = chunked_loss(setup, student, teacher, batch.sampled(student.device))
        loss.backward()
        torch.testing.assert_close(loss, full.loss)
        torch.testing.assert_close(
            torch.tensor(metrics["mean_divergence"]), full.mean_divergence.float()
        )
        for got, expected in zip(_grads(adapter), want, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
        assert any(float(g.abs().sum()) > 0 for g in want)
    finally:
        adapter.close()


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from sdpo.params import SDPOParams
    from worker.adapter import SessionAdapter
    from worker.scoring import attempt_hidden, attempt_logits
    from worker.sdpo_loss import distillation_loss
    from worker.update import LossSetup, chunk_size, chunked_loss, distill_settings
    from worker.update import DistillBatch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=150_000, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=4096, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    params = SDPOParams()
    adapter = SessionAdapter(model, params, seed=0)
    attempts = [torch.randint(0, 150_000, (300,)).tolist() for _ in range(2)]
    batch = DistillBatch([[1, 2, 3]] * 2, [[1, 2, 3, 4]] * 2, attempts,
                         [[-1.0] * 300] * 2)
    settings = distill_settings(params)
    def status(field):  # kB lines of /proc/self/status
        line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    # This process's own high-water mark (getrusage's ru_maxrss would carry over the parent's
    # across exec): reset it to the current RSS, then read it after the update.
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    if sys.argv[1] == "naive":
        with torch.no_grad(), adapter.teacher():
            teacher, _ = attempt_logits(adapter.model, batch.teacher_contexts, attempts)
        student, mask = attempt_logits(adapter.model, batch.student_contexts, attempts)
        distillation_loss(student, teacher, mask, settings=settings).loss.backward()
    else:
        with torch.no_grad(), adapter.teacher():
            teacher = attempt_hidden(adapter.model, batch.teacher_contexts, attempts).hidden
        student = attempt_hidden(adapter.model, batch.student_contexts, attempts).hidden
        setup = LossSetup(adapter.model, settings, 1.0, chunk_size(config.vocab_size))
        chunked_loss(setup, student, teacher, batch.sampled(student.device))[0].backward()
    print(json.dumps({"peak_growth": status("VmHWM") - before}))
    """
)
BOUND_BYTES = 1 << 30  # one (2, 300, 150k) float32 tensor is 0.36 GB; the naive path holds many


def _peak_growth(path: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, path], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth"]


def test_scoring_memory_stays_bounded_at_a_150k_vocabulary():
    chunked, naive = _peak_growth("chunked"), _peak_growth("naive")
    assert chunked < BOUND_BYTES < naive, (chunked, naive)


def test_row_groups_hold_at_most_the_token_budget_and_cover_every_row():
    prompt = list(range(10))
    attempts = [[1] * 100, [1] * 50, [1] * 300, [1] * 20, [1] * 20]
    batch = DistillBatch([prompt] * 5, [prompt] * 5, attempts, [[0.0] * len(a) for a in attempts])
    widths = [len(a) + 1 for a in attempts]  # the context's own last token, then the attempt
    groups = row_groups(batch, tokens_per_pass=256)
    assert [list(g) for g in groups] == [[0, 1], [2], [3, 4]]
    for rows in groups:  # a single row may exceed the budget; it cannot be split
        assert len(rows) == 1 or len(rows) * max(widths[i] for i in rows) <= 256
    assert [list(g) for g in row_groups(batch, tokens_per_pass=10_000)] == [[0, 1, 2, 3, 4]]


def _step(tiny, tokens_per_pass: int, monkeypatch) -> tuple[dict, list[torch.Tensor]]:
    """One distill step from the same start; returns its metrics and the new student weights."""
    monkeypatch.setenv("SDPO_UPDATE_TOKENS_PER_PASS", str(tokens_per_pass))
    get_settings.cache_clear()
    params = SDPOParams(learning_rate=1e-2)
    adapter = SessionAdapter(tiny.model, params, seed=0)
    try:
        batch = _batch()
        teacher = teacher_hidden(adapter, batch)
        optimizer = make_optimizer(adapter, params)
        metrics = distill(adapter, optimizer, batch, teacher, params)
        return metrics, [p.detach().clone() for p in adapter.student_params()]
    finally:
        adapter.close()
        get_settings.cache_clear()


def test_an_update_split_into_row_groups_equals_the_whole_batch_update(tiny, monkeypatch):
    whole, whole_weights = _step(tiny, 10_000, monkeypatch)
    split, split_weights = _step(tiny, 6, monkeypatch)  # one row per pass
    assert (whole["update_passes"], split["update_passes"]) == (1, 3)
    for key in ("loss", "mean_divergence", "grad_norm"):
        assert split[key] == pytest.approx(whole[key], rel=1e-4), key
    moved = False
    for got, want in zip(split_weights, whole_weights, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    start = SessionAdapter(tiny.model, SDPOParams(learning_rate=1e-2), seed=0)
    try:
        moved = any(
            not torch.equal(p.detach(), w)
            for p, w in zip(start.student_params(), whole_weights, strict=True)
        )
    finally:
        start.close()
    assert moved  # the step did change the adapter, so equal weights mean equal gradients


GROUPED_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from sdpo.params import SDPOParams
    from worker.adapter import SessionAdapter
    from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=512,
                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    params = SDPOParams()
    adapter = SessionAdapter(model, params, seed=0)
    attempts = [torch.randint(0, 1000, (256,)).tolist() for _ in range(8)]
    prompt = list(range(1, 180))
    batch = DistillBatch([prompt] * 8, [prompt + [7] * 50] * 8, attempts, [[-1.0] * 256] * 8)
    teacher = teacher_hidden(adapter, batch)
    optimizer = make_optimizer(adapter, params)
    def status(field):  # kB lines of /proc/self/status
        line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's high-water mark
    before = status("VmRSS")
    metrics = distill(adapter, optimizer, batch, teacher, params)
    print(json.dumps({"peak_growth": status("VmHWM") - before,
                      "passes": metrics["update_passes"]}))
    """
)


def test_row_groups_bound_the_update_activation_memory():
    """8 attempts of 256 tokens: all at once, the student's activations grow with the batch;
    in passes of 257 tokens (one row each) they stay near one row's."""

    def run(tokens_per_pass: int) -> dict:
        env = {**os.environ, "SDPO_UPDATE_TOKENS_PER_PASS": str(tokens_per_pass)}
        argv = [sys.executable, "-c", GROUPED_PEAK_SCRIPT]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    whole, grouped = run(8 * 257), run(257)
    assert (whole["passes"], grouped["passes"]) == (1, 8)
    assert grouped["peak_growth"] * 3 < whole["peak_growth"], (grouped, whole)
