"""Which worker owns an id: the same answer in every worker, with no shared state."""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ownership:
    """Worker ``index`` of ``count``. With one worker it owns everything."""

    index: int = 0
    count: int = 1

    def owner(self, key: str) -> int:
        if self.count == 1:
            return 0
        return zlib.crc32(key.encode()) % self.count

    def owns(self, key: str) -> bool:
        return self.count == 1 or self.owner(key) == self.index

    def new_id(self, prefix: str) -> str:
        """``prefix`` + 24 random hex characters, owned by this worker."""
        while True:
            candidate = prefix + secrets.token_hex(12)
            if self.owns(candidate):
                return candidate


SINGLE = Ownership()
