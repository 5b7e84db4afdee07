"""The server's key for "left" records: made once, private (0600), the same after a
restart, and its signatures verify under the key clients pin."""

from __future__ import annotations

import os
from pathlib import Path

from parley.client.leaving import check_left
from parley.core.leaving import Left, LeftCheck
from parley.server.leaving import LeftSigner, left_record


def test_key_is_private_stable_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "left-signing.key"
    signer = LeftSigner(str(path), b"s" * 32)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "ed25519" not in path.read_text().lower()  # pickled under the server secret, opaque
    again = LeftSigner(str(path), b"s" * 32)
    assert again.public_key == signer.public_key
    record = left_record(signer.sign(Left("tel:+14155550111", 5, "deregistered", "mailto:bob@example.com")))
    assert check_left(record, "tel:+14155550111", again.public_key, 0) is LeftCheck.VALID
    other = LeftSigner(str(tmp_path / "other.key"), b"t" * 32)
    assert check_left(record, "tel:+14155550111", other.public_key, 0) is LeftCheck.FORGED
