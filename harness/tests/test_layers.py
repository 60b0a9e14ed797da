"""The floors of lhv/ run one way (lib -> arch -> console -> vmx -> runner -> main): no object
uses a symbol, and no file includes a header, of a floor above its own (tools/check_layers.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness import images

from .conftest import need_images

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "check_layers.py"


@pytest.mark.parametrize("arch", images.ARCHES)
def test_floors_run_one_way(arch):
    need_images(iso=False)
    build = ROOT / "build" / arch
    r = subprocess.run([sys.executable, str(CHECK), str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_upward_call_is_caught(tmp_path):
    """The check itself: a lib object that calls the runner's scenario_bad() is reported."""
    for src, code in (("lhv/lib/low.c", "int scenario_bad(void); int low(void) { return scenario_bad(); }"),
                      ("lhv/run.c", "int scenario_bad(void) { return 0; }")):
        c = tmp_path / "src" / Path(src).name
        c.parent.mkdir(parents=True, exist_ok=True)
        c.write_text(code + "\n")
        obj = tmp_path / "build" / (src + ".o")
        obj.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-c", str(c), "-o", str(obj)], check=True)
    r = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "build")], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert "lhv/lib/low.c (lib) uses scenario_bad from lhv/run.c (runner): upward" in r.stdout, r.stdout
