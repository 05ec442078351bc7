"""The live ``/openapi.json`` says what the routes do: who may call them, what they take
and every status they answer, errors in the one shape of API.md §2. That the server
answers no status the document leaves out is checked by test_openapi_fuzz.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from harness import RunningServer

_OPEN = {"/healthz", "/readyz", "/metrics"}
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture
async def document(server: RunningServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_authenticated_operation_requires_the_bearer_scheme(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert schemes["APIKeyQuery"]["in"] == "query"
    assert schemes["APIKeyQuery"]["name"] == "access_token"
    operations = _operations(document)
    assert len(operations) >= 14
    for method, path, operation in operations:
        if path in _OPEN:
            assert "security" not in operation, (method, path)
            assert "401" not in operation["responses"], (method, path)
            continue
        assert {"HTTPBearer": []} in operation["security"], (method, path)
        assert "401" in operation["responses"], (method, path)
    # The stream alone takes the token in the query too, for EventSource.
    stream = document["paths"]["/realtime/stream"]["get"]
    assert stream["security"] == [{"HTTPBearer": []}, {"APIKeyQuery": []}]
    upload = document["paths"]["/realtime/upload"]["post"]
    assert upload["security"] == [{"HTTPBearer": []}]


def test_every_error_status_is_documented_in_the_error_shape(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is not what we answer
    for method, path, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = answer["content"]["application/json"]["schema"]
            if path == "/readyz":
                assert schema == {"$ref": "#/components/schemas/NotReady"}
                assert schemas["NotReady"]["properties"]["error"] == {
                    "$ref": "#/components/schemas/ErrorDetail"
                }
            else:
                assert schema == _ERROR, (method, path, status)
            assert answer["description"], (method, path, status)


# What each operation answers besides success, as the code and tests/http show it.
_ANSWERS = {
    ("POST", "/realtime/session"): {400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 502, 503},
    ("GET", "/realtime/session/{session_id}"): {400, 401, 403, 404, 503},
    ("POST", "/realtime/commit"): {400, 401, 403, 404, 409, 503},
    ("POST", "/realtime/text"): {400, 401, 403, 404, 408, 409, 413, 415, 422, 503},
    ("POST", "/realtime/interrupt"): {400, 401, 403, 404, 409, 422, 503},
    ("POST", "/realtime/end"): {400, 401, 403, 404, 408, 413, 415, 422, 503},
    ("GET", "/realtime/stream"): {400, 401, 403, 404, 409, 422, 429, 502, 503},
    ("POST", "/realtime/upload"): {400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503},
    ("GET", "/conversations"): {400, 401, 403, 422},
    ("GET", "/conversations/{conversation_id}"): {400, 401, 403, 404},
    ("DELETE", "/conversations/{conversation_id}"): {400, 401, 403, 404, 503},
    ("GET", "/readyz"): {503},
}


def test_each_operation_documents_the_errors_it_answers(document: dict[str, Any]) -> None:
    for (method, path), statuses in _ANSWERS.items():
        responses = document["paths"][path][method.lower()]["responses"]
        documented = {int(status) for status in responses if int(status) >= 400}
        assert statuses <= documented, (method, path, statuses - documented)
    assert set(document["paths"]["/realtime/session"]["post"]["responses"]) >= {"201"}
    assert set(document["paths"]["/conversations/{conversation_id}"]["delete"]["responses"]) >= {
        "204"
    }


def test_upload_takes_raw_audio_in_both_content_types(document: dict[str, Any]) -> None:
    upload = document["paths"]["/realtime/upload"]["post"]
    body = upload["requestBody"]
    assert body["required"] is True
    binary = {"schema": {"type": "string", "format": "binary"}}
    assert body["content"] == {"application/octet-stream": binary, "audio/pcm": binary}
    names = {p["name"] for p in upload["parameters"]}
    assert {"conversationId", "seq", "sampleRate"} <= names


def test_json_routes_document_their_bodies(document: dict[str, Any]) -> None:
    session = document["paths"]["/realtime/session"]["post"]["requestBody"]
    fields = session["content"]["application/json"]["schema"]["properties"]
    assert fields["inputSampleRate"]["enum"] == [8000, 16000, 24000, 48000]
    assert fields["outputSampleRate"]["enum"] == [8000, 16000, 24000, 48000]
    text = document["paths"]["/realtime/text"]["post"]["requestBody"]
    assert text["required"] is True
    assert set(text["content"]["application/json"]["schema"]["required"]) == {
        "conversationId",
        "text",
    }
    assert (
        "application/json" in document["paths"]["/realtime/end"]["post"]["requestBody"]["content"]
    )
    stream = document["paths"]["/realtime/stream"]["get"]
    rates = {p["name"]: p["schema"] for p in stream["parameters"] if "SampleRate" in p["name"]}
    assert rates["inputSampleRate"]["enum"] == [8000, 16000, 24000, 48000]


def test_metrics_is_plain_text_and_the_stream_an_event_stream(document: dict[str, Any]) -> None:
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    stream = document["paths"]["/realtime/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]


def test_readyz_documents_its_503(document: dict[str, Any]) -> None:
    responses = document["paths"]["/readyz"]["get"]["responses"]
    assert set(responses) == {"200", "503"}
    not_ready = document["components"]["schemas"]["NotReady"]
    assert set(not_ready["required"]) == {"error", "checks"}


def test_every_operation_has_a_description(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        assert len(operation.get("description", "")) > 20, (method, path)
        assert operation.get("tags"), (method, path)


def test_the_other_transports_are_named_with_where_to_read_about_them(
    document: dict[str, Any],
) -> None:
    description = document["info"]["description"]
    for named in ("/v1/realtime", "/socket.io/", "namespace `/realtime`", "docs/clients.md"):
        assert named in description
    # WebSocket routes are no operations.
    assert "/v1/realtime" not in document["paths"]
