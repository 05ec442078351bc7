"""Replies for the ``local`` provider from any OpenAI-compatible chat-completions
server (Ollama, llama.cpp's server, vLLM, LM Studio, ...), streamed, and cut
into sentences so each can be spoken as soon as it is complete."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx

from voxrelay.providers._chat_tools import ChatToolCalls

# Ends a sentence: terminal punctuation (Latin, CJK, Arabic, Hindi) before a space,
# or a line break.
_SENTENCE_END = re.compile(
    "(?<=[.!?\u2026\u3002\uff01\uff1f\u061f\u0964])[\"'\u201d\u2019)\\]]*\\s+|\n+"
)
_MAX_SENTENCE = 240  # a longer run is cut at a comma or a space
_ERROR_DETAIL = 300


class ChatError(Exception):
    """The chat-completions server could not be reached or gave no usable answer."""


def completions_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


async def stream_chat(
    http: httpx.AsyncClient,
    url: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    api_key: str | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
    calls: ChatToolCalls | None = None,
) -> AsyncGenerator[str, None]:
    """The reply's text as it is generated; with ``tools`` (chat completions' form) the
    functions it calls go to ``calls``. Raises ``ChatError`` on any failure."""
    endpoint = completions_url(url)
    body: dict[str, Any] = {"messages": list(messages), "stream": True}
    if model:
        body["model"] = model
    if tools:
        body["tools"] = list(tools)
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        async with http.stream("POST", endpoint, json=body, headers=headers) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")[:_ERROR_DETAIL]
                raise ChatError(f"{endpoint} answered {response.status_code}: {detail}")
            if response.headers.get("content-type", "").startswith("application/json"):
                # A server that ignores "stream": the whole answer at once.
                answer = json.loads(await response.aread())
                if calls is not None:
                    calls.feed(_message(answer).get("tool_calls"))
                yield _message_text(answer)
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise ChatError(f"{endpoint} failed: {str(chunk['error'])[:_ERROR_DETAIL]}")
                if calls is not None:
                    for choice in chunk.get("choices") or ():
                        calls.feed((choice.get("delta") or {}).get("tool_calls"))
                text = _delta_text(chunk)
                if text:
                    yield text
    except httpx.HTTPError as error:
        raise ChatError(f"{endpoint} unreachable: {error!r}") from error
    except (ValueError, TypeError, KeyError) as error:
        raise ChatError(f"{endpoint} sent something unexpected: {error}") from error


def _delta_text(chunk: Any) -> str:
    parts = []
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def _message(answer: Any) -> dict[str, Any]:
    choices = answer.get("choices") or ()
    if not choices:
        raise ChatError(f"no choices in the answer: {str(answer)[:_ERROR_DETAIL]}")
    message = choices[0].get("message")
    return message if isinstance(message, dict) else {}


def _message_text(answer: Any) -> str:
    content = _message(answer).get("content")
    return content if isinstance(content, str) else ""


class SentenceSplitter:
    """Text in as it streams, whole sentences out."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        sentences: list[str] = []
        while True:
            match = _SENTENCE_END.search(self._buffer)
            if match is None:
                break
            sentence = self._buffer[: match.end()].strip()
            self._buffer = self._buffer[match.end() :]
            if sentence:
                sentences.append(sentence)
        while len(self._buffer) > _MAX_SENTENCE:
            cut = self._buffer.rfind(", ", 0, _MAX_SENTENCE)
            if cut < _MAX_SENTENCE // 3:
                cut = self._buffer.rfind(" ", 0, _MAX_SENTENCE)
            if cut <= 0:
                cut = _MAX_SENTENCE
            sentence = self._buffer[: cut + 1].strip()
            self._buffer = self._buffer[cut + 1 :]
            if sentence:
                sentences.append(sentence)
        return sentences

    def flush(self) -> str:
        rest, self._buffer = self._buffer.strip(), ""
        return rest


def split_sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences
