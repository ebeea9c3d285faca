"""The path text form (frozenlens.paths) and how the store keeps paths: real SQLite."""

from __future__ import annotations

import datetime as dt
import os
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from frozenlens.paths import TEXT_PATTERN, from_text, from_user, to_text
from frozenlens.store import Store
from frozenlens.store.migrations import MIGRATIONS, SCHEMA_VERSION, _set_version
from frozenlens.types import SearchFilters

#: (OS path, its text form): one row per rule of the scheme
TABLE = [
    ("/photos/plain name é 日本.jpg", "/photos/plain name é 日本.jpg"),
    ("a\\b", "a\\\\b"),
    ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
    (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),
    (os.fsdecode(b"\xff\xfe/x"), "\\xff\\xfe/x"),
    ("\x00\x01\x1f\x7f", "\\x00\\x01\\x1f\\x7f"),
    ("c1\x85\x9f", "c1\\u0085\\u009f"),
    ("lone\ud800\udfff", "lone\\ud800\\udfff"),
    ("rlo\u202egpj.exe\u2028\u2029\u2066\u2069", "rlo\\u202egpj.exe\\u2028\\u2029\\u2066\\u2069"),
    ("%?#-_*[]'\" ~$", "%?#-_*[]'\" ~$"),
    ("\\x41 is not an escape here", "\\\\x41 is not an escape here"),
]

#: characters the text form never contains raw
FORBIDDEN = {"Cc", "Cs"}
BIDI_AND_SEPARATORS = set("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def assert_clean(t: str) -> None:
    t.encode("utf-8")  # strict: no lone surrogates
    assert not any(unicodedata.category(c) in FORBIDDEN for c in t), t
    assert not BIDI_AND_SEPARATORS & set(t), t


@pytest.mark.parametrize(("path", "expected"), TABLE)
def test_the_scheme(path, expected):
    assert to_text(path) == expected
    if "\ud800" not in path:  # a lone surrogate other than U+DC80..U+DCFF has no bytes
        assert to_text(os.fsencode(path)) == expected
    assert from_text(expected) == path
    assert_clean(expected)


def test_bytes_in_bytes_out():
    raw = b"/archive/\xc4\x8d\xff\n.jpg"
    t = to_text(raw)
    assert t == "/archive/č\\xff\\n.jpg"
    assert os.fsencode(from_text(t)) == raw


@pytest.mark.parametrize(
    "bad",
    ["\\", "a\\", "\\q", "\\x4", "\\xzz", "\\u12", "\\u12g4",  # malformed
     "\\x41", "\\x0a", "\\x09", "\\x5c", "\\u0041", "\\udc80", "\\u00e9",  # not canonical: never written by to_text
     "a\nb", "tab\there", "\x85", "\u202e", "\ud800", "\udce9"],  # must have been escaped
)
def test_from_text_refuses_what_to_text_never_writes(bad):
    with pytest.raises(ValueError):
        from_text(bad)


def test_hex_digits_in_either_case():
    assert from_text("caf\\xE9") == from_text("caf\\xe9") == os.fsdecode(b"caf\xe9")
    assert from_text("\\u202E") == "\u202e"


def test_from_user_prefers_a_real_path(tmp_path):
    odd = tmp_path / "x\\n"  # a real file whose name is also a valid text form
    odd.write_bytes(b"")
    assert from_user(str(odd)) == str(odd)
    assert from_user(str(tmp_path / "caf\\xe9")) == str(tmp_path) + "/caf\udce9"
    assert from_user("not\\valid") == "not\\valid"


names = st.binary(min_size=1, max_size=255).filter(lambda b: b"\x00" not in b and b"/" not in b)


@settings(max_examples=300, deadline=None)
@given(names)
def test_any_file_name_round_trips(name):
    path = os.fsdecode(name)
    t = to_text(path)
    assert from_text(t) == path
    assert os.fsencode(from_text(t)) == name
    assert to_text(from_text(t)) == t
    assert_clean(t)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names.filter(lambda b: b not in (b".", b"..")))
def test_any_file_name_on_disk_and_in_a_real_store(tmp_path, name):
    """Created on the real filesystem, listed back by the OS, stored, looked up, listed, reopened."""
    folder = tmp_path / "names"
    folder.mkdir(exist_ok=True)
    raw = os.fsencode(str(folder)) + b"/" + name
    with open(raw, "wb") as f:
        f.write(b"x")
    try:
        (listed,) = os.listdir(str(folder))  # str in, str out: the OS path as Python has it
        path = os.path.join(str(folder), listed)
        assert os.fsencode(path) == raw
        store = Store.open(f"sqlite:///{tmp_path / 'prop.db'}")
        try:
            with store.batch() as w:
                image_id = w.add_failure(path=path, size=1, mtime_ns=1, content_hash=None, reason="corrupt",
                                         message=f"{path}: not an image")
            record = store.find_path(path)
            assert record is not None and record.id == image_id and record.path == path
            assert set(store.file_states([str(folder)])) == {path}
            (failure,) = store.failures()
            assert failure.path == path and failure.message == f"{to_text(path)}: not an image"
            with open(record.path, "rb") as f:  # the stored path reopens the same file
                assert f.read() == b"x"
            with store.batch() as w:
                w.delete([image_id])
        finally:
            store.close()
    finally:
        os.unlink(raw)


