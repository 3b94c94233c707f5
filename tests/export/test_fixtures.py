"""The project's fixtures (fixtures/onnx, fixtures/mxnet, fixtures/caffe), as they land: each one,
after swap-head where it has a head, exports, checks without FAIL and passes parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _export_models import REPO
from graphfix.convert.export import export

#: Random-init deep fixtures whose fp16 error grows ~1.3x per block (chaotic amplification of
#: fp16 rounding, measured layer by layer); their fp16 probabilities drift past 1e-2 on CPU
#: (inceptionv3 on the seeded batch of 8 varied inputs, though not on one normal input).
FP16_CHAOTIC = {"mobilenet1_0_25", "mobilenetv2_0_25", "resnet50_v2", "inceptionv3"}
#: Caffe fixtures whose stored preprocessing (no transform_param scale) feeds raw 0..255 pixels:
#: parity runs in that range, where the random-init LeNet's logits reach ~500 and fp16 moves its
#: probabilities by ~0.04.
FP16_RAW_PIXELS = {"caffe/lenet.prototxt", "caffe/lenet_v1.prototxt"}


def _fixtures() -> list[tuple[str, str, dict]]:
    items: list[tuple[str, str, dict]] = []
    for path in sorted((REPO / "fixtures" / "onnx").glob("*.onnx")):
        items.append((path.stem, str(path), {}))
    manifest_path = REPO / "fixtures" / "mxnet" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for path in sorted((REPO / "fixtures" / "mxnet").glob("*/*-symbol.json")):
        name = path.parent.name
        shape = manifest.get(name, {}).get("input_shape")
        items.append((name, str(path), {"input_shape": {"data": tuple(shape)}} if shape else {}))
    for path in sorted((REPO / "fixtures" / "caffe").glob("*.prototxt")):
        weights = path.with_suffix(".caffemodel")
        if weights.exists():
            items.append((path.stem, str(path), {"weights": str(weights)}))
    return items


FIXTURES = _fixtures()


def _load(path: str, kwargs: dict):
    import graphfix as gf

    return gf.load(path, **kwargs)


@pytest.mark.parametrize("name,path,kwargs", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_exports_as_is(name, path, kwargs):
    result = export(_load(path, kwargs), None, target="tensorrt")
    assert result.parity["ok"], result.parity
    assert result.report.ok, result.report.text()


@pytest.mark.parametrize("name,path,kwargs", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_swapped_exports_fp32_and_fp16(name, path, kwargs):
    import graphfix as gf
    from graphfix.errors import GraphfixError

    model = _load(path, kwargs)
    try:
        swapped = gf.swap_head(model, labels=6)
    except GraphfixError as exc:
        pytest.skip(f"no single classification head: {exc.kind}")
    result = export(swapped, None, target="tensorrt")
    assert result.parity["outputs"]["probabilities"]["max_abs_diff"] <= 1e-5
    assert result.report.ok, result.report.text()
    raw_pixels = Path(path).relative_to(REPO / "fixtures").as_posix() in FP16_RAW_PIXELS
    if name in FP16_CHAOTIC or raw_pixels:  # parity must catch the drift and refuse to write the model
        with pytest.raises(GraphfixError) as info:
            export(swapped, None, target="tensorrt", fp16=True)
        assert info.value.kind == "parity" and info.value.exit_code == 1
        result = export(swapped, None, target="tensorrt", fp16="auto")  # keeps the fewest fp32
        auto = result.notes["fp16_auto"]
        assert result.parity["ok"] and 0 < auto["kept_fp32_count"] < auto["candidates"], auto
        assert result.report.ok, result.report.text()
        return
    result = export(swapped, None, target="tensorrt", fp16=True)
    assert result.parity["outputs"]["probabilities"]["max_abs_diff"] <= 1e-2
    assert result.report.ok, result.report.text()
