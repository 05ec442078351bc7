"""A failing cluster test shows what its nodes logged: on a busy CI machine that is
the only account of which node did what."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

_TAIL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for log in _node_logs(item):
        lines = log.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
        report.sections.append((f"{log.parent.name}/{log.name}", "\n".join(lines)))


def _node_logs(item: pytest.Item) -> list[Path]:
    found: set[Path] = set()
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Path):
            found.update(value.glob("*.log"))
        for node in getattr(value, "nodes", []):
            log = getattr(node, "log", None)
            if isinstance(log, Path) and log.exists():
                found.add(log)
    return sorted(found)
