"""The ASGI application: routes, error handling and the lifetime of the
store, the session registry and the directory transports find sessions through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.exceptions import RedisError

from voxrelay import __version__, metrics, web
from voxrelay.cluster import Cluster
from voxrelay.config import Settings
from voxrelay.errors import error_body, install_error_handlers, install_not_found
from voxrelay.middleware import BodyIdleTimeout, JsonErrorBodies
from voxrelay.openapi import NotReady, describe
from voxrelay.origins import Cors, Origins
from voxrelay.providers import provider_factory, warm_up
from voxrelay.providers.base import Provider
from voxrelay.revocation import Revocations
from voxrelay.sessions import ONLY_HERE, Directory, Elsewhere, Registry
from voxrelay.spool import spill_for
from voxrelay.store import Store
from voxrelay.store.ids import SESSION_PREFIX
from voxrelay.tools import load_tools
from voxrelay.transports import http, openai_ws, socketio
from voxrelay.workers import Worker
from voxrelay.workers.link import Peers
from voxrelay.workers.ownership import SINGLE, Ownership

log = logging.getLogger(__name__)

_SHUTDOWN_STEP_SECONDS = 5.0


async def _shutdown_step(
    name: str, step: Coroutine[Any, Any, Any], seconds: float = _SHUTDOWN_STEP_SECONDS
) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.error(
            "shutting down: %s did not finish within %g s; going on without it", name, seconds
        )
    except Exception:
        log.exception("shutting down: %s failed; going on", name)


def create_app(
    settings: Settings | None = None,
    *,
    make_provider: Callable[[], Provider] | None = None,
    worker: Worker | None = None,
) -> FastAPI:
    """The app; ``worker`` says which of several worker processes runs it."""
    settings = settings or Settings.from_env()
    factory = make_provider or provider_factory(settings)
    toolbox = load_tools(settings.tools)
    ownership = worker.ownership if worker is not None else SINGLE

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(
            settings.database_url,
            migrate=settings.migrate_on_start,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        redis = None
        if settings.redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url)
        if make_provider is None:
            warm_up(settings)
        new_session_id = lambda: ownership.new_id(SESSION_PREFIX)  # noqa: E731
        registry = Registry(store, settings, factory, new_session_id, toolbox)
        log_bounds: dict[str, Any] = {
            "log_keep_seconds": max(settings.grace_seconds, 1.0),
            "log_max_bytes": settings.replay_max_bytes,
            "log_spill": spill_for(settings.replay_memory_bytes, settings.replay_spool_dir),
        }
        peers = None
        elsewhere: Elsewhere = ONLY_HERE
        if worker is not None:
            peers = elsewhere = Peers(ownership, worker.rundir, registry, **log_bounds)
            await peers.listen()
        cluster = None
        if redis is not None:
            # Several nodes: every process is a member, its sessions held by lease.
            cluster = elsewhere = Cluster(
                redis, registry, ownership, lease_seconds=settings.lease_seconds, **log_bounds
            )
        await _end_stale_sessions(store, cluster, ownership if worker is not None else None)
        if cluster is not None:
            await cluster.join()
        revocations = Revocations(store, settings.revocation_check_seconds)
        revocations.start()
        app.state.revocations = revocations
        app.state.store, app.state.registry, app.state.redis = store, registry, redis
        app.state.directory = Directory(store, registry, elsewhere)
        app.state.peers = peers
        http.serve_uploads(app.state.directory, registry)
        try:
            yield
        finally:
            # Each step bounded: a process told to stop exits, and its log names a
            # step that hung rather than going quiet.
            await _shutdown_step("revocation checks", revocations.close())
            await _shutdown_step("ending sessions", registry.end_all("server_shutdown"), 20)
            if cluster is not None:
                await _shutdown_step("leaving the cluster", cluster.leave())
            if peers is not None:
                await _shutdown_step("the workers' link", peers.close())
            if redis is not None:
                await _shutdown_step("Redis", redis.aclose())
            await _shutdown_step("the database", store.close())

    app = FastAPI(
        title="voxrelay",
        version=__version__,
        summary="Real-time voice conversations between any device and an AI voice model.",
        lifespan=lifespan,
    )
    describe(app)
    app.state.settings = settings
    origins = Origins.parse(settings.cors_allowed_origins)
    app.state.origins = origins
    install_error_handlers(app)
    install_not_found(app)
    # Innermost first: the body deadline raises into the routes' error handlers; the
    # CORS refusal and Socket.IO's own errors are made JSON on the way out.
    app.add_middleware(BodyIdleTimeout, seconds=settings.body_idle_timeout_seconds)
    app.add_middleware(Cors, origins=origins)
    app.add_middleware(JsonErrorBodies)
    app.include_router(http.router)
    app.include_router(openai_ws.router)
    if settings.web_client:
        app.include_router(web.router)
    socketio.mount(app, settings, ownership, origins)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """200 while the process runs (no dependency is asked)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"model": NotReady, "description": "A dependency does not answer."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """200 when the database (and Redis, where configured) answer and writes land;
        else 503 with each dependency's state in `checks`."""
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(request.app.state.store.ping(), timeout=2)
            checks["database"] = "ok"
        except Exception as error:
            log.warning("readiness: database did not answer: %s", error)
            checks["database"] = "unavailable"
        if not request.app.state.registry.write_health.ok:
            checks["database"] = "writes failing"
        if not _database_file_exists(settings.database_url):
            checks["database"] = "file missing"
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

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus(request: Request) -> Response:
        """Prometheus text exposition: sessions, audio bytes, latencies, errors (of
        every worker process)."""
        peers = request.app.state.peers
        if peers is None:
            body = metrics.generate()
        else:
            body = metrics.merge([metrics.generate(), *await peers.metrics_of_others()])
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return app


async def _end_stale_sessions(
    store: Store, cluster: Cluster | None, ownership: Ownership | None
) -> None:
    """Mark the sessions an earlier run left active as ended: with several nodes, only
    those no live member holds; with several workers, only those this worker would
    own (every id has one owner, and the others may already be serving theirs)."""
    only: Callable[[str], bool] | None = ownership.owns if ownership is not None else None
    if cluster is not None:
        active = await store.active_session_ids()
        try:
            holders = await cluster.leases.holders(active)
        except RedisError as error:
            log.warning("not tidying earlier sessions: Redis does not answer: %s", error)
            return
        unheld = {sid for sid, holder in zip(active, holders, strict=True) if holder is None}
        only = unheld.__contains__
    stale = await store.end_stale_sessions("server_shutdown", only=only)
    if stale:
        log.info("marked %d sessions of an earlier run as ended", stale)


def _database_file_exists(url: str) -> bool:
    """False for a SQLite database whose file was deleted from under the server (its
    open connections would go on answering)."""
    if not url.startswith("sqlite") or ":memory:" in url:
        return True
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    return not path or Path(path).exists()
