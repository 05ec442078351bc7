"""WebSocket permessage-deflate (``VOXRELAY_WEBSOCKET_COMPRESSION``): declined by
default, so that a client offering it (the OpenAI SDK's ``websockets`` does) sends
and takes its audio uncompressed; accepted when turned on. Either way the
conversation is the same."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from harness import RunningServer
from realtime_ws_client import ws_base
from websockets.asyncio.client import connect


async def _turn(server: RunningServer) -> str | None:
    """A typed turn over a connection that offers permessage-deflate; the extensions
    the server accepted."""
    token = await server.token()
    url = f"{ws_base(server)}/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, compression="deflate") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hello there"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        kinds = []
        while "response.done" not in kinds:
            kinds.append(json.loads(await ws.recv())["type"])
        assert "response.output_audio.delta" in kinds
        return accepted


@pytest.mark.parametrize(("setting", "accepted"), [(None, False), (False, False), (True, True)])
async def test_permessage_deflate_only_when_turned_on(
    launch: Callable[..., RunningServer], setting: bool | None, accepted: bool
) -> None:
    server = launch() if setting is None else launch(websocket_compression=setting)
    extensions = await _turn(server)
    assert (extensions is not None and "permessage-deflate" in extensions) is accepted
