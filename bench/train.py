"""Trainer speed and memory, each beside a baseline measured in the same run.

    python bench/train.py SMALL_WS [--medium MEDIUM_WS] [--steps 20] [--threads N]

SMALL_WS / MEDIUM_WS: workspaces of the small / medium sample world with features built
(`omni sample`, `omni enrich boards`, `omni enrich queries`, `omni features build`).

1. **pairs/s** of full training steps (sample + batch + forward + backward + clip + AdamW) at the
   default ``TrainConfig`` on the small world, after two warm-up steps.
2. **Achieved FLOP/s** of a training step: the FLOPs ``torch.utils.flop_counter`` counts for one
   step (matrix products of forward and backward: towers' MLPs and the loss's logits; the hash
   bags' gathers are memory-bound and count 0) divided by the mean step time, as a fraction of this
   machine's dense fp32 matmul FLOP/s (a 2048 x 2048 product, measured now with the same threads).
   Target: at least 30%.
3. **Engaged queries as a pair saw them** (``trainer/positive_queries.py``): loading the training data and
   a training step with the default ``engaged_queries_as_of="leave_one_out"`` and with ``"pair"``
   (point-in-time snapshots), beside the same with ``"cutoff"`` (the features table as it is, the baseline).
4. **Peak memory** training the medium world at the default config (a child process; peak RSS
   from ``getrusage``), against the 8 GiB target.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from omnisearchsage.contract import Workspace
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.towers import TwoTowerModel
from omnisearchsage.trainer.anchor import resolve_query_encoder
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import load_training_data
from omnisearchsage.trainer.loop import (
    Objective,
    loss_shares,
    lr_at,
    make_optimizer,
    model_spec,
    task_prefixes,
)
from omnisearchsage.trainer.loss import MultiTaskLoss

_MEDIUM_CHILD = """
import resource, shutil, sys, time
from dataclasses import replace
from omnisearchsage.contract import Workspace
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.loop import train
ws = Workspace(sys.argv[1])
name = "bench-memory-" + str(int(time.time()))
t = time.perf_counter()
train(ws, replace(TrainConfig(), steps=int(sys.argv[2]), checkpoint_every=10**9), name)
print(f"{time.perf_counter() - t:.1f}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
shutil.rmtree(ws.run_dir(name))
"""


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Dense fp32 matmul FLOP/s of this machine (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step_benchmark(ws: Workspace, cfg: TrainConfig, steps: int) -> dict[str, float]:
    """Seconds to load the training data, mean seconds per training step, pairs per step, and FLOPs per
    step at ``cfg``."""
    cfg = resolve_query_encoder(ws, cfg)  # "auto" -> the encoder `omni train` would pick
    featurizer = Featurizer.load(ws.features)
    t = time.perf_counter()
    data = load_training_data(ws, cfg, featurizer)
    load_s = time.perf_counter() - t
    torch.manual_seed(cfg.seed)
    model = TwoTowerModel(cfg.model, model_spec(featurizer, data, cfg.model))
    objective = Objective(model, MultiTaskLoss(cfg.loss, task_prefixes(cfg, data, model.out_dim),
                                               loss_shares(cfg, data)))
    optimizer = make_optimizer(objective, cfg)

    def step(i: int) -> int:
        batch = data.batch(data.sample(i))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, cfg)
        loss, _ = objective(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch.pairs

    for i in range(2):
        step(i)
    t = time.perf_counter()
    pairs = sum(step(i) for i in range(2, 2 + steps))
    seconds = (time.perf_counter() - t) / steps
    with FlopCounterMode(display=False) as counter:
        step(2 + steps)
    return {"load_s": load_s, "step_s": seconds, "pairs": pairs / steps, "flops": counter.get_total_flops()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("small", help="small-world workspace with features built")
    ap.add_argument("--medium", help="medium-world workspace with features built (peak-memory run)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--memory-steps", type=int, default=20, help="steps of the medium-world run")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = TrainConfig()
    peak = matmul_flops()
    res = step_benchmark(Workspace(args.small), cfg, args.steps)
    achieved = res["flops"] / res["step_s"]
    print(f"threads: {args.threads}; default config: batch {cfg.batch_size} pairs/step, dim {cfg.model.dim}, "
          f"hash table {cfg.model.hash_rows:,} x {cfg.model.token_dim}, {cfg.loss.num_negatives} random negatives/pair")
    print(f"baseline  dense fp32 matmul (2048^3):        {peak / 1e9:8.1f} GFLOP/s")
    print(f"training  step time:                          {res['step_s'] * 1e3:8.1f} ms  "
          f"({res['pairs'] / res['step_s']:,.0f} pairs/s)")
    print(f"training  counted FLOPs per step:             {res['flops'] / 1e9:8.2f} GFLOP")
    print(f"training  achieved:                           {achieved / 1e9:8.1f} GFLOP/s = "
          f"{100 * achieved / peak:.0f}% of the matmul baseline (target >= 30%)")
    off = step_benchmark(Workspace(args.small), replace(cfg, engaged_queries_as_of="cutoff"), args.steps)
    pair = step_benchmark(Workspace(args.small), replace(cfg, engaged_queries_as_of="pair"), args.steps)
    print(f"loading   training data, leave-one-out:      {res['load_s']:8.2f} s  (as of the cutoff, the baseline: "
          f"{off['load_s']:.2f} s; as of each pair {pair['load_s']:.2f} s)")
    print(f"training  step time, leave-one-out:          {res['step_s'] * 1e3:8.1f} ms  (as of the cutoff, the "
          f"baseline: {off['step_s'] * 1e3:.1f} ms; as of each pair {pair['step_s'] * 1e3:.1f} ms)")
    if args.medium:
        out = subprocess.run([sys.executable, "-c", _MEDIUM_CHILD, args.medium, str(args.memory_steps)],
                             capture_output=True, text=True, check=True)
        seconds, max_rss_kib = out.stdout.split()[-2:]
        peak_gib = int(max_rss_kib) / 2**20
        print(f"memory    medium world, {args.memory_steps} steps incl. loading ({seconds} s): "
              f"peak RSS {peak_gib:.2f} GiB (target < 8 GiB)")


if __name__ == "__main__":
    main()
