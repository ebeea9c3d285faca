"""Tests for frozenlens.indexer.captions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from frozenlens.errors import FrozenLensError, ManifestError
from frozenlens.indexer.captions import (
    MAX_TEXT_SIDECAR_BYTES,
    Caption,
    captions_signature,
    load_caption_manifest,
    read_sidecar_captions,
)
from frozenlens.indexer.scan import FileEntry, SidecarRef, scan

REPO = Path(__file__).resolve().parents[2]
KPA = Path(os.environ.get("FROZENLENS_TESTDATA") or REPO / ".cache" / "testdata") / "kphotoalbum"

XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
   <dc:description>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">A red tram in Lisbon</rdf:li>
     <rdf:li xml:lang="en">A red tram in Lisbon</rdf:li>
     <rdf:li xml:lang="pt">Um elétrico vermelho em Lisboa</rdf:li>
     <rdf:li xml:lang="de">Eine rote Straßenbahn in Lissabon</rdf:li>
    </rdf:Alt>
   </dc:description>
   <dc:title>
    <rdf:Alt><rdf:li xml:lang="x-default">Tram 28</rdf:li></rdf:Alt>
   </dc:title>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:title xmlns:dc="http://purl.org/dc/elements/1.1/">&lol2;
</dc:title></x:xmpmeta>"""


def entry_with(tmp_path: Path, sidecars: dict[str, bytes | str]) -> FileEntry:
    (tmp_path / "photo.jpg").write_bytes(b"jpeg")
    for name, content in sidecars.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (tmp_path / name).write_bytes(data)
    (entry,) = list(scan([tmp_path]))
    return entry


def test_txt_sidecar_whole_file_stripped(tmp_path: Path) -> None:
    entry = entry_with(tmp_path, {"photo.txt": "\ufeff  Ein Hund am Strand.\nZweite Zeile.\n\n"})
    assert read_sidecar_captions(entry) == [
        Caption("Ein Hund am Strand.\nZweite Zeile.", None, "sidecar-txt")]


def test_txt_latin1_fallback_empty_and_oversized(tmp_path: Path) -> None:
    entry = entry_with(tmp_path, {"photo.jpg.txt": "Café crème".encode("latin-1"),
                                  "photo.txt": "   \n"})
    assert read_sidecar_captions(entry) == [Caption("Café crème", None, "sidecar-txt")]
    big = tmp_path / "big"
    big.mkdir()
    entry = entry_with(big, {"photo.txt": "x" * (MAX_TEXT_SIDECAR_BYTES + 1)})
    assert read_sidecar_captions(entry) == []


def test_json_sidecar_forms(tmp_path: Path) -> None:
    doc = {
        "lang": "fr",
        "caption": "Un chat sur un toit",
        "description": {"en": "A cat on a roof", "ja": "屋根の上の猫", "x-default": "Cat"},
        "text": ["Chat", {"text": "Gato en un tejado", "lang": "es"}, {"it": "Gatto"}, 42],
        "title": {"text": "Roof", "lang": None},
        "other": "ignored",
    }
    entry = entry_with(tmp_path, {"photo.json": json.dumps(doc, ensure_ascii=False)})
    assert read_sidecar_captions(entry) == [
        Caption("Un chat sur un toit", "fr", "sidecar-json"),
        Caption("A cat on a roof", "en", "sidecar-json"),
        Caption("屋根の上の猫", "ja", "sidecar-json"),
        Caption("Cat", None, "sidecar-json"),
        Caption("Chat", "fr", "sidecar-json"),
        Caption("Gato en un tejado", "es", "sidecar-json"),
        Caption("Gatto", "it", "sidecar-json"),
        Caption("Roof", None, "sidecar-json"),
    ]


def test_lone_surrogates_in_a_json_sidecar_are_replaced(tmp_path: Path) -> None:
    # valid JSON, but "\ud800" decodes to a lone surrogate that no text encoder accepts
    entry = entry_with(tmp_path, {"photo.json": '{"caption": "a dog \\ud800 on a beach", "lang": "en"}'})
    (caption,) = read_sidecar_captions(entry)
    assert caption == Caption("a dog \ufffd on a beach", "en", "sidecar-json")
    caption.text.encode("utf-8")  # encodable


def test_xmp_sidecar_languages_and_title(tmp_path: Path) -> None:
    entry = entry_with(tmp_path, {"photo.xmp": XMP})
    assert read_sidecar_captions(entry) == [
        Caption("A red tram in Lisbon", "en", "xmp"),  # x-default duplicate dropped
        Caption("Um elétrico vermelho em Lisboa", "pt", "xmp"),
        Caption("Eine rote Straßenbahn in Lissabon", "de", "xmp"),
        Caption("Tram 28", None, "xmp"),
    ]


def test_xmp_attribute_form(tmp_path: Path) -> None:
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
           'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
           'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:title="Harbour at dawn"/>'
           '</rdf:RDF></x:xmpmeta>')
    entry = entry_with(tmp_path, {"photo.jpg.xmp": xmp})
    assert read_sidecar_captions(entry) == [Caption("Harbour at dawn", None, "xmp")]


