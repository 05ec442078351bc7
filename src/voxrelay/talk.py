"""``voxrelay talk``: hold a conversation with a server from the terminal.

Streams a WAV file in real time (or types a text turn, or uses the microphone
with the ``audio`` extra), prints the live transcripts, and saves the spoken
answer to a WAV file. Works over every transport.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from voxrelay.audio import Pcm, StreamResampler, read_wav, wav_bytes
from voxrelay.client.conversation import (
    Conversation,
    Event,
    Options,
    connect,
)
from voxrelay.config import SAMPLE_RATES, Settings
from voxrelay.talk_errors import TalkError, ended, explain, unreadable_wav
from voxrelay.talk_options import TOKEN_FILE, TalkOptions, server_url

DEV_DEVICE = "voxrelay-talk"
DEV_USER = "local"
CHUNK_MS = 20


@dataclass
class _Turn:
    """What the printer has seen of the answer so far."""

    audio: bytearray = field(default_factory=bytearray)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the answer is complete
    end_reason: str | None = None  # why the conversation ended, once it has
    errors: list[str] = field(default_factory=list)
    user_text: str = ""
    answer_text: str = ""


def find_token(url: str, explicit: str | None, err: TextIO = sys.stderr) -> str:
    """The token to use: ``--token``, ``VOXRELAY_TOKEN``, ``./.voxrelay-token``, or,
    for a server on this machine, a new development token written to that file."""
    if explicit:
        return explicit
    if os.environ.get("VOXRELAY_TOKEN"):
        return os.environ["VOXRELAY_TOKEN"]
    saved = Path(TOKEN_FILE)
    if saved.exists():
        return saved.read_text().strip()
    host = urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("voxrelay talk: pass --token (or set VOXRELAY_TOKEN) for a remote server")
    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):
        path = settings.database_url.split(":///", 1)[-1]
        if not Path(path).exists():
            raise SystemExit(
                f"voxrelay talk: no {path} here; run talk where `voxrelay serve` runs,"
                " or pass --token"
            )
    token = asyncio.run(_create_token(settings.database_url))
    saved.write_text(token + "\n")
    saved.chmod(stat.S_IRUSR | stat.S_IWUSR)
    print(f"created a development token (device {DEV_DEVICE}) in {TOKEN_FILE}", file=err)
    return token


async def _create_token(database_url: str) -> str:
    from voxrelay.store import Store

    store = await Store.open(database_url)
    try:
        _, token = await store.create_token(DEV_DEVICE, DEV_USER)
    finally:
        await store.close()
    return token


async def talk(options: TalkOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Hold one conversation: say the turn, print the answer, save its audio.
    What goes wrong raises (``talk_errors.explain`` words it; ``talk_or_explain``
    prints that)."""
    if options.token is None:
        raise ValueError("talk() needs a token; find_token() finds one")
    url = server_url(options.url)
    _check_turn(options)
    sounddevice = _sounddevice() if options.mic else None
    source = _read_wav(options.wav) if options.wav else None
    input_rate = source.rate if source and source.rate in SAMPLE_RATES else 16000
    conversation = await connect(
        url,
        options.token,
        options.transport,
        Options(
            conversation_id=options.conversation_id,
            input_rate=input_rate,
            output_rate=24000,
            turn_detection="manual" if options.manual else "server_vad",
            language=options.language,
            voice=options.voice,
        ),
    )
    print(f"conversation {conversation.conversation_id} over {options.transport}", file=err)
    turn = _Turn()
    loop = asyncio.get_running_loop()
    printer = loop.create_task(_print_events(conversation, turn, out))
    work = loop.create_task(_say(conversation, turn, options, source, sounddevice, err))
    try:
        await _until_answered(work, printer, turn, stop_on_cancel=sounddevice is not None)
        if options.out is not None and turn.audio:
            options.out.write_bytes(wav_bytes(bytes(turn.audio), conversation.output_rate))
            seconds = len(turn.audio) / 2 / conversation.output_rate
            print(f"saved {seconds:.1f} s of answer audio to {options.out}", file=err)
        if options.end and not printer.done():
            await conversation.end()
            await asyncio.wait({printer}, timeout=10)  # its conversation_ended
    finally:
        for task in (work, printer):
            task.cancel()
        await asyncio.gather(work, printer, return_exceptions=True)
        await conversation.aclose()
    return 1 if turn.errors and not turn.audio else 0


async def talk_or_explain(
    options: TalkOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """:func:`talk`, with whatever stops it told in one line on ``err``."""
    try:
        return await talk(options, out, err)
    except Exception as error:
        message = explain(error, options.url)
        if message is None:
            raise  # not the user's doing nor the server's: a bug, with its traceback
        if err.isatty():
            print("\r\033[K", end="", file=err)  # over the progress bar, if one was drawn
        print(f"voxrelay talk: {message}", file=err, flush=True)
        return error.status if isinstance(error, TalkError) else 1


def _check_turn(options: TalkOptions) -> None:
    given = [name for name, on in _turn_kinds(options) if on]
    if not given:
        raise TalkError("say something: give --wav FILE, --text TEXT or --mic", 2)
    if len(given) > 1:
        raise TalkError(f"{' and '.join(given)} cannot be combined: one turn at a time", 2)


def _turn_kinds(options: TalkOptions) -> list[tuple[str, bool]]:
    return [
        ("--wav", options.wav is not None),
        ("--text", bool(options.text)),
        ("--mic", options.mic),
    ]


def _read_wav(path: Path) -> Pcm:
    try:
        return read_wav(str(path))
    except (OSError, EOFError, wave.Error, ValueError) as error:
        raise unreadable_wav(path, error) from None


async def _say(
    conversation: Conversation,
    turn: _Turn,
    options: TalkOptions,
    source: Pcm | None,
    sounddevice: Any,
    err: TextIO,
) -> None:
    """Say the turn and wait for the whole answer (the microphone: until Ctrl+C)."""
    if sounddevice is not None:
        await _talk_by_microphone(sounddevice, conversation, turn, err)
        return
    if source is not None:
        pcm = source.data
        if source.rate != conversation.input_rate:
            resampler = StreamResampler(source.rate, conversation.input_rate)
            pcm = resampler.feed(pcm) + resampler.flush()
        await _stream_audio(conversation, pcm, options, err)
    if options.text:
        await conversation.send_text(options.text)
    try:
        await asyncio.wait_for(turn.done.wait(), options.timeout)
    except TimeoutError:
        raise TalkError(f"no answer within {options.timeout:g} s (--timeout)") from None


async def _until_answered(
    work: asyncio.Task[None], printer: asyncio.Task[None], turn: _Turn, *, stop_on_cancel: bool
) -> None:
    """Wait for ``work`` (the turn said and answered) unless the conversation stops
    first; raise what stopped it. Ctrl+C ends a ``stop_on_cancel`` (microphone) one."""
    try:
        await asyncio.wait({work, printer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if not stop_on_cancel:
            raise
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return
    if work.done() and work.exception() is not None and not printer.done():
        # A send that failed as the link broke: the stream, ending too, says why.
        await asyncio.wait({printer}, timeout=1)
    if not printer.done():
        work.result()
        return
    printer.result()  # raises ConnectionLost when the stream broke off
    if not turn.done.is_set():
        raise ended(turn.end_reason or "unknown")


async def _stream_audio(
    conversation: Conversation, pcm: bytes, options: TalkOptions, err: TextIO
) -> None:
    """Send PCM in 20 ms chunks at (a multiple of) real time, showing progress."""
    rate = conversation.input_rate
    step = rate * CHUNK_MS // 1000 * 2
    if not options.manual:
        pcm += b"\0\0" * rate  # a second of quiet ends the turn for voice detection
    total = len(pcm) / 2 / rate
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, offset in enumerate(range(0, len(pcm), step)):
        await conversation.send_audio(pcm[offset : offset + step])
        sent = min(len(pcm), offset + step) / 2 / rate
        if index % 10 == 0 or offset + step >= len(pcm):
            _progress(err, sent, total)
        delay = started + sent / options.speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    print(file=err)
    if options.manual:
        await conversation.commit()


def _progress(err: TextIO, sent: float, total: float) -> None:
    if not err.isatty():
        if sent >= total:
            print(f"sent {total:.1f} s of audio", end="", file=err)
        return
    width = 30
    filled = int(width * sent / total) if total else width
    bar = "█" * filled + "░" * (width - filled)
    print(f"\rsending {bar} {sent:5.1f}/{total:.1f} s", end="", file=err, flush=True)


async def _print_events(conversation: Conversation, turn: _Turn, out: TextIO) -> None:
    """Show the conversation's events until it ends."""
    speaking = False
    async for event in conversation.events():
        speaking = _show(event, turn, out, speaking)
        if turn.end_reason is not None:
            return


def _show(event: Event, turn: _Turn, out: TextIO, speaking: bool) -> bool:
    data = event.data
    if event.type == "audio":
        turn.audio += event.pcm
    elif event.type == "transcript" and data.get("role") == "assistant":
        if "delta" in data:
            if not speaking:
                print("assistant: ", end="", file=out)
            print(data["delta"], end="", file=out, flush=True)
            return True
        if data.get("final"):
            turn.answer_text = data["text"]
            print("" if speaking else f"assistant: {data['text']}", file=out, flush=True)
            return False
    elif event.type == "transcript" and data.get("final"):
        turn.user_text = data["text"]
        print(f"you: {data['text']}", file=out, flush=True)
    elif event.type == "response_done":
        turn.done.set()
    elif event.type == "error":
        turn.errors.append(f"{data.get('code')}: {data.get('message')}")
        print(f"error: {data.get('code')}: {data.get('message')}", file=out, flush=True)
    elif event.type == "conversation_ended":
        turn.end_reason = str(data.get("reason"))
    return speaking


def _sounddevice() -> Any:
    try:
        import sounddevice  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as error:
        raise SystemExit(
            "voxrelay talk --mic needs the audio extra: pip install 'voxrelay[audio]'"
        ) from error
    except OSError as error:  # the PortAudio library itself is missing
        raise SystemExit(f"voxrelay talk --mic: {error} (install libportaudio2)") from error
    return sounddevice


async def _talk_by_microphone(
    sounddevice: Any, conversation: Conversation, turn: _Turn, err: TextIO
) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    rate = conversation.input_rate

    def captured(data: bytes, frames: int, time: object, status: object) -> None:
        loop.call_soon_threadsafe(chunks.put_nowait, bytes(data))

    print("listening; press Ctrl+C to stop", file=err)
    played = 0
    with (
        sounddevice.RawInputStream(
            samplerate=rate, channels=1, dtype="int16", blocksize=rate // 50, callback=captured
        ),
        sounddevice.RawOutputStream(
            samplerate=conversation.output_rate, channels=1, dtype="int16"
        ) as speaker,
    ):
        try:
            while True:
                await conversation.send_audio(await chunks.get())
                if len(turn.audio) > played:
                    speaker.write(bytes(turn.audio[played:]))
                    played = len(turn.audio)
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass


def run(options: TalkOptions) -> int:
    try:
        options.url = server_url(options.url)
    except TalkError as error:
        print(f"voxrelay talk: {error}", file=sys.stderr)
        return error.status
    options.token = find_token(options.url, options.token)
    try:
        return asyncio.run(talk_or_explain(options))
    except KeyboardInterrupt:
        print("\nvoxrelay talk: stopped", file=sys.stderr)
        return 130
