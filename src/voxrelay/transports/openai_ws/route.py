"""The route: which dialect the client speaks, its token, accepting or refusing the
connection, and the mode that speaks for it."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from voxrelay import logs, metrics
from voxrelay.auth import Device, authenticate, bearer_token
from voxrelay.config import Settings
from voxrelay.errors import error_response
from voxrelay.exceptions import Unauthorized, VoxrelayError
from voxrelay.openai_realtime.protocol import Dialect
from voxrelay.origins import Origins
from voxrelay.providers.base import SessionOptions
from voxrelay.revocation import Revocations
from voxrelay.sessions import Directory, LiveSession
from voxrelay.store import Store
from voxrelay.transports.openai_ws.close_codes import CLOSE_UNAUTHORIZED
from voxrelay.transports.openai_ws.connection import Connection
from voxrelay.transports.openai_ws.mode_interface import Mode
from voxrelay.transports.openai_ws.passthrough import PassThrough
from voxrelay.transports.openai_ws.speaker import Speaker

# One logger for the whole endpoint, whichever module logs.
log = logging.getLogger(__package__)
router = APIRouter()

_KEY_PROTOCOL = "openai-insecure-api-key."
_BETA_PROTOCOL = "openai-beta.realtime-v1"


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    offered = [str(p) for p in websocket.scope.get("subprotocols") or []]
    beta_header = websocket.headers.get("openai-beta", "").replace(" ", "")
    dialect: Dialect = (
        "beta" if "realtime=v1" in beta_header.split(",") or _BETA_PROTOCOL in offered else "ga"
    )
    app = websocket.app
    origins: Origins = app.state.origins
    origin = websocket.headers.get("origin")
    if not origins.allows(origin, websocket.headers.get("host")):
        # Before anything else: a page that may not use the server learns nothing.
        log.warning("refused a WebSocket from origin %s", origin, extra={"transport": "websocket"})
        message = "this origin may not open a connection (see VOXRELAY_CORS_ALLOWED_ORIGINS)"
        await websocket.send_denial_response(error_response(403, "origin_not_allowed", message))
        return
    store: Store = app.state.store
    directory: Directory = app.state.directory
    settings: Settings = app.state.settings
    device: Device | None = None
    refusal = ""
    try:
        device = await authenticate(store, _token(websocket, offered), app.state.revocations.known)
    except Unauthorized as error:
        refusal = error.message
        client = websocket.client.host if websocket.client else None
        log.warning(
            "authentication refused: %s",
            refusal,
            extra={"transport": "websocket", "client": client},
        )
    # Browsers fail a connection whose server picks none of the offered subprotocols.
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    connection = Connection(websocket, dialect)
    if device is None:
        # Accepted, then closed with 4401 after an error event: browsers see close codes
        # but never the HTTP status of a refused upgrade.
        await connection.refuse(CLOSE_UNAUTHORIZED, "invalid_api_key", refusal)
        return
    logs.bind(transport="websocket", device=device.name)
    params = websocket.query_params
    try:
        user_id = device.acting_user(params.get("userId"))
    except VoxrelayError as error:
        await connection.refuse_for(error)
        return
    # ``?model=`` is accepted for compatibility and ignored: the server's provider
    # configuration decides the model.
    opening = await connection.open(
        directory, user_id, params.get("conversationId"), SessionOptions(), device.token_id
    )
    if opening is None:
        return
    session, fresh = opening
    revocations: Revocations = app.state.revocations
    with (
        revocations.watch(device, connection.revoked),
        metrics.ACTIVE_STREAMS.labels(transport="websocket").track_inprogress(),
    ):
        try:
            await connection.run(session, fresh, _mode(connection, session, fresh, settings))
        except Exception:
            log.exception("OpenAI-compatible WebSocket of %s failed", session.id)
            await connection.close_now(1011, "internal error")


@router.get("/v1/realtime", include_in_schema=False)
async def not_upgraded() -> JSONResponse:
    response = error_response(
        426, "upgrade_required", "/v1/realtime is a WebSocket endpoint: upgrade the connection"
    )
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    return response


def _token(websocket: WebSocket, offered: list[str]) -> str | None:
    token = bearer_token(websocket)
    if token:
        return token
    for protocol in offered:
        if protocol.startswith(_KEY_PROTOCOL) and len(protocol) > len(_KEY_PROTOCOL):
            return protocol.removeprefix(_KEY_PROTOCOL)
    return websocket.query_params.get("access_token") or None


def _mode(connection: Connection, session: LiveSession, fresh: bool, settings: Settings) -> Mode:
    """Pass-through when the session's provider offers it, else the server speaks."""
    if session.raw is not None:
        return PassThrough(connection)
    # A session this connection started runs with the options it was opened with.
    return Speaker(connection, settings, SessionOptions() if fresh else None)
