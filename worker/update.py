"""The adapter update: distil the teacher's distributions into the student LoRA.

One batch of failed attempts gives `num_iterations` AdamW steps on the student's LoRA weights
(gradient-norm clipped), each followed by the EMA teacher update. The teacher is scored once
per batch, before the first step: with an EMA rate of ~0.01 it barely moves within a batch,
and it saves a forward pass per step.

Memory stays bounded twice over:

* By the vocabulary of one chunk, not of the batch: the teacher is kept as final hidden states
  (N, H), and the loss runs the output layer over `chunk_tokens` tokens at a time under
  activation checkpointing, so the backward pass recomputes each chunk's logits instead of
  holding (N, V) tensors. Only what the loss needs ever exists at full vocabulary width, for one
  chunk: the student's and teacher's log-probs, from which the top-k ids and the tail bucket
  are read.
* By `tokens_per_pass` tokens of activations, not by the batch: the student's forward pass
  keeps every layer's activations for the backward pass (about 2.3 MB per token for SmolLM2 in
  float32, so 8 attempts of 256 tokens held 4.7 GB). The rows are split into groups of at most
  `tokens_per_pass` tokens (padding included), and each group runs forward and backward on its
  own, adding its share of the token-mean loss to the gradients. Every token's loss term
  depends only on its own row, so the summed gradients are the whole batch's, up to float
  summation order. The cost is the shared prompt head, run once per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from sdpo.params import SDPOParams
from sdpo.settings import get_settings

from .adapter import SessionAdapter
from .scoring import attempt_hidden, common_prefix, output_logits
from .sdpo_loss import DistillSettings, SampledTokens, token_terms

# Logits per output-layer chunk: 16 MiB of float32 (27 tokens at a 150k vocabulary, 85 at 49k).
CHUNK_LOGIT_ELEMENTS = 4 * 2**20


@dataclass(frozen=True)
class DistillBatch:
    """Failed attempts with the student's and the teacher's contexts."""

    student_contexts: list[list[int]]
    teacher_contexts: list[list[int]]
    attempts: list[list[int]]
    sampler_logprobs: list[list[float]]
    feedback_truncated: int = 0  # teacher prompts whose feedback was cut to fit

    def sampled(self, device: torch.device) -> SampledTokens:
        """The attempts' tokens and sampler log-probs, packed (N,) in scoring order."""
        ids = [t for attempt in self.attempts for t in attempt]
        logprobs = [lp for row in self.sampler_logprobs for lp in row]
        return SampledTokens(
            token_ids=torch.tensor(ids, dtype=torch.long, device=device),
            sampler_logprobs=torch.tensor(logprobs, device=device),
        )


def make_optimizer(adapter: SessionAdapter, params: SDPOParams) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        adapter.student_params(), lr=params.learning_rate, weight_decay=params.weight_decay
    )


def distill_settings(params: SDPOParams) -> DistillSettings:
    return DistillSettings(
        distillation_alpha=params.distillation_alpha,
        distillation_topk=params.distillation_topk,
        distillation_add_tail=params.distillation_add_tail,
        distillation_is_clip=params.distillation_is_clip,
    )


@torch.no_grad()
def teacher_hidden(adapter: SessionAdapter, batch: DistillBatch) -> torch.Tensor:
    """(N, H) teacher hidden states at the attempts' tokens (scored once per batch)."""
    with adapter.teacher():
        return attempt_hidden(adapter.model, batch.teacher_contexts, batch.attempts).hidden


