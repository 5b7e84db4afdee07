"""Client-side cost of end-to-end encryption, per message and per target device.

The server does no cryptography on the hot path (it stores and forwards opaque bodies),
so encryption costs only the clients. This measures, on one core, with the real client
code (``parley.client.olm.OlmMachine`` over two throwaway profiles):

    olm_only        vodozemac encrypt + decrypt of a 100-byte message, nothing stored
    with_storage    seal + open as the client does it: each ratchet step pickled
                    (encrypted under the pickle key) and committed to the profile; once
                    with the commit's fsync (which a received message pays for its history
                    row anyway), once without it
    session_setup   claimed key -> outbound session -> first (pre-key) message opened

Usage: python bench/crypto_cost.py [--messages N]. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import vodozemac

from parley.client.olm import OlmMachine
from parley.client.profile import Profile
from parley.wire import ClaimedKey, DeviceInfo

PLAINTEXT = os.urandom(100)


def clock() -> int:
    return time.time_ns() // 1_000_000


def machine(name: str) -> tuple[Profile, OlmMachine, DeviceInfo]:
    profile = Profile.create(name)
    olm = OlmMachine.create(profile, clock)
    info = DeviceInfo(name, name, 0, identity_key=olm.identity_key, signing_key=olm.signing_key)
    return profile, olm, info


def per_call_us(action: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            action()
        samples.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        alice_profile, alice, alice_info = machine("alice")
        bob_profile, bob, bob_info = machine("bob")
        upload = bob.prekeys(40, new_fallback=True)
        bob.published()

        def claimed(n: int) -> ClaimedKey:
            key = upload.one_time_keys[n]
            return ClaimedKey("bob", key.key_id, key.key, key.signature)

        setups = iter(range(1, 40))

        def setup() -> None:
            with alice_profile.batch():
                alice.reset(bob_info)
                alice.start_session(bob_info, claimed(next(setups)))
                body = alice.seal(bob_info, PLAINTEXT)
            with bob_profile.batch():
                bob.open(alice_info, body)

        alice.start_session(bob_info, claimed(0))
        with bob_profile.batch():
            bob.open(alice_info, alice.seal(bob_info, PLAINTEXT))
        with alice_profile.batch():  # a reply, so Alice's messages are normal ones from now on
            alice.open(bob_info, bob.seal(alice_info, PLAINTEXT))

        def stored_round() -> None:
            with alice_profile.batch():
                body = alice.seal(bob_info, PLAINTEXT)
            with bob_profile.batch():
                bob.open(alice_info, body)

        sender, receiver = vodozemac.Account(), vodozemac.Account()
        receiver.generate_one_time_keys(1)
        outbound = sender.create_outbound_session(receiver.curve25519_key, next(iter(receiver.one_time_keys.values())))
        first = outbound.encrypt(PLAINTEXT).to_pre_key()
        assert first is not None
        inbound, _ = receiver.create_inbound_session(sender.curve25519_key, first)
        outbound.decrypt(inbound.encrypt(b"ack"))

        def no_fsync(action: Callable[[], object], count: int) -> float:
            # The commit's fsync is paid for the history row anyway; this isolates the
            # cost of the crypto state itself (pickling and writing the session).
            for profile in (alice_profile, bob_profile):
                profile.db.execute("PRAGMA synchronous=OFF")
            try:
                return per_call_us(action, count)
            finally:
                for profile in (alice_profile, bob_profile):
                    profile.db.execute("PRAGMA synchronous=FULL")

        def bare_round() -> None:
            inbound.decrypt(outbound.encrypt(PLAINTEXT))

        result = {
            "plaintext_bytes": len(PLAINTEXT),
            "olm_only_us_per_message_per_device": round(per_call_us(bare_round, args.messages), 1),
            "with_storage_us_per_message_per_device": round(per_call_us(stored_round, args.messages // 4), 1),
            "with_storage_no_fsync_us_per_message_per_device": round(no_fsync(stored_round, args.messages), 1),
            "session_setup_us": round(per_call_us(setup, 7), 1),
            "sealed_body_bytes": len(alice.seal(bob_info, PLAINTEXT)),
            "note": "per target device: a message to Bob with Alice's laptop as a second target costs twice the seal",
        }
        alice_profile.close()
        bob_profile.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
