"""Category retrieval (Fashion-MNIST with multilingual class captions): metrics on
hand-built score matrices, the packaged phrasings, the loader on tiny folders
written here, evaluation with a fake encoder, and — when
``scripts/fetch_fashion_mnist.py`` has been run — the real `lite` encoder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenlens.errors import DatasetError, EvalError
from frozenlens.eval.categories import (
    CLASS_CAPTIONS,
    MAP_DEPTH,
    CategoryDataset,
    CategoryMetrics,
    category_metrics,
    class_captions,
    evaluate_categories,
    load_fashion_mnist,
)
from frozenlens.eval.runner import RerankInput
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings
from tests.conftest import testdata_dir as _testdata_dir

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "tr", "ar", "zh", "ja", "ko", "th")


# -- metrics: a hand-computed 3 queries x 5 images case ----------------------
#
# images 0,1 are class 0; images 2,3,4 class 1. Ranked relevance (1 = relevant):
#   q0 (class 0): 0.9 img0, 0.8 img2, 0.5 img3, 0.2 img4, 0.1 img1   -> 1 0 0 0 1
#   q1 (class 1): 0.6 img4, then a 0.5 tie img0, img1 (irrelevant) and
#                 img2 (relevant): pessimistic, irrelevant first; 0.4 img3 -> 1 0 0 1 1
#   q2 (class 0): a 0.7 tie img0 (relevant) / img2 (irrelevant) at the top,
#                 irrelevant first; 0.3 img1; 0.1 img3, img4          -> 0 1 1 0 0
# P@1 = (1 + 1 + 0) / 3; P@5 = (2/5 + 3/5 + 2/5) / 3
# AP  q0 = (1/1 + 2/5) / 2 = 0.7;  q1 = (1/1 + 2/4 + 3/5) / 3 = 0.7;  q2 = (1/2 + 2/3) / 2
SCORES = np.array(
    [
        [0.9, 0.1, 0.8, 0.5, 0.2],
        [0.5, 0.5, 0.5, 0.4, 0.6],
        [0.7, 0.3, 0.7, 0.1, 0.1],
    ],
    dtype=np.float32,
)
QUERY_LABELS = np.array([0, 1, 0])
IMAGE_LABELS = np.array([0, 0, 1, 1, 1])


def test_metrics_on_hand_computed_case():
    m = category_metrics(SCORES, QUERY_LABELS, IMAGE_LABELS, ks=(1, 5, 10))
    assert m.p_at(1) == pytest.approx(2 / 3)
    assert m.p_at(5) == pytest.approx((0.4 + 0.6 + 0.4) / 3)
    assert m.p_at(10) == pytest.approx((0.2 + 0.3 + 0.2) / 3)  # 5 images: still divided by k
    assert m.map100 == pytest.approx((0.7 + 0.7 + (1 / 2 + 2 / 3) / 2) / 3)
    assert m.r1 == m.p_at(1)
    assert m.as_dict() == {"p1": m.p_at(1), "p5": m.p_at(5), "p10": m.p_at(10), "map100": m.map100, "r1": m.r1}


def test_metrics_do_not_depend_on_image_order():
    base = category_metrics(SCORES, QUERY_LABELS, IMAGE_LABELS)
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(SCORES.shape[1])
        assert category_metrics(SCORES[:, perm], QUERY_LABELS, IMAGE_LABELS[perm]) == base


def test_constant_scores_give_the_worst_ranking():
    # 10 classes x 10 images, 100 images: every query sees its 10 relevant images last (ranks 91-100)
    image_labels = np.repeat(np.arange(10), 10)
    query_labels = np.arange(10)
    m = category_metrics(np.full((10, 100), 0.5, np.float32), query_labels, image_labels)
    assert m.p_at(1) == 0.0 and m.r1 == 0.0
    assert m.p_at(5) == 0.0 and m.p_at(10) == 0.0
    assert m.map100 == pytest.approx(np.mean([j / (90 + j) for j in range(1, 11)]))


def test_perfect_ranking_gives_map_one_above_and_below_the_depth():
    for per_class in (7, MAP_DEPTH + 50):  # fewer relevant than the depth, and more
        image_labels = np.repeat([0, 1], per_class)
        scores = np.stack([image_labels == 0, image_labels == 1]).astype(np.float32)  # (2, I)
        m = category_metrics(scores, np.array([0, 1]), image_labels)
        assert m.map100 == pytest.approx(1.0) and m.p_at(1) == 1.0
        assert m.p_at(10) == pytest.approx(min(per_class, 10) / 10)


def _reference(scores: np.ndarray, q: np.ndarray, im: np.ndarray, k: int) -> tuple[float, float]:
    """P@k and AP@100 of one query the slow way (pessimistic ties)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), im[i] == q))
    rel = [im[i] == q for i in order]
    p = sum(rel[:k]) / k
    hits, ap = 0, 0.0
    for j, r in enumerate(rel[:MAP_DEPTH], 1):
        if r:
            hits += 1
            ap += hits / j
    return p, ap / min(MAP_DEPTH, sum(rel))


