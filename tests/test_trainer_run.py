"""The trainer end to end on the tiny world: data, learning, resume, export, CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import CREATED_AT, ENGAGED_QUERIES, PINS, PRODUCTS, Workspace
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import BoardsConfig, QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.inputs import TokenBags
from omnisearchsage.model.io import load_embeddings, load_entity_encoder, load_query_encoder
from omnisearchsage.model.towers import TwoTowerModel
from omnisearchsage.split import TimeSplit
from omnisearchsage.trainer.anchor import resolve_query_encoder
from omnisearchsage.trainer.config import LossConfig, TrainConfig
from omnisearchsage.trainer.data import (
    TrainingData,
    _build_task,
    engagement_pairs,
    existed_before,
    load_training_data,
)
from omnisearchsage.trainer.export import export_run
from omnisearchsage.trainer.field_dropout import field_skew, resolve_field_dropout
from omnisearchsage.trainer.loop import (
    Objective,
    TrainingInterrupted,
    checkpoints,
    load_checkpoint,
    loss_shares,
    model_spec,
    task_prefixes,
    train,
)
from omnisearchsage.trainer.loss import MultiTaskLoss
from omnisearchsage.validate import read_table

from .tiny_models import tiny_bert

runner = CliRunner()

# Small towers and sketches: the tests check behaviour, not quality.
SMALL = TrainConfig(
    steps=20, batch_size=48, warmup_steps=5, log_every=1, checkpoint_every=10, lr=5e-3,
    # The lexical channel on (it is off by default for an n-gram model) so export tests cover it.
    model=ModelConfig(dim=256, token_dim=16, hash_rows=2048, entity_hidden=(32,), query_hidden=(32,),
                      lexical_buckets=256),
    loss=LossConfig(sketch_width=4096, matryoshka_dims=(8, 256), matryoshka_weights=(0.1, 1.0)),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These towers are tiny: on a shared 2-core machine, fanning each op out to two threads costs
    more than it buys (the threads spin waiting for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ws(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world with board titles, engaged queries and features (no captions)."""
    root = tmp_path_factory.mktemp("trainer_ws") / "ws"
    shutil.copytree(tiny_ws.root, root)
    w = Workspace(root)
    build_board_titles(w, BoardsConfig())
    build_engaged_queries(w, QueriesConfig())
    build_features(w)
    return w


@pytest.fixture(scope="module")
def trained(ws: Workspace) -> Path:
    """A 20-step run on every task, exported."""
    train(ws, SMALL, "small")
    export_run(ws, "small")
    return ws.run_dir("small")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _data(ws: Workspace, cfg: TrainConfig = SMALL) -> TrainingData:
    return load_training_data(ws, cfg, Featurizer.load(ws.features))


def test_token_bags_gather_matches_python_lists():
    fields = [pl.Series([[1, 2], [], [3]], dtype=pl.List(pl.Int32)), None,
              pl.Series([[7], [8, 9, 10], None], dtype=pl.List(pl.Int32))]
    bags = TokenBags.from_lists([f.to_arrow() if f is not None else None for f in fields], 3)
    ids, offsets = bags.gather(np.array([2, 0, 2]))
    # Row-major: row 2's three fields, row 0's, row 2's again.
    expected = [[3], [], [], [1, 2], [], [7], [3], [], []]
    got = np.split(ids, offsets[1:])
    assert [g.tolist() for g in got] == expected


