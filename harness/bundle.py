"""`python3 -m harness bundle <run dir>`: one tar.gz a maintainer can act on.

The archive holds what it takes to see the failure and to reproduce it: the image that booted
(ELF and ISO, their sha256, the git commit and the command that rebuilds them), the exact
command lines (the image's and the emulator's), the target and its version, the CPU model and
count, the serial log, the screen dump with its rendered text, the emulator's log, the source
file and the SDM sections of every scenario that failed, the run record (run.json), a copy of
the harness, and reproduce.sh: one `python3 -m harness run ...` line with the same options that
boots the bundled image again.
"""

import hashlib
import io
import json
import re
import shlex
import subprocess
import tarfile
import time
from pathlib import Path

from . import images
from . import screen as scr
from . import verdicts as V
from .logparse import parse_log
from .targets.qemu_tcg import QEMU

FAILING = (V.BAD, V.ERROR, V.TIMEOUT)


class BundleError(Exception):
    pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_state(repo=images.REPO):
    """(commit, dirty) of the tree the harness runs from; (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=20).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return commit, bool(status.strip()) if commit else None


def booted_image(rec, rundir):
    """The path of the ISO (or ELF) the emulator booted, from its configuration or command."""
    rundir = Path(rundir)
    cfg = rundir / "bochsrc"
    if cfg.exists():
        m = re.search(r"^ata0-master:.*\bpath=([^,\s]+)", cfg.read_text(errors="replace"), re.M)
        if m:
            return Path(m.group(1))
    cmd = rec.get("command") or []
    for flag in ("-cdrom", "-kernel"):
        if flag in cmd and cmd.index(flag) + 1 < len(cmd):
            return Path(cmd[cmd.index(flag) + 1])
    for word in cmd:
        m = re.match(r"file=([^,]+),format=raw", str(word))
        if m:
            return Path(m.group(1))
    return None


def image_facts(rec, rundir):
    """What the run booted, for run.json (taken at run time: a later `make` changes the files)."""
    elf = Path((rec.get("images") or {}).get("elf") or images.elf_path(rec.get("arch", "amd64")))
    booted = booted_image(rec, rundir)
    commit, dirty = git_state()
    out = {"elf": str(elf), "booted": str(booted) if booted else None, "git_commit": commit,
           "git_dirty": dirty}
    for key, path in (("elf", elf), ("booted", booted)):
        if path is not None and Path(path).exists():
            out[key + "_sha256"] = sha256(path)
    return out


def sdm_references(source_text):
    """The SDM sections a scenario's header cites: ["29.4.1 Information That May Be Cached", ...]
    for every `<number> "<title>"`, then any other number that follows "SDM" or "Vol." in the
    same sentence; and the header's sentences that mention the SDM, as written."""
    m = re.match(r"\s*/\*(.*?)\*/", source_text, re.S)
    header = re.sub(r"\n\s*\* ?", " ", m.group(1)) if m else ""
    header = re.sub(r"\s+", " ", header).strip()
    refs = []
    for num, table, title in re.findall(r"\b(\d{1,2}(?:\.\d+)+)\s+(?:(Table \d+-\d+)\s+)?\"([^\"]+)\"", header):
        refs.append(" ".join(x for x in (num, table, title.rstrip(".,;")) if x))
    sentences = [s.strip() for s in re.split(r"(?<=[.;:])\s+(?=[A-Z(])", header)]
    cited = [s for s in sentences if re.search(r"\bSDM\b|\bVol\.\s*3", s)]
    numbered = {r.split(" ", 1)[0] for r in refs}
    for s in cited:
        for num in re.findall(r"(?<!Bochs )(?<!version )\b(\d{1,2}(?:\.\d+)+)\b", s):
            if num not in numbered:
                numbered.add(num)
                refs.append(num)
    return refs, cited


def _qemu_args(rec, binary):
    """--qemu when not Debian's, and the firmware matrix's variations (memory, -smp, no serial,
    more QEMU arguments)."""
    args = ["--qemu", binary] if binary and binary != QEMU else []
    q = rec.get("qemu") or {}
    if q.get("memory"):
        args += ["--memory", q["memory"]]
    if q.get("smp"):
        args += ["--smp", q["smp"]]
    if q.get("serial") is False:
        args.append("--no-serial")
    if q.get("args"):
        args += ["--qemu-args", " ".join(shlex.quote(a) for a in q["args"])]
    return args


