/* One stub per vector: push a dummy error code where the CPU pushes none, then the vector,
 * and join the common path that builds a struct trap_frame and calls trap_dispatch(). */
#include "arch/vector_stubs.inc"
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
    add $16, %rsp
    iretq
#else
isr_common:
    pusha
    cld
    push %esp
    call trap_dispatch
    add $4, %esp
    popa
    add $8, %esp
    iret
#endif

    .section .rodata
    .align 8
    .global isr_stub_table
isr_stub_table:
    ALL_VECTOR_STUB_ADDRESSES isr_stub_
