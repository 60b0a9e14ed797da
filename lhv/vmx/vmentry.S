/*
 * int vmx_enter(struct guest_regs *regs, int launched)
 * Loads the guest GPRs and executes VMLAUNCH or VMRESUME. Returns 0 after a VM exit (with the
 * guest GPRs saved back into *regs), 1 for VMfailInvalid, 2 for VMfailValid. HOST_RSP is the
 * stack pointer right here, with the regs pointer on top, so the exit path finds it.
 */
#define HOST_RSP 0x6c14
#define HOST_RIP 0x6c16
    .text
    .global vmx_enter
#ifdef __x86_64__
vmx_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    mov $HOST_RSP, %eax
    vmwrite %rsp, %rax
    lea vmx_exit_point(%rip), %rdx
    mov $HOST_RIP, %eax
    vmwrite %rdx, %rax
    cmp $0, %esi
    mov 0(%rdi), %rax
    mov 8(%rdi), %rbx
    mov 16(%rdi), %rcx
    mov 24(%rdi), %rdx
    mov 32(%rdi), %rsi
    mov 48(%rdi), %rbp
    mov 56(%rdi), %r8
    mov 64(%rdi), %r9
    mov 72(%rdi), %r10
    mov 80(%rdi), %r11
    mov 88(%rdi), %r12
    mov 96(%rdi), %r13
    mov 104(%rdi), %r14
    mov 112(%rdi), %r15
    mov 40(%rdi), %rdi
    jne 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  /* VM entry failed: CF=1 VMfailInvalid, ZF=1 VMfailValid. */
    mov $1, %eax
    jc 3f
    mov $2, %eax
3:  pop %rdi
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

vmx_exit_point:
    xchg %rdi, (%rsp)       /* rdi = regs, guest rdi kept on the stack */
    mov %rax, 0(%rdi)
    mov %rbx, 8(%rdi)
    mov %rcx, 16(%rdi)
    mov %rdx, 24(%rdi)
    mov %rsi, 32(%rdi)
    mov %rbp, 48(%rdi)
    mov %r8, 56(%rdi)
    mov %r9, 64(%rdi)
    mov %r10, 72(%rdi)
    mov %r11, 80(%rdi)
    mov %r12, 88(%rdi)
    mov %r13, 96(%rdi)
    mov %r14, 104(%rdi)
    mov %r15, 112(%rdi)
    pop %rax
    mov %rax, 40(%rdi)
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    xor %eax, %eax
    ret
#else
vmx_enter:
    push %ebp
    push %ebx
    push %esi
    push %edi
    mov 20(%esp), %edi      /* regs */
    mov 24(%esp), %esi      /* launched */
    push %edi
    mov $HOST_RSP, %eax
    vmwrite %esp, %eax
    mov $vmx_exit_point, %edx
    mov $HOST_RIP, %eax
    vmwrite %edx, %eax
    cmp $0, %esi
    mov 0(%edi), %eax
    mov 4(%edi), %ebx
    mov 8(%edi), %ecx
    mov 12(%edi), %edx
    mov 16(%edi), %esi
    mov 24(%edi), %ebp
    mov 20(%edi), %edi
    jne 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  mov $1, %eax
    jc 3f
    mov $2, %eax
3:  pop %edi
    pop %edi
    pop %esi
    pop %ebx
    pop %ebp
    ret

vmx_exit_point:
    xchg %edi, (%esp)
    mov %eax, 0(%edi)
    mov %ebx, 4(%edi)
    mov %ecx, 8(%edi)
    mov %edx, 12(%edi)
    mov %esi, 16(%edi)
    mov %ebp, 24(%edi)
    pop %eax
    mov %eax, 20(%edi)
    pop %edi
    pop %esi
    pop %ebx
    pop %ebp
    xor %eax, %eax
    ret
#endif
