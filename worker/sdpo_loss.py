"""The SDPO distillation loss, as pure torch functions (no model, no trainer state).

At each position t of the student's own attempt y, the same model scores two distributions:

    p_t = pi_theta(. | x, y_<t)                      student: receives the gradients
    q_t = pi_teacher(. | teacher_context, y_<t)      teacher: a constant (detached here)

Divergence D_t, by `distillation_alpha` = a (the convention of trl and of lasgroup/SDPO):

    a = 0        KL(q_t || p_t)                                     forward KL
    a = 1        KL(p_t || q_t)                                     reverse KL (SDPO's default)
    0 < a < 1    (1-a) KL(p_t || m_t) + a KL(q_t || m_t),  m_t = (1-a) p_t + a q_t

a = 0.5 is the ordinary Jensen-Shannon divergence. The mixture form goes to 0 at both ends, so the
endpoints are defined as the pure KLs, not reached as limits: D jumps at a = 0 and a = 1, exactly as
in trl.

Top-k (`distillation_topk` = k): per position, take the student's k most likely tokens (the choice
carries no gradient) and read both distributions there. With `distillation_add_tail`, a (k+1)-th
bucket holds the rest of each distribution, log(1 - sum of the top-k probabilities), computed as
log(-expm1(logsumexp)) with the log-mass clamped to at most -1e-7 so the tail stays finite. Without
it, both distributions are renormalised over the k tokens. k = None is the full vocabulary.

Importance correction (`distillation_is_clip` = c): the attempt was sampled by a policy that may lag
the trainer (several optimizer steps can reuse one batch). Each token's divergence is multiplied by
w_t = min(r_t, c), r_t = exp(log p_t(y_t) - log pi_sampler(y_t)), with the log-ratio clamped to
[-20, 20] before exp. The weight is detached and clipped only from above.

Reduction: the token mean over the whole batch, sum(mask * w * D) / max(sum(mask), 1).

Sources: huggingface/trl, trl/experimental/self_distillation/self_distillation_loss.py
(`_compute_divergence`, `_compute_topk_distillation_loss`, `_add_tail`,
`_apply_importance_sampling_clipping`, `_aggregate_loss`; the same helpers are in
trl/experimental/sdpo/loss_utils.py), and lasgroup/SDPO, verl/trainer/ppo/core_algos.py
(`compute_self_distillation_loss`, reduced with `loss_agg_mode="token-mean"`). trl's default
`loss_type="dapo"` reduces the same way.

Where we depart from them, and why:
* The paper writes the loss as a sum over the tokens of y. We average over
  the valid tokens, as both codebases do, so the step size does not grow with attempt length.
* Log-probabilities are computed in float32 at least (float64 stays float64). Log-probs in bf16 are
  too coarse for the KL between two nearly equal distributions.
* A -inf logit (a masked vocabulary entry) is a zero probability. Its log-prob is floored at the
  dtype's lowest finite value, so 0 * log 0 counts as 0 and the gradients stay finite.
* k >= V is the full vocabulary: no tail bucket remains.
* With no sampler log-probs, the importance correction is skipped, as in trl. lasgroup/SDPO raises
  instead. The returned ratio statistics are then None, so the skip shows up in the metrics.
* The caller divides the logits by the sampling temperature before calling us. trl's trainer does
  the same before its loss.
"""

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

LOG_RATIO_BOUND = 20.0  # exp(20) ~ 5e8: the importance ratio stays finite in float32
# The tail bucket keeps at least ~1e-7 of the mass, so its log stays finite.
MAX_CAPTURED_LOG_MASS = -1e-7


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation_alpha must be in [0, 1], got {alpha!r}")


def _check_is_clip(is_clip: float) -> None:
    if isinstance(is_clip, bool) or not isinstance(is_clip, int | float) or not is_clip > 0:
        raise ValueError(f"distillation_is_clip must be > 0 or None, got {is_clip!r}")


