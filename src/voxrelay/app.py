"""The ASGI application: routes, error handling and the lifetime of the
store and the session hub."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from voxrelay import __version__, metrics
from voxrelay.config import Settings
from voxrelay.errors import error_body, install_error_handlers
from voxrelay.hub import SessionHub
from voxrelay.providers import provider_factory, warm_up
from voxrelay.providers.base import Provider
from voxrelay.store import Store
from voxrelay.transports import http, openai_ws, socketio

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    make_provider: Callable[[], Provider] | None = None,
) -> FastAPI:
    settings = settings or Settings.from_env()
    factory = make_provider or provider_factory(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(settings.database_url)
        stale = await store.end_stale_sessions("server_shutdown")
        if stale:
            log.info("marked %d sessions of an earlier run as ended", stale)
        redis = None
        if settings.redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url)
        if make_provider is None:
            warm_up(settings)
        hub = SessionHub(store, settings, factory)
        app.state.store, app.state.hub, app.state.redis = store, hub, redis
        try:
            yield
        finally:
            await hub.end_all("server_shutdown")
            if redis is not None:
                await redis.aclose()
            await store.close()

    app = FastAPI(
        title="voxrelay",
        version=__version__,
        summary="Real-time voice conversations between any device and an AI voice model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(http.router)
    app.include_router(openai_ws.router)
    socketio.mount(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(request.app.state.store.ping(), timeout=2)
            checks["database"] = "ok"
        except Exception as error:
            log.warning("readiness: database did not answer: %s", error)
            checks["database"] = "unavailable"
        if request.app.state.redis is not None:
            try:
                await asyncio.wait_for(request.app.state.redis.ping(), timeout=2)
                checks["redis"] = "ok"
            except Exception as error:
                log.warning("readiness: redis did not answer: %s", error)
                checks["redis"] = "unavailable"
        if all(value == "ok" for value in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        body = error_body("not_ready", "a dependency is not answering")
        return JSONResponse({**body, "checks": checks}, status_code=503)

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app
