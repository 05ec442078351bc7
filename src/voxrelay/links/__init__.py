"""How a process reaches the sessions another process owns, whatever carries the
frames (a Unix socket between workers, Redis between nodes).

- ``channel``: framed messages, and core errors as they travel.
- ``remote``: ``RemoteSession``, another process's session seen from here.
- ``owners``: this side's requests and followed streams, per owner.
- ``serving``: what an owner answers about its sessions.
"""
