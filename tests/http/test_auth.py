"""Device-token authentication and per-user isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from harness import RunningServer

from voxrelay.client import VoxrelayClient
from voxrelay.store import Store

PROTECTED = [
    ("POST", "/realtime/session"),
    ("GET", "/realtime/session/sess_x"),
    ("GET", "/conversations"),
    ("GET", "/conversations/conv_x"),
    ("DELETE", "/conversations/conv_x"),
    ("GET", "/realtime/stream"),
    ("POST", "/realtime/upload?conversationId=conv_x"),
    ("POST", "/realtime/commit?conversationId=conv_x"),
    ("POST", "/realtime/text"),
    ("POST", "/realtime/interrupt?conversationId=conv_x"),
    ("POST", "/realtime/end"),
]


def _unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_route_needs_a_token(server: RunningServer, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        _unauthorized(await http.request(method, path))
        bad = {"Authorization": "Bearer vxr_not-a-real-token"}
        _unauthorized(await http.request(method, path, headers=bad))


async def test_revoked_token_is_refused(server: RunningServer) -> None:
    token = await server.token("old-phone", "alice")
    async with VoxrelayClient(server.url, token) as client:
        assert await client.conversations() == []
        store = await Store.open(server.settings.database_url)
        try:
            assert await store.revoke_token("old-phone") == 1
        finally:
            await store.close()
        # A token the process let in lately is trusted until its next revocation
        # check: refused within a second (tests/test_revocation.py times it).
        for _ in range(100):
            answer = await client.http.get("/conversations")
            if answer.status_code != 200:
                break
            await asyncio.sleep(0.02)
        _unauthorized(answer)


async def test_query_token_only_on_the_stream(server: RunningServer) -> None:
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        _unauthorized(await http.get("/conversations", params={"access_token": token}))
        async with http.stream("GET", "/realtime/stream", params={"access_token": token}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")


async def test_another_users_conversation_looks_unknown(server: RunningServer) -> None:
    async with (
        VoxrelayClient(server.url, await server.token("alice-watch", "alice")) as alice,
        VoxrelayClient(server.url, await server.token("bob-phone", "bob")) as bob,
    ):
        session = await alice.create_session()
        conversation_id = session["conversationId"]
        await alice.text(conversation_id, "private")

        def same_as_unknown(mine: httpx.Response, unknown: httpx.Response) -> None:
            assert mine.status_code == unknown.status_code == 404
            assert mine.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"

        for method, path in [
            ("GET", "/conversations/{}"),
            ("DELETE", "/conversations/{}"),
            ("POST", "/realtime/commit?conversationId={}"),
            ("POST", "/realtime/interrupt?conversationId={}"),
        ]:
            same_as_unknown(
                await bob.http.request(method, path.format(conversation_id)),
                await bob.http.request(method, path.format("conv_unknown")),
            )
        same_as_unknown(
            await bob.http.get(f"/realtime/session/{session['id']}"),
            await bob.http.get("/realtime/session/sess_unknown"),
        )
        same_as_unknown(
            await bob.http.post(
                "/realtime/upload",
                params={"conversationId": conversation_id},
                content=b"\0\0",
                headers={"Content-Type": "audio/pcm"},
            ),
            await bob.http.post(
                "/realtime/upload",
                params={"conversationId": "conv_unknown"},
                content=b"\0\0",
                headers={"Content-Type": "audio/pcm"},
            ),
        )
        same_as_unknown(
            await bob.http.post(
                "/realtime/text", json={"conversationId": conversation_id, "text": "hi"}
            ),
            await bob.http.post(
                "/realtime/text", json={"conversationId": "conv_unknown", "text": "hi"}
            ),
        )
        stream = await bob.http.get("/realtime/stream", params={"conversationId": conversation_id})
        assert stream.status_code == 404
        assert stream.json()["error"]["code"] == "not_found"
        busy = await bob.http.post("/realtime/session", json={"conversationId": conversation_id})
        assert busy.status_code == 404
        assert await bob.conversations() == []
        assert [c["id"] for c in await alice.conversations()] == [conversation_id]
        assert len((await alice.conversation(conversation_id))["messages"]) == 2


def _forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


def _naming(user: str, cid: str, sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that takes ``userId``, naming ``user`` about conversation ``cid``."""
    query = {"params": {"userId": user}}
    about = {"params": {"userId": user, "conversationId": cid}}
    pcm = {"content": b"\0\0", "headers": {"Content-Type": "audio/pcm"}}
    return [
        ("GET", "/conversations", query),
        ("GET", f"/conversations/{cid}", query),
        ("DELETE", f"/conversations/{cid}", query),
        ("POST", "/realtime/session", {"json": {"userId": user}}),
        ("POST", "/realtime/session", {"json": {"userId": user, "conversationId": cid}}),
        ("GET", f"/realtime/session/{sid}", query),
        ("GET", "/realtime/stream", about),
        ("POST", "/realtime/upload", {**about, **pcm}),
        ("POST", "/realtime/commit", about),
        ("POST", "/realtime/interrupt", about),
        ("POST", "/realtime/text", {"json": {"userId": user, "conversationId": cid, "text": "x"}}),
        ("POST", "/realtime/end", {"json": {"userId": user, "conversationId": cid}}),
    ]


