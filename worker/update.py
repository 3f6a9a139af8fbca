"""The adapter update: distil the teacher's distributions into the student LoRA.

One batch of failed attempts gives `num_iterations` AdamW steps on the student's LoRA weights
(gradient-norm clipped), each followed by the EMA teacher update. The teacher's logits are
computed once per batch, before the first step: with an EMA rate of ~0.01 the teacher barely
moves within a batch, and it saves a forward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdpo.params import SDPOParams

from .adapter import SessionAdapter
from .scoring import attempt_logits
from .sdpo_loss import DistillSettings, SampledTokens, distillation_loss


@dataclass(frozen=True)
class DistillBatch:
    """Failed attempts with the student's and the teacher's contexts."""

    student_contexts: list[list[int]]
    teacher_contexts: list[list[int]]
    attempts: list[list[int]]
    sampler_logprobs: list[list[float]]


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
def teacher_logits(adapter: SessionAdapter, batch: DistillBatch, temperature: float):
    """(B, T, V) teacher logits over the attempts' tokens, temperature-scaled."""
    with adapter.teacher():
        logits, _ = attempt_logits(adapter.model, batch.teacher_contexts, batch.attempts)
    return logits / temperature


def _sampled(batch: DistillBatch, like: torch.Tensor) -> SampledTokens:
    """The sampled ids and their sampler log-probs, padded to `like`'s (B, T), on its device."""
    shape = like.shape[:2]
    ids = torch.zeros(shape, dtype=torch.long)
    logprobs = torch.zeros(shape)
    for i, (a, lp) in enumerate(zip(batch.attempts, batch.sampler_logprobs, strict=True)):
        ids[i, : len(a)], logprobs[i, : len(lp)] = torch.tensor(a), torch.tensor(lp)
    return SampledTokens(token_ids=ids.to(like.device), sampler_logprobs=logprobs.to(like.device))


def distill(
    adapter: SessionAdapter,
    optimizer: torch.optim.Optimizer,
    batch: DistillBatch,
    teacher: torch.Tensor,
    params: SDPOParams,
) -> dict[str, float]:
    """`num_iterations` optimizer steps towards the teacher; returns the step's metrics."""
    settings = distill_settings(params)
    sampled = _sampled(batch, teacher)
    losses, divergences, grad_norms = [], [], []
    for _ in range(params.num_iterations):
        student, mask = attempt_logits(adapter.model, batch.student_contexts, batch.attempts)
        out = distillation_loss(
            student / params.temperature, teacher, mask, settings=settings, sampled=sampled
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(adapter.student_params(), params.max_grad_norm)
        optimizer.step()
        adapter.update_teacher(params.teacher_update_rate)
        losses.append(float(out.loss.detach()))
        divergences.append(float(out.mean_divergence))
        grad_norms.append(float(norm))
    return {
        "loss": sum(losses) / len(losses),
        "mean_divergence": divergences[0],
        "final_divergence": divergences[-1],
        "grad_norm": max(grad_norms),
    }
