import pytest

from sandbox.compare import tokens_match, values_match


@pytest.mark.parametrize(
    "got, want, ok",
    [
        ("1 2 3\n", "1 2 3", True),
        ("1  2\n\n3  ", "1 2 3", True),
        ("1 2", "1 2 3", False),
        ("3.0000001", "3", True),
        ("3.1", "3", False),
        ("1e9", "1000000000.0001", True),
        ("abc", "abd", False),
        ("YES", "yes", False),
        ("nan", "nan", True),
        ("", "", True),
    ],
)
def test_tokens(got, want, ok):
    assert tokens_match(got, want, 1e-6) is ok


@pytest.mark.parametrize(
    "got, want, ok",
    [
        ([1, [2, 3]], [1, [2, 3]], True),
        ([1, 2], [1, 2, 3], False),
        (0.1 + 0.2, 0.3, True),
        (True, 1, False),
        (1, 1.0, True),
        ({"a": [1]}, {"a": [1]}, True),
        ({"a": 1}, {"b": 1}, False),
        ("x", "x", True),
        (None, None, True),
    ],
)
def test_values(got, want, ok):
    assert values_match(got, want, 1e-9) is ok
