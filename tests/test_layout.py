"""The package's layout as a contract: imports point one way, from the command line down to the data."""

import ast
from pathlib import Path

import arsmooth

# bottom to top: the folders of src/arsmooth are the layers. A module may import from a lower layer, or from
# its own folder (models.build from models.image_model). A new folder has to be placed here, which is the point.
LAYERS = (
    ("errors",),
    ("maths",),
    ("runtime",),
    ("data", "networks"),
    ("models",),
    ("training",),
    ("evaluation",),
    ("experiments",),
    ("cli",),
    ("__main__",),
)
ROOT = Path(arsmooth.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The arsmooth modules ``name`` imports (relative imports resolved; ``from . import x`` counts as x)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}".strip(".")
                found.add(sub if sub in modules else base)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("arsmooth"):
            base = node.module.removeprefix("arsmooth").strip(".")
            found |= {f"{base}.{a.name}".strip(".") for a in node.names} if not base else {base}
    return found - {name}


def _layer(name: str) -> int:
    top = name.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {name} is in no layer of tests/test_layout.py: place it there")


def test_imports_point_down():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if not name:  # the package's own __init__ imports nothing of its own
            continue
        for dep in _imports(name, path, modules):
            if dep and dep.split(".")[0] != name.split(".")[0] and _layer(dep) >= _layer(name):
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "imports that point up or sideways: " + "; ".join(sorted(wrong))


def test_the_folders_are_the_layers():
    """Every module lives in a layer's folder; only the error type and the entry point sit at the top."""
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py"], flat
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {n for layer in LAYERS for n in layer} - {"errors", "__main__"}


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser above resolves relative and absolute imports: imports of the trainer from the settings are caught."""
    p = tmp_path / "config.py"
    p.write_text("from ..training.trainer import train\nfrom .. import models\nfrom arsmooth import evaluation\n")
    known = {"training.trainer": None, "models": None, "runtime.config": None, "evaluation": None}
    assert _imports("runtime.config", p, known) == {"training.trainer", "models", "evaluation"}
    assert _layer("training.trainer") > _layer("runtime.config")


LONG = 60  # lines; a longer function must say why in a comment containing "long function:"


def test_functions_are_short_or_say_why():
    long = []
    for path in ROOT.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = lines[node.lineno - 1 : node.end_lineno]
                if len(body) > LONG and not any("long function:" in line for line in body):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(body)} lines)")
    assert not long, "split these, or say why they are long: " + "; ".join(sorted(long))


def _mentions_kind(node: ast.AST) -> bool:
    """``kind``, ``x.kind`` or ``x["kind"]``."""
    return (isinstance(node, ast.Name) and node.id == "kind") or (isinstance(node, ast.Attribute) and node.attr == "kind") \
        or (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "kind")


def _is_text(node: ast.AST) -> bool:
    """A string constant, or a tuple / list / set of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_text(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def kind_comparisons(source: str) -> list[int]:
    """Lines comparing a kind with a string (``model.kind == "stage2"``, ``kind in ("a", "b")``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_kind(s) for s in sides) and any(_is_text(s) for s in sides):
                out.append(node.lineno)
    return out


def test_no_kind_string_is_compared_outside_the_objectives_registry():
    """What a kind of run does is asked of its objective (arsmooth.maths.objectives), never branched on by name."""
    found = [f"{name}:{line}" for name, path in _modules().items() if name != "objectives"
             for line in kind_comparisons(path.read_text())]
    assert not found, "kind strings compared outside arsmooth.maths.objectives: " + ", ".join(found)


def test_the_kind_check_sees_each_form():
    src = ('if model.kind == "stage2": pass\nif kind in ("stage2", "smoothed"): pass\n'
           'if s["kind"] != "stage1": pass\nif kind in KINDS: pass\nif method == "baseline": pass\n')
    assert kind_comparisons(src) == [1, 2, 3]


def test_no_module_imports_another_modules_private_names():
    """What one module takes from another is public (the experiments once borrowed each other's ``_helpers``)."""
    modules, found = _modules(), []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("arsmooth")):
                found += [f"{name} imports {a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not found, "; ".join(found)


def test_experiments_register_themselves_by_import():
    from arsmooth import experiments

    assert experiments.EXPERIMENTS and not hasattr(experiments.Experiment, "module")
    for e in experiments.EXPERIMENTS.values():
        assert e.run.__module__.startswith("arsmooth.experiments."), e.name


def test_imports_keep_their_names():
    """No one- or two-letter aliases (``imaging as I``): a reader sees which module a call goes to. The
    conventional ``np``, ``nn`` and ``F`` stay."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [f"{name}: {a.name} as {a.asname}" for a in node.names
                          if a.asname and len(a.asname) <= 2 and a.asname not in ("np", "nn", "F")]
    assert not found, "; ".join(found)
