/* Constants shared by assembly and C (no C declarations here). */
#ifndef LHV_BOOT_DEFS_H
#define LHV_BOOT_DEFS_H
#define SEL_CODE32 0x08
#define SEL_DATA 0x10
#define SEL_CODE64 0x18
#define CPU_STACK_SIZE 16384
#define AP_TRAMPOLINE_ADDR 0x8000
#define VECTOR_USER_RETURN 0x42 /* INT n that ends a CPL-3 trip (arch/user.c) */
#endif
