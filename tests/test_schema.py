"""Property-based requests generated from /openapi.json: no input gives a server error, on a
model with integer ids and on one with string ids."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from latentrec.serving import create_app

from .test_serving import model_dir_for

BOUNDS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_no_input_gives_a_server_error(kind, small_split, tmp_path_factory):
    app = create_app(model_dir_for(kind, small_split, tmp_path_factory))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @BOUNDS
        @given(case=operation.as_strategy())
        def no_server_error(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)

        no_server_error()
        checked.append(operation.label)
    assert len(checked) >= 6, checked
