"""Training pairs/s of the trainer's siamese stage beside the ST peer's, same encoder and batch size.

    python bench/train_pairs.py WS [--epochs 0.05] [--batch-size 64] [--peer]

WS: a workspace imported with ``omni import relevance`` (MiniLM legacy embeddings) and
``omni features build``. The trainer runs its default configuration with the siamese stage on
(``pretrained_lr_scale`` = ``fine_tune_lr_scale``: MiniLM fine-tuned on queries and product texts,
its top ``fine_tune_layers`` layers, or with ``--all-layers`` every layer as the peer) for
``--epochs`` of the query-product pairs, then one loop step; the stage's own timings come from
the run's summary: the lower layers' one pass over every text, and pairs/s of its steps.
``--peer`` also runs ``bench/st_peer.py``'s ``st_pairs_per_second`` (sentence-transformers MNRL
on the same pairs and batch size, every layer learning) in the same process and prints both.

Both sides are encoded in both recipes; ours runs only the top layers per step (the lower ones ran
once per text, timed apart), so the ratio is what each recipe costs per training pair.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import uuid
from pathlib import Path

from omnisearchsage.contract import Workspace
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.loop import read_summary, train


def siamese_timings(ws: Workspace, epochs: float, batch_size: int, fine_tune_layers: int | None) -> dict[str, float]:
    """The siamese stage's timings (``summary.json``'s ``siamese``) of a throwaway run of ``epochs``
    epochs of the pairs at ``batch_size``, then one loop step; the run is deleted."""
    name = f"bench-pairs-{uuid.uuid4().hex[:8]}"
    cfg = TrainConfig(steps=1, max_epochs=None, checkpoint_every=10**9, fine_tune_min_queries=0,
                      fine_tune_epochs=epochs, fine_tune_batch_size=batch_size, fine_tune_layers=fine_tune_layers)
    try:
        run = train(ws, cfg, name)
        timings = read_summary(run).get("siamese")
        if timings is None:
            raise SystemExit(f"{ws.root}: the siamese stage did not run (is the workspace anchored on MiniLM?)")
        return timings
    finally:
        shutil.rmtree(ws.run_dir(name), ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--epochs", type=float, default=0.05, help="epochs of the pairs the stage walks")
    ap.add_argument("--steps", type=int, default=20, help="steps the ST peer is timed over")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--all-layers", action="store_true", help="fine-tune every layer of the body (as the peer)")
    ap.add_argument("--peer", action="store_true", help="also measure the ST peer (bench/st_peer.py)")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    layers = None if args.all_layers else TrainConfig.fine_tune_layers
    t = siamese_timings(ws, args.epochs, args.batch_size, layers)
    ours = t["pairs_per_s"]
    print(f"omni train siamese stage (MiniLM, both sides, {'all' if layers is None else f'top {layers}'} layer(s), "
          f"batch {args.batch_size}): {ours:,.1f} pairs/s over {t['steps']:.0f} steps; "
          f"lower layers once per text {t['lower_layers_s']:.0f} s, catalogue vectors {t['vectors_s']:.0f} s")
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
