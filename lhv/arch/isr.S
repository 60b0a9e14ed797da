/* One stub per vector: push a dummy error code where the CPU pushes none, then the vector,
 * and join the common path that builds a struct trap_frame and calls trap_dispatch(). */
    .text
    .macro ISR_STUB vec
    .align 16
isr_stub_\vec:
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    push $0
    .endif
    push $\vec
    jmp isr_common
    .endm

    .altmacro
    .macro ISR_STUBS from, to
    ISR_STUB %\from
    .if \to-\from
    ISR_STUBS %(\from+1), \to
    .endif
    .endm
    ISR_STUBS 0, 63
    ISR_STUBS 64, 127
    ISR_STUBS 128, 191
    ISR_STUBS 192, 255

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
#define PTR .quad
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
#define PTR .long
#endif

    .section .rodata
    .align 8
    .global isr_stub_table
isr_stub_table:
    .macro STUB_ADDR vec
    PTR isr_stub_\vec
    .endm
    .macro STUB_ADDRS from, to
    STUB_ADDR %\from
    .if \to-\from
    STUB_ADDRS %(\from+1), \to
    .endif
    .endm
    STUB_ADDRS 0, 63
    STUB_ADDRS 64, 127
    STUB_ADDRS 128, 191
    STUB_ADDRS 192, 255
