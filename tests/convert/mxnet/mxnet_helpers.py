"""Shared helpers for the MXNet importer tests: fixture paths, a tiny symbol writer, parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
MX_FIXTURES = REPO / "fixtures" / "mxnet"
MANIFEST = json.loads((MX_FIXTURES / "manifest.json").read_text())
#: Whole-network fixtures (name -> manifest entry).
MODELS = {k: v for k, v in MANIFEST.items() if not k.startswith("_") and k != "ops"}
#: One-op fixtures (name -> manifest entry).
OPS = MANIFEST["ops"]


def model_files(name: str, *, op: bool = False) -> tuple[Path, Path, Path]:
    """(symbol, params, reference npz) of a fixture."""
    folder = MX_FIXTURES / ("ops" if op else "") / name
    return folder / f"{name}-symbol.json", folder / f"{name}-0000.params", folder / f"{name}-ref.npz"


def assert_parity(model, ref_path: Path, what: str) -> list[float]:
    """Run `model` on the reference inputs (batch 1 and 3); max abs diff <= 1e-4 x max(1, max|ref|)."""
    ref = np.load(ref_path)
    diffs = []
    for batch in (1, 3):
        outs = list(model.run(ref[f"input_b{batch}"]).values())
        n_ref = len([k for k in ref.files if k.startswith("output") and k.endswith(f"_b{batch}")])
        assert len(outs) == n_ref, f"{what}: {len(outs)} outputs, MXNet gave {n_ref}"
        for i, got in enumerate(outs):
            want = ref[f"output{i}_b{batch}"]
            assert got.shape == want.shape, f"{what} batch {batch} output {i}: shape {got.shape} != {want.shape}"
            diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
            tol = 1e-4 * max(1.0, float(np.abs(want).max()) if want.size else 0.0)
            assert diff <= tol, f"{what} batch {batch} output {i}: max abs diff {diff:.3g} > {tol:.3g}"
            diffs.append(diff)
    return diffs


class SymbolBuilder:
    """Write tiny 1.x symbol JSON + params for per-op tests.

    `var(name, array=None)` adds a variable (with params when `array` is given); `op(op, name,
    inputs, **attrs)` adds a node; `save(folder, heads)` writes `<name>-symbol.json` and
    `<name>-0000.params` and returns the JSON path.
    """

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.params: dict[str, np.ndarray] = {}
        self.ids: dict[str, int] = {}

    def var(self, name: str, array: np.ndarray | None = None, aux: bool = False) -> str:
        self.ids[name] = len(self.nodes)
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        if array is not None:
            self.params[("aux:" if aux else "arg:") + name] = np.asarray(array, dtype=np.float32)
        return name

    def op(self, op: str, name: str, inputs: list, **attrs) -> str:
        entries = []
        for item in inputs:
            src, idx = (item, 0) if isinstance(item, str) else item
            entries.append([self.ids[src], idx, 0])
        self.ids[name] = len(self.nodes)
        node = {"op": op, "name": name, "inputs": entries}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return name

    def doc(self, heads: list) -> dict:
        heads_ = [[self.ids[h], 0, 0] if isinstance(h, str) else [self.ids[h[0]], h[1], 0] for h in heads]
        return {
            "nodes": self.nodes,
            "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
            "node_row_ptr": list(range(len(self.nodes) + 1)),
            "heads": heads_,
            "attrs": {"mxnet_version": ["int", 10901]},
        }

    def save(self, folder: Path, heads: list, name: str = "t") -> Path:
        from graphfix.convert.mxnet._params import write_params

        sym = Path(folder) / f"{name}-symbol.json"
        sym.write_text(json.dumps(self.doc(heads)))
        write_params(Path(folder) / f"{name}-0000.params", self.params)
        return sym


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`python -m graphfix.cli ARGS` with the repository on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "graphfix.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )
