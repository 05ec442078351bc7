"""How many live sessions each device holds in this process, and refusing one more.

A device is its token. Only sessions this process holds are counted: with
several workers or nodes, each process applies the limit to its own share (a
device's conversations may be spread over all of them).
"""

from __future__ import annotations

from collections import Counter

from voxrelay.exceptions import TooManySessions


class DeviceSessions:
    def __init__(self, limit: int) -> None:
        """``limit`` 0 counts nothing and refuses nothing."""
        self._limit = limit
        self._held: Counter[str] = Counter()

    def take(self, device: str) -> None:
        """Count one more session (or one opening) of ``device``, or refuse it with
        ``TooManySessions``. An unnamed device ("") is never limited."""
        if self._limit <= 0 or not device:
            return
        if self._held[device] >= self._limit:
            raise TooManySessions(
                f"this device already has {self._limit} live sessions; end one first"
            )
        self._held[device] += 1

    def give_back(self, device: str) -> None:
        if self._held[device] > 1:
            self._held[device] -= 1
        else:
            self._held.pop(device, None)

    def held(self, device: str) -> int:
        return self._held[device]