def _reproduce_command(rec, image_names):
    """One `python3 -m harness run` line with the run's options and the bundled image."""
    args = ["python3", "-m", "harness", "run", "--target", rec["target"], "--arch", rec["arch"]]
    if rec.get("cpu_model"):
        args += ["--cpu-model", rec["cpu_model"]]
    if rec.get("cpus"):
        args += ["--cpus", str(rec["cpus"])]
    if rec.get("firmware") and rec["firmware"] != "bios":
        args += ["--firmware", rec["firmware"]]
    if rec["target"].startswith("qemu") and rec.get("boot") and rec["boot"] != "kernel":
        args += ["--boot", rec["boot"]]
    opts = rec.get("options") or {}
    for key, flag in (("opt", "--opt"), ("tests", "--tests"), ("inject", "--inject"),
                      ("extra", "--cmdline")):
        if opts.get(key):
            args += [flag, str(opts[key])]
    if rec.get("timeout_s"):
        args += ["--timeout", "%g" % rec["timeout_s"]]
    if image_names.get("iso"):
        args += ["--iso", "image/" + image_names["iso"]]
    if image_names.get("elf"):
        args += ["--elf", "image/" + image_names["elf"]]
    binary = (rec.get("command") or [None])[0]
    if rec["target"] == "bochs" and binary:
        args += ["--bochs", binary]  # the very build that ran (a path: Debian's or one built here)
    if rec["target"].startswith("qemu"):
        args += _qemu_args(rec, binary)
    args += ["--out", "runs/reproduced"]
    return " ".join(shlex.quote(a) for a in args)


def _screen_text(rec, rundir):
    rows = (rec.get("screen") or {}).get("text")
    vga = Path(rundir) / "vga.bin"
    if rows is None and vga.exists():
        rows = scr.decode_vga_text(vga.read_bytes())
    return "\n".join(r.rstrip() for r in rows) + "\n" if rows else None


README = """\
LHV bundle: {name}

Verdict: {verdict}{effective}
{reason_line}
Target: {target} {target_version} ({emulator})
CPU model: {cpu_model}; CPUs: {cpus}; the image saw: {banner_cpu}
Image command line: {cmdline}
Emulator command: {emulator_command}
Image: {image_lines}
Built from: git commit {commit}{dirty}; rebuild with
    git checkout {commit} && make
Made: {made}

Scenarios that failed ({failing_count}):
{failing}

Reproduce (from this directory; it holds the harness, the image and the options):
    sh reproduce.sh
which runs
    {reproduce}
and prints the same verdict table (runs/reproduced/ keeps the new logs). From an LHV checkout
at the commit above, the same line without --iso/--elf rebuilds the image's ISO first.

Contents:
  run.json            the harness' run record (verdicts, reasons, INFO lines, screen, times)
  command.txt         the image's command line and the emulator's command
  image/              the booted ISO and the ELF (its scenario registry), SHA256SUMS, REBUILD.txt
  logs/serial.log     COM1: what the image printed (the verdicts come from here)
  logs/screen.txt     the screen at the end, as text (logs/vga.bin: the raw VGA text dump)
  logs/               the emulator's own log, output and configuration
  scenarios/          tests/<id>.c of each failing scenario; SDM.txt: their SDM references
  harness/            the harness that judged the run (python3 -m harness)
"""


def _failing_text(failing, refs):
    if not failing:
        return "  (none)"
    out = []
    for s in failing:
        out.append("  %s: %s (%s)" % (s["id"], s["verdict"], s.get("reason", "")))
        out.append("    source: tests/%s.c -> scenarios/%s.c" % (s["id"], s["id"]))
        if s.get("known_bug"):
            out.append("    known target bug: %s" % s["known_bug"].get("reference"))
        r = s.get("repeat")
        if r:
            out.append("    rounds: %d, failed in %d, first in round %d" % (
                r["rounds"], r["error"] + r["bad"], r["first_fail"]))
        for ref in refs.get(s["id"], ([], []))[0]:
            out.append("    SDM %s" % ref)
    return "\n".join(out)


