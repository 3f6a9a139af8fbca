"""Several sessions' SDPO updates in one pass: teacher scoring and the student's forward and
backward run once for the failed batches of every session then waiting, each row with its own
session's adapter; each session keeps its own optimizer, gradient clipping and EMA teacher.

The rows of all sessions go through the peft model with its adapters switched off, and per-row
hooks (worker/row_adapters.py) add each session's LoRA to its own rows: its teacher's factors
for scoring, its student's live parameters for training, so every session's gradients reach
its own adapter only. Each session's loss is its own token mean, and the passes' summed loss is
their sum, so a session's gradients are those of its update alone, up to float summation
order and the batch's padding. The rows are split into passes of at most
SDPO_UPDATE_TOKENS_PER_PASS tokens, as a lone update is.

A lone request runs the single-session update (`solo_update`), exactly as a worker with one
session always has. A model whose output layer is adapted cannot share passes (its logits are
computed on packed tokens, not per row) and updates alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby

import torch
from peft.tuners.lora import LoraLayer

from sdpo.params import SDPOParams
from sdpo.settings import get_settings

from .adapter import PEFT_PREFIX, Factors, SessionAdapter
from .row_adapters import RowAdapters
from .scoring import requests_hidden
from .sdpo_loss import SampledTokens
from .update import (
    DistillBatch,
    LossSetup,
    LossTerms,
    StepHistory,
    chunk_size,
    chunked_terms,
    distill,
    distill_settings,
    groups_of_widths,
    loss_metrics,
    optimizer_step,
    pass_widths,
    teacher_hidden,
)


@dataclass(frozen=True)
class UpdateRequest:
    """One session's update: its adapter and optimizer, and the failed batch to learn from."""

    adapter: SessionAdapter
    optimizer: torch.optim.Optimizer
    batch: DistillBatch
    params: SDPOParams


@dataclass(frozen=True)
class UpdateResult:
    metrics: dict[str, float]
    teacher_s: float  # the scoring pass it shared (or ran alone)
    train_s: float


class JointUpdateFailed(RuntimeError):
    """A joint update failed; `stepped` are the requests whose optimizer had already stepped
    (their sessions cannot be retried alone)."""

    def __init__(self, error: BaseException, stepped: set[int]) -> None:
        super().__init__(str(error))
        self.error, self.stepped = error, stepped


def solo_update(request: UpdateRequest) -> UpdateResult:
    """One session's update on its own: teacher scoring, then `distill`."""
    started = time.perf_counter()
    teacher = teacher_hidden(request.adapter, request.batch)
    scored = time.perf_counter()
    metrics = distill(request.adapter, request.optimizer, request.batch, teacher, request.params)
    return UpdateResult(metrics, scored - started, time.perf_counter() - scored)


def can_join(requests: list[UpdateRequest]) -> bool:
    """The requests can share passes: one adapter host, every adapter still open, and the
    output layer not adapted (its logits are computed on packed tokens, not per row)."""
    if len({id(r.adapter.host) for r in requests}) != 1:
        return False
    peft = requests[0].adapter.host.peft
    if peft is None or any(r.adapter.student not in peft.peft_config for r in requests):
        return False  # a closed adapter: each request runs (and fails) alone
    return not isinstance(peft.get_output_embeddings(), LoraLayer)


@dataclass(frozen=True)
class _Rows:
    """The rows of several requests, in request order."""

    owners: list[int]
    contexts: list[list[int]]
    attempts: list[list[int]]
    widths: list[int]  # each row's width in a pass that shares its request's head

    @classmethod
    def of(cls, batches: dict[int, DistillBatch], teacher: bool) -> _Rows:
        owners, contexts, attempts, widths = [], [], [], []
        for request, batch in batches.items():
            own = batch.teacher_contexts if teacher else batch.student_contexts
            owners += [request] * len(own)
            contexts += own
            attempts += batch.attempts
            widths += pass_widths(own, batch.attempts)
        return cls(owners, contexts, attempts, widths)

    def passes(self, tokens_per_pass: int) -> list[range]:
        return groups_of_widths(self.widths, tokens_per_pass)

    def hidden(
        self, model: torch.nn.Module, factors: list[Factors | None], rows: range, *, live: bool
    ) -> torch.Tensor:
        """(n, H) hidden states of these rows' attempt tokens, each with its request's LoRA."""
        adapters = RowAdapters(model, factors, prefix=PEFT_PREFIX, live=live)
        with adapters:
            return requests_hidden(
                model,
                self.owners[rows.start : rows.stop],
                self.contexts[rows.start : rows.stop],
                self.attempts[rows.start : rows.stop],
                adapters.rows_kept,
            )


def joint_update(requests: list[UpdateRequest]) -> list[UpdateResult]:
    """Every request's update in shared passes. Raises JointUpdateFailed."""
    peft = requests[0].adapter.host.peft
    tokens_per_pass = get_settings().update_tokens_per_pass
    started = time.perf_counter()
    stepped: set[int] = set()
    try:
        with peft.disable_adapter(), _trainable(requests):
            teachers = _teacher_pass(peft, requests, tokens_per_pass)
            scored = time.perf_counter()
            metrics = _train(peft, requests, teachers, tokens_per_pass, stepped)
    except Exception as error:
        raise JointUpdateFailed(error, stepped) from error
    ended = time.perf_counter()
    return [UpdateResult(m, scored - started, ended - scored) for m in metrics]


