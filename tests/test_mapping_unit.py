"""Model mapping (exact > wildcard > default) and the self-reloading YAML file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from addon.backends.gemini.lifecycle import lifecycle
from addon.config.mapping import ModelMap, Target, parse_mappings
from addon.config.reloading import ReloadingFile

ROOT = Path(__file__).resolve().parent.parent


def mm(mappings: dict, default: str | None = None) -> ModelMap:
    return parse_mappings({"mappings": mappings, **({"default": default} if default else {})})


# ---- precedence ------------------------------------------------------------------------------

def test_exact_beats_any_wildcard_and_default() -> None:
    m = mm({"gpt-4o-mini-long-*": "w", "gpt-4o-mini": "exact", "*": "star"}, default="d")
    assert m.resolve("gpt-4o-mini") == "exact"
    assert m.resolve("gpt-4o-mini-long-x") == "w"
    assert m.resolve("anything") == "star"


def test_wildcard_beats_default_and_default_catches_the_rest() -> None:
    m = mm({"claude-*": "gemini-2.5-pro"}, default="gemini-2.5-flash")
    assert m.resolve("claude-3-opus") == "gemini-2.5-pro"
    assert m.resolve("llama-3") == "gemini-2.5-flash"
    assert m.resolve("claude") == "gemini-2.5-flash"  # "claude-*" needs the dash


def test_no_default_keeps_the_name() -> None:
    assert mm({"a": "b"}).resolve("zzz") == "zzz"
    assert parse_mappings(None).resolve("zzz") == "zzz"
    assert parse_mappings({}).resolve("zzz") == "zzz"


@pytest.mark.parametrize("order", [0, 1])
def test_most_literal_characters_wins_regardless_of_order(order: int) -> None:
    entries = [("gpt-*", "short"), ("gpt-4o-*", "long")]
    if order:
        entries.reverse()
    m = mm(dict(entries))
    assert m.resolve("gpt-4o-mini") == "long"
    assert m.resolve("gpt-5") == "short"


def test_ties_go_to_the_entry_listed_first() -> None:
    # "gpt-*" and "*t-4o" both have 4 literal characters and both match "gpt-4o"
    assert mm({"gpt-*": "first", "*t-4o": "second"}).resolve("gpt-4o") == "first"
    assert mm({"*t-4o": "first", "gpt-*": "second"}).resolve("gpt-4o") == "first"


def test_resolution_is_deterministic_across_parses() -> None:
    data = {"mappings": {f"m{i}-*": f"t{i}" for i in range(30)} | {"*-x": "tx", "m*": "tm"}}
    results = {parse_mappings(data).resolve("m1-x") for _ in range(50)}
    assert results == {"t1"}  # "m1-*" (3 literals) beats "*-x" (2) and "m*" (1)
    # same literal count: file order decides, every time
    tie = {"mappings": {"a*c": "first", "ab*": "second", "*bc": "third"}}
    assert {parse_mappings(tie).resolve("abc") for _ in range(50)} == {"first"}


def test_star_matches_any_run_including_empty_and_specials_are_literal() -> None:
    m = mm({"gpt-4.1*": "dot", "claude-*-sonnet": "mid", "x*y*z": "multi"})
    assert m.resolve("gpt-4.1") == "dot" and m.resolve("gpt-4.1-mini") == "dot"
    assert m.resolve("gpt-4x1") == "gpt-4x1"  # '.' is not a regex wildcard
    assert m.resolve("claude-3-5-sonnet") == "mid" and m.resolve("claude--sonnet") == "mid"
    assert m.resolve("claude-3-5-sonnet-latest") == "claude-3-5-sonnet-latest"  # full match only
    assert m.resolve("xyz") == "multi" and m.resolve("x/a\nb/y-z") == "multi"
    assert mm({"a+b(c)[d]*": "re"}).resolve("a+b(c)[d]!") == "re"


def test_null_target_keeps_the_requested_name() -> None:
    m = parse_mappings(yaml.safe_load("default: fallback\nmappings:\n  gemini-*: ~\n  keep-me: null\n"))
    assert m.resolve("gemini-2.5-pro") == "gemini-2.5-pro"
    assert m.resolve("keep-me") == "keep-me"
    assert m.resolve("other") == "fallback"


def test_matches_ignores_the_default() -> None:
    m = mm({"a": "b", "c-*": "d"}, default="z")
    assert m.matches("a") and m.matches("c-1")
    assert not m.matches("q")


def test_listed_models_have_no_patterns() -> None:
    m = mm({"gpt-4o": "gemini-2.5-flash", "gpt-*": "gemini-2.5-pro", "x-*": None, "y*": "weird-*",
            "keep": None}, default="gemini-2.5-flash-lite")
    listed = m.listed_models()
    assert all("*" not in name for name in listed)
    assert listed == ["gpt-4o", "keep", "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"]


@pytest.mark.parametrize("data", [
    ["not", "a", "mapping"],
    {"mappings": ["a", "b"]},
    {"mappings": {"a": 3}},
    {"default": 5, "mappings": {}},
])
def test_bad_files_are_rejected(data: object) -> None:
    with pytest.raises(ValueError):
        parse_mappings(data)


# ---- the shipped mappings.yaml -------------------------------------------------------------------

SHIPPED = {
    "gpt-4o": "gemini-3.8-flash",
    "gpt-4o-2024-08-06": "gemini-3.8-flash",
    "gpt-4o-mini": "gemini-3.5-flash-lite",
    "gpt-4.1": "gemini-4-argon",
    "gpt-4.1-nano": "gemini-3.5-flash-lite",
    "gpt-5": "gemini-4-argon",
    "gpt-5-codex": "gemini-4-argon",
    "gpt-5-mini": "gemini-3.8-flash",
    "o3-mini": "gemini-3.8-flash",
    "o3": "gemini-4-argon",
    "o4-mini": "gemini-3.8-flash",
    "gpt-3.5-turbo": "gemini-3.5-flash-lite",
    "gemini-2.5-pro": "gemini-2.5-pro",  # a real name passes through (Google re-routes it)
    "gemini-3.1-pro-preview": "gemini-3.1-pro-preview",
    # Antigravity's names, and a model Google shut down (9 March 2026)
    "gemini-3-flash": "gemini-3.8-flash",
    "gemini-3-pro-high": "gemini-3.1-pro-preview",
    "gemini-3-pro-low": "gemini-3.1-pro-preview",
    "gemini-3-pro-preview": "gemini-3.1-pro-preview",
}


@pytest.fixture(scope="module")
def shipped() -> ModelMap:
    return ReloadingFile(ROOT / "mappings.yaml", parse_mappings).current()


@pytest.mark.parametrize("client, upstream", sorted(SHIPPED.items()))
def test_shipped_mappings(shipped: ModelMap, client: str, upstream: str) -> None:
    assert shipped.resolve(client) == upstream


def test_shipped_targets_carry_the_level_the_name_implies(shipped: ModelMap) -> None:
    assert shipped.target("gemini-3-pro-high") == Target("gemini-3.1-pro-preview", "high")
    assert shipped.target("gemini-3-pro-low") == Target("gemini-3.1-pro-preview", "low")
    assert shipped.target("gemini-3-flash") == Target("gemini-3.8-flash")
    assert shipped.target("gemini-2.5-flash") == Target("gemini-2.5-flash")  # passed through


def test_targets_with_settings() -> None:
    m = parse_mappings(yaml.safe_load("""
