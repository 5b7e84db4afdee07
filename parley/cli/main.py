"""``parley``: the command line. Every error reaches a person as one line and a non-zero
exit status, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.cli import leaving
from parley.cli.show import event_json, format_event, format_message, format_report, message_json, report_json, when
from parley.client.device import Device, Event
from parley.errors import ParleyError, Unreachable, UsageError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ParleyError as error:
        print(f"parley: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: still one line, with a way to see more
        if os.environ.get("PARLEY_DEBUG"):
            raise
        print(
            f"parley: unexpected error ({type(error).__name__}: {error}); set PARLEY_DEBUG=1 for details",
            file=sys.stderr,
        )
        return 70


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley: messages over the internet, SMS for the rest.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a server (SQLite and the carrier simulator by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data", default=None, help="data folder (default ./parley-data)")
    serve.add_argument(
        "--carrier", default="sim", choices=["sim", "kannel", "smpp"], help="SMS carrier (default: the simulator)"
    )
    carrier = serve.add_argument_group("carrier options (docs/carrier.md)")
    carrier.add_argument(
        "--carrier-secret",
        default=os.environ.get("PARLEY_CARRIER_SECRET", ""),
        help="shared secret gateway callbacks carry (kannel; or $PARLEY_CARRIER_SECRET)",
    )
    carrier.add_argument("--callback-url", default="", help="this server as the gateway reaches it (kannel)")
    carrier.add_argument("--kannel-sendsms-url", default="http://127.0.0.1:13013/cgi-bin/sendsms")
    carrier.add_argument("--kannel-username", default="")
    carrier.add_argument(
        "--kannel-password", default=os.environ.get("PARLEY_KANNEL_PASSWORD", ""), help="or $PARLEY_KANNEL_PASSWORD"
    )
    carrier.add_argument("--smpp-host", default="127.0.0.1")
    carrier.add_argument("--smpp-port", type=int, default=2775)
    carrier.add_argument("--smpp-system-id", default="")
    carrier.add_argument(
        "--smpp-password", default=os.environ.get("PARLEY_SMPP_PASSWORD", ""), help="or $PARLEY_SMPP_PASSWORD"
    )
    carrier.add_argument("--smpp-system-type", default="")
    serve.add_argument("--message-ttl-days", type=float, default=30.0, help="drop queued envelopes after this")
    leaving.add_serve_options(serve)
    serve.add_argument(
        "--no-rate-limits", action="store_true", help="for benchmarks only: allow unlimited registrations"
    )
    serve.add_argument(
        "--database",
        default=os.environ.get("PARLEY_DATABASE", ""),
        help="postgresql://USER@HOST:PORT/NAME (default: SQLite in the data folder; env PARLEY_DATABASE)",
    )
    serve.add_argument(
        "--broker",
        default=os.environ.get("PARLEY_BROKER", ""),
        help="redis://HOST:PORT/DB to run several nodes on one PostgreSQL database (env PARLEY_BROKER)",
    )
    serve.add_argument("--node-id", default=None, help="this node's name in logs and metrics (default: host-pid)")
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    serve.set_defaults(run=run_serve)

    migrate = commands.add_parser("migrate", help="create or upgrade a PostgreSQL database's schema")
    migrate.add_argument(
        "--database",
        default=os.environ.get("PARLEY_DATABASE", ""),
        required="PARLEY_DATABASE" not in os.environ,
        help="postgresql://USER@HOST:PORT/NAME (env PARLEY_DATABASE)",
    )
    migrate.set_defaults(run=run_migrate)

    register = commands.add_parser("register", help="register this device for a phone number")
    register.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    register.add_argument("--phone", required=True, help="the number, in +E.164 form")
    register.add_argument("--profile", required=True, help="local name for this device's state")
    register.add_argument("--code", help="the code received by SMS (read by itself against the simulator)")
    register.add_argument("--name", help="a name for this device, shown in 'parley devices'")
    register.set_defaults(run=run_register)

    lookup = commands.add_parser("lookup", help="is a handle on Parley, and with which devices")
    add_profile(lookup)
    lookup.add_argument("handles", nargs="+", metavar="HANDLE")
    lookup.add_argument("--json", action="store_true")
    lookup.set_defaults(run=run_lookup)

    send = commands.add_parser("send", help="send a text; prints the message id")
    add_profile(send)
    send.add_argument("handle", metavar="HANDLE")
    send.add_argument("text", metavar="TEXT")
    send.add_argument(
        "--fallback",
        type=int,
        default=None,
        metavar="SECONDS",
        help="send as SMS if no device of the recipient acks within this (default 30; 0: never)",
    )
    send.set_defaults(run=run_send)

    sms = commands.add_parser("sms", help="the carrier simulator's SMS-only phones")
    sms.add_argument("--server", required=True, help="server URL (running with --carrier sim)")
    phones = sms.add_subparsers(dest="sms_command", metavar="ACTION", required=True)
    sms_send = phones.add_parser("send", help="an SMS-only phone sends a text")
    sms_send.add_argument("--from", dest="sender", required=True, help="the phone's number, +E.164")
    sms_send.add_argument("--to", required=True, help="the number to text, +E.164")
    sms_send.add_argument("text", metavar="TEXT")
    sms_send.set_defaults(run=run_sms_send)
    sms_inbox = phones.add_parser("inbox", help="what reached a number's handset by SMS")
    sms_inbox.add_argument("number", metavar="+E164")
    sms_inbox.add_argument("--json", action="store_true")
    sms_inbox.set_defaults(run=run_sms_inbox)
    leaving.add_sms_actions(phones)

    inbox = commands.add_parser("inbox", help="fetch what arrived, then list the history")
    add_profile(inbox)
    inbox.add_argument("--json", action="store_true", help="the history as JSON")
    inbox.add_argument("--with", dest="conversation", metavar="HANDLE", help="one conversation only")
    inbox.set_defaults(run=run_inbox)

    watch = commands.add_parser("watch", help="stay connected and print what arrives")
    add_profile(watch)
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--heartbeat", type=float, default=15.0, metavar="SECONDS", help=argparse.SUPPRESS)
    watch.set_defaults(run=run_watch)

    devices = commands.add_parser("devices", help="this account's devices")
    add_profile(devices)
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(run=run_devices)

    verify = commands.add_parser("verify", help="compare safety numbers with a contact, and mark them verified")
    add_profile(verify)
    verify.add_argument("handle", metavar="HANDLE")
    verify.add_argument("--yes", action="store_true", help="the numbers match (you compared them): mark verified")
    verify.add_argument("--number", help="the number the contact reads out; verified if it matches")
    verify.add_argument("--sas", action="store_true", help="compare emoji live instead (both run it at once)")
    verify.add_argument("--timeout", type=float, default=120.0, help="with --sas: how long to wait for the other side")
    verify.set_defaults(run=run_verify)

    config = commands.add_parser("config", help="show or change a setting of this device")
    add_profile(config)
    config.add_argument("setting", choices=["hold-on-key-change", "read-receipts"])
    config.add_argument("value", nargs="?", choices=["on", "off", "default"])
    config.add_argument(
        "--with", dest="conversation", metavar="HANDLE", help="read-receipts: for this conversation only"
    )
    config.set_defaults(run=run_config)

    read = commands.add_parser("read", help="mark a conversation read (on all your devices; tells the sender)")
    add_profile(read)
    read.add_argument("handle", metavar="HANDLE", nargs="?", help="the conversation (default: all)")
    read.set_defaults(run=run_read)

    typing = commands.add_parser("typing", help="show a contact's connected devices that you are typing")
    add_profile(typing)
    typing.add_argument("handle", metavar="HANDLE")
    typing.add_argument("--stop", action="store_true", help="you stopped typing")
    typing.set_defaults(run=run_typing)

    doctor = commands.add_parser("doctor", help="check this device, repair what it can, say what needs you")
    add_profile(doctor)
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-repair", action="store_true", help="only look; change nothing")
    doctor.set_defaults(run=run_doctor)

    unlink = commands.add_parser("unlink", help="remove a device from this account")
    add_profile(unlink)
    unlink.add_argument("device_id", metavar="DEVICE_ID")
    unlink.set_defaults(run=run_unlink)
    leaving.add_commands(commands)
    return parser


def add_profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, help="the device profile to act as")


# --- commands ---


def run_serve(args: argparse.Namespace) -> int:
    from parley.server.config import DEFAULT_DATA_DIR, ServerConfig, default_node_id
    from parley.server.run import serve
    from parley.store.factory import is_postgres

    if args.broker:
        if not args.broker.startswith(("redis://", "rediss://")):
            raise UsageError("--broker takes a redis://HOST:PORT/DB URL")
        if not is_postgres(args.database):
            raise UsageError("several nodes share one PostgreSQL database: --broker needs --database postgresql://...")
    if args.database:
        # Migrate before the server starts, so a bad URL or a newer schema is one line here.
        migrate_database(args.database)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data or DEFAULT_DATA_DIR,
        carrier=args.carrier,
        rate_limits=not args.no_rate_limits,
        message_ttl_days=args.message_ttl_days,
        carrier_secret=args.carrier_secret,
        callback_url=args.callback_url,
        kannel_sendsms_url=args.kannel_sendsms_url,
        kannel_username=args.kannel_username,
        kannel_password=args.kannel_password,
        smpp_host=args.smpp_host,
        smpp_port=args.smpp_port,
        smpp_system_id=args.smpp_system_id,
        smpp_password=args.smpp_password,
        smpp_system_type=args.smpp_system_type,
        database=args.database,
        broker=args.broker,
        node_id=args.node_id or default_node_id(),
        log_format=args.log_format,
    )
    config = leaving.with_serve_options(config, args)
    try:
        from parley.server.app import build_gateway

        build_gateway(config, lambda: 0)  # checks the carrier options before starting
    except ValueError as error:
        raise UsageError(str(error)) from None
    serve(config)
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    before, after = migrate_database(args.database)
    if before == after:
        print(f"Schema is current (version {after}).")
    else:
        print(f"Schema upgraded from {before or 'empty'} to version {after}.")
    return 0


def migrate_database(database: str) -> tuple[str | None, str]:
    from parley.store import pg_migrate
    from parley.store.factory import is_postgres

    if not is_postgres(database):
        raise UsageError("--database takes a postgresql://... URL (SQLite migrates itself at start)")
    try:
        return asyncio.run(pg_migrate.upgrade(database))
    except (OSError, TimeoutError) as error:
        raise Unreachable(f"cannot reach the database: {error}") from None
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    except Exception as error:
        # SQLAlchemy wraps the driver's error as "(driver.Error) reason\n(Background ...)".
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"the database refused: {reason.split(') ', 1)[-1]}") from None


def run_register(args: argparse.Namespace) -> int:
    async def ask(prompt: str) -> str:
        return await asyncio.to_thread(input, prompt)

    async def go() -> None:
        device = await Device.register(
            args.server,
            args.phone,
            args.profile,
            code=args.code,
            device_name=args.name,
            ask_code=ask if sys.stdin.isatty() else None,
        )
        async with device:
            print(f"Registered device {device.device_id} for {device.handle} as profile {args.profile!r}")

    asyncio.run(go())
    return 0


def run_lookup(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        results = await device.lookup(args.handles)
        if args.json:
            print(json.dumps([_plain(r) for r in results], indent=2))
            return
        for result in results:
            if result.error:
                print(f"{result.query}\tinvalid: {result.error}")
            elif result.on_parley:
                status = device.trust.status(result.handle).value
                mark = {"verified": "\tverified", "changed": "\tsafety number changed"}.get(status, "")
                print(f"{result.handle}\ton Parley\t{len(result.devices)} device(s){mark}")
            else:
                left = device.profile.get(f"left:{result.handle}") if result.left else None
                note = f"\tleft Parley {when(int(left.split()[0]))}" if left else ""
                print(f"{result.handle}\tnot on Parley (SMS){note}")

    return with_device(args.profile, go)


def run_send(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        await device.flush_outbox()
        message_id = await device.send_text([args.handle], args.text, fallback_s=args.fallback)
        print(message_id)
        if any(m.message_id == message_id and m.state == "held" for m in device.profile.outbox()):
            print(
                f"held: the safety number with {args.handle} changed since you verified it;"
                f" compare again with: parley verify --profile {args.profile} {args.handle}",
                file=sys.stderr,
            )

    return with_device(args.profile, go)


def run_sms_send(args: argparse.Namespace) -> int:
    from parley.client.api import ServerApi

    async def go() -> None:
        async with ServerApi(args.server) as api:
            sms = await api.handset_send(args.sender, args.to, args.text)
            print(sms.sms_id)

    asyncio.run(go())
    return 0


def run_sms_inbox(args: argparse.Namespace) -> int:
    from parley.client.api import ServerApi
    from parley.core.handles import normalise_phone

    async def go() -> None:
        number = normalise_phone(args.number)
        async with ServerApi(args.server) as api:
            inbox = await api.handset_inbox(number)
        if args.json:
            print(json.dumps(_plain(inbox.messages), indent=2))
            return
        if not inbox.messages:
            print(f"No SMS reached {number}.")
        for sms in inbox.messages:
            print(f"{when(sms.at_ms)}  ← {sms.sender}: {sms.text}")

    asyncio.run(go())
    return 0


def run_inbox(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        await device.flush_outbox()
        await device.sync()
        conversation = None
        if args.conversation:
            from parley.core.handles import normalise

            conversation = normalise(args.conversation)
        messages = device.profile.messages(conversation)
        unread = {m.message_id for m in device.profile.unread(conversation)}
        if args.json:
            print(json.dumps([message_json(m, m.message_id in unread) for m in messages], indent=2))
            return
        if not messages:
            print("No messages yet.")
        for message in messages:
            print(format_message(message, message.message_id in unread))

    return with_device(args.profile, go)


def run_watch(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)

        def show(event: Event) -> None:
            print(json.dumps(event_json(event)) if args.json else format_event(event), flush=True)

        if not args.json:
            print(f"Watching as {device.handle} (device {device.device_id}); Ctrl-C to stop.", flush=True)
        await device.watch(show, stop, heartbeat_s=args.heartbeat)

    return with_device(args.profile, go)


def run_devices(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        listing = await device.api.devices()
        if args.json:
            print(json.dumps(_plain(listing), indent=2))
            return
        print(f"Account {listing.account_id}: {', '.join(listing.handles)}")
        for info in listing.devices:
            mark = "  (this device)" if info.device_id == device.device_id else ""
            print(f"{info.device_id}\t{info.name}\tregistered {when(info.created_at_ms)}{mark}")

    return with_device(args.profile, go)


def run_verify(args: argparse.Namespace) -> int:
    from parley.core import trust

    async def go(device: Device) -> None:
        if args.sas:
            await verify_sas(device)
            return
        number, keys = await device.safety_number(args.handle)
        status = device.trust.status(normalise_handle(args.handle))
        groups = number.split()
        print(f"Safety number with {normalise_handle(args.handle)} ({len(keys)} device(s), {status.value}):")
        print("  " + " ".join(groups[:6]))
        print("  " + " ".join(groups[6:]))
        if args.number is not None:
            if trust.normalise_number(args.number) != trust.normalise_number(number):
                raise UsageError("the numbers differ: someone may be reading along; not verified")
        elif not args.yes:
            if not sys.stdin.isatty():
                print("Compare it with your contact's, then run again with --yes (or --number DIGITS).")
                return
            answer = await asyncio.to_thread(input, "Does your contact see the same number? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Not verified.")
                return
        released = await device.mark_verified(args.handle, keys)
        print(f"Verified {normalise_handle(args.handle)}.")
        for message_id in released:
            print(f"{message_id}: sent (was held)")

    async def verify_sas(device: Device) -> None:
        from parley.client.sas import Shown, verify_by_sas

        async def confirm(shown: Shown) -> bool:
            print(f"Compare with what {normalise_handle(args.handle)} sees:\n  {shown}", flush=True)
            if args.yes:
                return True
            if not sys.stdin.isatty():
                raise UsageError("comparing emoji needs a person at a terminal (or --yes)")
            answer = await asyncio.to_thread(input, "Do they match? [y/N] ")
            return answer.strip().lower() in ("y", "yes")

        print(f"Waiting for {normalise_handle(args.handle)} to run: parley verify --sas <your number>", flush=True)
        await verify_by_sas(device, args.handle, confirm, timeout_s=args.timeout)
        print(f"Verified {normalise_handle(args.handle)}.")

    return with_device(args.profile, go)


def run_config(args: argparse.Namespace) -> int:
    from parley.client import receipts
    from parley.client.contacts import HOLD_SETTING

    async def go(device: Device) -> None:
        if args.setting == "hold-on-key-change":
            if args.conversation or args.value == "default":
                raise UsageError("hold-on-key-change is on or off, for every conversation")
            if args.value is not None:
                device.profile.set_many({HOLD_SETTING: args.value})
            print(f"{args.setting}: {'on' if device.trust.hold_on_change else 'off'}")
            return
        conversation = normalise_handle(args.conversation) if args.conversation else None
        key = receipts.setting_key(conversation)
        if args.value == "default":
            if conversation is None:
                raise UsageError("'default' clears a conversation's override: add --with HANDLE")
            device.profile.db.execute("DELETE FROM settings WHERE key = ?", (key,))
        elif args.value is not None:
            device.profile.set_many({key: args.value})
        if conversation is None:
            print(f"read-receipts: {'on' if device.reads.allowed('') else 'off'}")
            return
        override = device.profile.get(key)
        source = "this conversation" if override else "your default"
        print(f"read-receipts with {conversation}: {'on' if device.reads.allowed(conversation) else 'off'} ({source})")

    return with_device(args.profile, go)


def run_read(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        await device.sync()
        marked = await device.mark_read(args.handle)
        where = normalise_handle(args.handle) if args.handle else "every conversation"
        print(f"Marked {len(marked)} message(s) read in {where}.")

    return with_device(args.profile, go)


def run_typing(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        relayed = await device.typing(args.handle, active=not args.stop)
        print(f"Told {relayed} connected device(s).")

    return with_device(args.profile, go)


def run_doctor(args: argparse.Namespace) -> int:
    from parley.client.doctor import examine

    report = asyncio.run(examine(args.profile, repair=not args.no_repair))
    if args.json:
        print(json.dumps(report_json(report.findings, report.log), indent=2))
    else:
        print(f"Parley doctor: profile {args.profile}")
        print("\n".join(format_report(report.findings, report.log)))
    return report.exit_status


def run_unlink(args: argparse.Namespace) -> int:
    async def go(device: Device) -> None:
        await device.api.unlink(args.device_id)
        print(f"Unlinked {args.device_id}")

    return with_device(args.profile, go)


# --- helpers ---


def with_device(profile: str, action: Callable[[Device], Awaitable[None]]) -> int:
    from parley.errors import Rejected

    async def go() -> None:
        async with Device.open(profile) as device:
            try:
                await action(device)
            except Rejected as error:
                if error.status != 401:
                    raise
                device.profile.set_many({"revoked": str(device.now())})
                number = device.handle.removeprefix("tel:")
                raise UsageError(
                    f"the server no longer accepts this device; run: parley register --server {device.server}"
                    f" --phone {number} --profile {profile}"
                ) from None

    asyncio.run(go())
    return 0


def normalise_handle(raw: str) -> str:
    from parley.core.handles import normalise

    return normalise(raw)


def _plain(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


if __name__ == "__main__":
    sys.exit(main())
