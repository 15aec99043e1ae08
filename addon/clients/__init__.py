"""Per-client keys: who may call the gateway, on which models, how often and how much.

`--set clients=clients.yaml` (config.py) names each client with the SHA-256 of its key, its model
allow-list and its limits (requests per minute, tokens per UTC day, requests open at once). The
engine asks the `ClientGate` (gate.py) at its few decision points; the counters live in a `Ledger`:
this process's memory and state file (ledger.py), or Redis shared by every instance (redis_ledger.py).
`scripts/clients` (cli.py) adds clients and prints their keys once.
"""

from __future__ import annotations

from typing import Any

from ..config.reloading import ReloadingFile
from .config import Client, ClientsFile, key_digest, parse_clients
from .gate import ClientGate
from .ledger import Ledger, MemoryLedger

__all__ = ["Client", "ClientGate", "ClientsFile", "Ledger", "build_gate", "key_digest", "load_clients",
           "parse_clients"]


def load_clients(path: str) -> ReloadingFile[ClientsFile]:
    """Raises (ValueError, OSError, YAML errors) when the file cannot be used at startup."""
    return ReloadingFile(path, parse_clients)


def build_gate(source: Any, shared: Any) -> ClientGate:
    """The gate over `source` with its counters where the rest of the state lives: the state file,
    or Redis when `shared` is the Redis state (it has no local state file)."""
    if shared.state_file is None:
        from .redis_ledger import RedisLedger

        return ClientGate(source, RedisLedger(shared))
    return ClientGate(source, MemoryLedger(shared.state_file))
