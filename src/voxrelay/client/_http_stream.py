"""The HTTP transport from the client's side: an SSE stream for events, audio
as chunked uploads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from voxrelay.client._events import Event, Options, decode
from voxrelay.client.http import StreamEvent, VoxrelayClient


@dataclass
class HttpConversation:
    """SSE for events; audio as one long chunked upload fed as it is produced."""

    client: VoxrelayClient
    conversation_id: str
    input_rate: int
    output_rate: int
    _stream: AsyncIterator[StreamEvent]
    _first: StreamEvent
    _audio: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _upload: asyncio.Task[dict[str, Any]] | None = None

    @classmethod
    async def open(cls, url: str, token: str, options: Options) -> HttpConversation:
        client = VoxrelayClient(url, token)
        params = {
            "inputSampleRate": options.input_rate,
            "outputSampleRate": options.output_rate,
            "turnDetection": options.turn_detection,
            "language": options.language,
            "voice": options.voice,
            "instructions": options.instructions,
        }
        stream = client.events(options.conversation_id, **params)  # type: ignore[arg-type]
        try:
            first = await anext(stream)
        except BaseException:
            await client.aclose()
            raise
        return cls(
            client,
            first.data["conversationId"],
            first.data["inputSampleRate"],
            first.data["outputSampleRate"],
            stream,
            first,
        )

    async def send_audio(self, pcm: bytes) -> None:
        if self._upload is None:
            self._upload = asyncio.get_running_loop().create_task(
                self.client.upload(self.conversation_id, self._body())
            )
        await self._audio.put(pcm)

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._audio.get()) is not None:
            yield chunk

    async def finish_upload(self) -> None:
        if self._upload is not None:
            await self._audio.put(None)
            await self._upload
            self._upload = None

    async def commit(self) -> None:
        await self.finish_upload()
        await self.client.commit(self.conversation_id)

    async def send_text(self, text: str) -> None:
        await self.client.text(self.conversation_id, text)

    async def interrupt(self, played_ms: int | None = None) -> None:
        await self.client.interrupt(self.conversation_id, played_ms)

    async def end(self) -> None:
        await self.finish_upload()
        await self.client.end(self.conversation_id)

    async def events(self) -> AsyncIterator[Event]:
        yield decode(self._first.type, self._first.data)
        async for event in self._stream:
            yield decode(event.type, event.data)

    async def aclose(self) -> None:
        if self._upload is not None:
            self._upload.cancel()
            with contextlib.suppress(BaseException):
                await self._upload
        with contextlib.suppress(BaseException):
            await self._stream.aclose()  # type: ignore[attr-defined]
        await self.client.aclose()
