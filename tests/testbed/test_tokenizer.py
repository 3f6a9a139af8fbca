"""The word-level tokenizer: exact round trips, full coverage of the family, AutoTokenizer."""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from sandbox.extract import NO_CODE_FEEDBACK
from testbed.corpus import blind_attempt, wrong_attempt
from testbed.tasks import prompt, reference_code, task_from_seed
from testbed.tokenizer import (
    ASSISTANT,
    EOS,
    PAD,
    UNK,
    USER,
    answer_text,
    build_tokenizer,
    chat_prompt,
    save_tokenizer,
    vocabulary,
)
from worker.prompts import multi_turn_prompt, teacher_prompt

REPO = Path(__file__).resolve().parents[3]

# As the real sandbox prints them (captured from sandbox runs of broken attempts).
SANDBOX_TEXTS = [
    'Runtime error on test 5 of 5:\nTraceback (most recent call last):\n  File "solution.py", '
    "line 3, in f\n    xs = xs[::-x1]\nNameError: name 'x1' is not defined\nInput:\n"
    "f([16, 4, 2, 0])",
    "Runtime error on test 4 of 5:\nNameError: no function 'f' and no class Solution with that "
    "method\nInput:\nf([3, 1, 10, 13])",
    'Runtime error on test 5 of 5:\nTraceback (most recent call last):\n  File "solution.py", '
    "line 2, in f\n    xs = xs[1:xs]\nTypeError: slice indices must be integers or None or "
    "have an __index__ method\nInput:\nf([1, 4, 5])",
    'Runtime error on test 1 of 5:\nTraceback (most recent call last):\n  File "solution.py", '
    "line 2, in f\n    xs = [x for x in xs if x % 0 == 0]\nZeroDivisionError: integer modulo "
    "by zero\nInput:\nf([1, 2, 3])",
    "Time limit exceeded on test 2 of 5 (limit 2 s).\nInput:\nf([1, 2, 3])",
    "Memory limit exceeded on test 1 of 5 (limit 256 MB).\nInput:\nf([1])",
    "Runtime error on test 1 of 5:\nKilled by signal SIGKILL.",
    "TypeError: f() takes 0 positional arguments but 1 was given",
    "UnboundLocalError: cannot access local variable 'xs' where it is not associated with a value",
    "TypeError: unsupported operand type(s) for +: 'builtin_function_or_method' and 'int'",
    "IndentationError: unindent does not match any outer indentation level",
    "SyntaxError: closing parenthesis ')' does not match opening parenthesis '[' on line 2",
    NO_CODE_FEEDBACK,
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _family_texts(n_tasks: int, broken: bool = True) -> list[str]:
    """Prompts, answers, teacher and multi-turn contexts with wrong-answer feedback and (when
    `broken`) compile errors of corrupted programs, as the family produces them."""
    rng = random.Random(0)
    texts = list(SANDBOX_TEXTS)
    for seed in range(n_tasks):
        task = task_from_seed(seed)
        feedbacks = [wrong_attempt(rng, task, 0.3).feedback]
        if broken:
            feedbacks.append(blind_attempt(rng, task).feedback)
        texts += [
            chat_prompt(prompt(task)) + answer_text(reference_code(task)) + EOS,
            chat_prompt(teacher_prompt(prompt(task), feedbacks[0])),
            chat_prompt(multi_turn_prompt(prompt(task), feedbacks)),
        ]
    return texts


def test_round_trip_is_exact_on_the_family(tokenizer):
    texts = _family_texts(1000)
    encoded = tokenizer(texts, add_special_tokens=False).input_ids
    for text, ids in zip(texts, encoded, strict=True):
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text


def test_every_word_of_the_family_is_one_token(tokenizer):
    texts = _family_texts(200, broken=False)  # corrupted code has typos like "retrn"
    specials = re.compile("|".join(re.escape(t) for t in (USER, ASSISTANT, EOS)))
    words = {w for text in texts for w in re.findall(r"[A-Za-z]+", specials.sub(" ", text))}
    split = [w for w in words if len(tokenizer.encode(w, add_special_tokens=False)) != 1]
    assert not split


def test_unknown_words_and_long_numbers_still_round_trip(tokenizer):
    text = "NameError: name 'returnxs' is not defined 123456 1000007 007\ttab"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode("é", add_special_tokens=False)) == UNK


def test_numbers_below_1000_are_single_tokens(tokenizer):
    for n in (0, 7, 42, 999):
        assert tokenizer.convert_ids_to_tokens(tokenizer.encode(f"[{n}, {n}]"))[1] == str(n)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("1234")) == ["123", "4"]


def test_chat_template_and_special_tokens(tokenizer):
    text = "Write f."
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == f"{USER}\n{text}\n{ASSISTANT}\n" == chat_prompt(text)
    vocab = vocabulary()
    assert tokenizer.pad_token == PAD and tokenizer.pad_token_id == vocab.index(PAD)
    assert tokenizer.eos_token == EOS and tokenizer.eos_token_id == vocab.index(EOS)
    assert tokenizer.unk_token == UNK and len(tokenizer) == len(vocab)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(rendered))[0] == USER


def test_auto_tokenizer_loads_the_saved_tokenizer(tmp_path, tokenizer):
    save_tokenizer(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = _family_texts(20)
    assert loaded(texts).input_ids == tokenizer(texts).input_ids
    assert loaded.decode(loaded.encode(texts[1])) == texts[1]
    assert loaded.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    ) == chat_prompt("x")
    assert loaded.clean_up_tokenization_spaces is False


_VOCAB = "from testbed.tokenizer import vocabulary; print(repr(vocabulary()))"


def test_vocabulary_order_does_not_depend_on_string_hashing():
    other = subprocess.run(  # this process hashes strings with another (random) seed
        [sys.executable, "-c", _VOCAB],
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout == repr(vocabulary()) + "\n"
