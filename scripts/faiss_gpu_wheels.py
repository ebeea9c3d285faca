#!/usr/bin/env python3
"""Which GPU architectures do the FAISS GPU wheels on PyPI carry code for? (issue 14 §4: choosing the `gpu` extra)

Usage::

    .venv/bin/python scripts/faiss_gpu_wheels.py [--dest .cache/faiss-gpu-wheels] [SPEC ...]
    # default SPECs: faiss-gpu-cu12==1.14.1.post1 faiss-gpu==1.15.1 faiss-gpu-cuvs==1.15.1

Downloads each wheel (``pip download --no-deps``, ~50-135 MB each; PyPI only) and reads the CUDA
fat binaries inside its shared libraries: every fatbin entry header names its kind (SASS = machine
code for one architecture, PTX = portable code the driver can compile for that architecture and
newer ones) and its ``sm_XX``. A GPU of compute capability X.Y runs a wheel that has SASS for
sm_X0..sm_XY (same major version) or PTX for an architecture <= X.Y. Prints one line per wheel.
Needs no GPU.
"""

from __future__ import annotations

import argparse
import collections
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["faiss-gpu-cu12==1.14.1.post1", "faiss-gpu==1.15.1", "faiss-gpu-cuvs==1.15.1"]
_MAGIC = b"\x50\xed\x55\xba"  # fatBinaryHeader.magic 0xBA55ED50, little-endian
_HEADER = struct.Struct("<IHHQ")  # magic, version, header size (16), size of the entries that follow
_ENTRY = struct.Struct("<HHIQ")  # kind (1 PTX, 2 ELF/SASS), version, header size, payload size; sm at +28


def fatbin_archs(data: bytes) -> collections.Counter[tuple[str, int]]:
    """(kind, sm) -> number of fatbin entries in one shared library's bytes."""
    out: collections.Counter[tuple[str, int]] = collections.Counter()
    pos = data.find(_MAGIC)
    while pos >= 0:
        if pos + _HEADER.size > len(data):
            break
        _, _, hsize, size = _HEADER.unpack_from(data, pos)
        end = pos + hsize + size
        if hsize != _HEADER.size or size == 0 or end > len(data):
            pos = data.find(_MAGIC, pos + 4)
            continue
        entry = pos + hsize
        while entry + 32 <= end:
            kind, _, ehsize, payload = _ENTRY.unpack_from(data, entry)
            if kind not in (1, 2) or not 32 <= ehsize <= 4096:
                break
            sm = struct.unpack_from("<I", data, entry + 28)[0]
            out[("PTX" if kind == 1 else "SASS", sm)] += 1
            entry += ehsize + payload
        pos = data.find(_MAGIC, end)
    return out


def wheel_archs(wheel: Path) -> tuple[list[int], list[int]]:
    """(SASS architectures, PTX architectures) of every shared library in ``wheel``."""
    total: collections.Counter[tuple[str, int]] = collections.Counter()
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith(".so") or ".so." in name:
                total += fatbin_archs(z.read(name))
    return sorted({sm for k, sm in total if k == "SASS"}), sorted({sm for k, sm in total if k == "PTX"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", default=DEFAULT)
    p.add_argument("--dest", type=Path, default=REPO / ".cache" / "faiss-gpu-wheels")
    args = p.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    print("| wheel | SASS (machine code) | PTX (JIT-compiled for newer GPUs) | runs on H100/H200 (sm_90) |")
    print("|---|---|---|---|")
    for spec in args.specs:
        name = spec.split("==")[0].replace("-", "_")
        version = spec.split("==")[1] if "==" in spec else ""
        found = sorted(args.dest.glob(f"{name}-{version}*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(args.dest), spec],
                           check=True)
            found = sorted(args.dest.glob(f"{name}-{version}*.whl"))
        sass, ptx = wheel_archs(found[-1])
        hopper = any(s // 10 == 9 for s in sass) or any(s <= 90 for s in ptx)
        print(f"| `{found[-1].name}` | {', '.join(f'sm_{s}' for s in sass) or '—'} | "
              f"{', '.join(f'sm_{s}' for s in ptx) or '—'} | {'yes' if hopper else 'no'} |")


if __name__ == "__main__":
    main()
