"""The HTTP transport from the client's side: REST calls, the SSE event
stream and audio uploads (chunked or as numbered short POSTs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

# An idle pooled connection is given up sooner than a server gives it up (uvicorn
# closes it after 5 s): reusing one the server is closing that very moment fails the
# request with "Server disconnected without sending a response".
KEEPALIVE_SECONDS = 2.0


class ApiError(Exception):
    """The server answered an error: ``status``, and the contract's ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: int
    type: str
    data: dict[str, Any]


class VoxrelayClient:
    """``async with VoxrelayClient(url, token) as client: ...``"""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
        )

    async def __aenter__(self) -> VoxrelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.http.request(method, path, **kwargs)
        _raise_for_error(response)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    # REST

    async def create_session(self, **fields: Any) -> dict[str, Any]:
        body = {k: v for k, v in fields.items() if v is not None}
        session: dict[str, Any] = (await self._call("POST", "/realtime/session", json=body))[
            "session"
        ]
        return session

    async def get_session(self, session_id: str) -> dict[str, Any]:
        session: dict[str, Any] = (await self._call("GET", f"/realtime/session/{session_id}"))[
            "session"
        ]
        return session

    async def conversations(
        self, *, limit: int | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"limit": limit, "before": before}.items() if v is not None}
        body = await self._call("GET", "/conversations", params=params)
        listing: list[dict[str, Any]] = body["conversations"]
        return listing

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        body = await self._call("GET", f"/conversations/{conversation_id}")
        conversation: dict[str, Any] = body["conversation"]
        return conversation

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._call("DELETE", f"/conversations/{conversation_id}")

    async def usage(self, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """``GET /usage?from=&to=``: ``{"usage": {...}, "from", "to"}``."""
        params = {k: v for k, v in {"from": since, "to": until}.items() if v is not None}
        return await self._call("GET", "/usage", params=params)

    # the live conversation

    async def events(
        self,
        conversation_id: str | None = None,
        *,
        last_event_id: int | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamEvent]:
        """The SSE stream, parsed; ends after ``conversation_ended``."""
        query = {k: v for k, v in params.items() if v is not None}
        if conversation_id:
            query["conversationId"] = conversation_id
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        async with aconnect_sse(
            self.http, "GET", "/realtime/stream", params=query, headers=headers
        ) as source:
            response = source.response
            if response.status_code >= 400 or "text/event-stream" not in response.headers.get(
                "content-type", ""
            ):
                await response.aread()
                _raise_for_error(response, always=True)
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # a keepalive comment, which httpx-sse hands on once ids began
                yield StreamEvent(int(sse.id) if sse.id else 0, sse.event, json.loads(sse.data))

    async def upload(
        self,
        conversation_id: str,
        audio: bytes | AsyncIterable[bytes],
        *,
        seq: int | None = None,
        sample_rate: int | None = None,
    ) -> dict[str, Any]:
        """Send PCM16: bytes as one POST, an async iterable as one chunked body
        that the server forwards as it arrives."""
        params: dict[str, Any] = {"conversationId": conversation_id}
        if seq is not None:
            params["seq"] = seq
        if sample_rate is not None:
            params["sampleRate"] = sample_rate
        result: dict[str, Any] = await self._call(
            "POST",
            "/realtime/upload",
            params=params,
            content=audio,
            headers={"Content-Type": "application/octet-stream"},
        )
        return result

    async def commit(self, conversation_id: str) -> dict[str, Any]:
        return await self._call(
            "POST", "/realtime/commit", params={"conversationId": conversation_id}
        )

    async def text(self, conversation_id: str, text: str) -> dict[str, Any]:
        body = {"conversationId": conversation_id, "text": text}
        return await self._call("POST", "/realtime/text", json=body)

    async def interrupt(self, conversation_id: str, played_ms: int | None = None) -> dict[str, Any]:
        params: Mapping[str, Any] = {"conversationId": conversation_id}
        if played_ms is not None:
            params = {**params, "playedMs": played_ms}
        return await self._call("POST", "/realtime/interrupt", params=params)

    async def tool_result(self, conversation_id: str, call_id: str, output: Any) -> dict[str, Any]:
        """The result of a call of one of this client's tools (its ``tool_call`` event)."""
        body = {"conversationId": conversation_id, "callId": call_id, "output": output}
        return await self._call("POST", "/realtime/tool-result", json=body)

    async def end(self, conversation_id: str) -> dict[str, Any]:
        return await self._call("POST", "/realtime/end", json={"conversationId": conversation_id})


def _raise_for_error(response: httpx.Response, *, always: bool = False) -> None:
    if response.status_code < 400 and not always:
        return
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except Exception:
        code, message = "error", response.text[:200]
    raise ApiError(response.status_code, code, message)
