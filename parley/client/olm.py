"""This device's Olm account and its pairwise sessions, kept encrypted in the profile.

Implements :class:`parley.client.codec.EnvelopeCodec` with vodozemac (never a hand-rolled
ratchet). Sessions are keyed by the peer device's Curve25519 identity key; a peer may
have several (both sides started one at once, or one side started afresh after a
failure): bodies are opened with whichever matches, and sealed with the one used last.

State changes (a ratchet step, a one-time key used up) are written to the profile's
database in the caller's transaction, so the history row and the session that decrypted
it commit together. Pickles are vodozemac's, encrypted and authenticated under the
profile's 32-byte pickle key. Nothing here logs a key or a plaintext.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import vodozemac

from parley.client.profile import Profile
from parley.core import keys
from parley.errors import DecryptFailed, ProfileError, ProtocolError
from parley.wire import (
    MAX_KEYS_PER_UPLOAD,
    ClaimedKey,
    DeviceInfo,
    KeyUpload,
    RegisterRequest,
    Sealed,
    SignedKey,
    frame_encode,
    sealed_decoder,
)

ACCOUNT_SETTING = "olm_account"
SESSIONS_PER_PEER = 5
# vodozemac keeps at most 50 one-time keys; staying below leaves room for keys that were
# claimed but whose first message has not arrived yet.
ONE_TIME_KEYS_TARGET = 40
ONE_TIME_KEYS_LOW = 10


def identity_signature(account: vodozemac.Account) -> str:
    identity, signing = account.curve25519_key.to_base64(), account.ed25519_key.to_base64()
    return account.sign(keys.identity_message(identity, signing)).to_base64()


def signed_prekeys(account: vodozemac.Account, one_time: int, new_fallback: bool) -> KeyUpload:
    """Generate and sign one-time keys (and a fallback key) on ``account``; return every
    unpublished one, as the server takes them."""
    if one_time > 0:
        account.generate_one_time_keys(one_time)
    if new_fallback:
        account.generate_fallback_key()  # type: ignore[attr-defined]  # missing from the stubs

    def signed(purpose: str, key_id: str, key: vodozemac.Curve25519PublicKey) -> SignedKey:
        text = key.to_base64()
        return SignedKey(key_id, text, account.sign(keys.prekey_message(purpose, key_id, text)).to_base64())

    unpublished: dict[str, vodozemac.Curve25519PublicKey] = account.fallback_key  # type: ignore[attr-defined]
    fallback = next(iter(unpublished.items()), None)
    return KeyUpload(
        one_time_keys=[signed(keys.ONE_TIME, i, k) for i, k in account.one_time_keys.items()][:MAX_KEYS_PER_UPLOAD],
        fallback_key=signed(keys.FALLBACK, *fallback) if fallback else None,
    )


def register_request(
    account: vodozemac.Account, handle: str, code: str, device_name: str, one_time: int = ONE_TIME_KEYS_TARGET
) -> RegisterRequest:
    """A registration for the device that owns ``account``, with its keys signed (the
    caller marks them published once the server accepted them)."""
    prekeys = signed_prekeys(account, one_time, new_fallback=True)
    return RegisterRequest(
        handle=handle,
        code=code,
        device_name=device_name,
        identity_key=account.curve25519_key.to_base64(),
        signing_key=account.ed25519_key.to_base64(),
        signature=identity_signature(account),
        one_time_keys=prekeys.one_time_keys,
        fallback_key=prekeys.fallback_key,
    )


class OlmMachine:
    def __init__(self, profile: Profile, account: vodozemac.Account, clock: Callable[[], int]) -> None:
        self._profile = profile
        self._db = profile.db
        self._account = account
        self._key = profile.pickle_key()
        self._clock = clock
        self._stale: set[str] = set()  # peers whose sessions failed: seal only with a new one
        self.one_time_keys_used = 0  # inbound sessions started since this process began

    @classmethod
    def create(cls, profile: Profile, clock: Callable[[], int]) -> OlmMachine:
        key = profile.pickle_key(create=True)
        account = vodozemac.Account()
        profile.set_many({ACCOUNT_SETTING: account.pickle(key)})
        return cls(profile, account, clock)

    @classmethod
    def load(cls, profile: Profile, clock: Callable[[], int]) -> OlmMachine:
        pickled = profile.get(ACCOUNT_SETTING)
        if pickled is None:
            raise ProfileError(f"profile {profile.name!r} has no keys (made before encryption?); register again")
        try:
            account = vodozemac.Account.from_pickle(pickled, profile.pickle_key())
        except vodozemac.PickleException:
            raise ProfileError(f"profile {profile.name!r}: the keys do not open with its key file") from None
        return cls(profile, account, clock)

    # --- this device's keys ---

    @property
    def identity_key(self) -> str:
        return self._account.curve25519_key.to_base64()

    @property
    def signing_key(self) -> str:
        return self._account.ed25519_key.to_base64()

    def identity_signature(self) -> str:
        return identity_signature(self._account)

    def register_request(self, handle: str, code: str, device_name: str) -> RegisterRequest:
        """This device's registration, its keys signed and saved (call :meth:`published`
        once the server accepted it)."""
        with self._profile.batch():
            self._reload_account()
            request = register_request(self._account, handle, code, device_name)
            self._save_account()
        return request

    def prekeys(self, one_time: int, new_fallback: bool) -> KeyUpload:
        """Keys to upload: ``one_time`` fresh one-time keys (plus any generated earlier and
        not yet published), and a new fallback key if asked. Call :meth:`published` once
        the server has them."""
        with self._profile.batch():
            self._reload_account()
            upload = signed_prekeys(self._account, one_time, new_fallback)
            self._save_account()
        return upload

    def published(self) -> None:
        with self._profile.batch():
            self._reload_account()
            self._account.mark_keys_as_published()
            self._save_account()

    # --- the codec ---

    def needs_session(self, device: DeviceInfo) -> bool:
        if device.identity_key in self._stale:
            return True
        row = self._db.execute("SELECT 1 FROM olm_sessions WHERE peer_key = ? LIMIT 1", (device.identity_key,))
        return row.fetchone() is None

    def start_session(self, device: DeviceInfo, claimed: ClaimedKey) -> None:
        purpose = keys.FALLBACK if claimed.fallback else keys.ONE_TIME
        message = keys.prekey_message(purpose, claimed.key_id, claimed.key)
        if not keys.verify(device.signing_key, message, claimed.signature):
            raise ProtocolError(f"the server handed out a key for device {device.device_id} that it did not sign")
        try:
            session = self._account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_base64(device.identity_key),
                vodozemac.Curve25519PublicKey.from_base64(claimed.key),
            )
        except (vodozemac.KeyException, ValueError):
            raise ProtocolError(f"device {device.device_id} has a malformed key") from None
        self._stale.discard(device.identity_key)
        self._remember(device.identity_key, session)

    def seal(self, device: DeviceInfo, plaintext: bytes) -> bytes:
        sessions = self._peer(device.identity_key, limit=1)
        if not sessions:
            raise ProtocolError(f"no session with device {device.device_id}; claim a key first")
        session = sessions[0]
        message_type, data = session.encrypt(plaintext).to_parts()
        self._remember(device.identity_key, session)
        return frame_encode(Sealed(scheme="olm", type=message_type, data=data))

    def open(self, sender: DeviceInfo, body: bytes) -> bytes:
        try:
            sealed = sealed_decoder.decode(body)
            message = vodozemac.AnyOlmMessage.from_parts(sealed.type, sealed.data)
        except (msgspec.DecodeError, msgspec.ValidationError, vodozemac.DecodeException, ValueError):
            raise DecryptFailed("the body is not an Olm message") from None
        sessions = self._peer(sender.identity_key)
        pre_key = message.to_pre_key()
        for session in sessions:
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plaintext = session.decrypt(message)
            except (vodozemac.OlmDecryptionException, ValueError):
                continue
            self._remember(sender.identity_key, session)
            return plaintext
        if pre_key is None:
            raise DecryptFailed("no session with the sender's device opens it")
        self._reload_account()
        try:
            peer = vodozemac.Curve25519PublicKey.from_base64(sender.identity_key)
            session, plaintext = self._account.create_inbound_session(peer, pre_key)
        except (vodozemac.SessionCreationException, vodozemac.KeyException, ValueError):
            raise DecryptFailed("it starts a session this device cannot accept") from None
        self._save_account()  # the one-time key it used is gone for good
        self.one_time_keys_used += 1
        self._remember(sender.identity_key, session)
        return plaintext

    def reset(self, device: DeviceInfo) -> None:
        """The next seal for ``device`` starts a new session (from a fresh claim). The old
        ones are kept to open what the peer already sent on them."""
        self._stale.add(device.identity_key)

    # --- self-repair (parley.client.doctor) ---

    def damaged_sessions(self) -> list[tuple[str, str]]:
        """(peer key, session id) of every stored session that no longer unpickles."""
        damaged = []
        for peer_key, session_id, pickled in self._db.execute("SELECT peer_key, session_id, pickle FROM olm_sessions"):
            try:
                vodozemac.Session.from_pickle(pickled, self._key)
            except (vodozemac.PickleException, ValueError):
                damaged.append((peer_key, session_id))
        return damaged

    def drop_damaged_sessions(self) -> int:
        """Delete sessions that no longer open; the next message either way starts a new
        one (a claim here, a pre-key message from the peer), and what the peer sent on
        the old one is asked for again. Return how many were dropped."""
        with self._profile.batch():
            damaged = self.damaged_sessions()
            self._db.executemany("DELETE FROM olm_sessions WHERE peer_key = ? AND session_id = ?", damaged)
        for peer_key, _ in damaged:
            self._stale.add(peer_key)
        return len(damaged)

    # --- persistence ---

    # Sessions and the account are read from the database at each use, inside the caller's
    # transaction (BEGIN IMMEDIATE), never cached: `parley watch` and `parley send` may
    # run on one profile at once, and each must step the ratchet the other last saved.

    def _peer(self, peer_key: str, limit: int = SESSIONS_PER_PEER) -> list[vodozemac.Session]:
        """The sessions with a peer device, the one used last first."""
        rows = self._db.execute(
            "SELECT pickle FROM olm_sessions WHERE peer_key = ? ORDER BY used_ms DESC, rowid DESC LIMIT ?",
            (peer_key, limit),
        ).fetchall()
        sessions = []
        for (pickled,) in rows:
            try:
                sessions.append(vodozemac.Session.from_pickle(pickled, self._key))
            except vodozemac.PickleException:
                continue  # a damaged session: the peer's next message heals it by a resend
        return sessions

    def _remember(self, peer_key: str, session: vodozemac.Session) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO olm_sessions VALUES (?, ?, ?, ?)",
            (peer_key, session.session_id, session.pickle(self._key), self._clock()),
        )
        self._db.execute(
            "DELETE FROM olm_sessions WHERE peer_key = ? AND session_id NOT IN (SELECT session_id FROM olm_sessions"
            " WHERE peer_key = ? ORDER BY used_ms DESC, rowid DESC LIMIT ?)",
            (peer_key, peer_key, SESSIONS_PER_PEER),
        )

    def _reload_account(self) -> None:
        pickled = self._profile.get(ACCOUNT_SETTING)
        if pickled is not None:
            self._account = vodozemac.Account.from_pickle(pickled, self._key)

    def _save_account(self) -> None:
        self._profile.set_many({ACCOUNT_SETTING: self._account.pickle(self._key)})
