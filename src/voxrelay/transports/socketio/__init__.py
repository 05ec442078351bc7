"""Socket.IO (protocol v5, namespace ``/realtime``) for the Flutter apps.

- ``namespace``: client events to session requests, the session's log to events.
- ``server``: python-socketio set up and mounted on the app.
"""

from voxrelay.transports.socketio.server import close_all, mount

__all__ = ["close_all", "mount"]
