"""Who may open ``/v1/realtime``: device tokens as a Bearer header, as the browser
subprotocol ``openai-insecure-api-key.<token>``, or as ``?access_token=``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes.openai_realtime import validate_event
from harness import RunningServer
from openai import AsyncOpenAI
from realtime_ws_client import connect, conversation_id, ws_base
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from voxrelay.client import VoxrelayClient
from voxrelay.store import Store


def _url(server: RunningServer, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"model": "gpt-realtime", **query}.items())
    return f"{ws_base(server)}/realtime?{params}"


async def _refused(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error event and the close code of a connection the server refuses."""
    error = json.loads(await ws.recv())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code


async def test_missing_token_closes_4401(server: RunningServer) -> None:
    async with ws_connect(_url(server)) as ws:
        error, code = await _refused(ws)
    assert code == 4401
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_api_key"
    assert validate_event("ga", "server", error) is None


async def test_unknown_and_revoked_tokens_close_4401(server: RunningServer) -> None:
    client = AsyncOpenAI(api_key="vxr_not-a-real-token", websocket_base_url=ws_base(server))
    async with client.realtime.connect(model="gpt-realtime") as conn:
        error = await conn.recv()
        assert error.type == "error"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    token = await server.token("old-phone", "alice")
    store = await Store.open(server.settings.database_url)
    try:
        await store.revoke_token("old-phone")
    finally:
        await store.close()
    async with ws_connect(
        _url(server), additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        _, code = await _refused(ws)
    assert code == 4401


async def test_browser_subprotocol_form(server: RunningServer) -> None:
    token = await server.token()
    protocols: Any = ["realtime", f"openai-insecure-api-key.{token}"]
    async with ws_connect(_url(server), subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert validate_event("ga", "server", created) is None
        assert json.loads(await ws.recv())["type"] == "conversation.created"

    # The beta dialect, as browsers ask for it.
    protocols = ["realtime", f"openai-insecure-api-key.{token}", "openai-beta.realtime-v1"]
    async with ws_connect(_url(server), subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert validate_event("beta", "server", created) is None
        assert created["session"]["input_audio_format"] == "pcm16"

    # A wrong key in the subprotocol is refused like any other.
    protocols = ["realtime", "openai-insecure-api-key.vxr_wrong"]
    async with ws_connect(_url(server), subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        _, code = await _refused(ws)
    assert code == 4401


async def test_access_token_query(server: RunningServer) -> None:
    token = await server.token()
    async with ws_connect(_url(server, access_token=token)) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_model_is_the_servers_own(server: RunningServer) -> None:
    async with connect(server, await server.token()) as conversation:
        created = (await conversation.until("session.created"))[-1]
    # ?model=gpt-realtime was asked for; the server's configured provider answers.
    assert created["session"]["model"] == "voxrelay-echo"


async def test_another_users_conversation_closes_4404(server: RunningServer) -> None:
    alice = await server.token("alice-phone", "alice")
    bob = await server.token("bob-phone", "bob")
    async with VoxrelayClient(server.url, alice) as client:
        session = await client.create_session()
    cid = session["conversationId"]
    headers = {"Authorization": f"Bearer {bob}"}
    async with ws_connect(_url(server, conversationId=cid), additional_headers=headers) as ws:
        error, code = await _refused(ws)
    assert code == 4404
    assert error["error"]["code"] == "not_found"

    # Alice herself joins it.
    async with connect(server, alice, conversationId=cid) as conversation:
        await conversation.until("conversation.created")
        assert conversation_id(conversation) == cid


async def test_a_device_token_never_opens_another_users_conversation(
    server: RunningServer,
) -> None:
    async with VoxrelayClient(server.url, await server.token("alice-phone", "alice")) as alice:
        session = await alice.create_session()
    cid = session["conversationId"]
    client = AsyncOpenAI(
        api_key=await server.token("my-watch", None), websocket_base_url=ws_base(server)
    )
    named = {"userId": "alice", "conversationId": cid}
    async with client.realtime.connect(model="gpt-realtime", extra_query=named) as conn:
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "forbidden"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # Without userId it is its own user, to whom alice's conversation is unknown.
    unnamed = {"conversationId": cid}
    async with client.realtime.connect(model="gpt-realtime", extra_query=unnamed) as conn:
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "not_found"


async def test_a_service_token_opens_the_conversation_of_the_user_it_names(
    server: RunningServer,
) -> None:
    async with VoxrelayClient(server.url, await server.token("alice-phone", "alice")) as alice:
        session = await alice.create_session()
        await alice.end(session["conversationId"])
    cid = session["conversationId"]
    service = await server.service_token()
    async with connect(server, service, userId="alice", conversationId=cid) as conversation:
        await conversation.until("conversation.created")
        assert conversation_id(conversation) == cid
    headers = {"Authorization": f"Bearer {service}"}
    async with ws_connect(_url(server, conversationId=cid), additional_headers=headers) as ws:
        error, code = await _refused(ws)
    assert code == 4400
    assert error["error"]["code"] == "invalid_request"
