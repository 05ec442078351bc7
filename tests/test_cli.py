"""The `voxrelay` command, run as a user runs it: as a separate process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import services
from harness import EventReader

from voxrelay import cli
from voxrelay.client import VoxrelayClient

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VOXRELAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "VOXRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "VOXRELAY_LOG_LEVEL": "warning",
    }


def test_token_create_list_revoke(env: dict[str, str]) -> None:
    created = _run("token", "create", "--device", "kitchen-watch", "--user", "alice", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("vxr_") and len(token) > 40
    listed = _run("token", "list", env=env)
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["KIND", "USER", "NAME", "CREATED", "REVOKED"]
    assert row.split()[:3] == ["device", "alice", "kitchen-watch"]
    assert row.split()[4] == "-"
    assert token not in listed.stdout
    revoked = _run("token", "revoke", "kitchen-watch", env=env)
    assert revoked.returncode == 0
    assert _run("token", "list", env=env).stdout.splitlines()[1].split()[4] != "-"
    again = _run("token", "revoke", "kitchen-watch", env=env)
    assert again.returncode == 1
    assert "no active token" in again.stderr


class _Cli:
    """``voxrelay`` run in this process (the same ``main`` as the command, without the
    seconds a new interpreter takes to start)."""

    def __init__(self, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        self._env, self._capsys = env, capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("VOXRELAY_DATABASE_URL", self._env["VOXRELAY_DATABASE_URL"])
            code = cli.main(args)
        out, err = self._capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    def revoked(self) -> dict[str, bool]:
        """``token list``: whether each user's token is revoked."""
        rows = self("token", "list").stdout.splitlines()[1:]
        return {row.split()[1]: row.split()[4] != "-" for row in rows}


