"""Several sessions' updates in shared passes (worker/joint_update.py): each session ends
where its own update alone would have taken it, up to float rounding, and its adapter is
moved by its own batch only."""

import asyncio
from dataclasses import replace

import pytest
import torch

from sdpo.params import SDPOParams
from worker.adapter import PEFT_PREFIX, SessionAdapter
from worker.batching import UpdateBatcher
from worker.compute import ComputeTurns
from worker.joint_update import UpdateRequest, can_join, joint_update, solo_update
from worker.row_adapters import RowAdapters
from worker.scoring import attempt_hidden, requests_hidden
from worker.update import DistillBatch, make_optimizer


def _batch(problem: list[int], feedback: int, attempts: list[list[int]]) -> DistillBatch:
    return DistillBatch(
        student_contexts=[problem] * len(attempts),
        teacher_contexts=[problem + [feedback + i] * (i + 1) for i in range(len(attempts))],
        attempts=attempts,
        sampler_logprobs=[[-2.0] * len(a) for a in attempts],
    )


BATCHES = [  # three sessions: problems of different lengths, attempts of different lengths
    _batch([4, 5, 6, 7, 8], 30, [[9, 10, 11], [12, 13, 14, 15, 16], [17]]),
    _batch([40, 41], 50, [[18, 19], [20, 21, 22, 23]]),
    _batch([60, 61, 62, 63, 64, 65, 66, 67], 70, [[24, 25, 26, 27, 28, 29]]),
]


def _sessions(tiny, params_of: list[SDPOParams]) -> list[UpdateRequest]:
    requests = []
    for seed, (params, batch) in enumerate(zip(params_of, BATCHES, strict=True)):
        adapter = SessionAdapter(tiny.model, params, seed=seed)
        with torch.no_grad():  # students that differ from the base and from each other
            generator = torch.Generator().manual_seed(100 + seed)
            for p in adapter.student_params():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        requests.append(UpdateRequest(adapter, make_optimizer(adapter, params), batch, params))
    return requests


def _weights(request: UpdateRequest) -> dict[str, torch.Tensor]:
    return request.adapter.state_dict()


PARAMS = [
    SDPOParams(learning_rate=1e-2),  # EMA teacher
    SDPOParams(learning_rate=3e-2, teacher_model_kind="base", num_iterations=2),
    SDPOParams(learning_rate=1e-2, teacher_model_kind="live", temperature=0.7),
]


def test_a_joint_update_moves_every_session_as_its_own_update_would(tiny):
    requests = _sessions(tiny, PARAMS)
    try:
        assert can_join(requests)
        start = [(_weights(r), r.optimizer.state_dict()) for r in requests]
        alone = [solo_update(r) for r in requests]
        alone_weights = [_weights(r) for r in requests]
        for r, (weights, optimizer) in zip(requests, start, strict=True):
            r.adapter.load_state_dict(weights)
            r.optimizer.load_state_dict(optimizer)
        joint = joint_update(requests)
        for i, r in enumerate(requests):
            for key in ("loss", "mean_divergence", "final_divergence", "grad_norm"):
                assert joint[i].metrics[key] == pytest.approx(alone[i].metrics[key], rel=1e-4)
            for name, value in _weights(r).items():
                torch.testing.assert_close(value, alone_weights[i][name], atol=1e-6, rtol=1e-4)
                if "student" in name:  # the update did move it, so equal means equal gradients
                    assert not torch.equal(value, start[i][0][name])
    finally:
        for r in requests:
            r.adapter.close()


def test_a_session_in_a_joint_update_is_moved_by_its_own_batch_only(tiny):
    """Session 0 updated beside sessions 1 and 2, and beside them with other batches: the
    same weights (its gradients never see the other rows)."""
    params = [SDPOParams(learning_rate=1e-2)] * 3
    finals = []
    for others in (BATCHES[1:], [BATCHES[2], BATCHES[1]]):
        requests = _sessions(tiny, params)
        requests[1:] = [
            UpdateRequest(r.adapter, r.optimizer, batch, r.params)
            for r, batch in zip(requests[1:], others, strict=True)
        ]
        try:
            joint_update(requests)
            finals.append(_weights(requests[0]))
        finally:
            for r in requests:
                r.adapter.close()
    for name, value in finals[0].items():
        torch.testing.assert_close(value, finals[1][name], atol=1e-6, rtol=1e-5)


