"""Where the OpenAI-protocol upstreams are: OpenAI's and Azure OpenAI's realtime
endpoints and how each authenticates, from the settings."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from voxrelay.config import Settings
from voxrelay.openai_realtime.protocol import RawListener
from voxrelay.providers.base import ProviderError
from voxrelay.providers.openai import RealtimeProvider


def openai_provider(settings: Settings, *, on_raw: RawListener | None = None) -> RealtimeProvider:
    """OpenAI: ``VOXRELAY_OPENAI_URL`` with ``?model=``, bearer auth, GA events."""
    if not settings.openai_api_key:
        raise ProviderError("the openai provider needs OPENAI_API_KEY")
    url = _with_query(_ws_scheme(settings.openai_url), model=settings.openai_model)
    headers = {"Authorization": f"Bearer {settings.openai_api_key}"}
    return RealtimeProvider(url, headers, "ga", name="openai", on_raw=on_raw)


def azure_provider(settings: Settings, *, on_raw: RawListener | None = None) -> RealtimeProvider:
    """Azure OpenAI: the GA ``/openai/v1/realtime`` endpoint, or with
    ``AZURE_OPENAI_API_VERSION`` the preview ``/openai/realtime`` one and its beta events."""
    endpoint = (settings.azure_endpoint or "").strip()
    key = settings.azure_api_key or ""
    deployment = settings.azure_deployment or ""
    required = {
        "AZURE_OPENAI_ENDPOINT": endpoint,
        "AZURE_OPENAI_API_KEY": key,
        "AZURE_OPENAI_DEPLOYMENT": deployment,
    }
    missing = [env for env, value in required.items() if not value]
    if missing:
        raise ProviderError(f"the azure provider needs {', '.join(missing)}")
    base = _ws_scheme(endpoint).rstrip("/")
    headers = {"api-key": key}
    if settings.azure_api_version:
        query = urlencode({"api-version": settings.azure_api_version, "deployment": deployment})
        url = f"{base}/openai/realtime?{query}"
        return RealtimeProvider(url, headers, "beta", name="azure", on_raw=on_raw)
    url = f"{base}/openai/v1/realtime?{urlencode({'model': deployment})}"
    return RealtimeProvider(url, headers, "ga", name="azure", on_raw=on_raw)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _ws_scheme(url: str) -> str:
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url.removeprefix(http)
    return url
