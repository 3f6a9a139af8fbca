"""The hf engine samples a session's adapter through merged weights: the same distribution as
peft's LoRA layers, and the base model untouched."""

import pytest
import torch

from sdpo.params import SDPOParams
from worker.adapter import SessionAdapter
from worker.engine import GenerationTwin, HFEngine
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
