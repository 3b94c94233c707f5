"""Sharded results of a model over a data set: features folders and prediction folders.

A folder (FEATURES_DIR or PREDICTIONS) holds

    manifest.json     {"format": "graphfix-features/1" | "graphfix-predictions/1", "model_sha256",
                       "data_fingerprint", "data_source", "rows", "labels", "labelled", "shard_rows",
                       "batch_size", "arrays", "preprocess", "complete", "shards": [{"file", "start", "stop"}]}
    shard-00000.npz   one array per output (features float32 [n, F]; or scores float32 [n, L] and
                      labels bool [n, L]), plus row int64 [n] (the index in the data set), path
                      str [n] (the source image, or "file.npz[i]") and, for labelled data, targets
                      uint8 [n, L]

Shard k holds rows [k * shard_rows, min(N, (k + 1) * shard_rows)), in data set order. shard_rows
is a multiple of batch_size, so the model sees exactly the batches of the plain in-process path
and the results are bitwise equal to it. `model_sha256` is the sha256 of the model that ran (for
features, the backbone cut by `feature_model`, which a later head does not change). Each shard is
written atomically (`graphfix.output.atomic_write`, zip entries with a fixed date: the same input
gives the same bytes); a re-run with the same model, data and shard size skips the shards already
there, so an interrupted run resumes. The manifest says "complete" only once every shard is
written; readers refuse an incomplete folder and a backbone other than the one it was made with.
"preprocess" records how images became inputs (`Preprocess.to_dict()`; null for arrays), so a
head trained on the features stores it and a command that reads them can check it.

Where the shards are computed is a `runner` (the `Runner` interface below): `local_runner` (one
onnxruntime session in this process), or one plugged in by another package through the entry
points `graphfix.shard_runners` (`graphfix.scale.ray_shards.ray_runner`: an actor pool on Ray).
Only this process writes files.
"""

from __future__ import annotations

__all__ = [
    "FEATURES_FORMAT", "PREDICTIONS_FORMAT", "MANIFEST", "ShardPlan", "is_shard_dir", "shard_ranges", "write_shards",
    "local_runner", "run_shard", "read_manifest", "load_features_dir", "read_arrays",
]

import hashlib
import json
import os
import signal
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from graphfix.data.datasets import Dataset
from graphfix.data.images import Preprocess
from graphfix.errors import GraphfixError

FEATURES_FORMAT = "graphfix-features/1"
PREDICTIONS_FORMAT = "graphfix-predictions/1"
MANIFEST = "manifest.json"
#: Rows per shard when not given (rounded up to a multiple of the batch size).
DEFAULT_SHARD_ROWS = 4096

#: (shard index, start row, stop row)
Shard = tuple[int, int, int]
#: runner(model_bytes, data, shards, plan) -> yields (shard index, {array name: array}, info)
Runner = Callable[[bytes, Dataset, list[Shard], "ShardPlan"], Iterator[tuple[int, dict[str, np.ndarray], dict[str, Any]]]]


@dataclass
class ShardPlan:
    """What a folder holds and how it is cut.

    Attributes:
        format: FEATURES_FORMAT or PREDICTIONS_FORMAT.
        outputs: The model outputs run, in order, and the array name each is stored as.
        batch_size: Rows per onnxruntime call.
        shard_rows: Rows per shard (a multiple of batch_size).
        workers: Image decoding threads per process.
        post: Applied by the writing process to each shard's arrays before they are saved
            (e.g. the decision rule turning scores into labels); None saves them as they are.
        stored: The array names saved (default: the values of `outputs`).
    """

    format: str
    outputs: dict[str, str]
    batch_size: int = 64
    shard_rows: int = DEFAULT_SHARD_ROWS
    workers: int | None = None
    post: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    stored: list[str] | None = None


def is_shard_dir(path: str | os.PathLike | None) -> bool:
    """Whether `path` is a folder with a graphfix manifest."""
    return path is not None and os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))


def shard_ranges(rows: int, shard_rows: int) -> list[Shard]:
    """The shards of `rows` rows."""
    return [(k, s, min(rows, s + shard_rows)) for k, s in enumerate(range(0, rows, shard_rows))]


def _shard_file(k: int) -> str:
    return f"shard-{k:05d}.npz"


