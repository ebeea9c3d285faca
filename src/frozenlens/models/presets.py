"""The encoder catalogue: known-good models and language tables (data only).

Importing this module never imports torch, open_clip or transformers: it is
what ``frozenlens models`` reads (through :func:`frozenlens.models.registry.list_models`)
and what the encoders look their language codes up in.

- :data:`PRESETS`: named open_clip models (``openclip:<preset>``) with their
  architecture, pretrained tag, sizes, languages, download size and licence;
- :data:`LITE`: the same facts for the packaged offline encoder ``lite``;
- :data:`NLLB_CODES`: ISO 639-1 language tags → NLLB-200 source-language codes.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the registry prefix of the open_clip encoders
PREFIX = "openclip:"

#: (encoder name, identity version) → the options that rebuild an encoder of
#: an older recipe. Opening an index built with one of them (and no explicit
#: options) builds exactly that encoder, so old indexes keep working.
#: ``lite`` "1": the ConSE recipe before issue 15 (bare class names, top 20, T 3);
#: ``lite`` "2": issue 15's ConSE recipe without the learned projector.
#: (An ``onnx-int8`` index records ``<version>+int8``: the same options apply.)
LEGACY_OPTIONS: dict[tuple[str, str], dict[str, object]] = {
    ("lite", "1"): {"class_text": "name", "top_t": 20, "temperature": 3.0, "projection": 0.0},
    ("lite", "2"): {"class_text": "wordnet", "top_t": 50, "temperature": 5.0, "projection": 0.0},
}


@dataclass(frozen=True)
class OpenClipPreset:
    """A named, known-good open_clip model (``openclip:<name>``)."""

    name: str
    arch: str
    pretrained: str
    dim: int
    image_size: int
    context_length: int
    languages: str
    download_mb: int  # approximate (fp32 weights; HF text configs/tokenizers add a few MB)
    license: str


#: ISO 639-1 (and Crossmodal-3600) language tags → NLLB-200 source-language codes
NLLB_CODES: dict[str, str] = {
    "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fil": "tgl_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "mi": "mri_Latn", "nl": "nld_Latn", "no": "nob_Latn", "nb": "nob_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "quz": "quy_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn",
    "sw": "swh_Latn", "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl",
    "vi": "vie_Latn", "zh": "zho_Hans", "zh-Hant": "zho_Hant", "ca": "cat_Latn", "gl": "glg_Latn",
    "eu": "eus_Latn", "af": "afr_Latn", "bg": "bul_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn",
    "sr": "srp_Cyrl", "lt": "lit_Latn", "lv": "lvs_Latn", "et": "est_Latn", "ka": "kat_Geor",
    "hy": "hye_Armn", "ur": "urd_Arab", "ta": "tam_Taml", "mr": "mar_Deva", "ms": "zsm_Latn",
}  # fmt: skip


def nllb_code(lang: str | None) -> str | None:
    """The NLLB-200 code of an ISO 639-1 tag (``"de"``, ``"zh-Hant"``, ``"pt-BR"`` ...); None if unknown."""
    return NLLB_CODES.get(lang or "") or NLLB_CODES.get((lang or "").split("-")[0])


PRESETS: dict[str, OpenClipPreset] = {
    p.name: p
    for p in (
        OpenClipPreset(
            "xlm-roberta-base-ViT-B-32", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k",
            512, 224, 77, "~100 (XLM-R)", 1470, "MIT (LAION)",
        ),
        OpenClipPreset(
            "nllb-clip-base-siglip", "nllb-clip-base-siglip", "v1",
            768, 384, 77, "201 (NLLB-200)", 2030, "CC-BY-NC-4.0 (non-commercial, NLLB text tower)",
        ),
        OpenClipPreset(
            "nllb-clip-large-siglip", "nllb-clip-large-siglip", "v1",
            1152, 384, 77, "201 (NLLB-200)", 5200, "CC-BY-NC-4.0 (non-commercial, NLLB text tower)",
        ),
        OpenClipPreset(
            "ViT-B-16-SigLIP-i18n-256", "ViT-B-16-SigLIP-i18n-256", "webli",
            768, 256, 64, "~100 (WebLI, mC4 vocabulary)", 1480, "Apache-2.0",
        ),
        OpenClipPreset("ViT-B-32", "ViT-B-32", "openai", 512, 224, 77, "English", 605, "MIT (OpenAI)"),
        OpenClipPreset("ViT-L-14", "ViT-L-14", "openai", 768, 224, 77, "English", 1710, "MIT (OpenAI)"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class ModelRow:
    """One line of ``frozenlens models``: an encoder name and what it costs."""

    name: str  # what to pass as --encoder, e.g. "openclip:ViT-B-32"
    source: str  # "<arch>/<pretrained tag>", or where a packaged encoder comes from
    dim: int
    image_size: int
    context_length: int
    languages: str
    download_mb: int  # 0: packaged, nothing to download
    license: str
    cached: bool | None  # weights in the local Hugging Face cache (None: not checked, or nothing to download)
    hardware: str = ""  # what it needs to run well, where that is more than a CPU


#: the packaged offline default (frozenlens.models.lite); tests/unit/test_package_imports.py checks these facts
LITE = ModelRow(
    name="lite",
    source="packaged: EfficientNet-Lite0 + USE-m3 (ConSE + projector)",
    dim=512,
    image_size=224,
    context_length=128,
    languages="16 (USE-m3)",
    download_mb=0,
    license="Apache-2.0 / MIT; projector GPL-2.0+",
    cached=None,
)


def list_presets() -> list[ModelRow]:
    """Rows describing :data:`PRESETS`, in order (``cached`` unchecked: see ``registry.list_models``)."""
    return [
        ModelRow(
            name=PREFIX + p.name,
            source=f"{p.arch}/{p.pretrained}",
            dim=p.dim,
            image_size=p.image_size,
            context_length=p.context_length,
            languages=p.languages,
            download_mb=p.download_mb,
            license=p.license,
            cached=None,
        )
        for p in PRESETS.values()
    ]


__all__ = ["LITE", "NLLB_CODES", "PREFIX", "PRESETS", "ModelRow", "OpenClipPreset", "list_presets", "nllb_code"]
