"""The OpenAI-Realtime-compatible WebSocket: ``GET /v1/realtime``.

An unmodified OpenAI SDK pointed at this server, with a device token as its API key,
holds a conversation. Clients speak either dialect of the protocol (GA, or beta with
``OpenAI-Beta: realtime=v1``); ``voxrelay.openai_realtime`` translates between theirs and
the upstream's. Two modes, chosen by the session's provider:

- **Pass-through** (``openai``, ``azure``: the provider has a raw pass-through). Client
  events go upstream as they are, bar the settings the server owns (audio formats,
  input transcription, model); the upstream's events come back as they are. The session
  still owns the conversation: it stores transcripts and feeds every other listener.
- **Server speaks the protocol** (``echo``, ``local``). The transport maps client events
  onto session commands and projects the session's event log into OpenAI server events.

Either way the connection is one more listener of its session; see docs/behaviour.md
for what closing it does.

``route`` accepts the connection and picks the mode; ``connection`` holds the socket's
outbox and follows the session's log; ``passthrough`` and ``speaker`` are the two modes,
behind ``mode_interface``; ``openai_objects`` builds the objects the server speaks in;
``close_codes`` says how a connection ends.
"""

from voxrelay.transports.openai_ws.route import router

__all__ = ["router"]
