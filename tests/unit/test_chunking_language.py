"""Long-caption chunking, pooling, language guess, score fusion."""

from __future__ import annotations

import numpy as np
import pytest

from frozenlens.engine import fuse_scores
from frozenlens.errors import QueryError
from frozenlens.indexer.chunking import chunk_text, pool_chunks, split_sentences
from frozenlens.indexer.language import detect_language


def words(text: str) -> int:
    return len(text.split())


def test_sentences_incl_cjk():
    assert split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
    assert split_sentences("猫がいます。犬もいます。") == ["猫がいます。", "犬もいます。"]
    assert split_sentences("Version 2.5 is out. Yes.") == ["Version 2.5 is out.", "Yes."]


def test_short_text_is_one_chunk_and_empty_none():
    assert chunk_text("a cat on a mat", words, 77) == ["a cat on a mat"]
    assert chunk_text("   ", words, 77) == []
    assert chunk_text("x " * 500, words, None) == [("x " * 500).strip()]


def test_chunks_respect_the_limit_and_sentence_boundaries():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(10)]
    text = " ".join(sentences)
    chunks = chunk_text(text, words, 20)
    assert all(words(c) <= 20 for c in chunks)
    assert chunks == [" ".join(sentences[i : i + 2]) for i in range(0, 10, 2)]  # 2 sentences = 14 words fit, 3 do not
    assert " ".join(chunks) == text  # nothing lost, order kept


def test_overlong_sentence_falls_back_to_windows():
    long = " ".join(f"w{i}" for i in range(45)) + "."
    chunks = chunk_text("Short one. " + long, words, 10)
    assert chunks[0] == "Short one."
    assert all(words(c) <= 10 for c in chunks)
    assert " ".join(chunks).split() == ("Short one. " + long).split()


def test_text_without_spaces_is_cut_by_characters():
    text = "猫" * 50
    chunks = chunk_text(text, len, 16)
    assert all(len(c) <= 16 for c in chunks) and "".join(chunks) == text


def test_pooling_is_token_weighted_and_normalised():
    v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    pooled = pool_chunks(v, [3, 1])
    np.testing.assert_allclose(pooled, np.array([3.0, 1.0]) / np.sqrt(10.0), rtol=1e-6)
    assert pooled.dtype == np.float32
    np.testing.assert_array_equal(pool_chunks(v[:1], [5]), v[0])


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The dog is sleeping on the sofa with a cat.", "en"),
        ("Der Hund schläft auf dem Sofa und die Katze ist im Garten.", "de"),
        ("Le chien dort sur le canapé avec le chat.", "fr"),
        ("El perro duerme en el sofá con los gatos.", "es"),
        ("Il cane dorme sul divano con il gatto della nonna.", "it"),
        ("De hond slaapt op de bank met een kat.", "nl"),
        ("O cão dorme no sofá com o gato da minha avó.", "pt"),
        ("Собака спит на диване.", "ru"),
        ("Собака спить на дивані, її звати Ірка.", "uk"),
        ("一只猫在沙发上睡觉", "zh"),
        ("猫がソファで寝ています", "ja"),
        ("고양이가 소파에서 자고 있다", "ko"),
        ("قطة نائمة على الأريكة", "ar"),
        ("แมวนอนบนโซฟา", "th"),
        ("Spiff", None),  # too little evidence
        ("12345 !!!", None),
    ],
)
def test_language_guess(text, lang):
    assert detect_language(text) == lang


def test_fusion_modes_hand_computed():
    s_img = np.array([0.6, 0.5, 0.4])
    s_cap = np.array([np.nan, 0.9, 0.3])
    np.testing.assert_allclose(fuse_scores(s_img, s_cap, "max"), [0.6, 0.9, 0.4])
    # weighted: img normalised [1, .5, 0]; cap over captioned [1, 0] -> [0, 1, 0]
    np.testing.assert_allclose(fuse_scores(s_img, s_cap, "weighted", 0.5), [0.5, 0.75, 0.0])
    np.testing.assert_allclose(fuse_scores(s_img, s_cap, "weighted", 0.0), [1.0, 0.5, 0.0])
    # rrf: image ranks 1,2,3; caption ranks (captioned only) 1,2
    np.testing.assert_allclose(
        fuse_scores(s_img, s_cap, "rrf"), [1 / 61, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    )
    with pytest.raises(QueryError):
        fuse_scores(s_img, s_cap, "best")
