"""Shards on Ray: Ray Data hands shard descriptors to an actor pool of onnxruntime sessions.

`ray_runner(address)` is a `graphfix.data.shards.Runner`. The model's bytes go into the object
store once; each actor loads them once (one session per actor, the CUDA provider first when Ray
gave the actor a GPU) and, per shard, decodes that shard's images (or slices the arrays) and runs
the model in batches of the plan's batch size, exactly as the local runner does, so the results
are bitwise equal at the same batch size and provider. Ray Data schedules the shards over the
actors and restarts a dead actor and retries its shard (a shard's result exists only once it is
complete, so every row is written once); a small ledger actor counts the starts of each shard,
and a shard started more than once is reported as retried. Results (a few MB per shard) come back
to the driver, which alone writes files: the output folder needs to be on the driver only, but
image files (CSV data) must be readable at the same path on every node.
"""

from __future__ import annotations

__all__ = ["ray_runner"]

import dataclasses
import io
import logging
import os
import re
from typing import Any, Iterator

import numpy as np

from graphfix.data.datasets import Dataset
from graphfix.data.shards import Runner, Shard, ShardPlan, run_shard
from graphfix.errors import GraphfixError
from graphfix.scale.ray_runtime import first_line, init_ray

#: Starts of one shard (each after its actor died) before the run gives up on it.
MAX_ATTEMPTS = 3


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class _Ledger:
    """Holds the model and data references for the actors (so their constructor arguments stay
    small) and counts how often each shard was started (a start after a lost actor is a retry)."""

    def __init__(self, model: list, data: list) -> None:
        self.refs = model + data
        self.starts: dict[int, int] = {}

    def inputs(self) -> list:
        return self.refs

    def start(self, shard: int) -> int:
        self.starts[shard] = self.starts.get(shard, 0) + 1
        return self.starts[shard]


class _ShardActor:
    """One onnxruntime session; runs whole shards (Ray Data batches of one shard descriptor)."""

    def __init__(self, ledger: Any, plan: ShardPlan, threads: int) -> None:
        import ray

        from graphfix.model import cpu_session

        self.ray = ray
        gpu = bool(ray.get_gpu_ids())
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None
        model_ref, data_ref = ray.get(ledger.inputs.remote())
        self.data: Dataset = ray.get(data_ref)
        self.session = cpu_session(ray.get(model_ref), self.data.source, providers=providers, threads=threads)
        self.plan = plan
        self.ledger = ledger
        self.where = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"shard": [], "blob": [], "where": [], "attempts": []}
        for k, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
            attempts = self.ray.get(self.ledger.start.remote(int(k)))
            if attempts > MAX_ATTEMPTS:
                raise RuntimeError(f"shard {int(k)} (rows {int(start)}..{int(stop) - 1}) killed its worker "
                                   f"{attempts - 1} times; giving up")
            arrays = run_shard(self.session, self.data, int(start), int(stop), self.plan)
            out["shard"].append(int(k))
            out["blob"].append(_pack(arrays))
            out["where"].append(self.where)
            out["attempts"].append(attempts)
        return {"shard": np.array(out["shard"], np.int64), "blob": np.array(out["blob"], dtype=object),
                "where": np.array(out["where"]), "attempts": np.array(out["attempts"], np.int64)}


def _reason(exc: BaseException) -> str:
    """The user-code error's one line: Ray wraps a task's exception in its own, with the remote
    traceback as text; the innermost `SomeError: message` line of the chain is the cause."""
    texts = []
    while exc is not None:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    found = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", "\n".join(texts), re.MULTILINE)
    useful = [(kind, msg) for kind, msg in found if kind not in ("UserCodeException", "RayTaskError")]
    if useful:
        return useful[-1][1].strip()
    return first_line("\n".join(texts)) or "unknown error"


def _pool_size(ray: Any, cpus: float) -> int:
    total = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(total // cpus))


def ray_runner(address: str | None, *, actors: int | None = None, cpus_per_actor: float = 1.0,
               gpus_per_actor: float = 0.0) -> Runner:
    """A runner that computes shards on Ray (started or joined at `address`, see `init_ray`).

    Args:
        actors: Size of the actor pool (default: the cluster's CPUs / cpus_per_actor).
        cpus_per_actor: CPUs each actor holds (also its onnxruntime and decoding threads).
        gpus_per_actor: GPUs each actor holds (> 0 puts the CUDA provider first).
    """

    def run(model_bytes: bytes, data: Dataset, shards: list[Shard], plan: ShardPlan
            ) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, Any]]]:
        if not shards:
            return
        ray = init_ray(address)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        threads = max(1, int(cpus_per_actor))
        local = dataclasses.replace(plan, workers=plan.workers or threads, post=None)  # post runs here
        ledger = ray.remote(_Ledger).options(num_cpus=0).remote([ray.put(model_bytes)], [ray.put(data)])
        items = [{"shard": k, "start": s, "stop": e} for k, s, e in shards]
        pool = actors or min(len(shards), _pool_size(ray, cpus_per_actor))
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _ShardActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs={"ledger": ledger, "plan": local, "threads": threads},
        )  # Ray Data restarts a dead actor and retries its shard (max_restarts=-1); the ledger caps it
        quiet = logging.getLogger("ray.data")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # its errors come back as our one line
        try:
            for row in ds.iter_rows():
                info = {"where": str(row["where"]), "attempts": int(row["attempts"])}
                if info["attempts"] > 1:
                    info["why"] = "its worker was lost; rerun on another"
                yield int(row["shard"]), _unpack(row["blob"]), info
        except GraphfixError:
            raise
        except Exception as exc:  # a task error, re-raised by Ray Data with its traceback as text
            raise GraphfixError(f"the Ray run failed: {_reason(exc)}", path=data.source) from None
        finally:
            quiet.setLevel(level)
            ray.kill(ledger)

    return run
