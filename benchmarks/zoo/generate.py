"""Export a zoo of torchvision and timm classifiers to ONNX with both torch exporters.

Random initialisation (no downloads), small inputs, 100 classes, some with a Softmax appended.
Each architecture is written twice: ``NAME.ts17.onnx`` (``torch.onnx.export(dynamo=False)``,
opset 17) and ``NAME.dyn18.onnx`` (``dynamo=True``, opset 18). Needs the ``zoo`` extra
(torchvision 0.28 and timm beside the pinned CPU torch; see README "Model zoo").

    python benchmarks/zoo/generate.py -o .cache/zoo            # every model
    python benchmarks/zoo/generate.py -o DIR --only test_vit,squeezenet1_1
    python benchmarks/zoo/generate.py -o tests/zoo --ci          # the committed CI subset
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _import_torchvision():
    """torchvision's C extension is built against CUDA torch and does not load beside the CPU
    wheel; its Python classification models do not need it. Two ops are registered as fakes at
    import time, so declare them (schemas as in torchvision) before importing."""
    if not hasattr(torch.ops, "torchvision") or not hasattr(torch.ops.torchvision, "nms"):
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _import_torchvision.lib = lib  # keep the registration alive
        except RuntimeError:
            pass
    import torchvision

    return torchvision


tv = _import_torchvision()
import timm  # noqa: E402  (imports torchvision)

CLASSES = 100
#: The models whose exports are committed under tests/zoo/ for CI (a few MB in all).
CI_SUBSET = ("vit_tiny", "maxvit_tiny", "convnext_small_cfg", "deit_distilled_mini")


def _tv(name, size=64, **kw):
    return ("torchvision", name, size, lambda: getattr(tv.models, name)(num_classes=CLASSES, **kw))


def _tvc(name, size, ctor):
    return ("torchvision", name, size, ctor)


#: Small configurations of real architectures (the CI subset), as timm names them.
_TIMM_ALIASES = {"deit_distilled_mini": "deit_tiny_distilled_patch16_224"}


def _timm(name, size=None, **kw):
    def make():
        return timm.create_model(_TIMM_ALIASES.get(name, name), pretrained=False, num_classes=CLASSES, **kw)
    return ("timm", name, size, make)


#: (source, name, input size, constructor); input size None = the model's default.
ZOO = [
    _tv("squeezenet1_1"),
    _tv("mobilenet_v3_small"),
    _tv("shufflenet_v2_x0_5"),
    _tv("mnasnet0_5"),
    _tv("resnet18"),
    _tv("efficientnet_b0"),
    _tv("regnet_x_400mf"),
    _tv("densenet121"),
    _tv("googlenet", aux_logits=False, init_weights=True),
    _tvc("vit_tiny", 32, lambda: tv.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=CLASSES)),
    _tvc("swin_tiny", 64, lambda: tv.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=CLASSES)),
    _tvc("maxvit_tiny", 64, lambda: tv.models.MaxVit(
        input_size=(64, 64), stem_channels=16, partition_size=2, block_channels=[16, 32], block_layers=[1, 1],
        head_dim=8, stochastic_depth_prob=0.0, num_classes=CLASSES)),
    _tvc("convnext_small_cfg", 64, lambda: tv.models.convnext.ConvNeXt(
        [tv.models.convnext.CNBlockConfig(16, 32, 1), tv.models.convnext.CNBlockConfig(32, None, 1)],
        num_classes=CLASSES)),
    _timm("test_resnet"),
    _timm("test_efficientnet"),
    _timm("test_efficientnet_gn"),
    _timm("test_efficientnet_ln"),
    _timm("test_convnext"),
    _timm("test_convnext2"),
    _timm("test_byobnet"),
    _timm("test_nfnet"),
    _timm("test_vit"),
    _timm("test_vit2"),
    _timm("test_vit3"),
    _timm("test_vit_relpos"),
    _timm("test_coatnet"),
    _timm("test_maxvit"),
    _timm("test_mambaout"),
    _timm("deit_tiny_distilled_patch16_224", 64, img_size=64, depth=2),
    _timm("deit_distilled_mini", 32, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2),
    _timm("levit_128s", 64, img_size=64),
    _timm("efficientformer_l1", 224),
    _timm("efficientvit_b0", 64),
    _timm("mobilenetv3_small_050", 64),
    _timm("ghostnet_050", 64),
    _timm("regnetx_002", 64),
    _timm("pit_ti_distilled_224", 64, img_size=64),
]
#: Every third model gets a Softmax appended (the classifier then feeds it).
SOFTMAX_EVERY = 3


def build(entry, index: int) -> tuple[torch.nn.Module, tuple[int, int, int, int]]:
    source, name, size, make = entry
    torch.manual_seed(index)
    model = make().eval()
    if size is None:
        size = model.default_cfg["input_size"][-1]
    if index % SOFTMAX_EVERY == 0:
        model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    return model, (1, 3, size, size)


def export_one(model, shape, path: Path, dynamo: bool) -> None:
    """Export with a batch-2 example (torch.export specialises a batch of 1), and with a batch
    of 1 where the model's own code does not trace with 2 (timm relpos ViT, MaxViT)."""
    try:
        _export(model, torch.randn(2, *shape[1:]), path, dynamo)
    except Exception:
        _export(model, torch.randn(*shape), path, dynamo)


def _export(model, x, path: Path, dynamo: bool) -> None:
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=64)
        prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["data"],
                                 output_names=["output"], dynamic_shapes=({0: batch},),
                                 optimize=True, verbose=False)
        prog.save(str(path))
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["data"],
                          output_names=["output"], dynamic_axes={"data": {0: "batch"}, "output": {0: "batch"}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--ci", action="store_true", help="only the CI subset (committed under tests/zoo/)")
    ap.add_argument("--exporters", default="ts17,dyn18")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(CI_SUBSET) if args.ci else set(args.only.split(",")) if args.only else None
    index = []
    for i, entry in enumerate(ZOO):
        if only and entry[1] not in only:
            continue
        for exporter in args.exporters.split(","):
            path = args.out / f"{entry[1]}.{exporter}.onnx"
            start = time.perf_counter()
            try:
                model, shape = build(entry, i)
                # Not under no_grad: torchvision's attention would take its fused fast path
                # (aten::_native_multi_head_attention), which TorchScript cannot export.
                export_one(model, shape, path, dynamo=exporter == "dyn18")
                status = "ok"
            except Exception as exc:  # a model that does not export is reported, not fatal
                status = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                path.unlink(missing_ok=True)
            record = {"model": entry[1], "source": entry[0], "exporter": exporter, "file": path.name,
                      "input": list(shape) if status == "ok" else None, "softmax": i % SOFTMAX_EVERY == 0,
                      "status": status, "seconds": round(time.perf_counter() - start, 1)}
            index.append(record)
            print(json.dumps(record), flush=True)
    (args.out / "zoo.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
