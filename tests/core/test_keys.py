"""Key upload checks: signatures, sizes, bounds, domain separation (no I/O)."""

from __future__ import annotations

import pytest
import vodozemac

from parley.core import keys
from parley.wire import MAX_KEYS_HELD, SignedKey


def signed(account: vodozemac.Account, purpose: str, key_id: str, key: str | None = None) -> SignedKey:
    key = key or vodozemac.Curve25519SecretKey().public_key().to_base64()
    return SignedKey(key_id, key, account.sign(keys.prekey_message(purpose, key_id, key)).to_base64())


def test_a_signed_identity_passes_and_anything_else_fails() -> None:
    account = vodozemac.Account()
    identity, signing = account.curve25519_key.to_base64(), account.ed25519_key.to_base64()
    signature = account.sign(keys.identity_message(identity, signing)).to_base64()
    keys.check_identity(identity, signing, signature)
    other = vodozemac.Account()
    for bad in [
        (other.curve25519_key.to_base64(), signing, signature),  # another identity key
        (identity, other.ed25519_key.to_base64(), signature),  # another signer
        (identity, signing, other.sign(keys.identity_message(identity, signing)).to_base64()),
        ("!" * 43, signing, signature),  # not base64
        (identity, "A" * 43, "A" * 86),
    ]:
        with pytest.raises(keys.KeyProblem) as problem:
            keys.check_identity(*bad)
        assert problem.value.code == "bad_keys"


def test_prekeys_are_checked_deduplicated_and_bounded() -> None:
    account = vodozemac.Account()
    signing = account.ed25519_key.to_base64()
    one = signed(account, keys.ONE_TIME, "k1")
    fallback = signed(account, keys.FALLBACK, "f1")
    checked = keys.check_prekeys(signing, [one, one], fallback)
    assert checked.one_time == [one] and checked.fallback == fallback
    # A one-time key's signature cannot pass as a fallback key's (domain separation).
    as_fallback = SignedKey("k1", one.key, one.signature)
    with pytest.raises(keys.KeyProblem):
        keys.check_prekeys(signing, [], as_fallback)
    with pytest.raises(keys.KeyProblem) as problem:
        keys.check_prekeys(signing, [one], None, held=MAX_KEYS_HELD)
    assert problem.value.code == "too_many_keys"
    with pytest.raises(keys.KeyProblem):
        keys.check_prekeys(vodozemac.Account().ed25519_key.to_base64(), [one], None)
