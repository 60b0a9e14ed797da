"""Read the scenario and option registries straight from an LHV ELF image.

Section `.lhv_scenarios`: 128-byte records
    char id[40]; char requires[56]; u64 opt_mask; u32 budget_ms;
    u32 subarch_mask (1=i386, 2=amd64); u64 fn; u64 flags
    (flags: 0x1 repeatable, 0x2 noise-safe; lhv/scenario.h SCENARIO_*)
Section `.lhv_options`: 128-byte records
    char name[32]; u64 value; u32 implemented; u32 is_default; char meaning[80]
Little endian, for ELF32 and ELF64 alike.
"""

import fnmatch
import re
import struct
from dataclasses import dataclass, field

SUBARCH_BITS = {"i386": 1, "amd64": 2}
# Scenario flags (lhv/scenario.h): what a scenario claims it survives (lhv/repeat.c).
FLAG_REPEATABLE = 0x1
FLAG_NOISE_SAFE = 0x2
FLAG_NAMES = {FLAG_REPEATABLE: "repeat", FLAG_NOISE_SAFE: "noise"}
RECORD = 128


class ElfError(Exception):
    pass


def read_sections(path_or_bytes):
    """Return {section name: bytes} for every section with contents."""
    data = path_or_bytes
    if not isinstance(data, (bytes, bytearray)):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    cls, enc = data[4], data[5]
    if enc != 1:
        raise ElfError("not a little-endian ELF file")
    if cls == 1:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
        shfmt = "<IIIIIIIIII"
    elif cls == 2:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        shfmt = "<IIQQQQIIQQ"
    else:
        raise ElfError("unknown ELF class %d" % cls)
    if shoff == 0 or shnum == 0:
        raise ElfError("ELF file has no section headers")
    if shoff + shnum * shentsize > len(data):
        raise ElfError("section header table beyond end of file")
    headers = []
    for i in range(shnum):
        h = struct.unpack_from(shfmt, data, shoff + i * shentsize)
        # name, type, flags, addr, offset, size, link, info, align, entsize
        headers.append(h)
    if shstrndx >= shnum:
        raise ElfError("bad section name table index")
    strtab_h = headers[shstrndx]
    strtab = data[strtab_h[4]:strtab_h[4] + strtab_h[5]]
    out = {}
    for h in headers:
        name_off, sh_type, off, size = h[0], h[1], h[4], h[5]
        end = strtab.find(b"\0", name_off)
        name = strtab[name_off:end if end >= 0 else None].decode("ascii", "replace")
        if sh_type == 8:          # SHT_NOBITS
            out[name] = bytes(size)
        else:
            if off + size > len(data):
                raise ElfError("section %s beyond end of file" % name)
            out[name] = bytes(data[off:off + size])
    return out


def _cstr(b):
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


@dataclass
class Scenario:
    id: str
    requires: list
    opt_mask: int
    budget_ms: int
    subarch_mask: int
    flags: int = 0

    def arches(self):
        return [a for a, bit in SUBARCH_BITS.items() if self.subarch_mask & bit]

    @property
    def repeatable(self):
        return bool(self.flags & FLAG_REPEATABLE)

    @property
    def noise_safe(self):
        return bool(self.flags & FLAG_NOISE_SAFE)

    def flag_names(self):
        return [n for bit, n in sorted(FLAG_NAMES.items()) if self.flags & bit]


@dataclass
class Option:
    name: str
    value: int
    implemented: bool
    is_default: bool
    meaning: str


@dataclass
class Registry:
    scenarios: list = field(default_factory=list)
    options: list = field(default_factory=list)
    path: str = None

    def ids(self, arch=None):
        return [s.id for s in self.scenarios if arch is None or s.subarch_mask & SUBARCH_BITS[arch]]

    def get(self, sid):
        for s in self.scenarios:
            if s.id == sid:
                return s
        return None

    def default_opt(self):
        v = 0
        for o in self.options:
            if o.is_default:
                v |= o.value
        return v

    def selected(self, arch, opt, tests=None):
        """Ids the image should run for this arch, LHV_OPT value and tests= list."""
        return [s.id for s in self.scenarios
                if s.subarch_mask & SUBARCH_BITS.get(arch, 0)
                and (opt & s.opt_mask) == s.opt_mask
                and glob_selects(tests, s.id)]


def glob_selects(tests, sid):
    """tests=<glob>[,<glob>...]; a leading '-' excludes.  None/'' selects all."""
    if not tests:
        return True
    pats = [t.strip() for t in tests.split(",") if t.strip()]
    inc = [p for p in pats if not p.startswith("-")]
    exc = [p[1:] for p in pats if p.startswith("-")]
    if inc and not any(fnmatch.fnmatchcase(sid, p) for p in inc):
        return False
    return not any(fnmatch.fnmatchcase(sid, p) for p in exc)


def parse_scenarios(blob):
    if len(blob) % RECORD:
        raise ElfError(".lhv_scenarios size %d is not a multiple of %d" % (len(blob), RECORD))
    out = []
    for i in range(0, len(blob), RECORD):
        rid, req, mask, budget, sub, _fn, flags = struct.unpack_from("<40s56sQIIQQ", blob, i)
        sid = _cstr(rid)
        if not sid:
            continue        # zero padding between records
        out.append(Scenario(sid, [r.strip() for r in _cstr(req).split(",") if r.strip()],
                            mask, budget, sub, flags))
    return out


def parse_options(blob):
    if len(blob) % RECORD:
        raise ElfError(".lhv_options size %d is not a multiple of %d" % (len(blob), RECORD))
    out = []
    for i in range(0, len(blob), RECORD):
        name, value, impl, dflt, meaning = struct.unpack_from("<32sQII80s", blob, i)
        if not _cstr(name):
            continue
        out.append(Option(_cstr(name), value, bool(impl), bool(dflt), _cstr(meaning)))
    return out


def load(path):
    secs = read_sections(path)
    if ".lhv_scenarios" not in secs:
        raise ElfError("%s has no .lhv_scenarios section" % path)
    return Registry(parse_scenarios(secs[".lhv_scenarios"]),
                    parse_options(secs.get(".lhv_options", b"")), str(path))


_ROW = re.compile(r"^\|\s*`?(0x[0-9a-fA-F]+)`?\s*\|\s*`?([A-Za-z0-9_]+)`?\s*\|")


def parse_lhv_opt_md(text):
    """Rows `| 0x4 | USE_EPT | ... |` of LHV_OPT.md -> {value: name}."""
    out = {}
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            out[int(m.group(1), 16)] = m.group(2)
    return out


def format_list(reg, arch=None):
    rows = [("id", "arches", "opt_mask", "requires", "budget_ms", "flags")]
    for s in reg.scenarios:
        if arch and not s.subarch_mask & SUBARCH_BITS[arch]:
            continue
        rows.append((s.id, ",".join(s.arches()), "0x%x" % s.opt_mask,
                     ",".join(s.requires) or "-", str(s.budget_ms),
                     ",".join(s.flag_names()) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if reg.options:
        lines.append("")
        lines.append("options (default 0x%x):" % reg.default_opt())
        w = max(len(o.name) for o in reg.options)
        for o in sorted(reg.options, key=lambda o: o.value):
            lines.append("  %-10s %-*s  %-7s  %-15s  %s" % (
                "0x%x" % o.value, w, o.name, "default" if o.is_default else "",
                "" if o.implemented else "not implemented", o.meaning))
    return "\n".join(lines)
