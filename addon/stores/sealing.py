"""Sealed tokens: state the gateway hands to a client and accepts back only if it is untouched.

A stateless client (Codex sends `store: false`) keeps the conversation itself and sends it back
whole with every request. What Gemini needs back from an earlier answer (its thought signatures,
and which credential and model issued them) can ride along inside that conversation instead of
in a server-side store, if the client cannot read or alter it: here it is sealed with
AES-256-GCM (authenticated encryption from `cryptography`), so any gateway instance holding the
key opens it, on any machine, after a restart, and a changed, truncated or foreign token simply
does not open.

    token = sealer.seal("responses.reasoning", {"any": "JSON"})
    sealer.open("responses.reasoning", token)   # the value, or None — never an exception

The `purpose` is authenticated with the data, so a token made for one use is refused by another.
Token: "gws1." + base64url(key id (4 bytes) | nonce (12) | ciphertext | tag (16)). Several keys
may be given: the first seals, every one opens (key rotation).

Keys (`keys_from_text`, `load_or_create_key`): the `seal_key` option (any secret text, several
comma-separated), else a random key generated once and kept with the gateway's state (the state
file, or Redis when instances share state, so they all hold the same one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "gws1."
KEY_BYTES = 32
_NONCE = 12
_KEY_ID = 4
_MIN_RAW = _KEY_ID + _NONCE + 16  # an empty payload still has its tag
MAX_TOKEN = 1 << 20  # a sealed token longer than this (1 MiB) is not opened at all


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def key_from_text(text: str) -> bytes:
    """A key from option text: 32 bytes in base64/base64url/hex are used as they are; any other
    secret text is hashed (SHA-256) into a key, so a long passphrase works too."""
    text = text.strip()
    for decode in (_b64, bytes.fromhex):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == KEY_BYTES:
            return raw
    return hashlib.sha256(b"gateway seal key\x00" + text.encode()).digest()


def keys_from_text(text: str) -> list[bytes]:
    return [key_from_text(part) for part in text.split(",") if part.strip()]


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"gateway seal key id\x00" + key).digest()[:_KEY_ID]


class Sealer:
    """Seals and opens JSON values with the gateway's keys (the first seals, all open)."""

    __slots__ = ("_sealing", "_by_id")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"seal keys are {KEY_BYTES} bytes")
        self._sealing = (_key_id(keys[0]), AESGCM(keys[0]))
        self._by_id = {_key_id(k): AESGCM(k) for k in reversed(keys)}

    @staticmethod
    def is_sealed(token: str | None) -> bool:
        """Whether `token` looks like one of ours (it may still fail to open)."""
        return isinstance(token, str) and token.startswith(PREFIX)

    def seal(self, purpose: str, value: Any) -> str:
        key_id, aead = self._sealing
        nonce = os.urandom(_NONCE)
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = aead.encrypt(nonce, data, purpose.encode())
        return PREFIX + base64.urlsafe_b64encode(key_id + nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, token: Any) -> Any | None:
        """The sealed value, or None when the token is not ours, was altered, was sealed for
        another purpose or with a key this gateway does not hold."""
        if not self.is_sealed(token) or len(token) > MAX_TOKEN:
            return None
        try:
            raw = _b64(token[len(PREFIX):])
        except (ValueError, binascii.Error):
            return None
        if len(raw) < _MIN_RAW:
            return None
        aead = self._by_id.get(raw[:_KEY_ID])
        if aead is None:
            return None
        try:
            data = aead.decrypt(raw[_KEY_ID:_KEY_ID + _NONCE], raw[_KEY_ID + _NONCE:], purpose.encode())
            return json.loads(data)
        except (InvalidTag, ValueError):
            return None
