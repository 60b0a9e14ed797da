"""Shared helpers for the harness test suite.

Integration tests need the built images (`make`).  When they are missing the
tests FAIL under CI=true (a CI that silently skips its boots proves nothing)
and are skipped with a hint otherwise.
"""

import os

import pytest

from harness import images, registry, report

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_IMAGE = "<images-missing>"


def need_images(iso=True):
    missing = images.missing_images(iso=iso)
    if missing:
        msg = "built images missing (%s): run `make` first" % ", ".join(missing)
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)


def registry_for(arch):
    """The arch's registry, or None when the ELF is not built."""
    path = images.elf_path(arch)
    if not path.exists():
        return None
    return registry.load(path)


def scenario_params(arch):
    """Scenario ids for parametrizing, read from the ELF registry.  Collection
    must not crash on a missing or broken image: the placeholder id makes the
    test itself fail (CI) or skip with the reason."""
    try:
        reg = registry_for(arch)
    except registry.ElfError:
        return [NO_IMAGE]
    if reg is None or not reg.ids(arch):
        return [NO_IMAGE]
    return reg.ids(arch)


def show(rec):
    """Readable run report for assertion messages."""
    return "\n" + report.table(rec)
