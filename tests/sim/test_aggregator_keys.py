"""The aggregator's 403s for key problems, in the one-api/new-api shapes, beside moderation."""

from __future__ import annotations

import httpx
import pytest

from tests.sim.helpers import generate, set_credits, set_faults

NO_QUOTA = {
    "error": {
        "message": "user quota is not enough",
        "type": "one_api_error",
        "param": None,
        "code": "insufficient_user_quota",
    }
}


def no_permission(model: str) -> dict[str, object]:
    message = f"该令牌无权使用模型 {model}"
    return {"error": {"message": message, "type": "new_api_error", "param": None, "code": None}}


async def test_quota_key_is_refused_until_it_is_given_credits(client: httpx.AsyncClient) -> None:
    refused = await generate(client, "sk-quota-1")
    assert (refused.status_code, refused.json()) == (403, NO_QUOTA)
    await set_credits(client, "sk-quota-1", 5)
    assert (await generate(client, "sk-quota-1")).status_code == 200
    assert (await generate(client, "sk-quota-1")).status_code == 200


async def test_any_key_without_credits_answers_the_quota_403(client: httpx.AsyncClient) -> None:
    await set_credits(client, "k2", 0)
    refused = await generate(client, "k2")
    assert (refused.status_code, refused.json()) == (403, NO_QUOTA)
    assert (await generate(client, "k1")).status_code == 200


async def test_quota_is_checked_after_the_request_is_valid(client: httpx.AsyncClient) -> None:
    invalid = await generate(client, "sk-quota-1", n=1)
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "n"


@pytest.mark.parametrize("model", ["flux-2-max", "flux-kontext-pro"])
async def test_key_without_model_permission_answers_new_apis_403(
    client: httpx.AsyncClient, model: str
) -> None:
    refused = await generate(client, "sk-noperm-1", model=model)
    assert (refused.status_code, refused.json()) == (403, no_permission(model))


async def test_marked_keys_must_still_be_known(client: httpx.AsyncClient) -> None:
    for key in ("sk-quota-2", "sk-noperm-2"):
        refused = await generate(client, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_moderation_403_keeps_its_own_shape(client: httpx.AsyncClient) -> None:
    refused = await generate(client, prompt="a forbidden fox")
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "message": "Your request was rejected by the safety system.",
            "type": "invalid_request_error",
            "param": None,
            "code": "content_policy_violation",
        }
    }


async def test_out_of_credit_fault_still_answers_429(client: httpx.AsyncClient) -> None:
    await set_faults(client, no_credit_keys=["k1"])
    refused = await generate(client)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
