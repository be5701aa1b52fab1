"""The error tree: each error's status and OpenAI fields, a backend's error answer as a
synchronous caller gets it, and the one mapping to HTTP responses."""

from __future__ import annotations

import inspect
import json

import pytest

from batchgate.api.errors import invalid_request, to_response
from batchgate.core import errors
from batchgate.core.ports import BackendResponse


def test_every_error_derives_from_one_base_and_has_a_status() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert all(issubclass(c, errors.BatchgateError) for c in classes)
    assert all(400 <= c.status < 600 and c.type for c in classes)


def answer(status: int, **error: object) -> errors.BackendRejectedError:
    return errors.BackendRejectedError(BackendResponse(status, {"error": error}), retry_after=None)


def test_a_client_error_keeps_the_backends_status_and_fields() -> None:
    refused = answer(
        400, message="too long", type="invalid_request_error", param="messages", code="context_length_exceeded"
    )
    assert (refused.status, refused.param, refused.code, refused.message) == (
        400,
        "messages",
        "context_length_exceeded",
        "too long",
    )
    assert answer(404, message="no such model", code="model_not_found").status == 404


def test_a_429_stays_a_429_with_its_retry_after() -> None:
    limited = errors.BackendRejectedError(BackendResponse(429, {"error": {"message": "slow down"}}), retry_after=2.5)
    assert (limited.status, limited.code, limited.retry_after) == (429, "rate_limit_exceeded", 2.5)
    response = to_response(limited)
    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("3", "2500")


def test_an_upstream_server_error_is_a_502_that_says_so() -> None:
    broken = answer(503, message="overloaded")
    assert (broken.status, broken.code, broken.type) == (502, "upstream_error", "server_error")
    assert "503" in broken.message and "overloaded" in broken.message
    assert broken.response.status_code == 503  # what a batch line records: the upstream's own answer


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_of_the_gateways_own_key_is_not_the_callers_fault(status: int) -> None:
    refused = answer(status, message="Incorrect API key provided", code="invalid_api_key")
    assert (refused.status, refused.code) == (502, "upstream_error")
    assert "www-authenticate" not in to_response(refused).headers


def test_an_upstream_request_timeout_is_a_504() -> None:
    assert (answer(408, message="timeout").status, answer(408).code) == (504, "upstream_timeout")


def test_an_answer_that_is_not_an_openai_error_body_still_maps() -> None:
    odd = errors.BackendRejectedError(BackendResponse(422, {"detail": "nope"}))
    assert (odd.status, odd.type, odd.code) == (422, "invalid_request_error", None)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.UpstreamTimeoutError("late"), 504, "upstream_timeout"),
        (errors.UpstreamUnreachableError("down"), 503, "upstream_unreachable"),
        (errors.BackendError("broken"), 502, "backend_error"),
        (errors.JobLostError("gone"), 409, "job_lost"),
        (errors.BatchgateError("oops"), 500, "internal_error"),
    ],
)
def test_each_error_answers_its_status_and_code(error: errors.BatchgateError, status: int, code: str) -> None:
    response = to_response(error)
    assert response.status_code == status
    assert json.loads(response.body) == {
        "error": {"message": error.message, "type": error.type, "param": None, "code": code}
    }


def test_a_missing_key_is_told_how_to_authenticate() -> None:
    assert to_response(errors.AuthenticationError("no key")).headers["www-authenticate"] == "Bearer"


def test_validation_problems_name_the_parameter_as_openai_does() -> None:
    role = invalid_request([{"type": "literal_error", "loc": ("messages", 0, "role"), "msg": "Input should be 'user'"}])
    assert (role.param, role.code, role.status) == ("messages[0].role", "invalid_value", 400)
    limit = invalid_request([{"type": "int_parsing", "loc": ("query", "limit"), "msg": "not an int"}])
    assert (limit.param, limit.code) == ("limit", "invalid_value")
    missing = invalid_request([{"type": "missing", "loc": ("model",), "msg": "Field required"}], in_body=True)
    assert (missing.param, missing.code) == ("model", "missing_required_parameter")
    assert "'model'" in missing.message
    typed = invalid_request([{"type": "string_type", "loc": ("metadata", "k"), "msg": "not a str"}], in_body=True)
    assert (typed.param, typed.code) == ("metadata.k", "invalid_type")
