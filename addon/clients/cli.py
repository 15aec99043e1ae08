"""scripts/clients: add a client (a new random key, printed once; only its SHA-256 goes into the
file), give one a new key, remove one, list them. Edits keep the file's comments and order
(ruamel.yaml round trip) and are written atomically; a running gateway picks them up within a second.

    scripts/clients add alice --models 'gpt-4o*,gemini-*' --rpm 60 --tokens-per-day 2000000
    scripts/clients rotate alice        # a new key; the old one stops working, the budget stays
    scripts/clients remove alice
    scripts/clients list
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import NAME, parse_clients

HEADER = ("Gateway clients (--set clients=clients.yaml): each key's SHA-256, model allow-list and limits.\n"
          "Written by scripts/clients; edit freely (a running gateway re-reads it within a second).\n")


def new_key() -> str:
    return "sk-gw-" + secrets.token_urlsafe(32)


class _AnyEnv:
    """For checking a file in a shell where its key_env variables may be unset: each one 'holds' a
    value of its own, so only the file's own mistakes are reported."""

    def get(self, name: str, default: str = "") -> str:
        return os.environ.get(name) or f"unset:{name}"


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _load(path: Path) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if path.exists() and path.read_text().strip():
        doc = _yaml().load(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
            raise SystemExit(f"clients: {path} is not a clients file (a mapping with a `clients:` list)")
        return doc
    doc = CommentedMap()
    doc["clients"] = CommentedSeq()
    doc.yaml_set_start_comment(HEADER)
    return doc


def _save(path: Path, doc: Any) -> None:
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    text = buf.getvalue()
    import yaml

    parse_clients(yaml.safe_load(text), env=_AnyEnv())  # never write a file the gateway would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _find(doc: Any, name: str) -> int | None:
    return next((i for i, e in enumerate(doc["clients"]) if isinstance(e, dict) and e.get("name") == name), None)


def _existing(doc: Any, name: str, file: str) -> int:
    i = _find(doc, name)
    if i is None:
        raise SystemExit(f"clients: no client named {name} in {file}")
    return i


def _patterns(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def add(args: argparse.Namespace) -> int:
    from ruamel.yaml.comments import CommentedMap

    if not NAME.match(args.name):
        raise SystemExit("clients: a name is 1-64 of A-Z a-z 0-9 . _ @ + - (it labels logs and metrics)")
    doc = _load(args.file)
    if _find(doc, args.name) is not None:
        raise SystemExit(f"clients: {args.name} is already in {args.file} (scripts/clients rotate {args.name} "
                         "gives it a new key)")
    key = new_key()
    entry = CommentedMap(name=args.name, key_sha256=hashlib.sha256(key.encode()).hexdigest())
    models = _patterns(args.models)
    if models is not None:
        from ruamel.yaml.comments import CommentedSeq

        entry["models"] = CommentedSeq(models)
        entry["models"].fa.set_flow_style()  # models: [gpt-4o*, gemini-*]
    for field in ("rpm", "tokens_per_day", "max_concurrent"):
        if getattr(args, field) is not None:
            entry[field] = getattr(args, field)
    doc["clients"].append(entry)
    _save(args.file, doc)
    print(key)
    print(f"clients: added {args.name} to {args.file}; its key above is shown only this once", file=sys.stderr)
    return 0


def rotate(args: argparse.Namespace) -> int:
    doc = _load(args.file)
    i = _existing(doc, args.name, args.file)
    key = new_key()
    entry = doc["clients"][i]
    entry.pop("key_env", None)
    entry["key_sha256"] = hashlib.sha256(key.encode()).hexdigest()
    _save(args.file, doc)
    print(key)
    print(f"clients: new key for {args.name} (the old one stops working within a second; its budget stays)",
          file=sys.stderr)
    return 0


def remove(args: argparse.Namespace) -> int:
    doc = _load(args.file)
    i = _existing(doc, args.name, args.file)
    del doc["clients"][i]
    _save(args.file, doc)
    print(f"clients: removed {args.name}; its key stops working within a second", file=sys.stderr)
    return 0


def list_clients(args: argparse.Namespace) -> int:
    doc = _load(args.file)
    for e in doc["clients"]:
        limits = ", ".join(f"{k}={e[k]}" for k in ("rpm", "tokens_per_day", "max_concurrent") if k in e)
        models = ",".join(e["models"]) if e.get("models") is not None else "*"
        print(f"{e.get('name')}  models={models}" + (f"  {limits}" if limits else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", type=Path, default=Path("clients.yaml"),
                        help="the clients file (default: clients.yaml in the repository, as scripts/run reads it)")
    parser = argparse.ArgumentParser(prog="scripts/clients", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("add", parents=[common], help="add a client with a new random key (printed once)")
    p.add_argument("name")
    p.add_argument("--models", action="append", help="allowed client model names, patterns with *, comma-separated "
                                                     "or repeated (default: every model)")
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tokens-per-day", dest="tokens_per_day", type=int, help="tokens per UTC day")
    p.add_argument("--max-concurrent", dest="max_concurrent", type=int, help="requests open at once")
    p.set_defaults(run=add)
    for name, fn, text in (("rotate", rotate, "give a client a new key (printed once)"),
                           ("remove", remove, "remove a client (its key stops working)")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(run=fn)
    sub.add_parser("list", parents=[common], help="the clients, their allow-lists and limits").set_defaults(
        run=list_clients)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:
        raise SystemExit(f"clients: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
