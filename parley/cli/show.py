"""How the command line shows messages, events and the doctor's report, as text and JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from parley.client.checks import Finding, Status
from parley.client.events import (
    Event,
    ReadElsewhere,
    Received,
    Repaired,
    StateChanged,
    Typing,
    Unreadable,
    VerificationStep,
)
from parley.client.profile import COULD_NOT_DECRYPT, PLACEHOLDER_STATES, StoredMessage

STATE_LABELS = {
    "held": "Held: safety number changed; parley verify",
    "sending": "Sending",
    "sent": "Sent",
    "delivered": "Delivered",
    "read": "Read",
    "received": "",
    "sms_due": "Sending as SMS",
    "sms_pending": "SMS pending",
    "sms_sent": "Sent as SMS",
    "sms_delivered": "Delivered by SMS",
    "sms_failed": "SMS failed",
    "received_sms": "SMS",
}


def when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def format_message(message: StoredMessage, unread: bool = False) -> str:
    if message.direction == "notice":
        return f"{when(message.sent_at_ms)}  ! {message.text}"
    if message.state in PLACEHOLDER_STATES:
        arrow = "→" if message.direction == "out" else "←"
        return f"{when(message.sent_at_ms)}  {arrow} {message.sender_handle}: [{COULD_NOT_DECRYPT}; asked to resend]"
    if message.direction == "out":
        label = STATE_LABELS.get(message.state, message.state)
        return f"{when(message.sent_at_ms)}  → {message.conversation}: {message.text}  [{label}]"
    via = "  (SMS)" if message.state == "received_sms" else ""
    mark = "  •unread" if unread else ""
    return f"{when(message.sent_at_ms)}  ← {message.sender_handle}: {message.text}{via}{mark}"


def format_event(event: Event) -> str:
    if isinstance(event, Received):
        return format_message(event.message)
    if isinstance(event, StateChanged):
        return f"{event.message_id}: {STATE_LABELS.get(event.state, event.state)}"
    if isinstance(event, VerificationStep):
        return f"{event.sender_handle} wants to compare emoji: run parley verify --sas {event.sender_handle}"
    if isinstance(event, ReadElsewhere):
        return f"read on another of your devices: {len(event.message_ids)} message(s)"
    if isinstance(event, Typing):
        return f"{event.sender_handle} is typing…"
    if isinstance(event, Repaired):
        return f"repaired {event.check}: {event.detail}"
    return f"{COULD_NOT_DECRYPT}: a message from {event.sender_handle} ({event.message_id}); asked to resend"


def message_json(message: StoredMessage, unread: bool = False) -> dict[str, Any]:
    fields = {
        "message_id": message.message_id,
        "conversation": message.conversation,
        "direction": message.direction,
        "sender": message.sender_handle,
        "sender_device": message.sender_device,
        "recipients": message.recipients,
        "text": message.text,
        "sent_at_ms": message.sent_at_ms,
        "state": message.state,
    }
    if message.direction == "in":
        fields["unread"] = unread
    return fields


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, Received):
        return {"event": "message", **message_json(event.message)}
    if isinstance(event, StateChanged):
        return {"event": "state", "message_id": event.message_id, "state": event.state}
    if isinstance(event, VerificationStep):
        return {"event": "verification", "sender": event.sender_handle, "sender_device": event.sender_device}
    if isinstance(event, ReadElsewhere):
        return {"event": "read_elsewhere", "message_ids": event.message_ids}
    if isinstance(event, Typing):
        return {
            "event": "typing",
            "sender": event.sender_handle,
            "conversation": event.conversation,
            "until_ms": event.until_ms,
        }
    if isinstance(event, Repaired):
        return {"event": "repaired", "check": event.check, "detail": event.detail}
    assert isinstance(event, Unreadable)
    return {"event": "undecryptable", "message_id": event.message_id, "sender": event.sender_handle}


def format_report(findings: list[Finding], log: list[tuple[int, str, str, str]]) -> list[str]:
    """The doctor's report: every check, then what was repaired (and what needed you) when."""
    lines = []
    for finding in findings:
        lines.append(f"  {finding.check:<13} {finding.status.value:<10} {finding.detail}")
        if finding.status is Status.NEEDS_YOU and finding.command:
            lines.append(f"  {'':<13} {'':<10} run: {finding.command}")
    if log:
        lines.append("")
        lines.append("Repair log (newest first):")
        lines.extend(f"  {when(at_ms)}  {check:<13} {outcome:<10} {detail}" for at_ms, check, outcome, detail in log)
    return lines


def report_json(findings: list[Finding], log: list[tuple[int, str, str, str]]) -> dict[str, Any]:
    return {
        "checks": [
            {"check": f.check, "status": f.status.value, "detail": f.detail, "command": f.command} for f in findings
        ],
        "log": [{"at_ms": a, "check": c, "outcome": o, "detail": d} for a, c, o, d in log],
    }
