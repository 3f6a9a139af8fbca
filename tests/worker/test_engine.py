"""The hf engine samples a session's adapter through merged weights: the same distribution as
peft's LoRA layers, and the base model untouched. Several sessions' requests batch together
(per-row adapters) and sample what each samples alone."""

import asyncio

import pytest
import torch

from sdpo.params import SDPOParams
from worker.adapter import SessionAdapter
from worker.batching import GenerationBatcher
from worker.compute import ComputeTurns
from worker.engine import BatchRequest, GenerationTwin, HFEngine
from worker.generation import SamplingConfig


def _trained(tiny) -> SessionAdapter:
    adapter = SessionAdapter(tiny.model, SDPOParams(), seed=0)
    with torch.no_grad():  # as after some updates: B is no longer zero
        for p in adapter.student_params():
            p.add_(0.05 * torch.randn_like(p))
    return adapter


def test_merged_weights_compute_what_the_lora_layers_compute(tiny):
    base = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    twin = GenerationTwin(tiny.model)
    shared = dict(twin.model.named_parameters())
    assert all(shared[n] is p for n, p in tiny.model.named_parameters())  # nothing copied
    adapter = _trained(tiny)
    with pytest.raises(ValueError, match="no adapter"):
        GenerationTwin(tiny.model)
    ids = torch.tensor([[4, 5, 6, 7, 8, 9]])
    try:
        with torch.no_grad():
            lora = adapter.model(input_ids=ids).logits
            with twin.merged(adapter) as model:
                merged = model(input_ids=ids).logits
            plain = twin.model(input_ids=ids).logits
        torch.testing.assert_close(merged, lora, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(plain, lora, atol=1e-3)  # the adapter does change the output
    finally:
        adapter.close()
    state = tiny.model.state_dict()
    assert all(torch.equal(state[k], base[k]) for k in base)
    assert all(p is shared[n] for n, p in twin.model.named_parameters())  # restored


def test_the_engine_samples_the_adapter_deterministically(tiny):
    engine = HFEngine(tiny)  # as a worker does: the engine first, then sessions' adapters
    adapter = _trained(tiny)
    config = SamplingConfig(tiny.stop_token_ids, max_new_tokens=16)
    try:
        first = engine.generate(
            [4, 5, 6], 4, config, generator=torch.Generator().manual_seed(3), adapter=adapter
        )
        again = engine.generate(
            [4, 5, 6], 4, config, generator=torch.Generator().manual_seed(3), adapter=adapter
        )
        base = engine.generate([4, 5, 6], 4, config, generator=torch.Generator().manual_seed(3))
        # the sampler's log-probs are the adapter's: teacher-forced peft scores match them
        ids = torch.tensor([[4, 5, 6, *first[0].token_ids]])
        with torch.no_grad():
            scores = adapter.model(input_ids=ids).logits[0, 2:-1].log_softmax(-1)
        picked = scores.gather(1, torch.tensor(first[0].token_ids)[:, None])[:, 0]
        torch.testing.assert_close(picked, torch.tensor(first[0].logprobs), atol=1e-4, rtol=1e-4)
    finally:
        adapter.close()
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    # inverse-CDF sampling from the same uniforms often picks the same tokens; their
    # probabilities under the adapter still differ from the base model's
    assert [s.logprobs for s in first] != [s.logprobs for s in base]


def _request(prompt, seed, adapter=None, n=4):
    config = SamplingConfig(tuple(range(20, 30)), max_new_tokens=24)  # rows of varied length
    return BatchRequest(prompt, n, config, torch.Generator().manual_seed(seed), adapter)


def test_a_batch_of_sessions_samples_what_each_samples_alone(tiny):
    """Three sessions' requests in one batch (the base model and two adapters; prompts of 3, 7
    and 1 tokens, so two are left-padded): each row draws the tokens it draws alone, with the
    same log-probs up to float rounding, and each row computes with its own adapter."""
    engine = HFEngine(tiny)
    first, second = _trained(tiny), _trained(tiny)
    prompts = [[4, 5, 6], [4, 5, 6], [7, 8, 9, 10, 11, 12, 13], [9]]
    adapters = [None, first, second, first]
    pairs = list(zip(prompts, adapters, strict=True))
    try:
        alone = [engine.generate_batch([_request(p, 3, a)])[0] for p, a in pairs]
        together = engine.generate_batch([_request(p, 3, a) for p, a in pairs])
    finally:
        first.close(), second.close()
    for solo, batched in zip(alone, together, strict=True):
        assert [s.token_ids for s in batched] == [s.token_ids for s in solo]
        for s, b in zip(solo, batched, strict=True):
            torch.testing.assert_close(b.logprobs, s.logprobs, atol=1e-4, rtol=1e-4)
    lengths = {len(s.token_ids) for samples in together for s in samples}
    assert 24 in lengths and min(lengths) < 24  # rows did finish early, others ran to the end
    # same prompt and seed: the base row and the adapter row differ only by the adapter
    assert [s.logprobs for s in together[0]] != [s.logprobs for s in together[1]]


async def test_the_scheduler_batches_waiting_sessions_and_isolates_a_failure(tiny):
    """Requests that arrive while the model is busy go out in one tick; when one of them
    cannot be sampled (its adapter was closed), the others still get exactly their solo
    samples and only that one sees the error."""
    engine = HFEngine(tiny)
    batcher = GenerationBatcher(engine, ComputeTurns())
    good, gone = _trained(tiny), _trained(tiny)
    try:
        alone = [engine.generate_batch([_request([4, 5], s, good)])[0] for s in (1, 2)]
        gone.close()
        outcomes = await asyncio.gather(
            batcher.generate(_request([4, 5], 1, good)),
            batcher.generate(_request([4, 5, 6], 9, gone)),
            batcher.generate(_request([4, 5], 2, good)),
            return_exceptions=True,
        )
    finally:
        good.close()
    assert (batcher.log.ticks, batcher.log.requests) == (1, 3)
    assert isinstance(outcomes[1], Exception)
    assert [[s.token_ids for s in o] for o in (outcomes[0], outcomes[2])] == [
        [s.token_ids for s in a] for a in alone
    ]


async def test_with_batching_off_each_session_samples_bit_for_bit_as_alone(tiny):
    """SDPO_WORKER_BATCH_GENERATION=false: a tick still serves every waiting request, one by
    one, so tokens and log-probs are exactly a lone session's."""
    engine = HFEngine(tiny)
    batcher = GenerationBatcher(engine, ComputeTurns(), together=False)
    adapter = _trained(tiny)
    pairs = (([4, 5], None), ([6, 7, 8, 9], adapter))  # prompts of two lengths
    try:
        solo = [engine.generate_batch([_request(p, 4, a)])[0] for p, a in pairs]
        served = await asyncio.gather(*(batcher.generate(_request(p, 4, a)) for p, a in pairs))
    finally:
        adapter.close()
    assert (batcher.log.ticks, batcher.log.most_requests) == (1, 2)
    for mine, theirs in zip(served, solo, strict=True):
        assert [(s.token_ids, s.logprobs) for s in mine] == [
            (s.token_ids, s.logprobs) for s in theirs
        ]
