"""Identifiers in the shapes OpenAI clients expect (chatcmpl-…, resp_…, call_…)."""

from __future__ import annotations

import os


def new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + os.urandom(nbytes).hex()
