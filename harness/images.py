"""Where the build outputs are, and ISOs with a custom command line.

`make` builds images/lhv-<arch>.{elf,iso} and images/font8x16.bin.  ISOs that
pass extra multiboot command-line options (Bochs and UEFI runs cannot use
QEMU's -append) come from `make iso-custom ARCH=.. CMDLINE=".." OUT=..` and are
cached under images/cache/, one per (arch, command line), rebuilt when the ELF
is newer.  Parallel workers share the cache through a lock file.
"""

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCHES = ("i386", "amd64")


class ImageError(Exception):
    pass


def images_dir():
    return Path(os.environ.get("LHV_IMAGES", REPO / "images"))


def elf_path(arch):
    return images_dir() / ("lhv-%s.elf" % arch)


def iso_path(arch):
    return images_dir() / ("lhv-%s.iso" % arch)


def font_path():
    return images_dir() / "font8x16.bin"


def missing_images(arches=ARCHES, iso=True):
    want = [elf_path(a) for a in arches]
    if iso:
        want += [iso_path(a) for a in arches]
    want.append(font_path())
    return [str(p) for p in want if not p.exists()]


def require(path):
    path = Path(path)
    if not path.exists():
        raise ImageError("%s is missing: run `make` first" % path)
    return path


def custom_iso(arch, cmdline, timeout=300):
    """Path of an ISO whose default GRUB entry passes `cmdline` (cached)."""
    cmdline = (cmdline or "").strip()
    elf = require(elf_path(arch))
    if not cmdline:
        return require(iso_path(arch))
    cache = images_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(("%s\0%s" % (arch, cmdline)).encode()).hexdigest()[:16]
    out = cache / ("lhv-%s-%s.iso" % (arch, key))
    with open(cache / (out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Stale when the ELF or the default ISO (rebuilt when the ISO recipe
        # changes) is newer.
        newest = max(p.stat().st_mtime for p in (elf, iso_path(arch)) if p.exists())
        if out.exists() and out.stat().st_mtime >= newest:
            return out
        tmp = out.with_name(out.name + ".tmp%d.iso" % os.getpid())
        cmd = ["make", "-s", "-C", str(REPO), "iso-custom", "ARCH=" + arch,
               "CMDLINE=" + cmdline, "OUT=" + str(tmp)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout, text=True)
        if r.returncode != 0 or not tmp.exists():
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise ImageError("`%s` failed (%d):\n%s" % (" ".join(cmd), r.returncode,
                                                         r.stdout[-4000:]))
        (cache / (out.name + ".cmdline")).write_text(arch + " " + cmdline + "\n")
        os.replace(tmp, out)
    return out