def _row_names(data: Dataset, start: int, stop: int) -> np.ndarray:
    if data.paths is not None:
        return np.array(data.paths[start:stop], dtype=str)
    name = os.path.basename(data.source) if data.source else ""
    return np.array([f"{name}[{i}]" for i in range(start, stop)], dtype=str)


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (uncompressed) with fixed entry dates, written atomically."""
    from graphfix.output import atomic_write

    with atomic_write(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(arr), allow_pickle=False)


def _write_manifest(folder: str, doc: dict[str, Any]) -> None:
    from graphfix.output import atomic_write

    with atomic_write(os.path.join(folder, MANIFEST)) as fh:
        fh.write((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest.

    Raises:
        GraphfixError: no manifest, unreadable, or not a graphfix shard folder.
    """
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise GraphfixError("not a graphfix features or predictions folder (no manifest.json)", path=os.fspath(folder)) from None
    except (OSError, ValueError) as exc:
        raise GraphfixError(f"cannot read the manifest ({exc})", path=path) from exc
    if not isinstance(doc, dict) or doc.get("format") not in (FEATURES_FORMAT, PREDICTIONS_FORMAT):
        raise GraphfixError("not a graphfix manifest (unknown format)", path=path)
    return doc


def _shard_ok(path: str, start: int, stop: int) -> bool:
    """Whether the shard file is there and holds exactly rows start..stop-1."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return bool(np.array_equal(z["row"], np.arange(start, stop)))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False


def run_shard(session: Any, data: Dataset, start: int, stop: int, plan: ShardPlan) -> dict[str, np.ndarray]:
    """Run `session` over rows start..stop-1 in batches of plan.batch_size; {array name: [n, ...]}."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise GraphfixError(f"the model has {len(inputs)} inputs; one image input expected", path=data.source)
    feed = inputs[0].name
    names = list(plan.outputs)
    parts: dict[str, list[np.ndarray]] = {plan.outputs[n]: [] for n in names}
    for batch in data.batches(plan.batch_size, workers=plan.workers, start=start, stop=stop):
        try:
            outs = session.run(names, {feed: np.ascontiguousarray(batch)})
        except Exception as exc:  # shape mismatch and the like
            raise GraphfixError(
                f"the model rejects inputs of shape {list(batch.shape)}: {str(exc).splitlines()[0]}", path=data.source,
            ) from exc
        for n, out in zip(names, outs):
            out = np.asarray(out)
            if plan.format == FEATURES_FORMAT:
                out = out.astype(np.float32, copy=False).reshape(len(batch), -1)
            parts[plan.outputs[n]].append(out)
    return {k: np.concatenate(v) for k, v in parts.items()}


def local_runner(model_bytes: bytes, data: Dataset, shards: list[Shard], plan: ShardPlan
                 ) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, Any]]]:
    """Shards computed one after another by one onnxruntime session in this process."""
    from graphfix.model import cpu_session

    session = cpu_session(model_bytes, data.source)
    for k, start, stop in shards:
        yield k, run_shard(session, data, start, stop, plan), {"where": "local"}


#: The entry-point group through which other packages offer runners (graphfix.scale offers "ray").
RUNNER_ENTRY_POINTS = "graphfix.shard_runners"


def runner_for(ray: str | None) -> Runner:
    """`local_runner` for None, else the Ray runner at address `ray` ("local", "auto", host:port).

    The Ray runner is not imported from here: `graphfix.scale` plugs it in as the entry point
    `ray` of `RUNNER_ENTRY_POINTS` (pyproject.toml), a factory `address -> Runner`.
    """
    if ray is None:
        return local_runner
    from importlib.metadata import entry_points

    found = entry_points(group=RUNNER_ENTRY_POINTS, name="ray")
    if not found:
        raise GraphfixError(f"no shard runner named 'ray' is installed (entry points {RUNNER_ENTRY_POINTS})",
                            kind="usage", hint="reinstall graphfix: pip install -e '.[ray]'")
    factory = next(iter(found)).load()
    return factory(ray)


