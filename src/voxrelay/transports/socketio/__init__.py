"""Socket.IO (protocol v5, namespace ``/realtime``) for the Flutter apps.

- ``namespace``: client events to session requests, the session's log to events.
- ``server``: python-socketio set up and mounted on the app.
- ``outbox``: a bound on the packets waiting for one socket (slow clients dropped).
- ``inbound``, ``framing``: client packets and frames checked before python-socketio
  and python-engineio parse them (garbled, incomplete, too large).
- ``fast_websocket``: Engine.IO's websocket transport without a task per frame
  (for the python-engineio versions it was checked against).
- ``packets``: Socket.IO packets written by hand.
"""

from voxrelay.transports.socketio.server import close_all, mount

__all__ = ["close_all", "mount"]
