"""Scoring attempts: the model's predictions at each token of an attempt, after a context.

Student and teacher are scored the same way; only the context differs (the problem alone, or
the problem plus feedback). Two things keep this cheap for real models:

* Shared prefix. The rows of a batch share a long head (every student row is the same problem;
  every teacher row starts with it). That head runs once, at batch 1, and its KV cache is
  repeated for the rows; only each row's rest runs per row. Under autograd the repeat sums the
  rows' gradients back into the one head, so training sees exactly the full rows' gradients.
* No (B, T, V) tensor. Scoring returns the final hidden states of the positions that predict
  attempt tokens, packed as (N, H) over the N real tokens (no padding). The output layer runs
  later, a chunk of tokens at a time (`output_logits`), so a 150k vocabulary never
  materialises for a whole batch.

Rows are right-padded: under causal attention a real token never sees the padding after it,
so no attention mask is needed. Rows of several sessions in one batch (`requests_hidden`, for
joint updates) share a head per session, each computed with that session's adapter; their
heads are left-padded, and a mask hides that padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from .generation import LeftPadded, additive_mask


@dataclass(frozen=True)
class ScoredTokens:
    """Final hidden states at the positions that predict attempt tokens, packed row by row."""

    hidden: torch.Tensor  # (N, H), N = total attempt tokens
    rows: torch.Tensor  # (N,) the attempt each token belongs to
    positions: torch.Tensor  # (N,) the token's index t within its attempt


def common_prefix(contexts: list[list[int]]) -> int:
    """Length of the head shared by every context, leaving each at least one token of its own
    (the last context token predicts the first attempt token)."""
    limit = min(len(c) for c in contexts) - 1
    first = contexts[0]
    for length in range(limit):
        if any(c[length] != first[length] for c in contexts):
            return length
    return max(limit, 0)


def attempt_hidden(
    model: PreTrainedModel, contexts: list[list[int]], attempts: list[list[int]]
) -> ScoredTokens:
    """Hidden states predicting each attempt token: row i's entry for token t is the model's
    state after contexts[i] + attempts[i][:t]. Differentiable when grad is enabled."""
    decoder = model.get_decoder()
    device = model.device
    shared = common_prefix(contexts)
    cache = None
    if shared > 0:
        cache = DynamicCache()
        head = torch.tensor([contexts[0][:shared]], device=device)  # (1, S)
        decoder(input_ids=head, past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(contexts))
    rows = [c[shared:] + a for c, a in zip(contexts, attempts, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    positions = torch.arange(shared, shared + width, device=device)[None, :].expand(len(rows), -1)
    out = decoder(
        input_ids=ids.to(device),
        past_key_values=cache,
        use_cache=cache is not None,
        position_ids=positions,
    )
    hidden = out.last_hidden_state  # (B, W, H)
    row_of, index = [], []
    for i, (c, a) in enumerate(zip(contexts, attempts, strict=True)):
        start = len(c) - shared - 1  # the position that predicts attempt token 0
        row_of += [i] * len(a)
        index += range(start, start + len(a))
    rows_t = torch.tensor(row_of, dtype=torch.long, device=device)
    index_t = torch.tensor(index, dtype=torch.long, device=device)
    picked = hidden[rows_t, index_t]  # (N, H)
    token_positions = torch.cat([torch.arange(len(a)) for a in attempts]).to(device)
    return ScoredTokens(hidden=picked, rows=rows_t, positions=token_positions)


def requests_hidden(
    model: PreTrainedModel,
    owners: list[int],
    contexts: list[list[int]],
    attempts: list[list[int]],
    rows_kept: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    """`attempt_hidden` for the rows of several requests (sessions) in one batch, each row
    computed with its request's adapter: (N, H) packed row by row.

    `owners[i]` is row i's request; a request's rows are consecutive. Each request's rows
    share their own head, whose cache depends on the request's adapter: the heads run as one
    left-padded batch (one row per request), their cache is expanded to the rows, and the
    rows' rests run right-padded after it, with a 4D mask hiding the heads' padding.
    `rows_kept(index)` is told when the batch's rows become `index` of the previous ones
    (first the requests' head rows, then every row), as per-row adapters need."""
    decoder, device = model.get_decoder(), model.device
    requests, counts = torch.unique_consecutive(torch.tensor(owners), return_counts=True)
    firsts = [0, *counts.cumsum(0).tolist()[:-1]]
    heads = [  # each request's shared head
        contexts[a][: common_prefix(contexts[a : a + n])]
        for a, n in zip(firsts, counts.tolist(), strict=True)
    ]
    head_of_row = torch.repeat_interleave(torch.arange(len(heads)), counts)  # (B,)
    own = [len(heads[h]) for h in head_of_row.tolist()]
    rows_kept(requests)
    cache, real = _run_heads(decoder, heads, head_of_row)
    rows_kept(head_of_row)
    rests = [c[h:] + a for c, h, a in zip(contexts, own, attempts, strict=True)]
    width = max(len(r) for r in rests)
    ids = torch.zeros((len(rests), width), dtype=torch.long)
    for i, rest in enumerate(rests):
        ids[i, : len(rest)] = torch.tensor(rest)
    positions = torch.tensor(own, device=device)[:, None] + torch.arange(width, device=device)
    extra = {}
    if cache is not None:
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        seen = real[head_of_row.to(device)][:, None, :].expand(-1, width, -1)  # (B, W, P)
        visible = torch.cat([seen, causal[None].expand(len(rests), -1, -1)], dim=-1)
        extra = {"attention_mask": additive_mask(visible, decoder.dtype)}
    out = decoder(
        input_ids=ids.to(device),
        past_key_values=cache,
        use_cache=cache is not None,
        position_ids=positions,
        **extra,
    )
    index = [  # the position that predicts each attempt token
        (i, len(c) - h - 1 + t)
        for i, (c, h, a) in enumerate(zip(contexts, own, attempts, strict=True))
        for t in range(len(a))
    ]
    rows_t, index_t = torch.tensor(index, device=device).unbind(-1)
    return out.last_hidden_state[rows_t, index_t]


def _run_heads(
    decoder: torch.nn.Module, heads: list[list[int]], head_of_row: torch.Tensor
) -> tuple[DynamicCache | None, torch.Tensor | None]:
    """The heads as one left-padded batch; returns their cache expanded to the rows (None when
    no request has a head) and which of the P padded head positions are real, (k, P)."""
    if not any(heads):
        return None, None
    batch = LeftPadded.of(heads, decoder.device)
    cache = DynamicCache()
    decoder(
        input_ids=batch.ids, past_key_values=cache, use_cache=True, **batch.inputs(decoder.dtype)
    )
    cache.batch_select_indices(head_of_row.to(decoder.device))
    return cache, batch.real


def output_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The model's output layer on final hidden states. (..., H) -> (..., V).

    Also applies the logit scaling or soft-capping that some model families put after it."""
    logits = model.get_output_embeddings()(hidden)
    config = model.config
    if scale := getattr(config, "logit_scale", None):
        logits = logits * scale
    if cap := getattr(config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    return logits


def attempt_logits(
    model: PreTrainedModel, contexts: list[list[int]], attempts: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each attempt token as one padded (B, T, V) tensor, and its (B, T)
    mask. For tests and diagnostics on small vocabularies: training uses `attempt_hidden`."""
    scored = attempt_hidden(model, contexts, attempts)
    logits = output_logits(model, scored.hidden)  # (N, V)
    longest = max(len(a) for a in attempts)
    padded = logits.new_zeros((len(attempts), longest, logits.shape[-1]))
    padded[scored.rows, scored.positions] = logits
    mask = torch.zeros((len(attempts), longest), dtype=torch.bool, device=logits.device)
    mask[scored.rows, scored.positions] = True
    return padded, mask
