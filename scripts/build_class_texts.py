"""Build ``src/frozenlens/data/imagenet_wordnet.tsv``: every WordNet lemma and the gloss of each ImageNet-1k class.

One line per class, in classifier index order: ``wnid<TAB>lemma; lemma; …<TAB>gloss``.
The source is the WordNet 3.0 text that timm ships (Apache-2.0; WordNet's own
licence allows redistribution with its notice, kept in the data file's header
comment), so the project needs neither timm nor WordNet at run time.

    .venv/bin/python scripts/build_class_texts.py    # needs the `clip` extra (timm)
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src" / "frozenlens" / "data" / "imagenet_wordnet.tsv"
HEADER = (
    "# ImageNet-1k classes (classifier order): wnid, WordNet 3.0 lemmas (';'-separated), gloss.\n"
    "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, copy,\n"
    "# modify and distribute this software and database for any purpose and without fee or royalty is\n"
    "# hereby granted, provided that this notice appears on all copies. Built by scripts/build_class_texts.py\n"
    "# from timm's data/_info files.\n"
)


def _table(name: str) -> dict[str, str]:
    text = (resources.files("timm") / "data" / "_info" / name).read_text(encoding="utf-8")
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def main() -> int:
    wnids = (resources.files("timm") / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    if len(wnids) != 1000:
        raise SystemExit(f"expected 1000 ImageNet-1k synsets, found {len(wnids)}")
    lemmas, glosses = _table("imagenet_synset_to_lemma.txt"), _table("imagenet_synset_to_definition.txt")
    lines = []
    for wnid in wnids:
        names = [x.strip() for x in lemmas[wnid].split(",") if x.strip()]
        gloss = " ".join(glosses[wnid].split())
        lines.append(f"{wnid}\t{'; '.join(names)}\t{gloss}")
    OUT.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(lines)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
