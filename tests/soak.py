"""A soak: many conversations at once through a real ``voxrelay serve``, with faults.

    uv run python tests/soak.py --sessions 100 --seconds 600

It starts the fake OpenAI Realtime upstream (GA) and ``voxrelay serve --provider
openai`` in front of it (a temporary SQLite database, a free loopback port). Each
of N clients holds one conversation (manual turns, 24 kHz in, so the bytes reach
the upstream as sent): it uploads audio whose bytes carry a tag naming its
conversation and turn (``<c17 t5>``, repeated), commits, and waits for the answer
on its SSE stream. The fake transcribes a turn as the tags in its audio
(``c17 t5``) and answers with a reply that starts with them (``c17-t5: …``).

Meanwhile, at random: SSE streams are cut and resumed with ``Last-Event-ID`` (every
event id must follow the one before it), single upstream connections are dropped,
and once, the server gets SIGTERM and is started again on the same port and
database; every client then resumes its conversation (``POST /realtime/session``
with its ``conversationId``) and goes on.

At the end each stored conversation must hold exactly its own turns, in order:
every turn its client saw completed, whole; a turn cut by a fault (an answer
ending ``failed``, the SIGTERM) at most partly; nothing twice, nothing from another
conversation. A JSON summary goes to stdout; the exit status is 1 if any
invariant failed (its first problems are listed in the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fakes.openai_realtime import FakeRealtimeServer, validate_event

from voxrelay.client import ApiError, StreamEvent, VoxrelayClient

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
KEY = "sk-soak-upstream-key"
RATE = 24000
_TAGS = re.compile(rb"<(c\d+ t\d+)>")
_USER = re.compile(r"c(\d+) t(\d+)")
_ANSWER = re.compile(r"c(\d+)-t(\d+):")
# Invariants: each must stay 0.
INVARIANTS = (
    "turns_lost",
    "messages_doubled",
    "out_of_order",
    "foreign_messages",
    "wrong_answers",
    "turns_stalled",
    "event_gaps",
    "error_events",
    "unexpected_ends",
    "request_errors",
    "streams_broken",
    "protocol_errors",
    "server_failures",
    "client_failures",
)


# -- what the upstream hears and says ------------------------------------------------------


def tag(conversation: int, turn: int) -> str:
    return f"c{conversation} t{turn}"


def tagged_audio(text: str, ms: int) -> bytes:
    unit = f"<{text}>".encode()
    size = RATE * 2 * ms // 1000
    return (unit * (size // len(unit) + 1))[:size]


def transcribe(pcm: bytes) -> str:
    """Every tag in a committed turn's audio, in order (one, unless audio leaked)."""
    return " + ".join(dict.fromkeys(t.decode() for t in _TAGS.findall(pcm)))


def reply(text: str) -> str:
    return f"{text.replace(' ', '-')}: this answer comes in a dozen words, one after another"


