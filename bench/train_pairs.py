"""Training pairs/s of our trainer on a relevance workspace, at the ST peer's encoder and batch size.

    python bench/train_pairs.py WS [--steps 20] [--batch-size 64] [--peer]

WS: a workspace imported with ``omni import relevance`` (MiniLM legacy embeddings) and
``omni features build``. The trainer runs its default configuration ("auto": the query tower is
the MiniLM that embedded the products) with the pretrained body fine-tuned at every step
(``pretrained_lr_scale`` 0.01; its top ``fine_tune_layers`` layers, or with ``--all-layers`` every
weight, as the ST peer) and ``batch_size`` pairs per step, for ``steps`` steps after one warm-up step; the figure is pairs seen / loop seconds.
``--peer`` also runs ``bench/st_peer.py``'s ``st_pairs_per_second`` (sentence-transformers MNRL
on the same pairs and batch size) in the same process and prints both.

Our step encodes only queries (products are the frozen MiniLM embeddings plus the residual map
and the lexical channel) while the peer encodes both sides; the figures say what each recipe
costs per training pair, not what the same computation costs in each library.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from omnisearchsage.contract import Workspace
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.loop import train


def trainer_pairs_per_second(ws: Workspace, steps: int = 20, batch_size: int = 64,
                             pretrained_lr_scale: float = 0.01, hard_negatives: int = 0,
                             fine_tune_layers: int | None = TrainConfig.fine_tune_layers) -> float:
    """Our trainer's training pairs/s over ``steps`` steps of ``batch_size`` pairs (after one
    warm-up step) with the body learning at every step (``fine_tune_layers`` top layers; None: all),
    default config otherwise; the throwaway run is deleted."""
    name = f"bench-pairs-{uuid.uuid4().hex[:8]}"
    cfg = TrainConfig(steps=steps + 1, batch_size=batch_size, max_epochs=None, checkpoint_every=10**9,
                      log_every=1, pretrained_lr_scale=pretrained_lr_scale, fine_tune_epochs=None,
                      fine_tune_layers=fine_tune_layers)
    cfg = replace(cfg, hard=replace(cfg.hard, per_pair=hard_negatives))
    try:
        run = train(ws, cfg, name)
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        # pairs_per_s is cumulative from the loop start: recover the time of step 1 and drop it.
        first, last = records[0], records[-1]
        t_first = batch_size / first["pairs_per_s"]
        t_last = last["step"] * batch_size / last["pairs_per_s"]
        return (last["step"] - 1) * batch_size / (t_last - t_first)
    finally:
        shutil.rmtree(ws.run_dir(name), ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--all-layers", action="store_true", help="fine-tune every layer of the body (as the peer)")
    ap.add_argument("--peer", action="store_true", help="also measure the ST peer (bench/st_peer.py)")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    t = time.perf_counter()
    layers = None if args.all_layers else TrainConfig.fine_tune_layers
    ours = trainer_pairs_per_second(ws, args.steps, args.batch_size, fine_tune_layers=layers)
    print(f"omni train (MiniLM query body, {'all' if layers is None else f'top {layers}'} layer(s) fine-tuned, "
          f"batch {args.batch_size}): {ours:,.1f} pairs/s "
          f"({time.perf_counter() - t:.0f} s with setup)")
    if args.peer:
        sys.path.insert(0, str(Path(__file__).parent))
        from st_peer import PeerConfig, st_pairs_per_second, training_pairs

        from omnisearchsage.text_encoders import resolve_embed_model

        peer = st_pairs_per_second(resolve_embed_model("auto"), training_pairs(ws), PeerConfig(batch_size=args.batch_size),
                                   args.steps)
        print(f"sentence-transformers MNRL (MiniLM, both sides, batch {args.batch_size}): {peer:,.1f} pairs/s; "
              f"ours / peer = {ours / peer:.2f}")


if __name__ == "__main__":
    main()
