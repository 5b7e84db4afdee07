"""The HTTP side of leaving Parley: deregistration (JSON and the ``/deregister`` web
page), carrier events (the simulator's, and the authenticated callback real gateway
deployments call). Thin: each handler decodes, calls :class:`~parley.server.leaving.Exits`,
and encodes.

The web page is plain server-rendered HTML with two forms and no script. It needs no
CSRF token: nothing it does acts on a session or a cookie; the one-time code sent to the
number is the whole proof, so a forged form post can at most ask for a code.
"""

from __future__ import annotations

import hmac
import html
import urllib.parse
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from parley.carrier.base import CarrierEvent
from parley.carrier.simulator import CarrierSimulator
from parley.errors import ApiError
from parley.server.http_api import Endpoint, address, decode, phone_or_400, reply
from parley.server.leaving import Exits
from parley.wire import (
    CarrierEventReport,
    CodeSent,
    DeregisterCode,
    Deregistered,
    DeregisterRequest,
    ErrorCode,
    SimEvent,
)

EVENT_SECRET_HEADER = "x-parley-carrier-secret"  # noqa: S105  a header name
MAX_FORM_BYTES = 4096

LEAVING_ENDPOINTS = [
    Endpoint("POST", "/v1/deregister/code", "Send a deregistration code to a number", DeregisterCode, CodeSent, 202),
    Endpoint("POST", "/v1/deregister", "Confirm: unlink every device of the number", DeregisterRequest, Deregistered),
    Endpoint("POST", "/v1/carrier/events", "Gateway callback: a carrier event (needs the secret header)",
             CarrierEventReport, None, 202),
    Endpoint("POST", "/v1/sim/events", "Simulator: a carrier event, or a number moving to a new phone",
             SimEvent, None, 202),
]  # fmt: skip


class LeavingApi:
    def __init__(
        self, exits: Exits, simulator: CarrierSimulator | None, left_key: str, events_secret: str | None
    ) -> None:
        self._exits = exits
        self._simulator = simulator
        self.left_key = left_key
        self._events_secret = events_secret

    async def deregister_code(self, request: Request) -> Response:
        body = await decode(request, DeregisterCode)
        return reply(await self._exits.request_deregister_code(body.phone, address(request)), 202)

    async def deregister(self, request: Request) -> Response:
        body = await decode(request, DeregisterRequest)
        return reply(await self._exits.deregister(body, address(request)))

    async def carrier_event(self, request: Request) -> Response:
        if self._events_secret is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this server takes no carrier events (no --carrier-secret)")
        given = request.headers.get(EVENT_SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._events_secret.encode()):
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "a carrier event needs the shared secret")
        body = await decode(request, CarrierEventReport)
        number = phone_or_400(body.number)
        await self._exits.carrier_event(CarrierEvent(body.kind, number, body.at_ms), body.event_id)
        return reply({"ok": True}, 202)

    async def sim_event(self, request: Request) -> Response:
        if self._simulator is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this server does not run the carrier simulator")
        body = await decode(request, SimEvent)
        await self._simulator.carrier_event(body.kind, phone_or_400(body.number))
        return reply({"ok": True}, 202)

    def handlers(self) -> dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]:
        by_route: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("POST", "/v1/deregister/code"): self.deregister_code,
            ("POST", "/v1/deregister"): self.deregister,
            ("POST", "/v1/carrier/events"): self.carrier_event,
            ("POST", "/v1/sim/events"): self.sim_event,
        }
        assert set(by_route) == {(e.method, e.path) for e in LEAVING_ENDPOINTS}, "route table and handlers disagree"
        return by_route

    # --- the web page ---

    async def page(self, request: Request) -> Response:
        if request.method != "POST":
            return _page(_number_form())
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return _page(_number_form(), "That form is too large.", 413)
        form = {k: v[0].strip() for k, v in urllib.parse.parse_qs(raw.decode(errors="replace")).items()}
        phone, code, moved_to = form.get("phone", ""), form.get("code", ""), form.get("moved_to", "")
        try:
            if not code:
                await self._exits.request_deregister_code(phone, address(request))
                return _page(_code_form(phone), f"We sent a code by SMS to {phone}. Enter it to confirm.")
            done = await self._exits.deregister(
                DeregisterRequest(phone=phone, code=code, moved_to=moved_to), address(request)
            )
        except ApiError as error:
            form_html = _code_form(phone) if code else _number_form()
            return _page(form_html, str(error), error.status)
        return _page(
            "",
            f"Done. {done.handle} is no longer on Parley: {done.devices_unlinked} device(s) were unlinked, and"
            " messages to it now go by SMS.",
        )


def _page(form: str, message: str = "", status: int = 200) -> HTMLResponse:
    notice = f'<p class="notice">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Leave Parley</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Leave Parley</h1>
<p>No longer have your phone, or moved to one without Parley? Deregister your number here:
every device on it is unlinked at once and messages to it go by SMS.</p>
{notice}{form}</main></body></html>"""
    return HTMLResponse(body, status_code=status)


def _number_form() -> str:
    return """<form method="post" action="/deregister">
<label>Phone number <input name="phone" type="tel" placeholder="+14155550100" required></label>
<button type="submit">Send me a code</button></form>"""


def _code_form(phone: str) -> str:
    value = html.escape(phone, quote=True)
    return f"""<form method="post" action="/deregister">
<input type="hidden" name="phone" value="{value}">
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<label>Moved to (optional) <input name="moved_to" placeholder="tel:+... or mailto:..."></label>
<button type="submit">Deregister {value}</button></form>"""
