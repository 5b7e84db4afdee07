"""Device keys: what each signature covers, and whether an upload may be stored.

A device has a Curve25519 identity key (what senders encrypt to) and an Ed25519 signing
key. It signs its identity key, and every one-time and fallback key it uploads, with the
signing key. The server checks every signature before it stores anything; the client
checks a claimed key's signature again before it starts a session with it, so a server
cannot hand out a key of its own making for a device it did not register.

Signatures cover a domain-separated message, so a signature made for one purpose can
never be replayed as another. The checks are pure computation (vodozemac's Ed25519),
passed everything they need; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import vodozemac

from parley.wire import MAX_KEYS_HELD, MAX_KEYS_PER_UPLOAD, SignedKey

IDENTITY = "parley.identity.v1"
ONE_TIME = "parley.one-time-key.v1"
FALLBACK = "parley.fallback-key.v1"


class KeyProblem(Exception):
    """An upload that must not be stored; ``code`` is a :class:`parley.wire.ErrorCode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def identity_message(identity_key: str, signing_key: str) -> bytes:
    return f"{IDENTITY}\x00{identity_key}\x00{signing_key}".encode()


def prekey_message(purpose: str, key_id: str, key: str) -> bytes:
    return f"{purpose}\x00{key_id}\x00{key}".encode()


def verify(signing_key: str, message: bytes, signature: str) -> bool:
    """True if ``signature`` is ``signing_key``'s Ed25519 signature of ``message``."""
    try:
        public = vodozemac.Ed25519PublicKey.from_base64(signing_key)
        public.verify_signature(message, vodozemac.Ed25519Signature.from_base64(signature))
    except (vodozemac.KeyException, vodozemac.SignatureException, ValueError):
        return False
    return True


def is_curve25519(key: str) -> bool:
    try:
        vodozemac.Curve25519PublicKey.from_base64(key)
    except (vodozemac.KeyException, ValueError):
        return False
    return True


@dataclass(frozen=True)
class PreKeys:
    """A checked upload: one-time keys (duplicates by id dropped) and a fallback key."""

    one_time: list[SignedKey]
    fallback: SignedKey | None


def check_identity(identity_key: str, signing_key: str, signature: str) -> None:
    """Raise :class:`KeyProblem` unless the identity key is well formed and signed."""
    if not is_curve25519(identity_key):
        raise KeyProblem("bad_keys", "the identity key is not a Curve25519 public key")
    if not verify(signing_key, identity_message(identity_key, signing_key), signature):
        raise KeyProblem("bad_keys", "the identity key's signature does not verify with the signing key")


def check_prekeys(
    signing_key: str, one_time: Sequence[SignedKey], fallback: SignedKey | None, held: int = 0
) -> PreKeys:
    """Check an upload of one-time keys and a fallback key for a device that holds
    ``held`` unclaimed one-time keys; return what to store or raise :class:`KeyProblem`."""
    if len(one_time) > MAX_KEYS_PER_UPLOAD or held + len(one_time) > MAX_KEYS_HELD:
        raise KeyProblem(
            "too_many_keys",
            f"a device may hold at most {MAX_KEYS_HELD} one-time keys ({held} held, {len(one_time)} uploaded)",
        )
    unique: dict[str, SignedKey] = {}
    for key in one_time:
        _check_signed(signing_key, ONE_TIME, key, "one-time")
        unique.setdefault(key.key_id, key)
    if fallback is not None:
        _check_signed(signing_key, FALLBACK, fallback, "fallback")
    return PreKeys(list(unique.values()), fallback)


def _check_signed(signing_key: str, purpose: str, key: SignedKey, what: str) -> None:
    if not is_curve25519(key.key):
        raise KeyProblem("bad_keys", f"{what} key {key.key_id} is not a Curve25519 public key")
    if not verify(signing_key, prekey_message(purpose, key.key_id, key.key), key.signature):
        raise KeyProblem("bad_keys", f"{what} key {key.key_id}: the signature does not verify")
