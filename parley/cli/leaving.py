"""The command line's ways out of Parley: ``deregister``, ``export``, ``import``, and the
simulator's ``sms event`` and ``sms move``. Kept apart from :mod:`parley.cli.main` to
keep modules small; errors reach a person as one line there."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from parley.errors import UsageError
from parley.server.config import ServerConfig


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deregister = commands.add_parser("deregister", help="leave Parley without a device: unlink a number by SMS code")
    deregister.add_argument("--server", required=True, help="server URL")
    deregister.add_argument("--phone", required=True, help="the number, in +E.164 form")
    deregister.add_argument("--code", help="the code received by SMS (read by itself against the simulator)")
    deregister.add_argument("--moved-to", default="", help="optional: the handle you moved to (tel:+... or mailto:)")
    deregister.set_defaults(run=run_deregister)

    export = commands.add_parser("export", help="write this device's whole history to a file")
    export.add_argument("--profile", required=True, help="the device profile to export")
    export.add_argument("--format", required=True, choices=["json", "sms-backup-xml"])
    export.add_argument("--out", required=True, help="the file to write")
    export.set_defaults(run=run_export)

    imported = commands.add_parser("import", help="read a JSON export into a fresh device profile")
    imported.add_argument("--profile", required=True, help="the profile to read it into")
    imported.add_argument("file", metavar="FILE")
    imported.set_defaults(run=run_import)


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("leaving Parley (docs/architecture.md, 'Ways out')")
    group.add_argument(
        "--liveness-seconds",
        type=float,
        default=3600.0,
        help="stop advertising a number whose devices leave 2+ senders' messages overdue this long (default 1 h)",
    )
    group.add_argument(
        "--lease-days",
        type=float,
        default=14.0,
        help="a device's registration lapses after this unless its client runs (default 14)",
    )
    group.add_argument(
        "--reproof-days",
        type=float,
        default=30.0,
        help="how often a number proves, by a silent SMS code, that its device still holds the SIM (default 30)",
    )
    group.add_argument(
        "--reproof-answer-seconds",
        type=float,
        default=600.0,
        help="how long the device holding the SIM has to answer (default 600)",
    )


def with_serve_options(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    return dataclasses.replace(
        config,
        liveness_s=args.liveness_seconds,
        lease_days=args.lease_days,
        reproof_days=args.reproof_days,
        reproof_answer_s=args.reproof_answer_seconds,
    )


def add_sms_actions(phones: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    event = phones.add_parser("event", help="the carrier reports a number ported out, its SIM changed, or recycled")
    event.add_argument("kind", choices=["port-out", "sim-change", "recycle"])
    event.add_argument("number", metavar="+E164")
    event.set_defaults(run=run_sms_event)
    move = phones.add_parser("move", help="put a number's SIM into a fresh SMS-only phone")
    move.add_argument("number", metavar="+E164")
    move.set_defaults(run=run_sms_move, kind="move")


def run_deregister(args: argparse.Namespace) -> int:
    from parley.client import leaving
    from parley.client.device import read_code_from_handset

    async def go() -> None:
        done = await leaving.deregister(args.server, args.phone, args.code, args.moved_to, read_code_from_handset)
        moved = f"; moved to {done.left.moved_to}" if done.left.moved_to else ""
        print(f"Deregistered {done.handle}: {done.devices_unlinked} device(s) unlinked{moved}")

    asyncio.run(go())
    return 0


def run_sms_event(args: argparse.Namespace) -> int:
    from parley.client.api import ServerApi
    from parley.core.handles import normalise_phone

    async def go() -> None:
        number = normalise_phone(args.number)
        async with ServerApi(args.server) as api:
            await api.carrier_event(args.kind, number)
        print(f"carrier event {args.kind} for {number}")

    asyncio.run(go())
    return 0


run_sms_move = run_sms_event


def run_export(args: argparse.Namespace) -> int:
    from parley.client.export import export

    count = export(args.profile, args.format, args.out)
    print(f"Exported {count} message(s) from {args.profile!r} to {args.out} ({args.format})")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from parley.client.export import import_history

    if not args.file:
        raise UsageError("name the file to import")
    added = import_history(args.profile, args.file)
    print(f"Imported {added} message(s) into {args.profile!r}")
    return 0