#: characters that make escapes, break them, or must be escaped
TRICKY = st.sampled_from(list("\\xuntr0189aAbcdDeEfF2/ é") + ["\x00", "\n", "\x7f", "\x85", "\u2028", "\u202e", "\u2069"])


@settings(max_examples=500, deadline=None)
@given(st.lists(TRICKY, max_size=12).map("".join))
def test_the_schema_pattern_accepts_exactly_what_from_text_accepts(candidate):
    try:
        from_text(candidate)
        parses = True
    except ValueError:
        parses = False
    assert bool(re.fullmatch(TEXT_PATTERN, candidate)) == parses


# -- the store: prefixes and case -------------------------------------------------------
def _rows(store: Store, paths: list[str]) -> None:
    with store.batch() as w:
        for p in paths:
            w.add_failure(path=p, size=1, mtime_ns=1, content_hash=None, reason="corrupt", message="x")


def test_prefixes_are_exact_bytes_not_patterns_and_not_case_folded(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    weird = os.fsdecode(b"/a/50%_off\\\xe9")
    paths = [
        "/a/Photos/1.jpg", "/a/photos/2.jpg", "/a/PHOTOS/3.jpg",
        weird + "/in.jpg", "/a/50%Xoff\\\udce9/out.jpg", "/a/50%_off\\\\/out2.jpg", weird + "x/out3.jpg",
        "/a/new\nline/in.jpg", "/a/new\\nline/out.jpg",
    ]
    _rows(store, paths)
    assert sorted(store.file_states(["/a/Photos"])) == ["/a/Photos/1.jpg"]
    assert sorted(store.file_states(["/a/photos/"])) == ["/a/photos/2.jpg"]
    assert sorted(store.file_states([weird])) == [weird + "/in.jpg"]
    assert sorted(store.file_states(["/a/new\nline"])) == ["/a/new\nline/in.jpg"]
    assert sorted(store.file_states(["/a/new\\nline"])) == ["/a/new\\nline/out.jpg"]
    assert sorted(store.file_states(["/a/Photos/1.jpg"])) == ["/a/Photos/1.jpg"]  # a file as a root
    assert len(store.file_states(["/a"])) == len(paths)
    # the search filter uses the same rule (rows must be indexed to count: flip their status)
    with store.engine.begin() as c:
        c.execute(text("UPDATE images SET status = 'indexed'"))
    assert store.count_matching(SearchFilters(under="/a/Photos")) == 1
    assert store.count_matching(SearchFilters(under=weird)) == 1
    assert store.count_matching(SearchFilters(under="/a/new\nline")) == 1
    store.close()


# -- migration v5 -> v6 -------------------------------------------------------------------------
def make_v5_database(url: str, paths: list[str]) -> None:
    """A database exactly as schema v5 wrote it: the v1..v5 migrations, paths stored as they are."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for version, step in enumerate(MIGRATIONS[:5]):
            step(conn)
            _set_version(conn, version + 1)
        for p in paths:
            conn.execute(
                text("INSERT INTO images (path, size, mtime_ns, status, updated_at) VALUES (:p, 1, 1, 'indexed', :t)"),
                {"p": p, "t": dt.datetime(2024, 1, 1)},
            )
    engine.dispose()


def test_v5_paths_are_migrated_to_the_text_form(tmp_path):
    assert SCHEMA_VERSION == 6
    url = f"sqlite:///{tmp_path / 'v5.db'}"
    # "a\\nb" (a backslash then n) is exactly the new text of "a\nb" (a newline): the rewrite
    # must not trip over UNIQUE, whatever the order of the rows
    paths = ["/p/a\\nb", "/p/a\nb", "/p/plain é.jpg", "/p/back\\slash\\\\.jpg", "/p/tab\t.jpg", "/p/a\\\\nb"]
    make_v5_database(url, paths)
    store = Store.open(url)
    with store.engine.connect() as c:
        assert c.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == "6"
        stored = dict(c.execute(text("SELECT id, path FROM images")).all())
    states = store.file_states(["/p"])
    assert sorted(states) == sorted(paths)  # every path reads back as it was
    assert sorted(stored.values()) == sorted(to_text(p) for p in paths)
    assert stored[states["/p/plain é.jpg"].id] == "/p/plain é.jpg"  # ordinary paths are untouched
    for p in paths:
        assert store.find_path(p).path == p
    store.close()
    store = Store.open(url)  # opening again changes nothing
    assert sorted(store.file_states(["/p"])) == sorted(paths)
    store.close()


def test_os_path_pattern_is_the_text_pattern_without_nul() -> None:
    from frozenlens.paths import OS_PATH_TEXT_PATTERN

    for candidate in ("/photos/caf\\xe9.jpg", "a\\nb", "\\x01", "plain"):
        assert re.fullmatch(OS_PATH_TEXT_PATTERN, candidate) and re.fullmatch(TEXT_PATTERN, candidate)
    assert re.fullmatch(TEXT_PATTERN, "a\\x00b") and not re.fullmatch(OS_PATH_TEXT_PATTERN, "a\\x00b")
