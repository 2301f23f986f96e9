"""The house keeps its shape (docs/ARCHITECTURE.md): layers import only downwards, no import cycle, function-local
imports of selfsup modules only where an optional dependency needs them, short modules and a short fit()."""
import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src" / "selfsup"

# The layers, lowest first. A unit (a top-level module or a sub-package of selfsup) may import only units of
# lower layers; units of one layer do not import each other.
LAYERS = [
    {"registry", "schedules", "files", "cpu"},
    {"config", "dist", "fields"},
    {"data"},
    {"views"},
    {"backbones"},
    {"heads", "losses", "export"},
    {"methods"},
    {"runs"},
    {"engine"},
    {"eval"},
    {"report", "artifacts", "curate"},
    {"throughput", "run"},
    {"api", "data_commands"},
    {"cli"},
]
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
MAX_LOCAL_IMPORTS = 5
MAX_MODULE_LINES = 400
MAX_FIT_LINES = 60


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        unit = parts[0] if parts != ("__init__",) else None
        yield path, unit, ast.parse(path.read_text())


def _selfsup_imports(tree):
    """(node, target unit, inside a function) for every import of a selfsup module."""
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "selfsup" else [f"selfsup.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "selfsup" and len(parts) > 1:
                yield node, parts[1], id(node) in local


def test_every_unit_has_a_layer():
    units = {unit for _, unit, _ in _modules() if unit is not None}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS (and docs/ARCHITECTURE.md): {units - set(LAYER_OF)}"


def test_layers_import_only_downwards():
    wrong = []
    for path, unit, tree in _modules():
        if unit is None:  # selfsup/__init__.py: the public API on top of everything
            continue
        for node, target, _ in _selfsup_imports(tree):
            if target != unit and target in LAYER_OF and LAYER_OF[target] >= LAYER_OF[unit]:
                wrong.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {unit} (layer {LAYER_OF[unit]}) imports "
                             f"{target} (layer {LAYER_OF[target]})")
    assert not wrong, "imports that do not go downwards:\n" + "\n".join(wrong)


def test_no_import_cycle_between_units():
    graph: dict[str, set[str]] = {}
    for _, unit, tree in _modules():
        if unit is not None:
            graph.setdefault(unit, set()).update(t for _, t, _ in _selfsup_imports(tree) if t != unit)
    cycles, visiting, done = [], set(), set()

    def visit(unit, trail):
        if unit in visiting:
            cycles.append(" -> ".join(trail[trail.index(unit):] + [unit]))
            return
        if unit in done:
            return
        visiting.add(unit)
        for target in sorted(graph.get(unit, ())):
            visit(target, trail + [unit])
        visiting.discard(unit)
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])
    assert graph and not cycles, f"import cycles: {cycles}"


def test_function_local_selfsup_imports_are_few_and_say_why():
    local = []
    for path, _, tree in _modules():
        lines = path.read_text().splitlines()
        for node, target, inside in _selfsup_imports(tree):
            if inside:
                said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                local.append((f"{path.relative_to(SRC.parent)}:{node.lineno}", said))
    assert len(local) <= MAX_LOCAL_IMPORTS, f"function-local selfsup imports: {[where for where, _ in local]}"
    assert all(said for _, said in local), f"say why (a comment): {[where for where, said in local if not said]}"


def test_modules_stay_short():
    long = {str(p.relative_to(SRC.parent)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_fit_reads_in_one_short_loop():
    tree = ast.parse((SRC / "engine" / "trainer.py").read_text())
    fit = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= MAX_FIT_LINES
