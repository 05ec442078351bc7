"""The README's walkthrough, run as a new user runs it: every ```sh block of its
walkthrough sections, exactly as written, one after the other in one fresh
shell (``env -i``: a minimal PATH without uv, no VOXRELAY_* settings), so the
README cannot drift from what the commands do.

How a block is run is said by an HTML comment next to it, which GitHub does not
show:

- ``<!-- readme-test: background, ... -->`` before a block: it runs in a terminal
  of its own (the server); the rest waits until the server answers ``/healthz``.
- ``<!-- readme-test: skip, REASON -->`` before a block: not run, for REASON.
- ``<!-- readme-test: needs TOOL -->`` before a block: run where TOOL is
  installed, else not run (the test says so).
- ``<!-- readme-test: wait for EVENT in FILE -->`` after a block: what a reader
  waits to see before going on; the next block runs once FILE holds one more
  ``EVENT`` than before this block.

Lines of a block that start with ``# `` are the output it shows: each must be a
line of what the block printed (``…`` stands for anything). The one liberty
taken: the server listens on a free port (``VOXRELAY_PORT``, which ``voxrelay
talk`` follows) and the commands' ``127.0.0.1:8000`` is read as that port.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("Quick start", "Hear it work", "Try the watch flow with curl")
_MARK = re.compile(r"<!-- readme-test: (.+?) -->")
_WAIT = re.compile(r"wait for (\w+) in (\S+)")
_STATUS = "__readme_block_status__"


@dataclass
class Block:
    section: str
    code: str
    how: str  # "run", "background", "skip, ...", "needs TOOL"
    wait: tuple[str, str] | None  # (event, file) a reader waits for afterwards

    @property
    def expected(self) -> list[str]:
        return [line[2:] for line in self.code.splitlines() if line.startswith("# ")]


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    section = ""
    lines = README.read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.strip() == "```sh" and section in SECTIONS:
            end = lines.index("```", index + 1)
            before = _marker(lines, index - 1, -1)
            after = _marker(lines, end + 1, 1)
            wait = _WAIT.fullmatch(after) if after else None
            code = "\n".join(lines[index + 1 : end])
            blocks.append(
                Block(section, code, before or "run", (wait[1], wait[2]) if wait else None)
            )
            index = end
        index += 1
    return blocks


def _marker(lines: list[str], index: int, step: int) -> str | None:
    while 0 <= index < len(lines) and not lines[index].strip():
        index += step
    if 0 <= index < len(lines) and (found := _MARK.fullmatch(lines[index].strip())):
        return found[1]
    return None


def test_the_walkthrough_is_found_and_every_block_not_run_says_why() -> None:
    blocks = readme_blocks()
    assert {b.section for b in blocks} == set(SECTIONS)
    assert [b.code for b in blocks if b.how.startswith("background")] == ["./scripts/serve"]
    for block in blocks:
        assert block.how in ("run", "background, the server") or re.fullmatch(
            r"skip, .{8,}|needs \w+", block.how
        ), block.how
    # The commands need no uv on PATH.
    assert not any(re.search(r"^\s*uv ", b.code, re.M) for b in blocks if b.how == "run")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fresh_env(port: int) -> dict[str, str]:
    """A new login's environment: HOME (where scripts/bootstrap put uv, if it did),
    the system's PATH, and nothing of this test run's."""
    path = "/usr/local/bin:/usr/bin:/bin"
    env = {"HOME": os.environ["HOME"], "PATH": path, "LANG": "C.UTF-8"}
    user_bin = Path(os.environ["HOME"]) / ".local" / "bin"
    if shutil.which("uv", path=path) is None and not (user_bin / "uv").exists():
        # Installed some other way (pipx, a package manager): offline, bootstrap
        # cannot install it again, so let the shell find that one.
        found = os.environ.get("UV") or shutil.which("uv")
        if found is None:
            pytest.skip("uv is not installed where a new shell or scripts/bootstrap finds it")
        env["PATH"] = f"{Path(found).parent}:{path}"
    return {**env, "VOXRELAY_PORT": str(port)}


class Shell:
    """One bash, as in a terminal: blocks run in it one after another, keeping its
    variables and background jobs."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pending = b""

    def run(self, code: str, timeout: float = 60) -> tuple[int, str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        script = f"{{\n{code}\n}} < /dev/null\necho; echo {_STATUS} $?\n"
        self.process.stdin.write(script.encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        output = self._pending
        while (found := re.search(rb"\n" + _STATUS.encode() + rb" (\d+)\n", output)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"still running after {timeout} s:\n{code}\n{output.decode()}"
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"the shell exited:\n{output.decode()}"
                output += chunk
        self._pending = output[found.end() :]
        return int(found[1]), output[: found.start()].decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def _count(path: Path, event: str) -> int:
    if not path.exists():
        return 0
    return path.read_text(errors="replace").splitlines().count(f"event: {event}")


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _start_server(code: str, cwd: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """The server's block, in a terminal of its own, once it answers."""
    with (cwd / "server.log").open("wb") as log:
        server = subprocess.Popen(
            ["bash", "-c", code],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_until(lambda: _healthy(port) or server.poll() is not None, "the server")
    assert server.poll() is None, (cwd / "server.log").read_text()
    return server


def _wait_for_more(path: Path, event: str, before: int) -> None:
    _wait_until(lambda: _count(path, event) > before, f"{event} in {path.name}")


def _matches(expected: str, output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return any(re.fullmatch(pattern, line.strip()) for line in output.splitlines())


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = _free_port()
    env = _fresh_env(port)
    # The reader's directory: the checkout's scripts, none of its files.
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    server: subprocess.Popen[bytes] | None = None
    shell = Shell(tmp_path, env)
    not_run: list[str] = []
    try:
        for block in readme_blocks():
            code = block.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if block.how.startswith("skip"):
                not_run.append(f"{block.code!r}: {block.how.removeprefix('skip, ')}")
                continue
            if block.how.startswith("needs "):
                tool = block.how.removeprefix("needs ")
                if shutil.which(tool, path=env["PATH"]) is None:
                    not_run.append(f"{block.code.splitlines()[0]!r}: {tool} is not installed")
                    continue
            if block.how.startswith("background"):
                server = _start_server(code, tmp_path, env, port)
                continue
            watched = tmp_path / block.wait[1] if block.wait else None
            before = _count(watched, block.wait[0]) if watched and block.wait else 0
            status, output = shell.run(code)
            assert status == 0, f"{code}\nexited {status}:\n{output}"
            for line in block.expected:
                assert _matches(line, output), f"{code}\ndid not print {line!r}:\n{output}"
            if watched and block.wait:
                _wait_for_more(watched, block.wait[0], before)
        events = tmp_path / "events.txt"
        # The background stream ended with the conversation, as the README says.
        _wait_until(lambda: _count(events, "conversation_ended") == 1, "conversation_ended")
        status, jobs = shell.run("jobs -r")
        assert jobs.strip() == "", jobs
        # Both kinds of turn were answered and kept.
        assert _count(events, "response_done") >= 2
        status, stored = shell.run(
            f'curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{port}/conversations/$CONV'
        )
        assert '"text":"You said: hello"' in stored, stored
    finally:
        shell.close()
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
    # Left out, with why (shown with pytest -rP or on failure).
    print("\n".join(["not run:", *not_run]))
