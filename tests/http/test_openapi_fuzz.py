"""Every operation of the live ``/openapi.json``, called by schemathesis with generated
inputs (valid and invalid) and a valid token: never a 5xx, every error answer is
JSON in the contract's shape (API.md §2) ``{"error": {"code", "message"}}``, and every
answer's status, content type and (where declared) body are ones the document declares
for that operation.

Against a real server with the ``echo`` provider: on SQLite with a device token bound
to a user, and on PostgreSQL with a device token of a user of its own.
Operations that name a conversation or session run twice: with the ids as generated
(nearly always unknown: 404), and aimed at a live session started for each example, so
that the other inputs reach past the lookup. Every 5xx this found was fixed; the cases
are kept in test_nul_characters.py."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import services
from harness import RunningServer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from voxrelay.config import Settings

_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


# `GET /realtime/stream` is left out: a request it accepts is an SSE stream that stays
# open while the session lives, so a generated call would hang until its timeout (its
# errors are covered in tests/http/test_stream.py). Uploads stay in: a generated body
# is short, so the request ends.
_HANGS = "/realtime/stream"


def assert_contract_error(response: Response) -> None:
    """An error answer as API.md §2 has it: JSON ``{"error": {"code", "message"}}``."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"{where}: {content_type!r} {response.text[:200]!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and "error" in body, f"{where}: {body!r}"
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message"} <= set(error), f"{where}: {body!r}"
    assert isinstance(error["code"], str) and _CODE.match(error["code"]), f"{where}: {body!r}"
    assert isinstance(error["message"], str) and error["message"], f"{where}: {body!r}"
    assert "Traceback" not in response.text, f"{where}: {response.text[:200]!r}"


def _call_and_check(case: Any, http: requests.Session) -> None:
    # The document declares the bearer scheme, so schemathesis makes up an Authorization
    # header of its own: the valid one overrides it. In negative mode it also leaves the
    # token out on purpose, and then the answer must be the 401 the document declares.
    token = str(http.headers["Authorization"])
    response = case.call(session=http, headers={"Authorization": token}, timeout=10)
    sent = response.request.headers.get("Authorization")
    if sent != token and list(case.operation.security.iter_parameters()):
        assert response.status_code == 401, f"{sent!r} is no token, yet the call is authorized"
    else:
        assert response.status_code != 401, "the token is valid: the call is authorized"
    assert response.status_code < 500, (
        f"{case.as_curl_command()} -> {response.status_code} {response.text[:300]!r}"
    )
    if response.status_code >= 400:
        assert_contract_error(response)
    # The document tells the truth about what this operation answered.
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )


# The names an operation may give a live session's ids under (path, query or body).
_IDS = {
    "conversation_id": "conversationId",
    "conversationId": "conversationId",
    "session_id": "id",
    "sessionId": "id",
}


def _names_a_session(operation: Any) -> bool:
    declared = [p.name for p in operation.iter_parameters()]
    return any(name in _IDS for name in declared) or operation.path == "/realtime/text"


def _aim_at_a_live_session(case: Any, http: requests.Session, base: str) -> None:
    """Point the case at a live session of the token's own user, started for it, so
    that generated inputs reach past the lookup of a random id."""
    started = http.post(f"{base}/realtime/session", json={"turnDetection": "manual"}, timeout=10)
    assert started.status_code == 201, started.text
    session = started.json()["session"]
    declared = {p.name for p in case.operation.query}
    for name, field in _IDS.items():
        if name in case.path_parameters:
            case.path_parameters[name] = session[field]
        if name in declared:
            case.query = {**(case.query or {}), name: session[field]}
        if isinstance(case.body, dict) and name in case.body:
            case.body[name] = session[field]


def _examples(
    operation: Any, mode: GenerationMode, aimed: bool, http: requests.Session, base: str
) -> Callable[[], None]:
    # Few examples per operation and way: the whole run stays within seconds. One server
    # for every example.
    @hypothesis_settings(
        max_examples=10,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        if aimed:
            _aim_at_a_live_session(case, http, base)
        _call_and_check(case, http)

    return run


def _fuzz(server: RunningServer, token: str) -> None:
    """Each operation, with inputs that fit its schema and inputs that do not, first as
    generated, then (where it names a session) aimed at a live session; every
    operation runs, and the failures of all of them are reported together."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.exclude(path=_HANGS).get_all_operations()]
    assert len(operations) >= 10  # the whole REST surface, not a schema that failed to load
    failures = []
    http = requests.Session()  # one connection for every call
    http.headers["Authorization"] = f"Bearer {token}"
    for operation in operations:
        aims = (False, True) if _names_a_session(operation) else (False,)
        for mode, aimed in itertools.product(GenerationMode, aims):
            try:
                _examples(operation, mode, aimed, http, server.url)()
            except Unsatisfiable:
                pass  # no input breaks this operation's schema (it takes none, or any string)
            except Exception as failure:
                where = "at a live session" if aimed else "as generated"
                failures.append(f"{operation.label} ({mode.value}, {where}): {failure}")
    http.close()
    assert not failures, "\n\n".join(failures)


# SQLite with a token bound to a user; PostgreSQL (whose text cannot hold every string
# SQLite takes) with a device token of a user of its own.
@pytest.fixture(
    params=[("sqlite", "alice"), ("postgresql", None)],
    ids=["sqlite-device-token", "postgresql-own-user-token"],
)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def database_url(backend: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[str]:
    async with services.database(backend[0], tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The server stops before the database it uses is dropped.
    # Every aimed example starts a session of its own: no limit on how many stay live.
    return Settings(database_url=database_url, provider="echo", max_sessions_per_device=0)


def test_every_operation_answers_without_5xx_and_in_the_error_shape(
    server: RunningServer, backend: tuple[str, str | None]
) -> None:
    _fuzz(server, server.call(server.token("watch" if backend[1] else "backend", backend[1])))
