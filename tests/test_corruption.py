"""Corruption corpus: every bad input a hostile but fair user can hand a stage, run through the commands.

Each case breaks one thing in a copy of the tiny world and asserts what the user gets: exit code 2
and one line naming the file and column (never a raw exception, never a hang, never exit 0), or
a counted warning where the stage can sensibly go on; a request gets a 4xx (a real uvicorn for the
transfer-encoding and timeout cases). Killed training runs resume from their last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import (
    ENGAGEMENTS,
    FEATURE_QUERIES,
    PINS,
    PRODUCTS,
    TableSchema,
    Workspace,
)
from omnisearchsage.enrich.images import load_rgb, sha256_file
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize
from omnisearchsage.serving.app import build_app
from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.limits import uvicorn_limits
from omnisearchsage.split import TimeSplit
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import engagement_pairs, load_training_data

runner = CliRunner()


@pytest.fixture(scope="module")
def featured(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The tiny world with features built (train reads them)."""
    root = tmp_path_factory.mktemp("corrupt") / "ws"
    shutil.copytree(tiny_ws.root, root)
    ws = Workspace(root)
    build_features(ws)
    return ws


@pytest.fixture
def ws(featured: Workspace, tmp_path: Path) -> Workspace:
    dst = tmp_path / "ws"
    shutil.copytree(featured.root, dst, symlinks=True)
    return Workspace(dst)


def omni(*args: str) -> tuple[int, str]:
    """Run ``omni ARGS`` as the console script does: an OmniError is its exit code and message;
    any other exception fails the test (the user would see a raw exception)."""
    result = runner.invoke(app, ["-q", *args])
    if isinstance(result.exception, OmniError):
        return result.exception.exit_code, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"raw exception from omni {' '.join(args)}") from result.exception
    return result.exit_code, result.output


# ---------------------------------------------------------------------------- table breakers
def _rewrite(table: TableSchema, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Workspace], None]:
    def apply(ws: Workspace) -> None:
        path = ws.path(table)
        fn(pl.read_parquet(path)).write_parquet(path)
    return apply


