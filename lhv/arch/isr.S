/* One stub per vector: push a dummy error code where the CPU pushes none, then the vector,
 * and join the common path that builds a struct trap_frame and calls trap_dispatch(). */
#include "arch/vector_stubs.inc"
#define NMI_NO_IRET_MARK 0x102 /* arch.h */
    .text
    ALL_VECTOR_STUBS isr_stub_, isr_common

#ifdef __x86_64__
isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    cld
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    call trap_dispatch
    mov %rbx, %rsp
    cmpq $NMI_NO_IRET_MARK, 15*8(%rsp) /* nmi_keep_blocked() marked the frame */
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    lea 16(%rsp), %rsp /* lea, not add: the flags of the cmp above are still needed */
    je nmi_return_no_iret
    iretq
#else
isr_common:
    pusha
    cld
    push %esp
    call trap_dispatch
    add $4, %esp
    cmpl $NMI_NO_IRET_MARK, 32(%esp) /* nmi_keep_blocked() marked the frame */
    popa
    lea 8(%esp), %esp
    je nmi_return_no_iret
    iret
#endif

/*
 * NMI blocking (SDM Vol. 3A 6.7.1): after an NMI is delivered, further NMIs stay blocked until
 * the next IRET. To study that blocking, an NMI handler must be able to return WITHOUT IRET and
 * L1 must be able to IRET on purpose.
 *
 * nmi_return_no_iret: jumped to with the stack pointer at the CPU's interrupt frame (RIP, CS,
 * RFLAGS[, RSP, SS]) and every general register as the interrupted code had it. It goes back to
 * the interrupted code at the same privilege level by POPF and RET, so NMIs stay blocked.
 */
    .text
    .global nmi_return_no_iret
nmi_return_no_iret:
#ifdef __x86_64__
    /* The frame holds the interrupted RSP (R). Build RCX, RFLAGS, RIP at T = R - 96, which lies
     * below the frame (the CPU pushed it at (R & ~15) - 40) and the two scratch slots below it;
     * "ret $72" then leaves RSP = T + 24 + 72 = R. There is no red zone (-mno-red-zone). */
    mov %rax, -8(%rsp)
    mov %rcx, -16(%rsp)
    mov 24(%rsp), %rcx
    sub $96, %rcx
    mov -16(%rsp), %rax
    mov %rax, (%rcx)
    mov 16(%rsp), %rax
    mov %rax, 8(%rcx)
    mov (%rsp), %rax
    mov %rax, 16(%rcx)
    mov -8(%rsp), %rax
    mov %rcx, %rsp
    pop %rcx
    popfq
    ret $72
#else
    /* Same privilege level: the frame is EIP, CS, EFLAGS on the interrupted stack. Rewrite it in
     * place as (unused), EFLAGS, EIP, then POPF and RET end exactly where the frame ended. */
    push %eax
    mov 4(%esp), %eax
    xchg %eax, 12(%esp)
    mov %eax, 8(%esp)
    pop %eax
    lea 4(%esp), %esp
    popf
    ret
#endif

/* nmi_iret: an IRET to nmi_iret_done, on the same stack and privilege level: it ends NMI blocking
 * (in L1; in L2 as the SDM 26.3 rules for the NMI controls say), and an NMI that was pending is
 * delivered right after it. Clobbers only what a C call may (RAX, RCX). */
    .global nmi_iret, nmi_iret_done
nmi_iret:
#ifdef __x86_64__
    mov %rsp, %rax
    mov %ss, %ecx
    push %rcx
    push %rax
    pushfq
    mov %cs, %ecx
    push %rcx
    lea nmi_iret_done(%rip), %rcx
    push %rcx
    iretq
#else
    pushf
    push %cs
    push $nmi_iret_done
    iret
#endif
nmi_iret_done:
    ret

/* nmi_guest_entry: an NMI handler for L2's own IDT (guest_idt_set_gate(2, ...)): counts the NMI
 * in g_nmi_guest_count and returns without IRET, so L2 stays NMI-blocked (or virtual-NMI blocked)
 * until it executes IRET itself. Touches no general register; the flags come back from the frame. */
    .global nmi_guest_entry
nmi_guest_entry:
#ifdef __x86_64__
    lock incl g_nmi_guest_count(%rip)
#else
    lock incl g_nmi_guest_count
#endif
    jmp nmi_return_no_iret

    .section .rodata
    .align 8
    .global isr_stub_table
isr_stub_table:
    ALL_VECTOR_STUB_ADDRESSES isr_stub_
