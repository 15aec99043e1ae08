"""Loopback emulator of the gateway's upstreams, with fault injection.

    python -m tests.emulator --host 127.0.0.1 --port 0 [--port-file PATH]

(run from the repository root) prints ``EMULATOR_READY http://127.0.0.1:<port>`` once listening,
and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .app import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--port-file", help="also write the base URL here once listening")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.port_file))


if __name__ == "__main__":
    sys.exit(main())
