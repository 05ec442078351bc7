"""Device-token authentication and per-user isolation."""

from __future__ import annotations

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
        _unauthorized(await client.http.get("/conversations"))


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


async def test_token_without_user_acts_for_the_named_user(server: RunningServer) -> None:
    async with VoxrelayClient(server.url, await server.token("backend", None)) as service:
        session = await service.create_session(userId="carol")
        mine = await service.conversations()
        assert mine == []  # its own user is device:backend
        carols = await service.http.get("/conversations", params={"userId": "carol"})
        assert [c["id"] for c in carols.json()["conversations"]] == [session["conversationId"]]
    async with VoxrelayClient(server.url, await server.token("carol-watch", "carol")) as carol:
        assert [c["id"] for c in await carol.conversations()] == [session["conversationId"]]
    async with VoxrelayClient(server.url, await server.token("dave-watch", "dave")) as dave:
        ignored = await dave.create_session(userId="carol")  # a bound token ignores userId
        assert [c["id"] for c in await dave.conversations()] == [ignored["conversationId"]]
