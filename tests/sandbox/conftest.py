import shutil

import pytest

from sandbox import Sandbox, SandboxSettings


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is required for the sandbox tests (make test installs it)")
    return Sandbox(SandboxSettings(max_parallel=4))
