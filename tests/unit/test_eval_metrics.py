"""Unit tests of the evaluation harness: metrics against hand-computed values,
the dataset readers on tiny files written here, the runner and report with a
fake encoder, and the Tux Paint caption parsing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenlens.errors import DatasetError, EvalError, FrozenLensError
from frozenlens.eval import (
    EvalDataset,
    EvalImage,
    RerankInput,
    RetrievalMetrics,
    evaluate,
    load_dataset,
    read_karpathy,
    read_manifest,
    read_xm3600,
    retrieval_metrics,
    to_markdown,
    write_report,
)
from frozenlens.eval import metrics as metrics_mod
from frozenlens.eval.metrics import i2t_ranks, t2i_ranks
from frozenlens.eval.tuxpaint import normalise_locale, parse_caption_file, stamp_split
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings

# -- metrics: a hand-computed 5 captions x 3 images case ---------------------
#
# images A=0, B=1, C=2; captions t0,t1 -> A, t2,t3 -> B, t4 -> C
#
#            A     B     C
#   t0     0.9   0.1   0.2      T2I: A is top                       -> rank 1
#   t1     0.3   0.5   0.3      T2I: B beats A, C ties A (counts)  -> rank 3
#   t2     0.2   0.4   0.6      T2I: C beats B                      -> rank 2
#   t3     0.1   0.7   0.5      T2I: B is top                       -> rank 1
#   t4     0.5   0.5   0.5      T2I: everything ties, pessimistic   -> rank 3
#
# I2T (rank of the best own caption; wrong captions scoring >= it count):
#   A: own best t0 0.9; no other text >= 0.9                         -> rank 1
#   B: own best t3 0.7; no other text >= 0.7                         -> rank 1
#   C: own t4 0.5; t2 0.6 beats it, t3 0.5 ties it (counts)          -> rank 3
SCORES = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.3, 0.5, 0.3],
        [0.2, 0.4, 0.6],
        [0.1, 0.7, 0.5],
        [0.5, 0.5, 0.5],
    ],
    dtype=np.float32,
)
TEXT_IMAGE = np.array([0, 0, 1, 1, 2])


def test_hand_computed_ranks():
    assert t2i_ranks(SCORES, TEXT_IMAGE).tolist() == [1, 3, 2, 1, 3]
    ranks, queries = i2t_ranks(SCORES, TEXT_IMAGE)
    assert ranks.tolist() == [1, 1, 3]
    assert queries.tolist() == [0, 1, 2]


def test_hand_computed_metrics():
    m = retrieval_metrics(SCORES, TEXT_IMAGE)
    # T2I ranks 1,3,2,1,3: R@1 = 2/5; all <= 3 so R@5 = R@10 = 1; mean 10/5 = 2; median 2
    assert m.t2i_r1 == pytest.approx(0.4)
    assert m.t2i_r5 == m.t2i_r10 == 1.0
    assert m.t2i_mean_rank == pytest.approx(2.0)
    assert m.t2i_median_rank == 2.0
    # I2T ranks 1,1,3: R@1 = 2/3; mean 5/3; median 1
    assert m.i2t_r1 == pytest.approx(2 / 3)
    assert m.i2t_r5 == m.i2t_r10 == 1.0
    assert m.i2t_mean_rank == pytest.approx(5 / 3)
    assert m.i2t_median_rank == 1.0


def test_ties_among_own_captions_do_not_count():
    # image 0 has t0, t1; image 1 has t2. Column 0: t0 = t1 = t2 = 0.8.
    # t0/t1 tying each other is fine (either is correct); t2 is wrong and
    # ties, so it is ranked first: rank 2. Column 1: t2 0.9 is top: rank 1.
    scores = np.array([[0.8, 0.1], [0.8, 0.1], [0.8, 0.9]], np.float32)
    ranks, _ = i2t_ranks(scores, np.array([0, 0, 1]))
    assert ranks.tolist() == [2, 1]


def test_recall_at_5_and_10_on_constructed_ranks():
    # 12 texts, text i belongs to image i; give text i's image exactly rank r_i by
    # putting r_i - 1 wrong images above it (1.0 vs 0.5, everything else 0).
    wanted = [1, 2, 5, 6, 10, 11, 1, 3, 12, 7, 4, 9]
    n = len(wanted)
    scores = np.zeros((n, n), np.float32)
    for i, r in enumerate(wanted):
        scores[i, i] = 0.5
        others = [j for j in range(n) if j != i][: r - 1]
        scores[i, others] = 1.0
    m = retrieval_metrics(scores, np.arange(n))
    assert t2i_ranks(scores, np.arange(n)).tolist() == wanted
    assert m.t2i_r1 == pytest.approx(2 / 12)  # ranks 1, 1
    assert m.t2i_r5 == pytest.approx(6 / 12)  # 1, 2, 5, 1, 3, 4
    assert m.t2i_r10 == pytest.approx(10 / 12)  # all but 11 and 12
    assert m.t2i_mean_rank == pytest.approx(71 / 12)
    assert m.t2i_median_rank == 5.5  # sorted: ... 5, 6 ... -> (5 + 6) / 2


def test_constant_scores_give_worst_ranks():
    scores = np.full((6, 3), 0.25, np.float32)
    text_image = np.array([0, 0, 1, 1, 2, 2])
    m = retrieval_metrics(scores, text_image)
    assert m.t2i_r1 == 0.0 and m.t2i_mean_rank == 3.0
    assert m.i2t_r1 == 0.0 and m.i2t_mean_rank == 5.0  # 1 + 4 wrong captions tie


def test_images_without_captions_are_not_i2t_queries():
    scores = np.array([[0.9, 0.1, 0.95]], np.float32)  # image 2 has no caption (a distractor)
    ranks, queries = i2t_ranks(scores, np.array([0]))
    assert queries.tolist() == [0] and ranks.tolist() == [1]
    assert t2i_ranks(scores, np.array([0])).tolist() == [2]


def _reference_ranks(scores: np.ndarray, text_image: np.ndarray) -> tuple[list[int], list[int]]:
    """The definition, spelled out with loops."""
    t2i = []
    for t in range(scores.shape[0]):
        gt = text_image[t]
        t2i.append(1 + sum(1 for j in range(scores.shape[1]) if j != gt and scores[t, j] >= scores[t, gt]))
    i2t = []
    for i in range(scores.shape[1]):
        own = [t for t in range(scores.shape[0]) if text_image[t] == i]
        if not own:
            continue
        best = max(scores[t, i] for t in own)
        i2t.append(1 + sum(1 for t in range(scores.shape[0]) if text_image[t] != i and scores[t, i] >= best))
    return t2i, i2t


def test_vectorised_ranks_match_the_definition_with_ties_and_chunking(monkeypatch):
    monkeypatch.setattr(metrics_mod, "CHUNK", 7)  # force several chunks both ways
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((40, 17)), 1).astype(np.float32)  # 11 values: many ties
    text_image = rng.integers(0, 17, size=40)
    t2i, i2t = _reference_ranks(scores, text_image)
    assert t2i_ranks(scores, text_image).tolist() == t2i
    assert i2t_ranks(scores, text_image)[0].tolist() == i2t


@pytest.mark.parametrize(
    ("scores", "text_image"),
    [
        (np.zeros((2, 2), np.float32), np.array([0, 2])),  # index out of range
        (np.zeros((2, 2), np.float32), np.array([0])),  # wrong length
        (np.array([[np.nan, 0.0]], np.float32), np.array([0])),  # NaN
        (np.zeros((0, 2), np.float32), np.zeros(0, np.int64)),  # empty
        (np.zeros((2, 2), np.float32), np.array([0.0, 1.0])),  # float indices
    ],
)
def test_bad_metric_inputs_raise(scores, text_image):
    with pytest.raises(EvalError):
        retrieval_metrics(scores, text_image)


def test_macro_average_is_unweighted():
    a = retrieval_metrics(SCORES, TEXT_IMAGE)
    b = RetrievalMetrics(**{k: 0.0 for k in a.to_dict()})
    mean = RetrievalMetrics.macro_average([a, b])
    assert mean.t2i_r1 == pytest.approx(0.2)
    assert mean.i2t_mean_rank == pytest.approx(5 / 6)
    with pytest.raises(EvalError):
        RetrievalMetrics.macro_average([])


# -- readers -----------------------------------------------------------------
def _touch_images(root: Path, names: Sequence[str]) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(p)


def _write_lines(path: Path, objs: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def test_manifest_reader(tmp_path):
    _touch_images(tmp_path, ["img/a.jpg", "img/b.jpg", "img/c.jpg"])
    manifest = _write_lines(tmp_path / "manifest.jsonl", [
        {"image": "img/a.jpg", "captions": {"en": ["a red square", "red"], "de": ["ein rotes Quadrat"]},
         "split": "test", "extra": 1},
        {"image": "img/b.jpg", "captions": {"en": "just one string"}, "split": "train"},
        {"image": "img/c.jpg", "captions": {}},
    ])
    with open(manifest, "a", encoding="utf-8") as f:
        f.write("\n")  # blank lines are fine
    ds = read_manifest(manifest)
    assert len(ds) == 3 and ds.name == tmp_path.name
    first = ds.images[0]
    assert first.path == tmp_path / "img" / "a.jpg"
    assert first.captions == {"de": ("ein rotes Quadrat",), "en": ("a red square", "red")}
    assert ds.images[1].captions == {"en": ("just one string",)}
    assert ds.languages() == ["de", "en"] and ds.coverage() == {"de": 1, "en": 2}
    assert ds.languages(min_coverage=0.5) == ["en"]
    test = read_manifest(manifest, split="test")
    assert [im.key for im in test.images] == ["img/a.jpg"]
    with pytest.raises(EvalError, match="no images in split 'val'"):
        read_manifest(manifest, split="val")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"captions": {"en": ["x"]}}', '"image" must be'),
        ('{"image": "img/a.jpg", "captions": ["x"]}', '"captions" must be'),
        ('{"image": "img/a.jpg", "captions": {"en": [1]}}', "list of strings"),
        ('{"image": "img/a.jpg", "captions": {"en": ["  "]}}', "empty caption"),
        ('{"image": "img/a.jpg", "captions": {"en": "x"}, "split": 3}', '"split" must be'),
    ],
)
def test_manifest_malformed_line_names_file_and_line(tmp_path, line, message):
    _touch_images(tmp_path, ["img/a.jpg"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "img/b.jpg", "captions": {"en": "ok"}}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as info:
        read_manifest(manifest)
    assert info.value.line == 3 and info.value.path == str(manifest)
    assert f"{manifest}:3:" in str(info.value)


def test_manifest_duplicate_and_missing_images(tmp_path):
    _touch_images(tmp_path, ["a.jpg"])
    dup = _write_lines(tmp_path / "dup.jsonl", [{"image": "a.jpg", "captions": {}}] * 2)
    with pytest.raises(DatasetError, match="already listed on line 1") as info:
        read_manifest(dup)
    assert info.value.line == 2
    missing = _write_lines(tmp_path / "missing.jsonl", [
        {"image": "a.jpg", "captions": {"en": "x"}}, {"image": "gone.jpg", "captions": {"en": "y"}},
    ])
    with pytest.raises(DatasetError, match="1 of 2 image files not found: .*gone.jpg"):
        read_manifest(missing)
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    bad_utf8 = tmp_path / "latin1.jsonl"
    bad_utf8.write_bytes(b'{"image": "a.jpg", "captions": {"en": "ok"}}\n{"image": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="not UTF-8") as info:
        read_manifest(bad_utf8)
    assert info.value.line == 2


def _karpathy_json(tmp_path: Path) -> Path:
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "x1.jpg", "split": "test",
         "sentences": [{"raw": f"caption {i}", "tokens": []} for i in range(7)]},
        {"filepath": "val2014", "filename": "x2.jpg", "split": "val",
         "sentences": [{"raw": "val caption"}]},
        {"filepath": "train2014", "filename": "x3.jpg", "split": "restval",
         "sentences": [{"raw": "train caption"}]},
    ]}
    _touch_images(tmp_path / "coco", ["val2014/x1.jpg", "val2014/x2.jpg"])  # x3 not present
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_karpathy_reader(tmp_path):
    path = _karpathy_json(tmp_path)
    ds = read_karpathy(path, image_root=tmp_path / "coco")  # default split: test
    assert ds.name == "coco[test]" and len(ds) == 1
    im = ds.images[0]
    assert im.path == tmp_path / "coco" / "val2014" / "x1.jpg"
    assert im.captions["en"] == tuple(f"caption {i}" for i in range(5))  # first 5 of 7
    assert len(read_karpathy(path, image_root=tmp_path / "coco", max_captions=None).images[0].captions["en"]) == 7
    val = load_dataset(path, "coco", image_root=tmp_path / "coco", split="val")
    assert [i.key for i in val.images] == ["x2.jpg"]
    with pytest.raises(DatasetError, match="image files not found"):  # restval image is missing
        read_karpathy(path, image_root=tmp_path / "coco", split="restval")
    path.write_text('{"images": [{"filename": "a.jpg", "sentences": "no"}]}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r'images\[0\]: "sentences" must be'):
        read_karpathy(path)


def test_xm3600_reader(tmp_path):
    (tmp_path / "images").mkdir()
    _touch_images(tmp_path / "images", ["000411001ff7dd4f.jpg", "00b1e5e4a1d3c0f2.jpg"])
    line1 = {
        "image/key": "000411001ff7dd4f", "image/locale": "ar",
        "ar": {"caption": ["نص عربي", "نص آخر"], "caption/tokenized": ["x"], "caption/tokenized/lowercase": ["x"]},
        "en": {"caption": ["A man on a bike."], "caption/tokenized": ["a man on a bike ."]},
        "zh": {"caption": ["一个骑自行车的人"]},
    }
    line2 = {"image/key": "00b1e5e4a1d3c0f2", "image/locale": "en",
             "en": {"caption": ["Two dogs."]}, "ar": {"caption": ["كلبان"]}, "zh": {"caption": ["两只狗"]}}
    path = _write_lines(tmp_path / "captions.jsonl", [line1, line2])
    ds = read_xm3600(path)  # images/ beside the file
    assert ds.name == "xm3600" and len(ds) == 2
    assert ds.images[0].path == tmp_path / "images" / "000411001ff7dd4f.jpg"
    assert ds.images[0].captions == {
        "ar": ("نص عربي", "نص آخر"), "en": ("A man on a bike.",), "zh": ("一个骑自行车的人",),
    }
    assert ds.languages() == ["ar", "en", "zh"]
    with pytest.raises(EvalError, match="no splits"):
        load_dataset(path, "xm3600", split="test")
    broken = _write_lines(tmp_path / "broken.jsonl", [line1, {"image/key": "k", "en": ["not an object"]}])
    with pytest.raises(DatasetError, match="language 'en'") as info:
        read_xm3600(broken, image_root=tmp_path / "images")
    assert info.value.line == 2


def test_urban1k_reader(tmp_path):
    root = tmp_path / "Urban1k"
    _touch_images(root / "image", ["1.jpg", "2.jpg", "10.jpg"])
    (root / "caption").mkdir()
    for n in (1, 2, 10):
        (root / "caption" / f"{n}.txt").write_text(f"  A long description number {n}.\n", encoding="utf-8")
    ds = load_dataset(root, "urban1k")
    assert [im.key for im in ds.images] == ["1", "2", "10"]  # numeric order
    assert ds.images[2].captions == {"en": ("A long description number 10.",)}
    (root / "caption" / "10.txt").unlink()
    with pytest.raises(DatasetError, match="10.jpg has no caption file"):
        load_dataset(root, "urban1k")
    with pytest.raises(DatasetError, match="caption folder not found"):
        load_dataset(tmp_path, "urban1k")


def test_docci_reader(tmp_path):
    _touch_images(tmp_path / "images", ["test_01.jpg", "train_01.jpg"])
    path = _write_lines(tmp_path / "docci_descriptions.jsonlines", [
        {"example_id": "test_01", "split": "test", "image_file": "test_01.jpg", "description": "A long text."},
        {"example_id": "train_01", "split": "train", "image_file": "train_01.jpg", "description": "Other."},
    ])
    ds = load_dataset(path, "docci")  # default split: test
    assert [im.key for im in ds.images] == ["test_01"]
    assert ds.images[0].captions == {"en": ("A long text.",)}
    assert len(load_dataset(path, "docci", split="train")) == 1
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"example_id": "x", "split": "test", "description": "no image"}\n')
    with pytest.raises(DatasetError, match='"image_file"') as info:
        load_dataset(path, "docci")
    assert info.value.line == 3


def test_unknown_format():
    with pytest.raises(EvalError, match="unknown dataset format 'tsv'.*karpathy"):
        load_dataset("x", "tsv")
    assert issubclass(DatasetError, FrozenLensError) and issubclass(EvalError, FrozenLensError)


# -- runner and report with a fake encoder ---------------------------------------
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
WORDS = {"red": "red", "rot": "red", "green": "green", "grün": "green", "blue": "blue", "blau": "blue"}


class ColourEncoder(Encoder):
    """Images → their mean RGB; texts → the RGB of the colour word they contain (else zeros)."""

    identity = EncoderIdentity(name="colour", version="1", dim=3, visual_dim=3)
    input_size = 4
    draft_size = 4

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((4, 4)), np.uint8)

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        v = batch.reshape(len(batch), -1, 3).mean(axis=1).astype(np.float32) + 1.0  # (n, 3)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return ImageEmbeddings(semantic=v, visual=v)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for t in texts:
            colour = next((WORDS[w] for w in t.lower().split() if w in WORDS), None)
            if colour is None:  # no colour word: zeros, an exact tie with every image
                out.append(np.zeros(3, np.float32))
                continue
            v = np.asarray(COLOURS[colour], np.float32) + 1.0
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def _colour_dataset(tmp_path: Path) -> EvalDataset:
    images = []
    for name, rgb in COLOURS.items():
        p = tmp_path / f"{name}.png"
        Image.new("RGB", (16, 16), rgb).save(p)
        de = {"red": "rot", "green": "grün", "blue": "blau"}[name]
        images.append(EvalImage(path=p, captions={"en": (f"a {name} square", "something"), "de": (f"ein {de}",)}))
    return EvalDataset(name="colours", images=tuple(images))


def test_evaluate_with_fake_encoder_and_rerank_hook(tmp_path):
    ds = _colour_dataset(tmp_path)
    seen = []
    result = evaluate(ds, ColourEncoder(), batch_size=2, progress=seen.append)
    assert result.languages == ["de", "en"] and not result.reranked
    de = result.language("de")
    assert de.metrics.t2i_r1 == 1.0 and de.metrics.i2t_r1 == 1.0 and de.n_texts == 3
    en = result.language("en")
    # "something" ties on all three images -> rank 3 (pessimistic); the colour captions rank 1
    assert en.metrics.t2i_r1 == pytest.approx(0.5) and en.metrics.t2i_mean_rank == pytest.approx(2.0)
    assert result.mean.t2i_r1 == pytest.approx(0.75)
    assert result.encoder["name"] == "colour" and result.n_images == 3
    assert [(p.stage, p.done) for p in seen if p.stage == "images"] == [("images", 0), ("images", 2), ("images", 3)]
    assert seen[-1].stage == "texts" and seen[-1].done == seen[-1].total == 9

    def reverse(req: RerankInput) -> np.ndarray:
        assert req.scores.shape == (len(req.texts), 3) and req.image_embeddings.semantic.shape == (3, 3)
        return -req.scores  # a terrible reranker

    worse = evaluate(ds, ColourEncoder(), languages=["de"], rerank=reverse)
    assert worse.reranked and worse.language("de").metrics.t2i_r1 == 0.0
    with pytest.raises(EvalError, match="no captions in language"):
        evaluate(ds, ColourEncoder(), languages=["fr"])
    with pytest.raises(EvalError, match="rerank hook returned shape"):
        evaluate(ds, ColourEncoder(), rerank=lambda req: np.zeros((1, 1)))

    md, js = write_report(result, tmp_path / "out")
    text = md.read_text(encoding="utf-8")
    assert "| de | 3 | 3 | 100.0 |" in text and "**mean (2)**" in text
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["encoder"]["name"] == "colour" and data["n_images"] == 3 and data["reranked"] is False
    assert data["languages"][1]["t2i_r1"] == pytest.approx(0.5) and data["mean"]["languages"] == 2
    assert to_markdown(result) == text


def test_evaluate_reports_undecodable_image(tmp_path):
    ds = _colour_dataset(tmp_path)
    ds.images[1].path.write_bytes(b"")  # zero bytes
    with pytest.raises(DatasetError, match="cannot decode image"):
        evaluate(ds, ColourEncoder())


# -- Tux Paint caption files ---------------------------------------------------------
@pytest.mark.parametrize(
    ("tag", "lang"),
    [("de.utf8", "de"), ("pt_BR.utf8", "pt"), ("zh_CN.utf8", "zh"), ("zh_TW.utf8", "zh-Hant"),
     ("sr@latin.utf8", "sr-Latn"), ("ca@valencia.utf8", "ca"), ("en_GB", "en"), ("son", "son"), ("x1", None)],
)
def test_normalise_locale(tag, lang):
    assert normalise_locale(tag) == lang


def test_parse_caption_file(tmp_path):
    txt = tmp_path / "badger.txt"
    txt.write_text(
        "A badger.\n"
        "de.utf8=Ein Dachs.\n"
        "en_GB.utf8=A badger.\n"  # same as English: folded away
        "pt_BR.utf8=Um texugo brasileiro.\n"
        "pt.utf8=Um texugo.\n"  # base tag first, whatever the file order
        "zh_CN.utf8=獾。\n"
        "zh_TW.utf8=獾\n"
        "hi.utf8=   \n"  # empty: dropped
        "garbage line\n"  # unparsable: logged, skipped
        "\n",
        encoding="utf-8",
    )
    assert parse_caption_file(txt) == {
        "de": ["Ein Dachs."], "en": ["A badger."], "pt": ["Um texugo.", "Um texugo brasileiro."],
        "zh": ["獾。"], "zh-Hant": ["獾"],
    }
    txt.write_text("de.utf8=Nur Deutsch.\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="English caption"):
        parse_caption_file(txt)


def test_stamp_split_is_fixed():
    # values of the documented rule int(sha256(id)[:8], 16) % 100: <80 train, <90 val, else test
    import hashlib

    for stamp in ("animals/mammals/badger", "food/fruit/apple", "symbols/chess/king"):
        bucket = int(hashlib.sha256(stamp.encode()).hexdigest()[:8], 16) % 100
        expected = "train" if bucket < 80 else "val" if bucket < 90 else "test"
        assert stamp_split(stamp) == expected
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(2000):
        counts[stamp_split(f"stamp/{i}")] += 1
    assert 1500 < counts["train"] < 1700 and 140 < counts["val"] < 260 and 140 < counts["test"] < 260


def test_eval_command_writes_report(tmp_path):
    from frozenlens.eval import eval_command
    from frozenlens.models import register_encoder

    register_encoder("test-colour-eval", ColourEncoder, replace=True)
    ds = _colour_dataset(tmp_path)
    _write_lines(tmp_path / "manifest.jsonl", [
        {"image": im.path.name, "captions": {k: list(v) for k, v in im.captions.items()},
         "split": "test" if i < 2 else "train"}
        for i, im in enumerate(ds.images)
    ])
    result = eval_command(tmp_path / "manifest.jsonl", "jsonl", encoder_name="test-colour-eval",
                          split="test", languages=["de"], out_dir=tmp_path / "report", limit=1)
    assert result.n_images == 1 and result.languages == ["de"]
    assert result.extra["splits"] == {"test": 1} and result.extra["limit"] == 1
    data = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert data["dataset"] == result.dataset and data["extra"]["format"] == "jsonl"
    assert (tmp_path / "report" / "results.md").read_text(encoding="utf-8").startswith("# Retrieval evaluation")
