"""Fixtures of the launcher's tests."""
from __future__ import annotations

import pytest

from sluice.launcher import cengine


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest) -> str:
    """Each spawn engine in turn: the compiled one (where pip built it) and the pure-Python one."""
    if request.param == "c" and not cengine.AVAILABLE:
        pytest.skip("the compiled engine was not built here (see test_the_compiled_engine_was_built...)")
    return str(request.param)
