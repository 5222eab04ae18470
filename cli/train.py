"""``omni train`` and ``omni export``: the multi-task trainer and its export."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from omnisearchsage.cli.common import WorkspaceOpt, parse_numbers, workspace
from omnisearchsage.contract import TASKS, ExportLayout
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.trainer.config import TrainConfig

_D, _M = TrainConfig(), ModelConfig()


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def train_cmd(
    workspace_dir: WorkspaceOpt = None,
    tasks: Annotated[str, typer.Option(
        help=f"'all' (every task with data) or a comma-separated list of {', '.join(TASKS)}.")] = "all",
    name: Annotated[str, typer.Option(help="Run name: the run is written to WS/runs/NAME/.")] = "main",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = _D.steps,
    batch_size: Annotated[int, typer.Option(help="Pairs per step over all tasks (per process).")] = _D.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate (after warmup; cosine decay after).")] = _D.lr,
    optimizer: Annotated[str, typer.Option(help="adamw, or lamb as in the paper.")] = _D.optimizer,
    resume: Annotated[bool, typer.Option(
        help="Continue run NAME from its newest checkpoint with its saved config (other options ignored).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run NAME and train it afresh.")] = False,
    query_encoder: Annotated[str, typer.Option(
        help="'auto' (the text encoder that computed the legacy embeddings, recorded by `omni import relevance`, "
             "anchored in its space; else ngram), 'ngram' (hash bag over the feature tokenizers) or a local "
             "Hugging Face model directory.")]
    = _M.query_encoder,
    pooling: Annotated[str, typer.Option(help="Transformer query tower pooling: cls or mean.")] = _M.pooling,
    fields: Annotated[str | None, typer.Option(
        help="Comma-separated text fields the entity tower reads (ablations; '' = legacy embeddings only); "
             "default: all.",
        show_default=False)] = None,
    legacy: Annotated[bool, typer.Option(
        help="Feed legacy pin/product embeddings to the entity tower (--no-legacy ablates them).")] = _M.use_legacy,
    visual: Annotated[bool, typer.Option(
        help="Feed the visual embeddings of `omni enrich visual` to the entity tower when the workspace has "
             "them (--no-visual ablates them).")] = _M.use_visual,
    lexical_buckets: Annotated[int | None, typer.Option(
        help="Buckets of the lexical channel both towers append (0: none); default: 1,024 when --query-encoder "
             "auto anchors the model, else none.", show_default=False)] = _M.lexical_buckets,
    lexical_fields: Annotated[str, typer.Option(
        help="Comma-separated entity text fields the lexical channel reads (e.g. title,engaged_queries after "
             "`omni enrich queries`).")] = ",".join(_M.lexical_fields),
    compat_head: Annotated[bool | None, typer.Option(
        "--compat-head/--no-compat-head",
        help="Give the compat tasks their own query output (and let them score the retrieval pairs of each "
             "step); default: on, except for a model anchored on its legacy embeddings' encoder.",
        show_default=False)] = _M.compat_head,
    compat_from: Annotated[str, typer.Option(
        help="What the n-gram query tower's compat head reads: bag (the hash bag, through an MLP of its own) "
             "or body (the main MLP's hidden layer, as before).")] = _M.compat_from,
    lexical_tokens: Annotated[str, typer.Option(
        help="Comma-separated token kinds the lexical channel reads: unigram, bigram, char_trigram.")]
    = ",".join(_M.lexical_tokens),
    field_dropout: Annotated[str, typer.Option(
        help="Comma-separated FIELD=P: in training each entity's FIELD is emptied with probability P, so the "
             "tower learns to do without it (engaged_queries: new entities have none); 'auto': P per field is "
             "how much more often the catalogue lacks it than the training positives do; '' for none.")]
    = "auto",
    presence_dropout: Annotated[float, typer.Option(
        help="Share of training rows cut to the fields of a random catalogue entity of their kind (both must "
             "have a field to keep it): trains on the catalogue's joint absences, e.g. a new pin without text "
             "that has neither title, description nor engaged queries; 'auto' field dropout then covers only "
             "what is left of each field's skew.")]
    = _M.presence_dropout,
    engaged_queries_as_of: Annotated[str, typer.Option(
        help="What a training pair's entities read for their engaged queries: 'leave_one_out', the positive "
             "reads those of the cutoff without the pair's own query unless it engaged the entity twice; 'pair', "
             "positive and negatives read them as they were when the pair happened (point-in-time, on "
             "--engaged-queries-snapshots days); 'cutoff', the features table's (leaky: every positive finds its "
             "own query there).")]
    = _D.engaged_queries_as_of,
    engaged_queries_snapshots: Annotated[int, typer.Option(
        help="With --engaged-queries-as-of pair: the days entities are read as of (quantiles of the days the "
             "training pairs happened).")]
    = _D.engaged_queries_snapshots,
    max_epochs: Annotated[float, typer.Option(
        help="Stop once the slowest task has seen its pairs this many times (0: run every step).")]
    = _D.max_epochs or 0.0,
    pretrained_lr_scale: Annotated[float | None, typer.Option(
        help="Learning-rate scale of an anchored model's pretrained body in the siamese stage, which fine-tunes "
             f"its top {_D.fine_tune_layers} layers on queries and entity texts before the loop (0: frozen, no "
             f"stage); default: {_D.fine_tune_lr_scale:g} when the training pairs hold at least "
             f"{_D.fine_tune_min_queries:,} distinct queries, else frozen.", show_default=False)]
    = _D.pretrained_lr_scale,
    fine_tune_layers: Annotated[int, typer.Option(
        help="Top layers of the encoder the siamese stage trains (0: every layer).")] = _D.fine_tune_layers or 0,
    fine_tune_epochs: Annotated[float, typer.Option(
        help="Epochs of the query-entity pairs the siamese stage walks when it runs.")] = _D.fine_tune_epochs,
    fine_tune_batch_size: Annotated[int, typer.Option(
        help="Pairs per siamese step, no query and no entity twice (each row's negatives are the others).")]
    = _D.fine_tune_batch_size,
    fine_tune_hard_negatives: Annotated[int, typer.Option(
        help="Mined hard negatives per pair in the siamese stage (the untuned encoder's nearest catalogue "
             "entities that are not positives, past a false-negative guard; 0: in-batch negatives only).")]
    = _D.fine_tune_hard_negatives,
    bf16: Annotated[bool, typer.Option(
        help="Run the siamese stage's encoder passes in bf16 autocast where the CPU or GPU has native bf16 "
             "(--no-bf16: float32).")] = _D.fine_tune_bf16,
    anchor_lr_scale: Annotated[float, typer.Option(
        help="Learning-rate scale of an anchored model's residual maps, query head and lexical weights.")]
    = _D.anchor_lr_scale,
    hard_negatives: Annotated[int, typer.Option(
        help="Hard negatives per training pair, mined from the model's own index of the catalogue "
             "(0: none).")] = _D.hard.per_pair,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, sampling and dropout.")] = _D.seed,
    checkpoint_minutes: Annotated[float, typer.Option(
        help="Minutes of training between checkpoints (0: none by time); there is always one at the end and "
             "one on Ctrl-C/SIGTERM.")] = _D.checkpoint_minutes,
    checkpoint_every: Annotated[int, typer.Option(
        help="Also a checkpoint every this many steps (0: by time only).")] = _D.checkpoint_every,
    threads: Annotated[int, typer.Option(
        help="Torch threads when training on CPU (0: torch's default). More threads help on an idle machine "
             "and slow steps down many-fold when other processes share the cores.")] = _D.cpu_threads or 0,
) -> None:
    """Train the query and entity towers jointly on every task (WS/runs/NAME/).

    Reads features/ (run `omni features build` first), raw engagements of the training window,
    legacy embeddings and, when present, the visual embeddings of `omni enrich visual`. Writes
    config.json, metrics.jsonl, checkpoints/ and summary.json.
    Ctrl-C or SIGTERM saves a checkpoint after the step in flight; --resume continues from the last one.
    """
    from omnisearchsage.trainer.loop import read_summary, train

    model = replace(_M, query_encoder=query_encoder, pooling=pooling, use_legacy=legacy, use_visual=visual,
                    entity_fields=_names(fields) if fields is not None else _M.entity_fields,
                    lexical_buckets=lexical_buckets, lexical_fields=_names(lexical_fields),
                    lexical_tokens=_names(lexical_tokens), compat_head=compat_head, compat_from=compat_from,
                    field_dropout=None if field_dropout.strip() == "auto" else tuple(parse_numbers(
                        _names(field_dropout), "--field-dropout", "FIELD=P, e.g. engaged_queries=0.3").items()),
                    presence_dropout=presence_dropout)
    cfg = replace(_D, tasks=_names(tasks), steps=steps, max_epochs=max_epochs or None, batch_size=batch_size, lr=lr, optimizer=optimizer,
                  seed=seed, checkpoint_minutes=checkpoint_minutes, checkpoint_every=checkpoint_every,
                  cpu_threads=threads or None, model=model, pretrained_lr_scale=pretrained_lr_scale,
                  fine_tune_epochs=fine_tune_epochs, fine_tune_layers=fine_tune_layers or None, fine_tune_bf16=bf16,
                  fine_tune_hard_negatives=fine_tune_hard_negatives, compat_shared_pairs=compat_head,
                  fine_tune_batch_size=fine_tune_batch_size,
                  anchor_lr_scale=anchor_lr_scale, hard=replace(_D.hard, per_pair=hard_negatives),
                  engaged_queries_as_of=engaged_queries_as_of,
                  engaged_queries_snapshots=engaged_queries_snapshots)
    run = train(workspace(workspace_dir), cfg, name, resume=resume, overwrite=overwrite)
    summary = read_summary(run)
    table = Table(title=f"run {name}: {summary['steps']} steps, {summary['pairs_per_s']:,.0f} pairs/s, "
                        f"{summary['seconds']:.0f} s")
    for col in ("task", "training pairs", "final loss"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, pairs in summary["pairs"].items():
        table.add_row(task, f"{pairs:,}", f"{summary['final_loss'][task]:.3f}")
    table.add_row("total", "", f"{summary['final_loss']['total']:.3f}")
    Console().print(table)
    typer.echo(f"count-min sketches: {summary['sketch_mib']} MiB (not checkpointed)")
    typer.echo(f"wrote {run}")


def export_cmd(
    run: Annotated[str, typer.Argument(help="Run name under WS/runs/.")],
    workspace_dir: WorkspaceOpt = None,
    onnx: Annotated[
        bool, typer.Option(help="Also write the query encoder as ONNX (export/query_encoder/query_encoder.onnx).")
    ] = False,
    embeddings: Annotated[
        bool, typer.Option(help="Embed the catalogue here, in one process; --no-embeddings leaves it to "
                                "`omni embed` (N processes).")
    ] = True,
) -> None:
    """Export run RUN's encoders (safetensors + JSON) and catalogue embeddings (WS/runs/RUN/export/).

    Loadable without the trainer: omnisearchsage.model.io.load_query_encoder / load_embeddings; with --onnx,
    the query encoder also runs on onnxruntime (omnisearchsage.model.onnx.OnnxQueryEncoder).
    """
    from omnisearchsage.trainer.export import export_run

    out = export_run(workspace(workspace_dir), run, embeddings=embeddings)
    if onnx:
        from omnisearchsage.model.onnx import export_query_onnx

        typer.echo(f"wrote {export_query_onnx(out)}")
    manifest = ExportLayout(out).read_manifest()
    typer.echo(f"model {manifest['model_version']}: dim {manifest['dim']}, "
               f"embeddings of {', '.join(manifest['entity_types'])}" + ("" if embeddings else " (to do: omni embed)"))
    typer.echo(f"wrote {out}")


def embed_cmd(
    run: Annotated[str, typer.Argument(help="Run name under WS/runs/ (exported with --no-embeddings).")],
    shard: Annotated[str | None, typer.Option(help="I/N: embed shard I of N (default: $RANK/$WORLD_SIZE as "
                                                   "torchrun sets them, else 0/1).")] = None,
    workspace_dir: WorkspaceOpt = None,
) -> None:
    """Embed the catalogue with RUN's exported encoders as a batch job: one slice per process.

    Run N processes with `torchrun --nproc-per-node N -m omnisearchsage.cli.app embed RUN` (or a scheduler's
    array job with --shard I/N); each writes embeddings/<type>.parquet/part-I-of-N.parquet, and eval and
    serving read the parts as one dataset.
    """
    import os

    from omnisearchsage.trainer.export import embed_catalogue

    if shard is None:
        index, total = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    else:
        try:
            index, total = (int(v) for v in shard.split("/"))
        except ValueError:
            raise typer.BadParameter(f"{shard!r} is not I/N, e.g. 0/4", param_hint="--shard") from None
    for path in embed_catalogue(workspace(workspace_dir), run, index, total):
        typer.echo(f"wrote {path}")
