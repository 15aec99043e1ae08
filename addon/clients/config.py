"""The clients file (`--set clients=clients.yaml`): who may call the gateway, on which models, how much.

    clients:
      - name: alice                  # label in logs, metrics, mitmweb, /gateway/clients
        key_sha256: 9f86d0...        # hex SHA-256 of the key (or a list, to accept two during a rotation)
        # key_env: ALICE_KEY         # or: the key itself in this environment variable
        models: ["gpt-4o*"]          # allow-list of client model names, `*` = any run; absent = all
        rpm: 60                      # requests per minute (any 60 s window)
        tokens_per_day: 2000000      # prompt + completion tokens per UTC day
        max_concurrent: 8            # requests open at once

Only digests are kept: a `key_env` key is hashed when the file loads and the text dropped. The
counters belong to the name (see ledger.py), so a new key or new limits never reset them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")  # a metrics label, a log value, a Redis key part
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def key_digest(key: str) -> bytes:
    """SHA-256 of a presented key (bytes as sent: a header that is not UTF-8 still hashes)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    key_sha256: str | list[str] | None = None
    key_env: str | None = None
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("a name is 1-64 of A-Z a-z 0-9 . _ @ + - (it labels logs and metrics)")
        return v

    @field_validator("key_sha256")
    @classmethod
    def _digests(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        values = [v] if isinstance(v, str) else v
        out = [d.strip().lower() for d in values]
        if not out or not all(DIGEST.match(d) for d in out):
            raise ValueError("key_sha256 is the 64-digit hex SHA-256 of the key (scripts/clients add writes it)")
        return out

    @model_validator(mode="after")
    def _one_key_source(self) -> _Entry:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_sha256 and key_env")
        return self


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    digests: tuple[bytes, ...]
    models: tuple[str, ...] | None = None  # allow-list patterns; None = every model
    rpm: int | None = None
    tokens_per_day: int | None = None
    max_concurrent: int | None = None
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def allows(self, model: str) -> bool:
        return self.models is None or any(p.fullmatch(model) for p in self._patterns)

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tokens_per_day or self.max_concurrent)

    def limits(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tokens_per_day": self.tokens_per_day, "max_concurrent": self.max_concurrent}


@dataclass(slots=True)
class ClientsFile:
    clients: list[Client] = field(default_factory=list)
    by_name: dict[str, Client] = field(default_factory=dict)
    by_digest: dict[bytes, Client] = field(default_factory=dict)

    def find(self, key: str) -> Client | None:
        """The client whose key this is. A dict lookup by the key's SHA-256: what the lookup's
        timing could reveal is about the digest, and nobody can aim a guess at a digest without a
        preimage of SHA-256. (ClientGate.authenticate compares the found digest once more with
        hmac.compare_digest.)"""
        return self.by_digest.get(key_digest(key))


def parse_clients(data: Any, env: dict[str, str] | None = None) -> ClientsFile:
    """The file's YAML document -> ClientsFile. Raises ValueError naming the entry at fault."""
    env = os.environ if env is None else env
    if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
        raise ValueError("a clients file is a mapping with a `clients:` list")
    extra = set(data) - {"clients"}
    if extra:
        raise ValueError(f"unknown top-level key(s) {sorted(extra)}; only `clients:` is read")
    out = ClientsFile()
    for i, raw in enumerate(data["clients"]):
        where = f"clients[{i}]" + (f" ({raw['name']})" if isinstance(raw, dict) and "name" in raw else "")
        try:
            entry = _Entry.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{where}: {problems}") from None
        if entry.key_env is not None:
            key = env.get(entry.key_env, "")
            if not key:
                raise ValueError(f"{where}: the environment variable {entry.key_env} (key_env) is not set")
            digests: tuple[bytes, ...] = (key_digest(key),)
        else:
            digests = tuple(bytes.fromhex(d) for d in entry.key_sha256 or ())
        models = tuple(entry.models) if entry.models is not None else None
        client = Client(entry.name, digests, models, entry.rpm, entry.tokens_per_day, entry.max_concurrent,
                        tuple(_glob(p) for p in models or ()))
        if client.name in out.by_name:
            raise ValueError(f"{where}: the name {client.name} is used twice")
        for d in digests:
            other = out.by_digest.get(d)
            if other is not None:
                raise ValueError(f"{where}: the same key as {other.name} (each client needs its own key)")
            out.by_digest[d] = client
        out.by_name[client.name] = client
        out.clients.append(client)
    return out
