"""Property-based requests generated from /openapi.json: no input gives a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from latentrec import fit, save
from latentrec.serving import create_app

BOUNDS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_no_input_gives_a_server_error(small_split, tmp_path):
    net, _ = fit(small_split, "dot", epochs=1, progress=False)
    app = create_app(save(net, tmp_path / "model", small_split.train))
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
