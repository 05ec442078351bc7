"""A bounded run of the soak (tests/soak.py): 100 conversations through a real
``voxrelay serve`` while SSE streams are cut and resumed, upstream connections drop
and the server is stopped with SIGTERM and started again; every stored
conversation must hold exactly its own turns, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import soak

SESSIONS = 100


def test_100_conversations_survive_cut_streams_dropped_links_and_a_restart(
    tmp_path: Path,
) -> None:
    # Six seconds of turns while the server serves (its restart comes on top: it
    # takes seconds to import on a busy machine). The reconnect window is wide for
    # the same reason: a reopened link waiting on a starved machine is not a fault.
    args = soak.parse_args(
        [
            f"--sessions={SESSIONS}",
            "--seconds=6",
            "--sse-drop-every=0.1",
            "--upstream-drop-every=0.15",
            "--reconnect-seconds=30",
            f"--workdir={tmp_path}",
        ]
    )
    summary = asyncio.run(soak.soak(args))
    assert summary["problems"] == [], summary
    for invariant in soak.INVARIANTS:
        assert summary[invariant] == 0, (invariant, summary)
    assert summary["faults"]["sigterm"] == 1
    assert summary["faults"]["sse_drop"] > 0 and summary["faults"]["upstream_drop"] > 0
    assert summary["sse_resumes"] == summary["faults"]["sse_drop"]
    assert summary["sessions_resumed"] == SESSIONS
    assert summary["turns_completed"] >= SESSIONS
    # Both ways a drop meets a turn happened: an answer cut (ends failed), and a turn
    # committed but not answered yet (sent again to the new link, and answered).
    assert summary["turns_failed"] > 0 and summary["turns_answered_after_a_drop"] > 0
    assert summary["ok"], summary
