"""Distributed indexing on Ray Data: ``frozenlens index --engine ray``.

The driver (this process) does what only it can do and everything that
decides what the index holds; the cluster does the heavy per-image work:

- **driver**: the streaming scan and the incremental rules of
  :mod:`.pipeline` pick the work — files that are new or changed by (size,
  mtime); the cluster never lists folders. Work goes out in jobs of at most
  ``RayOptions.chunk`` files, so driver memory is bounded by the chunk, not
  the collection.
- **CPU tasks** (``map_batches`` with a function, ``num_cpus=1``): read,
  hash and decode each file with the very code of the local engine
  (:mod:`.fileio`); a bad file becomes a failed row with its reason and
  message, exactly as locally.
- **encoder actors** (``map_batches`` with a class and
  ``ActorPoolStrategy``): one model per actor, built by name from the
  registry with the index's encoder options; ``num_gpus=1`` per actor when
  the cluster has GPUs.
- **driver again**: results stream back out of order, each row carrying its
  key (→ path); the driver classifies by content hash (touch / move /
  duplicate / encode, :class:`~.pipeline._Classifier`) and commits through
  :meth:`Indexer._commit` — the same commit protocol, so the database is the
  checkpoint: killing the driver or a worker at any moment loses at most the
  uncommitted batches, which the next run (local or Ray) redoes.

Rows travel as ``key`` plus one pickled ``payload`` (paths and messages may
hold any bytes the OS allows, which Arrow strings do not). Differences from
the local engine, by design: a changed file whose content turns out to be a
touch, move or duplicate has already been decoded and encoded remotely (the
hash is only known after reading the file, on the cluster). Ray Data is run
with ``preserve_order``, so results reach the driver in scan order and are
classified in that order: the same rows and ids as the local engine.

Ray is imported only inside this module's functions: ``import frozenlens``
never imports it.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DecodeError, RayUnavailableError
from ..models.base import Encoder, split_embeddings
from ..progress import ProgressCallback
from ..retriever.spaces import VectorSpaces
from ..store import Store
from .decode import DecodeLimits
from .fileio import decode_photo, failure_of, hash_bytes, read_checked
from .pipeline import Indexer, IndexOptions, _Classifier, _Result, _Work
from .scan import FileEntry

__all__ = ["RayIndexer", "RayOptions", "import_ray"]

#: memory (bytes) a decode task reserves on the cluster
DECODE_TASK_MEMORY = 256 * 2**20


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray indexing run goes.

    address: ``None`` starts Ray inside this process (the local machine's
        cores); ``"auto"`` joins the cluster this machine belongs to (``ray
        start``); ``"ray://host:10001"`` goes through Ray Client.
    encode_actors: encoder actors (default: one per GPU of the cluster, or,
        without GPUs, one per CPU but one, which the decode tasks keep).
    chunk: files per Ray Data job (bounds the driver's memory).
    decode_batch: files per decode task.
    """

    address: str | None = None
    encode_actors: int | None = None
    chunk: int = 20_000
    decode_batch: int = 16


def import_ray() -> Any:
    """The ``ray`` module, or :class:`RayUnavailableError` when it is not installed."""
    try:
        import ray
        import ray.data
        import ray.exceptions
    except ImportError as exc:
        raise RayUnavailableError(
            f"the Ray engine needs Ray Data: pip install 'frozenlens[ray]' ({exc})"
        ) from None
    return ray


# -- remote stages (run in Ray workers) -----------------------------------------
def decode_batch(batch: dict[str, np.ndarray], draft_size: int, limits: DecodeLimits) -> dict[str, np.ndarray]:
    """CPU task: read, hash and decode each row → ``key`` + pickled payload."""
    out = []
    for path, size, mtime_ns in zip(batch["path"], batch["size"], batch["mtime_ns"]):
        entry = FileEntry(os.fsdecode(bytes(path)), int(size), int(mtime_ns))
        out.append(pickle.dumps(_decode_one(entry, draft_size, limits), protocol=pickle.HIGHEST_PROTOCOL))
    return {"key": np.asarray(batch["key"], dtype=np.int64), "payload": np.asarray(out, dtype=object)}


def _decode_one(entry: FileEntry, draft_size: int, limits: DecodeLimits) -> dict[str, Any]:
    try:
        data = read_checked(entry, limits)
    except DecodeError as exc:
        return {"hash": None, "failed": (exc.reason, str(exc))}
    content_hash = hash_bytes(data)
    if not data:
        return {"hash": content_hash, "failed": ("empty", "file is empty (0 bytes)")}
    try:
        image, fields = decode_photo(entry, data, draft_size, limits)
    except Exception as exc:  # noqa: BLE001 - a bad file is a failure row; failure_of logs the unexpected
        return {"hash": content_hash, "failed": failure_of(exc, entry.path), "path": entry.path}
    return {"hash": content_hash, "failed": None, "path": entry.path, "fields": fields,
            "image": (image.mode, image.size, image.tobytes())}