def make_bundle(rundir, out=None):
    rundir = Path(rundir).resolve()
    if not (rundir / "serial.log").exists():
        raise BundleError("%s has no serial.log: not a run directory" % rundir)
    rec_path = rundir / "run.json"
    if not rec_path.exists():
        raise BundleError("%s has no run.json (runs made by this harness write it)" % rundir)
    rec = json.loads(rec_path.read_text())
    facts = rec.get("image_facts") or {}
    name = rundir.name
    top = "lhv-bundle-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:80]
    out = Path(out) if out else rundir.with_name(rundir.name + ".tar.gz")
    members = {}          # archive path (below top) -> bytes or a Path

    # The image, checked against what the run booted.
    image_names = {}
    sums = []
    for key in ("booted", "elf"):
        path = facts.get(key)
        if not path or not Path(path).exists():
            continue
        digest = sha256(path)
        want = facts.get(key + "_sha256")
        if want and want != digest:
            raise BundleError("%s changed since the run (sha256 %s, the run booted %s): "
                              "rebuild and run again" % (path, digest[:16], want[:16]))
        arch = rec.get("arch", "amd64")
        base = "lhv-%s%s" % (arch, Path(path).suffix)
        image_names["iso" if base.endswith(".iso") else "elf"] = base
        members["image/" + base] = Path(path)
        sums.append("%s  %s" % (digest, base))
    commit = facts.get("git_commit") or "unknown"
    dirty = " (with uncommitted changes: rebuild may differ)" if facts.get("git_dirty") else ""
    members["image/SHA256SUMS"] = ("\n".join(sums) + "\n").encode()
    members["image/REBUILD.txt"] = (
        "git checkout %s && make\n# then images/lhv-%s.elf; the ISO with this run's command line:\n"
        "make iso-custom ARCH=%s CMDLINE=%s OUT=lhv-%s.iso\n" % (
            commit, rec.get("arch"), rec.get("arch"),
            shlex.quote((rec.get("options") or {}).get("cmdline") or ""), rec.get("arch"))).encode()

    # Logs and the screen.
    for log in ("serial.log", "bochs.log", "bochs.out", "bochsrc", "vga.bin", "qemu.log", "qemu.out",
                "screen.ppm", "screen.png"):
        if (rundir / log).exists():
            members["logs/" + log] = rundir / log
    text = _screen_text(rec, rundir)
    if text:
        members["logs/screen.txt"] = text.encode()

    # The failing scenarios: source and SDM references.
    failing = [s for s in rec.get("scenarios", []) if s.get("verdict") in FAILING]
    refs = {}
    sdm = []
    for s in failing:
        src = images.REPO / "tests" / ("%s.c" % s["id"])
        if not src.exists():
            continue
        source = src.read_text(errors="replace")
        members["scenarios/%s.c" % s["id"]] = source.encode()
        refs[s["id"]] = sdm_references(source)
        sdm.append("%s (tests/%s.c)" % (s["id"], s["id"]))
        sdm += ["  SDM %s" % r for r in refs[s["id"]][0]]
        sdm += ["  > %s" % c for c in refs[s["id"]][1]]
    if sdm:
        members["scenarios/SDM.txt"] = ("\n".join(sdm) + "\n").encode()

    # Command lines, the reproduction, the record, the harness.
    reproduce = _reproduce_command(rec, image_names)
    emulator = " ".join(shlex.quote(str(c)) for c in rec.get("command") or [])
    cmdline = (rec.get("options") or {}).get("cmdline") or ""
    members["command.txt"] = ("image command line: %s\nemulator command (in the run directory): %s\n" % (
        cmdline or "(none: the image's defaults)", emulator or "(unknown)")).encode()
    members["reproduce.sh"] = ("#!/bin/sh\n# Boots the bundled image again with the run's options.\n"
                               "cd \"$(dirname \"$0\")\" && exec %s \"$@\"\n" % reproduce).encode()
    members["run.json"] = rec_path.read_bytes()
    for f in sorted((images.REPO / "harness").rglob("*")):
        rel = f.relative_to(images.REPO)
        if f.is_file() and "tests" not in rel.parts[1:2] and "__pycache__" not in rel.parts:
            members[rel.as_posix()] = f
    banner = rec.get("banner") or parse_log((rundir / "serial.log").read_bytes()).banner or {}
    members["README.txt"] = README.format(
        name=rec.get("name", name), verdict=rec.get("verdict"),
        effective=(" (%s counting known target bugs)" % rec["effective_verdict"]
                   if rec.get("effective_verdict") not in (None, rec.get("verdict")) else ""),
        reason_line=("Reason: %s" % rec["reason"]) if rec.get("reason") else "",
        target=rec.get("target"), target_version=rec.get("target_version") or "",
        emulator=(rec.get("command") or ["?"])[0], cpu_model=rec.get("cpu_model") or "(default)",
        cpus=rec.get("cpus"), banner_cpu=banner.get("cpu", "?"), cmdline=cmdline or "(none)",
        emulator_command=emulator or "(unknown)",
        image_lines="; ".join(sums) or "(not found: rebuild with the command below)",
        commit=commit, dirty=dirty, made=time.strftime("%Y-%m-%d %H:%M:%S"),
        failing_count=len(failing), failing=_failing_text(failing, refs), reproduce=reproduce).encode()

    with tarfile.open(out, "w:gz") as tar:
        for arc, content in sorted(members.items()):
            path = "%s/%s" % (top, arc)
            if isinstance(content, Path):
                tar.add(str(content), arcname=path, recursive=False)
                continue
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mtime = int(time.time())
            info.mode = 0o755 if arc.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(content))
    return out
