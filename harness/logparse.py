"""Parse an LHV serial log into facts (no judging here; see judge.py)."""

import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>c]")
_KV = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)')

ID = r"[a-z0-9_]+"
RE_TEST = re.compile(r"^TEST (" + ID + r"): (GOOD|SKIP|BAD|ERROR|TIMEOUT)(?: \((.*)\))?\s*$")
RE_TEST_ANY = re.compile(r"^TEST\b")
RE_INFO = re.compile(r"^INFO (" + ID + r"): ?(.*)$")
RE_SUMMARY = re.compile(
    r"^LHV SUMMARY: (\d+) good, (\d+) bad, (\d+) skipped, (\d+) errors?\s*$")
RE_RESULT = re.compile(r"^LHV RESULT: (GOOD|BAD|SKIP|ERROR|CRASH)\s*$")
RE_ERROR = re.compile(r"^LHV ERROR: ?(.*)$")
RE_EXCEPTION = re.compile(r"^LHV EXCEPTION\b ?(.*)$")
RE_CAPS = re.compile(r"^LHV CAPS ?(.*)$")
RE_TSC = re.compile(r"^LHV TSC (.*)$")
RE_SMP = re.compile(r"^LHV SMP (.*)$")
RE_BANNER = re.compile(r"^LHV (\S+) (.*\barch=.*)$")
# Race hunting (lhv/repeat.c): the header, a line per round, a line per scenario before its
# TEST line, the noise seed and counts.
RE_REPEAT_HEAD = re.compile(r"^LHV REPEAT (.*)$")
RE_ROUND = re.compile(r"^ROUND (\d+): (\d+) good((?:, (?:SKIP|ERROR|BAD|TIMEOUT) " + ID + r")*)( \.\.\.)?\s*$")
RE_ROUND_ANY = re.compile(r"^ROUND\b")
RE_REPEAT = re.compile(r"^REPEAT (" + ID + r"): (.*)$")
RE_SEED = re.compile(r"^LHV SEED (0x[0-9a-fA-F]+|\d+)\s*$")
RE_NOISE = re.compile(r"^LHV NOISE: (.*)$")
REPEAT_KEYS = ("rounds", "good", "skip", "error", "bad", "worst", "worst_round", "first_fail")
_KEYWORDS = {"CAPS", "TSC", "SMP", "SUMMARY:", "RESULT:", "ERROR:", "EXCEPTION", "REPEAT", "SEED",
             "NOISE:"}


def parse_kv(text):
    out = {}
    for m in _KV.finditer(text):
        out[m.group(1)] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


