"""Every module of the package imports (catches syntax errors and broken imports early)."""

import importlib
import pkgutil

import pytest

import lit_align

MODULES = sorted(m.name for m in pkgutil.walk_packages(lit_align.__path__, prefix="lit_align."))


def test_found_modules():
    assert "lit_align.module" in MODULES and "lit_align.losses.dpo" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
