"""Every third-party package lit_align imports is declared in pyproject.toml, and the floors
``make test-min`` installs are the declared ones."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from min_requirements import pinned  # noqa: E402

DISTRIBUTION = {"yaml": "pyyaml"}  # import name → distribution name where they differ


def _imported(package: Path) -> set[str]:
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "lit_align"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    return {re.match(r"[\w-]+", r).group(0).lower().replace("-", "_") for r in requirements}


def test_every_imported_package_is_declared():
    imported = {DISTRIBUTION.get(n, n).lower() for n in _imported(ROOT / "lit_align")}
    assert imported - _declared() == set()
    assert {"matplotlib", "vllm", "peft"} <= imported  # optional ones are still found


def test_floors_become_exact_pins():
    assert pinned("transformers>=5.0") == "transformers==5.0"
    assert pinned("jsonargparse[signatures]>=4.35") == "jsonargparse[signatures]==4.35"
    marker = "; platform_system == 'Linux'"
    assert pinned("vllm>=0.6" + marker) == "vllm==0.6" + marker
