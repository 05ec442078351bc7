"""The HTTP transport from the client's side: an SSE stream for events, audio
as chunked uploads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from voxrelay.client._events import ConnectionLost, Event, Options, decode
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
        if self._upload is not None and self._upload.done():
            await self.finish_upload()  # it broke off: say why now, not at the end
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
            upload, self._upload = self._upload, None
            await self._audio.put(None)
            with _lost_on_transport_error():
                await upload

    async def commit(self) -> None:
        await self.finish_upload()
        with _lost_on_transport_error():
            await self.client.commit(self.conversation_id)

    async def send_text(self, text: str) -> None:
        with _lost_on_transport_error():
            await self.client.text(self.conversation_id, text)

    async def interrupt(self, played_ms: int | None = None) -> None:
        with _lost_on_transport_error():
            await self.client.interrupt(self.conversation_id, played_ms)

    async def end(self) -> None:
        await self.finish_upload()
        with _lost_on_transport_error():
            await self.client.end(self.conversation_id)

    async def events(self) -> AsyncIterator[Event]:
        yield decode(self._first.type, self._first.data)
        with _lost_on_transport_error():
            async for event in self._stream:
                yield decode(event.type, event.data)
                if event.type == "conversation_ended":
                    return
        raise ConnectionLost("the event stream ended before the conversation did")

    async def aclose(self) -> None:
        if self._upload is not None:
            self._upload.cancel()
            with contextlib.suppress(BaseException):
                await self._upload
        with contextlib.suppress(BaseException):
            await self._stream.aclose()  # type: ignore[attr-defined]
        await self.client.aclose()


@contextlib.contextmanager
def _lost_on_transport_error() -> Iterator[None]:
    """Once the stream is open, a failed request means the server went away."""
    try:
        yield
    except httpx.TransportError as error:
        raise ConnectionLost(
            f"the server broke off the connection ({type(error).__name__})"
        ) from None
