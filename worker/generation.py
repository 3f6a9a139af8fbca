"""Batched sampling with a KV cache: the `hf` engine's generation phase.

One prompt, `n` samples: the prompt is encoded once and its cache repeated n times, then all
samples decode together. Several prompts (several sessions' requests, `sample_many`) decode as
one batch the same way, left-padded to one length. A row leaves the batch as soon as it emits a
stop token, so short answers stop costing compute (the cache drops its rows too). Returns
token ids and the sampling log-probabilities (under the temperature-scaled, top-p-truncated
distribution that drew them), which the SDPO loss needs for its importance ratio.

Sampling is by inverse CDF from one uniform number per row and step, all n drawn every step
from the torch.Generator: a row's tokens depend only on its own logits and its own random
numbers, not on when the other rows finished. The same generator state gives the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from .kv_cache import new_cache


@dataclass(frozen=True)
class Sample:
    """One sampled completion. `token_ids` include the stop token when one was produced."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


@dataclass(frozen=True)
class SamplingConfig:
    stop_token_ids: tuple[int, ...]  # any of them ends an answer (and is kept as its last token)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if not self.stop_token_ids:
            raise ValueError("stop_token_ids: at least one stop token is needed")


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the smallest set whose probability reaches top_p."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first to cross
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sampling_logprobs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log-probs of the distribution that samples are drawn from. (B, V) -> (B, V) float32."""
    scaled = logits.float() / config.temperature
    if config.top_p < 1.0:
        scaled = _top_p_filter(scaled, config.top_p)
    return scaled.log_softmax(-1)


def draw(logprobs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative probability passes u * total.

    (B, V) log-probs and (B, 1) uniforms in [0, 1) -> (B, 1) token ids. The CDF is summed in
    float64, and u is scaled by its last value, so rounding never selects a zero-probability
    token."""
    cdf = logprobs.double().exp().cumsum(-1)  # (B, V)
    target = uniforms.double() * cdf[:, -1:]
    ids = torch.searchsorted(cdf, target, right=True)
    return ids.clamp(max=logprobs.shape[-1] - 1)


def sample(
    model: PreTrainedModel,
    prompt_ids: list[int],
    n: int,
    config: SamplingConfig,
    *,
    generator: torch.Generator,
) -> list[Sample]:
    """Draw n completions of one prompt from `model` (with whatever adapter is active)."""
    return sample_many(model, [Draws(prompt_ids, n, generator)], config)[0]


RowsKept = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class Draws:
    """n completions of one prompt, drawn with this generator's random numbers."""

    prompt_ids: list[int]
    n: int
    generator: torch.Generator


@dataclass
class _Prefilled:
    """A batch after its prompts ran: one row per sample, in request order."""

    cache: DynamicCache
    logits: torch.Tensor  # (N, V) predicting each row's first token
    owner: torch.Tensor  # (N,) on the host: the request of each row
    prompt_lengths: torch.Tensor  # (N,) each row's real prompt length
    mask: torch.Tensor | None  # (N, 1, 1, positions) additive, when prompts were padded
    longest: int  # the padded prompt length
    uniforms: torch.Tensor  # (N, 1) the first token's


