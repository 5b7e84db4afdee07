"""Export a device's whole history, and import it into a fresh device.

Two formats, both written by ``parley export --profile NAME --format F --out FILE``:

* ``json``: Parley's own, read back by ``parley import``. One object::

      {"format": "parley-export", "version": 1, "handle": "tel:+1...",
       "exported_at_ms": 1700000000000,
       "messages": [{"message_id": "...", "sender_device": "...", "conversation": "tel:+1...",
                     "direction": "in" | "out" | "notice", "sender": "tel:+1...",
                     "recipients": ["tel:+1..."], "text": "...", "sent_at_ms": 1700000000000,
                     "state": "delivered", "channel": "parley" | "sms"}, ...]}

  ``channel`` says how the message travelled: ``sms`` for SMS threads (sent or
  received as SMS), ``parley`` otherwise. Times are milliseconds since the Unix epoch.

* ``sms-backup-xml``: the XML of the Android app "SMS Backup & Restore", so an Android
  phone can import the history into its own SMS app: ``<smses count="N">`` with one
  ``<sms>`` per message to or from one phone number (``type`` 1 received, 2 sent).
  Group messages and e-mail handles have no place in it and are left out.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from parley.client.profile import Profile, StoredMessage
from parley.core import handles
from parley.errors import UsageError

FORMAT: Final = "parley-export"
VERSION: Final = 1
MAX_TEXT = 64 * 1024
MAX_MESSAGES = 1_000_000
SMS_STATES = ("received_sms", "sms_due", "sms_pending", "sms_sent", "sms_delivered", "sms_failed")


class ExportedMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    sender_device: Annotated[str, msgspec.Meta(max_length=128)]
    conversation: Annotated[str, msgspec.Meta(max_length=4096)]
    direction: Literal["in", "out", "notice"]
    sender: Annotated[str, msgspec.Meta(max_length=320)]
    recipients: Annotated[list[Annotated[str, msgspec.Meta(max_length=320)]], msgspec.Meta(max_length=64)]
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    sent_at_ms: Annotated[int, msgspec.Meta(ge=0)]
    state: Annotated[str, msgspec.Meta(max_length=32)]
    channel: Literal["parley", "sms"]


class ExportFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal["parley-export"]
    version: Literal[1]
    handle: Annotated[str, msgspec.Meta(max_length=320)]
    exported_at_ms: int
    messages: Annotated[list[ExportedMessage], msgspec.Meta(max_length=MAX_MESSAGES)]


def open_history(name: str) -> Profile:
    """A profile's history, whether or not it still has a registered device."""
    return Profile.open(name, registered=False)


def to_export(profile: Profile) -> ExportFile:
    messages = [
        ExportedMessage(
            message_id=m.message_id,
            sender_device=m.sender_device,
            conversation=m.conversation,
            direction=m.direction,  # type: ignore[arg-type]
            sender=m.sender_handle,
            recipients=m.recipients,
            text=m.text,
            sent_at_ms=m.sent_at_ms,
            state=m.state,
            channel="sms" if m.state in SMS_STATES else "parley",
        )
        for m in profile.messages()
    ]
    return ExportFile(FORMAT, VERSION, profile.get("handle") or "", int(time.time() * 1000), messages)


def export_json(profile: Profile) -> bytes:
    return json.dumps(msgspec.to_builtins(to_export(profile)), indent=2, ensure_ascii=False).encode() + b"\n"


def _address(message: ExportedMessage) -> str | None:
    """The one phone number a message was with, or None (group, e-mail, notice)."""
    if message.direction == "in":
        other = message.sender
    elif message.direction == "out" and len(message.recipients) == 1:
        other = message.recipients[0]
    else:
        return None
    return handles.phone_of(other) if handles.is_phone(other) else None


def export_sms_backup_xml(profile: Profile) -> bytes:
    rows = [(m, _address(m)) for m in to_export(profile).messages]
    root = ET.Element("smses", count="0")
    count = 0
    for message, number in rows:
        if number is None:
            continue
        count += 1
        date = str(message.sent_at_ms)
        readable = datetime.fromtimestamp(message.sent_at_ms / 1000).strftime("%b %d, %Y %I:%M:%S %p")
        ET.SubElement(
            root,
            "sms",
            {
                "protocol": "0",
                "address": number,
                "date": date,
                "type": "1" if message.direction == "in" else "2",
                "subject": "null",
                "body": message.text,
                "toa": "null",
                "sc_toa": "null",
                "service_center": "null",
                "read": "1",
                "status": "-1",
                "locked": "0",
                "date_sent": date,
                "readable_date": readable,
                "contact_name": "(Unknown)",
            },
        )
    root.set("count", str(count))
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>\n" + body + b"\n"


def export(name: str, fmt: str, out: str) -> int:
    """Write profile ``name``'s history to ``out``; return how many messages it holds."""
    profile = open_history(name)
    try:
        data = export_json(profile) if fmt == "json" else export_sms_backup_xml(profile)
        count = len(profile.messages())
    finally:
        profile.close()
    with open(out, "wb") as file:
        file.write(data)
    return count


def read_export(path: str) -> ExportFile:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    try:
        return msgspec.json.decode(raw, type=ExportFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise UsageError(f"{path} is not a Parley JSON export: {error}") from None


def import_history(name: str, path: str) -> int:
    """Read a JSON export into profile ``name`` (created if new, history only); return how
    many messages were added. The whole file is checked before anything is written."""
    exported = read_export(path)
    existing = Profile.exists(name)
    profile = open_history(name) if existing else Profile.create(name)
    added = 0
    try:
        with profile.batch():
            for m in exported.messages:
                stored = StoredMessage(
                    m.sender_device, m.message_id, m.conversation, m.direction, m.sender,
                    m.recipients, m.text, m.sent_at_ms, m.state,
                )  # fmt: skip
                added += profile.add_message(stored)
            if not existing and exported.handle:
                profile.set_many({"handle": exported.handle})
    finally:
        profile.close()
    return added
