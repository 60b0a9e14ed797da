#!/bin/sh
# mkiso.sh ARCH ELF OUT.iso "EXTRA CMDLINE"
# Hybrid GRUB ISO (BIOS and UEFI; CD or USB stick). With an empty command line it carries the
# full menu: the default entry runs everything, the others are presets for people at a laptop.
# With a command line it has that single entry and no menu delay (what the harness boots).
set -eu
arch=$1 elf=$2 out=$3 cmdline=$4
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/boot/grub"
cp "$elf" "$root/boot/lhv.elf"
cfg="$root/boot/grub/grub.cfg"
{
    echo 'if [ "$grub_platform" = "pc" ]; then set gfxpayload=text; fi'
    echo 'set default=0'
    if [ -n "$cmdline" ]; then
        echo 'set timeout=0'
        echo "menuentry \"LHV $arch: $cmdline\" { multiboot2 /boot/lhv.elf $cmdline; boot; }"
    else
        echo 'set timeout=3'
        echo "menuentry \"LHV $arch: every scenario this CPU can run (default options)\" { multiboot2 /boot/lhv.elf; boot; }"
        echo "menuentry \"LHV $arch: KVM bug 216212 reproducer (pae_cr3_unmapped, lhv_opt=0x24)\" { multiboot2 /boot/lhv.elf lhv_opt=0x24 tests=pae_cr3_unmapped; boot; }"
        echo "menuentry \"LHV $arch: EPT scenarios (lhv_opt=0x24)\" { multiboot2 /boot/lhv.elf lhv_opt=0x24; boot; }"
        echo "menuentry \"LHV $arch: everything with VPID (lhv_opt=0xb5)\" { multiboot2 /boot/lhv.elf lhv_opt=0xb5; boot; }"
        echo "menuentry \"LHV $arch: everything with 2 MiB EPT pages (lhv_opt=0x1a5)\" { multiboot2 /boot/lhv.elf lhv_opt=0x1a5; boot; }"
    fi
} > "$cfg"
mkdir -p "$(dirname "$out")"
# Only the modules the menu needs: smaller image, faster boot under Bochs.
grub-mkrescue -o "$out" \
    --install-modules="multiboot2 normal configfile test echo iso9660 part_msdos part_gpt all_video gfxterm" \
    --fonts= --locales= --themes= "$root" >/dev/null 2>"$root.log" || { cat "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
