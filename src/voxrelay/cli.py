"""The ``voxrelay`` command."""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from voxrelay import __version__
from voxrelay.config import PROVIDERS, Settings, _env_name, parse_bool
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
    "tools",
)
# What each flag does, for ``voxrelay serve --help`` (its default and variable follow).
_SERVE_HELP = {
    "host": "the address to listen on; 0.0.0.0 for every interface",
    "port": "the port to listen on",
    "database_url": "where conversations are kept: a SQLite file, or postgresql://user@host/db",
    "database_pool_size": "PostgreSQL connections each process keeps open",
    "database_max_overflow": "PostgreSQL connections a process may open beyond the pool at a peak",
    "migrate_on_start": "bring the database schema up to date at start; no: leave that to"
    " voxrelay db upgrade",
    "redis_url": "the Redis that several nodes share; unset: this node serves alone",
    "lease_seconds": "with Redis: how long a node's hold on its sessions outlives its last renewal",
    "provider": f"the voice model: {', '.join(PROVIDERS)}; see below",
    "workers": "worker processes sharing the port; one per core serves the most sessions",
    "grace_seconds": "how long a session with no listener waits for its client to come back",
    "log_level": "debug, info, warning or error",
    "log_format": "json (one object per line, secrets redacted) or text",
    "tools": "the server's tools every session may call: a TOML (or .json) file",
}
_SERVE_METAVARS = {
    "database_url": "URL",
    "database_pool_size": "N",
    "database_max_overflow": "N",
    "redis_url": "URL",
    "lease_seconds": "SECONDS",
    "provider": "NAME",
    "workers": "N",
    "grace_seconds": "SECONDS",
    "log_level": "LEVEL",
    "log_format": "FORMAT",
    "tools": "FILE",
}
_PROVIDER_HELP = {
    "local": "offline speech recognition and espeak-ng voices; no key, no network",
    "echo": "plays each turn back; for tests and benchmarks",
    "openai": "OpenAI's Realtime API; needs OPENAI_API_KEY",
    "azure": "Azure OpenAI's Realtime API; needs AZURE_OPENAI_ENDPOINT,\n"
    "          AZURE_OPENAI_API_KEY and AZURE_OPENAI_DEPLOYMENT",
}
_ABOUT = """\
voxrelay relays real-time voice conversations between devices and an AI voice
model, over Server-Sent Events and HTTP uploads, Socket.IO, or an
OpenAI-Realtime-compatible WebSocket.

Start the server with 'voxrelay serve', then, in another terminal in the same
directory, talk to it with 'voxrelay talk --text hello'."""


class CannotListen(Exception):
    """The server cannot have the address and port it was given."""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each option's default shown, as ArgumentDefaultsHelpFormatter does, but not for
    on/off flags, nor twice; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS)
        if "default" in text or action.default in quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


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
    except (CannotOpenDatabase, CannotListen) as error:
        print(f"voxrelay: {error}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxrelay",
        description=_ABOUT,
        epilog="Run 'voxrelay COMMAND --help' for what a command takes.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--version", action="version", version=f"voxrelay {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server until Ctrl+C or SIGTERM, which end every session cleanly.\n"
        "Each option is also an environment variable, named with it.",
        epilog=_providers_help(),
        formatter_class=_Help,
    )
    types = {f.name: f for f in fields(Settings)}
    for name in _SERVE_FLAGS:
        kind = str(types[name].type)
        flag = "--" + name.replace("_", "-")
        described = (
            f"{_SERVE_HELP.get(name, name.replace('_', ' '))}"
            f" (default: {_shown(types[name].default)}; env {_env_name(name)})"
        )
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
            metavar=_SERVE_METAVARS.get(name),
            help=described,
        )
    serve.set_defaults(run=_serve)

    talk = commands.add_parser(
        "talk",
        help="talk to a server: a WAV file, a typed turn or the microphone",
        description="Hold a conversation with a running server: say a WAV file, type a turn\n"
        "or use the microphone. The transcripts are printed as they come, and the\n"
        "spoken answer is saved as a WAV file.",
        epilog=_TALK_EXAMPLES,
        formatter_class=_Help,
    )
    from voxrelay.talk_options import add_arguments

    add_arguments(talk)
    talk.set_defaults(run=_talk)

    token = commands.add_parser(
        "token",
        help="manage tokens: a device's (sees its own user only) or a service's",
        description=_TOKEN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--database-url", default=None, help="(env VOXRELAY_DATABASE_URL)")
    actions = token.add_subparsers(dest="action", required=True)
    from voxrelay import token_cli

    token_cli.add_actions(actions)
    token.set_defaults(run=_token)

    db = commands.add_parser(
        "db", help="the database schema: migrate it, show its revision", formatter_class=_Help
    )
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


_TOKEN_HELP = """\
A device token (--device NAME) sees the conversations of its one user: the one
given with --user, else a user of its own (device:<token id>) that no other
token sees. It may never name another user's userId on a request. A service
token (--service NAME), for an application backend that acts for many users,
names the userId of every request instead."""

_DATABASE_URL_HELP = f"the database (default: {Settings.database_url}; env VOXRELAY_DATABASE_URL)"
_TALK_EXAMPLES = """\
examples:
  voxrelay talk --text "hello"                    a typed turn, over http
  voxrelay talk --wav speech.wav --transport ws   a spoken one, over the WebSocket
  voxrelay talk --mic                             until Ctrl+C (the audio extra)"""


def _providers_help() -> str:
    width = max(map(len, PROVIDERS))
    lines = [f"  {name:{width}}  {_PROVIDER_HELP.get(name, '')}" for name in PROVIDERS]
    return "providers (--provider):\n" + "\n".join(lines)


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "yes" if default else "no"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _bool(raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, got {raw!r}") from None


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in _SERVE_FLAGS}
    return Settings.from_env(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from voxrelay.pricing import load_prices
    from voxrelay.providers import provider_factory
    from voxrelay.tools import load_tools

    settings = _settings(args)
    _check_port(settings)  # fail now on a port another program holds
    provider_factory(settings)  # on missing credentials
    load_prices(settings.prices)  # on a price table that cannot be used
    load_tools(settings.tools)  # and on a tools file that cannot be used
    _check_database(settings)  # and on a database the server could not start with
    if settings.workers > 1:
        from voxrelay.workers import supervisor

        return supervisor.serve(settings)
    from voxrelay.server import run

    return run(settings)


def _check_port(settings: Settings) -> None:
    """Raise :class:`CannotListen`, in words, when the address cannot be had."""
    from voxrelay.workers.supervisor import listening_socket

    host, port = settings.host, settings.port
    other = "choose another with --port N or VOXRELAY_PORT=N"
    try:
        listening_socket(host, port, shared=False).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            why = f"port {port} on {host} is in use already (another voxrelay serve?); {other}"
        elif error.errno == errno.EACCES:
            why = f"not allowed to listen on port {port} (below 1024 needs root); {other}"
        elif error.errno == errno.EADDRNOTAVAIL or error.errno is None or error.errno < 0:
            why = (
                f"cannot listen on {host}: not an address of this machine;"
                " choose another with --host or VOXRELAY_HOST"
            )
        else:
            why = f"cannot listen on {host} port {port}: {error.strerror or error}"
        raise CannotListen(why) from None


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


def _token(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = await _with_store(args)
        try:
            result: int = await args.token_action(store, args)
        finally:
            await store.close()
        return result

    return _run(go())


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
