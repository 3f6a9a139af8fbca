"""The bundled model's word-level tokenizer, with a pinned vocabulary and a chat template.

A regex pre-tokenizer cuts text into pieces that are each one token: a whole piece of a canonical
code line (`    xs = [x + `, ` for x in xs]`, `def f(xs):`, ...), a newline, four spaces of
indentation, ", ", an integer of up to three digits (longer ones in chunks of three), a word of
the pinned vocabulary, a single letter, or any other single character; a word, letter or
punctuation character takes one preceding space with it (as " the", " =", " [").

Where this departs from a plain one-piece-per-character-class split, and why:
* Code-line pieces and space-prefixed words make answers, prompts and feedback several times
  shorter than a separate " " token would, which buys more training examples per CPU minute,
  rows that hold multi-turn examples, and faster sampling and scoring. Numbers never take the
  space, so every number has one token (and one embedding) wherever it appears: in `[3, 1, 4]`,
  after `    xs = [x + ` and after `    xs = xs[:`.
* Words are tried longest first, and every ASCII letter and every 1-3 digit string (leading
  zeros included) is in the vocabulary, so any ASCII text round-trips exactly through encode
  and decode: a word we never saw (e.g. `returnxs`, glued by the model) becomes known words and
  letters instead of `<|unk|>`. Only non-ASCII characters map to `<|unk|>`.

The vocabulary order is an explicit list, never built from a set: Python's string hashing
differs between processes, and a set-ordered vocabulary once broke a checkpoint.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS, USER, ASSISTANT = "<|pad|>", "<|unk|>", "<|end|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, EOS, USER, ASSISTANT)
MODEL_MAX_LENGTH = 1024

# `raise_exception` is provided by transformers' template renderer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% else %}{{ raise_exception('only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_WHITESPACE = ("\n", "    ", ", ", " ", "\t", "\r")
_SPACED = " {}"  # the space-prefixed form of a word, letter or punctuation character

# Words of the task family, the SDPO prompt templates, the sandbox's feedback and the Python
# error messages a broken attempt can produce. Order is the vocabulary order: append only.
_WORDS = """
Write Python function that takes list integers and returns Apply these steps in order keep first
elements remove add to each element multiply by multiples of above sort the increasing reverse
Each The is a hidden number xs x def return for if sorted
following feedback from your unsuccessful earlier attempt Correctly solve original question
Wrong answer on test Input Output Expected Runtime error Traceback most recent call last File
line solution py Time Memory limit exceeded too much output more lines truncated empty Checker
Killed signal Exited with status SystemExit checker failed No code block found Put inside
python MB SIGKILL SIGSEGV SIGABRT SIGXCPU SIGXFSZ SIGTERM SIGBUS SIGFPE SIGPIPE
ArithmeticError AssertionError AttributeError BaseException BufferError EOFError Exception
FloatingPointError GeneratorExit ImportError IndentationError IndexError KeyError
KeyboardInterrupt LookupError MemoryError ModuleNotFoundError NameError NotImplementedError
OSError OverflowError RecursionError RuntimeError StopIteration SyntaxError SystemError TabError
TimeoutError TypeError UnboundLocalError UnicodeDecodeError UnicodeEncodeError UnicodeError
ValueError ZeroDivisionError Warning SyntaxWarning
Maybe Perhaps Did Function after an annotation any are arguments argument assign assignment
bare be call can cannot closed closing comma comparison comprehension contain decimal default
definition does else expected expression expressions follow follows forgot here hexadecimal
illegal indent indentation indented instead integer invalid iterable leading level literal
literals match meant must name named never not octal opening or outer outside parameters
parenthesis parenthesized perhaps permitted prefix starred syntax target tuple unexpected
unindent unmatched unpacking use used value was with you zeros unterminated string detected at
EOF while parsing character generator lambda keyword positional missing parentheses statement
multiple star allowed only binary digit digits underscore printable True False None print
print mean unclosed brace nested blocks too many loop properly global nonlocal del pass break
continue import elif class async await yield assert try except finally raise as is
Solution access associated bad between builtin but callable concatenate defined given got
have index indices instances int it listcomp genexpr local method no non object operand out
range sequence slice subscriptable supported type unary unsupported variable where
takes were required division modulo zero float str bool dict set attribute has NoneType len
unhashable maximum recursion depth calling values unpack enough module main max min sum abs
map filter zip enumerate append pop extend reversed key self lst arr nums result res
"""


# Whole pieces of the family's canonical code lines, each one token (the constant between
# them is a number token): answers get ~2.3x shorter, which makes sampling, scoring and
# training that much faster, and puts each hidden constant at one predictable position.
# Matched before anything else, longest first. Append only.
_CODE_PIECES = (
    "```python",
    "```",
    "def f(xs):",
    "    return xs",
    "    xs = [x + ",
    "    xs = [x * ",
    " for x in xs]",
    "    xs = xs[:",
    "    xs = xs[",
    ":]",
    "    xs = [x for x in xs if x % ",
    " == 0]",
    "    xs = [x for x in xs if x > ",
    "    xs = sorted(xs)",
    "    xs = xs[::-1]",
)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))  # keeps first-seen order (dicts are ordered)


def _numbers() -> list[str]:
    plain = [str(i) for i in range(1000)]
    padded = [f"{i:02d}" for i in range(10)] + [f"{i:03d}" for i in range(100)]
    return plain + padded  # every 1-3 digit chunk, leading zeros included


def _words() -> list[str]:
    return _unique([w for w in _WORDS.split() if len(w) > 1])


def vocabulary() -> list[str]:
    """The pinned vocabulary, in id order."""
    pieces = [*string.punctuation, *string.ascii_letters, *_words()]
    spaced = [_SPACED.format(p) for p in pieces]
    return _unique([*SPECIAL_TOKENS, *_WHITESPACE, *_numbers(), *pieces, *spaced, *_CODE_PIECES])


def _split_pattern() -> str:
    words = "|".join(sorted(_words(), key=lambda w: (-len(w), w)))  # longest first
    code = "|".join(re.escape(p) for p in sorted(_CODE_PIECES, key=lambda p: (-len(p), p)))
    return rf"{code}|\n| {{4}}|, |[0-9]{{1,3}}| ?(?:{words})| ?[A-Za-z]| ?[^A-Za-z0-9\s]|\s"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer as transformers loads it (`AutoTokenizer` after `save_pretrained`)."""
    vocab = vocabulary()
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(_split_pattern()), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        additional_special_tokens=[USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="left",  # decoder-only generation pads on the left
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: Llama rejects them
    )


def save_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(path))
    return tokenizer


def chat_prompt(content: str) -> str:
    """What the chat template renders for one user message plus the generation prompt."""
    return f"{USER}\n{content}\n{ASSISTANT}\n"


def answer_text(code: str) -> str:
    """The assistant's answer for a program (the eos token follows it)."""
    return f"```python\n{code}\n```"
