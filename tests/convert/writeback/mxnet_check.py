"""Run written MXNet files in real MXNet 1.x (run with the mxnet venv's python, not graphfix's).

    python mxnet_check.py forward|fit|step JOBS.json OUT.npz

JOBS.json: a list of {"name", "prefix", "input": NPZ with `x`, "data": [names], "label": NAME}.
forward: the deploy symbol + params run in a Module (probabilities into OUT.npz as NAME).
fit: the training symbol binds in a Module with the params and runs one `Module.fit` epoch on
random data; OUT.npz gets NAME.fit_moved, the largest change of the head weight. (Run fit with
MXNET_MKLDNN_ENABLED=0: mxnet 1.9.1's MKLDNN backward fails on some nets, densenet among them.)
step (`step(job)`): one Module.forward_backward + update of the training symbol on the job's
`x` and `y`, for nets with several outputs; OUT.npz gets every deploy and train output, the
head's features and each parameter's change.
"""

import json
import sys

import mxnet as mx
import numpy as np


def step(job: dict) -> dict:
    """Deploy outputs, then one SGD step (lr 0.1, no weight decay) of the training symbol."""
    name, data, label = job["name"], job["data"][0], job["label"]
    feeds = np.load(job["input"])
    x, y = feeds["x"], feeds["y"]
    sym, args, aux = mx.model.load_checkpoint(job["prefix"], 0)
    out = {}
    mod = mx.mod.Module(sym, data_names=[data], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[(data, x.shape)], for_training=False)
    mod.set_params(args, aux, allow_missing=False, allow_extra=False)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    for i, o in enumerate(mod.get_outputs()):
        out[f"{name}.deploy{i}"] = o.asnumpy()
    nodes = json.loads(sym.tojson())["nodes"]
    fc = next(n for n in nodes if n["name"] == job["head"])
    feats = sym.get_internals()[nodes[fc["inputs"][0][0]]["name"] + "_output"]
    fmod = mx.mod.Module(feats, data_names=[data], label_names=None, context=mx.cpu())
    fmod.bind(data_shapes=[(data, x.shape)], for_training=False)
    fmod.set_params(args, aux, allow_missing=True, allow_extra=True)
    fmod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    out[f"{name}.features"] = fmod.get_outputs()[0].asnumpy().reshape(x.shape[0], -1)

    train = mx.sym.load(job["prefix"] + "-train-symbol.json")
    tmod = mx.mod.Module(train, data_names=[data], label_names=[label], context=mx.cpu())
    tmod.bind(data_shapes=[(data, x.shape)], label_shapes=[(label, y.shape)])
    tmod.set_params(args, aux, allow_missing=False, allow_extra=False)
    tmod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1, "wd": 0.0})
    tmod.forward_backward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(y)]))
    for i, o in enumerate(tmod.get_outputs()):
        out[f"{name}.train{i}"] = o.asnumpy()
    tmod.update()
    after, _ = tmod.get_params()
    for key, value in args.items():
        out[f"{name}.moved.{key}"] = after[key].asnumpy() - value.asnumpy()
    return out


def main(mode: str, jobs_path: str, out_path: str) -> None:
    out = {}
    for job in json.load(open(jobs_path)):
        print("job", job["name"], flush=True)
        if mode == "step":
            out.update(step(job))
            continue
        x = np.load(job["input"])["x"]
        data = job["data"][0]
        sym, args, aux = mx.model.load_checkpoint(job["prefix"], 0)
        mod = mx.mod.Module(sym, data_names=[data], label_names=None, context=mx.cpu())
        mod.bind(data_shapes=[(data, x.shape)], for_training=False)
        mod.set_params(args, aux, allow_missing=False, allow_extra=False)
        mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        probs = mod.get_outputs()[0].asnumpy()
        out[job["name"]] = probs
        # the head alone: MXNet's own features through sigmoid(W f + b) in float64
        nodes = json.loads(sym.tojson())["nodes"]
        fc = next(n for n in nodes if n["name"] == job["head"])
        src = nodes[fc["inputs"][0][0]]
        feats_sym = sym.get_internals()[src["name"] + "_output"]
        fmod = mx.mod.Module(feats_sym, data_names=[data], label_names=None, context=mx.cpu())
        fmod.bind(data_shapes=[(data, x.shape)], for_training=False)
        fmod.set_params(args, aux, allow_missing=True, allow_extra=True)
        fmod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        f = fmod.get_outputs()[0].asnumpy().astype(np.float64).reshape(x.shape[0], -1)
        w = args[job["head"] + "_weight"].asnumpy().astype(np.float64)
        b = args[job["head"] + "_bias"].asnumpy().astype(np.float64)
        out[job["name"] + ".head_diff"] = np.array(np.max(np.abs(1 / (1 + np.exp(-(f @ w.T + b))) - probs)))
        if mode != "fit":
            continue

        train = mx.sym.load(job["prefix"] + "-train-symbol.json")
        labels = job["label"]
        rng = np.random.default_rng(0)
        n = 4
        xs = rng.standard_normal((n, *x.shape[1:])).astype(np.float32)
        ys = (rng.random((n, probs.shape[1])) > 0.5).astype(np.float32)
        it = mx.io.NDArrayIter(xs, ys, batch_size=n, data_name=data, label_name=labels)
        tmod = mx.mod.Module(train, data_names=[data], label_names=[labels], context=mx.cpu())
        tmod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
        tmod.set_params(args, aux, allow_missing=False, allow_extra=False)
        before = args[job["head"] + "_weight"].asnumpy().copy()
        tmod.fit(it, num_epoch=1, optimizer="sgd", optimizer_params={"learning_rate": 0.1},
                 arg_params=args, aux_params=aux, allow_missing=False, force_init=False, force_rebind=False,
                 eval_metric="mse")
        after = tmod._exec_group.execs[0].arg_dict[job["head"] + "_weight"].asnumpy()
        out[job["name"] + ".fit_moved"] = np.array(float(np.max(np.abs(after - before))))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