async def test_a_device_token_never_acts_for_another_user(server: RunningServer) -> None:
    async with (
        VoxrelayClient(server.url, await server.token("alice-watch", "alice")) as alice,
        VoxrelayClient(server.url, await server.token("my-watch", None)) as own,
        VoxrelayClient(server.url, await server.token("bob-phone", "bob")) as bob,
    ):
        session = await alice.create_session()
        cid = session["conversationId"]
        await alice.text(cid, "private")
        for device in (own, bob):
            for method, path, request in _naming("alice", cid, session["id"]):
                _forbidden(await device.http.request(method, path, **request))
        # Without userId, its own user: none of alice's conversations.
        assert await own.conversations() == []
        assert (await own.http.get(f"/conversations/{cid}")).status_code == 404
        # Naming its own user is no more than not naming one.
        assert (await bob.http.get("/conversations", params={"userId": "bob"})).status_code == 200
        # Nothing of alice's was touched.
        state = await alice.http.get(f"/realtime/session/{session['id']}")
        assert state.json()["session"]["status"] == "active"
        assert len((await alice.conversation(cid))["messages"]) == 2


async def test_two_device_tokens_without_user_are_two_users(server: RunningServer) -> None:
    async with (
        VoxrelayClient(server.url, await server.token("my-watch", None)) as first,
        VoxrelayClient(server.url, await server.token("my-watch", None)) as second,
    ):
        session = await first.create_session()
        assert [c["id"] for c in await first.conversations()] == [session["conversationId"]]
        assert await second.conversations() == []


async def test_a_service_token_acts_for_the_user_it_names(server: RunningServer) -> None:
    async with (
        VoxrelayClient(server.url, await server.service_token()) as service,
        VoxrelayClient(server.url, await server.token("alice-watch", "alice")) as alice,
    ):
        mine = await alice.create_session()
        await alice.text(mine["conversationId"], "hello")
        session = await service.create_session(userId="carol")
        carols = await service.http.get("/conversations", params={"userId": "carol"})
        assert [c["id"] for c in carols.json()["conversations"]] == [session["conversationId"]]
        alices = await service.http.get(
            f"/conversations/{mine['conversationId']}", params={"userId": "alice"}
        )
        messages = alices.json()["conversation"]["messages"]
        assert [m["text"] for m in messages][:1] == ["hello"]
        # Under another user's name, alice's conversation is unknown.
        other = await service.http.get(
            f"/conversations/{mine['conversationId']}", params={"userId": "carol"}
        )
        assert other.status_code == 404
        # It must name someone, and never a device's own user.
        for method, path, request in _naming("", mine["conversationId"], mine["id"]):
            unnamed = await service.http.request(method, path, **request)
            assert unnamed.status_code == 400, (path, unnamed.text)
            assert unnamed.json()["error"]["code"] == "invalid_request"
        own_user = "device:tok_000000000000000000000000"
        _forbidden(await service.http.get("/conversations", params={"userId": own_user}))
    async with VoxrelayClient(server.url, await server.token("carol-watch", "carol")) as carol:
        assert [c["id"] for c in await carol.conversations()] == [session["conversationId"]]
