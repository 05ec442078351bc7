"""Who holds what, in Redis: each member (one server process of one node) keeps a
key with a lease while it runs, and one key per conversation and per session it
holds, with the same lease. A member that dies stops renewing, and within the
lease time its keys are gone and another member may take its conversations."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

_PREFIX = "voxrelay:"

# Renew the keys this member (ARGV[1]) holds for ARGV[2] ms; put back those Redis
# lost (restarted empty, or paused past the lease); return those another member took.
_RENEW = """
local taken = {}
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(taken, key)
  end
end
return taken
"""
# Give a key back, if this member (ARGV[1]) still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Take a key from a holder (ARGV[1]) that has gone, for this member (ARGV[2]).
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def member_key(member: str) -> str:
    return f"{_PREFIX}member:{member}"


def holder_key(key: str) -> str:
    return f"{_PREFIX}holder:{key}"


class Leases:
    def __init__(self, redis: Redis, member: str, lease_seconds: float) -> None:
        self._redis = redis
        self.member = member
        self._lease_ms = max(int(lease_seconds * 1000), 100)
        self.held: set[str] = set()
        self._renew: Any = redis.register_script(_RENEW)
        self._release: Any = redis.register_script(_RELEASE)
        self._take_over: Any = redis.register_script(_TAKE_OVER)

    async def renew(self) -> list[str]:
        """Keep this member and everything it holds alive for another lease; returns
        the keys another member holds now (this one's hold on them lapsed)."""
        await self._redis.set(member_key(self.member), "1", px=self._lease_ms)
        if not self.held:
            return []
        held = sorted(self.held)
        names = [holder_key(key) for key in held]
        taken = {
            _text(name)
            for name in await self._renew(keys=names, args=[self.member, self._lease_ms])
        }
        lost = [key for key, name in zip(held, names, strict=True) if name in taken]
        self.held.difference_update(lost)
        return lost

    async def leave(self) -> None:
        for key in list(self.held):
            await self.release(key)
        await self._redis.delete(member_key(self.member))

    async def holder(self, key: str) -> str | None:
        """The live member holding ``key``, or None (nobody, or a member that died)."""
        value = await self._redis.get(holder_key(key))
        if value is None:
            return None
        holder = _text(value)
        if holder != self.member and not await self.alive(holder):
            return None
        return holder

    async def claim(self, key: str) -> str:
        """Hold ``key`` if nobody (alive) does; returns who holds it now."""
        name = holder_key(key)
        if await self._redis.set(name, self.member, nx=True, px=self._lease_ms):
            self.held.add(key)
            return self.member
        value = await self._redis.get(name)
        if value is None:  # expired meanwhile: try once more
            return await self.claim(key)
        holder = _text(value)
        if holder == self.member:
            self.held.add(key)
        elif not await self.alive(holder) and await self._take_over(
            keys=[name], args=[holder, self.member, self._lease_ms]
        ):
            self.held.add(key)
            return self.member
        return holder

    async def hold(self, key: str) -> None:
        """Hold ``key`` (a new session's id, made up here)."""
        await self._redis.set(holder_key(key), self.member, px=self._lease_ms)
        self.held.add(key)

    async def release(self, key: str) -> None:
        self.held.discard(key)
        await self._release(keys=[holder_key(key)], args=[self.member])

    async def alive(self, member: str) -> bool:
        return bool(await self._redis.exists(member_key(member)))

    async def holders(self, keys: list[str]) -> list[str | None]:
        """The live member holding each key, or None."""
        if not keys:
            return []
        values = await self._redis.mget([holder_key(key) for key in keys])
        named = [_text(value) if value is not None else None for value in values]
        members = sorted({member for member in named if member is not None})
        alive = (
            await self._redis.mget([member_key(member) for member in members]) if members else []
        )
        live = {member for member, mark in zip(members, alive, strict=True) if mark is not None}
        return [member if member in live else None for member in named]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
