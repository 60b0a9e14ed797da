/*
 * 32-bit entry from a multiboot loader (protected mode, paging off, EAX = magic, EBX = info).
 * Builds the identity map of the low 4 GiB with 2 MiB pages, turns on PAE paging, and on amd64
 * goes on to long mode. The AP trampoline at the end reuses the same tables and GDT.
 */
#include "arch/boot_defs.h"

    .section .text.boot, "ax"
    .code32
    .global lhv_entry
lhv_entry:
    cli
    cld
    mov %eax, boot_magic
    mov %ebx, boot_info
    mov $(g_cpu_stacks + CPU_STACK_SIZE), %esp
    lgdt boot_gdt_ptr
    ljmp $SEL_CODE32, $1f
1:  mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    call build_identity_map
    call enable_paging
#ifdef __x86_64__
    ljmp $SEL_CODE64, $long_entry
#else
    push boot_info
    push boot_magic
    call lhv_main
    jmp halt_loop
#endif

/* 2048 PDEs of 2 MiB cover 4 GiB; the PDPT points at the four PDs, the PML4 at the PDPT. */
build_identity_map:
    mov $boot_pd, %edi
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax          /* present, writable, 2 MiB page */
    mov %eax, (%edi, %ecx, 8)
    movl $0, 4(%edi, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b
    xor %ecx, %ecx
3:  mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
#ifdef __x86_64__
    or $0x3, %eax           /* long-mode PDPTE: present, writable */
#else
    or $0x1, %eax           /* PAE PDPTE: only the present bit is allowed */
#endif
    mov %eax, boot_pdpt(, %ecx, 8)
    movl $0, boot_pdpt+4(, %ecx, 8)
    inc %ecx
    cmp $4, %ecx
    jne 3b
#ifdef __x86_64__
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    movl $0, boot_pml4+4
#endif
    ret

/* Shared by the BSP and the APs: PAE on, CR3, (LME), paging on. */
    .global enable_paging
enable_paging:
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_page_root, %eax
    mov %eax, %cr3
#ifdef __x86_64__
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
#endif
    mov %cr0, %eax
    or $0x80010020, %eax    /* PG, WP, NE */
    mov %eax, %cr0
    ret

#ifdef __x86_64__
    .code64
long_entry:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $(g_cpu_stacks + CPU_STACK_SIZE), %rsp
    mov boot_magic(%rip), %edi
    mov boot_info(%rip), %esi
    call lhv_main
    jmp halt_loop
#endif

halt_loop:
    cli
    hlt
    jmp halt_loop

/* AP entry after the trampoline has reached 32-bit protected mode. */
    .code32
    .global ap_entry32
ap_entry32:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov ap_boot_stack, %esp
    call enable_paging
#ifdef __x86_64__
    ljmp $SEL_CODE64, $ap_entry64
    .code64
ap_entry64:
    mov ap_boot_stack(%rip), %rsp
    mov ap_boot_cpu(%rip), %edi
    call ap_main
#else
    push ap_boot_cpu
    call ap_main
#endif
    jmp halt_loop

/* Real-mode trampoline, copied to AP_TRAMPOLINE_ADDR; the SIPI vector points at it. */
    .code16
    .global ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl AP_TRAMPOLINE_ADDR + (ap_tramp_gdt_ptr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $SEL_CODE32, $ap_entry32
    .align 8
ap_tramp_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
ap_trampoline_end:

    .section .rodata
    .align 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* SEL_CODE32 */
    .quad 0x00cf92000000ffff    /* SEL_DATA */
    .quad 0x00af9a000000ffff    /* SEL_CODE64 */
boot_gdt_end:
    .align 8
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .align 4096
    .global boot_page_root, boot_pd, boot_pdpt
boot_pd:
    .skip 4 * 4096
boot_pdpt:
    .skip 4096
#ifdef __x86_64__
boot_pml4:
    .skip 4096
    .set boot_page_root, boot_pml4
#else
    .set boot_page_root, boot_pdpt
#endif
    .align 8
    .global boot_magic, boot_info, ap_boot_stack, ap_boot_cpu
boot_magic: .long 0
boot_info:  .long 0
ap_boot_stack: .quad 0
ap_boot_cpu: .long 0
