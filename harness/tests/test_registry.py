"""The ELF section reader and the scenario/option registries."""

import shutil
import struct
import subprocess

import pytest

from harness import registry as R


def scen(sid, req, mask, budget, sub, flags=0):
    return struct.pack("<40s56sQIIQQ", sid.encode(), req.encode(), mask, budget, sub,
                       0xdeadbeef, flags)


def opt(name, value, impl, dflt, meaning):
    return struct.pack("<32sQII80s", name.encode(), value, impl, dflt, meaning.encode())


def make_elf(cls, sections):
    """A minimal little-endian ELF (class 1 or 2) with these (name, bytes) sections."""
    names = b"\0.shstrtab\0" + b"".join(n.encode() + b"\0" for n, _ in sections)
    ehsize, shentsize = (52, 40) if cls == 1 else (64, 64)
    body = b""
    offs = []
    for _, data in sections:
        offs.append(ehsize + len(body))
        body += data
    stroff = ehsize + len(body)
    body += names
    shoff = ehsize + len(body)
    shoff += (-shoff) % 8
    pad = shoff - ehsize - len(body)
    fmt = "<IIIIIIIIII" if cls == 1 else "<IIQQQQIIQQ"
    shdrs = [struct.pack(fmt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    pos = 1 + len(".shstrtab") + 1
    for (n, data), off in zip(sections, offs):
        shdrs.append(struct.pack(fmt, pos, 1, 2, 0, off, len(data), 0, 0, 8, 0))
        pos += len(n) + 1
    shdrs.append(struct.pack(fmt, 1, 3, 0, 0, stroff, len(names), 0, 0, 1, 0))
    shnum, shstrndx = len(shdrs), len(shdrs) - 1
    ident = b"\x7fELF" + bytes([cls, 1, 1]) + bytes(9)
    if cls == 1:
        eh = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0, 0, shoff, 0, ehsize, 32, 0,
                                 shentsize, shnum, shstrndx)
    else:
        eh = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, shoff, 0, ehsize, 56, 0,
                                 shentsize, shnum, shstrndx)
    assert len(eh) == ehsize
    return eh + body + bytes(pad) + b"".join(shdrs)


SCENS = scen("vmx_lifecycle", "vmx", 0, 2000, 3, 3) + scen("pae_cr3_unmapped", "vmx,ept,ug", 0x24, 3000, 3, 1) \
    + scen("pae_pdpte_reload", "vmx,ept,preempt_timer", 0x4, 500, 1)
OPTS = opt("USE_EPT", 0x4, 1, 1, "EPT") + opt("USE_MSR_LOAD", 0x1, 1, 0, "MSR lists") \
    + opt("USE_UNRESTRICTED_GUEST", 0x20, 1, 1, "unrestricted guest")


@pytest.mark.parametrize("cls", [1, 2])
def test_synthetic_elf(cls, tmp_path):
    p = tmp_path / "x.elf"
    p.write_bytes(make_elf(cls, [(".text", b"\x90" * 13), (".lhv_scenarios", SCENS),
                                 (".lhv_options", OPTS)]))
    reg = R.load(p)
    assert reg.ids() == ["vmx_lifecycle", "pae_cr3_unmapped", "pae_pdpte_reload"]
    assert reg.ids("amd64") == ["vmx_lifecycle", "pae_cr3_unmapped"]
    s = reg.get("pae_cr3_unmapped")
    assert s.requires == ["vmx", "ept", "ug"] and s.opt_mask == 0x24 and s.budget_ms == 3000
    assert s.arches() == ["i386", "amd64"]
    assert [o.name for o in reg.options] == ["USE_EPT", "USE_MSR_LOAD", "USE_UNRESTRICTED_GUEST"]
    assert reg.default_opt() == 0x24
    assert reg.selected("i386", 0x24) == ["vmx_lifecycle", "pae_cr3_unmapped", "pae_pdpte_reload"]
    assert reg.selected("amd64", 0x4) == ["vmx_lifecycle"]
    assert reg.selected("i386", 0x24, "pae*,-*pdpte*") == ["pae_cr3_unmapped"]
    assert reg.selected("i386", 0x24, "-vmx_*") == ["pae_cr3_unmapped", "pae_pdpte_reload"]
    listing = R.format_list(reg, "amd64")
    assert "pae_cr3_unmapped" in listing and "0x24" in listing and "vmx,ept,ug" in listing
    assert "pae_pdpte_reload" not in listing
    # Flags (the record's last u64): what each scenario claims for repeat= and noise=.
    assert [(x.id, x.repeatable, x.noise_safe) for x in reg.scenarios] == [
        ("vmx_lifecycle", True, True), ("pae_cr3_unmapped", True, False), ("pae_pdpte_reload", False, False)]
    assert reg.get("vmx_lifecycle").flag_names() == ["repeat", "noise"]
    assert "repeat,noise" in listing


