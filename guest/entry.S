/* guest_trampoline: first instruction of every C guest. Calls the function in RSI/ESI with the
 * argument in RDI/EDI, then reports the return value with GUEST_CALL_DONE (guest.h). */
#define GUEST_CALL_DONE 0x10
    .text
    .global guest_trampoline
#ifdef __x86_64__
guest_trampoline:
    call *%rsi
    mov %rax, %rbx
    mov $GUEST_CALL_DONE, %eax
    vmcall
    ud2
#else
guest_trampoline:
    push %edi
    call *%esi
    add $4, %esp
    mov %eax, %ebx
    mov $GUEST_CALL_DONE, %eax
    vmcall
    ud2
#endif
