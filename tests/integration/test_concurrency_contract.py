"""The concurrency contract of encoders and searches (issue 11, section 2).

Encoders are called from many threads at once (the server runs one search per
core): no call may see another call's per-call settings (an NLLB tokenizer's
source language, a BLAS thread limit), every concurrent result equals the
serial one, and a burst of concurrent searches leaves the process's thread
counts (FAISS's OpenMP, BLAS, torch) exactly as it found them.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from frozenlens.engine import Engine
from tests.conftest import index_kphotoalbum

open_clip = pytest.importorskip("open_clip")

from frozenlens.models.openclip import OpenClipEncoder  # noqa: E402
from frozenlens.models.presets import NLLB_CODES  # noqa: E402

TINY_ARCH = "fl-concurrency-vit"
#: (text, ISO 639-1 tag or None) pairs issued concurrently; None → the encoder's default (English)
QUERIES = [
    ("ein Hund im Park", "de"),
    ("un chat sur le canapé", "fr"),
    ("el gato duerme", "es"),
    ("猫が寝ている", "ja"),
    ("собака бежит", "ru"),
    ("a red motorcycle", "en"),
    ("a rocket at night", None),
    ("貓在睡覺", "zh-Hant"),
]


def thread_counts() -> dict[str, int]:
    """What the calling thread sees of every thread pool in the process."""
    counts = {"faiss-omp": faiss.omp_get_max_threads(), "torch": torch.get_num_threads()}
    for lib in threadpool_info():
        counts[f"{lib['user_api']}:{lib['filepath']}"] = lib["num_threads"]
    return counts


# ------------------------------------------------- NLLB-style tokenizer path
class RecordingNllbTokenizer:
    """An NLLB-style tokenizer (``set_lang_fn`` marks it, as in open_clip's HFTokenizer):
    like the real one it keeps the source language as *state* and reads it while it
    tokenises each text (the real one releases the GIL meanwhile), puts that language's
    code token first, and records (text, language used) for every text it tokenises."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.context_length = inner.context_length
        self.current = NLLB_CODES["en"]
        self.seen: list[tuple[str, str]] = []
        codes = sorted(set(NLLB_CODES.values()))
        self.code_ids = {c: 1000 + i for i, c in enumerate(codes)}  # below the EOT id CLIP pools at

    def set_lang_fn(self, code: str) -> None:
        self.current = code

    def set_language(self, code: str) -> None:
        self.set_lang_fn(code)

    def __call__(self, texts, context_length=None):
        ids = self.inner(texts)  # (b, ctx): SOT tokens EOT 0...
        for row, text in enumerate(texts):
            time.sleep(0.0005)  # the real tokenizer releases the GIL while it encodes
            code = self.current
            ids[row, 0] = self.code_ids[code]  # NLLB: [src_lang_code] tokens </s>
            self.seen.append((text, code))
        return ids


@pytest.fixture(scope="module")
def nllb_style(tmp_path_factory) -> OpenClipEncoder:
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    path = tmp_path_factory.mktemp("tiny-nllb") / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    tokenizer = RecordingNllbTokenizer(open_clip.get_tokenizer(TINY_ARCH))
    return OpenClipEncoder.from_model(model, tokenizer, name="tiny-nllb", version="1", device="cpu")


def expected_code(lang: str | None) -> str:
    return NLLB_CODES.get(lang or "", NLLB_CODES["en"])


def test_concurrent_mixed_language_queries_are_tokenised_in_their_own_language(nllb_style):
    enc = nllb_style
    tok: RecordingNllbTokenizer = enc.tokenizer
    serial = {text: enc.encode_texts_in([text], lang) for text, lang in QUERIES}
    # the language reaches the tokenizer, and changes the vectors
    assert not np.allclose(serial["ein Hund im Park"], enc.encode_texts_in(["ein Hund im Park"], "ja"))
    tok.seen.clear()

    def work(worker: int) -> list[tuple[str, np.ndarray]]:
        out = []
        for j in range(12):
            text, lang = QUERIES[(worker + j) % len(QUERIES)]
            out.append((text, enc.encode_texts_in([text], lang)))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for f in [pool.submit(work, w) for w in range(8)] for r in f.result()]

    assert len(results) == 8 * 12
    for text, vec in results:
        np.testing.assert_allclose(vec, serial[text], rtol=0, atol=1e-6, err_msg=text)
    langs = dict(QUERIES)
    wrong = [(text, used) for text, used in tok.seen if used != expected_code(langs[text])]
    assert len(tok.seen) == 8 * 12 and not wrong, wrong[:5]
    assert tok.current == NLLB_CODES["en"]  # the shared tokenizer's default is untouched


def test_concurrent_batches_in_several_languages_agree_with_serial(nllb_style):
    """Multi-text calls (a caption batch per language, as the indexer and the reranker make)."""
    enc = nllb_style
    batches = [([t for t, lang in QUERIES if lang == want] * 3, want) for want in ("de", "fr", "ja", None)]
    serial = [enc.encode_texts_in(texts, lang) for texts, lang in batches]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(enc.encode_texts_in, *batches[i % 4]) for i in range(24)]
        for i, f in enumerate(futures):
            np.testing.assert_allclose(f.result(), serial[i % 4], rtol=0, atol=1e-6)


def test_concurrent_image_embeddings_with_region_tokens_agree_with_serial(nllb_style):
    enc = nllb_style
    assert enc.image_tokens == 4  # the ViT path that also returns region tokens
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8) for _ in range(4)]
    serial = [enc.embed_prepared(b) for b in batches]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(enc.embed_prepared, batches[i % 4]) for i in range(24)]
        for i, f in enumerate(futures):
            got, want = f.result(), serial[i % 4]
            np.testing.assert_allclose(got.semantic, want.semantic, rtol=0, atol=1e-6)
            np.testing.assert_allclose(got.tokens, want.tokens, rtol=0, atol=1e-6)


# ------------------------------------------- the real lite encoder, real index
@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    root = tmp_path_factory.mktemp("contract")
    return index_kphotoalbum(root, testdata)[1]


LITE_QUERIES = ["un lapin", "a pool table", "ein Hund", "Grand Canyon", "nieve en la montaña",
                "собака", "le nord du Danemark", "snow"]


def hits(engine: Engine, q: str) -> list[tuple[int, float]]:
    return [(h.id, round(h.score, 5)) for h in engine.search(q, k=5)]


@pytest.mark.slow
def test_concurrent_lite_searches_equal_serial_and_leave_thread_counts_alone(archive):
    with Engine.open(archive) as engine:
        serial = {q: hits(engine, q) for q in LITE_QUERIES}
        before = thread_counts()
        fresh: dict[str, int] = {}
        t = threading.Thread(target=lambda: fresh.update(thread_counts()))
        t.start()
        t.join()

        def work(worker: int) -> None:
            for j in range(10):
                q = LITE_QUERIES[(worker + j) % len(LITE_QUERIES)]
                assert hits(engine, q) == serial[q], q

        with ThreadPoolExecutor(6) as pool:
            for f in [pool.submit(work, w) for w in range(6)]:
                f.result()
            # the pool's own threads, after their searches, see what a fresh thread sees
            seen_in_workers = [f.result() for f in [pool.submit(thread_counts) for _ in range(12)]]

        assert thread_counts() == before
        assert all(c == fresh for c in seen_in_workers), seen_in_workers[0]
        # and a bulk encode after the burst still has the BLAS threads it had before
        assert engine.encoder.encode_texts(LITE_QUERIES * 2).shape == (16, 512)
        assert thread_counts() == before
