"""Responses API tools -> the upstream's function declarations, and the model's calls back to the
items each kind of tool expects.

Upstreams here only know flat functions, so every callable tool becomes one, under a name that is
unique in the request (the back end then makes it legal for its upstream, e.g. Gemini's name rules):

| Responses tool | upstream | a call comes back as |
| --- | --- | --- |
| `function` | a function of that name | `function_call` |
| `custom` (freeform) | a function taking its raw text as `input` | `custom_tool_call` with the raw `input` |
| `namespace` (Codex: `mcp__<server>` per MCP server, `multi_agent_v1`) | each inner tool as a function `<namespace>__<name>` | `function_call` / `custom_tool_call` with the inner `name` **and** `namespace` |
| `tool_search` with `execution: "client"` (Codex's deferred tools) | a function `tool_search` | `tool_search_call` (`arguments` an object); the tools its `tool_search_output` loads are offered from then on |
| `tool_search` with `execution: "server"` | none: the tools marked `defer_loading` are simply offered at once | — |
| `web_search` | the upstream's search (the front end's business) | — |
| anything else (`image_generation`, `local_shell`, hosted `mcp`, `file_search`, ...) | left out, and said so (`ToolPlan.left_out` → log line and mitmweb story) | — |

Codex dispatches a namespaced call by the pair (namespace, name): the flat `mcp__probe__echo`
alone is "unsupported call" there (codex-rs/core/src/tools/router.rs, `build_tool_call`:
`ToolName::new(namespace, name)`; codex-rs/protocol/src/models.rs `ResponseItem::FunctionCall`
carries `namespace`), and it sends the call back the same way. The upstream name follows Codex's
own flat form (codex-rs/protocol/src/tool_name.rs: namespace and name joined by `__`), which the
model reads well; a clash with another tool's name gets a hash suffix (deterministic).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from ..protocol import canonical as c
from ..protocol.errors import bad_request
from ..protocol.ids import new_id
from ..protocol.openai.responses import (
    CustomToolDef,
    FunctionToolDef,
    NamespaceToolDef,
    ToolDef,
    ToolSearchToolDef,
    WebSearchToolDef,
)
from .common import custom_input, custom_tool

ToolKind = Literal["function", "custom", "tool_search"]
TOOL_SEARCH = "tool_search"

# Codex's tool_search parameters, for a definition that brings none
_SEARCH_PARAMETERS = {"type": "object", "properties": {
    "query": {"type": "string", "description": "Search query for deferred tools."},
    "limit": {"type": "number", "description": "Maximum number of tools to return."}}, "required": ["query"]}


_LOADABLE = TypeAdapter(list[ToolDef])


@dataclass(frozen=True, slots=True)
class ClientTool:
    """How the client knows a tool: its own name, its namespace, and what kind of call it expects."""

    name: str
    namespace: str | None = None
    kind: ToolKind = "function"


def flat_name(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('_')}__{name.lstrip('_')}"


def _suffixed(namespace: str, name: str) -> str:
    digest = hashlib.blake2b(f"{namespace}\x00{name}".encode(), digest_size=4).hexdigest()
    return f"{flat_name(namespace, name) if namespace else name}_{digest}"


@dataclass(slots=True)
class ToolPlan:
    upstream: list[c.Tool] = field(default_factory=list)
    client: dict[str, ClientTool] = field(default_factory=dict)  # upstream (canonical) name -> client tool
    skipped: set[str] = field(default_factory=set)  # names/types of tools that stay behind (tool_choice)
    left_out: list[str] = field(default_factory=list)  # what was not forwarded, for the log and story
    web_search: bool = False
    _by_client: dict[tuple[str | None, str], str] = field(default_factory=dict)  # (namespace, name) -> canonical

    # ---- building ---------------------------------------------------------------------------
    def add_defs(self, defs: list[Any] | None) -> None:
        """Top-level names first, so they keep their own name whatever namespaces bring."""
        defs = defs or []
        for t in defs:
            if isinstance(t, FunctionToolDef):
                self._add_function(t, None)
            elif isinstance(t, CustomToolDef):
                self._add_custom(t, None)
        for t in defs:
            if isinstance(t, NamespaceToolDef):
                self._add_namespace(t)
            elif isinstance(t, ToolSearchToolDef):
                self._add_search(t)
            elif isinstance(t, WebSearchToolDef):
                if t.external_web_access is False:
                    # Codex's default: its cached index only. The upstreams have only live search,
                    # which is not what was asked for (Codex's `web_search = "live"` gets it).
                    self.left_out.append("web_search (cached index only)")
                    self.skipped.add(t.type)
                else:
                    self.web_search = True
            elif not isinstance(t, (FunctionToolDef, CustomToolDef)):
                label = f"{t.type} {t.name}" if getattr(t, "name", None) else t.type
                self.left_out.append(label)
                self.skipped.update(n for n in (getattr(t, "name", None), t.type) if n)

    def add_loaded(self, tools: list[dict[str, Any]]) -> list[str]:
        """Tools a tool search loaded (a `tool_search_output` in the history) are offered from now
        on; returns their upstream names (what the model is told it can call now)."""
        try:
            defs = _LOADABLE.validate_python(tools)
        except ValidationError:
            self.left_out.append("tool_search_output tools (unreadable)")
            return []
        callable_defs = [d for d in defs if isinstance(d, (FunctionToolDef, CustomToolDef, NamespaceToolDef))]
        self.add_defs(callable_defs)
        names: list[str] = []
        for d in callable_defs:
            inner = d.tools if isinstance(d, NamespaceToolDef) else [d]
            namespace = d.name if isinstance(d, NamespaceToolDef) else None
            names += [self._by_client[(namespace, t.name)] for t in inner
                      if isinstance(t, (FunctionToolDef, CustomToolDef)) and (namespace, t.name) in self._by_client]
        return names

    def _claim(self, canonical: str, client: ClientTool) -> str | None:
        key = (client.namespace, client.name)
        if key in self._by_client:
            return None  # offered already (a tool search may load a tool twice)
        if canonical in self.client:  # a later tool whose name another one's flat form already took
            canonical = _suffixed(client.namespace or "", client.name)
        self._by_client[key] = canonical
        self.client[canonical] = client
        return canonical

    def _canonical(self, namespace: str | None, name: str) -> str:
        if namespace is None:
            return name
        flat = flat_name(namespace, name)
        return flat if flat not in self.client else _suffixed(namespace, name)

    def _add_function(self, t: FunctionToolDef, namespace: str | None, note: str = "") -> None:
        name = self._claim(self._canonical(namespace, t.name), ClientTool(t.name, namespace))
        if name is not None:
            description = f"{t.description}{note}" if t.description else (note.strip() or None)
            self.upstream.append(c.Tool(name, description, t.parameters, t.strict))

    def _add_custom(self, t: CustomToolDef, namespace: str | None, note: str = "") -> None:
        name = self._claim(self._canonical(namespace, t.name), ClientTool(t.name, namespace, "custom"))
        if name is not None:
            tool = custom_tool(name, t.description, t.format)
            tool.description = f"{tool.description}{note}"
            self.upstream.append(tool)

    def _add_namespace(self, ns: NamespaceToolDef) -> None:
        # The group's description says what its tools are for (e.g. "Tools for spawning and
        # managing sub-agents."); each function carries it, as the model sees only functions.
        note = f"\n\n(Part of {ns.name}: {ns.description.strip()})" if (ns.description or "").strip() else ""
        for inner in ns.tools:
            if isinstance(inner, FunctionToolDef):
                self._add_function(inner, ns.name, note)
            elif isinstance(inner, CustomToolDef):
                self._add_custom(inner, ns.name, note)
            else:
                self.left_out.append(f"{ns.name}.{inner.name or inner.type} ({inner.type})")

    def _add_search(self, t: ToolSearchToolDef) -> None:
        if t.execution == "server":
            # The API itself would search the tools marked defer_loading; offering them all at once
            # serves the same calls. Nothing to forward for the search itself.
            self.left_out.append("tool_search (server: deferred tools offered directly)")
            self.skipped.add(TOOL_SEARCH)
            return
        name = self._claim(TOOL_SEARCH, ClientTool(TOOL_SEARCH, None, "tool_search"))
        if name is None:
            self.left_out.append("tool_search (a function of that name is offered already)")
        else:
            self.upstream.append(c.Tool(name, t.description or "Search for more tools and load them.",
                                        t.parameters or _SEARCH_PARAMETERS))

    # ---- names --------------------------------------------------------------------------------
    def canonical(self, name: str, namespace: str | None = None) -> str:
        """The upstream name of a tool the client names (a call in the history, tool_choice). A
        namespaced tool no longer offered keeps the same flat form."""
        found = self._by_client.get((namespace, name))
        if found is not None:
            return found
        return name if namespace is None else flat_name(namespace, name)

    def choice(self, name: str, namespace: str | None) -> str:
        """tool_choice's tool, by its upstream name; 400 when it is not forwarded."""
        if namespace is None and name in self.skipped:
            raise bad_request(f"tool_choice names '{name}', a tool this gateway does not forward (only function, "
                              "custom and namespace tools reach the upstream).", "tool_choice")
        found = self._by_client.get((namespace, name))
        if found is None:
            shown = f"{namespace}.{name}" if namespace else name
            raise bad_request(f"tool_choice names unknown tool '{shown}'.", "tool_choice")
        return found

    def kind_of(self, upstream_name: str) -> ToolKind:
        tool = self.client.get(upstream_name)
        return tool.kind if tool is not None else "function"

    def client_tool(self, upstream_name: str) -> ClientTool:
        return self.client.get(upstream_name) or ClientTool(upstream_name)

    def customs(self) -> frozenset[str]:
        return frozenset(n for n, t in self.client.items() if t.kind == "custom")


