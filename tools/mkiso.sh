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
    # UEFI needs multiboot 2 (memory map, ACPI, GOP framebuffer). Under BIOS, GRUB's multiboot 2
    # loader switches to a VBE graphics mode for the framebuffer tag (and then dies under Bochs),
    # so the BIOS path uses multiboot 1, which keeps VGA text.
    echo 'function lhv_boot { if [ "$grub_platform" = "efi" ]; then multiboot2 /boot/lhv.elf $1; else multiboot /boot/lhv.elf $1; fi; boot; }'
    echo 'insmod all_video'
    echo 'set default=0'
    if [ -n "$cmdline" ]; then
        echo 'set timeout=0'
        echo "menuentry \"LHV $arch: $cmdline\" { lhv_boot \"$cmdline\"; }"
    else
        echo 'set timeout=3'
        echo "menuentry \"LHV $arch: every scenario this CPU can run (default options)\" { lhv_boot \"\"; }"
        echo "menuentry \"LHV $arch: KVM bug 216212 reproducer (pae_cr3_unmapped, lhv_opt=0x24)\" { lhv_boot \"lhv_opt=0x24 tests=pae_cr3_unmapped\"; }"
        echo "menuentry \"LHV $arch: EPT scenarios (lhv_opt=0x24)\" { lhv_boot \"lhv_opt=0x24\"; }"
        echo "menuentry \"LHV $arch: everything with VPID (lhv_opt=0x4bd)\" { lhv_boot \"lhv_opt=0x4bd\"; }"
        echo "menuentry \"LHV $arch: everything with 2 MiB EPT pages (lhv_opt=0x5ad)\" { lhv_boot \"lhv_opt=0x5ad\"; }"
    fi
} > "$cfg"
mkdir -p "$(dirname "$out")"
# Only the modules the menu needs: smaller image, faster boot under Bochs.
grub-mkrescue -o "$out" \
    --install-modules="multiboot multiboot2 normal configfile test echo iso9660 part_msdos part_gpt part_acorn part_amiga part_apple part_bsd part_dfly part_dvh part_plan part_sun part_sunpc all_video" \
    --fonts= --locales= --themes= "$root" >/dev/null 2>"$root.log" || { cat "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
