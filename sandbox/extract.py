"""Getting the program out of a model's raw answer.

Chatty instruct models wrap their code in prose, write several blocks (a first try, the fix, a
usage example, the expected output), label fences ```` ```python ````, ```` ```py ```` or not at
all, and get cut at the length limit inside a block. `extract_code` picks the one block worth
running; its docstring gives the order of preference.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

NO_CODE_FEEDBACK = "No code block found. Put your code inside a ```python``` block."

# An opening fence: three or more backticks or tildes, then an optional info string, whose
# first word is the language. Up to three spaces of indent, as in CommonMark, and more: models
# indent fences inside list items.
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_PYTHON_LANGUAGES = re.compile(r"(?:py|python)(?:3(?:\.\d+)?)?", re.IGNORECASE)
# A line that starts a Python statement rather than a sentence: a definition, an import, a
# decorator, an assignment or a call at the start of the line.
_CODE_LINE = re.compile(
    r"(?:async[ \t]+def|def|class|import|from[ \t]+[\w.]+[ \t]+import)[ \t]|@\w"
    r"|[A-Za-z_][\w.]*(?:\[[^\]]*\])?[ \t]*(?:=[^=]|\()"
)


@dataclass(frozen=True)
class Block:
    """One fenced block of an answer."""

    code: str  # the lines between the fences, dedented
    language: str  # first word of the info string, lowercased; "" for a bare fence
    closed: bool  # False only for a last fence that runs to the end of the answer

    @property
    def is_python(self) -> bool:
        """A bare block counts as Python when it holds a line of code: small models often leave
        the language out, and they fence the expected output ("Sum of 2 and 3 is: 5") the same
        way."""
        if self.language == "":
            return any(_is_code_line(line) for line in self.code.splitlines())
        return _PYTHON_LANGUAGES.fullmatch(self.language) is not None

    def defines(self, entry_point: str) -> bool:
        """Whether the block defines `entry_point` the way the harness looks it up: a top-level
        function, class or assignment (`add = lambda ...`) of that name, or a method of
        `class Solution`.

        Textual, not `ast`: a block with a syntax error that defines the entry point is still the
        one the model meant, and running it tells the model about its syntax error.
        """
        name = re.escape(entry_point)
        definition = rf"(?:async[ \t]+)?def[ \t]+{name}[ \t]*\("
        top_level = rf"^{definition}|^class[ \t]+{name}\b|^{name}[ \t]*=(?!=)"
        if re.search(top_level, self.code, re.M):
            return True
        return bool(
            re.search(r"^class[ \t]+Solution\b", self.code, re.M)
            and re.search(rf"^[ \t]+{definition}", self.code, re.M)
        )


def fenced_blocks(answer: str) -> list[Block]:
    """Every fenced block, in order, whatever its language, a headless first one included
    (see `_headless_block`).

    A fence closes on a line of the same character, at least as long, and nothing else: so a
    closing fence is never mistaken for the opening of a new block, and a ```` ``` ```` inside a
    Python string does not end the block (for the one exception, see `_block_from`).
    """
    lines = answer.splitlines()
    blocks, i = _headless_block(lines)
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening is None or _opens_nothing(opening):
            i += 1
            continue
        block, i = _block_from(lines, i, opening)
        blocks.append(block)
    return blocks


def _block_from(lines: list[str], start: int, opening: re.Match[str]) -> tuple[Block, int]:
    """The block that `opening` (on line `start`) opens, and the index of the line after it.

    When no line closes it, a fence glued to the end of a code line (`return x```) does: small
    models write that, and otherwise the block would run to the end of the answer, prose and all.
    """
    fence = opening["fence"]
    char, length = re.escape(fence[0]), len(fence)
    closing = re.compile(rf"^[ \t]*{char}{{{length},}}[ \t]*$")
    glued = re.compile(rf"^(?P<code>.*[^{char}\s])[ \t]*{char}{{{length},}}[ \t]*$")
    rest = range(start + 1, len(lines))
    end = next((j for j in rest if closing.match(lines[j])), None)
    body = lines[start + 1 : end]
    if end is None:
        end = next((j for j in rest if glued.match(lines[j])), None)
        if end is not None:
            body = [*lines[start + 1 : end], glued.match(lines[end])["code"]]
    info = opening["info"].split()
    code = textwrap.dedent("\n".join(body)).strip("\n")
    block = Block(code=code, language=info[0].lower() if info else "", closed=end is not None)
    return block, len(lines) if end is None else end + 1


def _headless_block(lines: list[str]) -> tuple[list[Block], int]:
    """The block whose opening fence the model left out, and the index of the line after it.

    SmolLM2 often starts its answer with the code itself, ends the code with a bare fence and
    then explains it. Read as Markdown, that fence would open a block of prose. So when the first
    fence is bare, a line of code comes before it and no code comes right after it, the fence
    closes a block that starts at that first line of code.
    """
    fences = ((i, _OPEN.match(line)) for i, line in enumerate(lines))
    first, opening = next(((i, m) for i, m in fences if m and not _opens_nothing(m)), (0, None))
    if opening is None or opening["info"].strip():
        return [], 0
    start = next((i for i in range(first) if _is_code_line(lines[i])), None)
    after = next((line for line in lines[first + 1 :] if line.strip()), "")
    if start is None or _is_code_line(after):
        return [], 0
    code = textwrap.dedent("\n".join(lines[start:first])).strip("\n")
    return [Block(code=code, language="", closed=True)], first + 1


def _is_code_line(line: str) -> bool:
    return _CODE_LINE.match(line.lstrip()) is not None


def _opens_nothing(opening: re.Match[str]) -> bool:
    """A backtick fence whose info string holds a backtick is inline code (CommonMark)."""
    return opening["fence"][0] == "`" and "`" in opening["info"]


def extract_code(answer: str, *, entry_point: str | None = None) -> tuple[str, bool]:
    """The Python block to run, else the whole text.

    Only Python blocks with some code in them are candidates: ```` ```python ````, ```` ```py ````,
    ```` ```python3 ```` and bare ```` ``` ```` fences that hold a line of code
    (`Block.is_python`), and code that the model opened without a fence and closed with a bare
    one (`_headless_block`). A block in another language
    (```` ```bash ````, ```` ```text ````, ```` ```output ````, ```` ```cpp ````) is never chosen:
    it holds shell commands, expected output or another program, and running it would turn an
    answer's illustration into its solution. Its contents are skipped, fences inside included.
    An answer whose only blocks are in other languages has no Python block.

    Order of preference, when the caller names the `entry_point` the verifier will call:
      1. the last complete block that defines it (see `Block.defines`): a model often follows
         its solution with a block of usage examples, or rewrites the solution, and the last
         definition is the one it settled on;
      2. an unterminated last block that defines it (the answer was cut at the length limit,
         perhaps only in its trailing examples);
      3. the last complete block, then an unterminated one, as without an entry point.
    Without an entry point (stdin programs, checkers): the last complete block, then an
    unterminated last block.

    Returns (code, fenced): `fenced` is False when no Python block was found, and `code` is then
    the whole answer, so that the caller can say "no code block" instead of reporting prose as a
    syntax error, and can still run an answer that is bare code.
    """
    python = [b for b in fenced_blocks(answer) if b.is_python and b.code.strip()]
    tiers = [python]
    if entry_point:
        defining = [b for b in python if b.defines(entry_point)]
        tiers.insert(0, defining)
    for tier in tiers:
        for closed in (True, False):
            chosen = [b for b in tier if b.closed is closed]
            if chosen:
                return chosen[-1].code, True
    return answer.strip("\n"), False
