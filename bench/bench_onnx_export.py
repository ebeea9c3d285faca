"""Issue 16 §4: what exporting an ``openclip:`` image tower to ONNX costs, per exporter, and what its graph
costs to run, per micro-batch -- the figures behind ``onnx_runtime.export_onnx`` (torch.export-based) and
``openclip_onnx.IMAGE_MICRO_BATCH``.

The model is ``bench_cold.py``'s randomly initialised ``ViT-B-32-256`` (the same file). Every figure comes
from a fresh process (``ru_maxrss`` is per process):

- **export**: load the checkpoint as FrozenLens does (``OpenClipEncoder(..., runtime="torch")``), export
  the image tower (with region tokens) to a graph with its weights in an external data file: with the
  TorchScript exporter (``dynamo=False``: an in-memory graph with inline weights, then loaded and saved
  again with external data, as FrozenLens did before) or with ``export_onnx`` (torch.export, weights
  saved straight to the data file). Peak RSS of the process, the model alone, seconds.
- **run**: one ONNX Runtime session (2 threads, FrozenLens's settings) on each graph, 32 random
  256 px images per round in micro-batches of 32, 16 or 8, one warm-up round then the median of 4:
  images/s and the process's peak RSS; max |difference| of the outputs to the TorchScript graph's.

- **lite**: the packaged EfficientNet-Lite0 (``lite_onnx``'s exportable network) exported by both
  exporters in one process, then both sessions run interleaved, 4 rounds, on 32 random inputs in
  micro-batches of 4 (``lite``'s default): images/s per round (the first is a warm-up).

Run: ``PYTHONPATH=src .venv/bin/python bench/bench_onnx_export.py`` (~5 min on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import ARCH, export_weights

EXPORT = r"""
import json, resource, sys, time, warnings
from pathlib import Path
import torch
from frozenlens.models.openclip import OpenClipEncoder, _vit_with_grid_tokens
from frozenlens.models import onnx_runtime, openclip_onnx
how, spec, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
enc = OpenClipEncoder(spec, runtime="torch")
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
cfg = enc.preprocess_cfg
tower = openclip_onnx._image_tower(enc.model, cfg["mean"], cfg["std"], enc._visual_with_tokens,
                                   _vit_with_grid_tokens)
example = (torch.zeros(2, enc.input_size, enc.input_size, 3, dtype=torch.uint8),)
outputs = ["image", "cells"] if enc._visual_with_tokens is not None else ["image"]
data = dest.with_name(dest.name + ".data")
t = time.perf_counter()
if how == "torchscript":
    import onnx
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.mha.set_fastpath_enabled(False)
        torch.onnx.export(tower, example, str(dest), input_names=["pixels"], output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in ["pixels", *outputs]}, opset_version=17,
                          dynamo=False)
    model = onnx.load(str(dest))
    onnx.save_model(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=onnx_runtime.EXTERNAL_MIN_BYTES)
else:
    onnx_runtime.export_onnx(tower, example, ("pixels",), outputs, dest, data)
print(json.dumps({"export_s": time.perf_counter() - t, "model_gb": loaded,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""

RUN = r"""
import json, resource, sys, time
import numpy as np
import onnxruntime as ort
graph, micro, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opts = ort.SessionOptions()
opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 2, 1, 3
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).integers(0, 255, (32, 256, 256, 3), dtype=np.uint8)
def rnd():
    return [sess.run(None, {"pixels": x[i:i + micro]})[0] for i in range(0, 32, micro)]
out = np.concatenate(rnd())
times = []
for _ in range(4):
    t = time.perf_counter(); rnd(); times.append(time.perf_counter() - t)
diff = None
if ref:
    diff = float(np.abs(out - np.load(ref)).max())
else:
    np.save(graph + ".out.npy", out)
print(json.dumps({"ips": 32 / float(np.median(times)), "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024**2, "max_abs_diff": diff}))
"""

LITE = r"""
import json, sys, time, warnings
from pathlib import Path
import numpy as np
import onnxruntime as ort
import torch
from frozenlens.models.efficientnet_lite import load_efficientnet_lite0
from frozenlens.models.lite_onnx import _INPUTS, _OUTPUTS, _exportable
from frozenlens.models.onnx_runtime import export_onnx
d = Path(sys.argv[1])
net = _exportable(load_efficientnet_lite0(None))
example = (torch.zeros(4, 3, 224, 224),)
t = time.perf_counter()
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(net, example, str(d / "ts.onnx"), input_names=list(_INPUTS), output_names=list(_OUTPUTS),
                      dynamic_axes={n: {0: "b"} for n in (*_INPUTS, *_OUTPUTS)}, opset_version=17, dynamo=False)
ts_s = time.perf_counter() - t
t = time.perf_counter()
export_onnx(net, example, _INPUTS, _OUTPUTS, d / "te.onnx", d / "te.onnx.data")
te_s = time.perf_counter() - t
opts = ort.SessionOptions()
opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 2, 1, 3
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = {k: ort.InferenceSession(str(d / f"{k}.onnx"), opts, providers=["CPUExecutionProvider"]) for k in ("ts", "te")}
x = np.random.default_rng(0).uniform(-1, 1, (32, 3, 224, 224)).astype(np.float32)
rounds = {k: [] for k in sess}
for _ in range(4):
    for k, s in sess.items():
        t = time.perf_counter()
        for i in range(0, 32, 4):
            s.run(None, {"x": x[i:i + 4]})
        rounds[k].append(32 / (time.perf_counter() - t))
diff = max(float(np.abs(a - b).max()) for a, b in zip(sess["ts"].run(None, {"x": x[:4]}), sess["te"].run(None, {"x": x[:4]})))
print(json.dumps({"export_s": {"torchscript": ts_s, "torch.export": te_s}, "ips": rounds, "max_abs_diff": diff}))
"""


def _py(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ckpt, _ = export_weights()
    spec = f"{ARCH}/{ckpt}"
    with tempfile.TemporaryDirectory(prefix="fl-export-") as tmp:
        graphs, rows = {}, []
        for how in ("torchscript", "torch.export"):
            dest = Path(tmp) / f"{how}.onnx"
            got = _py(EXPORT, how, spec, str(dest))
            graphs[how] = dest
            print(f"export, {how:12s}: peak {got['peak_gb']:.2f} GB (model loaded: {got['model_gb']:.2f} GB), "
                  f"{got['export_s']:.1f} s", flush=True)
        ref = ""
        for rnd in range(2):
            for how, dest in graphs.items():
                for micro in (32, 16, 8):
                    got = _py(RUN, str(dest), str(micro), ref)
                    ref = ref or str(dest) + ".out.npy"
                    rows.append((rnd, how, micro, got))
                    diff = "" if got["max_abs_diff"] is None else f", max |diff| {got['max_abs_diff']:.1e}"
                    print(f"run {rnd}, {how:12s}, micro-batch {micro:2d}: {got['ips']:.1f} img/s, "
                          f"peak {got['peak_gb']:.2f} GB{diff}", flush=True)
        lite = _py(LITE, tmp)
        print(f"lite export s: torchscript {lite['export_s']['torchscript']:.1f}, torch.export "
              f"{lite['export_s']['torch.export']:.1f}; max |diff| {lite['max_abs_diff']:.1e}")
        for key, name in (("ts", "torchscript"), ("te", "torch.export")):
            print(f"lite, {name:12s}, micro-batch 4, img/s per round: "
                  + ", ".join(f"{v:.1f}" for v in lite["ips"][key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
