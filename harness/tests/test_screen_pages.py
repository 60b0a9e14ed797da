"""The final screen's table pages (lhv/console/screen.c `screen_final`): rows that do not fit on
the final page come first, on pages titled "LHV results, page k/n", each for page_ms; then the
final page (large verdict, RESULT, SUMMARY, the failures first, "... and N more", QR code) stays.

Under QEMU TCG every scenario SKIPs (one grouped row and its hint), so self-tests supply the rows:
ten that end as ERROR (damage_*, l1_fault) and one GOOD (nmi) make 13 rows, of which the 80x25
VGA text final page holds 10 and a count. The screen is read through QEMU's monitor (pmemsave of
0xb8000) while the pages are drawn: after the RESULT line on serial, before QEMU's end (LHV waits
5 s under QEMU before isa-debug-exit, which DirectQemu does not have: the last page stays)."""

import re
import time

from harness import screen as S

from .conftest import DirectQemu, need_images

SELFTESTS = ("selftest=damage_cr0,damage_cr3,damage_cr4,damage_efer,damage_gdtr,damage_idtr,damage_tr,"
             "damage_if,damage_timer,l1_fault,nmi")
RE_TEST = re.compile(r"^TEST ([a-z0-9_]+): ([A-Z]+)", re.M)
RE_TITLE = re.compile(r"LHV results, page (\d+)/(\d+)")


def _read_screen(qemu, path):
    qemu.hmp('pmemsave 0xb8000 4000 "%s"' % path)
    for _ in range(20):
        if path.exists() and path.stat().st_size == 4000:
            return S.decode_vga_text(path.read_bytes())
        time.sleep(0.05)
    return None


def _boot_and_read(tmp_path, cmdline, seconds, settle=0.0):
    """Screens read every ~0.3 s for `seconds` after the RESULT line (and `settle` more), and the
    serial log. The screen is blank for a moment while the final page's QR code is encoded."""
    qemu = DirectQemu(tmp_path, "amd64", cmdline)
    screens = []
    try:
        assert qemu.wait_serial("LHV RESULT:", 60), "no RESULT line"
        time.sleep(settle)
        end = time.time() + seconds
        while time.time() < end:
            rows = _read_screen(qemu, tmp_path / ("vga%d.bin" % len(screens)))
            # Left out: blank screens, and the log (whole, or half cleared while the end's first
            # screen is drawn over it): its TEST lines never stand on a table or final page.
            if rows and any(rows) and not any(row.startswith("TEST ") for row in rows):
                screens.append(rows)
    finally:
        qemu.close()
    return screens, qemu.serial.read_text(errors="replace")


def _title(rows):
    m = RE_TITLE.search(rows[0])
    return (int(m.group(1)), int(m.group(2))) if m else None


def _check_final(rows, serial):
    result = re.search(r"^LHV RESULT: (\w+)", serial, re.M).group(1)
    ok, why, facts = S.check(rows, result, dict(RE_TEST.findall(serial)))
    assert ok, "%s\n%s" % (why, "\n".join(rows))
    return facts


def test_table_pages_come_first_and_the_final_page_stays(tmp_path):
    need_images(iso=False)
    screens, serial = _boot_and_read(tmp_path, SELFTESTS + " page_ms=3000", 4.5)
    assert screens, "no screen read"
    titles = [_title(rows) for rows in screens]
    assert titles[0] == (1, 2), "first screen is not table page 1/2:\n" + "\n".join(screens[0])
    table = [rows for rows in screens if _title(rows) == (1, 2)][-1]  # drawn in full by then
    assert not any("LHV RESULT:" in row for row in table), table
    assert any(re.match(r"\d+ skipped: VMX not supported", row) for row in table), table
    assert any(row.startswith("GOOD selftest_nmi") for row in table), table
    final = screens[-1]
    assert titles[-1] == (2, 2), "last screen is not the final page 2/2:\n" + "\n".join(final)
    assert titles == sorted(titles), titles  # page 1 first, then the final page, never back
    facts = _check_final(final, serial)
    assert facts["more"] == 3, final
    assert any("(on page 1 and serial)" in row for row in final), final


def test_emulator_default_shows_the_final_page_at_once(tmp_path):
    need_images(iso=False)
    screens, serial = _boot_and_read(tmp_path, SELFTESTS, 0.5, settle=0.5)
    assert screens, "no screen read"
    for rows in screens:
        assert _title(rows) is None, "a table page under QEMU without page_ms=:\n" + "\n".join(rows)
    final = screens[-1]  # an earlier read may catch the page while it is being drawn
    facts = _check_final(final, serial)
    assert facts["more"] == 3 and any("(see serial log)" in row for row in final), final


def test_malformed_page_ms_stops_the_run(tmp_path):
    need_images(iso=False)
    qemu = DirectQemu(tmp_path, "amd64", "page_ms=4s")
    try:
        assert qemu.wait_serial("LHV RESULT:", 30), "no RESULT line"
    finally:
        qemu.close()
    serial = qemu.serial.read_text(errors="replace")
    assert "LHV ERROR: malformed page_ms= value '4s'" in serial and "LHV RESULT: ERROR" in serial, serial