def chunk_size(vocab_size: int) -> int:
    return max(1, CHUNK_LOGIT_ELEMENTS // vocab_size)


@dataclass(frozen=True)
class LossSetup:
    """What the chunked loss computes with, besides the tensors."""

    model: torch.nn.Module
    settings: DistillSettings
    temperature: float
    chunk_tokens: int


def _chunk_terms(
    setup: LossSetup,
    student: torch.Tensor,
    teacher: torch.Tensor,
    token_ids: torch.Tensor,
    sampler_logprobs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c, H) hidden states -> the chunk's summed w*D, D_t (c,) and r_t (c,) (NaN: no IS)."""
    student_logits = output_logits(setup.model, student) / setup.temperature  # (c, V)
    teacher_logits = output_logits(setup.model, teacher) / setup.temperature  # (c, V)
    sampled = SampledTokens(token_ids=token_ids, sampler_logprobs=sampler_logprobs)
    terms = token_terms(student_logits, teacher_logits, settings=setup.settings, sampled=sampled)
    ratio = terms.ratio if terms.ratio is not None else torch.full_like(terms.divergence, torch.nan)
    return terms.weighted.sum(), terms.divergence.detach(), ratio


@dataclass(frozen=True)
class LossTerms:
    """Per-token terms of some tokens: the sum of w*D (differentiable), D_t and r_t."""

    weighted_sum: torch.Tensor
    divergence: torch.Tensor  # (n,)
    ratio: torch.Tensor  # (n,), NaN without importance sampling


def chunked_terms(
    setup: LossSetup, student: torch.Tensor, teacher: torch.Tensor, sampled: SampledTokens
) -> LossTerms:
    """The loss terms of (n, H) student and teacher hidden states, one output-layer chunk at a
    time."""
    n, step = student.shape[0], setup.chunk_tokens
    terms = partial(_chunk_terms, setup)
    total = student.new_zeros((), dtype=torch.float32)
    divergences, ratios = [], []
    for start in range(0, n, step):
        part = slice(start, start + step)
        ids, logprobs = sampled.token_ids[part], sampled.sampler_logprobs[part]
        if torch.is_grad_enabled():
            weighted, divergence, ratio = checkpoint(
                terms, student[part], teacher[part], ids, logprobs, use_reentrant=False
            )
        else:
            weighted, divergence, ratio = terms(student[part], teacher[part], ids, logprobs)
        total = total + weighted
        divergences.append(divergence)
        ratios.append(ratio)
    return LossTerms(total, torch.cat(divergences), torch.cat(ratios))


def chunked_loss(
    setup: LossSetup, student: torch.Tensor, teacher: torch.Tensor, sampled: SampledTokens
) -> tuple[torch.Tensor, dict[str, float]]:
    """The token-mean SDPO loss over (N, H) student and teacher hidden states, one output-layer
    chunk at a time. Equal to `sdpo_loss.distillation_loss` on the full logits."""
    terms = chunked_terms(setup, student, teacher, sampled)
    return terms.weighted_sum / max(student.shape[0], 1), loss_metrics(setup, terms)


def loss_metrics(setup: LossSetup, terms: LossTerms) -> dict[str, float]:
    divergence, ratio = terms.divergence, terms.ratio
    metrics = {"mean_divergence": float(divergence.mean())}
    if not bool(ratio.isnan().any()):
        clip = setup.settings.distillation_is_clip
        metrics |= {
            "mean_importance_ratio": float(ratio.mean()),
            "max_importance_ratio": float(ratio.max()),
            "clipped_fraction": float((ratio > clip).float().mean()),
        }
    return metrics


def pass_widths(contexts: list[list[int]], attempts: list[list[int]]) -> list[int]:
    """Each row's width in a scoring pass that shares the rows' common head: the rest of its
    context plus its attempt."""
    shared = common_prefix(contexts)
    return [len(c) - shared + len(a) for c, a in zip(contexts, attempts, strict=True)]


def groups_of_widths(widths: list[int], tokens_per_pass: int) -> list[range]:
    """Consecutive rows whose padded pass (rows x the widest row) holds at most
    `tokens_per_pass` tokens, at least one row each."""
    groups, start, widest = [], 0, 0
    for i, width in enumerate(widths):
        if i > start and (i - start + 1) * max(widest, width) > tokens_per_pass:
            groups.append(range(start, i))
            start, widest = i, 0
        widest = max(widest, width)
    groups.append(range(start, len(widths)))
    return groups


def row_groups(batch: DistillBatch, tokens_per_pass: int) -> list[range]:
    """The batch's student rows in passes of at most `tokens_per_pass` tokens."""
    widths = pass_widths(batch.student_contexts, batch.attempts)
    return groups_of_widths(widths, tokens_per_pass)


def _student_backward(
    setup: LossSetup,
    batch: DistillBatch,
    teacher: torch.Tensor,
    sampled: SampledTokens,
    groups: list[range],
) -> LossTerms:
    """One forward and backward pass per row group; gradients add up to the whole batch's
    token-mean loss. Returns the batch's terms (the weighted sum detached)."""
    offsets = [0]
    for attempt in batch.attempts:
        offsets.append(offsets[-1] + len(attempt))
    n = offsets[-1]
    total, divergences, ratios = 0.0, [], []
    for rows in groups:
        tokens = slice(offsets[rows.start], offsets[rows.stop])
        student = attempt_hidden(
            setup.model,
            batch.student_contexts[rows.start : rows.stop],
            batch.attempts[rows.start : rows.stop],
        ).hidden
        part = SampledTokens(sampled.token_ids[tokens], sampled.sampler_logprobs[tokens])
        terms = chunked_terms(setup, student, teacher[tokens], part)
        (terms.weighted_sum / max(n, 1)).backward()
        total += float(terms.weighted_sum.detach())
        divergences.append(terms.divergence)
        ratios.append(terms.ratio)
    return LossTerms(torch.tensor(total), torch.cat(divergences), torch.cat(ratios))


@dataclass
class StepHistory:
    """One update's optimizer steps, as the step record's metrics report them."""

    passes: int = 0  # student passes per optimizer step
    losses: list[float] = field(default_factory=list)
    divergences: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)

    def add(self, loss: float, divergence: float, grad_norm: float) -> None:
        self.losses.append(loss)
        self.divergences.append(divergence)
        self.grad_norms.append(grad_norm)

    def metrics(self) -> dict[str, float]:
        return {
            "loss": sum(self.losses) / len(self.losses),
            "mean_divergence": self.divergences[0],
            "final_divergence": self.divergences[-1],
            "grad_norm": max(self.grad_norms),
            "update_passes": self.passes,
        }


