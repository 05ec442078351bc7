"""`voxrelay talk` against a running server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from harness import RunningServer, speech_file

from voxrelay.audio import read_wav
from voxrelay.client import VoxrelayClient
from voxrelay.talk import TalkOptions, talk

WAV = "sense_and_sensibility_01_austen_64kb-0880.wav"


@pytest.mark.parametrize("transport", ["http", "socketio", "ws"])
async def test_talk_streams_a_wav_and_saves_the_answer(
    server: RunningServer, tmp_path: Path, transport: str
) -> None:
    token = await server.token("laptop", "alice")
    out, err = io.StringIO(), io.StringIO()
    answer = tmp_path / "answer.wav"
    source = read_wav(str(speech_file(WAV)))
    code = await talk(
        TalkOptions(
            url=server.url,
            token=token,
            transport=transport,  # type: ignore[arg-type]
            wav=speech_file(WAV),
            out=answer,
            speed=8,
        ),
        out,
        err,
    )
    assert code == 0, out.getvalue() + err.getvalue()
    lines = out.getvalue().splitlines()
    spoken = len(source.data) / 2 / source.rate
    assert any(line.startswith("you: (") for line in lines), lines
    assert any(line.startswith("assistant: You said:") for line in lines), lines
    with wave.open(str(answer)) as saved:
        seconds = saved.getnframes() / saved.getframerate()
        assert saved.getframerate() == 24000
    # The echo plays the turn back: about as long as what was said.
    assert spoken - 0.5 < seconds < spoken + 1.5
    async with VoxrelayClient(server.url, token) as client:
        listed = await client.conversations()
        assert len(listed) == 1 and listed[0]["messageCount"] == 2


async def test_talk_types_a_turn(server: RunningServer, tmp_path: Path) -> None:
    token = await server.token("laptop", "alice")
    out = io.StringIO()
    code = await talk(
        TalkOptions(url=server.url, token=token, text="good morning", out=tmp_path / "a.wav"),
        out,
        io.StringIO(),
    )
    assert code == 0
    assert "assistant: You said: good morning" in out.getvalue()
    assert (tmp_path / "a.wav").stat().st_size > 44


def test_talk_command_creates_a_development_token(server: RunningServer, tmp_path: Path) -> None:
    """With no token at all, talk against a local server makes one in its database."""
    env = {**os.environ, "VOXRELAY_DATABASE_URL": server.settings.database_url}
    env.pop("VOXRELAY_TOKEN", None)
    command = [
        str(Path(sys.executable).with_name("voxrelay")),
        "talk",
        "--url",
        server.url,
        "--text",
        "hello from the terminal",
    ]
    first = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert "created a development token" in first.stderr
    assert "assistant: You said: hello from the terminal" in first.stdout
    token_file = tmp_path / ".voxrelay-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "created a development token" not in again.stderr
    assert (tmp_path / "answer.wav").exists()


def test_talk_refuses_a_remote_server_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOXRELAY_TOKEN"}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("voxrelay")),
            "talk",
            "--url",
            "http://voxrelay.invalid:8000",
            "--text",
            "x",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--token" in result.stderr


def test_talk_finds_the_server_its_settings_name() -> None:
    from voxrelay.talk_errors import TalkError
    from voxrelay.talk_options import default_url, server_url

    assert default_url({}) == "http://127.0.0.1:8000"
    assert default_url({"VOXRELAY_PORT": "9001"}) == "http://127.0.0.1:9001"
    assert default_url({"VOXRELAY_HOST": "0.0.0.0", "VOXRELAY_PORT": "9"}) == "http://127.0.0.1:9"
    assert default_url({"VOXRELAY_HOST": "::1"}) == "http://[::1]:8000"
    assert server_url("127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert server_url("wss://voxrelay.example/") == "https://voxrelay.example/"
    for wrong in ("ftp://host", "http://", ""):
        with pytest.raises(TalkError, match="not a server address"):
            server_url(wrong)
