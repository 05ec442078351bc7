"""The relay benchmark still runs end to end (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "relay.py"),
            "--sessions",
            "2",
            "--seconds",
            "1.5",
            "--idle",
            "3",
            "--commit-sessions",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "relay.json").read_text())
    assert {r["transport"] for r in report["results"]} == {"http", "socketio", "ws"}
    for row in report["results"]:
        assert row["delivered"] == 1.0, row
        assert row["errors"] == 0
        for direction in ("upstream", "downstream"):
            assert row[direction]["relay"]["count"] > 0
            assert row[direction]["direct"]["count"] > 0
            assert row[direction]["added"]["p50"] == round(
                row[direction]["relay"]["p50"] - row[direction]["direct"]["p50"], 2
            )
        assert row["cpu_seconds_per_session_minute"] > 0
    for figures in report["commit_to_first_audio_ms"].values():
        assert figures["relay"]["count"] == figures["direct"]["count"] == 2
    assert report["idle_memory"]["sessions"] == 3
    assert "largest N" in result.stdout
