"""python3 -m harness: run | judge | compare | list | kvm-probe | bundle | bench | lava

Exit status (worst run wins; known target bugs do not count):
  0 GOOD (or a VMware bundle written)   1 BAD        2 usage error
  3 SKIP                                4 ERROR (the image's, or a harness cross-check failed)
  5 CRASH     6 TIMEOUT     7 NO-OUTPUT     8 INCOMPLETE (offline log ends early)
  9 UNAVAILABLE (the target cannot run here)
"""

import argparse
import itertools
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import images
from . import qrphoto
from . import registry as regmod
from . import report
from . import targets as T
from . import verdicts as V
from .runner import TARGETS, RunSpec, judge_file, judge_photo, load_registry, run


def _csv(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _write_reports(args, recs):
    if getattr(args, "json", None):
        Path(args.json).write_text(report.to_json(recs))
    if getattr(args, "junit", None):
        Path(args.junit).write_text(report.junit(recs))


def _print_runs(recs):
    for r in recs:
        print(report.table(r))
        print()
    if len(recs) > 1:
        print(report.compare(recs))


def cmd_list(args):
    arches = [args.arch] if args.arch else list(images.ARCHES)
    rc = 0
    for a in arches:
        try:
            reg = load_registry(a, args.elf)
        except regmod.ElfError as e:
            print("%s: %s" % (a, e), file=sys.stderr)
            rc = 4
            continue
        if reg is None:
            print("%s: %s missing: run `make` first" % (a, args.elf or images.elf_path(a)),
                  file=sys.stderr)
            rc = 4
            continue
        print("== %s (%s)" % (a, reg.path))
        print(regmod.format_list(reg, a))
        print()
    return rc


def _bochs_models(programs):
    """{model: [programs that have it]} over the Bochs builds given; None if none lists any."""
    have = {}
    for p in programs:
        for m in T.get("bochs", p).models() or ():
            have.setdefault(m, []).append(p)
    return have or None


def _models_by_target(tgts, models, bochs_programs):
    """Which --cpu-model values go to which target: a model some Bochs build lists goes to
    bochs, anything else to QEMU's -cpu.  Returns ({target: [models]}, usage error or "")."""
    if models == [None]:
        return {}, ""
    have = _bochs_models(bochs_programs) if "bochs" in tgts else None
    if "bochs" not in tgts:
        to_bochs, other = [], models
    elif have is None:                    # no Bochs build here to ask: it decides when it runs
        to_bochs, other = models, models
    else:
        to_bochs = [m for m in models if m in have]
        other = [m for m in models if m not in have]
    takes_other = [t for t in tgts if t != "bochs" and T.TARGETS[t].uses_cpu_model]
    if "bochs" in tgts and other and not takes_other:
        builds = ["%s (%s)" % (T.get("bochs", p).display_name(), T.get("bochs", p).program_path())
                  for p in bochs_programs]
        return {}, "no Bochs given has CPU model %s; the models of %s (`bochs --help cpu`): %s" % (
            ", ".join(other), ", ".join(builds), ", ".join(have or ()))
    by = {t: (to_bochs if t == "bochs" else other if t in takes_other else []) or [None]
          for t in tgts}
    return by, ""


def repeat_words(args):
    """--repeat, --repeat-ms, --repeat-until-fail, --noise, --seed as the image's words."""
    words = []
    if args.repeat:
        words.append("repeat=%d" % args.repeat)
    if args.repeat_ms:
        words.append("repeat_ms=%d" % args.repeat_ms)
    if args.repeat_until_fail:
        words.append("repeat_until=fail")
    if args.noise:
        words.append("noise=%s" % args.noise)
    if args.seed is not None:
        words.append("seed=%s" % args.seed)
    return words


def cmd_run(args):
    if args.list:
        return cmd_list(args)
    bochs_programs = _csv(args.bochs) or [None]
    tgts = _csv(args.target) or (["bochs"] if args.bochs else ["qemu-tcg"])
    for t in tgts:
        if t not in TARGETS:
            print("unknown target %s (one of %s)" % (t, ", ".join(TARGETS)), file=sys.stderr)
            return V.EXIT_USAGE
    if args.bochs and "bochs" not in tgts:
        print("--bochs given but bochs is not among the targets (%s)" % ",".join(tgts),
              file=sys.stderr)
        return V.EXIT_USAGE
    if args.qemu and not any(t.startswith("qemu") for t in tgts):
        print("--qemu given but no qemu target is among the targets (%s)" % ",".join(tgts),
              file=sys.stderr)
        return V.EXIT_USAGE
    arches = _csv(args.arch) or ["amd64"]
    models = _csv(args.cpu_model) or [None]
    firmwares = _csv(args.firmware) or ["bios"]
    by_target, err = _models_by_target(tgts, models, bochs_programs)
    if err:
        print(err, file=sys.stderr)
        return V.EXIT_USAGE
    extra = " ".join(w for w in [args.cmdline] + repeat_words(args) if w) or None
    specs = []
    for t, a, fw in itertools.product(tgts, arches, firmwares):
        if fw not in T.TARGETS[t].firmwares:
            continue                      # e.g. Bochs boots by BIOS only
        # Several Bochs builds: the same run under each, side by side in the comparison.
        programs = bochs_programs if t == "bochs" else [args.qemu] if t.startswith("qemu") else [None]
        for m, prog in itertools.product(by_target.get(t, [None]), programs):
            specs.append(RunSpec(target=t, program=prog, arch=a, cpu_model=m, cpus=args.cpus,
                                 firmware=fw, boot=args.boot, opt=args.opt, tests=args.tests,
                                 inject=args.inject, extra=extra, timeout=args.timeout,
                                 iso=args.iso, elf=args.elf, font=args.font, mouse_on=args.mouse_on,
                                 memory=args.memory,
                                 smp=args.smp, serial=not args.no_serial,
                                 qemu_args=tuple(shlex.split(args.qemu_args or ""))))
    if args.iso and any(s.cmdline for s in specs) and \
            any(s.target != "qemu-tcg" and s.target != "qemu-kvm" or s.firmware == "uefi"
                or s.boot in ("cdrom", "disk") for s in specs):
        print("warning: --iso given: ISO boots use that ISO's own command line, not %r"
              % specs[0].cmdline, file=sys.stderr)
    for s in specs:
        s.target_obj().prepare(s)         # defaults (CPU count...) before names and run dirs
    if args.out and len(specs) > 1:
        seen = {}
        for s in specs:
            label = s.label()
            seen[label] = seen.get(label, 0) + 1      # two builds of one version: -2, -3...
            s.out = str(Path(args.out) / (label + ("-%d" % seen[label] if seen[label] > 1 else "")))
    elif args.out:
        specs[0].out = args.out
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        recs = list(ex.map(run, specs))
    _print_runs(recs)
    for r in recs:
        if r["verdict"] == V.BUNDLE:
            print("VMware bundle: %s (see README.txt there)" % r["run_dir"])
    _write_reports(args, recs)
    return report.exit_code(recs)


def cmd_judge(args):
    if not args.serial and not args.photo:
        print("judge: give serial logs, or --photo pictures of the final screen", file=sys.stderr)
        return V.EXIT_USAGE
    common = dict(arch=args.arch, elf=args.elf, target=args.target, cpu_model=args.cpu_model,
                  tests=args.tests, target_version=args.target_version)
    recs = [judge_file(s, screen=args.screen, screen_kind=args.screen_kind, font=args.font, **common)
            for s in args.serial]
    for photo in args.photo or []:
        try:
            recs.append(judge_photo(photo, **common))
        except qrphoto.DecodeError as e:
            print("judge --photo: %s" % e, file=sys.stderr)
            return V.EXIT_STATUS[V.NO_OUTPUT]
    _print_runs(recs)
    _write_reports(args, recs)
    return report.exit_code(recs)


def cmd_compare(args):
    recs = []
    for f in args.results:
        data = json.loads(Path(f).read_text())
        recs += data["runs"] if isinstance(data, dict) and "runs" in data else [data]
    print(report.compare(recs))
    return report.exit_code(recs)


def cmd_kvm_probe(args):
    ok, reason = T.kvm_probe()
    print("qemu-kvm: %s: %s" % ("available" if ok else "UNAVAILABLE", reason))
    return 0 if ok else V.EXIT_STATUS[V.UNAVAILABLE]


def cmd_bundle(args):
    from . import bundle
    try:
        path = bundle.make_bundle(args.rundir, args.out)
    except bundle.BundleError as e:
        print("bundle: %s" % e, file=sys.stderr)
        return V.EXIT_USAGE
    print("bundle: %s" % path)
    return 0


def cmd_bench(args):
    from . import bench
    return bench.main(args)


def cmd_lava(args):
    """Write the LAVA job definitions: the qemu one (runnable here with lava-run) and the lab
    template for a real x86 machine; validate both with LAVA's schema where lava-common is."""
    from .targets import lava
    spec = RunSpec(target="lava", arch=args.arch, cpu_model=args.cpu_model, cpus=args.cpus,
                   opt=args.opt, tests=args.tests, inject=args.inject, extra=args.cmdline,
                   timeout=args.timeout, elf=args.elf)
    if spec.timeout is None:
        from .runner import default_timeout
        try:
            spec.timeout = default_timeout(spec, load_registry(spec.arch, spec.elf))
        except regmod.ElfError:
            spec.timeout = 600
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = {"lhv-%s-qemu.yaml" % args.arch: lava.lava_job(spec, "qemu"),
            "lhv-%s-x86-%s.yaml" % (args.arch, args.lab_boot):
                lava.lava_job(spec, args.device_type, kernel_url=args.kernel_url
                              or "https://example.org/lhv-%s.elf" % args.arch,
                              lab_boot=args.lab_boot)}
    rc = 0
    for name, job in jobs.items():
        (out / name).write_text(lava.dump_yaml(job))
        try:
            err = lava.validate_job(job)
            state = "valid (lava_common %s)" % (lava.lava_version() or "?") if not err \
                else "INVALID: " + err
            rc = rc or (V.EXIT_STATUS[V.ERROR] if err else 0)
        except ImportError:
            state = "not validated: lava-common is not installed (make lava-deps)"
        print("%s: %s" % (out / name, state))
    (out / "device-qemu.yaml").write_text(lava.dump_yaml(lava.device_yaml(spec)))
    print("%s: rendered qemu device dictionary for `lava-run --device`" % (out / "device-qemu.yaml"))
    return rc


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="boot the image on one or more targets and judge it")
    r.add_argument("--target", help="comma list of: " + ", ".join(TARGETS) + " (default qemu-tcg)")
    r.add_argument("--arch", help="comma list of i386, amd64 (default amd64)")
    r.add_argument("--bochs", help="the Bochs binary (comma list: the same runs under each; "
                   "default $LHV_BOCHS, else bochs on PATH); implies --target bochs if none is given")
    r.add_argument("--qemu", help="qemu-tcg, qemu-kvm: the QEMU binary (default $LHV_QEMU, else "
                   "qemu-system-x86_64 on PATH), e.g. .cache/qemu-backports/qemu-system-x86_64")
    r.add_argument("--cpu-model", help="comma list; bochs: a model the build lists "
                   "(`bochs --help cpu`), default " + T.bochs.DEFAULT_MODEL + "; qemu: a -cpu value")
    r.add_argument("--cpus", type=int, help="CPU count (bochs 1..8, default 1; qemu default 2)")
    r.add_argument("--firmware", default="bios", help="bios, uefi or both: bios,uefi")
    r.add_argument("--boot", choices=("kernel", "cdrom", "disk"), default="kernel",
                   help="qemu: -kernel ELF (BIOS, default), the ISO as a CD, or the ISO as a raw disk (USB stick)")
    r.add_argument("--opt", help="lhv_opt value, passed as given (e.g. 0x3e)")
    r.add_argument("--tests", help="tests=<glob>[,<glob>...], leading - excludes")
    r.add_argument("--inject", help="inject=<glob>[,<glob>...]: arm the negative controls of the selected scenarios it matches")
    r.add_argument("--cmdline", help="extra text for the image command line, verbatim")
    r.add_argument("--repeat", type=int, help="repeat=N: the selected scenarios N times in one boot")
    r.add_argument("--repeat-ms", type=int, help="repeat_ms=T: rounds until T ms of the image's time have passed")
    r.add_argument("--repeat-until-fail", action="store_true",
                   help="repeat_until=fail: stop after the first round with a BAD/ERROR/TIMEOUT")
    r.add_argument("--noise", help="noise=nmi,ipi: an AP fires NMIs and/or IPIs at the BSP meanwhile")
    r.add_argument("--seed", help="seed=: the noise schedule's seed (printed as LHV SEED)")
    r.add_argument("--mouse-on", help="qemu: once the serial log shows this text, move the mouse through "
                   "the QMP monitor every 50 ms until RESULT (e.g. 'waiting for mouse packets')")
    r.add_argument("--timeout", type=float, help="wall-clock limit per run in seconds")
    r.add_argument("--out", help="run directory (kept logs); default images/runs/<stamp>-<label>")
    r.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    r.add_argument("--json", help="write the JSON report here")
    r.add_argument("--junit", help="write the JUnit XML report here")
    r.add_argument("--iso", help="use this ISO instead of images/lhv-<arch>.iso")
    r.add_argument("--elf", help="use this ELF instead of images/lhv-<arch>.elf")
    r.add_argument("--font", help="font for framebuffer decoding (default images/font8x16.bin)")
    r.add_argument("--list", action="store_true", help="list scenarios from the ELF registry")
    # Laptop firmware imitated under QEMU (harness/tests/test_firmware_matrix.py).
    r.add_argument("--memory", help="qemu: -m (default 256), e.g. 6G")
    r.add_argument("--smp", help="qemu: -smp topology, e.g. 64,sockets=4,cores=20,maxcpus=80 (give --cpus too)")
    r.add_argument("--no-serial", action="store_true",
                   help="qemu: no serial port (-serial none): the run is judged from the final screen's QR code")
    r.add_argument("--qemu-args", help="qemu: more arguments, e.g. '-machine pit=off,hpet=off' or "
                   "'-vga none -device bochs-display,xres=2560,yres=1600'")
    r.set_defaults(func=cmd_run)

    j = sub.add_parser("judge", help="judge serial logs captured elsewhere")
    j.add_argument("serial", nargs="*")
    j.add_argument("--photo", action="append",
                   help="a picture of the final screen: its QR code is decoded (zbar) and judged")
    j.add_argument("--arch", help="default: from the banner")
    j.add_argument("--elf", help="registry source (default images/lhv-<arch>.elf when present)")
    j.add_argument("--target", default="judge", help="target name for known bugs and reports")
    j.add_argument("--target-version", help="target version for known bugs")
    j.add_argument("--cpu-model")
    j.add_argument("--tests", help="the tests= the image was given (for missing scenarios)")
    j.add_argument("--screen", help="screen dump to check: VGA text (4000 bytes) or .ppm")
    j.add_argument("--screen-kind", choices=("vga", "ppm"))
    j.add_argument("--font")
    j.add_argument("--json")
    j.add_argument("--junit")
    j.set_defaults(func=cmd_judge)

    c = sub.add_parser("compare", help="side-by-side table from JSON reports")
    c.add_argument("results", nargs="+")
    c.set_defaults(func=cmd_compare)

    ls = sub.add_parser("list", help="list scenarios and options from the ELF registry")
    ls.add_argument("--arch")
    ls.add_argument("--elf")
    ls.set_defaults(func=cmd_list)

    k = sub.add_parser("kvm-probe", help="say whether qemu-kvm can run VMX here, and why not")
    k.set_defaults(func=cmd_kvm_probe)

    b = sub.add_parser("bundle", help="pack a run directory into one archive a maintainer can act on")
    b.add_argument("rundir", help="a run directory (printed by `run`; holds serial.log, run.json)")
    b.add_argument("--out", help="archive path (default <rundir>.tar.gz)")
    b.set_defaults(func=cmd_bundle)

    bn = sub.add_parser("bench", help="rounds per minute in one boot (repeat=) against a reboot per round")
    bn.add_argument("--arch", default="amd64,i386")
    bn.add_argument("--cpu-model", default="tigerlake")
    bn.add_argument("--cpus", type=int, default=2)
    bn.add_argument("--tests", default=None, help="default: the EPT/TLB family")
    bn.add_argument("--rounds", type=int, default=30)
    bn.add_argument("--json", help="write the figures here")
    bn.set_defaults(func=cmd_bench)
    lv = sub.add_parser("lava", help="write LAVA job definitions (qemu, and an x86 lab template)")
    lv.add_argument("--arch", default="amd64")
    lv.add_argument("--cpu-model", help="qemu job: QEMU's -cpu (default max)")
    lv.add_argument("--cpus", type=int, default=2)
    lv.add_argument("--opt")
    lv.add_argument("--tests")
    lv.add_argument("--inject")
    lv.add_argument("--cmdline")
    lv.add_argument("--timeout", type=float, help="seconds for the test action (default: from the budgets)")
    lv.add_argument("--elf", help="the ELF the qemu job deploys (default images/lhv-<arch>.elf)")
    lv.add_argument("--kernel-url", help="lab job: where the lab fetches the ELF (http(s)://...)")
    lv.add_argument("--device-type", default="x86", help="lab job: the lab's device type (default x86)")
    lv.add_argument("--lab-boot", choices=("ipxe", "grub"), default="ipxe",
                    help="lab job: iPXE (default) or GRUB loads the multiboot ELF")
    lv.add_argument("--out", default="images/lava", help="folder for the job files")
    lv.set_defaults(func=cmd_lava)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
