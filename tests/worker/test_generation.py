import torch

from worker.generation import SamplingConfig, _top_p_filter, sample


def _draw(loaded, seed, n=4, **config):
    prompt = loaded.chat_ids("Write f(xs): add ? to each element.")
    generator = torch.Generator().manual_seed(seed)
    config = SamplingConfig(stop_token_ids=loaded.stop_token_ids, max_new_tokens=12, **config)
    with torch.inference_mode():
        return prompt, sample(loaded.model, prompt, n, config, generator=generator)


def test_same_seed_same_samples_other_seed_differs(tiny):
    _, first = _draw(tiny, 7)
    _, again = _draw(tiny, 7)
    _, other = _draw(tiny, 8)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert [s.token_ids for s in first] != [s.token_ids for s in other]


def test_logprobs_are_those_of_the_sampling_distribution(tiny):
    prompt, samples = _draw(tiny, 3, temperature=0.7)
    for s in samples:
        ids = torch.tensor([prompt + s.token_ids])
        with torch.no_grad():
            logits = tiny.model(ids).logits[0, len(prompt) - 1 : -1] / 0.7
        expected = logits.log_softmax(-1).gather(1, torch.tensor(s.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(s.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_eos_ends_a_sample(tiny):
    _, samples = _draw(tiny, 1, n=8)
    for s in samples:
        assert len(s.token_ids) == len(s.logprobs) <= 12
        if s.finished:
            assert s.token_ids[-1] == tiny.eos_token_id
            assert tiny.eos_token_id not in s.token_ids[:-1]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = _top_p_filter(logits, 0.8).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert _top_p_filter(logits, 0.81).isfinite().tolist() == [[True, True, True, False]]
