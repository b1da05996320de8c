"""The shape of engine/, asserted so later work cannot quietly undo it: no import cycle (lazy imports inside
functions count), no module past ~500 lines, and the Python↔GLSL contract written once — binding points,
format constants and shared arrays come from declarations (engine/kernel.py, engine/constants.py), never
from numbers typed into both languages."""

import ast
import re
from pathlib import Path

from pxgl.constants import SHADER_CONSTANTS

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
GLSL = ROOT / "glsl"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE).with_suffix("").parts
    return ".".join(("pxgl", *parts)).removesuffix(".__init__")


def is_package(name: str) -> bool:
    return (ENGINE.joinpath(*name.split(".")[1:]) / "__init__.py").exists()


def resolve(importer: str, level: int, module: str | None, names: list[str]) -> list[str]:
    """The pxgl modules an import statement loads (a submodule named in `from x import y` included)."""
    if level:
        base = importer if is_package(importer) else importer.rsplit(".", 1)[0]
        for _ in range(level - 1):
            base = base.rsplit(".", 1)[0]
        target = f"{base}.{module}" if module else base
    elif module and (module == "pxgl" or module.startswith("pxgl.")):
        target = module
    else:
        return []
    found = [target]
    for name in names:
        child = f"{target}.{name}"
        if is_package(child) or ENGINE.joinpath(*child.split(".")[1:]).with_suffix(".py").exists():
            found.append(child)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the pxgl modules it imports anywhere in its body, and the packages that hold them (Python
    runs a package's __init__ before any of its modules)."""
    graph: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        importer = module_name(path)
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                targets = resolve(importer, node.level, node.module, [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name == "pxgl" or a.name.startswith("pxgl.")]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                edges |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        edges.discard(importer)
        edges -= {p for p in edges if importer.startswith(p + ".")}  # a module's own packages are loaded already
        graph[importer] = edges
    return graph


def test_no_import_cycle_in_engine():
    graph = import_graph()
    assert len(graph) > 30, "the graph must cover engine/"
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' → '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_engine_module_is_oversized():
    long = {
        str(p.relative_to(ROOT)): n for p in ENGINE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their seams: {long}"


def glsl_sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(GLSL.iterdir()) if p.suffix in (".comp", ".glsl")}


def test_glsl_writes_no_binding_number_shared_array_or_format_constant():
    for name, text in glsl_sources().items():
        code = re.sub(r"//.*", "", text)
        assert not re.search(r"binding\s*=\s*\d", code), f"glsl/{name}: a binding number; declare the resource"
        assert not re.search(r"^\s*shared\s", code, re.M), f"glsl/{name}: a shared array; declare it in the Kernel"
        assert not re.search(r"local_size_x\s*=\s*\d", code), f"glsl/{name}: a local size; it is injected"
        for constant in SHADER_CONSTANTS:
            assert not re.search(rf"#define\s+{constant}\b", code), f"glsl/{name} defines {constant} itself"
        # the token mark and the written alpha are compared and stored by name, never as a number
        assert not re.search(r"\.[ba]\s*==\s*\d", code), f"glsl/{name}: a pixel channel compared with a number"
        assert not re.search(r"uvec4\([^;]*,\s*\d+u?\)\s*\)", code), f"glsl/{name}: a pixel stored with a literal"


def test_python_binds_only_by_declaration():
    """Binding points and texture units are numbered by engine/kernel.py alone."""
    for path in ENGINE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(binding|location)\s*=\s*\d", text), f"{path.relative_to(ROOT)}: a binding number"
        assert not re.search(r"bind_to_(image|storage_buffer)\(\s*\d", text), path


def test_each_shared_constant_is_defined_once_in_python():
    for constant in SHADER_CONSTANTS:
        homes = [
            str(p.relative_to(ROOT))
            for p in ENGINE.rglob("*.py")
            if re.search(rf"^{constant}\s*(:[^=]*)?=", p.read_text(encoding="utf-8"), re.M)
        ]
        assert homes == ["engine/constants.py"], f"{constant} is defined in {homes}"


def declared_kernels() -> dict[str, object]:
    """Every Kernel a module of engine/ declares, by module.name."""
    import importlib

    from pxgl.kernel import Kernel

    found = {}
    for path in ENGINE.rglob("*.py"):
        if path.stem == "__main__":
            continue  # running it is what importing it does
        module = importlib.import_module(module_name(path))
        for name, value in vars(module).items():
            if isinstance(value, Kernel):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_kernel_declares_its_loops_and_every_shader_has_a_kernel():
    """The loop-limit rule (docs/FORMATS.md §3.1) holds for a kernel only if it declares its loops: every
    declaration carries a loop count, and every glsl/*.comp is compiled through one (none runs undeclared)."""
    kernels = declared_kernels()
    assert len(kernels) > 20, sorted(kernels)
    for name, kernel in kernels.items():
        assert callable(kernel.loops), f"{name} declares no loop count"
    shaders = {kernel.shader for kernel in kernels.values()}
    undeclared = {p.stem for p in GLSL.glob("*.comp")} - shaders
    assert not undeclared, f"shaders no Kernel declares (so no loop count): {sorted(undeclared)}"
