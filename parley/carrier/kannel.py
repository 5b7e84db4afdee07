"""Kannel (the open SMS gateway): out through smsbox's sendsms HTTP interface, in and
delivery reports through Kannel calling Parley's URLs back.

Outbound: one ``GET /cgi-bin/sendsms`` per part, with the part's text (UTF-8), ``coding``
(0 GSM-7, 2 UCS-2) and, for a concatenated SMS, the part's ``udh``. Kannel's sendsms does
not return an id, so Parley carries its own in the ``dlr-url`` of the last part, with the
shared secret; the report's ``%d`` says delivered (1) or failed (2, 16).

Inbound: an ``sms-service`` whose ``get-url`` is Parley's
``/v1/carrier/kannel/inbound?secret=S&from=%p&to=%P&text=%b&id=%I`` (with
``alt-charset = "UTF-8"`` and ``max-messages = 0``, so Kannel sends no reply SMS).
``docs/carrier.md`` shows the groups; :meth:`KannelGateway.service_config` writes them.

Callbacks must carry the shared secret (``--kannel-secret``); the HTTP layer checks it in
constant time before these parsers run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import quote, quote_from_bytes, urlencode

import httpx

from parley.carrier.base import CarrierSink, CarrierSms, DeliveryReport, GatewayError, OutboundSms
from parley.core import handles
from parley.errors import InvalidHandle

log = logging.getLogger("parley.carrier.kannel")

INBOUND_PATH = "/v1/carrier/kannel/inbound"
REPORT_PATH = "/v1/carrier/kannel/report"
DLR_DELIVERED = 1
DLR_FAILED = (2, 16)  # failed at the handset; rejected by the SMSC
DLR_MASK = 1 | 2 | 16
MAX_CALLBACK_TEXT = 4096
KANNEL_CODING = {"gsm7": 0, "ucs2": 2}


class KannelGateway:
    name = "kannel"

    def __init__(
        self,
        sendsms_url: str,
        username: str,
        password: str,
        callback_url: str,
        secret: str,
        clock: Callable[[], int],
        timeout_s: float = 10.0,
    ) -> None:
        """``sendsms_url``: e.g. http://127.0.0.1:13013/cgi-bin/sendsms; ``callback_url``:
        this server as Kannel reaches it, e.g. http://127.0.0.1:8080."""
        self._sendsms_url = sendsms_url
        self._username = username
        self._password = password
        self._callback_url = callback_url.rstrip("/")
        self._secret = secret
        self._clock = clock
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._sink: CarrierSink | None = None

    async def start(self, sink: CarrierSink) -> None:
        self._sink = sink
        self._http = httpx.AsyncClient(timeout=self._timeout_s)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def service_config(self) -> str:
        """The Kannel groups that route inbound SMS to this server."""
        inbound = f"{self._callback_url}{INBOUND_PATH}?secret={quote(self._secret)}&from=%p&to=%P&text=%b&id=%I"
        return (
            "group = sms-service\n"
            "keyword = default\n"
            "catch-all = true\n"
            "max-messages = 0\n"
            'alt-charset = "UTF-8"\n'
            f'get-url = "{inbound}"\n'
        )

    async def send(self, sms: OutboundSms) -> str:
        if self._http is None:
            raise GatewayError("the Kannel gateway is not started", temporary=True)
        parts = sms.encoded.parts
        for index, part in enumerate(parts):
            query = [
                ("username", self._username),
                ("password", self._password),
                ("from", sms.sender),
                ("to", sms.to),
                ("text", part.text),
                ("charset", "UTF-8"),
                ("coding", str(KANNEL_CODING[sms.encoded.coding])),
            ]
            if index == len(parts) - 1 and sms.want_report:
                report = f"{self._callback_url}{REPORT_PATH}?" + urlencode({"secret": self._secret, "sms": sms.sms_id})
                query += [("dlr-mask", str(DLR_MASK)), ("dlr-url", report + "&status=%d")]
            url = self._sendsms_url + "?" + urlencode(query)
            if part.udh:
                url += "&udh=" + quote_from_bytes(part.udh, safe="")
            await self._get(url)
        return sms.sms_id

    async def _get(self, url: str) -> None:
        assert self._http is not None
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as error:
            raise GatewayError(f"Kannel unreachable: {type(error).__name__}", temporary=True) from None
        if response.status_code in (200, 202):
            return
        # 503: queue full or no SMSC connected; 4xx: the request itself is refused.
        temporary = response.status_code >= 500
        raise GatewayError(f"Kannel answered {response.status_code}: {response.text.strip()[:100]}", temporary)


def parse_inbound(params: Mapping[str, str], now_ms: int) -> CarrierSms:
    """A Kannel get-url call as an SMS, or ValueError if it is malformed."""
    try:
        sender = handles.normalise_phone(params["from"])
        to = handles.normalise_phone(params["to"])
    except KeyError as missing:
        raise ValueError(f"missing {missing.args[0]!r}") from None
    except InvalidHandle as error:
        raise ValueError(str(error)) from None
    text = params.get("text", "")
    carrier_id = params.get("id", "")
    if not text:
        raise ValueError("empty text")
    if len(text) > MAX_CALLBACK_TEXT:
        raise ValueError("text too long")
    if not carrier_id or len(carrier_id) > 64:
        raise ValueError("missing or oversize id")
    return CarrierSms(carrier_id, sender, to, text, now_ms)


def parse_report(params: Mapping[str, str]) -> DeliveryReport:
    """A Kannel dlr-url call as a delivery report, or ValueError if it is malformed."""
    sms_id = params.get("sms", "")
    if not sms_id or len(sms_id) > 64:
        raise ValueError("missing or oversize sms id")
    try:
        status = int(params.get("status", ""))
    except ValueError:
        raise ValueError("status must be an integer") from None
    if status == DLR_DELIVERED:
        return DeliveryReport(delivered=True, sms_id=sms_id, detail="delivered")
    if status in DLR_FAILED:
        return DeliveryReport(delivered=False, sms_id=sms_id, detail=f"kannel status {status}")
    raise ValueError(f"not a final report: status {status}")
