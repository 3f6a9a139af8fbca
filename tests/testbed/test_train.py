"""The training script on a tiny model (the real run: `python -m testbed.train`)."""

import math
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from testbed.corpus import CorpusConfig
from testbed.train import ModelShape, TrainConfig, lr_factor, save, train

TINY = TrainConfig(
    seed=1,
    steps=4,
    batch_size=2,
    corpus=CorpusConfig(seed=1, row_len=384),
    shape=ModelShape(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    ),  # fmt: skip
    warmup_steps=2,
    log_every=2,
    threads=1,
)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    )
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # train() sets its own thread count
    yield
    torch.set_num_threads(threads)


def test_training_is_reproducible_and_saves_a_loadable_checkpoint(tmp_path, keep_threads):
    model_a, summary = train(TINY, log=lambda line: None)
    model_b, _ = train(TINY, log=lambda line: None)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    assert summary.steps == 4 and [s for s, _ in summary.curve] == [2, 4]
    save(model_a, tmp_path, context=TINY.corpus.row_len)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.model.embed_tokens.weight, model_a.model.embed_tokens.weight)
    assert loaded.config.max_position_embeddings == 384  # the trained row length, not more


def test_training_continues_from_a_checkpoint(tmp_path, keep_threads):
    first, _ = train(TINY, log=lambda line: None)
    save(first, tmp_path, context=TINY.corpus.row_len)
    again = replace(TINY, init=tmp_path, steps=2, corpus=replace(TINY.corpus, p_solution=0.2))
    second, summary = train(again, log=lambda line: None)
    assert summary.steps == 2
    moved = [
        not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    ]
    assert any(moved)
    fresh, _ = train(replace(again, init=None), log=lambda line: None)
    assert not torch.equal(fresh.model.embed_tokens.weight, second.model.embed_tokens.weight)


def test_config_validates():
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)
