"""``voxrelay token create|list|revoke``: each action runs on a store the command
opened, and prints for the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from voxrelay.store import AmbiguousToken, DeviceToken, Store


def add_actions(actions: Any) -> None:
    """The actions, as subcommands of ``voxrelay token`` (``actions`` is its subparsers)."""
    create = actions.add_parser(
        "create",
        help="create a token; it is printed once, on the last line",
        description="Create a device token (--device NAME [--user USER]) or a service"
        " token (--service NAME). Only its hash is stored; it is printed once, alone"
        " on the last line.",
    )
    named = create.add_mutually_exclusive_group(required=True)
    named.add_argument("--device", help="a name for the device (each user's own)")
    named.add_argument(
        "--service",
        help="a name for an application backend: its token acts for the userId each"
        " request names, the only kind that may",
    )
    create.add_argument(
        "--user",
        default=None,
        help="(devices) the user whose conversations it sees; without it, a user of its"
        " own that no other token sees",
    )
    create.set_defaults(token_action=_create)

    listing = actions.add_parser(
        "list", help="list tokens (never the tokens themselves), oldest first"
    )
    listing.add_argument("--user", default=None, help="only the devices of this user")
    listing.set_defaults(token_action=_list)

    revoke = actions.add_parser(
        "revoke",
        help="revoke a device's (or a service's) tokens",
        description="Revoke the active tokens of device NAME (of USER's devices only,"
        " with --user) or of service NAME (--service NAME). A device name used by several"
        " users revokes nothing and lists them: say which with --user.",
    )
    revoke.add_argument("device", nargs="?", metavar="NAME", help="the device's name")
    revoke.add_argument("--user", default=None, help="the user whose device it is")
    revoke.add_argument("--service", default=None, metavar="NAME", help="a service's name")
    revoke.set_defaults(token_action=_revoke)


async def _create(store: Store, args: argparse.Namespace) -> int:
    if args.service is not None:
        if args.user is not None:
            raise ValueError("--user is for devices; a service names userId on each request")
        record, token = await store.create_token(args.service, kind="service")
        print(f"service: {record.name}\nuser: the userId each request names")
    else:
        record, token = await store.create_token(args.device, args.user)
        own = "" if args.user is not None else " (its own: no other token sees it)"
        print(f"device: {record.name}\nuser: {record.user_id}{own}")
    print("token (shown once):")
    print(token)
    return 0


async def _list(store: Store, args: argparse.Namespace) -> int:
    tokens = await store.list_tokens(user_id=args.user)
    rows = [("KIND", "USER", "NAME", "CREATED", "REVOKED")]
    rows += [
        (t.kind, t.user_id or "-", t.name, _time(t.created_at), _time(t.revoked_at)) for t in tokens
    ]
    for line in _aligned(rows):
        print(line)
    return 0


async def _revoke(store: Store, args: argparse.Namespace) -> int:
    if (args.device is None) == (args.service is None):
        raise ValueError("name the device (revoke NAME [--user USER]) or --service NAME")
    if args.service is not None and args.user is not None:
        raise ValueError("--user is for devices, not with --service")
    name = args.device if args.device is not None else args.service
    what = f"service {name!r}" if args.service is not None else repr(name)
    if args.user is not None:
        what = f"device {name!r} of user {args.user!r}"
    try:
        count = await store.revoke_token(
            name, user_id=args.user, kind="service" if args.service is not None else None
        )
    except AmbiguousToken as error:
        matches = "; ".join(sorted({_match(t) for t in error.matches}))
        print(
            f"voxrelay: {name!r} names the tokens of several owners ({matches}): nothing"
            " revoked; say which with --user USER (or --service NAME)",
            file=sys.stderr,
        )
        return 2
    if count == 0:
        print(f"no active token for {what}", file=sys.stderr)
        return 1
    print(f"revoked {count} token(s): {what}")
    return 0


def _match(token: DeviceToken) -> str:
    if token.kind == "service":
        return f"service {token.name}"
    return f"user {token.user_id} device {token.name}"


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