default: {model: d, thinking_level: low}
mappings:
  a: {model: real-a, thinking_level: high}
  "b-*": {thinking_level: minimal}
  plain: real-plain
"""))
    assert m.target("a") == Target("real-a", "high") and m.resolve("a") == "real-a"
    assert m.target("b-1") == Target("b-1", "minimal")  # no model: the requested name, with the level
    assert m.target("zzz") == Target("d", "low") and m.resolve("zzz") == "d"
    assert m.target("plain") == Target("real-plain")
    assert m.targets() == ["real-a", "real-plain", "d"]
    assert m.listed_models() == ["a", "plain", "real-a", "real-plain", "d"]


@pytest.mark.parametrize("target", [{"model": "x", "thinking_level": "extreme"}, {"model": "x", "effort": "high"},
                                    {"model": 3}, [["x"]]])
def test_bad_targets_are_rejected(target: object) -> None:
    with pytest.raises(ValueError, match="thinking_level|do not nest"):
        parse_mappings({"mappings": {"a": target}})


# ---- fallback chains -----------------------------------------------------------------------------

def test_a_target_may_be_a_fallback_chain() -> None:
    m = parse_mappings(yaml.safe_load("""
default: [gemini-3.8-flash, local-llama]
mappings:
  gpt-5: [gemini-4-argon, {model: gemini-3.1-pro-preview, thinking_level: high}, default]
  "gemini-*": [~, gemini-3.8-flash]
  plain: gemini-3.6-flash
