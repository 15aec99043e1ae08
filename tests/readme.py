"""The README's recipes as data: fenced blocks marked `<!-- recipe: NAME -->`, split into commands
with the output each promises (`#   fragment ... fragment` lines under a command, or a trailing
`# ...` comment in client blocks). tests/test_readme_e2e.py and tests/test_codex_e2e.py run them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_MARK = re.compile(r"^\s*<!-- recipe: ([\w-]+) -->\s*$")
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")


@dataclass
class Block:
    name: str
    lang: str
    text: str


@dataclass
class Command:
    text: str
    expect: list[str] = field(default_factory=list)  # fragments that must appear in its output, in order


def blocks(path: Path = README) -> dict[str, Block]:
    """Marked blocks by name; raises if a shell/python/config block carries no marker, so a new
    recipe cannot slip into the README without a test running it."""
    lines = path.read_text().splitlines()
    found: dict[str, Block] = {}
    name: str | None = None
    i = 0
    while i < len(lines):
        mark, fence = _MARK.match(lines[i]), _FENCE.match(lines[i])
        if mark:
            name = mark.group(1)
        elif fence:
            indent, lang = fence.group(1), fence.group(2)
            body = []
            i += 1
            while not re.match(rf"^{indent}```\s*$", lines[i]):
                body.append(lines[i].removeprefix(indent))
                i += 1
            if name is None and lang in ("bash", "sh", "python", "toml", "yaml"):
                raise AssertionError(f"README.md:{i}: a {lang} block without a `<!-- recipe: NAME -->` marker")
            if name is not None:
                found[name] = Block(name, lang, "\n".join(body) + "\n")
            name = None
        elif lines[i].strip():
            name = None  # a marker belongs to the block right after it
        i += 1
    return found


def commands(block: Block, *, inline_expect: bool = False) -> list[Command]:
    """Shell commands of a block: continuation lines and here-documents joined."""
    out: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            if line.startswith("#   ") and out:
                out[-1].expect += _fragments(line[4:])
            i += 1
            continue
        text = line
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        heredoc = _HEREDOC.search(text)
        if heredoc:
            while i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
                if lines[i].strip() == heredoc.group(1):
                    break
        cmd = Command(text)
        if inline_expect and not heredoc:
            code, sep, comment = text.rpartition("  # ")
            if sep:
                cmd = Command(code.rstrip(), _fragments(comment))
        out.append(cmd)
        i += 1
    return out


def _fragments(text: str) -> list[str]:
    """`a ... b    c`: "..." stands for anything, and so do runs of spaces between fragments."""
    return [f.strip() for f in re.split(r"\.\.\.|\s{2,}", text) if f.strip()]


def missing(expect: list[str], output: str) -> str | None:
    """The first expected fragment not found (in order, ignoring case), or None."""
    pos, low = 0, output.lower()
    for fragment in expect:
        at = low.find(fragment.lower(), pos)
        if at < 0:
            return fragment
        pos = at + len(fragment)
    return None
