#!/bin/sh
# tools/build-bochs.sh SRC_DIR PREFIX [JOBS]
#
# Builds Bochs from a source tree you give it (a release tarball, or a checkout of
# github.com/bochs-emu/Bochs: its top directory or its bochs/ directory) into PREFIX, with
# what the LHV harness needs: x86-64, SMP, VMX with EPT (level 2), AVX/EVEX for the newer
# CPU models, the internal debugger (the harness stops Bochs at the image's magic breakpoint
# with an -rc script to save the screen), port 0xe9/iodebug, RFB display and no plugins.
# Then: python3 -m harness run --bochs PREFIX/bin/bochs ...
# The logs stay in SRC_DIR: configure.log, make.log, install.log.
set -eu

usage() {
    echo "usage: $0 SRC_DIR PREFIX [JOBS]   (JOBS: make -j, default: the number of CPUs)" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
src=$1
prefix=$2
jobs=${3:-$(nproc 2>/dev/null || echo 2)}

if [ -f "$src/bochs/configure" ]; then src=$src/bochs; fi
if [ ! -f "$src/configure" ] || [ ! -f "$src/cpu/vmx.cc" ]; then
    echo "$0: $src is not a Bochs source tree (no configure and cpu/vmx.cc)" >&2
    exit 2
fi
src=$(cd "$src" && pwd)
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

step() {    # step NAME LOG COMMAND...: run it, and on failure show the end of its log
    name=$1 log=$2
    shift 2
    echo "$name ..."
    if ! "$@" > "$src/$log" 2>&1; then
        tail -n 25 "$src/$log" >&2
        echo "$0: $name failed (see $src/$log)" >&2
        exit 1
    fi
}

start=$(date +%s)
cd "$src"
step configure configure.log ./configure --prefix="$prefix" \
    --enable-x86-64 --enable-smp --enable-cpu-level=6 --enable-vmx=2 --enable-avx --enable-evex \
    --enable-debugger --disable-debugger-gui --enable-iodebug --enable-pci \
    --enable-all-optimizations --disable-plugins --with-rfb --with-nogui --without-x11
# The tree ships the generated debugger lexer; make would regenerate it with flex when the
# timestamps of an unpacked tree make lexer.l look newer.
if [ -f bx_debug/lexer.c ]; then touch bx_debug/lexer.c; fi
step "make -j$jobs" make.log make -j"$jobs"
step "make install" install.log make install
seconds=$(( $(date +%s) - start ))

bochs=$prefix/bin/bochs
version=$("$bochs" --help 2>&1 | sed -n 's/.*Bochs x86 Emulator \([^ ]*\).*/\1/p' | head -n 1)
echo "Bochs ${version:-(version unknown)} built in $seconds s ($(( seconds / 60 )) min $(( seconds % 60 )) s): $bochs"
models=$("$bochs" --help cpu 2>&1 | awk 'on && /^$/ && n { exit }
    on && /^[a-z0-9_]+$/ { printf "%s ", $0; n = 1 }
    /^Supported CPU models:/ { on = 1 }')
echo "CPU models: $models"
echo "Run LHV on it: /usr/bin/python3 -m harness run --bochs $bochs --arch amd64 --cpu-model tigerlake --cpus 2"
