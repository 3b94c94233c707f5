"""Issue 23's acceptance set: every op of docs/mxnet-supported-ops.md with the attribute values
MXNet 1.9.1 accepts, built and run by real MXNet (fixtures/mxnet/make_op_attrs.py).

Each runnable case is converted and run at batch 1 and 3 on MXNet's own inputs: output count,
exact shapes (rank included: MXNet 1.x's (1,) where a result would be 0-d), dtypes, and values
within 1e-4 (relative to max(1, max|MXNet|)). Attribute values graphfix does not convert are
refused by name, in one unsupported_op error naming the node. No MXNet needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphfix.convert.mxnet import SUPPORTED_OPS, load_mxnet
from graphfix.errors import GraphfixError
from tests.convert.mxnet.mxnet_helpers import MX_FIXTURES, SymbolBuilder

FOLDER = MX_FIXTURES / "op_attrs"
DOC = json.loads((FOLDER / "cases.json").read_text())
CASES = DOC["cases"]
RUNNABLE = sorted(k for k, v in CASES.items() if "refused" not in v)
REFUSED = sorted(k for k, v in CASES.items() if "refused" in v)


@pytest.fixture(scope="module")
def ref():
    with np.load(FOLDER / "ref.npz") as data:
        return {k: data[k] for k in data.files}


def _load(name):
    shapes = {n: tuple(v["shape"]) for n, v in CASES[name]["inputs"].items()}
    return load_mxnet(FOLDER / "cases" / f"{name}-symbol.json", FOLDER / "cases" / f"{name}-0000.params", shapes)


@pytest.mark.parametrize("name", RUNNABLE)
def test_case_matches_mxnet(name, ref):
    model = _load(name)
    for batch in (1, 3):
        feeds = {n: ref[f"{name}/in_{n}_b{batch}"] for n in CASES[name]["inputs"]}
        outs = list(model.run(feeds).values())
        want = [ref[k] for k in sorted((k for k in ref if k.startswith(f"{name}/out") and k.endswith(f"_b{batch}")),
                                       key=lambda k: int(k.split("/out")[1].split("_")[0]))]
        assert len(outs) == len(want), f"{len(outs)} outputs, MXNet gave {len(want)}"
        for i, (got, exp) in enumerate(zip(outs, want)):
            assert got.shape == exp.shape, f"batch {batch} output {i}: shape {got.shape}, MXNet {exp.shape}"
            assert got.dtype == exp.dtype, f"batch {batch} output {i}: dtype {got.dtype}, MXNet {exp.dtype}"
            diff = np.abs(got.astype(np.float64) - exp.astype(np.float64))
            tol = 1e-4 * max(1.0, float(np.abs(exp).max()) if exp.size else 0.0)
            assert exp.size == 0 or float(diff.max()) <= tol, f"batch {batch} output {i}: max diff {diff.max():.3g}"


@pytest.mark.parametrize("name", REFUSED)
def test_unsupported_value_refused_by_name(name):
    with pytest.raises(GraphfixError) as err:
        _load(name)
    assert err.value.kind == "unsupported_op"
    line = err.value.one_line()
    assert f"node op ({CASES[name]['ops'][-1]}): {CASES[name]['refused']}" in line or (
        f"): {CASES[name]['refused']}" in line and "node op" in line), line
    assert "\n" not in line


def test_every_claimed_op_has_a_case():
    covered = {op for case in CASES.values() for op in case["ops"]}
    claimed = set(SUPPORTED_OPS) - set(DOC["not_in_mxnet_1_9_1"])
    assert sorted(claimed - covered) == []
    assert set(DOC["not_in_mxnet_1_9_1"]) <= set(SUPPORTED_OPS)


def test_attribute_values_of_every_op_are_declared_or_open():
    """The docs list per op the values converted: every closed-set attribute used by a refusal
    case is declared on its converter."""
    from graphfix.convert.mxnet._table import CONVERTERS

    assert CONVERTERS["Pooling"].values["pool_type"] == ("max", "avg", "sum", "lp")
    assert CONVERTERS["softmax"].values["use_length"] == (False, True)
    assert CONVERTERS["Dropout"].values["mode"] == ("training",)


def test_cast_bfloat16_refused_by_name(tmp_path):
    # MXNet 1.9.1's Python front end cannot build this symbol; its JSON can still say it.
    b = SymbolBuilder()
    b.var("data")
    b.op("Cast", "c", ["data"], dtype="bfloat16")
    sym = b.save(tmp_path, ["c"])
    with pytest.raises(GraphfixError) as err:
        load_mxnet(sym, input_shape={"": (1, 3)})
    assert err.value.one_line() == (
        f"{sym}: node c (Cast): dtype='bfloat16' is not supported (supported: 'float32', 'float16', 'float64', "
        "'uint8', 'int8', 'int32', 'int64', 'bool')")
