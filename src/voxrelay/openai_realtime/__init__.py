"""The OpenAI Realtime wire protocol: what voxrelay knows of it, in one place.

Two dialects of one event protocol. ``"ga"`` is the current one (``/v1/realtime``;
``response.output_audio.delta``, ``conversation.item.added``/``.done``, a nested
``session.audio.input``/``.output`` with ``type: "realtime"``, ``output_modalities``,
assistant content ``output_text``/``output_audio``). ``"beta"`` is the older one that
clients select with ``OpenAI-Beta: realtime=v1`` and that Azure's ``api-version`` endpoint
still serves (``response.audio.delta``, ``conversation.item.created``, a flat session with
``input_audio_format``, ``voice``, ``turn_detection``, ``input_audio_transcription``,
``modalities``, content ``text``/``audio``).

- ``protocol``: names and constants (dialects, event names, audio format, id limits).
- ``fields``, ``session_shapes``, ``item_shapes``: objects as each dialect spells them.
- ``translation``: client and server events from one dialect to the other.
- ``server_owned``: what the server keeps of a pass-through client's settings.
- ``errors``: the ``error`` server event.
- ``model_events``: upstream events in the server's own vocabulary (``voxrelay.events``).

The upstream provider (``providers.openai``) and the OpenAI-compatible WebSocket
(``transports.openai_ws``) both build on it; it depends on neither.
"""