def _truncate(table: TableSchema) -> Callable[[Workspace], None]:
    def apply(ws: Workspace) -> None:
        data = ws.path(table).read_bytes()
        ws.path(table).write_bytes(data[: len(data) // 2])
    return apply


def _replace_path(table: TableSchema, make: Callable[[Path], None]) -> Callable[[Workspace], None]:
    def apply(ws: Workspace) -> None:
        ws.path(table).unlink()
        make(ws.path(table))
    return apply


def _invalid_utf8(table: TableSchema, column: str, row: int) -> Callable[[Workspace], None]:
    """Put bytes that are not UTF-8 into one value of a text column (Arrow writes them unchecked)."""
    def apply(ws: Workspace) -> None:
        t = pq.read_table(ws.path(table))
        values = [v.encode() if v is not None else None for v in t.column(column).to_pylist()]
        values[row] = b"caf\xe9 \xff"
        binary = pa.array(values, pa.binary())
        bad = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
        pq.write_table(t.set_column(t.schema.get_field_index(column), column, bad), ws.path(table))
    return apply


def _float_at(table: TableSchema, row: int, value: float) -> Callable[[Workspace], None]:
    def fn(df: pl.DataFrame) -> pl.DataFrame:
        emb = df.get_column("legacy_embedding").to_list()
        emb[row] = [value] + emb[row][1:]
        return df.with_columns(pl.Series("legacy_embedding", emb, pl.List(pl.Float32)))
    return _rewrite(table, fn)


def _delete(*tables: TableSchema) -> Callable[[Workspace], None]:
    def apply(ws: Workspace) -> None:
        for t in tables:
            ws.path(t).unlink()
    return apply


_TS_US = pl.col("ts").dt.epoch("s")
TABLE_CASES: dict[str, tuple[Callable[[Workspace], None], str]] = {
    # case: (breaker, the start of the one-line message every command must give)
    "ts-as-string": (_rewrite(ENGAGEMENTS, lambda df: df.with_columns(pl.col("ts").cast(pl.Utf8))),
                     "raw/engagements.parquet: column ts: type String, expected Datetime"),
    "ts-as-epoch-seconds": (_rewrite(ENGAGEMENTS, lambda df: df.with_columns(_TS_US)),
                            "raw/engagements.parquet: column ts: type Int64, expected Datetime"),
    "ts-null": (_rewrite(ENGAGEMENTS, lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("ts")).alias("ts"))),
                "raw/engagements.parquet: column ts: 1 null values, e.g. rows 4"),
    "engagements-truncated": (_truncate(ENGAGEMENTS), "raw/engagements.parquet: unreadable Parquet"),
    "pins-truncated": (_truncate(PINS), "raw/pins.parquet: unreadable Parquet"),
    "pins-zero-bytes": (_replace_path(PINS, lambda p: p.write_bytes(b"")), "raw/pins.parquet: unreadable Parquet"),
    "pins-invalid-utf8": (_invalid_utf8(PINS, "title", 7),
                          "raw/pins.parquet: column title: 1 rows with text that is not valid UTF-8, e.g. rows 7"),
    "query-invalid-utf8": (_invalid_utf8(ENGAGEMENTS, "query", 11),
                           "raw/engagements.parquet: column query: 1 rows with text that is not valid UTF-8"),
    "pins-is-a-directory": (_replace_path(PINS, lambda p: p.mkdir()),
                            "raw/pins.parquet: not a regular file (a directory)"),
    "pins-is-a-fifo": (_replace_path(PINS, os.mkfifo), "raw/pins.parquet: not a regular file (a FIFO)"),
    "pins-links-to-dev-zero": (_replace_path(PINS, lambda p: p.symlink_to("/dev/zero")),
                               "raw/pins.parquet: not a regular file (a character device)"),
    "engagements-is-a-fifo": (_replace_path(ENGAGEMENTS, os.mkfifo),
                              "raw/engagements.parquet: not a regular file (a FIFO)"),
    "pin-embedding-nan": (_float_at(PINS, 5, float("nan")),
                          "raw/pins.parquet: column legacy_embedding: 1 rows with NaN or infinite values, e.g. rows 5"),
    "product-embedding-inf": (_float_at(PRODUCTS, 2, float("inf")),
                              "raw/products.parquet: column legacy_embedding: 1 rows with NaN or infinite values"),
    "pins-and-products-deleted": (_delete(PINS, PRODUCTS), "raw/pins.parquet, raw/products.parquet: both missing"),
}
#: Which commands each case runs through; features and train read the inputs too, so they must
#: refuse them as validate does (train also refuses broken features tables, below).
COMMANDS = {
    "validate": lambda ws: ("validate", str(ws.root)),
    "features": lambda ws: ("features", "build", "-w", str(ws.root)),
    "train": lambda ws: ("train", "-w", str(ws.root), "--steps", "2", "--name", "t"),
    "enrich": lambda ws: ("enrich", "queries", "-w", str(ws.root)),
}
#: enrich queries reads engagements and whichever catalogue exists: without both it has nothing to refuse.
_PAIRS = [(case, cmd) for case in TABLE_CASES for cmd in COMMANDS
          if (case, cmd) != ("pins-and-products-deleted", "enrich")]


@pytest.mark.parametrize(("case", "command"), _PAIRS)
def test_broken_table_is_one_line_naming_file_and_column(ws: Workspace, case: str, command: str) -> None:
    breaker, message = TABLE_CASES[case]
    breaker(ws)
    code, out = omni(*COMMANDS[command](ws))
    assert code == 2, out
    assert any(line.startswith(message) for line in out.splitlines()), out
    assert not ws.run_dir("t").exists()  # a refused run leaves nothing to --overwrite


def _break_file(relpath: str, how: str) -> Callable[[Workspace], None]:
    def apply(ws: Workspace) -> None:
        path = ws.root / relpath
        if how == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        else:
            path.unlink()
            os.mkfifo(path)
    return apply


@pytest.mark.parametrize(("relpath", "how"), [("features/pins.parquet", "truncate"), ("features/pins.parquet", "fifo"),
                                               ("features/vocab/unigram.parquet", "truncate"),
                                               ("features/manifest.json", "truncate")])