def test_every_task_has_pairs_capped_and_deterministic_batches(ws: Workspace):
    data = _data(ws)
    assert set(data.tasks) == {"query-pin", "query-product", "query-query", "compat-pin", "compat-product"}
    pin = data.tasks["query-pin"]
    assert np.bincount(pin.cand_rows).max() <= SMALL.max_pairs_per_pin
    # Shares 8:4:4:4:8 of 48 pairs (compat-product's 8 plus query-product's shared 4 matches compat-pin's
    # 4 plus query-pin's 8).
    assert [t.batch_size for t in data.tasks.values()] == [14, 7, 7, 7, 14]
    a, b = data.sample(7), data.sample(7)
    assert all(np.array_equal(a[t].pos_rows, b[t].pos_rows) and np.array_equal(a[t].neg_rows, b[t].neg_rows)
               for t in a)
    # One epoch of query-pin visits every pair exactly once.
    steps = -(-pin.pairs // pin.batch_size)
    seen = np.concatenate([data.sample(s)["query-pin"].pos_rows for s in range(steps)])[: pin.pairs]
    seen_pairs = np.concatenate([data.sample(s)["query-pin"].query_rows for s in range(steps)])[: pin.pairs]
    assert len(set(zip(seen_pairs.tolist(), seen.tolist()))) == len(set(zip(pin.query_rows.tolist(),
                                                                            pin.cand_rows.tolist())))


def test_entities_created_after_the_cutoff_are_never_negatives(ws: Workspace):
    """A pin created after the cutoff did not exist when the training pairs happened: as a negative it
    would teach the towers that new pins (no engaged queries yet) are never engaged."""
    data = _data(ws)
    cutoff = TimeSplit.for_workspace(ws).cutoff
    late = read_table(ws, PINS).filter(pl.col(CREATED_AT) >= cutoff).select("pin_id").collect()["pin_id"]
    keys = data.catalogues["pin"].keys
    late_rows = np.flatnonzero(keys.is_in(late.implode()).to_numpy())
    assert 0 < len(late_rows) < len(keys)  # the tiny world has fresh pins
    for name in ("query-pin", "compat-pin"):
        pool = data.tasks[name].negative_pool
        assert not np.isin(late_rows, pool).any()
        drawn = np.concatenate([data.sample(s)[name].neg_rows for s in range(20)])
        assert np.isin(drawn, pool).all() and len(np.unique(drawn)) > 1
    assert len(data.tasks["query-pin"].negative_pool) == len(keys) - len(late_rows)


def test_auto_field_dropout_is_the_skew_between_catalogue_and_positives(ws: Workspace):
    """Engaged queries: every training positive has them, fresh pins never do, so "auto" drops them
    at about the share of the catalogue without them; explicit settings are never overridden."""
    data = _data(ws)
    skew = field_skew(data)
    pins = data.catalogues["pin"]
    eq = data.fields.index("engaged_queries")
    no_eq = np.diff(pins.bags.bounds)[eq * pins.bags.rows:(eq + 1) * pins.bags.rows] == 0
    positives = data.tasks["query-pin"].cand_rows
    assert not no_eq[positives].any() and no_eq.mean() > 0.2  # fresh pins: none, training positives: all
    assert skew["engaged_queries"] > 0.1
    # Titles: new pins, never training positives, are bare more often than settled ones (since world v11), so
    # the catalogue lacks a title more often than the positives do; captions: every pin and product has one.
    assert skew["title"] > 0.02
    assert abs(skew["caption"]) < SMALL.field_dropout_min
    # Presence dropout q already empties a field of a positive with probability q (1 - e_pos) e_cat, so
    # the per-field rule keeps only what is left of the skew.
    assert field_skew(data, 0.0) == skew
    assert 0 < field_skew(data, 0.5)["engaged_queries"] < skew["engaged_queries"]
    assert field_skew(data, 0.5)["title"] < skew["title"]
    auto = dict(resolve_field_dropout(replace(SMALL, model=replace(SMALL.model, field_dropout=None)),
                                      data).model.field_dropout)
    for field, v in skew.items():
        p = round(min(v, SMALL.field_dropout_max), 2)
        assert auto.get(field) == (p if p >= SMALL.field_dropout_min else None)
    for explicit in ((), (("title", 0.1),)):
        cfg = replace(SMALL, model=replace(SMALL.model, field_dropout=explicit))
        assert resolve_field_dropout(cfg, data).model.field_dropout == explicit


def test_a_task_whose_every_candidate_is_newer_than_the_cutoff_is_skipped_with_the_reason(ws: Workspace):
    data = _data(ws)
    pairs = engagement_pairs(ws, TimeSplit.for_workspace(ws), "pin", SMALL.pin_actions, SMALL.max_pairs_per_pin)
    none_existed = np.zeros(len(data.catalogues["pin"]), dtype=bool)
    for name, frozen in (("query-pin", False), ("compat-pin", True)):
        task, reason = _build_task(name, "pin", frozen, pairs, data.catalogues, none_existed, SMALL)
        assert task is None and "was created after the cutoff (raw/pins.parquet created_at)" in reason


def test_entities_engaged_before_their_created_at_are_named_and_stay_positives(
        ws: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A created_at after the cutoff on an entity engaged before it (an update time given as the creation
    time) keeps the entity out of the negatives, says so with examples, and keeps its pairs."""
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    before = _data(copy).tasks["query-pin"]
    engaged = _data(copy).catalogues["pin"].keys.gather(np.unique(before.cand_rows)[:3])
    pins = pl.read_parquet(copy.path(PINS))
    late = TimeSplit.for_workspace(copy).cutoff + timedelta(days=1)
    pins.with_columns(pl.when(pl.col("pin_id").is_in(engaged.implode())).then(pl.lit(late))
                      .otherwise(pl.col(CREATED_AT)).alias(CREATED_AT)).write_parquet(copy.path(PINS))
    with caplog.at_level("WARNING"):
        after = _data(copy).tasks["query-pin"]
    assert "column created_at: 3 pins created after the cutoff have training-window engagements" in caplog.text
    assert engaged[0] in caplog.text
    assert np.array_equal(after.cand_rows, before.cand_rows)  # still positives
    assert len(after.negative_pool) == len(before.negative_pool) - 3


def test_created_at_unknown_counts_as_always_there(tmp_path: Path):
    ws = Workspace(tmp_path)
    pins = pl.DataFrame({"pin_id": ["a", "b", "c"],
                         CREATED_AT: [None, datetime(2026, 1, 1), datetime(2026, 6, 1)]},
                        schema_overrides={CREATED_AT: pl.Datetime("us")})
    ws.path(PINS).parent.mkdir(parents=True)
    pins.write_parquet(ws.path(PINS))
    keys = pl.Series(["c", "a", "b", "unknown"])
    assert existed_before(ws, "pin", keys, datetime(2026, 3, 1)).tolist() == [False, True, True, True]
    pins.drop(CREATED_AT).write_parquet(ws.path(PINS))  # no column: every pin counts as always there
    assert existed_before(ws, "pin", keys, datetime(2026, 3, 1)).all()


def test_task_selection(ws: Workspace):
    no_products = replace(SMALL, product_actions=("teleport",))
    assert "query-product" not in _data(ws, no_products).tasks  # --tasks all: skipped, not an error
    with pytest.raises(OmniError, match="task query-product has no training data"):
        _data(ws, replace(no_products, tasks=("query-pin", "query-product")))
    assert set(_data(ws, replace(SMALL, tasks=("query-query",))).tasks) == {"query-query"}
    with pytest.raises(OmniError, match="unknown task"):
        replace(SMALL, tasks=("query-board",)).validate()


def test_gradients_reach_both_towers_and_the_temperatures(ws: Workspace):
    data = _data(ws)
    objective = _objective(ws, SMALL, data).train()
    model = objective.model
    loss, _ = objective(data.batch(data.sample(0)))
    loss.backward()
    no_grad = [n for n, p in objective.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    # The caption field is empty in this world (no captioner ran): its weight alone gets no gradient.
    fw = model.entity.field_weights.grad
    assert (fw[[data.fields.index(f) for f in ("title", "board_titles", "engaged_queries", "brand")]] != 0).all()
    assert fw[data.fields.index("caption")] == 0


def test_compat_tasks_score_their_own_head_and_the_main_tasks_never_move_it(ws: Workspace):
    data = _data(ws)
    objective = _objective(ws, SMALL, data).train()
    query = objective.model.query
    assert query.compat_dim == 256  # as wide as the legacy embeddings
    batch = data.batch(data.sample(0))

    def moved(tasks: set[str]) -> dict[str, bool]:
        """Which query-tower parameters a loss over ``tasks`` alone gives a gradient."""
        objective.zero_grad(set_to_none=True)
        objective(replace(batch, tasks={t: r for t, r in batch.tasks.items() if t in tasks}))[0].backward()
        return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in query.named_parameters()}

    main = moved({"query-pin", "query-product", "query-query"})
    compat = moved({"compat-pin", "compat-product"})
    head = [n for n in main if n.startswith("compat.")]
    main_head = [n for n in main if n.startswith(f"mlp.{len(query.mlp) - 1}.")]
    assert head and main_head
    assert all(compat[n] for n in head) and not any(main[n] for n in head)
    assert all(main[n] for n in main_head) and not any(compat[n] for n in main_head)
    assert main["bag.table"] and compat["bag.table"]  # the token table is shared ...
    assert not any(compat[n] for n in main if n.startswith("mlp."))  # ... and nothing above it ("bag")
    # "body": the head reads the main MLP's hidden layer, which both kinds of task then train.
    body = _objective(ws, replace(SMALL, model=replace(SMALL.model, compat_from="body")), data).train()
    objective, query = body, body.model.query
    main, compat = moved({"query-pin", "query-product", "query-query"}), moved({"compat-pin", "compat-product"})
    assert main["mlp.0.weight"] and compat["mlp.0.weight"] and not compat[f"mlp.{len(query.mlp) - 1}.weight"]
    with pytest.raises(OmniError, match="compat_from 'mlp'"):
        replace(SMALL, model=replace(SMALL.model, compat_from="mlp")).validate()
    # Off, the compat tasks score the main output's prefix again (the arrangement before the head).
    off = replace(SMALL, model=replace(SMALL.model, compat_head=False))
    assert _objective(ws, off, data).model.query.compat is None


def test_compat_tasks_also_score_the_retrieval_pairs_of_their_kind(ws: Workspace):
    data = _data(ws)
    plain, shared = data.sample(3), data.sample(3, 0, 1, compat_shared=True)
    for compat, main, kind in (("compat-pin", "query-pin", "pin"), ("compat-product", "query-product", "product")):
        own, drawn, got = plain[compat], plain[main], shared[compat]
        n = len(own.pos_rows)
        assert np.array_equal(got.pos_rows[:n], own.pos_rows) and np.array_equal(got.neg_rows, own.neg_rows)
        assert len(got.pos_rows) == n + len(drawn.pos_rows)  # one per drawn pair: equal sizes on every process
        has = data.catalogues[kind].has_legacy
        assert has[got.pos_rows].all()  # only entities with a legacy embedding are compat positives
        assert (set(zip(got.query_rows[n:], got.pos_rows[n:]))
                == set(zip(drawn.query_rows[has[drawn.pos_rows]], drawn.pos_rows[has[drawn.pos_rows]])))
    assert np.array_equal(shared["query-pin"].pos_rows, plain["query-pin"].pos_rows)  # retrieval tasks unchanged
    # The default shares balance the two compat tasks once the shared pairs are added, in the batch and
    # in the loss, as compat trained alone splits its batch evenly between them (Table 6's reference).
    assert len(shared["compat-pin"].pos_rows) == len(shared["compat-product"].pos_rows)
    weights = loss_shares(replace(SMALL, compat_shared_pairs=True), data)
    assert weights["compat-pin"] == weights["compat-product"] == 12
    off = data.sample(3, 0, 1, compat_shared=False)
    assert np.array_equal(off["compat-pin"].pos_rows, plain["compat-pin"].pos_rows)


def _objective(ws: Workspace, cfg: TrainConfig, data: TrainingData, run: Path | None = None) -> Objective:
    """The run's model and loss at its newest checkpoint (``run``) or at initialisation."""
    cfg = resolve_query_encoder(ws, cfg)
    torch.manual_seed(cfg.seed)
    model = TwoTowerModel(cfg.model, model_spec(Featurizer.load(ws.features), data, cfg.model))
    objective = Objective(model, MultiTaskLoss(cfg.loss, task_prefixes(cfg, data, model.out_dim), cfg.task_shares))
    if run is not None:
        load_checkpoint(run, objective)
    return objective.eval()


def test_short_run_lowers_the_loss_and_writes_the_run(ws: Workspace, trained: Path):
    # The logged loss drifts as the logQ sketches fill, so compare the initial and the trained
    # model on the same unseen step, each with fresh sketches.
    data = _data(ws)
    batch = data.batch(data.sample(1000))
    with torch.no_grad():
        before = _objective(ws, SMALL, data)(batch)[0].item()
        after = _objective(ws, SMALL, data, trained)(batch)[0].item()
    # 20 steps on the tiny world: ~15% lower (the v2 world's attribute preferences take longer to learn
    # than its topics); an untrained or broken model stays within a few percent.
    assert after < 0.9 * before
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 20 and set(summary["final_loss"]) >= {"query-pin", "compat-product", "total"}
    assert [p.name for p in sorted((trained / "checkpoints").iterdir())] == ["step-0000010", "step-0000020"]
    last = _metrics(trained)[-1]
    # The full prefix is the whole output: 256 dense dims + 256 lexical buckets.
    assert {"query-pin/in_batch@8", "query-pin/random@512", "compat-pin/in_batch@256", "query-query/scale"} <= set(last)


def test_resume_after_interrupt_reproduces_the_loss_trajectory(ws: Workspace, trained: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    original = TrainingData.sample

    def interrupt(self, step, rank=0, world=1, compat_shared=False):
        if step == 12:  # Ctrl-C while step 13 is being prepared: the step finishes, then a checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, step, rank, world, compat_shared)

    monkeypatch.setattr(TrainingData, "sample", interrupt)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT after step 13") as info:
        train(ws, SMALL, "resumed")
    assert info.value.exit_code == 130
    run = ws.run_dir("resumed")
    assert [p.name for p in checkpoints(run)] == ["step-0000010", "step-0000013"]
    monkeypatch.setattr(TrainingData, "sample", original)
    train(ws, SMALL, "resumed", resume=True)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in rows]

    assert strip(_metrics(run)) == strip(_metrics(trained))  # every step, every component, exactly
    with pytest.raises(OmniError, match=r"exists \(finished\); continue it with --resume"):
        train(ws, SMALL, "resumed")


def test_non_finite_loss_stops_with_the_step(ws: Workspace, monkeypatch: pytest.MonkeyPatch):
    original = MultiTaskLoss.forward

    def diverge(self, batches):
        total, logs = original(self, batches)
        return total * float("nan"), logs

    monkeypatch.setattr(MultiTaskLoss, "forward", diverge)
    with pytest.raises(OmniError, match="training loss became nan at step 1"):
        train(ws, replace(SMALL, steps=3), "diverged")
    assert not (ws.run_dir("diverged") / "checkpoints").exists()


def test_export_reproduces_training_time_embeddings_ngram(ws: Workspace, trained: Path):
    data = _data(ws)
    model = _objective(ws, SMALL, data, trained).model
    export = ws.export_dir("small")
    manifest = json.loads((export / "manifest.json").read_text())
    assert (manifest["dim"], manifest["dense_dim"], manifest["legacy_dim"]) == (512, 256, 256)
    assert manifest["entity_types"] == ["pin", "product", "query"]

    rows = np.arange(40)
    queries = data.catalogues["query"]
    with torch.no_grad():
        trained_q, trained_c = (t.numpy() for t in model.query.forward_with_compat(**data.query_inputs(rows, None)))
        trained_e = model.entity(**data.entity_inputs([("product", rows)])).numpy()
    encoder = load_query_encoder(export)
    assert encoder.version == manifest["model_version"] and encoder.dim == 512
    assert np.abs(encoder.encode(queries.keys.gather(rows).to_list()) - trained_q).max() < 1e-5
    assert encoder.compat_dim == 256
    assert np.abs(encoder.encode_compat(queries.keys.gather(rows).to_list()) - trained_c).max() < 1e-5
    ids, emb = load_embeddings(export, "product")
    assert ids[:40] == data.catalogues["product"].keys.gather(rows).to_list()
    assert np.abs(emb[:40] - trained_e).max() < 1e-5
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    # The entity encoder from raw text: the fields the features table was built from.
    raw = read_table(ws, PRODUCTS).collect().head(40)
    engaged = (pl.read_parquet(ws.path(ENGAGED_QUERIES)).filter(pl.col("entity_type") == "product")
               .select(product_id="entity_id", engaged_queries="queries"))
    raw = raw.join(engaged, on="product_id", how="left", maintain_order="left")
    fields = {f: raw.get_column(f).to_list() for f in ("title", "description", "brand", "engaged_queries")}
    legacy = np.stack([np.full(256, np.nan, np.float32) if v is None else np.asarray(v, np.float32)
                       for v in raw.get_column("legacy_embedding").to_list()])
    from_text = load_entity_encoder(export).encode("product", fields, legacy)
    assert np.abs(from_text - trained_e).max() < 1e-5


def test_export_from_before_the_compat_head_still_loads(ws: Workspace, trained: Path, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(ws.export_dir("small"), old)
    qdir = old / "query_encoder"
    cfg = json.loads((qdir / "config.json").read_text())
    del cfg["spec"]["compat_dim"], cfg["model"]["compat_head"], cfg["model"]["compat_hidden"]
    (qdir / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(qdir / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("compat.")}, str(qdir / "model.safetensors"))
    texts = ["red dress", "vegan dinner ideas", ""]
    encoder = load_query_encoder(old)
    assert encoder.tower.compat is None
    assert np.abs(encoder.encode(texts) - load_query_encoder(ws.export_dir("small")).encode(texts)).max() < 1e-6
    # Its compat tasks scored the main output's prefix: the compat vectors are the main ones.
    assert np.array_equal(encoder.encode_compat(texts), encoder.encode(texts))
    # A config that asks for a head its weights lack: one line naming the weights file.
    cfg["spec"]["compat_dim"], cfg["model"]["compat_head"] = 256, True
    (qdir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OmniError, match=r"model\.safetensors: weights do not match .*compat\.0\.bias"):
        load_query_encoder(old)


def _tiny_bert(ws: Workspace, out: Path) -> Path:
    words = (pl.read_parquet(ws.path(ENGAGED_QUERIES)).get_column("queries").explode().str.split(" ").explode()
             .unique().sort().to_list())
    return tiny_bert(words[:500], out, layers=2)


def test_export_reproduces_training_time_embeddings_tiny_bert(ws: Workspace, tmp_path: Path):
    bert = _tiny_bert(ws, tmp_path / "bert")
    cfg = replace(SMALL, steps=3, tasks=("query-pin", "query-query"),
                  model=replace(SMALL.model, query_encoder=str(bert), pooling="mean"))
    train(ws, cfg, "bert")
    export = export_run(ws, "bert")
    data = _data(ws, cfg)
    model = _objective(ws, cfg, data, ws.run_dir("bert")).model
    texts = data.catalogues["query"].keys.head(30).to_list()
    with torch.no_grad():  # the training-time path: the features' ids (lexical channel) + the BERT tokens
        trained_q = model.query(**data.query_inputs(np.arange(30), model.query.tokenize)).numpy()
    encoder = load_query_encoder(export)
    # The tokenizer really reads the queries' words (not a handful of ids all [UNK]).
    ids = model.query.tokenize(texts)["input_ids"]
    assert model.query.tokenizer.vocab_size > 100 and (ids > 4).any(dim=1).float().mean() > 0.8  # 0-4: specials
    assert np.abs(encoder.encode(texts) - trained_q).max() < 1e-5
    assert (export / "query_encoder" / "hf" / "config.json").exists()
    assert not list(export.rglob("*.bin")) and not list(export.rglob("*.pt")) and not list(export.rglob("*.pkl"))


def test_cli_train_and_export(ws: Workspace):
    args = ["train", "-w", str(ws.root), "--tasks", "query-pin,query-product", "--steps", "2",
            "--batch-size", "24", "--name", "cli", "--no-legacy"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "query-product" in result.output and "wrote" in result.output
    assert json.loads((ws.run_dir("cli") / "config.json").read_text())["spec"]["dense_layout"] == {}
    result = runner.invoke(app, ["export", "cli", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "embeddings of pin, product, query" in result.output
    again = runner.invoke(app, args)
    assert isinstance(again.exception, OmniError) and "--resume" in str(again.exception)
    fresh = runner.invoke(app, [*args, "--overwrite", "--tasks", "query-pin"])
    assert fresh.exit_code == 0, fresh.output
    assert not (ws.export_dir("cli")).exists()  # the old run went, export included
    assert list(json.loads((ws.run_dir("cli") / "config.json").read_text())["tasks"]) == ["query-pin"]


def test_a_config_from_before_an_option_reads_as_that_version_trained():
    """A key missing from a stored config takes the value the writing version behaved as where today's
    default differs (``LEGACY``: a run resumes, an export loads, an ablation variant compares as it was
    trained), else today's default."""
    stored = json.loads(json.dumps(TrainConfig().to_json()))
    del stored["compat_shared_pairs"], stored["model"]["compat_head"], stored["model"]["compat_from"]
    del stored["model"]["dim"]
    cfg = TrainConfig.from_json(stored)
    assert (cfg.compat_shared_pairs, cfg.model.compat_head, cfg.model.compat_from) == (False, False, "body")
    assert cfg.model.dim == TrainConfig().model.dim
    fresh = TrainConfig.from_json(json.loads(json.dumps(TrainConfig().to_json())))
    assert (fresh.compat_shared_pairs, fresh.model.compat_head, fresh.model.compat_from) == (None, None, "bag")
