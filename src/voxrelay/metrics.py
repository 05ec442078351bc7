"""Prometheus metrics, served as text at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

ACTIVE_SESSIONS = Gauge("voxrelay_active_sessions", "Live sessions on this node")
ACTIVE_STREAMS = Gauge("voxrelay_active_streams", "Connected listeners by transport", ["transport"])
SESSIONS_STARTED = Counter("voxrelay_sessions_started_total", "Sessions started")
SESSIONS_ENDED = Counter("voxrelay_sessions_ended_total", "Sessions ended", ["reason"])
AUDIO_BYTES = Counter("voxrelay_audio_bytes_total", "PCM16 audio bytes relayed", ["direction"])
TURNS = Counter("voxrelay_turns_total", "Assistant turns completed and stored")
UPSTREAM_CONNECTS = Counter("voxrelay_upstream_connects_total", "Upstream links opened")
UPSTREAM_FAILURES = Counter(
    "voxrelay_upstream_failures_total", "Upstream links that failed to open or dropped"
)
REPLAYED_EVENTS = Counter(
    "voxrelay_replayed_events_total", "Events sent again to a reconnecting listener"
)
FIRST_AUDIO_SECONDS = Histogram(
    "voxrelay_commit_to_first_audio_seconds",
    "From the end of a user turn to the first audio of the answer",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
