"""Each model API's error JSON: error types by HTTP status, and a scripted error's body."""

from __future__ import annotations

from typing import Any

from tests.support.fake_model_server.recorded import Api
from tests.support.fake_model_server.scripting import Scripted

ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

OPENAI_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


def _error_body(api: Api, scripted: Scripted, request_id: str) -> Any:
    if scripted.body is not None:
        return scripted.body
    status = scripted.status
    message = scripted.message or f"fake {status} error"
    if api == "openai":
        return {
            "error": {
                "message": message,
                "type": scripted.error_type or OPENAI_ERROR_TYPES.get(status, "server_error"),
                "param": None,
                "code": scripted.error_code,
            }
        }
    err: dict[str, Any] = {
        "type": scripted.error_type or ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
        "message": message,
    }
    if scripted.error_code is not None:
        err["details"] = {"error_code": scripted.error_code}
    return {"type": "error", "error": err, "request_id": request_id}
