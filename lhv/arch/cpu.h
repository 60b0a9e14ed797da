/* Thin wrappers around single x86 instructions, for both subarchs. */
#ifndef LHV_ARCH_CPU_H
#define LHV_ARCH_CPU_H

#include <stdint.h>

#ifdef __x86_64__
#define LHV_ARCH_NAME "amd64"
#define LHV_SUBARCH_BIT 2u
#else
#define LHV_ARCH_NAME "i386"
#define LHV_SUBARCH_BIT 1u
#endif

#define CR0_PE (1u << 0)
#define CR0_NE (1u << 5)
#define CR0_WP (1u << 16)
#define CR0_PG (1u << 31)
#define CR4_PAE (1u << 5)
#define CR4_VMXE (1u << 13)
#define RFLAGS_IF (1u << 9)

#define MSR_IA32_FEATURE_CONTROL 0x3a
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MTRRCAP 0xfe
#define MSR_IA32_MTRR_PHYSBASE0 0x200
#define MSR_IA32_PAT 0x277
#define MSR_IA32_EFER 0xc0000080
#define MSR_IA32_STAR 0xc0000081
#define MSR_IA32_LSTAR 0xc0000082
#define MSR_IA32_FMASK 0xc0000084
#define MSR_IA32_KERNEL_GS_BASE 0xc0000102
#define EFER_LME (1u << 8)
#define EFER_LMA (1u << 10)
#define EFER_NXE (1u << 11)

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

struct cpuid_regs {
    uint32_t eax, ebx, ecx, edx;
};
static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_regs r;
    __asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
    return r;
}

#define DEFINE_CR_ACCESSORS(n)                                                     \
    static inline uintptr_t read_cr##n(void)                                       \
    {                                                                              \
        uintptr_t v;                                                               \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));                          \
        return v;                                                                  \
    }                                                                              \
    static inline void write_cr##n(uintptr_t v) { __asm__ volatile("mov %0, %%cr" #n ::"r"(v) : "memory"); }
DEFINE_CR_ACCESSORS(0)
DEFINE_CR_ACCESSORS(2)
DEFINE_CR_ACCESSORS(3)
DEFINE_CR_ACCESSORS(4)

static inline uintptr_t read_flags(void)
{
    uintptr_t f;
    __asm__ volatile("pushf; pop %0" : "=r"(f));
    return f;
}
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
__attribute__((noreturn)) static inline void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

struct desc_ptr {
    uint16_t limit;
    uintptr_t base;
} __attribute__((packed));

static inline struct desc_ptr read_gdtr(void)
{
    struct desc_ptr d;
    __asm__ volatile("sgdt %0" : "=m"(d));
    return d;
}
static inline struct desc_ptr read_idtr(void)
{
    struct desc_ptr d;
    __asm__ volatile("sidt %0" : "=m"(d));
    return d;
}
#define READ_SEG(name)                                      \
    static inline uint16_t read_##name(void)                \
    {                                                       \
        uint16_t v;                                         \
        __asm__ volatile("mov %%" #name ", %0" : "=rm"(v)); \
        return v;                                           \
    }
READ_SEG(cs)
READ_SEG(ss)
READ_SEG(ds)
READ_SEG(es)
READ_SEG(fs)
READ_SEG(gs)
static inline void write_gdtr(const struct desc_ptr *d) { __asm__ volatile("lgdt %0" ::"m"(*d) : "memory"); }
static inline void write_idtr(const struct desc_ptr *d) { __asm__ volatile("lidt %0" ::"m"(*d) : "memory"); }
static inline uint16_t read_tr(void)
{
    uint16_t v;
    __asm__ volatile("str %0" : "=rm"(v));
    return v;
}

#endif
