"""A one-tool stdio MCP server for the Codex tests and the README's MCP example: `echo` answers
`echo: <text>`. Newline-delimited JSON-RPC, as Codex speaks it to stdio servers. With a path as its
argument it appends every message it receives there (the tests read which calls arrived)."""

import json
import sys

TOOL = {"name": "echo", "description": "Echo the given text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


def answer(msg: dict) -> dict:
    method = msg.get("method")
    if method == "initialize":
        return {"protocolVersion": msg.get("params", {}).get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "probe", "version": "1"}}
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call":
        text = (msg.get("params", {}).get("arguments") or {}).get("text", "")
        return {"content": [{"type": "text", "text": f"echo: {text}"}]}
    return {}


def main() -> None:
    log = open(sys.argv[1], "a", encoding="utf-8") if len(sys.argv) > 1 else None
    for line in sys.stdin:
        msg = json.loads(line)
        if log is not None:
            log.write(json.dumps(msg) + "\n")
            log.flush()
        if "id" in msg:
            print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": answer(msg)}), flush=True)


if __name__ == "__main__":
    main()