@dataclass(frozen=True)
class DistillSettings:
    """The loss's hyperparameters, named as in trl's SDPOConfig; validated on construction."""

    distillation_alpha: float = 1.0  # 0 forward KL, 1 reverse KL, in between generalized JSD
    distillation_topk: int | None = 20  # the student's top-k tokens; None = full vocabulary
    distillation_add_tail: bool = True  # tail bucket log(1 - sum p_topk); False = renormalise top-k
    distillation_is_clip: float | None = 2.0  # upper clip of the importance ratio; None disables

    def __post_init__(self) -> None:
        _check_alpha(self.distillation_alpha)
        topk = self.distillation_topk
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
            raise ValueError(f"distillation_topk must be a positive integer or None, got {topk!r}")
        if not isinstance(self.distillation_add_tail, bool):
            raise ValueError(
                f"distillation_add_tail must be a bool, got {self.distillation_add_tail!r}"
            )
        if self.distillation_is_clip is not None:
            _check_is_clip(self.distillation_is_clip)


DEFAULT_DISTILL_SETTINGS = DistillSettings()


@dataclass(frozen=True)
class SampledTokens:
    """The attempt tokens y, and their log-probs under the policy that sampled them."""

    token_ids: Tensor  # (B, T) int64
    sampler_logprobs: Tensor  # (B, T) log pi_sampler(y_t), recorded at sampling time


@dataclass(frozen=True)
class DistillLoss:
    """The loss to backpropagate, and detached per-token numbers for the step metrics."""

    loss: Tensor  # () differentiable with respect to the student logits only
    per_token: Tensor  # (B, T) D_t before importance weighting, 0 at padding; detached
    mean_divergence: Tensor  # () mean of D_t over the valid tokens; detached
    # Set only when the importance correction ran: the unclipped ratio r_t over the valid tokens.
    mean_importance_ratio: Tensor | None = None  # ()
    max_importance_ratio: Tensor | None = None  # ()
    # () share of the valid tokens with r_t > distillation_is_clip
    clipped_fraction: Tensor | None = None


def log_probs(logits: Tensor) -> Tensor:
    """log_softmax in float32 at least, with -inf floored to the lowest finite value."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(wide, dim=-1).clamp(min=torch.finfo(wide.dtype).min)


def kl_divergence(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) summed over the last dimension, from log-probabilities. (..., V) -> (...)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def generalized_jsd(student_logprobs: Tensor, teacher_logprobs: Tensor, *, alpha: float) -> Tensor:
    """D_t between student p and teacher q (see the module docstring). (..., V) -> (...)."""
    _check_alpha(alpha)
    if alpha == 0.0:
        return kl_divergence(teacher_logprobs, student_logprobs)
    if alpha == 1.0:
        return kl_divergence(student_logprobs, teacher_logprobs)
    mixture = torch.logaddexp(  # log m = log((1-a) p + a q)
        student_logprobs + math.log1p(-alpha), teacher_logprobs + math.log(alpha)
    )
    student_side = kl_divergence(student_logprobs, mixture)  # KL(p || m)
    teacher_side = kl_divergence(teacher_logprobs, mixture)  # KL(q || m)
    return (1.0 - alpha) * student_side + alpha * teacher_side


def append_tail(topk_logprobs: Tensor) -> Tensor:
    """Add one bucket, log(1 - sum of the top-k probabilities). (..., k) -> (..., k+1)."""
    captured = topk_logprobs.logsumexp(dim=-1, keepdim=True).clamp(max=MAX_CAPTURED_LOG_MASS)
    tail = torch.log(-torch.expm1(captured))  # log(1 - exp(captured)), accurate near captured = 0
    return torch.cat([topk_logprobs, tail], dim=-1)


def topk_logprobs(logprobs: Tensor, indices: Tensor, *, add_tail: bool) -> Tensor:
    """Full-vocabulary log-probs read at the top-k `indices`.

    (B, T, V) and (B, T, k) -> (B, T, k+1) with the tail bucket, or (B, T, k) renormalised.
    """
    picked = logprobs.gather(dim=-1, index=indices)  # (B, T, k)
    if add_tail:
        return append_tail(picked)
    return picked - picked.logsumexp(dim=-1, keepdim=True)


def token_logprobs(logprobs: Tensor, token_ids: Tensor) -> Tensor:
    """Log-prob of each sampled token. (B, T, V) and (B, T) -> (B, T)."""
    return logprobs.gather(dim=-1, index=token_ids.long().unsqueeze(-1)).squeeze(-1)


def importance_ratio(student_token_logprobs: Tensor, sampler_logprobs: Tensor) -> Tensor:
    """Unclipped r_t = p_t(y_t) / pi_sampler(y_t), detached. (B, T) -> (B, T)."""
    log_ratio = student_token_logprobs.detach() - sampler_logprobs.detach().to(
        student_token_logprobs.dtype
    )
    return log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).exp()


def importance_weights(
    student_token_logprobs: Tensor, sampler_logprobs: Tensor, *, is_clip: float
) -> Tensor:
    """w_t = min(r_t, is_clip), detached. Only the upper side is clipped. (B, T) -> (B, T)."""
    _check_is_clip(is_clip)
    return importance_ratio(student_token_logprobs, sampler_logprobs).clamp(max=is_clip)


@dataclass(frozen=True)
class TokenTerms:
    """Per-token parts of the loss, before any reduction (any leading shape, e.g. (B, T))."""

    divergence: Tensor  # D_t
    weighted: Tensor  # w_t * D_t, or D_t when the importance correction is off
    ratio: Tensor | None = None  # unclipped r_t, detached; None when the correction is off


def token_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    settings: DistillSettings = DEFAULT_DISTILL_SETTINGS,
    sampled: SampledTokens | None = None,
) -> TokenTerms:
    """D_t and w_t * D_t at every position. (..., V) logits, already divided by the sampling
    temperature; `sampled` holds (...)-shaped token ids and sampler log-probs."""
    student = log_probs(student_logits)  # (..., V)
    teacher = log_probs(teacher_logits.detach())  # (..., V): the teacher is a constant
    divergence = _divergence(student, teacher, settings)  # (...)
    is_clip = settings.distillation_is_clip
    if sampled is None or is_clip is None:
        return TokenTerms(divergence=divergence, weighted=divergence)
    ratio = importance_ratio(token_logprobs(student, sampled.token_ids), sampled.sampler_logprobs)
    return TokenTerms(divergence, divergence * ratio.clamp(max=is_clip), ratio)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    *,
    settings: DistillSettings = DEFAULT_DISTILL_SETTINGS,
    sampled: SampledTokens | None = None,
) -> DistillLoss:
    """The SDPO loss over a batch of attempts.

    student_logits, teacher_logits: (B, T, V), already divided by the sampling temperature; row t
    predicts y_t. mask: (B, T), true (or 1) on the tokens of y, false (or 0) on padding. sampled:
    the tokens and their sampler log-probs, for the importance correction.
    """
    _check_shapes(student_logits, teacher_logits, mask, sampled)
    terms = token_terms(student_logits, teacher_logits, settings=settings, sampled=sampled)
    valid = mask.to(torch.bool)  # (B, T)
    num_tokens = valid.sum().clamp(min=1)
    per_token = torch.where(valid, terms.divergence, 0.0).detach()
    loss = torch.where(valid, terms.weighted, 0.0).sum() / num_tokens
    result = DistillLoss(
        loss=loss, per_token=per_token, mean_divergence=per_token.sum() / num_tokens
    )
    if terms.ratio is None:
        return result
    ratio = torch.where(valid, terms.ratio, 0.0)  # ratios > 0, so 0 is neutral for the max
    return replace(
        result,
        mean_importance_ratio=ratio.sum() / num_tokens,
        max_importance_ratio=ratio.max(),
        clipped_fraction=(valid & (terms.ratio > settings.distillation_is_clip)).sum() / num_tokens,
    )


def _divergence(student: Tensor, teacher: Tensor, settings: DistillSettings) -> Tensor:
    """D_t on the full vocabulary or the student's top-k support. (B, T, V) x 2 -> (B, T)."""
    k = settings.distillation_topk
    if k is not None and k < student.shape[-1]:
        indices = student.detach().topk(k, dim=-1).indices  # (B, T, k), no gradient
        add_tail = settings.distillation_add_tail
        student = topk_logprobs(student, indices, add_tail=add_tail)
        teacher = topk_logprobs(teacher, indices, add_tail=add_tail)
    return generalized_jsd(student, teacher, alpha=settings.distillation_alpha)


def _check_shapes(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, sampled: SampledTokens | None
) -> None:
    if student_logits.dim() != 3:
        raise ValueError(
            f"student_logits must be (B, T, V), got shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)}"
        )
    batch_time = student_logits.shape[:2]
    if mask.shape != batch_time:
        raise ValueError(f"mask must be (B, T) = {tuple(batch_time)}, got {tuple(mask.shape)}")
    if sampled is None:
        return
    for name in ("token_ids", "sampler_logprobs"):
        shape = getattr(sampled, name).shape
        if shape != batch_time:
            raise ValueError(
                f"sampled.{name} must be (B, T) = {tuple(batch_time)}, got {tuple(shape)}"
            )
