"""train-head --train-from at scale: the activation cache within the memory budget, Ctrl-C, --bn-stats."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest

from graphfix.train import train_head
from graphfix.train import finetune as ft

from .test_finetune import _data, two_layer_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def task():
    model = two_layer_model()
    return model, _data(model, 300, 1), _data(model, 100, 3)


def _inits(model) -> dict[str, bytes]:
    return {k: v.const_value.numpy().tobytes() for k, v in model.ir.graph.initializers.items()}


def test_cache_over_the_budget_is_memory_mapped_and_gives_the_same_bytes(task, monkeypatch, tmp_path):
    model, train, val = task
    kw = dict(train_from="r1", epochs=4, lr=3e-3, batch_size=64, cache=False)
    in_memory, h_mem = train_head(model, train, val, **kw)
    assert h_mem["activations"]["memory_mapped"] is False and h_mem["activations"]["dtype"] == "float16"
    monkeypatch.setenv("GRAPHFIX_MEMORY_BUDGET", "16K")  # activations: 400 x 6x6x6 x 2 bytes = 169 KB
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mapped, h_map = train_head(model, train, val, **kw)
    assert h_map["activations"]["memory_mapped"] is True and h_map["activations"]["bytes"] == 400 * 216 * 2
    assert mapped.to_bytes() == in_memory.to_bytes()  # byte-identical: same values, same order
    assert h_map["epoch_val_mAP"] == h_mem["epoch_val_mAP"] and h_map["best_epoch"] > 0
    assert list(tmp_path.iterdir()) == []  # the mapped file is gone (unlinked as soon as it was made)


def test_activations_and_features_share_one_budget(task, monkeypatch, tmp_path):
    model, train, val = task
    kw = dict(train_from="r1", epochs=1, lr=3e-3, batch_size=64, cache=False)
    acts, feats = 400 * 216 * 2, 400 * 8 * 4  # float16 activations 6x6x6, float32 features 8
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("GRAPHFIX_MEMORY_BUDGET", str(acts + feats))
    _, h = train_head(model, train, val, **kw)
    assert h["activations"]["memory_mapped"] is False and h["activations"]["bytes"] == acts
    monkeypatch.setenv("GRAPHFIX_MEMORY_BUDGET", str(acts + feats - 1))  # each alone fits, both do not
    _, h = train_head(model, train, val, **kw)
    assert h["activations"]["memory_mapped"] is True


def test_fp16_storage_rule_falls_back_to_float32(task, monkeypatch):
    model, train, val = task
    _, h16 = train_head(model, train, val, train_from="r1", epochs=2, cache=False)
    assert h16["activations"]["dtype"] == "float16" and 0 < h16["activations"]["fp16_error"] <= ft.FP16_TOLERANCE
    monkeypatch.setattr(ft, "FP16_TOLERANCE", h16["activations"]["fp16_error"] / 2)
    _, h32 = train_head(model, train, val, train_from="r1", epochs=2, cache=False)
    assert h32["activations"]["dtype"] == "float32"
    assert h32["activations"]["fp16_error"] == h16["activations"]["fp16_error"]
    # epoch 0 is onnxruntime's features in both; later epochs differ by the rounding only
    assert h32["epoch_val_mAP"][0] == h16["epoch_val_mAP"][0]
    np.testing.assert_allclose(h32["epoch_val_mAP"], h16["epoch_val_mAP"], atol=2e-3)


def test_a_later_batch_outside_float16_range_restarts_in_float32(task):
    model, train, val = task
    x = train.x.copy()
    x[-1] *= 1e5  # the last row's activations exceed FP16_RANGE; the first batch's do not
    from graphfix.data import Dataset

    big = Dataset.from_arrays(x, train.y, train.labels)
    _, hist = train_head(model, big, val, train_from="r1", epochs=1, cache=False, features_batch_size=64)
    assert hist["activations"]["dtype"] == "float32" and hist["activations"]["fp16_error"] is not None


def _interrupt_at(monkeypatch, epoch: int) -> None:
    real = ft._Trainer.epoch
    calls = []

    def epoch_fn(self, *args, **kw):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(ft._Trainer, "epoch", epoch_fn)


def test_keep_best_on_interrupt_returns_the_best_epoch_so_far(task, monkeypatch):
    model, train, val = task
    kw = dict(train_from="r1", lr=3e-3, batch_size=64, cache=False)
    two, h_two = train_head(model, train, val, epochs=2, **kw)
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_head(model, train, val, epochs=10, **kw)
    _interrupt_at(monkeypatch, 3)
    kept, hist = train_head(model, train, val, epochs=10, keep_best_on_interrupt=True, **kw)
    assert hist["interrupted_epoch"] == 3 and hist["epochs_run"] == 2
    assert hist["epoch_val_mAP"] == h_two["epoch_val_mAP"] and hist["best_epoch"] == h_two["best_epoch"]
    assert kept.metadata["training"]["interrupted_epoch"] == 3
    # the same weights as a run that stopped after epoch 2 (the history says 10 epochs were asked)
    assert _inits(kept) == _inits(two)


def test_cli_interrupt_writes_nothing_unless_asked(task, monkeypatch, tmp_path, capsys):
    from graphfix.cli import main

    model, train, val = task
    src, data = tmp_path / "m.onnx", tmp_path / "train.npz"
    model.save(str(src))
    np.savez(data, x=train.x, y=train.y)
    out = tmp_path / "out.onnx"
    argv = ["train-head", str(src), "--train", str(data), "--train-from", "r1", "--epochs", "5", "--no-cache",
            "-o", str(out)]
    _interrupt_at(monkeypatch, 2)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["graphfix: error: interrupted; no output written"] and not out.exists()
    _interrupt_at(monkeypatch, 2)
    assert main([*argv, "--keep-best-on-interrupt", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    best = doc["history"]["best_epoch"]
    assert doc["history"]["interrupted_epoch"] == 2 and best in (0, 1) and out.exists()
    assert captured.err.strip().splitlines()[-1] == \
        f"graphfix: warning: interrupted in epoch 2 of 5: wrote the best epoch so far ({best})"


def test_bn_stats_update_changes_only_the_segments_mean_and_var(task):
    model, train, val = task
    kw = dict(train_from="r1", epochs=4, lr=1e-2, batch_size=64, cache=False)  # a later epoch is kept in both
    before = _inits(model)
    frozen, h_frozen = train_head(model, train, val, **kw)
    updated, h_upd = train_head(model, train, val, bn_stats="update", **kw)
    again, _ = train_head(model, train, val, bn_stats="update", **kw)
    assert again.to_bytes() == updated.to_bytes()  # seeded: byte-deterministic
    assert h_upd["best_epoch"] > 0 and h_frozen["best_epoch"] > 0
    assert h_upd["updated_statistics"] == ["bn.m", "bn.v"] and h_frozen["updated_statistics"] == []
    changed = lambda m: sorted(k for k, v in _inits(m).items() if before.get(k) != v)  # noqa: E731
    head = ["graphfix_head.bias", "graphfix_head.weight"]
    assert changed(frozen) == sorted(["bn.b", "bn.s", "c2.b", "c2.w", *head])
    assert changed(updated) == sorted(["bn.b", "bn.m", "bn.s", "bn.v", "c2.b", "c2.w", *head])
    assert updated.metadata["training"]["bn_stats"] == "update"


def test_bn_update_uses_torch_momentum_semantics(task):
    from graphfix.data import feature_model
    from graphfix.data.features import find_head_gemm, find_value

    model, train, _ = task
    nodes = ft.segment_nodes(model, "r1")
    seg = ft._Segment(torch, model, nodes, find_value(model, "r1"), find_head_gemm(model).inputs[0], bn_update=True)
    r1 = feature_model(model, "r1").run(train.x[:50])["r1"]
    c2 = feature_model(model, "c2").run(train.x[:50])["c2"].astype(np.float64)
    m0 = model.ir.graph.initializers["bn.m"].const_value.numpy()
    v0 = model.ir.graph.initializers["bn.v"].const_value.numpy()
    seg.training = True
    seg(torch.from_numpy(r1))
    np.testing.assert_allclose(seg.consts["bn.m"].numpy(), 0.9 * m0 + 0.1 * c2.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seg.consts["bn.v"].numpy(), 0.9 * v0 + 0.1 * c2.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)


def test_cli_bar_shows_epochs_and_val_map_unless_quiet_and_runs_write_identical_files(task, monkeypatch, tmp_path,
                                                                                         capsys):
    import sys

    from graphfix import progress
    from graphfix.cli import main

    model, train, val = task
    src, data, vdata = tmp_path / "m.onnx", tmp_path / "train.npz", tmp_path / "val.npz"
    model.save(str(src))
    np.savez(data, x=train.x, y=train.y)
    np.savez(vdata, x=val.x, y=val.y)
    argv = ["train-head", str(src), "--train", str(data), "--val", str(vdata), "--train-from", "r1", "--epochs", "3",
            "--train-batch-size", "100", "--no-cache"]
    monkeypatch.setattr(progress, "_enabled", True)
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only
    assert main([*argv, "-o", str(tmp_path / "a.onnx")]) == 0
    err = capsys.readouterr().err
    assert "fine-tune epoch 3/3:" in err and "/9 [" in err and ", best " in err  # 3 epochs x 3 batches
    assert "val mAP " in err.split("fine-tune epoch 3/3:")[-1]
    assert main([*argv, "-q", "-o", str(tmp_path / "b.onnx")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_a_features_folder_is_refused_before_anything_runs(task):
    from graphfix.data import Dataset
    from graphfix.errors import GraphfixError

    model, train, _ = task
    feats = Dataset(y=train.y, labels=train.labels, features=np.zeros((len(train), 8), np.float32), source="feats")
    with pytest.raises(GraphfixError, match=r"a features folder holds the head's input features only; "
                                            r"--train-from needs images"):
        train_head(model, feats, train_from="r1")