def test_metrics_match_a_slow_reference_on_tied_random_scores():
    rng = np.random.default_rng(7)
    image_labels = rng.integers(0, 4, 240)
    query_labels = rng.integers(0, 4, 30)
    scores = rng.integers(0, 6, (30, 240)).astype(np.float32)  # few values: many ties
    m = category_metrics(scores, query_labels, image_labels, ks=(1, 3, 10))
    for k in (1, 3, 10):
        expected = np.mean([_reference(scores[i], query_labels[i], image_labels, k)[0] for i in range(30)])
        assert m.p_at(k) == pytest.approx(expected)
    expected_map = np.mean([_reference(scores[i], query_labels[i], image_labels, 1)[1] for i in range(30)])
    assert m.map100 == pytest.approx(expected_map)


def test_metrics_reject_bad_input():
    with pytest.raises(EvalError, match="no image has the class"):
        category_metrics(SCORES, np.array([0, 1, 2]), IMAGE_LABELS)
    with pytest.raises(EvalError, match="NaN"):
        category_metrics(np.where(SCORES > 0.85, np.nan, SCORES), QUERY_LABELS, IMAGE_LABELS)
    with pytest.raises(EvalError, match="query_labels"):
        category_metrics(SCORES, np.array([0, 1]), IMAGE_LABELS)
    with pytest.raises(EvalError, match="image_labels"):
        category_metrics(SCORES, QUERY_LABELS, IMAGE_LABELS.astype(np.float32))
    with pytest.raises(EvalError, match="ks"):
        category_metrics(SCORES, QUERY_LABELS, IMAGE_LABELS, ks=(0, 5))
    with pytest.raises(EvalError, match="P@7"):
        category_metrics(SCORES, QUERY_LABELS, IMAGE_LABELS).p_at(7)


def test_macro_average():
    a = CategoryMetrics(precision=((1, 1.0), (10, 0.5)), map100=0.4, r1=1.0)
    b = CategoryMetrics(precision=((1, 0.0), (10, 0.3)), map100=0.2, r1=0.0)
    mean = CategoryMetrics.macro_average([a, b])
    assert mean.p_at(1) == 0.5 and mean.p_at(10) == pytest.approx(0.4)
    assert mean.map100 == pytest.approx(0.3) and mean.r1 == 0.5
    with pytest.raises(EvalError):
        CategoryMetrics.macro_average([])
    with pytest.raises(EvalError, match="ks"):
        CategoryMetrics.macro_average([a, CategoryMetrics(precision=((1, 0.0),), map100=0.0, r1=0.0)])


# -- the packaged phrasings ---------------------------------------------------
def test_every_class_and_language_has_disjoint_phrasing_sets():
    assert tuple(CLASS_CAPTIONS) == FASHION_CLASSES
    for name in FASHION_CLASSES:
        assert tuple(CLASS_CAPTIONS[name]) == LANGUAGES, name
        for lang in LANGUAGES:
            a, b = CLASS_CAPTIONS[name][lang]["A"], CLASS_CAPTIONS[name][lang]["B"]
            assert len(a) >= 3 and len(b) >= 2, (name, lang)
            for text in (*a, *b):
                assert text == text.strip() and text, (name, lang, text)
            folded_a, folded_b = {t.casefold() for t in a}, {t.casefold() for t in b}
            assert len(folded_a) == len(a) and len(folded_b) == len(b), (name, lang)  # no repeats
            assert not folded_a & folded_b, (name, lang, folded_a & folded_b)


def test_no_phrase_names_two_classes_in_one_language():
    for lang in LANGUAGES:
        owner: dict[str, str] = {}
        for name in FASHION_CLASSES:
            for text in (*CLASS_CAPTIONS[name][lang]["A"], *CLASS_CAPTIONS[name][lang]["B"]):
                assert owner.setdefault(text.casefold(), name) == name, (lang, text)


def test_captions_are_read_lazily_and_once():
    assert class_captions() is class_captions()
    assert dict(CLASS_CAPTIONS) == dict(class_captions())


def _dataset(per_class: int = 2, classes: Sequence[int] = range(10)) -> CategoryDataset:
    labels = np.repeat(np.asarray(list(classes)), per_class)
    paths = tuple(Path(f"/nowhere/{i:03d}.png") for i in range(len(labels)))
    return CategoryDataset(name="toy", paths=paths, labels=labels, class_names=FASHION_CLASSES)


def test_queries_of_sets_a_and_b_are_disjoint_per_class_and_language():
    ds = _dataset()
    assert ds.languages() == sorted(LANGUAGES)
    for lang in LANGUAGES:
        texts_a, labels_a = ds.queries(lang, "A")
        texts_b, labels_b = ds.queries(lang, "B")
        assert labels_a.dtype == np.int64 and len(texts_a) == len(labels_a) >= 30
        assert len(texts_b) == len(labels_b) >= 20
        assert set(labels_a.tolist()) == set(labels_b.tolist()) == set(range(10))
        for c in range(10):
            in_a = {t for t, lab in zip(texts_a, labels_a, strict=True) if lab == c}
            in_b = {t for t, lab in zip(texts_b, labels_b, strict=True) if lab == c}
            assert in_a and in_b and not in_a & in_b, (lang, c)


def test_queries_only_for_classes_present_and_reject_unknowns():
    ds = _dataset(classes=[1, 8])
    _, labels = ds.queries("en", "B")
    assert sorted(set(labels.tolist())) == [1, 8]
    with pytest.raises(EvalError, match="phrasing set"):
        ds.queries("en", "C")
    with pytest.raises(EvalError, match="language 'xx'"):
        ds.queries("xx", "A")
    odd = CategoryDataset(name="odd", paths=(Path("a.png"),), labels=np.array([0]), class_names=("Hat",))
    with pytest.raises(EvalError, match="Hat"):
        odd.queries("en", "A")


def test_dataset_head_subset_and_validation():
    ds = _dataset(per_class=3)
    assert len(ds) == 30 and ds.labels.dtype == np.int64 and not ds.labels.flags.writeable
    head = ds.head(2)
    assert len(head) == 20 and head.class_counts().tolist() == [2] * 10
    assert head.paths[:2] == ds.paths[:2] and head.paths[2] == ds.paths[3]  # first n per class, order kept
    assert len(ds.head(99)) == 30
    sub = ds.subset(ds.labels == 4)
    assert sub.labels.tolist() == [4, 4, 4] and sub.paths == ds.paths[12:15]
    assert ds.subset([5, 0]).paths == (ds.paths[5], ds.paths[0])
    with pytest.raises(EvalError):
        ds.head(0)
    with pytest.raises(EvalError, match="mask"):
        ds.subset(np.ones(3, bool))
    with pytest.raises(EvalError, match="outside"):
        ds.subset([30])
    with pytest.raises(EvalError, match="labels"):
        CategoryDataset(name="bad", paths=(Path("a"),), labels=np.array([10]), class_names=FASHION_CLASSES)
    with pytest.raises(EvalError, match="shape"):
        CategoryDataset(name="bad", paths=(Path("a"),), labels=np.array([0, 1]), class_names=FASHION_CLASSES)


