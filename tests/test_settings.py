"""Settings from the environment and from ``voxrelay serve`` flags, and the defaults the
README gives them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voxrelay import cli
from voxrelay.config import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, Settings, parse_bool


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("YES", True),
        ("on", True),
        (" yes ", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_bool_settings_parse(raw: str, expected: bool) -> None:
    assert parse_bool(raw) is expected
    assert Settings.from_env({"VOXRELAY_MIGRATE_ON_START": raw}).migrate_on_start is expected


def test_a_bool_setting_that_is_neither_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"VOXRELAY_MIGRATE_ON_START='maybe': expected 1/true"):
        Settings.from_env({"VOXRELAY_MIGRATE_ON_START": "maybe"})


def test_database_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.migrate_on_start is True
    assert settings.database_pool_size == DEFAULT_POOL_SIZE == 10
    assert settings.database_max_overflow == DEFAULT_MAX_OVERFLOW == 10


def test_pool_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"VOXRELAY_DATABASE_POOL_SIZE": "25", "VOXRELAY_DATABASE_MAX_OVERFLOW": "0"}
    )
    assert (settings.database_pool_size, settings.database_max_overflow) == (25, 0)
    with pytest.raises(ValueError, match="VOXRELAY_DATABASE_POOL_SIZE='many'"):
        Settings.from_env({"VOXRELAY_DATABASE_POOL_SIZE": "many"})
    with pytest.raises(ValueError, match="database_pool_size must be 1 or more"):
        Settings(database_pool_size=0)
    with pytest.raises(ValueError, match="database_max_overflow must be 0 or more"):
        Settings(database_max_overflow=-1)


def test_socketio_limits_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert (defaults.socketio_max_queued_events, defaults.socketio_max_payload_bytes) == (
        1000,
        4 << 20,
    )
    settings = Settings.from_env(
        {
            "VOXRELAY_SOCKETIO_MAX_QUEUED_EVENTS": "200",
            "VOXRELAY_SOCKETIO_MAX_PAYLOAD_BYTES": "65536",
        }
    )
    assert (settings.socketio_max_queued_events, settings.socketio_max_payload_bytes) == (
        200,
        65536,
    )
    with pytest.raises(ValueError, match="socketio_max_queued_events must be 1 or more"):
        Settings(socketio_max_queued_events=0)
    with pytest.raises(ValueError, match="socketio_max_payload_bytes must be 1 or more"):
        Settings(socketio_max_payload_bytes=0)


def _serve_settings(*flags: str) -> Settings:
    return cli._settings(cli._parser().parse_args(["serve", *flags]))


def test_serve_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXRELAY_MIGRATE_ON_START", raising=False)
    monkeypatch.delenv("VOXRELAY_DATABASE_POOL_SIZE", raising=False)
    assert _serve_settings().migrate_on_start is True
    assert _serve_settings("--migrate-on-start", "no").migrate_on_start is False
    assert _serve_settings("--migrate-on-start=0").migrate_on_start is False
    monkeypatch.setenv("VOXRELAY_MIGRATE_ON_START", "false")
    assert _serve_settings().migrate_on_start is False
    assert _serve_settings("--migrate-on-start").migrate_on_start is True  # the flag wins
    sized = _serve_settings("--database-pool-size", "3", "--database-max-overflow", "1")
    assert (sized.database_pool_size, sized.database_max_overflow) == (3, 1)


def test_a_serve_flag_that_is_not_a_bool_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_args(["serve", "--migrate-on-start", "maybe"])
    assert exited.value.code == 2
    assert "expected 1/true/yes/on or 0/false/no/off, got 'maybe'" in capsys.readouterr().err


def test_connection_and_pace_limits_have_safe_defaults_and_refuse_negatives() -> None:
    settings = Settings.from_env({})
    assert settings.cors_allowed_origins == ""
    assert (settings.header_timeout_seconds, settings.body_idle_timeout_seconds) == (10, 30)
    assert settings.max_sessions_per_device == 8
    assert (settings.max_upload_realtime_factor, settings.upload_burst_seconds) == (10, 20)
    changed = Settings.from_env(
        {
            "VOXRELAY_CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example",
            "VOXRELAY_MAX_SESSIONS_PER_DEVICE": "0",
            "VOXRELAY_HEADER_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert changed.cors_allowed_origins == "https://a.example,https://b.example"
    assert (changed.max_sessions_per_device, changed.header_timeout_seconds) == (0, 2.5)
    with pytest.raises(ValueError, match="max_upload_realtime_factor must be 0 or more"):
        Settings(max_upload_realtime_factor=-1)


def test_limits_per_user_are_off_by_default_and_refuse_negatives() -> None:
    settings = Settings.from_env({})
    names = (
        "quota_tokens_per_day",
        "quota_minutes_per_day",
        "max_sessions_per_user",
        "max_conversation_seconds",
    )
    assert [getattr(settings, name) for name in names] == [0, 0, 0, 0]
    assert settings.prices is None
    changed = Settings.from_env(
        {
            "VOXRELAY_QUOTA_TOKENS_PER_DAY": "200000",
            "VOXRELAY_QUOTA_MINUTES_PER_DAY": "1.5",
            "VOXRELAY_MAX_SESSIONS_PER_USER": "3",
            "VOXRELAY_MAX_CONVERSATION_SECONDS": "600",
            "VOXRELAY_PRICES": "prices.toml",
        }
    )
    assert [getattr(changed, name) for name in names] == [200000, 1.5, 3, 600]
    assert changed.prices == "prices.toml"
    for name in names:
        with pytest.raises(ValueError, match=f"{name} must be 0 or more"):
            Settings(**{name: -1})


def test_the_readme_settings_table_gives_each_default_the_server_has() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `VOXRELAY_([A-Z0-9_]+)` \| `([^`]*)` \|", readme, re.M)
    assert len(rows) > 30, "the README's settings table was not found"
    defaults = Settings()
    for name, shown in rows:
        value = getattr(defaults, name.lower())
        if isinstance(value, bool):
            assert parse_bool(shown) is value, name
        elif isinstance(value, int | float):
            assert type(value)(shown) == value, name
        else:
            assert shown == ("" if value is None else str(value)), name
