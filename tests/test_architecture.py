"""The house's rules, checked on the source: small modules, a top level that shows the
architecture, no import cycle at run time, and a CLI that names no model family."""

import ast
import re
from pathlib import Path

from healthgym.models.registry import MODELS

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "healthgym"


def modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }


def runtime_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `name` imports at run time: at module level or inside a
    function (a lazy import closes a cycle as surely, only later), not under `if
    TYPE_CHECKING:`. The top-level package is left out: it is imported before anything in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from . import x` reads the package being imported already: only x counts
            targets = [f"{base}.{a.name}" for a in node.names] + ([base] * bool(node.module))
        found |= {t for t in targets if t in known and t != "healthgym"}
    return found


def test_no_import_cycle_at_run_time():
    mods = modules()
    graph = {m: runtime_imports(m, p, set(mods)) for m, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_modules_fit_a_screenful_of_screens_and_the_top_level_is_small():
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}  # fmt: skip
    assert not long
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_the_cli_names_no_family():
    text = (PACKAGE / "cli.py").read_text()
    names = {cls.__name__ for cls in MODELS.values()} | {n for n in MODELS if n != "healthgym"}
    found = {n for n in names if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", text)}
    assert not found


def test_the_readme_tree_names_every_module():
    readme = (SRC.parent / "README.md").read_text()
    tree = readme[
        readme.index("```\nsrc/healthgym/") : readme.index(
            "```", readme.index("```\nsrc/healthgym/") + 3
        )
    ]
    missing = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py") and p.name not in tree}  # fmt: skip
    assert not missing