def test_train_refuses_broken_features(ws: Workspace, relpath: str, how: str) -> None:
    _break_file(relpath, how)(ws)
    code, out = omni(*COMMANDS["train"](ws))
    assert code == 2 and relpath in out.splitlines()[-1], out


# ---------------------------------------------------------------------------- counted warnings
def test_time_zone_aware_ts_is_accepted_as_utc(ws: Workspace) -> None:
    before = TimeSplit.for_workspace(ws)
    _rewrite(ENGAGEMENTS, lambda df: df.with_columns(
        pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")))(ws)
    assert TimeSplit.for_workspace(ws) == before
    assert omni(*COMMANDS["features"](ws))[0] == 0
    cfg = TrainConfig()
    data = load_training_data(ws, cfg, Featurizer.load(ws.features))
    assert data.tasks


def test_events_far_in_the_future_do_not_move_the_split(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    before = TimeSplit.for_workspace(ws)
    _rewrite(ENGAGEMENTS, lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(pl.datetime(2099, 1, 1)).otherwise(pl.col("ts")).alias("ts")))(ws)
    with caplog.at_level(logging.WARNING):
        after = TimeSplit.for_workspace(ws)
        build_features(ws)
    # Five events left the log (they were real ones moved to 2099): the split may shift a little, never by years.
    assert abs((after.test_end - before.test_end).days) <= 1
    assert "5 later events (up to 2099-01-01)" in caplog.text
    assert pl.read_parquet(ws.path(FEATURE_QUERIES)).height > 100


def test_unknown_actions_are_counted(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    _rewrite(ENGAGEMENTS, lambda df: df.with_columns(
        pl.when((pl.col("entity_type") == "pin") & (pl.int_range(pl.len()) % 4 == 0)).then(pl.lit("purchase"))
        .otherwise(pl.col("action")).alias("action")))(ws)
    purchases = pl.read_parquet(ws.path(ENGAGEMENTS)).filter(pl.col("action") == "purchase").height
    split = TimeSplit.for_workspace(ws)
    in_window = pl.read_parquet(ws.path(ENGAGEMENTS)).filter(
        (pl.col("action") == "purchase") & (pl.col("ts") >= split.train_start) & (pl.col("ts") < split.train_end))
    assert purchases > 100
    with caplog.at_level(logging.WARNING):
        load_training_data(ws, TrainConfig(), Featurizer.load(ws.features))
    assert f"{in_window.height} training-window engagements have actions the trainer does not know " \
           f"(purchase: {in_window.height})" in caplog.text


TOKENLESS = ["", "   ", "\x00", "\x00\x00", "\u200b", "\u200b\u200d\ufeff", "?!", "-- .", "\t\n"]


def test_token_less_queries_are_counted_and_dropped(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    n = len(TOKENLESS) * 3
    def spread(df: pl.DataFrame) -> pl.DataFrame:  # every 200th row, so most fall in the training window
        queries = df.get_column("query").to_list()
        for i in range(n):
            queries[i * 200] = TOKENLESS[i % len(TOKENLESS)]
        return df.with_columns(pl.Series("query", queries))

    _rewrite(ENGAGEMENTS, spread)(ws)
    bad = pl.read_parquet(ws.path(ENGAGEMENTS)).filter(pl.col("query").is_in(TOKENLESS))
    assert bad.height == n
    split = TimeSplit.for_workspace(ws)
    with caplog.at_level(logging.WARNING):  # the stage function: the CLI replaces the log handlers
        build_features(ws)
        pins = engagement_pairs(ws, split, "pin", TrainConfig().pin_actions, 1000)
    queries = pl.read_parquet(ws.path(FEATURE_QUERIES))
    assert queries.filter(pl.col("text").list.len() == 0).height == 0
    assert not set(pins.get_column("query")) & {q.strip() for q in TOKENLESS}
    assert "queries without a word" in caplog.text and "whose query has no word" in caplog.text


# ---------------------------------------------------------------------------- images
def _image_cases(root: Path) -> dict[str, tuple[str, str | None]]:
    """Image name -> (how it was made, the start of the error it must get; None: readable)."""
    img = root / "img"
    img.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img / "ok.png")
    os.mkfifo(img / "fifo.jpg")
    (img / "zero.jpg").symlink_to("/dev/zero")
    (img / "dir.jpg").mkdir()
    (img / "dir_link.jpg").symlink_to(img / "dir.jpg")
    (img / "dangling.jpg").symlink_to(img / "nowhere.jpg")
    (img / "huge.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    return {
        "ok.png": None,
        "fifo.jpg": "unreadable file: not a regular file (a FIFO)",
        "zero.jpg": "unreadable file: not a regular file (a character device)",
        "dir.jpg": "unreadable file: not a regular file (a directory)",
        "dir_link.jpg": "unreadable file: not a regular file (a directory)",
        "dangling.jpg": "missing file",
        "huge.jpg": "unreadable file: too large: 5000 bytes, the limit is 4096",
    }


@pytest.mark.parametrize("name", ["ok.png", "fifo.jpg", "zero.jpg", "dir.jpg", "dir_link.jpg", "dangling.jpg",
                                  "huge.jpg"])
def test_captioning_reads_only_regular_files_under_the_limit(tmp_path: Path, name: str) -> None:
    expected = _image_cases(tmp_path)[name]
    path = tmp_path / "img" / name
    loaded = load_rgb(path, max_pixels=10**6, max_bytes=4096)
    if expected is None:
        assert loaded.ok and len(sha256_file(path, 4096)) == 64
        return
    assert loaded.error is not None and loaded.error.startswith(expected), loaded.error


def test_caption_plan_records_special_files_as_errors(tmp_path: Path) -> None:
    """The hashing pass of captions and visual embeddings (where a FIFO used to hang forever) turns every special
    file into an error row."""
    from omnisearchsage.enrich.image_stage import plan_images

    expected = _image_cases(tmp_path)
    names = list(expected)
    pl.DataFrame({"pin_id": names, "image_path": [f"img/{n}" for n in names]}).write_parquet(
        (tmp_path / "raw").mkdir() or tmp_path / PINS.relpath)
    plan = plan_images(Workspace(tmp_path), hash_threads=2, max_bytes=4096)
    errors = dict(plan.select("entity_id", "error").iter_rows())
    for name, reason in expected.items():
        assert (errors[name] is None) if reason is None else errors[name].startswith(reason), (name, errors[name])


# ---------------------------------------------------------------------------- litter of killed runs
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_run_removes_temporaries_of_killed_runs_only(ws: Workspace) -> None:
    dead, alive = _dead_pid(), os.getppid()
    litter = [ws.root / f".features.tmp-{dead}", ws.enrich / f".board_titles.parquet.tmp-{dead}",
              ws.enrich / f".duckdb-{dead}-x1y2"]
    kept = [ws.root / f".features.tmp-{alive}", ws.enrich / f".duckdb-{alive}-x1y2"]
    for p in litter + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir() if "parquet" not in p.name else p.write_bytes(b"half")
    assert omni("features", "build", "-w", str(ws.root))[0] == 0
    assert omni("enrich", "boards", "-w", str(ws.root))[0] == 0
    assert [p for p in litter if p.exists()] == []
    assert all(p.exists() for p in kept)  # a running process's temporaries are not touched


def test_an_interrupted_fallback_swap_is_restored(ws: Workspace) -> None:
    """Where names cannot be exchanged, the old folder is renamed away first: a kill right then leaves
    no features/, and the next write into the workspace renames the old one back."""
    from omnisearchsage.atomic import sweep_stale

    manifest = ws.features_manifest.read_text()
    ws.features.rename(ws.root / f".features.old-{_dead_pid()}")
    sweep_stale(ws.root)
    assert ws.features_manifest.read_text() == manifest


def test_folder_swap_never_leaves_the_output_missing(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap is one exchange of names: were the process killed after it, features/ is the new build."""
    from omnisearchsage import atomic

    swaps: list[bool] = []
    real = atomic.exchange

    def watched(a: Path, b: Path) -> bool:
        ok = real(a, b)
        swaps.append(ok and ws.features_manifest.exists())
        return ok

    monkeypatch.setattr(atomic, "exchange", watched)
    build_features(ws)
    assert swaps == [True]
    assert [p.name for p in ws.root.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------- kill and resume
_TRAIN = """
import sys
from omnisearchsage.contract import Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.trainer.config import LossConfig, ModelConfig, TrainConfig
from omnisearchsage.trainer.loop import train
cfg = TrainConfig(steps=100_000, batch_size=32, warmup_steps=2, log_every=1, checkpoint_minutes=0,
                  checkpoint_every=int(sys.argv[2]),
                  model=ModelConfig(dim=16, token_dim=8, hash_rows=512, entity_hidden=(16,), query_hidden=(16,)),
                  loss=LossConfig(sketch_width=256, matryoshka_dims=(16,), matryoshka_weights=(1.0,)))
try:
    train(Workspace(sys.argv[1]), cfg, "k", resume=sys.argv[3] == "resume")
except OmniError as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
"""


def _start(ws: Workspace, every: int, mode: str = "new") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _TRAIN, str(ws.root), str(every), mode],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _logged_steps(ws: Workspace) -> list[int]:
    path = ws.run_dir("k") / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(ln)["step"] for ln in lines if ln.endswith("}")]


def _wait_for_step(ws: Workspace, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 120
    while not _logged_steps(ws) or _logged_steps(ws)[-1] < step:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)


def _finish_soon(ws: Workspace, extra: int) -> int:
    """Shorten the saved run to ``extra`` steps past its last checkpoint (its config said 100,000)."""
    from omnisearchsage.trainer.loop import checkpoints

    step = int(checkpoints(ws.run_dir("k"))[-1].name.removeprefix("step-"))
    path = ws.run_dir("k") / "config.json"
    saved = json.loads(path.read_text())
    saved["config"]["steps"] = step + extra
    path.write_text(json.dumps(saved))
    return step


def test_killed_runs_resume_from_their_last_checkpoint(ws: Workspace) -> None:
    """kill -9, resume, SIGTERM, a plain rerun, resume to the end: no step lost or repeated."""
    from omnisearchsage.trainer.loop import checkpoints, train

    ckpt = ws.run_dir("k") / "checkpoints"
    first = _start(ws, every=4)
    _wait_for_step(ws, first, 10)
    first.kill()
    first.communicate(timeout=60)
    (ckpt / f".step-9999999.tmp-{first.pid}").mkdir()  # as if killed while writing a checkpoint
    killed_at = int(checkpoints(ws.run_dir("k"))[-1].name.removeprefix("step-"))
    assert killed_at >= 8

    # The first run logged steps past its last checkpoint; wait for steps only the resumed run logs.
    second = _start(ws, every=4, mode="resume")
    _wait_for_step(ws, second, _logged_steps(ws)[-1] + 2)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after step" in err and "--resume" in err
    assert [p.name for p in ckpt.iterdir() if p.name.startswith(".")] == []  # the dead run's temporary

    # A plain rerun explains instead of refusing without a word or starting over.
    code, out = omni("train", "-w", str(ws.root), "--name", "k", "--steps", "3")
    assert code == 2 and "interrupted, last checkpoint at step-" in out and "--resume" in out
    stopped_at = _finish_soon(ws, 2)
    assert stopped_at > killed_at + 2
    train(ws, TrainConfig(), "k", resume=True)
    assert _logged_steps(ws) == list(range(1, stopped_at + 3))  # every step once, in order
    assert (ws.run_dir("k") / "summary.json").exists()


def test_plain_rerun_of_a_run_killed_before_any_checkpoint_starts_afresh(ws: Workspace) -> None:
    args = ("train", "-w", str(ws.root), "--name", "k", "--steps", "2", "--batch-size", "16")
    assert omni(*args)[0] == 0
    # What a kill before the first checkpoint leaves: the run's config and metrics, nothing to resume.
    shutil.rmtree(ws.run_dir("k") / "checkpoints")
    (ws.run_dir("k") / "summary.json").unlink()
    code, out = omni(*args)
    assert code == 0, out
    assert (ws.run_dir("k") / "summary.json").exists()


# ---------------------------------------------------------------------------- requests
class _Encoder:
    version, dim = "v1", 8
    normalize = staticmethod(normalize)

    def encode_normalized(self, texts):
        return np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]


LIMITS = ServeConfig(max_body_bytes=64 * 1024, max_header_bytes=8 * 1024, body_timeout_s=1.0,
                     header_timeout_s=1.0, keep_alive_s=1.0)


def _service() -> FastAPI:
    emb = np.eye(8, dtype=np.float32)
    return build_app(_Encoder(), {"pin": ([f"p{i}" for i in range(8)], emb)}, LIMITS)


@pytest.fixture(scope="module")
def server() -> tuple[str, int]:
    """The service on a real uvicorn with :func:`uvicorn_limits` (transfer encodings and timeouts need sockets)."""
    import uvicorn

    config = uvicorn.Config(_service(), host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                            **uvicorn_limits(LIMITS))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield srv.servers[0].sockets[0].getsockname()[:2]
    srv.should_exit = True
    thread.join(10)


def _exchange(address: tuple[str, int], head: bytes, body_parts: list[bytes] = (), wait_s: float = 10) -> bytes:
    """Send ``head`` and ``body_parts``, then read until the server closes or ``wait_s`` passes."""
    with socket.create_connection(address, timeout=wait_s) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: what a limit should do
        out = b""
        # A reset or a read timeout ends the answer: the server closed (or stalled) after replying.
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


def _post(length: str) -> bytes:
    return (f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_chunked_body_over_the_limit_is_refused_unread(server: tuple[str, int]) -> None:
    # 4 MiB of chunks against a 64 KiB limit: 413 comes back without the server reading them all.
    parts = [_chunk(b" " * 65536) for _ in range(64)]
    out = _exchange(server, _post("Transfer-Encoding: chunked\r\n"), parts)
    assert out.startswith(b"HTTP/1.1 413") and b"body_too_large" in out


def test_chunked_body_within_the_limit_is_served(server: tuple[str, int]) -> None:
    body = b'{"queries": ["red dress"]}'
    out = _exchange(server, _post("Transfer-Encoding: chunked\r\nConnection: close\r\n"),
                    [_chunk(body[:10]), _chunk(body[10:]), b"0\r\n\r\n"])
    assert out.startswith(b"HTTP/1.1 200") and b'"embeddings"' in out


def test_declared_body_over_the_limit_is_refused_unread(server: tuple[str, int]) -> None:
    out = _exchange(server, _post(f"Content-Length: {50 * 2**20}\r\n"))
    assert out.startswith(b"HTTP/1.1 413") and b"body_too_large" in out


def test_body_shorter_than_declared_times_out(server: tuple[str, int]) -> None:
    out = _exchange(server, _post("Content-Length: 100\r\n"), [b'{"queries": '])
    assert out.startswith(b"HTTP/1.1 408") and b"body_timeout" in out


def test_oversized_headers_are_refused(server: tuple[str, int]) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 * 2**20) + b"\r\n\r\n"
    out = _exchange(server, head)
    assert out.startswith(b"HTTP/1.1 400")


def test_slow_headers_are_cut_off(server: tuple[str, int]) -> None:
    start = time.monotonic()
    out = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait_s=20)  # never finishes its headers
    assert out == b"" and time.monotonic() - start < 15  # closed by the server after header_timeout_s


@pytest.mark.parametrize("query", ["", "   ", "\x00", "\x00\x00 ", "\u200b", "\u200b\u200c\u200d\ufeff", "?!",
                                   "... --", "\t\u3000\n"])
@pytest.mark.parametrize("endpoint", ["/embed", "/search"])
def test_token_less_queries_are_empty_queries(endpoint: str, query: str) -> None:
    client = TestClient(_service(), raise_server_exceptions=False)
    body = {"queries": ["ok", query]} if endpoint == "/embed" else {"query": query}
    resp = client.post(endpoint, json=body)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "empty_query", resp.text
