"""Peer benchmark: fastai collab_learner on a given train/test split.

Trains on ALL rows of --train and evaluates on --test. The two files are
concatenated with an ``is_valid`` column and split with fastai's ColSplitter,
so train rows form the training set and test rows the validation set
(Categorify is fitted on the train rows only; unseen ids map to #na#).
``fit_seconds`` times the whole ``fit_one_cycle`` call (per-epoch validation
included); ``train_seconds`` / ``valid_seconds`` split it by phase. ``--curve`` adds
``curve``: after each epoch, [training seconds so far (validation left out), the
validation RMSE (the square root of fastai's validation MSE loss)].
torch defaults are kept (threads, denormals); ``--flush-denormal`` opts into
flushing denormal floats to zero, which avoids a large CPU slowdown.
The last line of stdout is a JSON object with the figures.

Run with the peers venv (benchmarks/setup_peers.sh), e.g.:
    benchmarks/.peers/bin/python benchmarks/peers/fastai_collab.py \
        --train train.csv --test test.csv --model dot --batch-size 64
"""

import argparse
import json
import resource
import sys
import time
import warnings

import numpy as np
import pandas as pd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="CSV with header user,item,rating")
    p.add_argument("--test", required=True, help="CSV with header user,item,rating")
    p.add_argument("--model", choices=("dot", "nn"), default="dot")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--factors", type=int, default=50, help="n_factors (dot model)")
    p.add_argument("--layers", default="100,50", help="hidden layers (nn model)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True): on CPU, Adam/wd state of rarely seen "
        "embeddings decays into denormal floats, which can slow fit ~18x (off by default)",
    )
    p.add_argument(
        "--curve", action="store_true", help="also report the test RMSE after every epoch"
    )
    return p.parse_args(argv)


def read_ratings(path):
    df = pd.read_csv(path, dtype={"user": np.int64, "item": np.int64, "rating": np.float32})
    missing = {"user", "item", "rating"} - set(df.columns)
    if missing:
        sys.exit(f"{path}: missing columns {sorted(missing)}")
    return df[["user", "item", "rating"]]


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")

    import fastai
    import torch
    from fastai.callback.core import Callback
    from fastai.collab import TabularCollab, collab_learner
    from fastai.data.block import TransformBlock
    from fastai.data.transforms import ColSplitter
    from fastai.tabular.core import Categorify
    from fastai.torch_core import set_seed

    class PhaseTimer(Callback):
        "Accumulate wall time spent in the training and validation phases."

        order = -100  # run before other callbacks' before_* and after their after_*

        def before_fit(self):
            self.train_s = self.valid_s = 0.0
            self.train_s_by_epoch = []

        def before_train(self):
            self._t = time.perf_counter()

        def after_train(self):
            self.train_s += time.perf_counter() - self._t
            self.train_s_by_epoch.append(self.train_s)

        def before_validate(self):
            self._t = time.perf_counter()

        def after_validate(self):
            self.valid_s += time.perf_counter() - self._t

    if args.flush_denormal and not torch.set_flush_denormal(True):
        sys.exit("--flush-denormal: not supported on this CPU")

    train_df = read_ratings(args.train)
    test_df = read_ratings(args.test)
    n_train, n_test = len(train_df), len(test_df)

    set_seed(args.seed)

    # All train rows -> training set, all test rows -> validation set.
    df = pd.concat(
        [train_df.assign(is_valid=False), test_df.assign(is_valid=True)], ignore_index=True
    )
    splits = ColSplitter("is_valid")(df)
    df = df.drop(columns="is_valid")
    to = TabularCollab(
        df,
        [Categorify],
        ["user", "item"],
        y_names=["rating"],
        y_block=TransformBlock(),
        splits=splits,
    )
    dls = to.dataloaders(path=".", bs=args.batch_size)
    assert len(dls.train_ds) == n_train and len(dls.valid_ds) == n_test

    if args.model == "dot":
        learn = collab_learner(dls, n_factors=args.factors, y_range=(0, 5.5))
    else:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
        learn = collab_learner(dls, use_nn=True, layers=layers, y_range=(0, 5.5))

    timer = PhaseTimer()
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        learn.fit_one_cycle(args.epochs, args.lr, wd=args.wd, cbs=timer)
        fit_seconds = time.perf_counter() - t0
        # Recorder's [train loss, valid loss] of each epoch: the loss is MSELossFlat averaged
        # over the validation rows (the test rows). Read now: get_preds starts them afresh.
        valid_mse = [float(values[1]) for values in learn.recorder.values]

        # Test predictions, in test-file order, outside the timed region.
        test_dl = learn.dls.test_dl(test_df)
        preds, _ = learn.get_preds(dl=test_dl)

    preds = preds.numpy().reshape(-1).astype(np.float64)
    truth = test_df["rating"].to_numpy(dtype=np.float64)
    rmse = float(np.sqrt(np.mean((preds - truth) ** 2)))

    result = {
        "system": "fastai",
        "model": args.model,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "wd": args.wd,
        "factors": args.factors if args.model == "dot" else None,
        "layers": args.layers if args.model == "nn" else None,
        "seed": args.seed,
        "rmse": rmse,
        "fit_seconds": fit_seconds,
        "train_seconds": timer.train_s,
        "valid_seconds": timer.valid_s,
        "ratings_per_second": n_train * args.epochs / fit_seconds,
        "train_ratings_per_second": n_train * args.epochs / timer.train_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_train": n_train,
        "n_test": n_test,
        "torch_threads": torch.get_num_threads(),
        "flush_denormal": args.flush_denormal,
        "fastai_version": fastai.__version__,
        "torch_version": torch.__version__,
    }
    if args.curve:
        result["curve"] = [
            [seconds, float(np.sqrt(mse))]
            for seconds, mse in zip(timer.train_s_by_epoch, valid_mse, strict=True)
        ]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