def test_bad_inputs(tmp_path):
    with pytest.raises(R.ElfError):
        R.read_sections(b"not an elf at all, clearly not, no no no no no no no no no no")
    p = tmp_path / "y.elf"
    p.write_bytes(make_elf(2, [(".text", b"\x90")]))
    with pytest.raises(R.ElfError, match="no .lhv_scenarios"):
        R.load(p)
    with pytest.raises(R.ElfError, match="multiple of 128"):
        R.parse_scenarios(b"\0" * 100)


C_SRC = r"""
struct s { char id[40]; char requires[56]; unsigned long long opt_mask;
           unsigned int budget_ms, subarch_mask; unsigned long long fn, flags; };
struct o { char name[32]; unsigned long long value; unsigned int implemented, is_default;
           char meaning[80]; };
_Static_assert(sizeof(struct s) == 128, "s"); _Static_assert(sizeof(struct o) == 128, "o");
__attribute__((section(".lhv_scenarios"), used, aligned(8)))
static const struct s s1[2] = { { "ept_basic", "vmx,ept", 0x4, 1500, 3,
                                  0, 3 },
                                { "msr_lists", "vmx", 0x1, 700, 2, 0, 1 } };
__attribute__((section(".lhv_options"), used, aligned(8)))
static const struct o o1 = { "USE_EPT", 0x4, 1, 1, "EPT" };
"""


@pytest.mark.parametrize("bits", ["32", "64"])
def test_gcc_built_object(bits, tmp_path):
    """The reader agrees with what a C compiler lays out (ELF32 and ELF64)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    (tmp_path / "r.c").write_text(C_SRC)
    out = tmp_path / "r.o"
    r = subprocess.run(["gcc", "-m" + bits, "-c", "-ffreestanding", "-o", str(out),
                        str(tmp_path / "r.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    reg = R.load(out)
    assert [(s.id, s.requires, s.opt_mask, s.budget_ms, s.subarch_mask, s.flags) for s in reg.scenarios] == [
        ("ept_basic", ["vmx", "ept"], 4, 1500, 3, 3), ("msr_lists", ["vmx"], 1, 700, 2, 1)]
    assert [(o.name, o.value, o.implemented, o.is_default, o.meaning) for o in reg.options] == [
        ("USE_EPT", 4, True, True, "EPT")]


def test_lhv_opt_md_parser():
    md = """# LHV_OPT
| bit | name | meaning | default |
|---|---|---|---|
| 0x1 | USE_MSR_LOAD | MSR lists | no |
| `0x4` | `USE_EPT` | EPT | yes |
| 0x100000 | NEW_THING | something | no |
"""
    assert R.parse_lhv_opt_md(md) == {1: "USE_MSR_LOAD", 4: "USE_EPT", 0x100000: "NEW_THING"}


@pytest.mark.parametrize("tests,sid,want", [
    (None, "a", True), ("", "a", True), ("a*", "abc", True), ("a*", "bcd", False),
    ("-a*", "abc", False), ("-a*", "bcd", True), ("x,a*,-ab*", "abc", False),
    ("x,a*,-ab*", "acd", True), ("ept_basic", "ept_basic", True)])
def test_glob_selects(tests, sid, want):
    assert R.glob_selects(tests, sid) is want
