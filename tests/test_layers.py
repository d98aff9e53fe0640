"""The package's layers: each folder imports only from those below it, with no cycle.

Read from the source (every ``import`` and ``from ... import``, at module level or inside a
function), not from what happens to be imported at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tmseeg"

#: bottom to top: a layer may import from its own and the ones before it
LAYERS = [
    {"_ext", "utils", "sections"},
    {"stream"},
    {"io"},
    {"dsp"},
    {"pipeline"},
    {"metrics"},
    {"closedloop"},
    {"config"},
    {"session"},
    {"engine"},
    {"sim"},
    {"report", "bench"},
    {"gui"},
    {"study"},
    {"cli"},
]


def _layer_of(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def _imports() -> list[tuple[str, str, int]]:
    """(importing top-level part, imported top-level part, line) for every tmseeg import."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        here = rel.parts[0] if rel.parts[0] != "__init__" else "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "tmseeg" and len(parts) > 1:
                    found.append((f"{rel}", here, parts[1], node.lineno))
    return found


def test_every_import_goes_down_the_layers():
    up = []
    for module, here, there, line in _imports():
        if here == "__init__" or here == there:
            continue
        if _layer_of(there) > _layer_of(here):
            up.append(f"tmseeg/{module}.py:{line} ({here}) imports tmseeg.{there}")
    assert not up, "imports that go up a layer:\n" + "\n".join(sorted(up))


def test_every_folder_is_in_a_layer():
    parts = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")}
    parts |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    parts -= {"__init__", "__main__", "py", "tmseeg.egg-info"}
    unplaced = [p for p in parts if not any(p in names for names in LAYERS)]
    assert not unplaced, f"add {unplaced} to LAYERS in {__file__}"
