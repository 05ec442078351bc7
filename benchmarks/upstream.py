"""A realtime echo upstream for benchmarks, speaking the OpenAI Realtime (GA)
protocol: every appended audio chunk is answered at once with an audio delta
of the same samples, so audio flows both ways continuously, and every
arrival and departure is timestamped (``time.monotonic()``, which all
processes on the machine share).

Run it as ``python benchmarks/upstream.py --port P``. On ``/control``, a
``dump`` message answers with the timestamps recorded so far, keyed by each
connection's tag (the ``instructions`` of its ``session.update``); ``dump
PREFIX`` answers with the tags that start with ``PREFIX`` only, and ``forget
PREFIX`` drops those records (answering ``{"forgot": count}``).

It is built to cost little CPU per chunk, so that hundreds of sessions can be
measured on a small machine: it runs on picows, handles each frame in the
callback that parsed it (no coroutine per message), and answers an append
without parsing its JSON when the event is the plain ``{"type":
"input_audio_buffer.append", "audio": "..."}`` shape: it checks the prefix,
slices the base64 string out and echoes it unchanged. Anything else is parsed
in full.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import gc
import time
from array import array
from typing import Any

import orjson
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from voxrelay.ws_messages import WholeMessages


class Series:
    """(time, cumulative bytes) pairs, held flat in one array of doubles (exact
    for byte counts below 2**53): appending makes no object per pair, and the
    garbage collector never walks them."""

    __slots__ = ("add", "values")

    def __init__(self) -> None:
        self.values = array("d")
        self.add = self.values.append  # call twice: time, then bytes

    def pairs(self) -> list[tuple[float, int]]:
        values = self.values.tolist()
        return list(zip(values[0::2], map(int, values[1::2]), strict=True))


# tag -> {"in": [(t, cumulative_bytes), ...], "out": [...], "commit": [...], "first": [...]}
RECORDS: dict[str, dict[str, Series]] = {}

# The append events whose audio can be sliced out without a parse: these exact
# prefixes, then base64 (which holds no '"' or '\\'), then '"}'.
_APPENDS = (
    b'{"type":"input_audio_buffer.append","audio":"',
    b'{"type": "input_audio_buffer.append", "audio": "',
)
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_COMMIT_AUDIO = binascii.b2a_base64(b"\x01\x00" * 480, newline=False)
_APPEND = _APPENDS[0]
_APPEND_SIZE = len(_APPEND)
_DELTA = b'{"type":"response.output_audio.delta","event_id":"ev_%d%b%b"}'
_BRACE = ord("}")
_PAD = ord("=")
monotonic = time.monotonic


def _record(tag: str) -> dict[str, Series]:
    record = RECORDS.get(tag)
    if record is None:
        record = RECORDS[tag] = {key: Series() for key in ("in", "out", "commit", "first")}
    return record


def _session(instructions: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_bench",
        "model": "bench",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": pcm, "turn_detection": None, "transcription": None},
            "output": {"format": pcm, "voice": "alloy"},
        },
    }


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a session.update the way the real service does: field by field."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _response_created(response_id: str, counter: int) -> dict[str, Any]:
    return {
        "type": "response.created",
        "event_id": f"ev_{counter}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
        },
    }


class Echo(WSListener):  # type: ignore[misc]
    """One upstream connection: a realtime session that echoes its input."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.counter = 0
        self.session = _session("")
        self.tag = "untagged"
        self.received = self.sent = 0
        self.response = False
        # What follows the event id in each delta of the current response.
        self.delta_ids = b""
        self.messages = WholeMessages()
        self._bind("untagged")

    def _bind(self, tag: str) -> None:
        self.tag = tag
        record = _record(tag)
        self.add_in, self.add_out = record["in"].add, record["out"].add
        self.add_commit, self.add_first = record["commit"].add, record["first"].add

    def _send_json(self, event: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(_TEXT, orjson.dumps(event))

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._send_json({"type": "session.created", "event_id": "ev_0", "session": _session("")})

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        now = monotonic()
        if frame.msg_type is _TEXT and frame.fin:
            message = frame.get_payload_as_bytes()
            # The hot path: an append in the compact shape, answered without a parse.
            if message.startswith(_APPEND):
                end = len(message) - 2
                length = end - _APPEND_SIZE
                if (
                    message.find(b'"', _APPEND_SIZE) == end
                    and message[-1] == _BRACE
                    and not length & 3
                    and message.find(b"\\", _APPEND_SIZE) < 0
                ):
                    self.counter += 1
                    size = length // 4 * 3 - (message[end - 1] == _PAD) - (message[end - 2] == _PAD)
                    received = self.received = self.received + size
                    add = self.add_in
                    add(now)
                    add(received)
                    if not self.response:
                        self.start_response()
                    sent = self.sent = self.sent + size
                    transport.send(
                        _TEXT, _DELTA % (self.counter, self.delta_ids, message[_APPEND_SIZE:end])
                    )
                    add = self.add_out
                    add(monotonic())
                    add(sent)
                    return
            self.on_message(message, now)
        else:
            self.on_other(transport, frame, now)

    def on_other(self, transport: WSTransport, frame: Any, now: float) -> None:
        message = self.messages.add(frame)
        if message is not None:
            self.on_message(message, now)
        elif frame.msg_type is _CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_message(self, message: bytes, now: float) -> None:
        """Any event, parsed in full."""
        self.counter += 1
        event = orjson.loads(message)
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if isinstance(audio, str):
                self.append(audio.encode(), now)
        elif kind == "session.update":
            update = event.get("session")
            _merge(self.session, update if isinstance(update, dict) else {})
            tag = self.session.get("instructions") or self.tag
            if tag != self.tag:
                self._bind(tag)
            self._send_json(
                {
                    "type": "session.updated",
                    "event_id": f"ev_{self.counter}",
                    "session": self.session,
                }
            )
        elif kind == "input_audio_buffer.commit":
            self.commit(now)

    def append(self, audio: bytes, now: float) -> None:
        try:
            # What the samples decode to (non-strict, like base64.b64decode).
            size = len(binascii.a2b_base64(audio))
        except binascii.Error:
            return
        self.received += size
        self.add_in(now)
        self.add_in(self.received)
        if not self.response:
            self.start_response()
        self.sent += size
        assert self.transport is not None
        # One delta per chunk, the samples unchanged: what a model streaming
        # its answer at the pace it is spoken to looks like.
        self.transport.send(_TEXT, _DELTA % (self.counter, self.delta_ids, audio))
        self.add_out(monotonic())
        self.add_out(self.sent)

    def start_response(self) -> None:
        counter = self.counter
        self.response = True
        self.delta_ids = (
            b'","response_id":"resp_%d","item_id":"item_%d",'
            b'"output_index":0,"content_index":0,"delta":"' % (counter, counter)
        )
        self._send_json(_response_created(f"resp_{counter}", counter))

    def commit(self, now: float) -> None:
        self.add_commit(now)
        self.add_commit(self.received)
        # A new answer begins now: its first audio goes out at once.
        self.start_response()
        assert self.transport is not None
        self.transport.send(_TEXT, _DELTA % (self.counter, self.delta_ids, _COMMIT_AUDIO))
        self.sent += 960
        at = monotonic()
        for add in (self.add_first, self.add_out):
            add(at)
            add(self.sent)


class Control(WSListener):  # type: ignore[misc]
    """``dump [PREFIX]`` answers the records (of the tags starting with PREFIX);
    ``forget PREFIX`` drops them."""

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type is _CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type is not _TEXT:
            return
        command, _, prefix = frame.get_payload_as_ascii_text().strip().partition(" ")
        if command == "dump":
            chosen = {
                tag: {key: series.pairs() for key, series in record.items()}
                for tag, record in RECORDS.items()
                if tag.startswith(prefix)
            }
            transport.send(_TEXT, orjson.dumps(chosen))
        elif command == "forget":
            tags = [tag for tag in RECORDS if tag.startswith(prefix)]
            for tag in tags:
                del RECORDS[tag]
            transport.send(_TEXT, orjson.dumps({"forgot": len(tags)}))


def _listener(request: WSUpgradeRequest) -> WSListener:
    if request.path.startswith(b"/control"):
        return Control()
    return Echo()


async def main(port: int) -> None:
    server = await ws_create_server(
        _listener,
        "127.0.0.1",
        port,
        websocket_handshake_timeout=30,
        max_frame_size=64 << 20,
        backlog=1024,
    )
    gc.freeze()
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port))
