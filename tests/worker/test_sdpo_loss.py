"""Hand-computed checks of the SDPO distillation loss (worker/sdpo_loss.py).

Every expected value below is a closed form worked out on paper from the probabilities in the test,
never by calling the code under test. The tensors are float64, so tolerances can be tight.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from worker.sdpo_loss import (
    DistillSettings,
    SampledTokens,
    append_tail,
    distillation_loss,
    generalized_jsd,
    importance_ratio,
    importance_weights,
    topk_logprobs,
)

LN = math.log
F64 = torch.float64

# Two positions, V = 3. Student p, teacher q.
P_A, Q_A = [1 / 2, 1 / 4, 1 / 4], [1 / 8, 5 / 8, 1 / 4]
P_B, Q_B = [1 / 3, 1 / 3, 1 / 3], [1 / 2, 1 / 4, 1 / 4]

# alpha = 1, KL(p || q) = sum p ln(p/q).  A: p/q = (4, 2/5, 1).  B: p/q = (2/3, 4/3, 4/3).
REVERSE = (LN(4) / 2 + LN(2 / 5) / 4, LN(32 / 27) / 3)  # (0.464074, 0.056633)
# alpha = 0, KL(q || p).  A: q/p = (1/4, 5/2, 1).  B: q/p = (3/2, 3/4, 3/4).
FORWARD = (LN(1 / 4) / 8 + 5 * LN(5 / 2) / 8, LN(9 / 8) / 2)  # (0.399395, 0.058892)
# alpha = 1/2, m = (p + q)/2.  A: m = (5/16, 7/16, 1/4).  B: m = (5/12, 7/24, 7/24).
JSD_HALF = (
    (LN(8 / 5) / 2 + LN(4 / 7) / 4) / 2 + (LN(2 / 5) / 8 + 5 * LN(10 / 7) / 8) / 2,
    (LN(4 / 5) / 3 + 2 * LN(8 / 7) / 3) / 2 + (LN(6 / 5) / 2 + LN(6 / 7) / 2) / 2,
)  # (0.101742, 0.014363)
# alpha = 1/4, m = 3/4 p + 1/4 q, D = 3/4 KL(p || m) + 1/4 KL(q || m).
# A: m = (13/32, 11/32, 8/32).  B: m = (3/8, 5/16, 5/16).
JSD_QUARTER = (
    3 / 4 * (LN(16 / 13) / 2 + LN(8 / 11) / 4) + 1 / 4 * (LN(4 / 13) / 8 + 5 * LN(20 / 11) / 8),
    3 / 4 * (LN(8 / 9) / 3 + 2 * LN(16 / 15) / 3) + 1 / 4 * (LN(4 / 3) / 2 + LN(4 / 5) / 2),
)  # (0.074734, 0.010891)

FULL_VOCAB = DistillSettings(distillation_topk=None, distillation_is_clip=None)


def logits_of(*positions: list[float]) -> torch.Tensor:
    """(1, T, V) logits whose softmax is exactly the given probabilities."""
    return torch.tensor([positions], dtype=F64).log()


def full_vocab(alpha: float) -> DistillSettings:
    return DistillSettings(distillation_alpha=alpha, distillation_topk=None)


def ones_mask(batch: int, time: int) -> torch.Tensor:
    return torch.ones(batch, time, dtype=torch.bool)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [(1.0, REVERSE), (0.0, FORWARD), (0.5, JSD_HALF), (0.25, JSD_QUARTER)],
    ids=["reverse_kl", "forward_kl", "jsd", "generalized_jsd_quarter"],
)
def test_divergence_on_two_positions(alpha: float, expected: tuple[float, float]) -> None:
    result = distillation_loss(
        logits_of(P_A, P_B), logits_of(Q_A, Q_B), ones_mask(1, 2), settings=full_vocab(alpha)
    )
    assert_close(result.per_token, torch.tensor([expected], dtype=F64))
    assert_close(result.loss, torch.tensor(sum(expected) / 2, dtype=F64))
    assert_close(result.mean_divergence, torch.tensor(sum(expected) / 2, dtype=F64))
    assert result.mean_importance_ratio is None


def test_generalized_jsd_weights_the_student_side_by_one_minus_alpha() -> None:
    student, teacher = torch.tensor(P_A, dtype=F64).log(), torch.tensor(Q_A, dtype=F64).log()
    assert_close(
        generalized_jsd(student, teacher, alpha=0.25), torch.tensor(JSD_QUARTER[0], dtype=F64)
    )
    # Swapping the roles is the same as alpha -> 1 - alpha.
    assert_close(
        generalized_jsd(teacher, student, alpha=0.75), torch.tensor(JSD_QUARTER[0], dtype=F64)
    )


# V = 4, top-2 of the student = tokens 0 and 1. The teacher's own top-2 would be tokens 2 and 0.
P_TOPK, Q_TOPK = [1 / 2, 1 / 4, 1 / 8, 1 / 8], [1 / 4, 1 / 4, 3 / 8, 1 / 8]


def test_topk_logprobs_with_tail_and_renormalised() -> None:
    student, teacher = logits_of(P_TOPK), logits_of(Q_TOPK)  # already log-probs
    indices = torch.tensor([[[0, 1]]])
    # Tail: 1 - 1/2 - 1/4 = 1/4 for the student, 1 - 1/4 - 1/4 = 1/2 for the teacher.
    assert_close(topk_logprobs(student, indices, add_tail=True), logits_of([1 / 2, 1 / 4, 1 / 4]))
    assert_close(topk_logprobs(teacher, indices, add_tail=True), logits_of([1 / 4, 1 / 4, 1 / 2]))
    # Renormalised over the top-2: (1/2, 1/4) / (3/4) and (1/4, 1/4) / (1/2).
    assert_close(topk_logprobs(student, indices, add_tail=False), logits_of([2 / 3, 1 / 3]))
    assert_close(topk_logprobs(teacher, indices, add_tail=False), logits_of([1 / 2, 1 / 2]))


def test_append_tail_stays_finite_when_the_topk_holds_all_the_mass() -> None:
    tail = append_tail(logits_of([1 / 2, 1 / 2]))[..., -1]
    assert torch.isfinite(tail).all()
    assert tail.item() < LN(1e-6)


@pytest.mark.parametrize(
    ("add_tail", "expected"),
    [
        # p' = (1/2, 1/4, 1/4), q' = (1/4, 1/4, 1/2): KL = 1/2 ln 2 + 0 + 1/4 ln(1/2).
        (True, LN(2) / 4),
        # p'' = (2/3, 1/3), q'' = (1/2, 1/2).
        (False, 2 / 3 * LN(4 / 3) + 1 / 3 * LN(2 / 3)),
    ],
    ids=["tail", "renormalised"],
)
def test_topk_loss_on_the_students_support(add_tail: bool, expected: float) -> None:
    settings = DistillSettings(distillation_topk=2, distillation_add_tail=add_tail)
    result = distillation_loss(
        logits_of(P_TOPK), logits_of(Q_TOPK), ones_mask(1, 1), settings=settings
    )
    assert_close(result.loss, torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("topk", [4, 20])
def test_topk_at_least_vocab_is_the_full_vocabulary(topk: int) -> None:
    settings = DistillSettings(distillation_topk=topk)
    result = distillation_loss(
        logits_of(P_TOPK), logits_of(Q_TOPK), ones_mask(1, 1), settings=settings
    )
    # p/q = (2, 1, 1/3, 1).
    assert_close(result.loss, torch.tensor(LN(2) / 2 + LN(1 / 3) / 8, dtype=F64))


def test_mask_excludes_padding() -> None:
    far = ([0.98, 0.01, 0.01], [0.01, 0.01, 0.98])  # a large divergence, on a padding position
    student = torch.cat([logits_of(P_A, P_B), logits_of(P_B, far[0])])  # (2, 2, 3)
    teacher = torch.cat([logits_of(Q_A, Q_B), logits_of(Q_B, far[1])])
    for mask in (
        torch.tensor([[True, True], [True, False]]),
        torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
    ):
        result = distillation_loss(student, teacher, mask, settings=full_vocab(1.0))
        expected = (REVERSE[0] + REVERSE[1] + REVERSE[1]) / 3
        assert_close(result.loss, torch.tensor(expected, dtype=F64))
        assert_close(
            result.per_token, torch.tensor([[REVERSE[0], REVERSE[1]], [REVERSE[1], 0.0]], dtype=F64)
        )


def test_all_padding_gives_zero_loss_and_zero_gradient() -> None:
    student = logits_of(P_A, P_B).requires_grad_()
    result = distillation_loss(
        student, logits_of(Q_A, Q_B), torch.zeros(1, 2, dtype=torch.bool), settings=FULL_VOCAB
    )
    result.loss.backward()
    assert result.loss.item() == 0.0
    assert_close(student.grad, torch.zeros_like(student))


def sampled_at_token_zero(*sampler_probs: float) -> SampledTokens:
    """Attempt tokens all 0, with the given sampler probabilities for them."""
    count = len(sampler_probs)
    return SampledTokens(
        token_ids=torch.zeros(1, count, dtype=torch.long),
        sampler_logprobs=torch.tensor([sampler_probs], dtype=F64).log(),
    )


def test_importance_ratio_above_the_clip_is_clipped_and_below_is_unchanged() -> None:
    # Student probabilities of token 0: 1/2 at A, 1/3 at B. Sampler: 1/8 and 2/3.
    # Ratios (1/2)/(1/8) = 4 -> clipped to 2, and (1/3)/(2/3) = 1/2 -> unchanged.
    sampled = sampled_at_token_zero(1 / 8, 2 / 3)
    settings = DistillSettings(distillation_topk=None, distillation_is_clip=2.0)
    result = distillation_loss(
        logits_of(P_A, P_B),
        logits_of(Q_A, Q_B),
        ones_mask(1, 2),
        settings=settings,
        sampled=sampled,
    )
    assert_close(result.loss, torch.tensor((2 * REVERSE[0] + REVERSE[1] / 2) / 2, dtype=F64))
    assert_close(result.per_token, torch.tensor([REVERSE], dtype=F64))  # unweighted
    assert_close(result.mean_importance_ratio, torch.tensor(2.25, dtype=F64))
    assert_close(result.max_importance_ratio, torch.tensor(4.0, dtype=F64))
    assert result.clipped_fraction.item() == 0.5


@pytest.mark.parametrize("is_clip", [None, 2.0])
def test_no_correction_without_clip_or_sampler(is_clip: float | None) -> None:
    settings = DistillSettings(distillation_topk=None, distillation_is_clip=is_clip)
    sampled = sampled_at_token_zero(1 / 8, 2 / 3) if is_clip is None else None
    result = distillation_loss(
        logits_of(P_A, P_B),
        logits_of(Q_A, Q_B),
        ones_mask(1, 2),
        settings=settings,
        sampled=sampled,
    )
    assert_close(result.loss, torch.tensor(sum(REVERSE) / 2, dtype=F64))
    assert result.mean_importance_ratio is None
    assert result.clipped_fraction is None


def test_importance_weights_and_the_log_ratio_bound() -> None:
    student = torch.tensor([[LN(1 / 2), LN(1 / 3), 0.0]], dtype=F64)
    sampler = torch.tensor([[LN(1 / 8), LN(2 / 3), -30.0]], dtype=F64)
    # Ratios 4, 1/2 and e^30, whose log is bounded to 20.
    assert_close(
        importance_ratio(student, sampler), torch.tensor([[4.0, 0.5, math.exp(20)]], dtype=F64)
    )
    assert_close(
        importance_weights(student, sampler, is_clip=2.0),
        torch.tensor([[2.0, 0.5, 2.0]], dtype=F64),
    )


# d KL(p || q) / d z_j = p_j (ln(p_j / q_j) - KL) for student logits z. At position A:
# ln(p/q) = (ln 4, ln(2/5), 0), KL = REVERSE[0].
GRAD_A = [P_A[0] * (LN(4) - REVERSE[0]), P_A[1] * (LN(2 / 5) - REVERSE[0]), -P_A[2] * REVERSE[0]]


def test_gradient_reaches_only_the_student() -> None:
    student = logits_of(P_A).requires_grad_()
    teacher = logits_of(Q_A).requires_grad_()
    distillation_loss(student, teacher, ones_mask(1, 1), settings=FULL_VOCAB).loss.backward()
    assert teacher.grad is None
    assert_close(student.grad, torch.tensor([[GRAD_A]], dtype=F64))


def test_importance_weight_scales_the_gradient_but_is_not_differentiated() -> None:
    # Ratio (1/2) / 1 = 1/2, below the clip: a differentiated ratio would add D * d(ratio)/dz.
    student = logits_of(P_A).requires_grad_()
    settings = DistillSettings(distillation_topk=None, distillation_is_clip=2.0)
    result = distillation_loss(
        student,
        logits_of(Q_A),
        ones_mask(1, 1),
        settings=settings,
        sampled=sampled_at_token_zero(1.0),
    )
    result.loss.backward()
    assert_close(student.grad, torch.tensor([[[g / 2 for g in GRAD_A]]], dtype=F64))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("topk", "add_tail"), [(None, True), (2, True), (2, False)])
def test_identical_student_and_teacher_give_zero_loss(
    alpha: float, topk: int | None, add_tail: bool
) -> None:
    logits = torch.randn(2, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    settings = DistillSettings(
        distillation_alpha=alpha, distillation_topk=topk, distillation_add_tail=add_tail
    )
    result = distillation_loss(logits, logits.clone(), ones_mask(2, 3), settings=settings)
    assert_close(result.loss, torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("alpha", "expected"), [(1.0, REVERSE[0]), (0.0, FORWARD[0]), (0.5, JSD_HALF[0])]
)
def test_masked_vocabulary_entry_counts_as_zero_probability(alpha: float, expected: float) -> None:
    # Position A with a fourth token that both models rule out.
    student = torch.tensor([[[LN(1 / 2), LN(1 / 4), LN(1 / 4), -math.inf]]], dtype=F64)
    teacher = torch.tensor([[[LN(1 / 8), LN(5 / 8), LN(1 / 4), -math.inf]]], dtype=F64)
    student.requires_grad_()
    result = distillation_loss(student, teacher, ones_mask(1, 1), settings=full_vocab(alpha))
    result.loss.backward()
    assert_close(result.loss, torch.tensor(expected, dtype=F64))
    assert torch.isfinite(student.grad).all()


def test_low_precision_logits_are_scored_in_float32() -> None:
    student = logits_of(P_A).to(torch.bfloat16)
    result = distillation_loss(student, student.clone(), ones_mask(1, 1), settings=FULL_VOCAB)
    assert result.loss.dtype == torch.float32


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("distillation_alpha", 1.3, r"distillation_alpha must be in \[0, 1\], got 1.3"),
        ("distillation_alpha", -0.1, r"distillation_alpha must be in \[0, 1\], got -0.1"),
        ("distillation_alpha", math.nan, r"distillation_alpha must be in \[0, 1\], got nan"),
        ("distillation_topk", 0, "distillation_topk must be a positive integer or None, got 0"),
        ("distillation_topk", 2.5, "distillation_topk must be a positive integer or None, got 2.5"),
        (
            "distillation_topk",
            True,
            "distillation_topk must be a positive integer or None, got True",
        ),
        ("distillation_add_tail", "yes", "distillation_add_tail must be a bool, got 'yes'"),
        ("distillation_is_clip", 0.0, "distillation_is_clip must be > 0 or None, got 0.0"),
        ("distillation_is_clip", -1.0, "distillation_is_clip must be > 0 or None, got -1.0"),
    ],
)
def test_settings_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistillSettings(**{field: value})


def test_helper_validation() -> None:
    log_p = torch.tensor(P_A, dtype=F64).log()
    with pytest.raises(ValueError, match=r"distillation_alpha must be in \[0, 1\], got 2"):
        generalized_jsd(log_p, log_p, alpha=2)
    with pytest.raises(ValueError, match="distillation_is_clip must be > 0 or None, got 0"):
        importance_weights(log_p, log_p, is_clip=0)


def test_shape_validation() -> None:
    logits, mask = torch.zeros(1, 2, 3), ones_mask(1, 2)
    with pytest.raises(ValueError, match=r"student_logits must be \(B, T, V\), got shape \(2, 3\)"):
        distillation_loss(logits[0], logits[0], mask)
    with pytest.raises(ValueError, match="teacher_logits must have the student's shape"):
        distillation_loss(logits, torch.zeros(1, 2, 4), mask)
    with pytest.raises(ValueError, match=r"mask must be \(B, T\) = \(1, 2\), got \(1, 3\)"):
        distillation_loss(logits, logits, ones_mask(1, 3))
    bad = SampledTokens(
        token_ids=torch.zeros(1, 2, dtype=torch.long), sampler_logprobs=torch.zeros(2)
    )
    with pytest.raises(ValueError, match=r"sampled.sampler_logprobs must be \(B, T\)"):
        distillation_loss(logits, logits, mask, sampled=bad)
