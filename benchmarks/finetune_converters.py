"""Measure the ONNX->torch rebuild of --train-from: graphfix's own op table vs onnx2torch.

On the committed zoo subset (tests/zoo) and the legacy fixtures (fixtures/mxnet, fixtures/caffe),
each swapped to a 3-label head: cut tensors and blocks found, exactness of the rebuilt segment
(last block, last two blocks, the deepest cut) vs onnxruntime, and forward+backward time of the
deepest segment; onnx2torch converts the whole model (its unit) and is compared on the same
numbers. Run: PYTHONPATH=$PWD python benchmarks/finetune_converters.py [--onnx2torch]
"""

from __future__ import annotations

import glob
import json
import sys
import time

import numpy as np


MANIFEST = json.load(open("fixtures/mxnet/manifest.json"))


def corpus() -> list[tuple[str, dict]]:
    items = [(p, {}) for p in sorted(glob.glob("tests/zoo/*.onnx"))]
    items += [(p, {}) for p in sorted(glob.glob("fixtures/mxnet/*/*-symbol.json"))]
    items += [(p, {"weights": p.replace(".prototxt", ".caffemodel")}) for p in sorted(glob.glob("fixtures/caffe/*.prototxt"))]
    return items


def own(model, x, torch) -> dict:
    from graphfix.data.features import feature_model, find_head_gemm, find_value
    from graphfix.train.finetune import _folded_shapes, _Segment, segment_nodes, train_from_candidates

    cands = train_from_candidates(model, limit=None)
    blocks = [c for c in cands if c["block"]]
    picks = {"block1": blocks[0]["tensor"] if blocks else None, "block2": blocks[1]["tensor"] if len(blocks) > 1 else None,
             "deepest": cands[-1]["tensor"] if cands else None}
    feats = feature_model(model).run(x)
    ref = next(iter(feats.values())).reshape(len(x), -1)
    out = {"cuts": len(cands), "blocks": len(blocks)}
    for key, tensor in picks.items():
        if tensor is None:
            continue
        try:
            nodes = segment_nodes(model, tensor)
            start = find_value(model, tensor)
            seg = _Segment(torch, model, nodes, start, find_head_gemm(model).inputs[0], _folded_shapes(model, nodes, start, x))
            a = feature_model(model, tensor).run(x)
            a = torch.from_numpy(np.ascontiguousarray(next(iter(a.values()))))
            with torch.no_grad():
                y = seg(a).reshape(len(x), -1).numpy()
            out[key] = float(np.abs(y - ref).max() / max(1.0, np.abs(ref).max()))
            if key == "deepest":
                out["deepest_nodes"] = len(nodes)
                out["deepest_ms"] = _time(torch, lambda: seg(a).square().sum(), list(seg.params.values()))
        except Exception as exc:  # noqa: BLE001 - a measurement
            out[key] = f"error: {str(exc)[:160]}"
    return out


def onnx2torch(model, x, torch) -> dict:
    from onnx2torch import convert

    ref = model.run(x)
    name = "logits" if "logits" in ref else next(iter(ref))
    try:
        net = convert(model.to_proto() if hasattr(model, "to_proto") else model.proto)
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)[:200]}
    net.eval()
    xt = torch.from_numpy(x)
    try:
        with torch.no_grad():
            outs = net(xt)
    except Exception as exc:  # noqa: BLE001
        return {"error": "run: " + str(exc)[:200]}
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    names = [o.name for o in model.ir.graph.outputs]
    y = outs[names.index(name)].numpy()
    r = ref[name]
    res = {"diff": float(np.abs(y - r).max() / max(1.0, np.abs(r).max()))}
    res["ms"] = _time(torch, lambda: (net(xt)[names.index(name)] if len(names) > 1 else net(xt)).square().sum(),
                      [p for p in net.parameters()])
    return res


def _time(torch, loss_fn, params, reps: int = 5) -> float:
    for p in params:
        p.requires_grad_(True)
    loss_fn().backward()
    t = time.perf_counter()
    for _ in range(reps):
        loss_fn().backward()
    return round((time.perf_counter() - t) / reps * 1000, 2)


def main() -> None:
    import torch

    import graphfix as gf

    torch.set_num_threads(1)
    use_o2t = "--onnx2torch" in sys.argv
    rows = {}
    for path, kw in corpus():
        try:
            model = gf.swap_head(gf.load(path, **kw), labels=3, seed=0)
        except Exception as exc:  # noqa: BLE001
            rows[path] = {"skipped": str(exc)[:120]}
            print(path, json.dumps(rows[path]), flush=True)
            continue
        shape = [4, *[d if isinstance(d, int) else 32 for d in list(model.ir.graph.inputs[0].shape)[1:]]]
        if "fixtures/mxnet" in path:
            shape = [4, *MANIFEST[path.split("/")[2]]["input_shape"][1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        rows[path] = {"ops": len({n.op_type for n in model.ir.graph}), **own(model, x, torch)}
        if use_o2t:
            rows[path]["onnx2torch"] = onnx2torch(model, x, torch)
        print(path, json.dumps(rows[path]), flush=True)


if __name__ == "__main__":
    main()