@dataclass(frozen=True)
class LeftPadded:
    """Prompts of different lengths as one batch, padded on the left, so that every prompt's
    last token is in the last column."""

    ids: torch.Tensor  # (k, P)
    lengths: torch.Tensor  # (k,)
    real: torch.Tensor  # (k, P) the positions that hold a prompt token
    padded: bool  # some prompt is shorter than P

    @classmethod
    def of(cls, prompts: list[list[int]], device: torch.device) -> LeftPadded:
        longest = max(len(p) for p in prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts], device=device)
        real = torch.arange(longest, device=device) >= (longest - lengths)[:, None]
        return cls(ids, lengths, real, any(len(p) != longest for p in prompts))

    def inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The attention mask (causal, padding hidden) and the positions within each prompt."""
        longest = self.ids.shape[1]
        causal = torch.ones((longest, longest), dtype=torch.bool, device=self.ids.device).tril()
        return {
            "attention_mask": additive_mask(causal[None] & self.real[:, None, :], dtype),
            "position_ids": (self.real.long().cumsum(-1) - 1).clamp(min=0),
        }


def _prefill(
    model: PreTrainedModel, requests: list[Draws], limit: int, rows_kept: RowsKept | None
) -> _Prefilled:
    """Run the prompts (left-padded to one length if they differ, each once) and expand their
    cache to one row per sample. The first token's uniforms are drawn before, so that their
    copy to the device waits for nothing."""
    device, prompts = model.device, [r.prompt_ids for r in requests]
    uniforms = _uniforms(requests, [True] * len(requests), device)
    batch = LeftPadded.of(prompts, device)
    longest = batch.ids.shape[1]
    cache = new_cache(model.config, longest + limit)
    extra = batch.inputs(model.dtype) if batch.padded else {}
    # only the last position's logits: multi-turn prompts run to hundreds of tokens
    out = model(
        input_ids=batch.ids, past_key_values=cache, use_cache=True, logits_to_keep=1, **extra
    )
    counts = torch.tensor([r.n for r in requests])
    owner = torch.repeat_interleave(torch.arange(len(prompts)), counts)  # (N,)
    rows = owner.to(device)
    last = out.logits[:, -1, :]
    if len(prompts) == 1:  # exactly as a lone prompt always sampled
        cache.batch_repeat_interleave(requests[0].n)
        logits = last.expand(requests[0].n, -1)
    else:
        cache.batch_select_indices(rows)
        logits = last[rows]
    if rows_kept is not None:
        rows_kept(rows)
    mask = None
    if batch.padded:
        visible = torch.ones((owner.numel(), longest + limit), dtype=torch.bool, device=device)
        visible[:, :longest] = batch.real[rows]
        mask = additive_mask(visible[:, None, :], model.dtype)
    return _Prefilled(cache, logits, owner, batch.lengths[rows], mask, longest, uniforms)


@torch.no_grad()
def sample_many(
    model: PreTrainedModel,
    requests: list[Draws],
    config: SamplingConfig,
    *,
    rows_kept: RowsKept | None = None,
) -> list[list[Sample]]:
    """Every request's completions, decoded as one batch: several sessions' attempts in one
    forward pass per token.

    Prompts of different lengths are left-padded and masked. A request draws its uniforms
    exactly as it would alone, so its samples differ from a solo run's only where padding and
    batch shape change float rounding; prompts of one length (and one prompt) are not padded,
    and one request computes exactly as `sample` always has. `rows_kept(index)` is told each
    time the batch's rows become `index` of the previous ones (the prompts' rows expanded to
    their samples, finished rows dropped), for per-row state such as per-row adapters."""
    batch = _prefill(model, requests, config.max_new_tokens, rows_kept)
    decoded = _decode(model, batch, requests, config, rows_kept)
    starts = [0, *torch.tensor([r.n for r in requests]).cumsum(0).tolist()]
    return [decoded[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def _decode(
    model: PreTrainedModel,
    batch: _Prefilled,
    requests: list[Draws],
    config: SamplingConfig,
    rows_kept: RowsKept | None,
) -> list[Sample]:
    """The token loop after the prefill: one row per sample, in request order."""
    device, limit = model.device, config.max_new_tokens
    cache, logits, owner, uniforms = batch.cache, batch.logits, batch.owner, batch.uniforms
    total = owner.numel()
    stops = torch.tensor(config.stop_token_ids, device=device)
    tokens = torch.zeros((total, limit), dtype=torch.long, device=device)
    logprobs = torch.zeros((total, limit), device=device)
    lengths = torch.full((total,), limit, dtype=torch.long)
    finished = torch.zeros(total, dtype=torch.bool)
    active = torch.arange(total, device=device)  # original rows still decoding
    drawing = [True] * len(requests)  # a request draws uniforms while any of its rows decodes
    for t in range(limit):
        step_logprobs = sampling_logprobs(logits, config)  # (a, V)
        next_ids = draw(step_logprobs, uniforms[active])  # (a, 1)
        tokens[active, t] = next_ids[:, 0]
        logprobs[active, t] = step_logprobs.gather(1, next_ids)[:, 0]
        stopped = torch.isin(next_ids[:, 0], stops)
        if bool(stopped.any()):
            ended = active[stopped].cpu()
            lengths[ended], finished[ended] = t + 1, True
            keep = (~stopped).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            active, next_ids = active[keep], next_ids[keep]
            cache.batch_select_indices(keep)
            if rows_kept is not None:
                rows_kept(keep)
            still = set(owner[active.cpu()].tolist())
            drawing = [i in still for i in range(len(requests))]
        if t + 1 == limit:
            break
        # the next token's uniforms now, while the device is idle after the stop check: their
        # copy to the device then waits for nothing (one host sync per token, not two)
        uniforms = _uniforms(requests, drawing, device)
        seen = {}
        if batch.mask is not None:
            seen["attention_mask"] = batch.mask[active, ..., : batch.longest + t + 1]
        positions = (batch.prompt_lengths[active] + t)[:, None]
        out = model(
            input_ids=next_ids,
            past_key_values=cache,
            use_cache=True,
            position_ids=positions,
            **seen,
        )
        logits = out.logits[:, -1, :]
    tokens, logprobs = tokens.cpu(), logprobs.cpu()
    return [
        Sample(
            tokens[i, : lengths[i]].tolist(), logprobs[i, : lengths[i]].tolist(), bool(finished[i])
        )
        for i in range(total)
    ]


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) booleans -> the (B, 1, Q, K) mask attention adds to its scores: 0 where a query
    may look, the dtype's lowest value where not (not -inf: a padding query that sees nothing
    gets a harmless uniform row, never NaN). Passed as 4D, transformers uses it as it is instead
    of building a mask from a 2D one at every decoded token (half the cost of a toy step)."""
    lowest = torch.finfo(dtype).min
    zeros = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return zeros.masked_fill(~visible, lowest)[:, None]


def _uniforms(requests: list[Draws], drawing: list[bool], device: torch.device) -> torch.Tensor:
    """(N, 1) uniforms for one token: each request's n drawn from its generator while it
    decodes, zeros (never read) once all its rows have finished."""
    parts = [
        torch.rand((r.n, 1), generator=r.generator, device=r.generator.device)
        if still
        else torch.zeros((r.n, 1), device=r.generator.device)
        for r, still in zip(requests, drawing, strict=True)
    ]
    return torch.cat(parts).to(device)