# -- the loader -----------------------------------------------------------------
def _write_set(root: Path, per_class: int = 2) -> dict:
    """A miniature of the fetcher's output: class c drawn in grey level 20 c + 10."""
    data: dict = {"classes": list(FASHION_CLASSES), "train": [], "test": []}
    for split in ("train", "test"):
        for c in range(10):
            for j in range(per_class):
                rel = f"{split}/{c:02d}/{100 * c + j:05d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), (20 * c + 10,) * 3).save(root / rel)
                data[split].append([rel, c])
    (root / "labels.json").write_text(json.dumps(data), encoding="utf-8")
    return data


def test_loader_reads_what_the_fetcher_writes(tmp_path):
    _write_set(tmp_path)
    ds = load_fashion_mnist(tmp_path, "test")
    assert ds.name == "fashion-mnist[test]" and len(ds) == 20
    assert ds.class_names == FASHION_CLASSES and ds.class_counts().tolist() == [2] * 10
    assert ds.paths[2] == tmp_path / "test" / "01" / "00100.png" and ds.labels[2] == 1
    assert len(load_fashion_mnist(tmp_path, "train")) == 20
    with pytest.raises(EvalError, match="split"):
        load_fashion_mnist(tmp_path, "val")


def test_loader_errors_on_missing_folder_or_labels(tmp_path):
    with pytest.raises(DatasetError, match="folder not found") as exc:
        load_fashion_mnist(tmp_path / "absent", "test")
    assert exc.value.path == str(tmp_path / "absent")
    with pytest.raises(DatasetError, match="labels file not found"):
        load_fashion_mnist(tmp_path, "test")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot read labels"),
    ("[1, 2]", "expected an object"),
    ('{"classes": [], "test": [["test/00/00000.png", 0]]}', '"classes"'),
    ('{"classes": ["a"], "train": []}', "'test' must be a non-empty list"),
    ('{"classes": ["a"], "test": [["test/00/00000.png", 1]]}', r"test\[0\]: expected"),
    ('{"classes": ["a"], "test": [["test/00/00000.png", true]]}', r"test\[0\]: expected"),
    ('{"classes": ["a"], "test": [["x.png"]]}', r"test\[0\]: expected"),
    ('{"classes": ["a"], "test": [["../outside.png", 0]]}', "inside the folder"),
    ('{"classes": ["a"], "test": [["/etc/passwd", 0]]}', "inside the folder"),
    ('{"classes": ["a"], "test": [["test/00/missing.png", 0]]}', "1 of 1 test images not found"),
])
def test_loader_errors_on_bad_labels_json(tmp_path, content, message):
    (tmp_path / "labels.json").write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as exc:
        load_fashion_mnist(tmp_path, "test")
    assert exc.value.path == str(tmp_path / "labels.json")


# -- evaluation with a fake encoder -------------------------------------------
class GreyClassEncoder(Encoder):
    """Images → one-hot of the class their grey level encodes; texts → one-hot of
    the class whose packaged phrasing they are (zeros when none)."""

    identity = EncoderIdentity(name="grey-class", version="1", dim=10, visual_dim=10)
    input_size = 4
    draft_size = 4

    def __init__(self) -> None:
        self.langs: list[str | None] = []

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((4, 4)), np.uint8)

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        classes = np.rint((batch[:, 0, 0, 0].astype(np.float32) - 10) / 20).astype(int)
        v = np.eye(10, dtype=np.float32)[classes]  # (n, 10)
        return ImageEmbeddings(semantic=v, visual=v)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        owner = {t: c for c, name in enumerate(FASHION_CLASSES)
                 for sets in CLASS_CAPTIONS[name].values() for s in sets.values() for t in s}
        out = np.zeros((len(texts), 10), np.float32)
        for i, t in enumerate(texts):
            if t in owner:
                out[i, owner[t]] = 1.0
        return out

    def encode_texts_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        self.langs.append(lang)
        return self.encode_texts(texts)


