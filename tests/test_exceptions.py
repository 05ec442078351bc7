"""The core's errors: each transport edge maps them, and they cross between workers
as themselves."""

from __future__ import annotations

import pytest

from voxrelay import exceptions
from voxrelay.errors import http_status
from voxrelay.links.channel import error_from, error_header

CASES = [
    (exceptions.Unauthorized("no token"), 401, "unauthorized"),
    (exceptions.InvalidRequest("bad id"), 400, "invalid_request"),
    (exceptions.NotFound("conversation"), 404, "not_found"),
    (exceptions.ConversationBusy(), 409, "conversation_busy"),
    (exceptions.NoActiveSession(), 409, "no_active_session"),
    (exceptions.SessionEnded(), 409, "no_active_session"),
    (exceptions.QuotaExceeded("the daily token quota is used up"), 429, "quota_exceeded"),
    (exceptions.ServerClosing(), 503, "server_shutdown"),
    (exceptions.UpstreamUnavailable("refused: HTTP 401"), 502, "upstream_unavailable"),
    (exceptions.OwnerUnavailable(), 503, "owner_unavailable"),
    (exceptions.VoxrelayError("the owning worker failed"), 500, "internal_error"),
]


@pytest.mark.parametrize(("error", "status", "code"), CASES)
def test_each_core_error_has_one_http_status_and_code(
    error: exceptions.VoxrelayError, status: int, code: str
) -> None:
    assert (http_status(error), error.code) == (status, code)


@pytest.mark.parametrize(("error", "status", "code"), CASES)
def test_a_core_error_crosses_the_worker_link_as_itself(
    error: exceptions.VoxrelayError, status: int, code: str
) -> None:
    revived = error_from(error_header(error))
    assert type(revived) is type(error)
    assert (revived.message, revived.code, http_status(revived)) == (error.message, code, status)


def test_an_unknown_kind_from_a_sibling_is_an_internal_error() -> None:
    revived = error_from({"kind": "SomethingNew", "message": "odd"})
    assert (type(revived), revived.message, http_status(revived)) == (
        exceptions.VoxrelayError,
        "odd",
        500,
    )


def test_not_found_says_what() -> None:
    assert exceptions.NotFound("conversation").message == "conversation not found"
