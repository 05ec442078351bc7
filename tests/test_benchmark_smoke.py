"""The relay benchmark still runs end to end (tiny sizes: a smoke test, not a measurement).

Half a second of streaming is enough for every figure: 25 chunks per session, 15
of them past the warm-up, and a steady window of 0.3 s for the CPU figures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "relay.py"),
            "--sessions",
            "2",
            "--seconds",
            "0.5",
            "--idle",
            "3",
            "--commit-sessions",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "relay.json").read_text())
    rows = {r["transport"]: r for r in report["results"]}
    with_floor = shutil.which("node") is not None and shutil.which("npm") is not None
    assert set(rows) == {"http", "socketio", "ws"} | ({"node-floor"} if with_floor else set())
    for row in report["results"]:
        assert row["delivered"] == 1.0, row
        assert row["errors"] == 0
        # Growth from an unmeasured run of one session (half of N) to N streaming.
        assert isinstance(row["streaming_memory_bytes_per_session"], int), row
        for direction in ("upstream", "downstream"):
            assert row[direction]["relay"]["count"] > 0
            assert row[direction]["direct"]["count"] > 0
            assert row[direction]["added"]["p50"] == round(
                row[direction]["relay"]["p50"] - row[direction]["direct"]["p50"], 2
            )
        assert row["cpu_seconds_per_session_minute"] > 0
    if with_floor:
        _check_the_node_floor(report, rows, result.stdout)
    else:
        assert report["node_floor"] == {"measured": False}
        assert "node floor skipped: node" in result.stdout
        assert all(row["vs_node_floor"] is None for row in rows.values())
    for figures in report["commit_to_first_audio_ms"].values():
        # Two clients, each taking every turn; the first turns are reported apart too.
        turns = figures["turns"]
        assert turns > 1
        assert figures["relay"]["count"] == figures["direct"]["count"] == 2 * turns
        assert math.isfinite(figures["first_turn_added"]["p50"])
    assert report["idle_memory"]["sessions"] == 3
    assert "largest N" in result.stdout


def test_benchmark_two_nodes_reports_the_cross_node_hop(tmp_path: Path) -> None:
    from services import require_or_skip

    require_or_skip("redis", "Redis does not answer on 127.0.0.1:6379")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "relay.py"),
            "--nodes",
            "2",
            "--transports",
            "http",
            "--sessions",
            "2",
            "--seconds",
            "0.5",
            "--idle",
            "0",
            "--commit-sessions",
            "2",
            "--no-node-floor",
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
    rows = {r["transport"]: r for r in report["results"]}
    assert set(rows) == {"http", "http-cross"}
    for row in rows.values():
        assert row["delivered"] == 1.0, row
        assert row["errors"] == 0
    assert rows["http-cross"]["held_by"] == {"A": 2}, "node A holds every crossing session"
    # The one-node path: each session wholly on one node, the same two nodes in turn.
    assert rows["http"]["held_by"] == {"A": 1, "B": 1}
    assert rows["http"]["nodes"] == 1 and rows["http-cross"]["nodes"] == 2
    (hop,) = report["cross_node_hop_ms"]
    assert hop["crosses"] == ["upstream", "downstream"]
    for direction in ("upstream", "downstream"):
        one, two = rows["http"][direction]["relay"], rows["http-cross"][direction]["relay"]
        assert hop[direction]["p50"] == round(two["p50"] - one["p50"], 2)
    assert set(report["commit_to_first_audio_ms"]) == {"http", "http-cross"}
    assert "cross-node hop" in result.stdout


def test_socketio_layer_benchmark_runs_and_reports_both_transports(tmp_path: Path) -> None:
    out = tmp_path / "layer.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "socketio_layer.py"),
            *("--connections", "2", "--chunks", "20", "--rounds", "2", "--warmup", "5"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = report["us_per_chunk"]
    assert set(figures) == {"engineio", "fast", "bare"}
    for variant in figures.values():
        assert len(variant["rounds"]) == 2 and variant["median"] > 0
    # The report rounds the medians it shows, and the ratio comes from the unrounded
    # ones: the ratio of the shown medians may differ in its last digit.
    assert report["ratio_engineio_to_fast"] == pytest.approx(
        figures["engineio"]["median"] / figures["fast"]["median"], abs=0.011
    )


def _check_the_node_floor(
    report: dict[str, Any], rows: dict[str, dict[str, Any]], stdout: str
) -> None:
    assert "node floor skipped" not in stdout, stdout
    assert report["node_floor"]["measured"] is True
    floor = rows["node-floor"]
    # The floor relays the ws client's frames to the upstream and back, all of them.
    assert floor["delivered"] == 1.0, floor
    # Its CPU is the node process's own: measured, not borrowed from voxrelay's.
    floor_us = floor["steady_cpu"]["server_us_per_chunk"]
    assert floor_us > 0
    assert floor_us != rows["ws"]["steady_cpu"]["server_us_per_chunk"]
    for row in rows.values():
        us = row["steady_cpu"]["server_us_per_chunk"]
        assert row["vs_node_floor"] == round(us / floor_us, 2)
    commits = report["commit_to_first_audio_ms"]["node-floor"]
    assert commits["relay"]["count"] == 2 * commits["turns"]
    assert "vs floor" in stdout


def test_websocket_compression_benchmark_reports_its_cost_and_saving() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "websocket_compression.py"),
            "--seconds",
            "2",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "100 chunk round trips" in result.stdout
    line = result.stdout.splitlines()[-1]
    plain, deflate = (float(part.split(" µs")[0].split()[-1]) for part in line.split(",")[:2])
    ratio = float(line.split("bytes on the wire ")[1].split()[0])
    # Compressing costs more than framing alone, and real speech does shrink.
    assert deflate > plain > 0 and 0 < ratio < 1, line


def _benchmark(name: str, *args: str, out: Path) -> tuple[str, Any]:
    """What the benchmark printed, and the figures it wrote to ``out``."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_resampler_benchmark_compares_bounded_pieces_with_whole_chunks(tmp_path: Path) -> None:
    stdout, rows = _benchmark("resampler.py", "--streams", "30", out=tmp_path / "resampler.json")
    assert {(r["in_rate"], r["out_rate"], r["chunk_ms"]) for r in rows} == {
        (a, b, ms) for a, b in ((16000, 24000), (24000, 16000)) for ms in (20, 200, 1000)
    }
    for row in rows:
        for way in ("StreamResampler", "soxr whole"):
            # 30 streams may fit in memory freed before them: a number, not a figure.
            assert row[way]["us_per_audio_second"] > 0, row
            assert isinstance(row[way]["kib_per_stream"], float), row
    assert "memory ratio" in stdout


def test_local_turn_benchmark_reports_cold_and_warm_turns(tmp_path: Path) -> None:
    stdout, report = _benchmark(
        "local_turn.py", "--processes", "1", "--turns", "2", out=tmp_path / "turn.json"
    )
    assert report["heard"] == ["go forward ten meters"]
    for figure in ("to_transcript_ms", "to_first_audio_ms"):
        assert report[figure]["cold"]["median"] > 0 and report[figure]["warm"]["median"] > 0
        assert report[figure]["cold_over_warm"] > 0
    [process] = report["processes"]
    assert len(process["turns"]) == 2 and process["model_loaded_after_open_ms"] > 0
    assert "cold/warm" in stdout