def _check_folder(folder: str, inputs: Iterable[str | None]) -> None:
    """The folder may be new, empty, or a graphfix shard folder; never an input or a file."""
    real = os.path.realpath(folder)
    for item in inputs:
        if item and os.path.exists(item):
            ri = os.path.realpath(item)
            if ri == real:
                raise GraphfixError(f"output would overwrite the input {item}", kind="usage", path=folder)
            if ri.startswith(real.rstrip(os.sep) + os.sep):
                raise GraphfixError(f"the output folder holds the input {item}", kind="usage", path=folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise GraphfixError("exists and is not a folder", kind="usage", path=folder)
    if os.path.isdir(folder) and not is_shard_dir(folder):
        if any(not n.startswith(".") for n in os.listdir(folder)):
            raise GraphfixError("folder is not empty and holds no graphfix manifest; give a new or empty folder",
                                kind="usage", path=folder)


def _run_todo(runner: Runner, model_bytes: bytes, data: Dataset, todo: list[Shard], shards: list[Shard],
              plan: ShardPlan, folder: str, pbar: Any, written: set[int], retried: list,
              where: dict[str, int]) -> None:
    """Run `todo` with `runner`, writing each shard as it comes back (`written`, `retried` and
    `where` filled in as shards land)."""
    for k, arrays, info in runner(model_bytes, data, todo, plan):
        _, start, stop = shards[k]
        rows = {"row": np.arange(start, stop, dtype=np.int64), "path": _row_names(data, start, stop)}
        if data.y.shape[1]:
            rows["targets"] = data.y[start:stop]
        if plan.post is not None:
            arrays = plan.post(arrays)
        _save_npz(os.path.join(folder, _shard_file(k)), {**arrays, **rows})
        written.add(k)
        if info.get("attempts", 1) > 1:
            retried.append({"shard": k, "rows": [start, stop], **info})
        where[str(info.get("where"))] = where.get(str(info.get("where")), 0) + (stop - start)
        pbar.update(stop - start)


def write_shards(
    model_bytes: bytes,
    data: Dataset,
    folder: str | os.PathLike,
    plan: ShardPlan,
    *,
    runner: Runner | None = None,
    labels: list[str] | None = None,
    force: bool = False,
    inputs: Iterable[str | None] = (),
    progress: bool | None = None,
) -> dict[str, Any]:
    """Compute and write the shards of `data` that the folder does not hold yet.

    Args:
        model_bytes: The ONNX model to run (the backbone for features); its sha256 is stored, and a
            re-run with another model is refused unless `force`.
        data: The rows.
        folder: Created if missing.
        plan: Format, outputs, batch and shard sizes.
        runner: Where shards are computed (default `local_runner`).
        labels: Class names stored in the manifest.
        force: Start over in a folder made with another model, data set or shard size.
        inputs: The command's input files (the folder must not hold them).
        progress: Show a bar of rows done (None: only on a terminal).

    Returns:
        A summary: rows, shards, written, skipped, retried, seconds, folder.
    """
    from graphfix.progress import bar

    folder = os.fspath(folder)
    if plan.shard_rows % plan.batch_size:
        plan.shard_rows += plan.batch_size - plan.shard_rows % plan.batch_size
    _check_folder(folder, inputs)
    os.makedirs(folder, exist_ok=True)
    doc = {
        "format": plan.format, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "data_fingerprint": data.fingerprint(),
        "data_source": os.path.abspath(data.source) if data.source else None, "rows": len(data),
        "labels": list(labels if labels is not None else data.labels), "shard_rows": plan.shard_rows,
        "batch_size": plan.batch_size, "arrays": sorted(plan.stored or plan.outputs.values()),
        "labelled": bool(data.y.shape[1]),
        "preprocess": data.preprocess.to_dict() if data.preprocess is not None else None,
    }
    key = ("format", "model_sha256", "data_fingerprint", "rows", "shard_rows", "batch_size", "arrays")
    shards = shard_ranges(len(data), plan.shard_rows)
    done: set[int] = set()
    if is_shard_dir(folder):
        old = read_manifest(folder)
        if any(old.get(k) != doc[k] for k in key):
            if not force:
                diff = [k for k in key if old.get(k) != doc[k]]
                raise GraphfixError(f"the folder holds results of another run ({', '.join(diff)} differ); "
                                    "give a new folder or --force", kind="usage", path=folder)
            for name in os.listdir(folder):
                if name.startswith("shard-") and name.endswith(".npz"):
                    os.unlink(os.path.join(folder, name))
        else:
            done = {k for k, s, e in shards if _shard_ok(os.path.join(folder, _shard_file(k)), s, e)}
    _write_manifest(folder, {**doc, "complete": False, "shards": []})
    todo = [s for s in shards if s[0] not in done]
    started = time.perf_counter()
    retried: list[dict[str, Any]] = []
    where: dict[str, int] = {}
    what = "features" if plan.format == FEATURES_FORMAT else "predictions"
    written: set[int] = set()
    try:
        with bar(total=len(data), desc=what, unit="row", show=progress) as pbar:
            pbar.update(sum(e - s for k, s, e in shards if k in done))
            _run_todo(runner or local_runner, model_bytes, data, todo, shards, plan, folder, pbar,
                      written, retried, where)
    except KeyboardInterrupt as exc:  # complete shards stay: the next run resumes from them
        from graphfix.errors import Interrupted

        signum = getattr(exc, "signum", signal.SIGINT)
        raise Interrupted(signum, f"interrupted; {len(done | written)} of {len(shards)} shards are in {folder}: "
                                  "run the same command again to finish") from None
    missing = sorted({k for k, _, _ in shards} - done - written)
    if missing:
        raise GraphfixError(f"{len(missing)} shards were not written (first: {_shard_file(missing[0])})", path=folder)
    _write_manifest(folder, {**doc, "complete": True,
                             "shards": [{"file": _shard_file(k), "start": s, "stop": e} for k, s, e in shards]})
    return {"folder": folder, "rows": len(data), "shards": len(shards), "written": len(todo),
            "skipped": len(done), "retried": retried, "rows_by_worker": where,
            "seconds": round(time.perf_counter() - started, 3)}


def read_arrays(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named arrays of every shard of a complete folder, in row order, each filled into one
    array (a memory-mapped temporary file above `graphfix.data.arrays.memory_budget`).

    Raises:
        GraphfixError: the folder is incomplete, a shard is missing or does not hold its rows.
    """
    from graphfix.data.arrays import allocate

    folder = os.fspath(folder)
    doc = read_manifest(folder)
    if not doc.get("complete"):
        raise GraphfixError("the folder is incomplete (an interrupted run); run the same command again to finish it",
                            path=folder)
    names = list(names)
    out: dict[str, np.ndarray] = {}
    text: dict[str, list[np.ndarray]] = {}  # strings: widths differ between shards
    for sh in doc["shards"]:
        path = os.path.join(folder, sh["file"])
        try:
            with np.load(path, allow_pickle=False) as z:
                if not np.array_equal(z["row"], np.arange(sh["start"], sh["stop"])):
                    raise GraphfixError(f"shard does not hold rows {sh['start']}..{sh['stop'] - 1}", path=path)
                for n in names:
                    part = z[n]
                    if part.dtype.kind in "US":
                        text.setdefault(n, []).append(part)
                        continue
                    if n not in out:
                        out[n] = allocate((doc["rows"], *part.shape[1:]), None, part.dtype)[0]
                    out[n][sh["start"] : sh["stop"]] = part
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise GraphfixError(f"cannot read shard ({exc})", path=path) from exc
    return {**out, **{n: np.concatenate(parts) for n, parts in text.items()}}


def load_features_dir(folder: str | os.PathLike, labels: list[str] | None, *, need_targets: bool = True) -> Dataset:
    """A features folder as a Dataset whose `features` are set (targets as `y`; [N, 0] when the
    folder has none and `need_targets` is False).

    Raises:
        GraphfixError: not a complete features folder, no targets, or labels other than the model's.
    """
    folder = os.fspath(folder)
    doc = read_manifest(folder)
    if doc["format"] != FEATURES_FORMAT:
        raise GraphfixError("is a predictions folder, not a features folder", path=folder)
    if labels is not None and list(labels) != doc["labels"]:
        raise GraphfixError(f"the features were extracted for labels {doc['labels'][:5]}..., not the model's",
                            path=folder, hint="extract features with the model you train")
    if not doc.get("labelled") and need_targets:
        raise GraphfixError("the features were extracted from unlabelled inputs; training and calibration need labels",
                            path=folder)
    arrays = read_arrays(folder, ["features", "path"] + (["targets"] if doc.get("labelled") else []))
    y = arrays.get("targets", np.zeros((len(arrays["features"]), 0), np.uint8))
    prep = doc.get("preprocess")
    prep = Preprocess(**{**prep, "size": tuple(prep["size"])}) if prep else None
    return Dataset(y=y, labels=list(doc["labels"]), paths=[str(p) for p in arrays["path"]], source=folder,
                   features=arrays["features"], backbone=doc["model_sha256"], origin=doc["data_fingerprint"],
                   preprocess=prep)
