"""The ``voxrelay`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from voxrelay import __version__
from voxrelay.config import Settings, _env_name, parse_bool
from voxrelay.providers.base import ProviderError
from voxrelay.store import Store
from voxrelay.store.engine import CannotOpenDatabase, sqlite_threads_finished

T = TypeVar("T")

_SERVE_FLAGS = (
    "host",
    "port",
    "database_url",
    "database_pool_size",
    "database_max_overflow",
    "migrate_on_start",
    "redis_url",
    "lease_seconds",
    "provider",
    "workers",
    "grace_seconds",
    "log_level",
    "log_format",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except (ProviderError, ValueError) as error:
        print(f"voxrelay: {error}", file=sys.stderr)
        return 2
    except CannotOpenDatabase as error:
        print(f"voxrelay: {error}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxrelay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voxrelay {__version__}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the server")
    types = {f.name: f for f in fields(Settings)}
    for name in _SERVE_FLAGS:
        kind = str(types[name].type)
        flag = "--" + name.replace("_", "-")
        described = f"(env {_env_name(name)}; default {types[name].default!r})"
        if kind.startswith("bool"):
            # ``--migrate-on-start`` alone is true; ``--migrate-on-start no`` false.
            serve.add_argument(
                flag,
                type=_bool,
                nargs="?",
                const=True,
                default=None,
                metavar="yes|no",
                help=f"{described}; the flag alone: yes",
            )
            continue
        serve.add_argument(
            flag,
            type=int if kind.startswith("int") else float if kind.startswith("float") else str,
            default=None,
            help=described,
        )
    serve.set_defaults(run=_serve)

    talk = commands.add_parser(
        "talk", help="talk to a server: a WAV file, a typed turn or the microphone"
    )
    from voxrelay.talk_options import add_arguments

    add_arguments(talk)
    talk.set_defaults(run=_talk)

    token = commands.add_parser("token", help="manage device tokens")
    token.add_argument("--database-url", default=None, help="(env VOXRELAY_DATABASE_URL)")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="create a token; it is printed once, on the last line"
    )
    create.add_argument("--device", required=True, help="a name for the device")
    create.add_argument("--user", default=None, help="the user whose conversations it sees")
    create.set_defaults(run=_token_create)
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.set_defaults(run=_token_list)
    revoke = actions.add_parser("revoke", help="revoke every token of a device")
    revoke.add_argument("device")
    revoke.set_defaults(run=_token_revoke)

    db = commands.add_parser("db", help="the database schema: migrate it, show its revision")
    db.add_argument("--database-url", default=None, help=_DATABASE_URL_HELP)
    steps = db.add_subparsers(dest="action", required=True)
    upgrade = steps.add_parser(
        "upgrade", help="migrate the database to this version's schema (safe to repeat)"
    )
    current = steps.add_parser(
        "current", help="print the schema's revision; exit 1 unless it is this version's"
    )
    for step, run in ((upgrade, _db_upgrade), (current, _db_current)):
        # After the step too; SUPPRESS keeps a URL given before it.
        step.add_argument("--database-url", default=argparse.SUPPRESS, help=_DATABASE_URL_HELP)
        step.set_defaults(run=run)
    return parser


_DATABASE_URL_HELP = f"(env VOXRELAY_DATABASE_URL; default {Settings.database_url!r})"


def _bool(raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, got {raw!r}") from None


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in _SERVE_FLAGS}
    return Settings.from_env(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from voxrelay.providers import provider_factory

    settings = _settings(args)
    provider_factory(settings)  # fail now on missing credentials
    _check_database(settings)  # and on a database the server could not start with
    if settings.workers > 1:
        from voxrelay.workers import supervisor

        return supervisor.serve(settings)
    from voxrelay.server import run

    return run(settings)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for a command that opens the database."""

    async def then_settle() -> T:
        try:
            return await coroutine
        finally:
            await sqlite_threads_finished()

    return asyncio.run(then_settle())


def _check_database(settings: Settings) -> None:
    """Raise :class:`CannotOpenDatabase` when the database does not answer or its
    schema is one the server would refuse (not there, with migrate_on_start off).
    Migrating, when on, is left to the server: logged, and once per process."""
    from voxrelay.store.engine import database_revision, require_servable

    revision = _run(database_revision(settings.database_url))
    require_servable(revision, migrate=settings.migrate_on_start)


async def _with_store(args: argparse.Namespace) -> Store:
    settings = _settings(args)
    return await Store.open(
        settings.database_url,
        migrate=settings.migrate_on_start,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )


def _talk(args: argparse.Namespace) -> int:
    from voxrelay import talk
    from voxrelay.talk_options import options_from

    return talk.run(options_from(args))


def _token_create(args: argparse.Namespace) -> int:
    async def go() -> str:
        store = await _with_store(args)
        try:
            record, token = await store.create_token(args.device, args.user)
        finally:
            await store.close()
        user = record.user_id or f"device:{record.device} (or the userId a request names)"
        print(f"device: {record.device}\nuser: {user}\ntoken (shown once):")
        return token

    print(_run(go()))
    return 0


def _token_list(args: argparse.Namespace) -> int:
    async def go() -> None:
        store = await _with_store(args)
        try:
            tokens = await store.list_tokens()
        finally:
            await store.close()
        print(f"{'DEVICE':24} {'USER':24} {'CREATED':27} STATUS")
        for t in tokens:
            status = "revoked" if t.revoked_at else "active"
            print(f"{t.device:24} {t.user_id or '-':24} {t.created_at.isoformat():27} {status}")

    _run(go())
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = await _with_store(args)
        try:
            return await store.revoke_token(args.device)
        finally:
            await store.close()

    count = _run(go())
    if count == 0:
        print(f"no active token for device {args.device!r}", file=sys.stderr)
        return 1
    print(f"revoked {count} token(s) of device {args.device!r}")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from voxrelay.store.engine import head_revision, upgrade_database

    before = _run(upgrade_database(_settings(args).database_url))
    head = head_revision()
    if before == head:
        done = "already up to date"
    elif before is None:
        done = "upgraded from an empty database"
    else:
        done = f"upgraded from revision {before}"
    print(f"database at revision {head} (head), {done}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from voxrelay.store.engine import database_revision, describe_schema, head_revision

    revision = _run(database_revision(_settings(args).database_url))
    print(describe_schema(revision))
    return 0 if revision == head_revision() else 1


if __name__ == "__main__":
    raise SystemExit(main())
