"""A tiny, randomly initialised Llama with the bundled tokenizer: real transformers + peft
code paths, small enough that machinery tests (determinism, resume, adapters) run in seconds.
Tests of behaviour that needs a trained model use the bundled checkpoint instead."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from testbed.tokenizer import save_tokenizer
from worker.engine import HFEngine
from worker.model import load_model
from worker.strategies import Runtime


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = save_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture
def runtime(tiny, sandbox):
    return Runtime(HFEngine(tiny), sandbox)
