"""Tests marked ``alone`` run while no other test does, also when the suite runs on
several pytest-xdist workers (``scripts/test``): they assert real-time behaviour
(recognition keeping up with speech, an event loop that never stalls) that a busy
test on the other core would disturb.

Every test holds a lock shared by the run's workers, a file in the run's
temporary directory: the others take it shared, an ``alone`` test exclusively.
A second file is a turnstile each taker passes first, so a waiting ``alone`` test
is not starved by the other worker taking its shared hold again and again."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MARK = "alone"


def lock_folder(config: pytest.Config) -> Path | None:
    """Where this run's workers keep their locks: the folder their own temporary
    folders are in. ``None`` in a run of one process, which needs none."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    return Path(config.option.basetemp).parent


@contextmanager
def hold(folder: Path, exclusive: bool) -> Iterator[None]:
    """Hold the run's lock (``exclusive``: alone) for the block."""
    with (folder / "turnstile").open("a") as turnstile, (folder / "tests").open("a") as tests:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(tests, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(tests, fcntl.LOCK_UN)
