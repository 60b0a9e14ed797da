"""A fake `bochs` for testing how the harness treats Bochs versions, without any Bochs.

make(dir, version, ...) writes dir/bochs: an executable that answers `--help` (usage and the
"Bochs x86 Emulator <version>" banner, with the -debugger line from 3.0 on) and `--help cpu`
(its model list) the way real builds do, and for a run records its argv in fake-argv.json,
checks what the real build would reject (-dbg before 3.0, extfpuirq after 3.0, a model it
lacks), copies the serial log it was given to serial.log and, when the -rc script would run
(with -dbg from 3.0 on), writes the screen it was given to vga.bin.
"""

import json
import os
from pathlib import Path

from harness.targets.bochs import version_key

MODELS_27 = ["bx_generic", "pentium", "corei7_sandy_bridge_2600k", "corei7_skylake_x",
             "corei7_icelake_u", "tigerlake"]
MODELS = {"2.7": MODELS_27,
          "2.8": MODELS_27 + ["sapphire_rapids"],
          "3.0": MODELS_27 + ["sapphire_rapids", "arrow_lake"],
          "3.0.devel": MODELS_27 + ["sapphire_rapids", "arrow_lake", "wildcat_lake"]}

SCRIPT = r'''#!/usr/bin/python3
import json, os, re, sys
cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake.json")))
banner = "=" * 72 + "\n" + " " * 24 + "Bochs x86 Emulator %s\n" % cfg["version"] + "=" * 72
args = sys.argv[1:]
def die(msg):
    print("Bochs is exiting with the following message:\n[      ] %s" % msg)
    sys.exit(1)
if args[:1] == ["--help"]:
    if args[1:] == ["cpu"]:
        sys.stderr.write("Supported CPU models:\n\n" + "".join(m + "\n" for m in cfg["models"]) + "\n")
    else:
        sys.stderr.write("Usage: bochs [flags] [bochsrc options]\n\n  -q               quick start\n"
                         + ("  -debugger        start Bochs internal debugger on startup\n"
                            if cfg["dbg_flag"] else "")
                         + ("  -rc filename     execute debugger commands stored in file\n"
                            if cfg["debugger"] else "")
                         + "  --help cpu       display supported CPU models and exit\n")
    print(banner)
    sys.exit(0)
json.dump(args, open("fake-argv.json", "w"))
print(banner)
if "-dbg" in args and not cfg["dbg_flag"]:
    die("command line arg '-dbg' was not understood")
rc = open("bochsrc").read()
if cfg["no_extfpuirq"] and "extfpuirq" in rc:
    open("bochs.log", "w").write("00000000000p[SIM   ] >>PANIC<< Plugin 'extfpuirq' not found\n")
    die("Plugin 'extfpuirq' not found")
model = re.search(r"cpu: model=(\w+)", rc).group(1)
if model not in cfg["models"]:
    die("unknown CPU model %s" % model)
open("bochs.log", "w").write("00000000000i[RFB   ] listening for connections on port 5900\n")
open("serial.log", "w").write(cfg["serial"])
if "-rc" in args and (not cfg["dbg_flag"] or "-dbg" in args):
    print("(0) Magic breakpoint")
    if "writemem" in open(args[args.index("-rc") + 1]).read():
        open("vga.bin", "wb").write(bytes.fromhex(cfg["vga"]))
'''


def make(directory, version, serial="", vga=b"", models=None, debugger=True):
    """An executable fake Bochs <version> in directory; returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = version_key(version)
    cfg = {"version": version, "models": models or MODELS.get(version, MODELS_27),
           "dbg_flag": key >= (3, 0, 0, 0), "no_extfpuirq": key > (3, 0, 0, 0),
           "debugger": debugger, "serial": serial, "vga": vga.hex()}
    (d / "fake.json").write_text(json.dumps(cfg))
    path = d / "bochs"
    path.write_text(SCRIPT)
    os.chmod(path, 0o755)
    return str(path)


def argv(rundir):
    return json.loads((Path(rundir) / "fake-argv.json").read_text())