@contextmanager
def _trainable(requests: list[UpdateRequest]) -> Iterator[None]:
    """Every request's student parameters take gradients (peft lets only its active adapter's
    do so), as they were again afterwards."""
    params = [p for r in requests for p in r.adapter.student_params()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


@torch.no_grad()
def _teacher_pass(
    model: torch.nn.Module, requests: list[UpdateRequest], tokens_per_pass: int
) -> list[torch.Tensor]:
    """Each request's (N_i, H) teacher hidden states, scored together."""
    rows = _Rows.of({i: r.batch for i, r in enumerate(requests)}, teacher=True)
    factors = [r.adapter.teacher_factors() for r in requests]
    hidden = torch.cat(
        [rows.hidden(model, factors, g, live=False) for g in rows.passes(tokens_per_pass)]
    )
    sizes = [sum(len(a) for a in r.batch.attempts) for r in requests]
    return list(hidden.split(sizes))


@dataclass(frozen=True)
class _Target:
    """What one request's loss compares its student with."""

    teacher: torch.Tensor  # (N, H) teacher hidden states
    sampled: SampledTokens
    setup: LossSetup

    @property
    def tokens(self) -> int:
        return max(self.sampled.token_ids.numel(), 1)


@dataclass
class _Accumulated:
    """One request's loss terms over the passes of one iteration."""

    weighted: float = 0.0
    divergences: list[torch.Tensor] = field(default_factory=list)
    ratios: list[torch.Tensor] = field(default_factory=list)
    passes: int = 0

    def terms(self) -> LossTerms:
        return LossTerms(
            torch.tensor(self.weighted), torch.cat(self.divergences), torch.cat(self.ratios)
        )


def _train(
    model: torch.nn.Module,
    requests: list[UpdateRequest],
    teachers: list[torch.Tensor],
    tokens_per_pass: int,
    stepped: set[int],
) -> list[dict[str, float]]:
    """Each request's `num_iterations` optimizer steps, its forward and backward passes shared
    with the others'. Returns each request's metrics, as `distill` reports them."""
    vocab = model.config.vocab_size
    targets = [
        _Target(
            teacher,
            r.batch.sampled(teacher.device),
            LossSetup(model, distill_settings(r.params), r.params.temperature, chunk_size(vocab)),
        )
        for r, teacher in zip(requests, teachers, strict=True)
    ]
    histories = [StepHistory() for _ in requests]
    factors = [r.adapter.student_factors() for r in requests]
    for iteration in range(max(r.params.num_iterations for r in requests)):
        active = {i: r for i, r in enumerate(requests) if iteration < r.params.num_iterations}
        for request in active.values():
            request.optimizer.zero_grad(set_to_none=True)
        summed = _backward(model, active, targets, factors, tokens_per_pass)
        for i, accumulated in summed.items():
            request, target = active[i], targets[i]
            norm = optimizer_step(request.adapter, request.optimizer, request.params)
            stepped.add(i)
            divergence = loss_metrics(target.setup, accumulated.terms())["mean_divergence"]
            histories[i].add(accumulated.weighted / target.tokens, divergence, float(norm))
            if iteration == 0:
                histories[i].passes = accumulated.passes
    return [h.metrics() for h in histories]


def _backward(
    model: torch.nn.Module,
    active: dict[int, UpdateRequest],
    targets: list[_Target],
    factors: list[Factors],
    tokens_per_pass: int,
) -> dict[int, _Accumulated]:
    """Forward and backward passes over the active requests' student rows, each with its
    student's `factors`; each request's gradients are those of its own token-mean loss."""
    rows = _Rows.of({i: r.batch for i, r in active.items()}, teacher=False)
    adapters = [f if i in active else None for i, f in enumerate(factors)]  # hooks for these
    first_token, seen = [], dict.fromkeys(active, 0)  # each row's first token in its request
    for owner, attempt in zip(rows.owners, rows.attempts, strict=True):
        first_token.append(seen[owner])
        seen[owner] += len(attempt)
    summed = {i: _Accumulated() for i in active}
    for rows_of_pass in rows.passes(tokens_per_pass):
        hidden = rows.hidden(model, adapters, rows_of_pass, live=True)
        loss, at = hidden.new_zeros(()), 0
        for i, run in groupby(rows_of_pass, key=rows.owners.__getitem__):
            run = list(run)
            count = sum(len(rows.attempts[row]) for row in run)
            tokens = slice(first_token[run[0]], first_token[run[0]] + count)
            target = targets[i]
            part = SampledTokens(
                target.sampled.token_ids[tokens], target.sampled.sampler_logprobs[tokens]
            )
            terms = chunked_terms(
                target.setup, hidden[at : at + count], target.teacher[tokens], part
            )
            loss = loss + terms.weighted_sum / target.tokens
            acc = summed[i]
            acc.weighted += float(terms.weighted_sum.detach())
            acc.divergences.append(terms.divergence)
            acc.ratios.append(terms.ratio)
            acc.passes += 1
            at += count
        loss.backward()
    return summed