# ---- output items -------------------------------------------------------------------------------

def search_arguments(arguments: str) -> Any:
    """tool_search_call carries its arguments as an object, not JSON text."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"query": arguments}
    return value if isinstance(value, dict) else {"query": value}


def call_item(item_id: str, call: c.ToolCall, tool: ClientTool, status: str = "completed") -> dict[str, Any]:
    """The output item of one call, in the form its tool's kind expects (final or in progress)."""
    if tool.kind == "tool_search":
        return {"id": item_id, "type": "tool_search_call", "call_id": call.id, "execution": "client",
                "status": status, "arguments": search_arguments(call.arguments)}
    if tool.kind == "custom":
        item = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call.id,
                "name": tool.name, "input": custom_input(call.arguments) if status == "completed" else ""}
    else:
        item = {"id": item_id, "type": "function_call", "status": status, "arguments": call.arguments,
                "call_id": call.id, "name": tool.name}
    if tool.namespace is not None:
        item["namespace"] = tool.namespace
    return item


ITEM_PREFIX = {"function": "fc_", "custom": "ctc_", "tool_search": "tsc_"}


def new_call_item(call: c.ToolCall, tool: ClientTool, status: str = "completed") -> dict[str, Any]:
    return call_item(new_id(ITEM_PREFIX[tool.kind]), call, tool, status)


def loaded_summary(names: list[str]) -> str:
    """What the model reads as the result of its tool search: the tools it may call now."""
    note = "These tools can be called now." if names else "No tools matched."
    return json.dumps({"loaded_tools": names, "note": note})
