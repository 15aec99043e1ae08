"""Function names Gemini accepts, and the way back to the client's own.

Gemini refuses a function declaration whose name is not `^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$`
("Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z,
0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64." —
cloud.google.com/vertex-ai/docs/reference/rest/v1/FunctionDeclaration, quoted live in cline#7339),
while OpenAI clients and MCP servers use names such as `my tool/v2!` or 80-character ones.

`ToolNames` renames every name of one request the same way (declarations, history calls, function
responses, `allowedFunctionNames`) and maps the model's calls back to the client's exact name.
Renaming is deterministic: invalid characters become `_`, a leading digit or dash gets a `_`
prefix; a name that is too long, or that would collide with another name of the request, becomes
its first 55 characters + `_` + 8 hex digits of a hash of the original.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from ...protocol import canonical as c

VALID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
MAX_LEN = 64


def _hashed(name: str, clean: str) -> str:
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{clean[:MAX_LEN - 9]}_{digest}"


def _clean(name: str) -> str:
    clean = _BAD_CHARS.sub("_", name) or "_"
    return clean if re.match(r"[A-Za-z_]", clean) else "_" + clean


class ToolNames:
    """Client name <-> Gemini name for the function names of one request."""

    __slots__ = ("upstream", "client")

    def __init__(self, names: Iterable[str]) -> None:
        names = list(dict.fromkeys(names))
        self.upstream: dict[str, str] = {}  # client -> Gemini
        self.client: dict[str, str] = {}  # Gemini -> client
        taken = {n for n in names if VALID.match(n)}
        for name in names:
            if name in taken:
                new = name
            else:
                new = _clean(name)
                if len(new) > MAX_LEN or new in taken:
                    new = _hashed(name, new)
                taken.add(new)
            self.upstream[name] = new
            self.client[new] = name

    @classmethod
    def of(cls, req: c.ChatRequest) -> ToolNames:
        """Every function name the request mentions: tools, history calls, results, tool_choice."""
        names = [t.name for t in req.tools]
        for m in req.messages:
            names += [tc.name for tc in m.tool_calls]
            if m.role == "tool" and m.name:
                names.append(m.name)
        if req.tool_choice is not None:
            names += req.tool_choice.names
        return cls(names)

    def up(self, name: str) -> str:
        return self.upstream.get(name) or ToolNames([name]).upstream[name]

    def down(self, name: str) -> str:
        return self.client.get(name, name)