def test_rows_of_several_sessions_score_as_each_session_alone(tiny):
    """requests_hidden: each request's head shared by its own rows, the rest padded."""
    requests = _sessions(tiny, [SDPOParams()] * 3)
    try:
        alone = []
        for r in requests:
            contexts, attempts = r.batch.teacher_contexts, r.batch.attempts
            with torch.no_grad():
                alone.append(attempt_hidden(r.adapter.model, contexts, attempts).hidden)
        owners = [i for i, r in enumerate(requests) for _ in r.batch.attempts]
        contexts = [c for r in requests for c in r.batch.teacher_contexts]
        attempts = [a for r in requests for a in r.batch.attempts]
        peft = requests[0].adapter.host.peft
        factors = [r.adapter.student_factors() for r in requests]
        rows = RowAdapters(peft, factors, prefix=PEFT_PREFIX, live=True)
        with torch.no_grad(), peft.disable_adapter(), rows:
            together = requests_hidden(peft, owners, contexts, attempts, rows.rows_kept)
        torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)
        bare = RowAdapters(peft, [None] * 3, prefix=PEFT_PREFIX)
        with torch.no_grad(), peft.disable_adapter(), bare:
            base = requests_hidden(peft, owners, contexts, attempts, bare.rows_kept)
        assert not torch.allclose(base, together, atol=1e-3)  # so the adapters were applied
    finally:
        for r in requests:
            r.adapter.close()


async def test_the_scheduler_updates_waiting_sessions_together_and_isolates_a_failure(tiny):
    """Updates that arrive while the model is busy go out in one tick. When one of them makes
    the shared pass fail (a token the model does not have), that one alone sees the error and
    the others are updated alone instead, exactly as solo updates."""
    requests = _sessions(tiny, [SDPOParams(learning_rate=1e-2)] * 3)
    start = [(_weights(r), r.optimizer.state_dict()) for r in requests]
    try:
        for i in (0, 2):
            solo_update(requests[i])
        alone = [_weights(requests[i]) for i in (0, 2)]
        for r, (weights, optimizer) in zip(requests, start, strict=True):
            r.adapter.load_state_dict(weights)
            r.optimizer.load_state_dict(optimizer)
        broken = replace(requests[1].batch, attempts=[[10**6], [21]])
        requests[1] = replace(requests[1], batch=broken)
        batcher = UpdateBatcher(ComputeTurns())
        phases = [{}, {}, {}]
        outcomes = await asyncio.gather(
            *(batcher.update(r, phases=p) for r, p in zip(requests, phases, strict=True)),
            return_exceptions=True,
        )
        assert (batcher.log.ticks, batcher.log.requests) == (1, 3)
        assert isinstance(outcomes[1], IndexError)
        for i, want in zip((0, 2), alone, strict=True):
            assert set(outcomes[i]) >= {"loss", "grad_norm", "update_passes"}
            assert phases[i]["teacher"] > 0 and phases[i]["train"] > 0
            got = _weights(requests[i])
            assert all(torch.equal(got[name], want[name]) for name in want)

        for r, (weights, optimizer) in zip(requests[::2], start[::2], strict=True):
            r.adapter.load_state_dict(weights)
            r.optimizer.load_state_dict(optimizer)
        joint = await asyncio.gather(*(batcher.update(r) for r in requests[::2]))
        assert (batcher.log.ticks, batcher.log.most_requests) == (2, 3)
        assert batcher.log.requests == 5
        for metrics, r, want in zip(joint, requests[::2], alone, strict=True):
            assert metrics["grad_norm"] > 0
            for name, value in _weights(r).items():  # shared passes: equal up to rounding
                torch.testing.assert_close(value, want[name], atol=1e-6, rtol=1e-4)
    finally:
        for r in requests:
            r.adapter.close()


# the tiny model ties its output layer to its embeddings, which peft warns about adapting
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
def test_sessions_join_only_when_their_rows_can_share_passes(tiny):
    """An adapted output layer (its logits are computed on packed tokens, not per row) or a
    closed adapter sends every request of the tick to a lone update."""
    plain = _sessions(tiny, [SDPOParams()] * 3)
    try:
        assert can_join(plain)
        plain[1].adapter.close()
        assert not can_join(plain)
    finally:
        plain[0].adapter.close(), plain[2].adapter.close()
    params = SDPOParams(lora_target_modules=["q_proj", "lm_head"])
    adapted = _sessions(tiny, [params] * 3)
    try:
        assert not can_join(adapted)
    finally:
        for r in adapted:
            r.adapter.close()
