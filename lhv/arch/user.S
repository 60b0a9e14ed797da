/* The way into CPL 3 and the ways back (arch/user.c): IRET to the user code; INT
 * VECTOR_USER_RETURN, #GP or #UD return to user_mode_enter's caller on the kernel stack it saved.
 * Each exit stores vector, error code, RIP and CS of the frame (and EAX for the INT) in
 * g_user_trip: struct user_trip { vector, error, ip, cs, ax }. */
#include "arch/boot_defs.h"

    .text
#ifdef __x86_64__
#define W 8
    .global user_mode_enter
/* rdi = entry, rsi = user stack, rdx = CS, rcx = SS */
user_mode_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    pushfq
    mov %rsp, g_user_saved_sp(%rip)
    push %rcx
    push %rsi
    pushfq
    orq $0x200, (%rsp)          /* IF=1 at CPL 3 (LHV_OPT 0x40 is refused with 0x2) */
    push %rdx
    push %rdi
    iretq

    .global user_return_stub, user_fault_gp, user_fault_ud
user_return_stub:
    mov %rax, g_user_trip+4*W(%rip)
    movq $VECTOR_USER_RETURN, g_user_trip(%rip)
    jmp 1f
user_fault_gp:
    movq $13, g_user_trip(%rip)
    popq g_user_trip+W(%rip)
    jmp 1f
user_fault_ud:
    movq $6, g_user_trip(%rip)
1:  mov (%rsp), %rax
    mov %rax, g_user_trip+2*W(%rip)
    mov W(%rsp), %rax
    mov %rax, g_user_trip+3*W(%rip)
    mov g_user_saved_sp(%rip), %rsp
    mov $SEL_DATA, %ax          /* an interrupt from CPL 3 left a null SS */
    mov %ax, %ss
    popfq
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
#else
#define W 4
    .global user_mode_enter
/* cdecl: entry, user stack, CS, SS */
user_mode_enter:
    push %ebp
    push %ebx
    push %esi
    push %edi
    pushf
    mov %esp, g_user_saved_sp
    mov 36(%esp), %eax          /* DS and ES too: IRET to CPL 3 would null DPL-0 data segments */
    mov %ax, %ds
    mov %ax, %es
    push 36(%esp)               /* SS (each push moves the arguments 4 bytes further) */
    push 32(%esp)               /* user ESP */
    pushf
    orl $0x200, (%esp)
    push 44(%esp)               /* CS */
    push 40(%esp)               /* EIP */
    iret

    .global user_return_stub, user_fault_gp, user_fault_ud
user_return_stub:
    mov %eax, g_user_trip+4*W
    movl $VECTOR_USER_RETURN, g_user_trip
    jmp 1f
user_fault_gp:
    movl $13, g_user_trip
    popl g_user_trip+W
    jmp 1f
user_fault_ud:
    movl $6, g_user_trip
1:  mov (%esp), %eax
    mov %eax, g_user_trip+2*W
    mov W(%esp), %eax
    mov %eax, g_user_trip+3*W
    mov g_user_saved_sp, %esp
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    popf
    pop %edi
    pop %esi
    pop %ebx
    pop %ebp
    ret
#endif
