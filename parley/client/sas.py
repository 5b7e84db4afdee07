"""Interactive verification by short authentication string (vodozemac's SAS).

Both people run ``parley verify --sas`` at the same time. Each device makes an ephemeral
SAS key and sends it, end-to-end encrypted, to the other account's devices; the first
answer from one of them fixes the pair. Both derive the same 7 emoji and 3 four-digit
numbers from the shared secret; a server in the middle would have to make two different
secrets, which shows as different emoji. Once the person confirms they match, each
device sends a MAC (under the SAS secret) of the device keys it sees for its own
account; each checks the other's against the keys it sees for that contact, so the
comparison covers exactly the keys that then become verified.

The helpers at the top are pure; :func:`verify_by_sas` drives a device through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import vodozemac

from parley.client.contacts import device_keys
from parley.client.content import SasMac, SasStart, encode_content
from parley.client.device import Device, VerificationStep
from parley.core import handles, trust
from parley.errors import RemoteError, UsageError

# The 64 SAS emoji, in the order the Matrix specification gives them (index = 6 bits).
EMOJI = [
    "🐶 Dog",
    "🐱 Cat",
    "🦁 Lion",
    "🐎 Horse",
    "🦄 Unicorn",
    "🐷 Pig",
    "🐘 Elephant",
    "🐰 Rabbit",
    "🐼 Panda",
    "🐓 Rooster",
    "🐧 Penguin",
    "🐢 Turtle",
    "🐟 Fish",
    "🐙 Octopus",
    "🦋 Butterfly",
    "🌷 Flower",
    "🌳 Tree",
    "🌵 Cactus",
    "🍄 Mushroom",
    "🌏 Globe",
    "🌙 Moon",
    "☁️ Cloud",
    "🔥 Fire",
    "🍌 Banana",
    "🍎 Apple",
    "🍓 Strawberry",
    "🌽 Corn",
    "🍕 Pizza",
    "🎂 Cake",
    "❤️ Heart",
    "😀 Smiley",
    "🤖 Robot",
    "🎩 Hat",
    "👓 Glasses",
    "🔧 Spanner",
    "🎅 Santa",
    "👍 Thumbs Up",
    "☂️ Umbrella",
    "⌛ Hourglass",
    "⏰ Clock",
    "🎁 Gift",
    "💡 Light Bulb",
    "📕 Book",
    "✏️ Pencil",
    "📎 Paperclip",
    "✂️ Scissors",
    "🔒 Lock",
    "🔑 Key",
    "🔨 Hammer",
    "☎️ Telephone",
    "🏁 Flag",
    "🚂 Train",
    "🚲 Bicycle",
    "✈️ Aeroplane",
    "🚀 Rocket",
    "🏆 Trophy",
    "⚽ Ball",
    "🎸 Guitar",
    "🎺 Trumpet",
    "🔔 Bell",
    "⚓ Anchor",
    "🎧 Headphones",
    "📁 Folder",
    "📌 Pin",
]
INFO = "PARLEY_SAS_V1"


@dataclass(frozen=True)
class Shown:
    """What both people compare."""

    emoji: list[str]
    decimals: tuple[int, int, int]

    def __str__(self) -> str:
        return "  ".join(self.emoji) + "\n  " + " ".join(str(n) for n in self.decimals)


def sas_info(side_a: tuple[str, str, str], side_b: tuple[str, str, str]) -> str:
    """The info string both sides derive from: (handle, device, SAS key) of each, sorted."""
    return INFO + "|" + "|".join(",".join(side) for side in sorted([side_a, side_b]))


def keys_text(handle: str, devices: Sequence[trust.DeviceKeys]) -> str:
    keys = sorted(f"{d.device_id}:{d.identity_key}:{d.signing_key}" for d in devices)
    return handle + "|" + "|".join(keys)


def shown(established: vodozemac.EstablishedSas, info: str) -> Shown:
    generated = established.bytes(info)
    indices = list(generated.emoji_indices)
    return Shown([EMOJI[i] for i in indices], generated.decimals)


async def verify_by_sas(
    device: Device,
    raw_handle: str,
    confirm: Callable[[Shown], Awaitable[bool]],
    timeout_s: float = 120.0,
    poll_s: float = 0.5,
) -> list[trust.DeviceKeys]:
    """Compare a SAS with ``raw_handle``'s device; on a confirmed match, mark the contact
    verified and return the keys that now are. Raises :class:`UsageError` if the person
    says they differ, :class:`RemoteError` if the other side's MAC does not verify."""
    handle = handles.normalise(raw_handle)
    (result,) = await device.lookup([handle])
    if not result.on_parley:
        raise UsageError(f"{handle} is not on Parley: there are no keys to compare")
    sas = vodozemac.Sas()
    txn = device.new_id()
    mine = (device.handle, device.device_id, sas.public_key.to_base64())
    start = encode_content(SasStart(txn=txn, public_key=mine[2]))
    await device.channel.send_sealed(device.new_id(), [handle], result.devices, start, "control")

    deadline = time.monotonic() + timeout_s
    steps: list[VerificationStep] = []

    async def next_step(kind: type) -> VerificationStep:
        while True:
            for step in steps:
                if step.sender_handle == handle and isinstance(step.content, kind):
                    steps.remove(step)
                    return step
            if time.monotonic() > deadline:
                raise UsageError(f"{handle} did not take part in time; both must run parley verify --sas")
            steps.extend(e for e in await device.sync() if isinstance(e, VerificationStep))
            if not steps:
                await asyncio.sleep(poll_s)

    theirs_start = await next_step(SasStart)
    assert isinstance(theirs_start.content, SasStart)
    peer = theirs_start.sender_device
    established = sas.diffie_hellman(vodozemac.Curve25519PublicKey.from_base64(theirs_start.content.public_key))
    info = sas_info(mine, (handle, peer, theirs_start.content.public_key))
    if not await confirm(shown(established, info)):
        raise UsageError("the emoji differ: someone may be reading along; not verified")
    own_keys = device_keys(await device.own_devices())
    their_keys = device_keys((await device.lookup([handle]))[0].devices)
    mac = established.calculate_mac(keys_text(device.handle, own_keys), info + "|MAC|" + device.handle)
    known = device.trust.device(peer)
    if known is None:
        raise RemoteError(f"the device {peer} that answered is not in the directory; not verified")
    await device.channel.send_sealed(
        device.new_id(), [handle], [known[1]], encode_content(SasMac(txn=txn, keys_mac=mac)), "control"
    )
    theirs_mac = await next_step(SasMac)
    assert isinstance(theirs_mac.content, SasMac)
    try:
        established.verify_mac(keys_text(handle, their_keys), info + "|MAC|" + handle, theirs_mac.content.keys_mac)
    except vodozemac.SasException:
        raise RemoteError(f"the keys {handle}'s device sees differ from the ones here; not verified") from None
    await device.mark_verified(handle, their_keys)
    return their_keys
