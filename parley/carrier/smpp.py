"""SMPP v3.4, the ESME side: one transceiver session to an SMSC, kept up by itself.

PDUs are built and parsed by ``smpplib`` (python-smpplib: mature, small, no
dependencies); this module runs the session on asyncio streams: ``bind_transceiver``,
``submit_sm`` (one per part, a window of outstanding submits matched by sequence number),
``deliver_sm`` (mobile-originated texts, reassembled from concatenated parts, and delivery
receipts), ``enquire_link`` both ways, and reconnection with exponential backoff when the
bind drops. smpplib's own ``Client`` is a blocking socket loop that raises on error
responses; its PDU layer on our own event loop keeps one loop and no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from smpplib import consts, smpp

from parley.carrier.base import CarrierSink, CarrierSms, DeliveryReport, GatewayError, OutboundSms
from parley.core import sms_text

log = logging.getLogger("parley.carrier.smpp")

TON_INTERNATIONAL = 1
TON_ALPHANUMERIC = 5
NPI_E164 = 1
ESM_UDHI = 0x40
ESM_RECEIPT = 0x04
RETRY_LATER = {consts.SMPP_ESME_RTHROTTLED, consts.SMPP_ESME_RMSGQFUL, consts.SMPP_ESME_RSYSERR}
MAX_PDU_BYTES = 64 * 1024
MAX_PARTIAL = 1000  # concatenated inbound texts waiting for their other parts
TLV_RECEIPTED_ID = "receipted_message_id"
TLV_MESSAGE_STATE = "message_state"
STATE_DELIVERED = 2
_RECEIPT = re.compile(rb"id:(?P<id>\S+).*?stat:(?P<stat>\w+)", re.DOTALL)


class _Sequence:
    """smpplib asks its "client" for sequence numbers."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence


class SmppGateway:
    name = "smpp"

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        clock: Callable[[], int],
        system_type: str = "",
        enquire_link_s: float = 30.0,
        response_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._host = host
        self._port = port
        self._system_id = system_id
        self._password = password
        self._system_type = system_type
        self._clock = clock
        self._enquire_link_s = enquire_link_s
        self._timeout_s = response_timeout_s
        self._max_backoff_s = max_backoff_s
        self._seq = _Sequence()
        self._sink: CarrierSink | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._bound = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._partial: OrderedDict[tuple[str, int], dict[int, str]] = OrderedDict()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def bound(self) -> bool:
        return self._bound.is_set()

    async def start(self, sink: CarrierSink) -> None:
        self._sink = sink
        self._runner = asyncio.create_task(self._run())

    async def wait_bound(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bound.wait(), timeout_s)
        return self.bound

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for task in list(self._tasks):
            task.cancel()

    # --- sending ---

    async def send(self, sms: OutboundSms) -> str:
        if not self.bound or self._writer is None:
            raise GatewayError("not bound to the SMSC", temporary=True)
        alphanumeric = not sms.sender.startswith("+")
        reference = ""
        parts = sms.encoded.parts
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            pdu = smpp.make_pdu(
                "submit_sm",
                client=self._seq,
                source_addr_ton=TON_ALPHANUMERIC if alphanumeric else TON_INTERNATIONAL,
                source_addr_npi=0 if alphanumeric else NPI_E164,
                source_addr=sms.sender.lstrip("+"),
                dest_addr_ton=TON_INTERNATIONAL,
                dest_addr_npi=NPI_E164,
                destination_addr=sms.to.lstrip("+"),
                esm_class=ESM_UDHI if part.udh else 0,
                registered_delivery=1 if last and sms.want_report else 0,
                data_coding=sms.encoded.data_coding,
                short_message=part.udh + part.payload,
            )
            response = await self._request(pdu)
            if response.status != consts.SMPP_ESME_ROK:
                temporary = response.status in RETRY_LATER
                raise GatewayError(f"submit_sm refused: {response.get_status_desc()}", temporary)
            reference = _text(response.message_id)
        return reference

    async def _request(self, pdu: Any) -> Any:
        writer = self._writer
        if writer is None:
            raise GatewayError("not connected to the SMSC", temporary=True)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[pdu.sequence] = future
        try:
            writer.write(pdu.generate())
            await writer.drain()
            return await asyncio.wait_for(future, self._timeout_s)
        except (TimeoutError, ConnectionError) as error:
            raise GatewayError(f"no answer from the SMSC ({type(error).__name__})", temporary=True) from None
        finally:
            self._waiting.pop(pdu.sequence, None)

    # --- the session ---

    async def _run(self) -> None:
        backoff_s = 0.5
        while True:
            try:
                await self._session()
                backoff_s = 0.5
            except (OSError, asyncio.IncompleteReadError, GatewayError, ValueError) as error:
                log.warning("SMPP session to %s:%d ended: %s", self._host, self._port, error or type(error).__name__)
            finally:
                self._bound.clear()
                self._writer = None
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(ConnectionError("the SMPP session ended"))
            await asyncio.sleep(backoff_s * (0.5 + random.random()))
            backoff_s = min(backoff_s * 2, self._max_backoff_s)

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self._writer = writer
        keepalive: asyncio.Task[None] | None = None
        try:
            bind = smpp.make_pdu(
                "bind_transceiver",
                client=self._seq,
                system_id=self._system_id,
                password=self._password,
                system_type=self._system_type,
                interface_version=0x34,
            )
            writer.write(bind.generate())
            await writer.drain()
            response = await asyncio.wait_for(self._read(reader), self._timeout_s)
            if response.command != "bind_transceiver_resp" or response.status != consts.SMPP_ESME_ROK:
                raise GatewayError(f"bind refused: {response.get_status_desc()}", temporary=True)
            self._bound.set()
            log.info("bound to SMSC %s:%d as %s", self._host, self._port, self._system_id)
            keepalive = asyncio.create_task(self._keepalive())
            while True:
                await self._handle(await self._read(reader))
        finally:
            if keepalive is not None:
                keepalive.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> Any:
        header = await reader.readexactly(4)
        length = int.from_bytes(header, "big")
        if not 16 <= length <= MAX_PDU_BYTES:
            raise ValueError(f"bad PDU length {length}")
        data = header + await reader.readexactly(length - 4)
        return smpp.parse_pdu(data, client=self._seq, allow_unknown_opt_params=True)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._enquire_link_s)
            try:
                await self._request(smpp.make_pdu("enquire_link", client=self._seq))
            except GatewayError:
                if self._writer is not None:
                    self._writer.close()  # the reader sees the close and the session restarts
                return

    async def _handle(self, pdu: Any) -> None:
        if pdu.is_response() or pdu.command == "generic_nack":
            future = self._waiting.get(pdu.sequence)
            if future is not None and not future.done():
                future.set_result(pdu)
            return
        if pdu.command == "enquire_link":
            self._answer("enquire_link_resp", pdu)
        elif pdu.command == "deliver_sm":
            self._answer("deliver_sm_resp", pdu)
            self._spawn(self._delivered(pdu))
        elif pdu.command == "unbind":
            self._answer("unbind_resp", pdu)
            raise GatewayError("the SMSC unbound", temporary=True)
        else:
            self._answer("generic_nack", pdu, status=consts.SMPP_ESME_RINVCMDID)

    def _answer(self, command: str, request: Any, status: int = consts.SMPP_ESME_ROK) -> None:
        response = smpp.make_pdu(command, client=self._seq, status=status)
        response.sequence = request.sequence
        if self._writer is not None:
            self._writer.write(response.generate())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- what the SMSC delivers ---

    async def _delivered(self, pdu: Any) -> None:
        sink = self._sink
        if sink is None:
            return
        esm_class = int(pdu.esm_class or 0)
        message = bytes(pdu.short_message or b"")
        if esm_class & ESM_RECEIPT:
            report = _receipt(pdu, message)
            if report is not None:
                await sink.report(report)
            return
        concat = None
        if esm_class & ESM_UDHI:
            concat, message = sms_text.split_udh(message)
        text = sms_text.decode_payload(message, int(pdu.data_coding or 0))
        sender = "+" + _text(pdu.source_addr).lstrip("+")
        to = "+" + _text(pdu.destination_addr).lstrip("+")
        if concat is not None and concat.total > 1:
            whole = self._reassemble(sender, concat, text)
            if whole is None:
                return
            text = whole
        carrier_id = f"{sender}:{pdu.sequence}:{self._clock()}"
        await sink.inbound(CarrierSms(carrier_id, sender, to, text, self._clock()))

    def _reassemble(self, sender: str, concat: sms_text.Concat, text: str) -> str | None:
        key = (sender, concat.reference)
        parts = self._partial.setdefault(key, {})
        parts[concat.index] = text
        if len(parts) < concat.total:
            while len(self._partial) > MAX_PARTIAL:
                self._partial.popitem(last=False)
            return None
        del self._partial[key]
        return "".join(parts[index] for index in sorted(parts))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value or "")


def _receipt(pdu: Any, message: bytes) -> DeliveryReport | None:
    """A delivery receipt, from the TLVs if present, else from the v3.4 receipt text."""
    reference = _text(getattr(pdu, TLV_RECEIPTED_ID, None) or b"")
    state = getattr(pdu, TLV_MESSAGE_STATE, None)
    match = _RECEIPT.search(message)
    if not reference and match:
        reference = match.group("id").decode("ascii", errors="replace")
    if not reference:
        return None
    if state is not None:
        delivered = int(state) == STATE_DELIVERED
        detail = f"message_state {int(state)}"
    elif match:
        stat = match.group("stat").decode("ascii", errors="replace")
        delivered = stat == "DELIVRD"
        detail = stat
    else:
        return None
    return DeliveryReport(delivered=delivered, carrier_ref=reference, detail=detail)
