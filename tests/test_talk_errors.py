"""`voxrelay talk` when something is wrong: one line on stderr that says what
happened and what to do, a non-zero exit, never a traceback; on every transport,
against real servers (one killed mid-conversation)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import RunningServer

from voxrelay.audio import wav_bytes
from voxrelay.store import Store
from voxrelay.talk import TalkOptions, talk_or_explain

TRANSPORTS = ["http", "socketio", "ws"]
VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _talk(**given: object) -> tuple[int, str, str]:
    """Run talk as the command does; its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    options = TalkOptions(**given)  # type: ignore[arg-type]
    code = await asyncio.wait_for(talk_or_explain(options, out, err), 30)
    return code, out.getvalue(), err.getvalue()


def _said(err: str) -> str:
    """The one line talk says about a problem (the last on stderr)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("voxrelay talk: ")]
    assert len(lines) == 1, err
    return lines[0]


def _tone(tmp_path: Path, seconds: float, rate: int = 16000) -> Path:
    samples = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * 440 * samples) * 8000).astype("<i2").tobytes()
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(pcm, rate))
    return path


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_server_says_so(transport: str) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, _, err = await _talk(url=url, token="vxr_x", transport=transport, text="hi")
    assert code == 1
    assert _said(err) == (
        f"voxrelay talk: cannot reach {url}: connection refused; is `voxrelay serve` running?"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_url_without_scheme_means_http(server: RunningServer, transport: str) -> None:
    token = await server.token()
    bare = server.url.removeprefix("http://")
    code, out, err = await _talk(url=bare, token=token, transport=transport, text="hi", out=None)
    assert code == 0, err
    assert "assistant: You said: hi" in out


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_to_a_plain_server_says_to_use_http(
    server: RunningServer, transport: str
) -> None:
    url = server.url.replace("http://", "https://")
    code, _, err = await _talk(url=url, token="vxr_x", transport=transport, text="hi")
    assert code == 1
    assert "does not speak TLS; use http:// instead of https://" in _said(err)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_token_says_which_token_to_give(
    server: RunningServer, transport: str
) -> None:
    code, _, err = await _talk(url=server.url, token="vxr_nope", transport=transport, text="hi")
    assert code == 1
    said = _said(err)
    assert f"{server.url} refused the token" in said
    assert "--token" in said and "VOXRELAY_TOKEN" in said


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_url_with_a_wrong_path_says_to_give_the_server_address(
    server: RunningServer, transport: str
) -> None:
    token = await server.token()
    code, _, err = await _talk(url=server.url + "/api", token=token, transport=transport, text="hi")
    assert code == 1
    said = _said(err)
    assert "has no voxrelay API" in said
    assert f"--url {server.url}" in said


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_missing_or_unreadable_wav_says_what_is_accepted(
    server: RunningServer, transport: str, tmp_path: Path
) -> None:
    token = await server.token()
    common = {"url": server.url, "token": token, "transport": transport}
    code, _, err = await _talk(wav=tmp_path / "nope.wav", **common)
    assert code == 2
    assert _said(err) == f"voxrelay talk: cannot read {tmp_path / 'nope.wav'}: no such file"

    # A 32-bit float WAV (format 3), which the wave module cannot read.
    data = np.zeros(1600, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    floats = tmp_path / "float.wav"
    floats.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    code, _, err = await _talk(wav=floats, **common)
    assert code == 2
    said = _said(err)
    assert "floating point" in said and "16-bit PCM WAV file" in said and "sox" in said

    (tmp_path / "text.wav").write_text("not a recording at all\n" * 4)
    code, _, err = await _talk(wav=tmp_path / "text.wav", **common)
    assert code == 2
    assert "it is not a WAV file" in _said(err)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wav_and_text_together_are_refused(
    server: RunningServer, transport: str, tmp_path: Path
) -> None:
    wav = _tone(tmp_path, 0.5)
    code, out, err = await _talk(
        url=server.url, token=await server.token(), transport=transport, wav=wav, text="hi"
    )
    assert code == 2
    assert _said(err) == "voxrelay talk: --wav and --text cannot be combined: one turn at a time"
    assert out == ""


async def _until_talking(err: io.StringIO) -> None:
    for _ in range(500):
        if "sending" in err.getvalue() or "over " in err.getvalue():
            await asyncio.sleep(0.3)  # some audio on its way
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"talk did not start: {err.getvalue()}")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_shutting_down_mid_talk_says_the_conversation_ended(
    server: RunningServer, transport: str, tmp_path: Path
) -> None:
    out, err = io.StringIO(), io.StringIO()
    options = TalkOptions(
        url=server.url, token=await server.token(), transport=transport, wav=_tone(tmp_path, 20)
    )  # type: ignore[arg-type]
    talking = asyncio.ensure_future(talk_or_explain(options, out, err))
    await _until_talking(err)
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    code = await asyncio.wait_for(talking, 20)
    assert code == 1
    assert _said(err.getvalue()) == (
        "voxrelay talk: the conversation ended before the answer: the server shut down"
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``voxrelay serve`` as its own process (to be killed), and a token for it."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'killed.db'}"

    async def make_token() -> str:
        store = await Store.open(database)
        try:
            return (await store.create_token("laptop", "alice"))[1]
        finally:
            await store.close()

    token = asyncio.run(make_token())
    port = _free_port()
    env = {**os.environ, "VOXRELAY_DATABASE_URL": database, "VOXRELAY_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [VOXRELAY, "serve", "--port", str(port), "--provider", "echo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert process.poll() is None, "the server exited"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield process, url, token
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_killed_mid_talk_says_the_connection_was_lost(
    served: tuple[subprocess.Popen[bytes], str, str], transport: str, tmp_path: Path
) -> None:
    process, url, token = served
    out, err = io.StringIO(), io.StringIO()
    options = TalkOptions(url=url, token=token, transport=transport, wav=_tone(tmp_path, 20))  # type: ignore[arg-type]
    talking = asyncio.ensure_future(talk_or_explain(options, out, err))
    await _until_talking(err)
    process.send_signal(signal.SIGKILL)
    code = await asyncio.wait_for(talking, 20)
    assert code == 1
    said = _said(err.getvalue())
    assert said.startswith(f"voxrelay talk: lost the connection to {url} mid-conversation: ")
    assert said.endswith("is the server still running?")


def test_the_command_says_one_line_and_no_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXRELAY_")}
    ran = subprocess.run(
        [VOXRELAY, "talk", "--url", url, "--token", "vxr_x", "--text", "hi"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [
        f"voxrelay talk: cannot reach {url}: connection refused; is `voxrelay serve` running?"
    ]
    both = subprocess.run(
        [VOXRELAY, "talk", "--wav", "a.wav", "--text", "hi"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2
    assert "Traceback" not in both.stderr
    assert both.stderr.splitlines()[-1] == (
        "voxrelay talk: error: argument --text: not allowed with argument --wav"
    )
