/*
 * Exception and interrupt handlers for L2: one stub per vector (the CPU pushes an error code for
 * some exceptions; the others push 0 in its place), then a common part that reports the event to
 * L1 with VMCALL GUEST_CALL_EVENT: EBX = vector, ECX = error code, EDX = the RIP in the frame.
 * L1 decides what comes next (it sets the guest RIP); the handler never returns.
 */
#define GUEST_CALL_EVENT 0x11
#include "arch/vector_stubs.inc"
    .text
    ALL_VECTOR_STUBS guest_stub_, guest_event_common

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
    ALL_VECTOR_STUB_ADDRESSES guest_stub_
