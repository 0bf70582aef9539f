"""Runtime dependencies are what the package imports; everything else it imports is behind an extra."""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_names(reqs) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def imported_distributions() -> set[str]:
    """Distributions whose modules src/tinyqmoe imports anywhere (top level or inside functions)."""
    dists = importlib.metadata.packages_distributions()
    found = set()
    for path in (ROOT / "src" / "tinyqmoe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "tinyqmoe":
                    continue
                found |= {d.lower().replace("_", "-") for d in dists.get(top, [top])}
    return found


def test_runtime_dependencies_are_exactly_what_the_package_imports_outside_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    optional = set().union(*(requirement_names(v) for k, v in extras.items() if k != "dev"))
    imported = imported_distributions()
    assert runtime <= imported, f"declared but never imported: {runtime - imported}"
    assert imported <= runtime | optional, f"imported but not declared: {imported - runtime - optional}"
    assert not runtime & {"safetensors", "gguf", "pyarrow", "matplotlib", "torch", "transformers"}
    assert {"pyarrow", "matplotlib"} <= requirement_names(extras["eval"])
    assert {"pyarrow", "matplotlib", "safetensors", "gguf"} <= requirement_names(extras["dev"])


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_importing_the_package_and_the_cli_loads_no_optional_package():
    import subprocess
    code = ("import sys, tinyqmoe.cli; tinyqmoe.cli.build_parser(); "
            "print(sorted(m for m in ('pyarrow', 'matplotlib', 'numba', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
