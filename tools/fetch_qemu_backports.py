#!/usr/bin/python3
"""Puts a QEMU whose TCG has x2APIC beside Debian 12's own, without installing it.

Laptop firmware hands over with every CPU in x2APIC mode and lists CPUs with APIC IDs of 255 and
more as MADT x2APIC entries (issue 8). QEMU emulates x2APIC under TCG only from 8.1 on; Debian 12
ships 7.2. bookworm-backports, in Debian's own archive, has a newer QEMU. This script:

- reads the mirror of the machine's own `bookworm` apt entry (nothing else is named or changed:
  the machine's apt sources and installed packages stay as they are);
- with apt state of its own under .cache/qemu-backports/apt, downloads the backports packages of
  QEMU's x86 system emulator and its firmware (PACKAGES) and unpacks them with dpkg -x;
- leaves out the loadable modules whose libraries this machine lacks (QEMU would go on to Debian
  12's own 7.2 modules, which it refuses: "Only modules from the same build can be loaded");
- writes .cache/qemu-backports/qemu-system-x86_64, a wrapper that runs it with its own modules
  and firmware, and checks that it answers --version.

It does nothing when the machine's QEMU already has x2APIC under TCG (asked of QEMU the way the
harness asks, harness/targets/qemu_tcg.py: tcg_has_x2apic), and is not an error when it cannot
work (not Debian 12, no network): the harness then runs the x2APIC hand-off cases nowhere and
says so in their skip reason.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from harness.targets.qemu_tcg import QEMU, tcg_has_x2apic  # noqa: E402  (after the path is set)

DEST = REPO / ".cache" / "qemu-backports"
WRAPPER = DEST / "qemu-system-x86_64"
SUITE_OF = {"bookworm": "bookworm-backports"}
PACKAGES = ["qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-system-gui",
            "qemu-system-modules-opengl", "qemu-system-modules-spice", "seabios"]
MODULE_DIR = "usr/lib/x86_64-linux-gnu/qemu"
FIRMWARE_DIRS = ["usr/share/qemu", "usr/share/seabios"]
SYSTEM_IPXE = "/usr/lib/ipxe/qemu"        # Debian 12's ipxe-qemu: QEMU's option ROMs


def say(msg):
    print("fetch_qemu_backports: %s" % msg, flush=True)


def codename():
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def apt_entries():
    """(uri, suites, components, signed_by) of every deb entry, one-line and deb822 alike."""
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "deb":
                continue
            opts, words = (words[1][1:-1], words[2:]) if words[1].startswith("[") else ("", words[1:])
            signed = re.search(r"signed-by=(\S+)", opts)
            yield words[0], words[1:2], words[2:], signed.group(1) if signed else None
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    yield (uri, fields.get("suites", "").split(), fields.get("components", "").split(),
                           fields.get("signed-by"))


def mirror_for(release):
    for uri, suites, components, signed_by in apt_entries():
        if release in suites and "main" in components:
            return uri, signed_by
    return None, None


def apt(args, apt_dir):
    opts = ["-o", "Dir::Etc::SourceList=%s" % (apt_dir / "sources.list"),
            "-o", "Dir::Etc::SourceParts=%s" % (apt_dir / "sources.list.d"),
            "-o", "Dir::State::Lists=%s" % (apt_dir / "lists"),
            "-o", "Dir::Cache=%s" % (apt_dir / "cache"),
            "-o", "Debug::NoLocking=1"]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]   # root's own folder: apt's _apt user may not write it
    subprocess.run(["apt-get", "-q"] + opts + args, check=True, cwd=apt_dir / "debs")


def modules_that_cannot_load(module_dir):
    bad = []
    for so in sorted(module_dir.glob("*.so")):
        out = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
        if "not found" in out:
            bad.append(so)
    return bad


def write_wrapper():
    firmware = " ".join('-L "$here/root/%s"' % d for d in FIRMWARE_DIRS)
    WRAPPER.write_text("""#!/bin/sh
# QEMU from bookworm-backports, unpacked here by tools/fetch_qemu_backports.py: its own modules
# and firmware, Debian 12's option ROMs.
here="$(cd "$(dirname "$0")" && pwd)"
export QEMU_MODULE_DIR="$here/root/%s"
exec "$here/root/usr/bin/qemu-system-x86_64" %s -L %s "$@"
""" % (MODULE_DIR, firmware, SYSTEM_IPXE))
    WRAPPER.chmod(0o755)


def main():
    has_it, version = tcg_has_x2apic(QEMU)
    if has_it:
        say("the machine's QEMU %s already has x2APIC under TCG; nothing to fetch" % version)
        return 0
    if WRAPPER.exists():
        has_it, version = tcg_has_x2apic(str(WRAPPER))
        if has_it:
            say("%s is there (QEMU %s)" % (WRAPPER.relative_to(REPO), version))
            return 0
    release = codename()
    if release not in SUITE_OF:
        say("no backports suite known for %r; the x2APIC hand-off cases will be skipped" % release)
        return 0
    uri, signed_by = mirror_for(release)
    if not uri:
        say("no apt entry for %s main; the x2APIC hand-off cases will be skipped" % release)
        return 0
    shutil.rmtree(DEST, ignore_errors=True)
    apt_dir = DEST / "apt"
    for d in ("lists/partial", "cache/archives/partial", "sources.list.d", "debs"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text("deb %s%s %s main\n" % (
        "[signed-by=%s] " % signed_by if signed_by else "", uri, SUITE_OF[release]))
    try:
        apt(["update"], apt_dir)
        apt(["download"] + ["%s/%s" % (p, SUITE_OF[release]) for p in PACKAGES], apt_dir)
    except subprocess.CalledProcessError as e:
        say("apt-get failed (%s); the x2APIC hand-off cases will be skipped" % e)
        return 0
    for deb in sorted((apt_dir / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(DEST / "root")], check=True)
    for so in modules_that_cannot_load(DEST / "root" / MODULE_DIR):
        say("leaving out %s (a library it needs is not installed)" % so.name)
        so.unlink()
    write_wrapper()
    has_it, why = tcg_has_x2apic(str(WRAPPER))
    if not has_it:
        say("%s; the x2APIC hand-off cases will be skipped" % why)
        return 0
    say("QEMU %s from %s in %s" % (why, SUITE_OF[release], WRAPPER.relative_to(REPO)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
