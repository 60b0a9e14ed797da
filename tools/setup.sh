#!/bin/sh
# Installs everything LHV needs on a Debian 12 machine (the packages are listed in
# tools/apt-packages.txt and harness/apt-packages.txt). Uses sudo when not run as root.
# --lava also installs Debian's LAVA (harness/apt-packages-lava.txt) for the lava target;
# CI passes it, the README's commands do not (it is large and only that target needs it).
# Then, as the calling user, `make qemu-backports`: bookworm-backports' QEMU unpacked into
# .cache/qemu-backports (installed nowhere) for the x2APIC hand-off cases of the firmware matrix.
set -eu
cd "$(dirname "$0")/.."
SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v make >/dev/null 2>&1; then
    $SUDO apt-get update
    $SUDO apt-get install -y make
fi
$SUDO make deps
if [ "${1:-}" = --lava ]; then $SUDO make lava-deps; fi
make qemu-backports
