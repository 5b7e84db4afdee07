"""Every exception Parley raises on purpose, in one tree.

    ParleyError                 base: a person sees ``str(error)`` as one line
    ├── LocalError              this side is wrong: bad input, bad config, no profile
    │   ├── InvalidHandle       not a valid phone number or e-mail address
    │   ├── ProfileError        a device profile is missing, locked or corrupt
    │   └── UsageError          a command was asked for something it cannot do
    └── RemoteError             the other side said no, or broke the protocol
        ├── ProtocolError       bytes from the peer that do not decode or validate
    ├── DecryptFailed       an end-to-end body that does not decode, authenticate or decrypt
        ├── Unreachable         the server could not be reached at all
        └── Rejected            the server answered with an error code
            ├── StaleDevices    the send named the wrong device set (carries the diff)
            └── RateLimited     too many requests (carries retry_after_s)

The server raises :class:`ApiError`, which its HTTP and WebSocket layers turn into a
status (or close code) and an :class:`parley.wire.ErrorBody`; the client turns that body
back into a :class:`Rejected`. Error *codes* are the stable strings in
:class:`parley.wire.ErrorCode`; messages are for people and may change.
"""

from __future__ import annotations


class ParleyError(Exception):
    """Base of all deliberate Parley errors."""


class LocalError(ParleyError):
    """The problem is on this side: input, configuration, local state."""


class InvalidHandle(LocalError):
    """A handle that is not a valid E.164 phone number or e-mail address."""


class ProfileError(LocalError):
    """A device profile that does not exist, or whose state cannot be read."""


class UsageError(LocalError):
    """A request that cannot be carried out as asked."""


class RemoteError(ParleyError):
    """The problem came from the other side of a connection."""


class ProtocolError(RemoteError):
    """The peer sent something that does not decode or validate."""


class DecryptFailed(RemoteError):
    """An envelope body that is not a well-formed Olm message, was tampered with, or
    belongs to a session this device does not have. The device shows "could not
    decrypt" and asks the sender's device to send it again; it never crashes."""


class Unreachable(RemoteError):
    """The server could not be reached."""


class Rejected(RemoteError):
    """The server refused a request with a stable error code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class StaleDevices(Rejected):
    """A send named a device set that no longer matches the directory."""

    def __init__(self, message: str, missing: list[str], extra: list[str]) -> None:
        super().__init__("stale_devices", message, 409)
        self.missing = missing
        self.extra = extra


class RateLimited(Rejected):
    """Too many requests of one kind; try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__("rate_limited", message, 429)
        self.retry_after_s = retry_after_s


class ApiError(Exception):
    """Raised inside the server; becomes an HTTP status or WebSocket close code."""

    def __init__(self, status: int, code: str, message: str, **detail: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
