"""Driving the OpenAI-compatible WebSocket with the official ``openai`` client, keeping
every server event as the raw JSON it arrived as and checking it against the ``openai``
package's models for the client's dialect."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fakes.openai_realtime import validate_event
from harness import RunningServer, read_pcm
from openai import AsyncOpenAI

from voxrelay.audio import StreamResampler

KEY = "sk-upstream-secret-key"


def ws_base(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://") + "/v1"


class Conversation:
    """One SDK connection; ``events`` holds every server event received so far."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._seen = 0

    @property
    def raw(self) -> Any:
        """The underlying ``websockets`` connection, for frames the SDK would not send."""
        return self.conn._connection

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        data = await asyncio.wait_for(self.conn.recv_bytes(), timeout)
        event = json.loads(data)
        problem = validate_event(self.dialect, "server", event)  # type: ignore[arg-type]
        if problem is not None:
            self.problems.append(problem)
        self.events.append(event)
        return event  # type: ignore[no-any-return]

    async def until(self, *types: str, timeout: float = 15) -> list[dict[str, Any]]:
        """Events from the last call on, up to and including the first of each type."""
        wanted = set(types)
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while wanted:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {wanted} within {timeout}s; got {_types(got)}")
            event = await self.next(remaining)
            got.append(event)
            wanted.discard(event["type"])
        return got

    async def send(self, event: dict[str, Any]) -> None:
        await self.raw.send(json.dumps(event))

    async def append_audio(self, pcm: bytes, chunk: int = 4800) -> None:
        for start in range(0, len(pcm), chunk):
            audio = base64.b64encode(pcm[start : start + chunk]).decode("ascii")
            await self.conn.input_audio_buffer.append(audio=audio)

    def of_type(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if not e["type"].endswith("audio.delta")]


@asynccontextmanager
async def connect(
    server: RunningServer, token: str, dialect: str = "ga", **query: str
) -> AsyncIterator[Conversation]:
    """The official client: ``client.realtime`` (GA) or ``client.beta.realtime`` (which
    sends ``OpenAI-Beta: realtime=v1``)."""
    client = AsyncOpenAI(api_key=token, websocket_base_url=ws_base(server))
    if dialect == "beta":
        manager: Any = client.beta.realtime.connect(
            model="gpt-4o-realtime-preview", extra_query=query
        )
    else:
        manager = client.realtime.connect(model="gpt-realtime", extra_query=query)
    async with manager as conn:
        yield Conversation(conn, dialect)


def speech_24k() -> bytes:
    """The goforward recording at 24 kHz, then a second of silence (ends a VAD turn)."""
    pcm, rate = read_pcm("goforward.raw")
    resampler = StreamResampler(rate, 24000)
    return resampler.feed(pcm) + resampler.flush() + bytes(48000)


def names(dialect: str) -> dict[str, str]:
    """The dialect's spelling of the events the tests wait for."""
    if dialect == "beta":
        return {
            "audio.delta": "response.audio.delta",
            "transcript.done": "response.audio_transcript.done",
            "item.added": "conversation.item.created",
        }
    return {
        "audio.delta": "response.output_audio.delta",
        "transcript.done": "response.output_audio_transcript.done",
        "item.added": "conversation.item.added",
    }


def text_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id is not None:
        item["id"] = item_id
    return item


def conversation_id(conversation: Conversation) -> str:
    created = conversation.of_type("conversation.created")
    assert created, "no conversation.created"
    return str(created[0]["conversation"]["id"])
