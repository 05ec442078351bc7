"""Prometheus metrics, served as text at ``GET /metrics``.

Names, labels and meanings are listed in docs/operations.md. Children used on
the audio path are bound once here (``AUDIO_IN``, ``UPSTREAM_LATENCY``,
``DOWNSTREAM_LATENCY``), so a chunk costs a dict lookup, not a ``labels()`` call.
With several workers, the worker asked collects every worker's figures and
answers with their sum (``merge``): each worker keeps its metrics in its own
memory, the cheapest place to count an audio chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

# Transports that receive client audio, and those that write events to clients.
AUDIO_TRANSPORTS = ("upload", "socketio", "websocket")
LISTENER_TRANSPORTS = ("sse", "socketio", "websocket")

ACTIVE_SESSIONS = Gauge("voxrelay_active_sessions", "Live sessions on this node")
ACTIVE_STREAMS = Gauge(
    "voxrelay_active_streams",
    "Connected listeners and uploads in progress, by transport",
    ["transport"],
)
SESSIONS_STARTED = Counter("voxrelay_sessions_started_total", "Sessions started")
SESSIONS_ENDED = Counter("voxrelay_sessions_ended_total", "Sessions ended", ["reason"])
AUDIO_BYTES = Counter(
    "voxrelay_audio_bytes_total",
    "PCM16 audio bytes relayed: in from clients by transport; out to clients once per"
    " session, before fan-out to listeners (transport empty)",
    ["direction", "transport"],
)
TURNS = Counter("voxrelay_turns_total", "Assistant turns completed and stored")
UPSTREAM_CONNECTS = Counter(
    "voxrelay_upstream_connects_total", "Upstream links opened", ["provider"]
)
UPSTREAM_FAILURES = Counter(
    "voxrelay_upstream_failures_total",
    "Upstream links that failed to open (stage=open) or dropped during a session (stage=live)",
    ["provider", "stage"],
)
SLOW_CLIENT_DROPS = Counter(
    "voxrelay_slow_client_drops_total",
    "Connections dropped because the client stopped reading what was sent to it",
    ["transport"],
)
TOKEN_CHECKS = Counter(
    "voxrelay_token_checks_total",
    "Tokens presented, by where they were checked: known (let in lately and still"
    " valid at the last revocation check, no query) or database",
    ["source"],
)
REPLAYED_EVENTS = Counter(
    "voxrelay_replayed_events_total", "Events sent again to a reconnecting listener"
)
FIRST_AUDIO_SECONDS = Histogram(
    "voxrelay_commit_to_first_audio_seconds",
    "From the end of a user turn to the first audio of the answer",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
RELAY_LATENCY = Histogram(
    "voxrelay_relay_latency_seconds",
    "Time an audio chunk spends in the relay: upstream, from a transport receiving it"
    " to the provider sending it; downstream, from the session receiving it from the"
    " provider to a transport writing it to its client",
    ["direction", "transport"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

USAGE_TOKENS = Counter(
    "voxrelay_usage_tokens_total",
    "Tokens the upstream reported, by provider, model and kind (input_text, input_audio,"
    " input_cached: part of the two before, output_text, output_audio,"
    " transcription_input, transcription_output)",
    ["provider", "model", "kind"],
)
USAGE_AUDIO_SECONDS = Counter(
    "voxrelay_usage_audio_seconds_total",
    "Seconds of audio sent to the upstream (direction=in) and of answer audio from it (out)",
    ["provider", "model", "direction"],
)
USAGE_TRANSCRIPTION_SECONDS = Counter(
    "voxrelay_usage_transcription_seconds_total",
    "Seconds of user audio a transcription model billed by duration reported",
    ["provider", "model"],
)
USAGE_RESPONSES = Counter(
    "voxrelay_usage_responses_total", "Responses whose usage was recorded", ["provider", "model"]
)
USAGE_COST = Counter(
    "voxrelay_usage_cost_usd_total",
    "Cost of the recorded usage from the price table (VOXRELAY_PRICES), in USD",
    ["provider", "model"],
)
QUOTA_REFUSALS = Counter(
    "voxrelay_quota_exceeded_total",
    "Sessions refused at start (stage=start) or ended (stage=live) for a limit reached, by limit",
    ["limit", "stage"],
)

AUDIO_IN = {t: AUDIO_BYTES.labels(direction="in", transport=t) for t in AUDIO_TRANSPORTS}
AUDIO_OUT = AUDIO_BYTES.labels(direction="out", transport="")
UPSTREAM_LATENCY = {
    t: RELAY_LATENCY.labels(direction="upstream", transport=t) for t in AUDIO_TRANSPORTS
}
DOWNSTREAM_LATENCY = {
    t: RELAY_LATENCY.labels(direction="downstream", transport=t) for t in LISTENER_TRANSPORTS
}
for _transport in ("sse", "upload", "socketio", "websocket"):
    ACTIVE_STREAMS.labels(transport=_transport)
SLOW_CLIENT_DROPS.labels(transport="socketio")


CONTENT_TYPE = CONTENT_TYPE_LATEST


def generate() -> bytes:
    """This process's metrics, as Prometheus text."""
    return _generate_latest(REGISTRY)


# Samples that say when, or what, rather than how much: not added up across workers.
_EARLIEST = ("_created", "process_start_time_seconds")
_SAME = ("python_info",)


def merge(texts: Iterable[bytes]) -> bytes:
    """Several workers' metrics as one node's: every sample added up (counts, sums,
    gauges such as live sessions or resident memory), but the earliest of the
    start and creation times."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    merged.samples.append(sample)
                    values[key] = sample.value
                elif sample.name.endswith(_EARLIEST) or sample.name.startswith(_EARLIEST):
                    values[key] = min(values[key], sample.value)
                elif not sample.name.startswith(_SAME):
                    values[key] += sample.value
    for family in families.values():
        family.samples = [
            sample._replace(value=values[(sample.name, tuple(sorted(sample.labels.items())))])
            for sample in family.samples
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return _generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
