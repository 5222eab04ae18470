"""Wall and CPU time of the README's real-data path, step by step: import → features → train →
export → eval, on a relevance set (Home Depot: the 10-minute target of the real-data work).

    python bench/real_data_path.py DATA_DIR OUT_DIR [--positive-min 2.5] [--baseline] [-- TRAIN_ARGS...]

DATA_DIR holds ``products.csv``, ``train.csv`` and ``test.csv``. Each step is the README's command,
run as a subprocess of the installed ``omni`` in a fresh workspace ``OUT_DIR/default``; CPU time is the
step's user + system time (``resource.RUSAGE_CHILDREN``). ``--baseline`` first runs the same path with
every encoder pass in float32 (``--no-bf16`` on import and train: the path before bf16 autocast) in
``OUT_DIR/float32``, and prints both side by side. TRAIN_ARGS after ``--`` go to ``omni train`` in
both. The eval is the README's (every baseline, the ANN check); its results land in each workspace's
``runs/main/eval/``.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import time
from pathlib import Path


def steps(data: Path, ws: Path, positive_min: float, bf16: bool, train_args: list[str]) -> list[tuple[str, list[str]]]:
    """The README's real-data commands for workspace ``ws``."""
    flag = [] if bf16 else ["--no-bf16"]
    return [
        ("import", ["omni", "import", "relevance", "--products", str(data / "products.csv"), "--train",
                    str(data / "train.csv"), "--test", str(data / "test.csv"), "--positive-min",
                    str(positive_min), "--out", str(ws), *flag]),
        ("features", ["omni", "features", "build", "-w", str(ws)]),
        ("train", ["omni", "train", "-w", str(ws), *flag, *train_args]),
        ("export", ["omni", "export", "main", "-w", str(ws)]),
        ("eval", ["omni", "eval", "main", "-w", str(ws)]),
    ]


def timed_path(commands: list[tuple[str, list[str]]], log: Path) -> dict[str, tuple[float, float]]:
    """(wall s, CPU s) per step; a failing step stops the bench with its log's path."""
    out: dict[str, tuple[float, float]] = {}
    with log.open("w") as sink:
        for name, cmd in commands:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            if subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"{name} failed: see {log}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            out[name] = (time.perf_counter() - start, cpu)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--positive-min", type=float, default=2.5)
    ap.add_argument("--baseline", action="store_true", help="also time the float32 path (--no-bf16) first")
    ap.add_argument("train_args", nargs="*", help="extra `omni train` options (after --)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = ([("float32", False)] if args.baseline else []) + [("default", True)]
    results = {}
    for name, bf16 in variants:
        ws = args.out / name
        shutil.rmtree(ws, ignore_errors=True)
        results[name] = timed_path(steps(args.data, ws, args.positive_min, bf16, args.train_args),
                                   args.out / f"{name}.log")
    print(f"{'step':10s}" + "".join(f"{n + ' wall / CPU s':>28s}" for n in results))
    for step in results["default"]:
        print(f"{step:10s}" + "".join(f"{r[step][0]:>17.0f} / {r[step][1]:>7.0f}" for r in results.values()))
    print(f"{'total':10s}" + "".join(f"{sum(w for w, _ in r.values()):>17.0f} / {sum(c for _, c in r.values()):>7.0f}"
                                      for r in results.values()))
    print(f"target: 600 s wall for the whole path (default: {sum(w for w, _ in results['default'].values()):.0f} s)")


if __name__ == "__main__":
    main()
