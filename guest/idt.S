/*
 * Exception and interrupt handlers for L2: one stub per vector (the CPU pushes an error code for
 * some exceptions; the others push 0 in its place), then a common part that reports the event to
 * L1 with VMCALL GUEST_CALL_EVENT: EBX = vector, ECX = error code, EDX = the RIP in the frame.
 * L1 decides what comes next (it sets the guest RIP); the handler never returns.
 */
#define GUEST_CALL_EVENT 0x11
    .text
    .macro GUEST_STUB vec
    .align 16
guest_stub_\vec:
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    push $0
    .endif
    push $\vec
    jmp guest_event_common
    .endm
    .altmacro
    .macro GUEST_STUBS from, to
    GUEST_STUB %\from
    .if \to-\from
    GUEST_STUBS %(\from+1), \to
    .endif
    .endm
    GUEST_STUBS 0, 63
    GUEST_STUBS 64, 127
    GUEST_STUBS 128, 191
    GUEST_STUBS 192, 255

guest_event_common:
#ifdef __x86_64__
    pop %rbx
    pop %rcx
    mov (%rsp), %rdx
#else
    pop %ebx
    pop %ecx
    mov (%esp), %edx
#endif
    mov $GUEST_CALL_EVENT, %eax
    vmcall
    ud2

    .section .rodata
    .align 8
    .global guest_stub_table
guest_stub_table:
    .macro GUEST_STUB_ADDR vec
#ifdef __x86_64__
    .quad guest_stub_\vec
#else
    .long guest_stub_\vec
#endif
    .endm
    .macro GUEST_STUB_ADDRS from, to
    GUEST_STUB_ADDR %\from
    .if \to-\from
    GUEST_STUB_ADDRS %(\from+1), \to
    .endif
    .endm
    GUEST_STUB_ADDRS 0, 63
    GUEST_STUB_ADDRS 64, 127
    GUEST_STUB_ADDRS 128, 191
    GUEST_STUB_ADDRS 192, 255
