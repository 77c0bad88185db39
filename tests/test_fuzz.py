"""Schemathesis against the gateway's own OpenAPI document, on the image endpoints.

Whatever it generates: no 5xx, every error in the OpenAI envelope, and nothing the gateway
refuses ever reaches the upstream.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from gateway.api.openapi import document
from gateway.settings import Settings
from tests.conftest import CLIENT_KEY, Gateway
from tests.helpers import Sim

_doc = document(Settings())
schema = schemathesis.openapi.from_dict(_doc).include(path_regex=r"^/v1/images/")

REFUSED = {400, 401, 403, 404, 409, 413, 415, 422}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_image_endpoints_hold_up(case: schemathesis.Case, gateway: Gateway, sim: Sim) -> None:
    before = len(sim.requests())
    response = case.call(
        base_url=gateway.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=60
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    if response.status_code in REFUSED:
        assert len(sim.requests()) == before, (
            f"a refused request reached the upstream: {response.text}"
        )
