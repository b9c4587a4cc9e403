"""Print the declared floors of pyproject.toml as exact pins (``name>=x`` → ``name==x``).

``make test-min`` installs these to check that the floors really work. Requirements without a
floor, and extras' platform markers, are kept as written.

    python scripts/min_requirements.py [extra ...]   # the core dependencies plus those extras
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pinned(requirement: str) -> str:
    """``torch>=2.6`` → ``torch==2.6``; anything else unchanged."""
    return re.sub(r">=\s*([\w.]+)", r"==\1", requirement, count=1)


def main(extras: list[str]) -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(pinned(r) for r in requirements))


if __name__ == "__main__":
    main(sys.argv[1:])