@pytest.mark.parametrize(
    "name, content",
    [
        ("photo.json", "{not json"),
        ("photo.json", "[1, 2, 3]"),
        ("photo.json", b"\xff\xfe\x00garbage"),
        ("photo.xmp", "<x:xmpmeta><unclosed>"),
        ("photo.xmp", BILLION_LAUGHS),
    ],
)
def test_malformed_sidecars_skipped(
    tmp_path: Path, name: str, content: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    entry = entry_with(tmp_path, {name: content, "photo.txt": "still here"})
    assert read_sidecar_captions(entry) == [Caption("still here", None, "sidecar-txt")]
    assert "ignoring caption sidecar" in caplog.text


def test_vanished_sidecar_skipped(tmp_path: Path) -> None:
    entry = entry_with(tmp_path, {"photo.txt": "soon gone"})
    os.unlink(entry.sidecars[0].path)
    assert read_sidecar_captions(entry) == []


def write_manifest(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_manifest_relative_absolute_and_repeated_paths(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "b.png"
    manifest = write_manifest(tmp_path / "album" / "captions.jsonl", [
        json.dumps({"path": "a.jpg", "text": "A lighthouse", "lang": "en"}),
        "",
        "   ",
        json.dumps({"path": "./sub/../a.jpg", "text": "Ein Leuchtturm", "lang": "de"}),
        json.dumps({"path": "a.jpg", "text": "A lighthouse", "lang": "en"}),  # duplicate
        json.dumps({"path": str(absolute), "text": "Sans langue", "kind": "tags"}),
        json.dumps({"path": "c.jpg", "text": "   "}),  # blank text: skipped
    ])
    captions = load_caption_manifest(manifest)
    a = str(tmp_path / "album" / "a.jpg")
    assert captions == {
        a: [Caption("A lighthouse", "en", "manifest"), Caption("Ein Leuchtturm", "de", "manifest")],
        str(absolute): [Caption("Sans langue", None, "manifest")],
    }


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{broken", "invalid JSON"),
        ('["a.jpg", "text"]', "JSON object"),
        ('{"text": "no path"}', '"path"'),
        ('{"path": "a.jpg"}', '"text"'),
        ('{"path": "a.jpg", "text": "t", "lang": 3}', '"lang"'),
    ],
)
def test_manifest_error_names_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [
        json.dumps({"path": "a.jpg", "text": "fine"}), "", bad])
    with pytest.raises(ManifestError) as info:
        load_caption_manifest(manifest)
    err = info.value
    assert isinstance(err, FrozenLensError)
    assert (err.path, err.line) == (str(manifest), 3)
    assert f"{manifest}:3" in str(err) and message in str(err)


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_caption_manifest(tmp_path / "missing.jsonl")
    assert info.value.line is None


def test_signature_stable_and_sensitive(tmp_path: Path) -> None:
    entry = entry_with(tmp_path, {"photo.txt": "first"})
    manifest = [Caption("A", "en", "manifest"), Caption("B", None, "manifest")]
    sig = captions_signature(entry, manifest)
    assert sig == captions_signature(entry, list(reversed(manifest)))
    assert len(sig) == 16 and int(sig, 16) >= 0
    assert captions_signature(entry, manifest[:1]) != sig
    assert captions_signature(entry, [Caption("A", "de", "manifest"), manifest[1]]) != sig

    side = Path(entry.sidecars[0].path)
    side.write_text("second, longer caption")
    (edited,) = list(scan([tmp_path]))
    assert captions_signature(edited, manifest) != sig

    st = side.stat()
    os.utime(side, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    (touched,) = list(scan([tmp_path]))
    assert captions_signature(touched, manifest) != captions_signature(edited, manifest)

    (tmp_path / "photo.json").write_text('{"caption": "new"}')
    (added,) = list(scan([tmp_path]))
    assert captions_signature(added, manifest) != captions_signature(touched, manifest)


def test_signature_without_captions_is_constant() -> None:
    a = FileEntry("/x/a.jpg", 1, 2, ())
    b = FileEntry("/y/b.jpg", 3, 4, ())
    assert captions_signature(a, []) == captions_signature(b, [])
    c = FileEntry("/x/a.jpg", 1, 2, (SidecarRef("/x/a.txt", 5, 6),))
    assert captions_signature(c, []) != captions_signature(a, [])


@pytest.mark.skipif(not (KPA / "captions.jsonl").is_file(),
                    reason="run scripts/fetch_test_data.py for the kphotoalbum photos")
def test_real_kphotoalbum_manifest() -> None:
    captions = load_caption_manifest(KPA / "captions.jsonl")
    assert len(captions) == 24
    assert all(os.path.isfile(p) for p in captions)
    assert sum(len(v) for v in captions.values()) == 33
    spiff = captions[str(KPA / "spiff_2.jpg")]
    assert Caption("I've always loved animals. This was my beer eating pet named Spiff.",
                   "en", "manifest") in spiff
    entries = {e.path: e for e in scan([KPA])}
    assert set(entries) == set(captions)