# -- the server under test -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Relay:
    """``voxrelay serve`` as a subprocess, stopped with SIGTERM and started again."""

    def __init__(
        self, workdir: Path, upstream_url: str, reconnect_seconds: float, log_level: str
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = f"sqlite:///{workdir / 'soak.db'}"
        self.log = workdir / "server.log"
        self.env = {
            **os.environ,
            "VOXRELAY_PROVIDER": "openai",
            "VOXRELAY_OPENAI_URL": upstream_url,
            "OPENAI_API_KEY": KEY,
            "VOXRELAY_DATABASE_URL": self.database_url,
            "VOXRELAY_UPSTREAM_RECONNECT_SECONDS": str(reconnect_seconds),
            "VOXRELAY_LOG_FORMAT": "text",
            "VOXRELAY_LOG_LEVEL": log_level,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.up = False

    async def start(self) -> None:
        self.spawn()
        await self.serving()

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [VOXRELAY, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def serving(self) -> None:
        """Return once the process answers (it takes seconds to import on a busy machine)."""
        assert self.process is not None
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=self.url) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        self.up = True
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("the server did not start")

    async def sigterm(self) -> int:
        """Stop it as an operator does; returns its exit status."""
        assert self.process is not None
        self.up = False
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 60)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    async def tokens(self, count: int) -> list[str]:
        """One device token per conversation, as many phones of one user would hold
        (a device may keep only so many sessions live at once)."""
        from voxrelay.store import Store

        store = await Store.open(self.database_url)
        try:
            return [(await store.create_token(f"soak-{i}", "soak-user"))[1] for i in range(count)]
        finally:
            await store.close()


# -- one conversation ------------------------------------------------------------------------


@dataclass
class Turn:
    number: int
    # completed | failed (answer cut by a drop) | cut (the session ended) | else a problem
    outcome: str = "pending"
    # From the first audio sent to the answer's end (or the turn's).
    seconds: float = 0.0


def _tracebacks(log: str) -> list[str]:
    """Of each traceback in a text log, what was raised (its last line), so that a
    failed run says what failed while its log is still there to be read."""
    lines = log.splitlines()
    raised = []
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:
            continue
        after = (later for later in lines[index + 1 :] if later and not later[0].isspace())
        raised.append(next(after, "(the log ends inside it)"))
    return raised


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < 30:
            self.problems.append(f"{kind}: {message}")


class Client:
    def __init__(self, index: int, soak: Soak) -> None:
        self.index = index
        self.soak = soak
        self.tally = soak.tally
        self.api = VoxrelayClient(soak.relay.url, soak.tokens[index - 1], timeout=20)
        self.cid: str | None = None
        self.sid: str | None = None
        self.turns: list[Turn] = []
        self.sessions = 0
        self.first_turn_told = False
        # The current session's events as read (since the turn began), and where its
        # stream stands.
        self.events: list[StreamEvent] = []
        self.last_id = 0
        self.changed = asyncio.Event()
        self.ended: str | None = None
        self.gone = False
        self.consumer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"c{self.index} ({self.cid})"

    # the session and its stream

    async def open_session(self) -> None:
        """Start (or resume) the conversation's session, retrying until the server answers."""
        deadline = time.monotonic() + 120
        while True:
            try:
                session = await self.api.create_session(
                    conversationId=self.cid,
                    turnDetection="manual",
                    inputSampleRate=RATE,
                    outputSampleRate=RATE,
                )
                break
            except (ApiError, httpx.TransportError) as error:
                what = error.code if isinstance(error, ApiError) else type(error).__name__
                self.tally.counts[f"start_retries.{what}"] += 1
                # Refused while the server stops, or no server: expected.
                expected = not isinstance(error, ApiError) or error.code == "server_shutdown"
                if self.soak.relay.up and not expected:
                    self.tally.problem("request_errors", f"{self.name} start: {error}")
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        self.cid, self.sid = session["conversationId"], session["id"]
        self.sessions += 1
        self.events, self.last_id, self.ended, self.gone = [], 0, None, False
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        """Follow the session's stream to its end, resuming it after every cut."""
        after = 0
        while True:
            consumer = self.consumer = asyncio.get_running_loop().create_task(self._consume(after))
            try:
                await asyncio.wait({consumer})
            finally:
                consumer.cancel()
            after = self.last_id
            if consumer.cancelled():
                self.tally.counts["sse_resumes"] += 1
                continue
            error = consumer.exception()
            if error is None and self.ended is not None:
                return
            if (
                isinstance(error, ApiError) and error.status in (404, 409)
            ) or not self.soak.relay.up:
                self.gone = True  # the session ended while the stream was away
                self.changed.set()
                return
            what = "ended without conversation_ended" if error is None else repr(error)
            self.tally.problem("streams_broken", f"{self.name} stream {what}")
            await asyncio.sleep(0.1)

    async def _consume(self, after: int) -> None:
        stream = self.api.events(self.cid, last_event_id=after, sessionId=self.sid)
        async for event in stream:
            self._on_event(event)
            if event.type == "conversation_ended":
                return

    def _on_event(self, event: StreamEvent) -> None:
        if event.id != self.last_id + 1:
            self.tally.problem(
                "event_gaps", f"{self.name} got event {event.id} after {self.last_id}"
            )
        self.last_id = max(self.last_id, event.id)
        if event.type == "conversation_started" and event.data["sessionId"] != self.sid:
            self.tally.problem("event_gaps", f"{self.name} joined another session")
        elif event.type == "error":
            code = event.data.get("code")
            self.tally.counts[f"error_codes.{code}"] += 1
            # A fault the relay rides out tells nobody of an error. Storage that falls
            # behind (SQLite writers starved on an overloaded machine) is reported, not
            # failed: the messages are kept and retried, which the checks prove.
            if code != "storage_unavailable":
                kind = "event_gaps" if code == "replay_gap" else "error_events"
                self.tally.problem(kind, f"{self.name}: {event.data}")
        elif event.type in ("upstream_reconnecting", "upstream_restored"):
            self.tally.counts[event.type] += 1
        elif event.type == "conversation_ended":
            self.ended = event.data["reason"]
        elif event.type == "audio":
            self.tally.counts["audio_events"] += 1
            return  # not kept: a long run would hold gigabytes of it
        self.events.append(event)
        self.changed.set()

    def drop_stream(self) -> bool:
        consumer = self.consumer
        if consumer is None or consumer.done() or self.ended is not None:
            return False
        consumer.cancel()
        return True

    # turns

    async def run(self, stagger: float) -> None:
        try:
            await self._run(stagger)
        except Exception as error:
            self.tally.problem("client_failures", f"{self.name}: {error!r}")
            self._had_first_turn()

    def _had_first_turn(self) -> None:
        if not self.first_turn_told:
            self.first_turn_told = True
            self.soak.had_first_turn()

    async def _run(self, stagger: float) -> None:
        await asyncio.sleep(self.soak.rng.uniform(0, stagger))
        await self.open_session()
        number = 0
        while time.monotonic() < self.soak.stop_at:
            if self.ended is not None or self.gone:
                if self.ended not in (None, "server_shutdown"):
                    self.tally.problem("unexpected_ends", f"{self.name} ended: {self.ended}")
                await self.open_session()
            number += 1
            await self.turn(number)
            self._had_first_turn()
            await asyncio.sleep(self.soak.rng.uniform(0, 0.3))
        if self.ended == "server_shutdown" or self.gone:
            # Cut by the restart while the clock ran out (a starved machine may take
            # longer to serve again than the clock was given): it is resumed all the
            # same, for one more turn, since resuming is what the run proves.
            await self.open_session()
            number += 1
            await self.turn(number)
        await self.finish()

    async def turn(self, number: int) -> None:
        turn = Turn(number)
        self.turns.append(turn)
        began = time.monotonic()
        await self._play(turn)
        turn.seconds = time.monotonic() - began

    async def _play(self, turn: Turn) -> None:
        number = turn.number
        text = tag(self.index, number)
        audio = tagged_audio(text, self.soak.rng.randrange(200, 500, 20))
        # Only this turn's events are kept from here on.
        del self.events[:]
        start = 0
        try:
            await self.api.upload(self.cid or "", self._paced(audio))
            await self.api.commit(self.cid or "")
        except (ApiError, httpx.TransportError) as error:
            if await self._until(lambda: self.ended is not None or self.gone, 30):
                turn.outcome = "cut"
            else:
                turn.outcome = "error"
                self.tally.problem("request_errors", f"{self.name} turn {number}: {error!r}")
            return
        answered = await self._until(
            lambda: (
                any(e.type == "response_done" for e in self.events[start:])
                or self.ended is not None
                or self.gone
            ),
            self.soak.turn_timeout,
        )
        done = next((e for e in self.events[start:] if e.type == "response_done"), None)
        if done is None:
            turn.outcome = "cut" if answered else "stalled"
            if not answered:
                self.tally.problem("turns_stalled", f"{self.name} turn {number}: no answer")
            return
        finals = {
            e.data["role"]: e.data["text"]
            for e in self.events[start : self.events.index(done)]
            if e.type == "transcript" and e.data.get("final")
        }
        status = done.data["status"]
        if status == "completed" and finals == {"user": text, "assistant": reply(text)}:
            turn.outcome = "completed"
            between = self.events[start : self.events.index(done)]
            if any(e.type == "upstream_reconnecting" for e in between):
                # Committed, then the link dropped before the answer: sent again, answered.
                self.tally.counts["turns_answered_after_a_drop"] += 1
        elif status == "failed":
            turn.outcome = "failed"
        else:
            turn.outcome = "wrong"
            self.tally.problem("wrong_answers", f"{self.name} turn {number}: {status} {finals}")

    async def _paced(self, audio: bytes) -> AsyncIterator[bytes]:
        """The turn's audio as a chunked upload, in pieces as it is 'spoken'."""
        step = RATE * 2 // 10  # 100 ms
        for offset in range(0, len(audio), step):
            yield audio[offset : offset + step]
            await asyncio.sleep(0.02)

    async def _until(self, condition: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True

    async def finish(self) -> None:
        """End the session (everything finished is stored by then)."""
        for _ in range(600):
            if self.ended is not None or self.gone:
                break
            try:
                await self.api.end(self.cid or "")
                break
            except (ApiError, httpx.TransportError):
                await asyncio.sleep(0.2)
        await self._until(lambda: self.ended is not None or self.gone, 30)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader

    # what was stored

    async def check(self) -> None:
        messages = (await self.api.conversation(self.cid or ""))["messages"]
        seen: set[tuple[int, str]] = set()
        last = (0, -1)
        for message in messages:
            role, text = message["role"], message["text"]
            found = (_USER.fullmatch if role == "user" else _ANSWER.match)(text)
            if found is None:
                self.tally.problem("foreign_messages", f"{self.name} holds {role} {text!r}")
                continue
            owner, number = int(found[1]), int(found[2])
            if owner != self.index or not 0 < number <= len(self.turns):
                self.tally.problem("foreign_messages", f"{self.name} holds {role} {text!r}")
                continue
            if role == "assistant" and not reply(tag(owner, number)).startswith(text):
                self.tally.problem("wrong_answers", f"{self.name} stored {text!r}")
            if (number, role) in seen:
                self.tally.problem("messages_doubled", f"{self.name} twice: {role} {text!r}")
            seen.add((number, role))
            place = (number, 0 if role == "user" else 1)
            if place <= last:
                self.tally.problem("out_of_order", f"{self.name}: {role} {text!r} after {last}")
            last = max(last, place)
        if self.sessions > 1:
            self.tally.counts["sessions_resumed"] += 1
        whole = {(m["role"], m["text"]) for m in messages}
        for turn in self.turns:
            self.tally.counts[f"turns_{turn.outcome}"] += 1
            if turn.outcome == "completed":
                self.soak.turn_seconds.append(turn.seconds)
            text = tag(self.index, turn.number)
            if turn.outcome == "completed" and not {("user", text), ("assistant", reply(text))} <= (
                whole
            ):
                self.tally.problem("turns_lost", f"{self.name} turn {turn.number} not stored")
        self.tally.counts["messages_stored"] += len(messages)


# -- the run ---------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.faults: Counter[str] = Counter()
        self.turn_timeout = args.turn_timeout
        self.fake = FakeRealtimeServer(
            "ga",
            transcribe=transcribe,
            reply=reply,
            api_key=KEY,
            delta_delay=args.delta_delay,
            ms_per_char=4,
        )
        self.fake.start_in_thread()
        self.dropped: set[int] = set()
        self.phases: dict[str, float] = {}
        self.turn_seconds: list[float] = []
        self.relay = Relay(workdir, self.fake.url, args.reconnect_seconds, args.log_level)
        self.tokens: list[str] = []
        # Turns go on until then: --seconds of serving time, from when every
        # conversation has had its first turn.
        self.stop_at = float("inf")
        self.warm = asyncio.Event()
        self.first_turns = 0
        self.first_turns_done = asyncio.Event()
        self.clients: list[Client] = []

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        try:
            self.relay.spawn()
            # Meanwhile, on the other core: the fake's protocol checks, built on first
            # use (which would stall its first sessions), and the store for the token.
            validate_event("ga", "server", {})
            validate_event("ga", "client", {})
            import voxrelay.store  # noqa: F401

            await self.relay.serving()
            self.tokens = await self.relay.tokens(self.args.sessions)
            self.phases["start"] = time.monotonic() - began
            self.clients = [Client(i + 1, self) for i in range(self.args.sessions)]
            faults = [
                self._warm_up(),
                self._every("sse_drop", self.args.sse_drop_every, self._drop_stream),
                self._every("upstream_drop", self.args.upstream_drop_every, self._drop_upstream),
            ]
            if not self.args.no_sigterm:
                faults.append(self._sigterm_once())
            stagger = min(3.0, self.args.sessions / 30)
            await asyncio.gather(*(c.run(stagger) for c in self.clients), *faults)
            self.phases["ending"] = time.monotonic() - self.stop_at
            checking = time.monotonic()
            for client in self.clients:
                try:
                    await client.check()
                except (ApiError, httpx.TransportError) as error:
                    self.tally.problem("client_failures", f"{client.name} check: {error!r}")
            self.phases["check"] = time.monotonic() - checking
            stopping = time.monotonic()
            status = await self.relay.sigterm()
            self.phases["stop"] = time.monotonic() - stopping
            if status != 0:
                self.tally.problem("server_failures", f"the server exited {status} at the end")
        finally:
            self.relay.kill()
            for client in self.clients:
                await client.api.aclose()
            self.fake.stop()
        for problem in self.fake.validation_errors:
            self.tally.problem("protocol_errors", problem)
        for raised in _tracebacks(self.relay.log.read_text(errors="replace")):
            self.tally.problem("server_failures", f"a traceback in the server's log: {raised}")
        return self._summary(time.monotonic() - began)

    async def _every(self, kind: str, mean_seconds: float, act: Any) -> None:
        if mean_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / mean_seconds))
            if time.monotonic() >= self.stop_at:
                return
            if self.relay.up and act():
                self.faults[kind] += 1

    def _drop_stream(self) -> bool:
        return self.rng.choice(self.clients).drop_stream()

    def _drop_upstream(self) -> bool:
        live = [conn for conn in self.fake.live if conn not in self.dropped]
        if not live:
            return False
        conn = self.rng.choice(live)
        self.dropped.add(conn)
        self.fake.drop(conn=conn)
        return True

    async def _warm_up(self) -> None:
        """Start the clock once every conversation has had its first turn (opening a
        hundred sessions at once takes a while on a busy machine)."""
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_turns_done.wait(), 120)
        self.phases["warm_up"] = time.monotonic() - began
        self.stop_at = time.monotonic() + self.args.seconds
        self.warm.set()

    def had_first_turn(self) -> None:
        self.first_turns += 1
        if self.first_turns == self.args.sessions:
            self.first_turns_done.set()

    async def _sigterm_once(self) -> None:
        await self.warm.wait()
        await asyncio.sleep(self.args.seconds * self.rng.uniform(0.3, 0.5))
        self.faults["sigterm"] += 1
        down = time.monotonic()
        self.phases["sigterm_after"] = down - (self.stop_at - self.args.seconds)
        status = await self.relay.sigterm()
        if status != 0:
            self.tally.problem("server_failures", f"SIGTERM: the server exited {status}")
        self.phases["sigterm_to_exit"] = time.monotonic() - down
        await self.relay.start()
        self.phases["sigterm_to_serving"] = time.monotonic() - down
        # Turns go on for --seconds of serving time.
        self.stop_at += self.phases["sigterm_to_serving"]

    def _summary(self, wall: float) -> dict[str, Any]:
        counts = self.tally.counts
        invariants = {name: counts[name] for name in INVARIANTS}
        ok = not any(invariants.values()) and counts["turns_completed"] > 0
        if not self.args.no_sigterm and (
            self.faults["sigterm"] != 1 or counts["sessions_resumed"] != self.args.sessions
        ):
            ok = False
        return {
            "ok": ok,
            "sessions": self.args.sessions,
            "wall_seconds": round(wall, 1),
            "turns_completed": counts["turns_completed"],
            "turns_failed": counts["turns_failed"],
            "turns_answered_after_a_drop": counts["turns_answered_after_a_drop"],
            "turns_cut_by_shutdown": counts["turns_cut"],
            "sessions_resumed": counts["sessions_resumed"],
            "faults": dict(self.faults),
            **invariants,
            "messages_stored": counts["messages_stored"],
            "sse_resumes": counts["sse_resumes"],
            "audio_events": counts["audio_events"],
            "upstream_reconnecting": counts["upstream_reconnecting"],
            "upstream_restored": counts["upstream_restored"],
            "phase_seconds": {k: round(v, 1) for k, v in self.phases.items()},
            "completed_turn_seconds": _spread(self.turn_seconds),
            "error_codes": {
                k.removeprefix("error_codes."): v
                for k, v in counts.items()
                if k.startswith("error_codes.")
            },
            "start_retries": {
                k.removeprefix("start_retries."): v
                for k, v in counts.items()
                if k.startswith("start_retries.")
            },
            "problems": self.tally.problems,
        }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100, help="concurrent conversations")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long turns go on")
    parser.add_argument("--seed", type=int, default=None, help="for a run that can be repeated")
    parser.add_argument(
        "--sse-drop-every", type=float, default=0.5, help="mean seconds between cut streams"
    )
    parser.add_argument(
        "--upstream-drop-every",
        type=float,
        default=1.0,
        help="mean seconds between dropped upstream connections",
    )
    parser.add_argument("--no-sigterm", action="store_true", help="no server restart")
    parser.add_argument("--turn-timeout", type=float, default=30.0)
    parser.add_argument("--reconnect-seconds", type=float, default=10.0)
    parser.add_argument("--delta-delay", type=float, default=0.02, help="between answer words")
    parser.add_argument("--log-level", default="warning", help="the server's")
    parser.add_argument("--workdir", type=Path, default=None, help="kept: database and log")
    return parser.parse_args(argv)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run it; returns the summary."""
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        return await Soak(args, workdir).run()


def main(argv: list[str] | None = None) -> int:
    summary = asyncio.run(soak(parse_args(argv)))
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