def test_token_kinds_list_filter_and_revoke_by_user(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run = _Cli(env, capsys)
    for user in ("alice", "bob"):
        assert run("token", "create", "--device", "my-watch", "--user", user).returncode == 0
    own = run("token", "create", "--device", "my-watch")
    own_user = own.stdout.splitlines()[1].split()[1]
    assert own_user.startswith("device:tok_")
    service = run("token", "create", "--service", "backend")
    assert service.returncode == 0 and service.stdout.splitlines()[0] == "service: backend"
    mixed = run("token", "create", "--service", "backend", "--user", "alice")
    assert mixed.returncode == 2 and "--user is for devices" in mixed.stderr
    reserved = run("token", "create", "--device", "x", "--user", own_user)
    assert reserved.returncode == 2 and "devices' own" in reserved.stderr

    listed = run("token", "list").stdout.splitlines()
    assert [line.split()[:3] for line in listed[1:]] == [
        ["device", "alice", "my-watch"],
        ["device", "bob", "my-watch"],
        ["device", own_user, "my-watch"],
        ["service", "-", "backend"],
    ]
    # Aligned: every column starts where its header does.
    starts = [listed[0].index(name) for name in ("USER", "NAME", "CREATED", "REVOKED")]
    for line in listed[1:]:
        assert all(line[start - 2 : start] == "  " and line[start] != " " for start in starts)
    only_bob = run("token", "list", "--user", "bob").stdout.splitlines()
    assert [line.split()[1] for line in only_bob[1:]] == ["bob"]

    ambiguous = run("token", "revoke", "my-watch")
    assert ambiguous.returncode == 2
    [message] = ambiguous.stderr.splitlines()
    for match in ("user alice device my-watch", "user bob device my-watch", own_user):
        assert match in message
    assert "nothing revoked" in message and "--user" in message
    assert run.revoked() == {"alice": False, "bob": False, own_user: False, "-": False}

    assert run("token", "revoke", "my-watch", "--user", "bob").returncode == 0
    assert run.revoked() == {"alice": False, "bob": True, own_user: False, "-": False}
    assert run("token", "revoke", "--service", "backend").returncode == 0
    assert run("token", "revoke", "--service", "backend").returncode == 1
    assert run("token", "revoke", "backend", "--service", "backend").returncode == 2


def test_serve_refuses_a_cloud_provider_without_its_key(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    result = _run("serve", "--provider", "openai", env=env)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr
    unknown = _run("serve", "--provider", "nonsense", env=env)
    assert unknown.returncode == 2
    assert "unknown provider" in unknown.stderr


def test_serve_refuses_a_price_table_it_cannot_use(env: dict[str, str], tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text('[models."gpt-realtime"]\ninput_txt = 4.0\n')
    result = _run("serve", "--provider", "echo", env={**env, "VOXRELAY_PRICES": str(table)})
    assert result.returncode == 2
    assert "VOXRELAY_PRICES: models.gpt-realtime: unknown ['input_txt']" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str, dict[str, str]]]:
    def start(extra: dict[str, str]) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
        port = _free_port()
        full = {**env, **extra}
        process = subprocess.Popen(
            [VOXRELAY, "serve", "--port", str(port)],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process, f"http://127.0.0.1:{port}", full

    started: list[subprocess.Popen[str]] = []
    yield start  # type: ignore[misc]
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


async def _wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(
                    f"server exited: {process.stdout.read() if process.stdout else ''}"
                )
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


async def _conversation_over_the_cli_server(serve, extra: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    process, url, env = serve(extra)
    await _wait_healthy(url, process)
    created = _run("token", "create", "--device", "watch", "--user", "alice", env=env)
    token = created.stdout.strip().splitlines()[-1]
    async with VoxrelayClient(url, token) as client:
        assert (await client.http.get("/readyz")).status_code == 200
        reader = EventReader(client.events())
        started = await reader.wait_for("conversation_started")
        conversation_id = started.data["conversationId"]
        await client.text(conversation_id, "hello from the command line")
        await reader.wait_for("response_done")
        # SIGTERM: every session ends with server_shutdown, then the process exits.
        process.send_signal(signal.SIGTERM)
        ended = await reader.wait_for("conversation_ended")
        assert ended.data["reason"] == "server_shutdown"
        await reader.close()
    assert await asyncio.get_running_loop().run_in_executor(None, process.wait, 20) == 0

    process, url, env = serve(extra)
    await _wait_healthy(url, process)
    async with VoxrelayClient(url, token) as client:
        listed = await client.conversations()
        assert [c["id"] for c in listed] == [conversation_id]
        messages = (await client.conversation(conversation_id))["messages"]
        assert [m["text"] for m in messages] == [
            "hello from the command line",
            "You said: hello from the command line",
        ]
        status = (await client.get_session(started.data["sessionId"]))["status"]
        assert status == "ended"


async def test_serve_holds_a_conversation_and_shuts_down_cleanly(serve) -> None:  # type: ignore[no-untyped-def]
    await _conversation_over_the_cli_server(serve, {})


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    services.require_or_skip("postgresql", "PostgreSQL is not running on 127.0.0.1:5432")
    async with services.postgres_database() as url:
        yield url


async def test_serve_on_postgresql(serve, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    await _conversation_over_the_cli_server(serve, {"VOXRELAY_DATABASE_URL": postgres_url})


def test_serve_on_a_busy_port_says_which_and_how_to_choose_another(env: dict[str, str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run("serve", "--port", str(port), "--provider", "echo", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"voxrelay: port {port} on 127.0.0.1 is in use already (another voxrelay serve?);"
        " choose another with --port N or VOXRELAY_PORT=N"
    ]
    # Told before the database was touched.
    assert not Path(env["VOXRELAY_DATABASE_URL"].removeprefix("sqlite:///")).exists()


def _help(*command: str, env: dict[str, str]) -> str:
    shown = _run(*command, "--help", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "``" not in shown.stdout  # read as text, not as reStructuredText
    return shown.stdout


def _options(text: str) -> dict[str, str]:
    """Each option of a help text and what it says, over its lines."""
    found: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            found[current] = line.strip().removeprefix(current)
        elif current and line.startswith(" " * 10):
            found[current] += " " + line.strip()
        else:
            current = ""
    return found


def test_help_reads_as_prose_and_explains_every_option(env: dict[str, str]) -> None:
    from voxrelay import __version__
    from voxrelay.config import PROVIDERS

    top = _help(env=env)
    for command in ("serve", "talk", "token", "db"):
        assert command in top
    version = _run("--version", env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"voxrelay {__version__}"

    serve = _help("serve", env=env)
    for name in PROVIDERS:
        assert f"\n  {name} " in serve, f"{name} is not listed:\n{serve}"
    for option, said in _options(serve).items():
        if option != "-h":
            assert "default:" in said and "env VOXRELAY_" in said, (option, said)
            assert len(said.split()) > 6, (option, said)  # more than its default

    talk = _options(_help("talk", env=env))
    for option, said in talk.items():
        assert len(said.split()) >= 4, (option, said)
    assert "http (an SSE event stream" in talk["--transport"]
    assert "(default: http)" in talk["--transport"]
    assert "espeak-ng" in talk["--voice"] and "alloy" in talk["--voice"]
    assert "(default: answer.wav)" in talk["--out"]
    assert "(default: http://127.0.0.1:8000" in talk["--url"]
