"""The package's layering: no import cycles, lower layers never import methods, and no module
imports another module's private names."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pytorch_grad_cam"
METHOD_MODULES = {
    "ablation_cam", "base_cam", "eigen_cam", "eigen_grad_cam", "finer_cam", "fullgrad_cam",
    "grad_cam", "grad_cam_elementwise", "grad_cam_plusplus", "hirescam", "kpca_cam",
    "layer_cam", "random_cam", "score_cam", "shapley_cam", "_composition", "fem",
    "seg_eigen_cam", "refine_cam", "sess", "ablation_cam_multilayer", "feature_factorization",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[tuple[str, str | None]]]:
    """{module: {(imported module, imported name or None)}} within the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "pytorch_grad_cam"
            ):
                edges |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                edges |= {(a.name, None) for a in node.names if a.name.startswith("pytorch_grad")}
        found[module_name(path)] = edges
    return found


def test_no_private_names_are_imported_across_modules():
    offenders = [
        f"{module} imports {name} from {source}"
        for module, edges in imports().items()
        for source, name in edges
        if name and name.startswith("_") and name != "__version__"
    ]
    assert offenders == []


def test_utils_and_metrics_never_import_methods():
    offenders = [
        f"{module} imports {source}"
        for module, edges in imports().items()
        if module.startswith(
            ("pytorch_grad_cam.utils", "pytorch_grad_cam.metrics", "pytorch_grad_cam._")
        )
        for source, _ in edges
        if source.split(".")[1] in METHOD_MODULES
        and not module.startswith("pytorch_grad_cam._composition")
    ]
    assert offenders == []


def test_there_is_no_import_cycle():
    found = imports()
    graph = {  # ``from package import submodule`` depends on the submodule
        module: {f"{s}.{n}" if f"{s}.{n}" in found else s for s, n in edges} - {module}
        for module, edges in found.items()
    }
    done, active = set(), []

    def visit(module):
        if module in active:
            raise AssertionError("import cycle: " + " -> ".join([*active, module]))
        if module in done or module not in graph:
            return
        active.append(module)
        for target in graph[module]:
            visit(target)
        active.pop()
        done.add(module)

    for module in graph:
        visit(module)
