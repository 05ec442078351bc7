"""The tools file: TOML or JSON, environment variables in headers, Python callables by
import path (sync and async, each bounded by its timeout), and one clear line, not a
traceback, for every way the file can be wrong (in the loader and at ``voxrelay serve``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from voxrelay.tools import PythonCallable, ToolFileError, load_tools, run_tool

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
ENV = {"CARE_TOKEN": "s3cret"}
ALERT = """
[[tools]]
name = "alert_caregiver"
description = "Tell the caregiver."
url = "https://care.example.test/alert"
headers = { Authorization = "Bearer ${CARE_TOKEN}", X-Source = "voxrelay" }
timeout_s = 3
[tools.parameters]
type = "object"
properties = { message = { type = "string" } }
required = ["message"]
"""
CALLED: list[dict[str, object]] = []


def lookup(city: str) -> dict[str, str]:
    """A sync tool: run on a worker thread."""
    CALLED.append({"city": city, "thread": threading.current_thread().name})
    return {"city": city, "weather": "sunny"}


async def remind(at: str) -> str:
    await asyncio.sleep(0)
    return f"reminder set for {at}"


def stuck() -> None:
    time.sleep(2)


def _write(tmp_path: Path, text: str, name: str = "tools.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_toml_file_with_headers_from_the_environment(tmp_path: Path) -> None:
    toolbox = load_tools(_write(tmp_path, ALERT), ENV)
    tool = toolbox.functions["alert_caregiver"]
    assert tool.runner.headers == {"Authorization": "Bearer s3cret", "X-Source": "voxrelay"}  # type: ignore[union-attr]
    assert tool.timeout_s == 3.0 and tool.later is False
    # What the upstream is told: the function, not how it runs nor its secrets.
    assert toolbox.upstream() == (
        {
            "type": "function",
            "name": "alert_caregiver",
            "description": "Tell the caregiver.",
            "parameters": {
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "required": ["message"],
            },
        },
    )
    assert "s3cret" not in repr(toolbox)


def test_the_same_tools_as_json_and_an_mcp_server(tmp_path: Path) -> None:
    data = {
        "tools": [
            {
                "name": "lookup",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "callable": f"{__name__}:lookup",
                "async": True,
            },
            {
                "type": "mcp",
                "server_label": "calendar",
                "server_url": "https://mcp.example.test",
                "authorization": "${CARE_TOKEN}",
                "allowed_tools": ["list_events"],
            },
        ]
    }
    toolbox = load_tools(_write(tmp_path, json.dumps(data), "tools.json"), ENV)
    assert toolbox.functions["lookup"].later is True
    assert isinstance(toolbox.functions["lookup"].runner, PythonCallable)
    assert toolbox.mcp == (
        {
            "type": "mcp",
            "server_label": "calendar",
            "server_url": "https://mcp.example.test",
            "require_approval": "never",
            "authorization": "s3cret",
            "allowed_tools": ["list_events"],
        },
    )
    assert toolbox.mcp_labels == {"calendar"}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[[tools]\nname=", "is not valid TOML"),
        ("title = 'no tools'", "declares no tools"),
        (
            ALERT.replace("${CARE_TOKEN}", "${MISSING_TOKEN}"),
            "names ${MISSING_TOKEN}, which is not set",
        ),
        (
            ALERT.replace('url = "https://care.example.test/alert"', ""),
            "give either url or callable",
        ),
        (ALERT.replace("https://", "ftp://"), "url must be an http:// or https:// URL"),
        (ALERT.replace('type = "string"', 'type = "text"'), "parameters is not a JSON Schema"),
        (
            ALERT.replace('name = "alert_caregiver"', 'name = "alert caregiver"'),
            "name must be 1-64",
        ),
        (ALERT.replace("timeout_s = 3", "timeout_s = 0"), "timeout_s must be a number"),
        (ALERT.replace("timeout_s = 3", "timeot_s = 3"), "unknown field 'timeot_s'"),
        (ALERT.replace("[tools.parameters]", "[tools.params]"), "unknown field 'params'"),
        (ALERT + ALERT, "the name 'alert_caregiver' is taken"),
        ('[[tools]]\nname = "x"\ncallable = "no.such.module:f"', "cannot import no.such.module:f"),
        ('[[tools]]\nname = "x"\ncallable = "os"', "callable must be 'module:function'"),
        ('[[tools]]\nname = "x"\ncallable = "os:sep"', "os:sep is not callable"),
        (
            '[[tools]]\ntype = "mcp"\nserver_label = "c"\nserver_url = "https://x"\n'
            'require_approval = "always"',
            "require_approval must be 'never'",
        ),
    ],
)
def test_every_mistake_is_one_clear_line(tmp_path: Path, text: str, said: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ToolFileError) as refused:
        load_tools(path, ENV)
    message = str(refused.value)
    assert message.startswith(f"tools file {path}: ") and said in message, message
    assert "\n" not in message


def test_a_missing_file_and_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolFileError, match="cannot be read"):
        load_tools(str(tmp_path / "nowhere.toml"), ENV)
    with pytest.raises(ToolFileError, match="YAML is not read; write the tools as TOML or JSON"):
        load_tools(_write(tmp_path, "tools: []", "tools.yaml"), ENV)


async def test_python_tools_run_sync_on_a_thread_async_on_the_loop_each_within_its_timeout(
    tmp_path: Path,
) -> None:
    text = f"""
[[tools]]
name = "lookup"
callable = "{__name__}:lookup"
[[tools]]
name = "remind"
callable = "{__name__}:remind"
[[tools]]
name = "stuck"
callable = "{__name__}:stuck"
timeout_s = 0.2
"""
    toolbox = load_tools(_write(tmp_path, text), ENV)
    async with httpx.AsyncClient() as http:
        looked = await run_tool(toolbox.functions["lookup"], {"city": "Haifa"}, http)
        assert looked.output == {"city": "Haifa", "weather": "sunny"} and looked.error is None
        assert CALLED[-1]["thread"] != threading.current_thread().name
        reminded = await run_tool(toolbox.functions["remind"], {"at": "9:00"}, http)
        assert reminded.output == "reminder set for 9:00"
        started = time.monotonic()
        timed_out = await run_tool(toolbox.functions["stuck"], {}, http)
        assert time.monotonic() - started < 1.5
        assert timed_out.error == "the tool stuck did not answer within 0.2 s"
        wrong = await run_tool(toolbox.functions["lookup"], {"town": "Haifa"}, http)
        assert wrong.error == "the tool lookup failed"


def test_serve_with_a_bad_tools_file_says_so_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, ALERT.replace("${CARE_TOKEN}", "${NOT_SET_ANYWHERE}"))
    env = {
        **{k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"},
        "VOXRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VOXRELAY_PROVIDER": "echo",
        "VOXRELAY_TOOLS": path,
    }
    result = subprocess.run(
        [VOXRELAY, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"voxrelay: tools file {path}: tools[0] (alert_caregiver): headers.Authorization"
        " names ${NOT_SET_ANYWHERE}, which is not set"
    ]
