"""Golden JSON files for the pure translator tests.

`golden(path, actual)` compares with the stored file; `UPDATE_GOLDEN=1` rewrites it instead
(review the diff before committing). Random ids and timestamps are normalised first.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

_IDS = [
    (re.compile(r"\b(chatcmpl|cmpl)-[0-9a-f]{24}\b"), r"\1-<id>"),
    (re.compile(r"\b(resp|msg|rs|fc|ctc|ws|tsc)_[0-9a-f]{24}\b"), r"\1_<id>"),
    (re.compile(r"\b(call|sig)_[0-9a-f]{24}\b"), r"\1_<id>"),  # tool-call ids, stored-signature keys
]
_TIMESTAMPS = ("created", "created_at")


def normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (0 if k in _TIMESTAMPS and isinstance(v, int) else normalise(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    if isinstance(obj, str):
        for pattern, repl in _IDS:
            obj = pattern.sub(repl, obj)
    return obj


def golden(path: Path, actual: Any) -> None:
    if UPDATE:
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
        return
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == json.loads(path.read_text()), f"{path.name} differs (UPDATE_GOLDEN=1 regenerates)"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def cases(directory: Path, prefix: str) -> list[str]:
    """Input fixtures `<prefix><case>.json` (their goldens are `<prefix><case>.golden.json`)."""
    return sorted(p.name[len(prefix):-len(".json")] for p in directory.glob(f"{prefix}*.json")
                  if not p.name.endswith(".golden.json"))
