"""Structured logs for ``voxrelay serve``: one JSON object per line on stderr
(``VOXRELAY_LOG_FORMAT=json``, the default) or human text (``text``).

Every line says what it is about: ``conversation_id``, ``session_id``,
``transport`` and ``device`` come from a context variable that transports set
with ``bind`` once they know them (tasks started afterwards inherit it), or from
a record's ``extra=``, which wins. Secrets never reach the output: device tokens,
provider keys and base64 audio are redacted from every message, field and
traceback, uvicorn's access and error lines included. See docs/operations.md.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from voxrelay.config import Settings

CONTEXT_FIELDS = ("conversation_id", "session_id", "transport", "device")

_NONE: Mapping[str, str] = MappingProxyType({})
_fields: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "voxrelay_log_fields", default=_NONE
)


# Fields of every line this process writes (which worker it is).
_process_fields: dict[str, str] = {}


def set_process_fields(**fields: str) -> None:
    _process_fields.update(fields)


def bind(**fields: str | None) -> None:
    """Add fields (None leaves one as is) to the log lines of the current task, and of
    the tasks it starts from now on."""
    merged = dict(_fields.get())
    merged.update({key: value for key, value in fields.items() if value is not None})
    _fields.set(merged)


def current() -> Mapping[str, str]:
    return _fields.get()


def session_context(conversation_id: str, session_id: str) -> contextvars.Context:
    """A context for a session's own tasks: its ids, and not those of the transport
    or device whose request happened to start it."""
    context = contextvars.copy_context()
    context.run(_fields.set, {"conversation_id": conversation_id, "session_id": session_id})
    return context


# -- redaction ---------------------------------------------------------------------------------

_REDACTED = "[redacted]"
_secrets: list[str] = []


def _base64_run(match: re.Match[str]) -> str:
    return f"[{len(match.group())} base64 chars]"


_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # ?access_token= on streams and WebSocket upgrades (uvicorn's access lines).
    (re.compile(r"(?i)(access_token=)[^&\s\"'#]+"), r"\1" + _REDACTED),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"), r"\1" + _REDACTED),
    (re.compile(r"(?i)(openai-insecure-api-key\.)[^\s\"',;]+"), r"\1" + _REDACTED),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',;\n}]+"), r"\1" + _REDACTED),
    (re.compile(r"(?i)(api[-_]key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"), r"\1" + _REDACTED),
    (re.compile(r"\bvxr_[A-Za-z0-9_-]{8,}"), "vxr_" + _REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), "sk-" + _REDACTED),
    # Audio (and anything else that long) in base64: say how long, not what.
    (re.compile(r"[A-Za-z0-9+/]{200,}={0,2}"), _base64_run),
]


def add_secrets(values: Iterable[str | None]) -> None:
    """Values (provider keys) that are replaced wherever they appear."""
    for value in values:
        if value and len(value) >= 6 and value not in _secrets:
            _secrets.append(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# -- formatters --------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context's fields, then the record's extras, then an access line's parts."""
    fields: dict[str, Any] = {**_process_fields, **_fields.get()}
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, http_version, status = args
        fields.update(
            client=client, method=method, path=path, http_version=http_version, status=status
        )
    return {key: _value(value) for key, value in fields.items()}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _record_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message [field=value ...]``, redacted like the JSON form."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = _record_fields(record)
        if record.name == "uvicorn.access":
            fields = {k: v for k, v in fields.items() if k in CONTEXT_FIELDS}
        if fields:
            text += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact(text)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the app and uvicorn alike."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"voxrelay": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "voxrelay",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own lines (access and error) reach the same handler.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": level, "handlers": [], "propagate": True},
            # python-engineio/-socketio add a plain-text handler of their own to these
            # loggers unless they already have a level.
            "engineio.server": {"level": "ERROR", "propagate": True},
            "socketio.server": {"level": "ERROR", "propagate": True},
        },
    }


def configure(settings: Settings) -> dict[str, Any]:
    """Set up logging for ``voxrelay serve``; returns the config for uvicorn's."""
    add_secrets([settings.openai_api_key, settings.azure_api_key, settings.local_llm_api_key])
    config = logging_config(settings)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    return config
