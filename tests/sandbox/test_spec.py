import pytest
from pydantic import ValidationError

from sandbox import CheckerSpec, FunctionTestsSpec, IoTestsSpec, UnitTestsSpec, parse_spec


def test_parses_each_type():
    assert isinstance(parse_spec({"type": "io_tests", "tests": [{"output": "1"}]}), IoTestsSpec)
    spec = parse_spec('{"type": "function_tests", "entry_point": "f", "tests": [{"expected": 1}]}')
    assert isinstance(spec, FunctionTestsSpec) and spec.tests[0].args == []
    assert isinstance(parse_spec({"type": "checker", "code": "def check(o): 1"}), CheckerSpec)
    unit = parse_spec({"type": "unit_tests", "entry_point": "f", "test_code": "assert f() == 1"})
    assert isinstance(unit, UnitTestsSpec) and unit.prelude == "" and unit.time_limit_s == 2.0


@pytest.mark.parametrize(
    "data, field",
    [
        ({"type": "io_tests", "tests": []}, "tests"),
        ({"type": "io_tests", "tests": [{"input": "1"}]}, "output"),
        ({"type": "io_tests", "tests": [{"output": "1"}], "time_limit_s": 0}, "time_limit_s"),
        ({"type": "io_tests", "tests": [{"output": "1"}], "memory_limit_mb": 1}, "memory_limit_mb"),
        (
            {"type": "function_tests", "entry_point": "1bad", "tests": [{"expected": 1}]},
            "entry_point",
        ),
        ({"type": "checker", "code": ""}, "code"),
        ({"type": "checker", "code": "x", "mode": "other"}, "mode"),
        ({"type": "unit_tests", "entry_point": "f"}, "test_code"),
        ({"type": "unit_tests", "entry_point": "f x", "test_code": "assert 1"}, "entry_point"),
        ({"type": "unit_tests", "entry_point": "f", "test_code": ""}, "test_code"),
        ({"type": "io_tests", "tests": [{"output": "1"}], "prelude": 3}, "prelude"),
        ({"type": "shell"}, "type"),
        ({"type": "io_tests", "tests": [{"output": "1"}], "surprise": 1}, "surprise"),
    ],
)
def test_errors_name_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        parse_spec(data)
    locations = {str(part) for error in info.value.errors() for part in error["loc"]}
    assert field in locations or field in str(info.value)