class EncodeActor:
    """Encoder actor: one model, built by name from the registry; prepares
    and embeds the decoded images of a batch (failed rows pass through)."""

    def __init__(self, encoder_name: str, encoder_options: dict[str, object]) -> None:
        from ..models.registry import create_encoder

        self.encoder = create_encoder(encoder_name, **encoder_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [pickle.loads(bytes(p)) for p in batch["payload"]]
        pixels, ok = [], []
        for i, row in enumerate(rows):
            image = row.pop("image", None)
            if row["failed"] is not None or image is None:
                continue
            mode, size, data = image
            try:
                pixels.append(self.encoder.prepare(Image.frombytes(mode, size, data)))
                ok.append(i)
            except Exception as exc:  # noqa: BLE001 - as in the local engine
                row["failed"] = failure_of(exc, row["path"])
        if ok:
            for i, emb in zip(ok, split_embeddings(self.encoder.embed_prepared(np.stack(pixels)))):
                rows[i]["embedded"] = emb
        out = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in rows]
        return {"key": np.asarray(batch["key"], dtype=np.int64), "payload": np.asarray(out, dtype=object)}


# -- driver --------------------------------------------------------------------
class RayIndexer(Indexer):
    """:class:`~.pipeline.Indexer` whose hash/decode/encode stages run on Ray.

    ``encoder`` (this process) embeds captions and the few deferred files;
    ``encoder_name``/``encoder_options`` rebuild the same encoder in each actor.
    """

    def __init__(
        self,
        store: Store,
        spaces: VectorSpaces,
        encoder: Encoder,
        encoder_name: str,
        encoder_options: dict[str, object] | None = None,
        options: IndexOptions | None = None,
        progress: ProgressCallback | None = None,
        ray_options: RayOptions | None = None,
    ) -> None:
        super().__init__(store, spaces, encoder, options, progress)
        self.encoder_name = encoder_name
        self.encoder_options = dict(encoder_options or {})
        self.ray_options = ray_options or RayOptions()
        self.ray = import_ray()

    def _results(self, works: Iterator[_Work], classifier: _Classifier) -> Iterator[_Result]:
        started_here = self._connect()
        try:
            while chunk := list(itertools.islice(works, self.ray_options.chunk)):
                yield from self._run_chunk(chunk, classifier)
        finally:
            if started_here:
                self.ray.shutdown()

    def _connect(self) -> bool:
        """Join or start Ray; True when this call started it (and so stops it)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        address = self.ray_options.address
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None:
            import frozenlens

            package_root = os.path.dirname(os.path.dirname(os.path.abspath(frozenlens.__file__)))
            path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:
            raise RayUnavailableError(f"cannot start or join Ray at {address or 'this machine'}: {exc}") from exc
        return True

    def _actors(self) -> tuple[int, int]:
        """(encoder actors, GPUs per actor) for the connected cluster."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        if self.ray_options.encode_actors:
            n = self.ray_options.encode_actors
        else:
            n = gpus if gpus else max(1, cpus - 1)
        return n, (1 if gpus else 0)

    def _run_chunk(self, chunk: list[_Work], classifier: _Classifier) -> Iterator[_Result]:
        ray = self.ray
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # library code draws nothing: progress goes to the callback
        ctx.print_on_execution_start = False
        # Rows come back in scan order, so the driver classifies (and assigns ids) exactly
        # as the local engine does: the same folder gets the same rows whatever the timing.
        ctx.execution_options.preserve_order = True
        works = dict(enumerate(chunk))
        rows = [
            {"key": k, "path": os.fsencode(w.entry.path), "size": w.entry.size, "mtime_ns": w.entry.mtime_ns}
            for k, w in works.items()
        ]
        actors, gpus = self._actors()
        ds = ray.data.from_items(rows)
        ds = ds.map_batches(
            # memory: what decoding a large photo may take; the differing resources also keep
            # Ray from fusing the decode tasks into the encoder actors (decoding stays on CPU tasks)
            decode_batch, batch_size=self.ray_options.decode_batch, batch_format="numpy", num_cpus=1,
            memory=DECODE_TASK_MEMORY,
            fn_kwargs={"draft_size": self.encoder.draft_size, "limits": self.options.limits},
        )
        ds = ds.map_batches(
            EncodeActor, batch_size=self.options.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, num_gpus=gpus,
            fn_constructor_kwargs={"encoder_name": self.encoder_name, "encoder_options": self.encoder_options},
        )
        batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except ray.exceptions.RayError as exc:  # an actor that cannot build its model, a lost cluster...
                raise RayUnavailableError(f"the Ray indexing job failed: {exc}") from exc
            for key, payload in zip(batch["key"], batch["payload"]):
                yield self._result_of(works.pop(int(key)), pickle.loads(bytes(payload)), classifier)
        if works:  # every row comes back, failed or not; a missing one is a bug, never a silent loss
            raise RuntimeError(f"{len(works)} files did not come back from the Ray job")

    @staticmethod
    def _result_of(work: _Work, row: dict[str, Any], classifier: _Classifier) -> _Result:
        content_hash = row["hash"]
        if row["failed"] is not None:
            reason, message = row["failed"]
            classifier.skip(work)
            return _Result(work, "failed", content_hash, reason=reason, message=message)
        action, target = classifier.classify(work, content_hash)
        if action != "encode":
            return _Result(work, action, content_hash, target=target)
        return _Result(work, "encode", content_hash, fields=row["fields"], embedded=row["embedded"])
