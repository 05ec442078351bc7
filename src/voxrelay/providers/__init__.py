"""Upstream adapters, one module each, chosen by ``VOXRELAY_PROVIDER``."""

from __future__ import annotations

from collections.abc import Callable

from voxrelay.config import Settings
from voxrelay.providers.base import Provider, ProviderError


def provider_factory(settings: Settings) -> Callable[[], Provider]:
    """A maker of one provider per session, for the configured upstream.

    Missing credentials fail here, at start-up, not at the first session.
    """
    if settings.provider == "echo":
        from voxrelay.providers.echo import EchoProvider

        return EchoProvider
    if settings.provider == "local":
        from voxrelay.providers.local import LocalProvider

        return lambda: LocalProvider.from_settings(settings)
    if settings.provider == "openai":
        from voxrelay.providers.endpoints import openai_provider

        if not settings.openai_api_key:
            raise ProviderError("the openai provider needs OPENAI_API_KEY")
        return lambda: openai_provider(settings)
    if settings.provider == "azure":
        from voxrelay.providers.endpoints import azure_provider

        missing = [
            name
            for name, value in (
                ("AZURE_OPENAI_ENDPOINT", settings.azure_endpoint),
                ("AZURE_OPENAI_API_KEY", settings.azure_api_key),
                ("AZURE_OPENAI_DEPLOYMENT", settings.azure_deployment),
            )
            if not value
        ]
        if missing:
            raise ProviderError(f"the azure provider needs {', '.join(missing)}")
        return lambda: azure_provider(settings)
    raise ProviderError(f"unknown provider {settings.provider!r}")


def warm_up(settings: Settings) -> None:
    """Load what the configured provider would otherwise load at its first turn,
    in the background, so start-up does not wait for it."""
    if settings.provider == "local":
        import threading

        from voxrelay.providers._recognition import decoder_pool

        threading.Thread(target=decoder_pool().prewarm, name="asr-prewarm", daemon=True).start()


def model_name(settings: Settings) -> str:
    """The model a session's usage is recorded (and priced) under."""
    if settings.provider == "openai":
        return settings.openai_model
    if settings.provider == "azure":
        return settings.azure_deployment or "azure"
    if settings.provider == "local" and settings.local_llm_model:
        return settings.local_llm_model
    return settings.provider
