"""Runs inside the sandbox, in unit mode: assertion rewriting for assert-based tests.

Like pytest's, it rewrites each `assert` of the test code so that the values of its parts are
kept as they are evaluated, once, in order (short-circuits included): the two sides of a
comparison (or every operand of a chain), the operand of `not`, otherwise the whole expression,
plus every call to the candidate inside it. A failing assert is then explained with those
values, turned into text here, inside the sandbox, because they are the candidate's objects.

Standard library only, and nothing of ours: `harness.py` executes this file's source.
"""

import ast
import itertools

START = "__sdpo_assert_start__"
KEEP = "__sdpo_assert_keep__"
MAX_REPR_CHARS = 250
MAX_SOURCE_CHARS = 500

_kept = {}  # assert key -> {slot: value} of its latest evaluation
_shown = {}  # assert key -> (statement source, kind, [(slot, source)], [(slot, source)])
_starts = {}  # assert key -> (first line, column, last line) of the statement


def _start(key):
    _kept[key] = {}


def _keep(key, slot, value):
    _kept.setdefault(key, {})[slot] = value  # a lambda in an assert may run after it
    return value


class _Rewriter(ast.NodeTransformer):
    def __init__(self, source, candidate_names):
        self.source = source
        self.candidate_names = candidate_names
        self.keys = itertools.count()

    def visit_Assert(self, node):
        key = next(self.keys)
        slots = itertools.count()
        test = node.test
        if isinstance(test, ast.Compare):
            kind = "compare"
            operands = [test.left, *test.comparators]
            parts = [(next(slots), self._text(o)) for o in operands]
            calls = self._calls(operands, key, slots)
            wrapped = [
                self._keep(key, slot, o) for (slot, _), o in zip(parts, operands, strict=True)
            ]
            test = ast.Compare(left=wrapped[0], ops=test.ops, comparators=wrapped[1:])
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            kind = "not"
            parts = [(next(slots), self._text(test.operand))]
            calls = self._calls([test.operand], key, slots)
            test = ast.UnaryOp(op=ast.Not(), operand=self._keep(key, parts[0][0], test.operand))
        else:
            kind = "value"
            parts = [(next(slots), self._text(test))]
            calls = self._calls([test], key, slots)
            test = self._keep(key, parts[0][0], test)
        _shown[key] = (self._text(node), kind, parts, calls)
        _starts[key] = (node.lineno, node.col_offset, node.end_lineno)
        start = ast.Call(ast.Name(START, ast.Load()), [ast.Constant(key)], [])
        node.test = ast.BoolOp(op=ast.Or(), values=[start, test])
        return ast.fix_missing_locations(ast.copy_location(node, node))

    def _calls(self, roots, key, slots):
        """Wrap the candidate's calls below the roots (not the roots themselves)."""
        found = []
        for root in roots:
            for parent in ast.walk(root):
                for name, child in ast.iter_fields(parent):
                    if isinstance(child, list):
                        for i, item in enumerate(child):
                            if self._is_candidate_call(item):
                                slot = next(slots)
                                found.append((slot, self._text(item)))
                                child[i] = self._keep(key, slot, item)
                    elif self._is_candidate_call(child):
                        slot = next(slots)
                        found.append((slot, self._text(child)))
                        setattr(parent, name, self._keep(key, slot, child))
        return found

    def _is_candidate_call(self, node):
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.candidate_names
        )

    def _keep(self, key, slot, node):
        call = ast.Call(
            ast.Name(KEEP, ast.Load()), [ast.Constant(key), ast.Constant(slot), node], []
        )
        return ast.copy_location(call, node)

    def _text(self, node):
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        return text if len(text) <= MAX_SOURCE_CHARS else text[:MAX_SOURCE_CHARS] + "..."


def compile_tests(source, filename, candidate_names):
    """The test code with its asserts rewritten; raises SyntaxError as `compile` does."""
    tree = ast.parse(source, filename)
    tree = _Rewriter(source, candidate_names).visit(tree)
    return compile(tree, filename, "exec")


def install(namespace):
    namespace[START] = _start
    namespace[KEEP] = _keep


def _repr(value):
    try:
        text = repr(value)
    except BaseException as exc:  # the candidate's own __repr__ may fail
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= MAX_REPR_CHARS else text[:MAX_REPR_CHARS] + "..."


def explain(exc, filename):
    """The report of an assert of the test code that failed, or None if `exc` came from
    elsewhere (an assert in the candidate's own code is the candidate's runtime error)."""
    key = _raising_assert(exc, filename)
    if key is None:
        return None
    source, kind, parts, _ = _shown[key]
    kept = _kept.get(key, {})
    values = [[text, _repr(kept[slot])] for slot, text in parts if slot in kept]
    message = _repr(exc.args[0]) if exc.args else ""
    return {"status": "assertion", "test": source, "kind": kind, "values": values,
            "calls": calls_of(exc, filename), "message": message}  # fmt: skip


def calls_of(exc, filename):
    """What the candidate's calls inside the raising assert returned before `exc` (e.g. the
    None that a TypeError in the test line came from): [[source, repr], ...]."""
    key = _raising_assert(exc, filename)
    if key is None:
        return []
    kept = _kept.get(key, {})
    return [[text, _repr(kept[slot])] for slot, text in _shown[key][3] if slot in kept]


def _raising_assert(exc, filename):
    """The key of the rewritten assert that `exc` was raised in, if any."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code.co_filename != filename:
        return None
    return _statement_at(tb)


def _statement_at(tb):
    """The assert that raised: the last one starting at or before the raising instruction,
    on a line it spans."""
    positions = list(tb.tb_frame.f_code.co_positions())
    line, _, col, _ = positions[tb.tb_lasti // 2]
    line, col = line or tb.tb_lineno, col or 0
    spans = [(first, column, key) for key, (first, column, last) in _starts.items()
             if first <= line <= last and (first, column) <= (line, col)]  # fmt: skip
    return max(spans)[2] if spans else None
