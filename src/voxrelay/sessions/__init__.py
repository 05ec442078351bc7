"""Live conversations: the session, this process's registry of them, and the
directory every transport finds or starts them through.

- ``live``: what a transport may ask of a session wherever it runs (``LiveSession``).
- ``session``: the one place that owns a live conversation (``Session``).
- ``transcripts``: its finished messages, stored in order off the audio path.
- ``registry``: the sessions this process holds (open, idle timers, end all).
- ``directory``: find or start a user's session, here or elsewhere; ownership checks.
- ``elsewhere``: the interface to sessions other processes hold.
"""

from voxrelay.sessions.directory import Directory
from voxrelay.sessions.elsewhere import ONLY_HERE, Elsewhere
from voxrelay.sessions.live import EndReason, LiveSession, Reads, StartRequest, new_item_id
from voxrelay.sessions.registry import Registry
from voxrelay.sessions.session import Session

__all__ = [
    "ONLY_HERE",
    "Directory",
    "Elsewhere",
    "EndReason",
    "LiveSession",
    "Reads",
    "Registry",
    "Session",
    "StartRequest",
    "new_item_id",
]
