/*
 * Boot headers. GRUB reads the multiboot 2 header (it gives us the memory map, the ACPI RSDP,
 * the command line, and the framebuffer under UEFI); QEMU's -kernel only knows multiboot 1, and
 * refuses ELF64 unless the header carries load addresses ("a.out kludge"), so the multiboot 1
 * header carries them for both subarchs.
 */
#define MB1_MAGIC 0x1badb002
#define MB1_FLAGS 0x00010003 /* page-align modules, memory info, load addresses in header */
#define MB2_MAGIC 0xe85250d6

    .section .multiboot, "a"
    .align 4
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long -(MB1_MAGIC + MB1_FLAGS)
    .long mb1_header        /* header_addr */
    .long lhv_image_start   /* load_addr */
    .long lhv_load_end      /* load_end_addr */
    .long lhv_bss_end       /* bss_end_addr */
    .long lhv_entry         /* entry_addr */

    .align 8
mb2_header:
    .long MB2_MAGIC
    .long 0                 /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + (mb2_header_end - mb2_header))

    /* Information request (optional: a loader that lacks a tag still boots us). */
    .align 8
mb2_info_request:
    .short 1, 1
    .long mb2_info_request_end - mb2_info_request
    .long 1                 /* command line */
    .long 6                 /* memory map */
    .long 8                 /* framebuffer */
    .long 14                /* ACPI 1.0 RSDP */
    .long 15                /* ACPI 2.0 RSDP */
mb2_info_request_end:

    .align 8
    .short 3, 0             /* entry address: the 32-bit entry, whatever the ELF class */
    .long 12
    .long lhv_entry

    .align 8
    .short 5, 1             /* framebuffer: no preference (text under BIOS, GOP under UEFI) */
    .long 20
    .long 0, 0, 0

    .align 8
    .short 0, 0
    .long 8
mb2_header_end:
