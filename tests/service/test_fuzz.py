"""schemathesis against the gateway's own OpenAPI schema, over real HTTP: no input, valid or
not, may cause a 5xx, and answers match the documented status codes and schemas. Bounded: a few
dozen examples per operation and mode."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sdpo.settings import Settings
from service.app import create_app

from .conftest import gateway_in_thread

MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NOT_READY_IS_503 = "/readyz"  # without workers, 503 is its documented answer
APP_SCHEMA = create_app(Settings(redis_url="redis://unused")).openapi()
CASES = [
    (method.upper(), path, mode)
    for path, methods in APP_SCHEMA["paths"].items()
    for method, spec in methods.items()
    for mode in [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    if mode is GenerationMode.POSITIVE or spec.get("parameters") or spec.get("requestBody")
]


@pytest.fixture(scope="module")
def api_schema(redis_server, tmp_path_factory):
    set_hypothesis_home_dir(str(tmp_path_factory.mktemp("hypothesis")))  # not the work tree
    with gateway_in_thread(Settings(redis_url=redis_server.url)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_input_causes_a_server_error(api_schema, method, path, mode):
    schema, url = api_schema
    checks = [c for c in CHECKS if path != NOT_READY_IS_503 or c is not not_a_server_error]

    @given(case=schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate(base_url=url, checks=checks, timeout=10)

    check()