def clean_lines(text):
    """Split serial text into lines: strip CR, ANSI escapes and NULs."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = _ANSI.sub("", text).replace("\x00", "")
    return [ln.rstrip("\r").rstrip() for ln in text.replace("\r\n", "\n").split("\n")]


@dataclass
class TestLine:
    id: str
    verdict: str
    reason: str
    lineno: int


@dataclass
class RoundLine:
    round: int
    good: int
    failed: list           # [(verdict, id)] in run order
    cut: bool              # the line ended in "..." (more failures than fit)
    lineno: int


def parse_repeat(text):
    """The fields of a REPEAT line: counts and rounds as ints, worst as the verdict name;
    None when a field is missing or malformed."""
    kv = parse_kv(text)
    out = {}
    for k in REPEAT_KEYS:
        if k not in kv:
            return None
        if k == "worst":
            out[k] = kv[k]
            continue
        try:
            out[k] = int(kv[k])
        except ValueError:
            return None
    return out


@dataclass
class ParsedLog:
    lines: list = field(default_factory=list)
    banners: list = field(default_factory=list)      # dicts (first one is "the" banner)
    caps: dict = field(default_factory=dict)
    smp: dict = field(default_factory=dict)          # cpus, vmxon: CPUs up and in VMX operation
    tsc: dict = field(default_factory=dict)          # start, hz, end, elapsed_ms (ints)
    tests: list = field(default_factory=list)        # TestLine, in order
    infos: dict = field(default_factory=dict)        # id -> [text]
    errors: list = field(default_factory=list)       # LHV ERROR: messages
    exceptions: list = field(default_factory=list)   # LHV EXCEPTION lines
    summary: dict = None                             # good, bad, skipped, error
    summary_count: int = 0
    result: str = None
    result_count: int = 0
    result_lineno: int = None
    after_result: list = field(default_factory=list)  # significant lines after RESULT
    malformed: list = field(default_factory=list)     # lines that look like TEST but do not parse
    repeat: dict = None                               # LHV REPEAT rounds= ms= until= noise=
    rounds: list = field(default_factory=list)        # RoundLine, in order
    repeats: dict = field(default_factory=dict)       # id -> {rounds, good, ..., worst, lineno}
    seed: int = None                                  # LHV SEED
    noise: str = None                                 # LHV NOISE: text

    @property
    def banner(self):
        return self.banners[0] if self.banners else None


def parse_log(text):
    p = ParsedLog()
    p.lines = clean_lines(text)
    for n, raw in enumerate(p.lines, 1):
        line = raw.strip()
        if not line:
            continue
        # A banner may share its line with firmware noise (no newline before it).
        if not line.startswith(("LHV ", "TEST ", "INFO ")) and "LHV " in line:
            cand = line[line.index("LHV "):]
            m = RE_BANNER.match(cand)
            if m and m.group(1) not in _KEYWORDS:
                line = cand
        significant = True
        m = RE_TEST.match(line)
        if m:
            p.tests.append(TestLine(m.group(1), m.group(2), (m.group(3) or "").strip(), n))
        elif RE_TEST_ANY.match(line):
            p.malformed.append((n, line))
        elif RE_INFO.match(line):
            m = RE_INFO.match(line)
            p.infos.setdefault(m.group(1), []).append(m.group(2))
            significant = False
        elif RE_ROUND.match(line):
            m = RE_ROUND.match(line)
            failed = [tuple(x.strip().split(" ", 1)) for x in m.group(3).split(",") if x.strip()]
            p.rounds.append(RoundLine(int(m.group(1)), int(m.group(2)), failed, bool(m.group(4)), n))
        elif RE_ROUND_ANY.match(line):
            p.malformed.append((n, line))
        elif RE_REPEAT.match(line):
            m = RE_REPEAT.match(line)
            r = parse_repeat(m.group(2))
            if r is None:
                p.malformed.append((n, line))
            else:
                r["lineno"] = n
                if m.group(1) in p.repeats:
                    p.malformed.append((n, line))
                else:
                    p.repeats[m.group(1)] = r
        elif RE_REPEAT_HEAD.match(line):
            p.repeat = parse_kv(RE_REPEAT_HEAD.match(line).group(1))
            significant = False
        elif RE_SEED.match(line):
            p.seed = int(RE_SEED.match(line).group(1), 0)
            significant = False
        elif RE_NOISE.match(line):
            p.noise = RE_NOISE.match(line).group(1)
            significant = False
        elif RE_SUMMARY.match(line):
            m = RE_SUMMARY.match(line)
            p.summary = dict(zip(("good", "bad", "skipped", "error"), map(int, m.groups())))
            p.summary_count += 1
        elif RE_RESULT.match(line):
            p.result = RE_RESULT.match(line).group(1)
            p.result_count += 1
            p.result_lineno = n
            continue
        elif RE_ERROR.match(line):
            p.errors.append(RE_ERROR.match(line).group(1))
        elif RE_EXCEPTION.match(line):
            p.exceptions.append(line)
        elif RE_CAPS.match(line):
            p.caps.update(parse_kv(RE_CAPS.match(line).group(1)))
            significant = False
        elif RE_SMP.match(line):
            p.smp.update(parse_kv(RE_SMP.match(line).group(1)))
            significant = False
        elif RE_TSC.match(line):
            for k, v in parse_kv(RE_TSC.match(line).group(1)).items():
                try:
                    p.tsc[k] = int(v, 0)
                except ValueError:
                    p.tsc[k] = v
            significant = False
        elif RE_BANNER.match(line) and RE_BANNER.match(line).group(1) not in _KEYWORDS:
            m = RE_BANNER.match(line)
            b = {"version": m.group(1), "lineno": n, "line": line}
            b.update(parse_kv(m.group(2)))
            p.banners.append(b)
        else:
            significant = False      # other "LHV ..." lines and noise are informational
        if significant and p.result is not None:
            p.after_result.append((n, line))
    return p
