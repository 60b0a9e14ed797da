"""The screen shows that a run is alive: on a laptop without a serial port a hang and a slow
test must look different. While selftest=l1_hang keeps L1 busy (3 s budget), two reads of VGA
text memory must show the running scenario, a spinner per CPU and a clock that moves (the BSP's
timer interrupt draws that line)."""

import re

from .conftest import DirectQemu, need_images

SPINNER = "|/-\\"


def _status_row(path):
    data = open(path, "rb").read()
    return "".join(chr(data[(80 + c) * 2]) for c in range(80))


def test_heartbeat_moves_while_a_scenario_runs(tmp_path):
    need_images(iso=False)
    qemu = DirectQemu(tmp_path, "amd64", "selftest=l1_hang tests=vmx_lifecycle")
    try:
        assert qemu.wait_serial("TSC start"), "no banner"
        rows = []
        for i in range(8):  # the status row is first drawn within 100 ms of the scenario's start
            dump = tmp_path / ("vga%d.bin" % i)
            qemu.hmp('pmemsave 0xb8000 4000 "%s"' % dump)
            rows.append(_status_row(dump))
            if len(rows) >= 2 and "selftest_l1_hang" in rows[-2]:
                break
        rows = rows[-2:]
    finally:
        qemu.close()
    for row in rows:
        assert "selftest_l1_hang" in row, rows
        assert "cpu0" in row and "cpu1" in row, rows
    spinners = [row[row.index("cpu%d" % c) + 4] for row in rows for c in (0, 1)]
    assert all(ch in SPINNER for ch in spinners), rows
    uptime = [float(re.search(r"t= *(\d+\.\d)s", row).group(1)) for row in rows]
    assert uptime[1] > uptime[0], "the heartbeat did not move: %r" % rows
