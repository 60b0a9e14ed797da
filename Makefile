# LHV: one source tree, two images (i386 and amd64), each as a multiboot ELF and a hybrid
# BIOS+UEFI GRUB ISO.
#
#   make            build images/lhv-{i386,amd64}.{elf,iso} and images/font8x16.bin
#   make run        build, boot the amd64 image under Bochs, print the verdict table
#   make test       the pytest suite (harness/tests), on both cores
#   make bench      exit_latency under Bochs: cycles per VM exit round trip, as figures; then
#                   rounds per minute of the EPT/TLB family with repeat= against a reboot per round
#   make deps       install the Debian packages all of this needs (apt-get; run as root)
#   make lava-deps  opt-in: Debian's LAVA (lava-dispatcher, lava-common) for the lava target; CI runs it
#   make qemu-backports  a QEMU with x2APIC under TCG (bookworm-backports' 10.x) unpacked into
#                   .cache/qemu-backports, not installed: the firmware matrix's x2APIC hand-off cases
#   make clean
#   make iso-custom ARCH=amd64 CMDLINE="lhv_opt=0x24" OUT=x.iso   an ISO of the built ELF whose entry passes CMDLINE

PYTHON ?= /usr/bin/python3
CC := gcc
ARCHES := i386 amd64
FONT_SRC := /usr/share/consolefonts/Lat15-VGA16.psf.gz

CFLAGS_COMMON := -std=c11 -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector \
	-fno-asynchronous-unwind-tables -mno-sse -mno-sse2 -mno-mmx -mno-80387 -mno-red-zone \
	-fno-builtin -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Ilhv -I. \
	-DFONT_FILE='"build/font8x16.bin"'
CFLAGS_i386 := -m32 -march=i686
CFLAGS_amd64 := -m64 -mcmodel=small
LDFLAGS := -nostdlib -static -no-pie -Wl,--no-warn-rwx-segments -Wl,-z,noexecstack -Wl,--build-id=none -Wl,-z,max-page-size=0x1000 -Wl,-T,lhv/lhv.ld

# Sources: the L1, the shared guest side, and the scenarios. Every tests/*.c is a scenario; link
# order is run order: the basic ones first, then any other file in name order, so adding a
# scenario is adding one file.
FIRST_TESTS := tests/vmx_lifecycle.c tests/msr_lists.c tests/ept_basic.c
TESTS := $(FIRST_TESTS) $(filter-out $(FIRST_TESTS),$(sort $(wildcard tests/*.c)))
SRCS := $(wildcard lhv/*.c lhv/*/*.c guest/*.c) $(wildcard lhv/*/*.S guest/*.S) $(TESTS)
HEADERS := $(wildcard lhv/*.h lhv/*/*.h lhv/*/*.inc guest/*.h)

.PHONY: all run test bench deps lava-deps qemu-backports clean iso-custom
all: $(foreach a,$(ARCHES),images/lhv-$(a).elf images/lhv-$(a).iso) images/font8x16.bin

build/font8x16.bin: tools/mkfont.py
	@mkdir -p build
	$(PYTHON) tools/mkfont.py $(FONT_SRC) $@

images/font8x16.bin: build/font8x16.bin
	@mkdir -p images
	cp $< $@

define arch_rules
OBJS_$(1) := $$(patsubst %,build/$(1)/%.o,$$(SRCS))
build/$(1)/%.c.o: %.c $$(HEADERS)
	@mkdir -p $$(dir $$@)
	@echo "  CC $(1) $$<"; $$(CC) $$(CFLAGS_COMMON) $$(CFLAGS_$(1)) -c $$< -o $$@
build/$(1)/%.S.o: %.S $$(HEADERS) build/font8x16.bin
	@mkdir -p $$(dir $$@)
	@echo "  CC $(1) $$<"; $$(CC) $$(CFLAGS_COMMON) $$(CFLAGS_$(1)) -c $$< -o $$@
images/lhv-$(1).elf: $$(OBJS_$(1)) lhv/lhv.ld
	@mkdir -p images
	@echo "  LD $$@"; $$(CC) $$(CFLAGS_$(1)) $$(LDFLAGS) $$(OBJS_$(1)) -lgcc -o $$@
images/lhv-$(1).iso: images/lhv-$(1).elf tools/mkiso.sh
	@echo "  ISO $$@"; tools/mkiso.sh $(1) $$< $$@ ""
endef
$(foreach a,$(ARCHES),$(eval $(call arch_rules,$(a))))

# From the ELF as it is (order-only): the harness builds these while tests run, and a test run
# must never relink the image under another test's feet. Run `make` first.
iso-custom: | images/lhv-$(ARCH).elf
	tools/mkiso.sh $(ARCH) images/lhv-$(ARCH).elf $(OUT) "$(CMDLINE)"

run: all
	$(PYTHON) -m harness run --target bochs --arch amd64

test: all
	$(PYTHON) -m pytest -n 2 harness/tests

bench: all
	$(PYTHON) -m harness run --target bochs --arch i386,amd64 --cpu-model corei7_skylake_x,tigerlake --tests exit_latency
	$(PYTHON) -m harness bench --arch amd64,i386 --cpu-model tigerlake --cpus 2 --rounds 30

deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $$(cat tools/apt-packages.txt $$(ls harness/apt-packages.txt 2>/dev/null))

# Opt-in (about 120 packages): only the lava target and its tests need it; `make deps` stays lean.
lava-deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$(cat harness/apt-packages-lava.txt)

# Debian 12's QEMU 7.2 has no x2APIC under TCG; tools/fetch_qemu_backports.py says why this is safe.
qemu-backports:
	$(PYTHON) tools/fetch_qemu_backports.py

clean:
	rm -rf build images
