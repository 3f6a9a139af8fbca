from sandbox import extract_code


def test_last_python_block_wins():
    answer = "First try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\nDone."
    assert extract_code(answer) == ("print(2)", True)


def test_bare_fence_and_unclosed_fence():
    assert extract_code("```\nx = 1\n```") == ("x = 1", True)
    assert extract_code("text\n```py\nx = 2\n") == ("x = 2", True)


def test_other_languages_are_not_python():
    assert extract_code("```cpp\nint main(){}\n```") == ("```cpp\nint main(){}\n```", False)


def test_no_fence_gives_whole_text():
    assert extract_code("\nprint(3)\n") == ("print(3)", False)
