"""Write a data set's backbone features to a resumable folder of shards (locally or on Ray).

DATA is a CSV manifest of images or an NPZ (as for train-head; unlabelled ones, a CSV with only a
`path` column or an NPZ with only `x`, serve `predict`). FEATURES_DIR gets manifest.json
(format graphfix-features/1, the backbone's sha256, the data fingerprint, labels, shard size)
and shard-NNNNN.npz files (features float32 [n, F], row int64, path, targets uint8), each
written atomically; a re-run skips complete shards, so an interrupted run resumes. The folder is
accepted wherever data goes: `train-head --train/--val`, `calibrate --heldout/--train/--test`
and `predict` (also spelled `--features FEATURES_DIR`), so a head can be trained from features a
cluster extracted. With --ray, shards run on an actor pool of onnxruntime sessions (one model
load per actor); the features are bitwise equal to the local ones at the same --batch-size.
Image paths must be readable on every Ray node (a shared file system); only this process writes.
"""

from __future__ import annotations

import argparse

from graphfix.commands._options import add_data_args, add_output_args, add_ray_arg, emit, load_model, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="swapped ONNX model (from swap-head); its backbone runs")
    parser.add_argument("data", metavar="DATA", help="data set (.csv of images or .npz)")
    parser.add_argument("-o", "--output", required=True, metavar="FEATURES_DIR", help="folder for manifest.json and shards")
    parser.add_argument("--shard-rows", type=int, default=4096,
                        help="rows per shard, rounded up to a multiple of --batch-size (default 4096)")
    parser.add_argument("--force", action="store_true", help="start over in a folder made with another model or data set")
    add_ray_arg(parser)
    add_data_args(parser)
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    from graphfix.commands._data import check_data_path, load_data, preprocess_for, progress_for, report_skipped
    from graphfix.data.features import save_features
    from graphfix.errors import GraphfixError

    if args.shard_rows < 1 or args.batch_size < 1:
        raise GraphfixError("--shard-rows and --batch-size must be positive", kind="usage")
    check_data_path(args.data, "DATA")
    files = model_files(args.model)
    model = load_model(args)
    prep = preprocess_for(model, args, [args.data], writes=False)
    data, = load_data(args, model, prep, [args.data], args.output, need_labels=False)
    if data.features is not None:
        raise GraphfixError("DATA is already a features folder", kind="usage", path=args.data)
    summary = save_features(model, data, args.output, batch_size=args.batch_size, shard_rows=args.shard_rows,
                            workers=args.workers, ray=args.ray, force=args.force, progress=progress_for(args),
                            inputs=(*files, args.data))
    skipped = report_skipped(args, args.output, [data])
    text = [f"features: {summary['rows']} rows in {summary['shards']} shards "
            f"({summary['written']} written, {summary['skipped']} already there) in {summary['seconds']:.1f} s",
            f"wrote {args.output}"]
    if summary["retried"]:
        text.insert(1, "retried: " + ", ".join(f"shard {r['shard']} ({r.get('why', 'worker lost')})" for r in summary["retried"]))
    emit(args, {"ok": True, "command": "features", **summary, "skipped_rows": skipped}, text)
    return 0
