"""``voxrelay talk``: hold a conversation with a server from the terminal.

Streams a WAV file in real time (or types a text turn, or uses the microphone
with the ``audio`` extra), prints the live transcripts, and saves the spoken
answer to a WAV file. Works over every transport.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from voxrelay.audio import StreamResampler, read_wav, wav_bytes
from voxrelay.client.conversation import (
    TRANSPORTS,
    Conversation,
    Event,
    Options,
    Transport,
    connect,
)
from voxrelay.client.http import ApiError
from voxrelay.config import SAMPLE_RATES, Settings

TOKEN_FILE = ".voxrelay-token"
DEV_DEVICE = "voxrelay-talk"
DEV_USER = "local"
CHUNK_MS = 20


@dataclass
class TalkOptions:
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    transport: Transport = "http"
    wav: Path | None = None
    text: str | None = None
    out: Path | None = Path("answer.wav")
    conversation_id: str | None = None
    language: str | None = None
    voice: str | None = None
    manual: bool = False
    speed: float = 1.0
    mic: bool = False
    end: bool = True
    timeout: float = 120.0


@dataclass
class _Turn:
    """What the printer has seen of the answer so far."""

    audio: bytearray = field(default_factory=bytearray)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
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
    if options.token is None:
        raise ValueError("talk() needs a token; find_token() finds one")
    token = options.token
    if options.wav is None and not options.text and not options.mic:
        raise SystemExit("voxrelay talk: give --wav FILE, --text TEXT or --mic")
    sounddevice = _sounddevice() if options.mic else None
    source = read_wav(str(options.wav)) if options.wav else None
    input_rate = source.rate if source and source.rate in SAMPLE_RATES else 16000
    conversation = await connect(
        options.url,
        token,
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
    turn = _Turn()
    printer = asyncio.get_running_loop().create_task(_print_events(conversation, turn, out))
    try:
        print(f"conversation {conversation.conversation_id} over {options.transport}", file=err)
        if sounddevice is not None:
            await _talk_by_microphone(sounddevice, conversation, turn, err)
        else:
            if source is not None:
                pcm = source.data
                if source.rate != input_rate:
                    resampler = StreamResampler(source.rate, input_rate)
                    pcm = resampler.feed(pcm) + resampler.flush()
                await _stream_audio(conversation, pcm, options, err)
            if options.text:
                await conversation.send_text(options.text)
            await asyncio.wait_for(turn.done.wait(), options.timeout)
        if options.out is not None and turn.audio:
            options.out.write_bytes(wav_bytes(bytes(turn.audio), conversation.output_rate))
            seconds = len(turn.audio) / 2 / conversation.output_rate
            print(f"saved {seconds:.1f} s of answer audio to {options.out}", file=err)
        if options.end:
            await conversation.end()
            await asyncio.wait_for(turn.ended.wait(), 10)
    except TimeoutError:
        print("voxrelay talk: no answer in time", file=err)
        return 1
    finally:
        printer.cancel()
        await asyncio.gather(printer, return_exceptions=True)
        await conversation.aclose()
    return 1 if turn.errors and not turn.audio else 0


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
    speaking = False
    async for event in conversation.events():
        speaking = _show(event, turn, out, speaking)


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
        turn.ended.set()
        turn.done.set()
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    parser.add_argument(
        "--token", default=None, help=f"device token (else VOXRELAY_TOKEN, ./{TOKEN_FILE})"
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="http")
    parser.add_argument("--wav", type=Path, default=None, help="a WAV file to say")
    parser.add_argument("--text", default=None, help="a typed turn")
    parser.add_argument(
        "--out", type=Path, default=Path("answer.wav"), help="where the answer goes"
    )
    parser.add_argument("--conversation", default=None, help="resume this conversation")
    parser.add_argument("--language", default=None, help="BCP-47, e.g. en, he")
    parser.add_argument("--voice", default=None)
    parser.add_argument("--manual", action="store_true", help="push-to-talk: commit, no VAD")
    parser.add_argument("--speed", type=float, default=1.0, help="send audio N times real time")
    parser.add_argument("--mic", action="store_true", help="microphone and speaker (audio extra)")
    parser.add_argument("--keep-open", action="store_true", help="do not end the conversation")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the answer"
    )


def options_from(args: argparse.Namespace) -> TalkOptions:
    return TalkOptions(
        url=args.url,
        token=args.token,
        transport=args.transport,
        wav=args.wav,
        text=args.text,
        out=args.out,
        conversation_id=args.conversation,
        language=args.language,
        voice=args.voice,
        manual=args.manual,
        speed=args.speed,
        mic=args.mic,
        end=not args.keep_open,
        timeout=args.timeout,
    )


def run(options: TalkOptions) -> int:
    options.token = find_token(options.url, options.token)
    try:
        return asyncio.run(talk(options))
    except ApiError as error:
        hint = " (is the token for this server?)" if error.status == 401 else ""
        print(f"voxrelay talk: {error}{hint}", file=sys.stderr)
        return 1
    except (wave.Error, ValueError, EOFError) as error:
        print(f"voxrelay talk: cannot read {options.wav}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"voxrelay talk: cannot reach {options.url}: {error}", file=sys.stderr)
        return 1