"""))
    assert m.chain("gpt-5") == (Target("gemini-4-argon"), Target("gemini-3.1-pro-preview", "high"),
                                Target("gemini-3.8-flash"), Target("local-llama"))
    assert m.target("gpt-5") == Target("gemini-4-argon") and m.resolve("gpt-5") == "gemini-4-argon"
    # a kept name first, then the fallback; a name met twice is tried once
    assert m.chain("gemini-3.6-flash") == (Target("gemini-3.6-flash"), Target("gemini-3.8-flash"))
    assert m.chain("gemini-3.8-flash") == (Target("gemini-3.8-flash"),)
    assert m.chain("plain") == (Target("gemini-3.6-flash"),)
    assert m.chain("anything") == (Target("gemini-3.8-flash"), Target("local-llama"))
    assert m.default == "gemini-3.8-flash"
    assert m.targets() == ["gemini-4-argon", "gemini-3.1-pro-preview", "gemini-3.8-flash", "local-llama",
                           "gemini-3.6-flash"]


@pytest.mark.parametrize("text, words", [
    ("mappings:\n  gpt-5: []\n", "fallback chain of 'gpt-5' is empty"),
    ("mappings:\n  gpt-5: [gemini-4-argon, 42]\n", "'gpt-5' (entry 2 of its fallback chain)"),
    ("mappings:\n  gpt-5: [gemini-4-argon, {model: x, effort: high}]\n", "'gpt-5' (entry 2 of its fallback chain)"),
    ("mappings:\n  gpt-5: [[a, b]]\n", "entry 1 of the fallback chain of 'gpt-5' is a list"),
    ("default: [gemini-3.8-flash, default]\n", "fallback chain of 'default' names 'default' (entry 2)"),
    ("default: []\n", "fallback chain of 'default' is empty"),
])
def test_a_malformed_chain_refuses_to_load_with_one_line_naming_the_entry(text: str, words: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_mappings(yaml.safe_load(text))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_shipped_default_and_listing(shipped: ModelMap) -> None:
    assert shipped.default and shipped.default.startswith("gemini-")
    assert shipped.resolve("totally-unknown-model").startswith("gemini-")
    listed = shipped.listed_models()
    assert listed and all("*" not in name for name in listed)
    for name in ("gpt-4o-mini", "gpt-3.5-turbo", "gemini-3.8-flash", "gemini-4-argon", "gemini-3.5-flash-lite"):
        assert name in listed
    assert len(listed) == len(set(listed))


def test_shipped_targets_are_models_google_lists_as_current(shipped: ModelMap) -> None:
    """No shipped target is deprecated, re-routed or shut down (Google's lifecycle, as the
    gateway's table has it with a source per model)."""
    for target in shipped.targets():
        row = lifecycle(target)
        assert row is not None and row.stage == "current", (target, row)


# ---- ReloadingFile -------------------------------------------------------------------------------

def _write(path: Path, text: str, bump: int) -> None:
    """Write and move the mtime forward explicitly, so coarse filesystem clocks cannot hide an edit."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_reloading_file_picks_up_an_edit_and_survives_a_broken_one(tmp_path: Path, caplog) -> None:
    path = tmp_path / "mappings.yaml"
    _write(path, "mappings:\n  gpt-4o: one\n", 0)
    rf = ReloadingFile(path, parse_mappings, interval=0.0)
    first = rf.current()
    assert first.resolve("gpt-4o") == "one"
    assert rf.current() is first  # unchanged file: the same object, no re-parse

    _write(path, "mappings:\n  gpt-4o: two-two\n", 1)
    assert rf.current().resolve("gpt-4o") == "two-two"

    good = rf.current()
    _write(path, "mappings: [unclosed\n", 2)  # broken YAML
    assert rf.current() is good
    _write(path, "mappings: [1, 2]\n", 3)  # valid YAML, invalid mapping file
    assert rf.current() is good
    assert caplog.text.count("keeping the previous") == 2
    warned = [r.getMessage() for r in caplog.records if "keeping the previous" in r.getMessage()]
    assert all("\n" not in w and path.name in w for w in warned)  # one line each, naming the file
    assert "line 2, column 1" in warned[0]  # where YAML gave up
    for _ in range(5):  # the same broken version is not re-read nor warned about at every look
        assert rf.current() is good
    assert caplog.text.count("keeping the previous") == 2
    path.unlink()  # a deleted file keeps the last good version too
    assert rf.current() is good

    _write(path, "default: d3\nmappings:\n  gpt-4o: three\n", 4)
    assert rf.current().resolve("gpt-4o") == "three" and rf.current().resolve("x") == "d3"


def test_reloading_file_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    _write(path, "mappings:\n  a: b\n", 0)
    rf = ReloadingFile(path, parse_mappings, interval=3600.0)
    rf.current()
    _write(path, "mappings:\n  a: changed\n", 1)
    assert rf.current().resolve("a") == "b"  # not re-checked within the interval
    fast = ReloadingFile(path, parse_mappings, interval=0.2)
    _write(path, "mappings:\n  a: again\n", 2)
    deadline = time.monotonic() + 3
    while fast.current().resolve("a") != "again":
        assert time.monotonic() < deadline, "edit not picked up"
        time.sleep(0.05)


def test_reloading_file_refuses_a_broken_file_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("mappings: {a: [1]}\n")
    with pytest.raises(ValueError):
        ReloadingFile(path, parse_mappings)
    with pytest.raises(OSError):
        ReloadingFile(tmp_path / "missing.yaml", parse_mappings)
