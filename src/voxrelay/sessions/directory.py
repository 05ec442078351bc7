"""Where every transport finds or starts a user's session, wherever it lives.

The one place that decides whether a conversation is the user's (another user's
conversation looks exactly like one that does not exist), creates a conversation
a client names for the first time, and starts, joins or finds its session in this
process or, through ``Elsewhere``, in the one that owns it.
"""

from __future__ import annotations

import re
from typing import Any

from voxrelay import logs
from voxrelay.exceptions import InvalidRequest, NoActiveSession, NotFound
from voxrelay.providers.base import SessionOptions
from voxrelay.sessions.elsewhere import ONLY_HERE, Elsewhere
from voxrelay.sessions.live import EndReason, LiveSession, StartRequest
from voxrelay.sessions.registry import OwnerCall, Registry
from voxrelay.store import Conversation, ConversationExists, Store
from voxrelay.store.ids import CONVERSATION_PREFIX, storable
from voxrelay.tools import client_tools

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Directory:
    def __init__(self, store: Store, registry: Registry, elsewhere: Elsewhere = ONLY_HERE):
        self._store = store
        self._registry = registry
        self._elsewhere = elsewhere

    # -- conversations ---

    async def conversation(self, conversation_id: str, user_id: str) -> Conversation:
        """The user's conversation, or ``NotFound``."""
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None or conversation.user_id != user_id:
            raise NotFound("conversation")
        return conversation

    # -- sessions ---

    async def start(
        self,
        user_id: str,
        conversation_id: str | None,
        *,
        input_rate: int,
        output_rate: int,
        options: SessionOptions,
        join_active: bool = False,
        device: str = "",
    ) -> tuple[LiveSession, bool]:
        """Start (or with ``join_active`` join) the session of the user's conversation,
        creating the conversation when it does not exist yet (a new id when none is
        given); returns the session and whether it is new. A new session counts
        against the limit of ``device`` (its token's id)."""
        for name in ("instructions", "voice", "language"):
            value = getattr(options, name)
            if value is not None and not storable(value):
                # The session's record keeps its options: it could not be stored.
                raise InvalidRequest(f"{name} must not hold a NUL character")
        # Before anything is created: a client tool may not take a server tool's name.
        client_tools(list(options.tools), self._registry.toolbox.names)
        if conversation_id is None:
            conversation_id = self._elsewhere.new_id(CONVERSATION_PREFIX)
            await self._store.create_conversation(user_id, conversation_id)
        else:
            if not _ID.match(conversation_id):
                raise InvalidRequest("conversationId must be 1-64 letters, digits or _.:-")
            existing = await self._store.get_conversation(conversation_id)
            if existing is None:
                try:
                    await self._store.create_conversation(user_id, conversation_id)
                except ConversationExists:  # created meanwhile, perhaps by someone else
                    await self.conversation(conversation_id, user_id)
            elif existing.user_id != user_id:
                raise NotFound("conversation")
        request = StartRequest(
            user_id, conversation_id, input_rate, output_rate, options, join_active, device
        )
        session: LiveSession
        if await self._elsewhere.here(conversation_id, claim=True):
            try:
                session, new = await self._registry.start(request)
            except BaseException:
                if self._registry.for_conversation(conversation_id) is None:
                    await self._elsewhere.release(conversation_id)
                raise
        else:
            session, new = await self._elsewhere.start(request)
        logs.bind(conversation_id=session.conversation_id, session_id=session.id)
        return session, new

    async def session(self, session_id: str, user_id: str) -> LiveSession | None:
        """The user's active session with this id, or None (an ended one, or another
        user's, is no different from one that never was)."""
        if await self._elsewhere.here(session_id):
            found: LiveSession | None = self._registry.get(session_id)
        else:
            found = await self._elsewhere.find(session_id=session_id)
        if found is None or found.user_id != user_id or not found.active:
            return None
        return found

    async def live(self, conversation_id: str | None, user_id: str) -> LiveSession:
        """The active session of the user's conversation: ``NotFound`` when the
        conversation is not the user's, ``NoActiveSession`` when nothing is live."""
        if not conversation_id:
            raise InvalidRequest("conversationId is required")
        session = await self._live(conversation_id)
        if session is not None and session.user_id == user_id and session.active:
            logs.bind(conversation_id=session.conversation_id, session_id=session.id)
            return session
        await self.conversation(conversation_id, user_id)
        raise NoActiveSession()

    async def end(self, conversation_id: str, user_id: str, reason: EndReason) -> None:
        """End the live session of the user's conversation, if it has one."""
        session = await self._live(conversation_id)
        if session is not None and session.user_id == user_id:
            await session.end(reason)
        else:
            await self.conversation(conversation_id, user_id)

    async def _live(self, conversation_id: str) -> LiveSession | None:
        if await self._elsewhere.here(conversation_id):
            return self._registry.for_conversation(conversation_id)
        return await self._elsewhere.find(conversation_id=conversation_id)

    # -- state a transport keeps with the process that owns the session ---

    def serve(self, name: str, call: OwnerCall) -> None:
        """Answer ``at_owner(key, name, ...)`` for the sessions this process owns."""
        self._registry.calls[name] = call

    async def at_owner(self, key: str, name: str, args: dict[str, Any]) -> Any:
        """Run the call ``name`` in the process that owns ``key`` (a conversation id)."""
        if await self._elsewhere.here(key):
            return await self._registry.calls[name](args)
        return await self._elsewhere.call(key, name, args)
