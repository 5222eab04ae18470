"""Board titles against a brute-force Python reference, plus the edge cases that matter."""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import BOARD_PINS, BOARD_TITLES, BOARDS, PINS, Workspace
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import BoardsConfig
from omnisearchsage.features.text import normalize


def reference_board_titles(
    titles: dict[str, str], board_pins: list[tuple[str, str]], cfg: BoardsConfig
) -> dict[str, list[str]]:
    """The documented ranking, one pin at a time in plain Python."""
    norm = {board: normalize(title) for board, title in titles.items()}
    boards_of: dict[str, set[str]] = defaultdict(set)
    for board, pin in board_pins:
        if norm.get(board):
            boards_of[pin].add(board)
    out = {}
    for pin, boards in boards_of.items():
        n = len(boards)
        freq = Counter(norm[b] for b in boards)
        df = Counter(w for b in boards for w in set(norm[b].split(" ")))
        out[pin] = sorted(freq, key=lambda t: _sort_key(t, freq[t], n, df, cfg))[: cfg.max_titles]
    return out


def _sort_key(title: str, freq: int, n: int, df: Counter[str], cfg: BoardsConfig) -> tuple[float, int, int, str]:
    # Same operations in the same order as the SQL, so equal scores tie exactly in both.
    words = set(title.split(" "))
    df_sum = float(sum(df[w] for w in words))
    score = cfg.frequency_weight * float(freq) / float(n) + cfg.prevalence_weight * df_sum / float(len(words) * n)
    return (-score, -len(words), -len(title), title)


def make_ws(root: Path, titles: dict[str, str], board_pins: list[tuple[str, str]], pins: list[str]) -> Workspace:
    ws = Workspace(root)
    ws.raw.mkdir(parents=True)
    pl.DataFrame({"pin_id": pins}, schema={"pin_id": pl.Utf8}).write_parquet(ws.path(PINS))
    pl.DataFrame({"board_id": list(titles), "title": list(titles.values())}, schema=BOARDS.polars_schema).write_parquet(
        ws.path(BOARDS)
    )
    pl.DataFrame(board_pins, schema=BOARD_PINS.polars_schema, orient="row").write_parquet(ws.path(BOARD_PINS))
    return ws


def read_titles(ws: Workspace) -> dict[str, list[str]]:
    df = pl.read_parquet(ws.path(BOARD_TITLES))
    assert df.schema == BOARD_TITLES.polars_schema
    return dict(zip(df["pin_id"], df["titles"].to_list()))


def test_frequency_and_word_prevalence_rank_titles(tmp_path: Path) -> None:
    # Four spellings of one title collapse to "recipes" (freq 3 boards after dedup of b1's double save);
    # "dinner recipes" is rare but shares a common word, so it beats the equally rare "cars".
    titles = {"b1": "Recipes", "b2": "RECIPES ", "b3": "  recipes", "b4": "Dinner   Recipes", "b5": "cars"}
    pairs = [("b1", "p"), ("b1", "p"), ("b2", "p"), ("b3", "p"), ("b4", "p"), ("b5", "p")]
    ws = make_ws(tmp_path, titles, pairs, ["p"])
    build_board_titles(ws)
    assert read_titles(ws) == {"p": ["recipes", "dinner recipes", "cars"]}


def test_ties_prefer_more_words_then_longer_then_lexicographic(tmp_path: Path) -> None:
    # Every title is on one board and shares no word: all scores tie exactly.
    titles = {"b1": "zz", "b2": "abcde", "b3": "ab cd", "b4": "yy", "b5": "e f g"}
    ws = make_ws(tmp_path, titles, [(b, "p") for b in titles], ["p"])
    build_board_titles(ws)
    assert read_titles(ws) == {"p": ["e f g", "ab cd", "abcde", "yy", "zz"]}


def test_empty_titles_dropped_and_emoji_kept(tmp_path: Path) -> None:
    # Whitespace-only titles vanish; an emoji-only title is a real title; a pin whose only
    # boards have empty titles gets no row (and lowers coverage); "👨‍👩‍👧" is 5 code points, longer
    # than "🍕🍕", in SQL as in Python.
    titles = {"b1": "  \t ", "b2": "🍕🍕", "b3": "\u3000", "b4": "👨\u200d👩\u200d👧"}
    ws = make_ws(tmp_path, titles, [("b1", "p1"), ("b2", "p1"), ("b4", "p1"), ("b3", "p2")], ["p1", "p2"])
    stats = build_board_titles(ws)
    assert read_titles(ws) == {"p1": ["👨\u200d👩\u200d👧", "🍕🍕"]}
    assert stats["coverage"]["pin"] == 0.5


def test_at_most_max_titles_unique_per_pin(tmp_path: Path) -> None:
    titles = {f"b{i}": f"Title {i % 15}" for i in range(30)}
    ws = make_ws(tmp_path, titles, [(b, "p") for b in titles], ["p"])
    build_board_titles(ws)
    got = read_titles(ws)["p"]
    assert len(got) == 10 == len(set(got))
    build_board_titles(ws, BoardsConfig(max_titles=3))
    assert read_titles(ws)["p"] == got[:3]


def test_matches_reference_on_random_data_with_many_ties(tmp_path: Path) -> None:
    rng = random.Random(7)
    words = ["Home", "decor", "DIY", "garden", "bedroom", "ideas", "🌿", "Küche", "STRASSE", "straße"]
    titles = {
        f"b{i}": rng.choice(["", " "]).join(rng.choice(["", " ", "  "]) + w for w in rng.sample(words, rng.randint(1, 3)))
        for i in range(120)
    } | {"e1": "   ", "e2": "\u3000"}
    pins = [f"p{i}" for i in range(150)]
    pairs = [(rng.choice(list(titles)), rng.choice(pins)) for _ in range(900)]
    ws = make_ws(tmp_path, titles, pairs, pins)
    for cfg in (BoardsConfig(), BoardsConfig(max_titles=4, frequency_weight=0.3, prevalence_weight=1.7)):
        build_board_titles(ws, cfg)
        assert read_titles(ws) == reference_board_titles(titles, pairs, cfg)


def test_tiny_world_matches_reference(tiny_ws_copy: Workspace) -> None:
    ws = tiny_ws_copy
    stats = build_board_titles(ws)
    boards = pl.read_parquet(ws.path(BOARDS))
    pairs = pl.read_parquet(ws.path(BOARD_PINS)).rows()
    expected = reference_board_titles(dict(zip(boards["board_id"], boards["title"])), pairs, BoardsConfig())
    assert read_titles(ws) == expected
    n_pins = pl.read_parquet(ws.path(PINS)).height
    assert stats["coverage"]["pin"] == sum(p in expected for p in pl.read_parquet(ws.path(PINS))["pin_id"]) / n_pins


def test_no_boards_table_gives_empty_output(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, {"b": "x"}, [("b", "p")], ["p"])
    ws.path(BOARDS).unlink()
    ws.path(BOARD_PINS).unlink()
    stats = build_board_titles(ws)
    assert read_titles(ws) == {}
    assert stats["coverage"]["pin"] == 0.0


def test_cli_boards_prints_coverage(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, {"b1": "Garden", "b2": "garden ideas"}, [("b1", "p1"), ("b2", "p1")], ["p1", "p2", "p3", "p4"])
    result = CliRunner().invoke(app, ["enrich", "boards", "-w", str(ws.root), "--max-titles", "1"])
    assert result.exit_code == 0, result.output
    assert "25.0%" in result.output
    assert read_titles(ws) == {"p1": ["garden"]}