def optimizer_step(
    adapter: SessionAdapter, optimizer: torch.optim.Optimizer, params: SDPOParams
) -> torch.Tensor:
    """Clip the student's gradients, step, and move the EMA teacher; returns the gradient norm
    before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(adapter.student_params(), params.max_grad_norm)
    optimizer.step()
    adapter.update_teacher(params.teacher_update_rate)
    return norm


def distill(
    adapter: SessionAdapter,
    optimizer: torch.optim.Optimizer,
    batch: DistillBatch,
    teacher: torch.Tensor,
    params: SDPOParams,
) -> dict[str, float]:
    """`num_iterations` optimizer steps towards the teacher; returns the step's metrics. The
    student's passes hold at most SDPO_UPDATE_TOKENS_PER_PASS tokens each."""
    model = adapter.model
    sampled = batch.sampled(teacher.device)
    setup = LossSetup(
        model, distill_settings(params), params.temperature, chunk_size(model.config.vocab_size)
    )
    groups = row_groups(batch, get_settings().update_tokens_per_pass)
    n = max(sampled.token_ids.numel(), 1)
    history = StepHistory(passes=len(groups))
    for _ in range(params.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        terms = _student_backward(setup, batch, teacher, sampled, groups)
        loss, metrics = terms.weighted_sum / n, loss_metrics(setup, terms)
        norm = optimizer_step(adapter, optimizer, params)
        history.add(float(loss.detach()), metrics["mean_divergence"], float(norm))
    return history.metrics()
