"""The layers point one way: serving and evaluation load a model without the training machinery."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Package folders in pipeline order; a module may import its own layer and earlier ones only.
#: (cli/ and orchestration/ may import everything; tests and bench are outside the package.)
LAYERS = [
    {"contract", "errors", "atomic", "progress", "sql", "quality", "split", "validate", "text_encoders", "__init__"},
    {"sample_data", "importers", "enrich", "features"},
    {"model"},
    {"search"},
    {"trainer", "evaluation", "serving"},
    {"orchestration", "cli"},
]
#: Beside the order: evaluation and serving must never reach into the trainer, nor each other.
FORBIDDEN = {"evaluation": {"trainer", "serving", "orchestration"}, "serving": {"trainer", "evaluation", "orchestration"},
             "trainer": {"evaluation", "serving", "orchestration"}, "model": {"trainer"}}


def _layer(top: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omnisearchsage."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("omnisearchsage.")}
    return found


def test_no_module_imports_a_later_layer():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "bench", ".venv") or rel.parts[0].startswith("."):
            continue
        top = rel.parts[0].removesuffix(".py")
        for target in _imports(path):
            if _layer(target) > _layer(top) or target in FORBIDDEN.get(top, ()):
                bad.append(f"{rel} imports {target}")
    assert bad == []


@pytest.mark.parametrize("entry", ["omnisearchsage.serving.launch", "omnisearchsage.evaluation.run"])
def test_serving_and_eval_start_without_the_trainer(entry: str):
    code = (f"import sys, {entry}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'accelerate' "
            "or m.startswith('omnisearchsage.trainer') or m.startswith('omnisearchsage.orchestration')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