def test_evaluate_categories_with_fake_encoder_rerank_and_precomputed_images(tmp_path):
    _write_set(tmp_path, per_class=3)
    ds = load_fashion_mnist(tmp_path, "test")
    encoder = GreyClassEncoder()
    seen = []
    result = evaluate_categories(ds, encoder, languages=["de", "ja"], progress=seen.append)
    assert encoder.langs == ["de", "ja"]  # the language reaches the text tower
    assert [lang for lang, _, _ in result.per_language] == ["de", "ja"]
    assert [n for _, n, _ in result.per_language] == [20, 20]  # 10 classes x 2 set-B phrasings
    assert result.mean.p_at(1) == 1.0 and result.mean.map100 == pytest.approx(1.0)
    assert result.mean.p_at(5) == pytest.approx(3 / 5)  # 3 images per class
    assert not result.reranked and result.phrasing_set == "B" and result.n_images == 30
    assert seen[0].stage == "images" and seen[-1].stage == "texts" and seen[-1].done == seen[-1].total == 40

    requests: list[RerankInput] = []

    def reverse(request: RerankInput) -> np.ndarray:
        requests.append(request)
        return -request.scores

    images = encoder.embed_prepared(np.stack([encoder.prepare(Image.open(p)) for p in ds.paths]))
    worse = evaluate_categories(ds, encoder, languages=["en"], phrasing_set="A", rerank=reverse, images=images)
    assert worse.reranked and worse.phrasing_set == "A" and worse.mean.p_at(1) == 0.0
    (req,) = requests
    assert req.language == "en" and req.scores.shape == (30, 30) and req.scores.dtype == np.float32
    assert list(req.image_paths) == list(ds.paths) and req.image_embeddings is images
    assert req.texts[:3] == list(CLASS_CAPTIONS["T-shirt/top"]["en"]["A"])

    d = result.as_dict()
    assert d["mean"]["languages"] == 2 and d["languages"][0]["language"] == "de" and d["languages"][0]["p1"] == 1.0
    md = result.to_markdown()
    assert "| de | 20 | 100.0 | 30.0 | 100.0 |" in md and "| **mean (2)** | 40 |" in md

    with pytest.raises(EvalError, match="rerank hook returned shape"):
        evaluate_categories(ds, encoder, languages=["en"], rerank=lambda r: np.zeros((1, 1)), images=images)
    with pytest.raises(EvalError, match="embeddings for 30 images"):
        evaluate_categories(ds, encoder, images=ImageEmbeddings(semantic=images.semantic[:5], visual=images.visual[:5]))
    with pytest.raises(EvalError, match="xx"):
        evaluate_categories(ds, encoder, languages=["xx"], images=images)


# -- the real `lite` encoder on the fetched set ------------------------------
FASHION = _testdata_dir() / "fashion-mnist"


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION / "labels.json").is_file(),
                    reason="run scripts/fetch_fashion_mnist.py to fetch Fashion-MNIST")
def test_lite_finds_fashion_mnist_categories_above_chance(lite_encoder):
    # Measured when written on the head (20 per class, 200 images) of the test split, set-B
    # queries, mean over the 15 languages (300 queries): P@1 24.3 %, P@10 18.8 %, mAP@100 16.1 %.
    # Chance (random scores) is 10 % P@1 and P@10 and 7 % mAP@100; the floors keep about half
    # the measured margin over chance.
    ds = load_fashion_mnist(FASHION, "test").head(20)
    assert len(ds) == 200
    result = evaluate_categories(ds, lite_encoder)
    assert len(result.per_language) == 15
    summary = {lang: round(m.p_at(1), 2) for lang, _, m in result.per_language}
    assert result.mean.p_at(1) >= 0.17, summary
    assert result.mean.p_at(10) >= 0.14, summary
    assert result.mean.map100 >= 0.12, summary
