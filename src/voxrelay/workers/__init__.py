"""Several worker processes behind one port (``voxrelay serve --workers N``).

Every worker accepts connections on the shared port (``SO_REUSEPORT``: the
kernel spreads them). A session lives in exactly one worker, the *owner* of
its conversation, which a hash of the conversation id names; ids a worker
makes up (new conversations, sessions, Engine.IO sockets) hash to itself.

- ``ownership``: which worker owns an id, and ids owned by this one.
- ``handoff``: a long-lived request (event stream, upload, WebSocket,
  Socket.IO connection) that reached the wrong worker is handed, socket and
  all, to the owner before any of it is parsed: no per-chunk cost afterwards.
- ``link``: what cannot move (a Socket.IO socket joining a session of another
  worker, a short request naming a conversation in its body) reaches the
  session through its owner, over a Unix socket between the two workers.
- ``supervisor``: starts the workers, restarts one that dies, stops them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voxrelay.workers.ownership import Ownership


@dataclass(frozen=True, slots=True)
class Worker:
    """This process as one of several: which one, and the directory of the Unix
    sockets the workers reach each other by."""

    ownership: Ownership
    rundir: Path
