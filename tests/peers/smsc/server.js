// An SMSC for Parley's tests, on node-smpp: the independent SMPP v3.4 peer.
//
//   node server.js PORT SYSTEM_ID PASSWORD
//
// Serves bind_transceiver, submit_sm (answering with a message id and, when asked, a
// delivery receipt), enquire_link and unbind. Prints one JSON line per event on stdout:
//   {"event":"listening","port":N}  {"event":"bound","system_id":...}
//   {"event":"mt","from":...,"to":...,"text":...,"parts":N,"ids":[...]}  (a whole text)
// Reads one JSON command per line on stdin:
//   {"cmd":"mo","from":"+1...","to":"+1...","text":"..."}   a handset texts a number
//   {"cmd":"reject","count":N}     answer the next N submits with ESME_RSUBMITFAIL
//   {"cmd":"throttle","count":N}   answer the next N submits with ESME_RTHROTTLED
//   {"cmd":"fail_receipts","count":N}  the next N receipts say UNDELIV
//   {"cmd":"drop"}                 close every session (the ESME must bind again)
"use strict";

const smpp = require("smpp");
const readline = require("readline");

const [port, systemId, password] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const sessions = new Set();
const partial = new Map();
const plan = { reject: 0, throttle: 0, failReceipts: 0 };
let nextId = 1;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function plus(address) {
  return "+" + String(address).replace(/^\+/, "");
}

function receipt(session, pdu, id) {
  const stat = plan.failReceipts > 0 ? (plan.failReceipts--, "UNDELIV") : "DELIVRD";
  const text = `id:${id} sub:001 dlvrd:${stat === "DELIVRD" ? "001" : "000"} submit date:2401010000 ` +
    `done date:2401010000 stat:${stat} err:000 text:`;
  session.deliver_sm({
    source_addr: pdu.destination_addr,
    destination_addr: pdu.source_addr,
    esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
    short_message: text,
  });
}

function submitted(session, pdu) {
  if (plan.reject > 0) {
    plan.reject--;
    session.send(pdu.response({ command_status: smpp.ESME_RSUBMITFAIL }));
    return;
  }
  if (plan.throttle > 0) {
    plan.throttle--;
    session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    return;
  }
  const id = "m" + nextId++;
  session.send(pdu.response({ message_id: id }));
  const message = pdu.short_message || {};
  const text = typeof message.message === "string" ? message.message : String(message.message || message);
  const concat = (message.udh || []).find((udh) => udh[0] === 0x00 || udh[0] === 0x08);
  const from = plus(pdu.source_addr);
  const to = plus(pdu.destination_addr);
  if (concat) {
    const [ref, total, index] = concat[0] === 0x00 ? [concat[2], concat[3], concat[4]] : [concat[2] * 256 + concat[3], concat[4], concat[5]];
    const key = `${from}|${to}|${ref}`;
    const parts = partial.get(key) || { total, texts: {}, ids: [] };
    parts.texts[index] = text;
    parts.ids.push(id);
    partial.set(key, parts);
    if (Object.keys(parts.texts).length === total) {
      partial.delete(key);
      const whole = Object.keys(parts.texts).sort((a, b) => a - b).map((i) => parts.texts[i]).join("");
      emit({ event: "mt", from, to, text: whole, parts: total, ids: parts.ids, data_coding: pdu.data_coding });
    }
  } else {
    emit({ event: "mt", from, to, text, parts: 1, ids: [id], data_coding: pdu.data_coding });
  }
  if (pdu.registered_delivery) {
    setTimeout(() => receipt(session, pdu, id), 50);
  }
}

const server = smpp.createServer({ debug: false }, (session) => {
  session.on("bind_transceiver", (pdu) => {
    session.pause();
    if (pdu.system_id !== systemId || pdu.password !== password) {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      emit({ event: "bind_refused", system_id: pdu.system_id });
      session.close();
      return;
    }
    session.send(pdu.response());
    sessions.add(session);
    emit({ event: "bound", system_id: pdu.system_id });
    session.resume();
  });
  session.on("submit_sm", (pdu) => submitted(session, pdu));
  session.on("enquire_link", (pdu) => session.send(pdu.response()));
  session.on("unbind", (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on("close", () => sessions.delete(session));
  session.on("error", () => sessions.delete(session));
});

server.listen(port, "127.0.0.1", () => emit({ event: "listening", port }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    emit({ event: "bad_command", line });
    return;
  }
  if (command.cmd === "mo") {
    for (const session of sessions) {
      session.deliver_sm({
        source_addr: command.from.replace(/^\+/, ""),
        destination_addr: command.to.replace(/^\+/, ""),
        short_message: command.text,
      });
      break;
    }
    emit({ event: "mo_sent", sessions: sessions.size });
  } else if (command.cmd === "reject") {
    plan.reject = command.count || 1;
  } else if (command.cmd === "throttle") {
    plan.throttle = command.count || 1;
  } else if (command.cmd === "fail_receipts") {
    plan.failReceipts = command.count || 1;
  } else if (command.cmd === "drop") {
    for (const session of sessions) session.close();
    sessions.clear();
    emit({ event: "dropped" });
  }
  emit({ event: "ok", cmd: command.cmd });
});
process.stdin.on("end", () => process.exit(0));
