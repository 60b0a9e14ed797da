/* GDT with one TSS per CPU (VMX needs a usable TR in the host state), and the IDT. */
#include "arch/arch.h"

#ifdef __x86_64__
#define TSS_DESC_SLOTS 2
struct tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));
struct idt_gate {
    uint16_t off0, sel;
    uint8_t ist, type;
    uint16_t off1;
    uint32_t off2, reserved;
} __attribute__((packed));
#else
#define TSS_DESC_SLOTS 1
struct tss {
    uint32_t fields[25];
    uint16_t trap, iomap_base;
} __attribute__((packed));
struct idt_gate {
    uint16_t off0, sel;
    uint8_t zero, type;
    uint16_t off1;
} __attribute__((packed));
#endif

#define GDT_FIXED 4
_Static_assert(GDT_USER_INDEX == GDT_FIXED + TSS_DESC_SLOTS * MAX_CPUS, "user segments follow the TSS slots");
static uint64_t g_gdt[GDT_USER_INDEX + 2] __attribute__((aligned(16)));
static struct tss g_tss[MAX_CPUS] __attribute__((aligned(128)));
static struct idt_gate g_idt[256] __attribute__((aligned(16)));
extern const uintptr_t isr_stub_table[256];

static void set_tss_descriptor(int cpu)
{
    uintptr_t base = (uintptr_t)&g_tss[cpu];
    uint64_t limit = sizeof(struct tss) - 1;
    uint64_t low = (limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) | (0x89ull << 40) |
                   ((uint64_t)((base >> 24) & 0xff) << 56);
    int slot = GDT_FIXED + TSS_DESC_SLOTS * cpu;
    g_gdt[slot] = low;
#ifdef __x86_64__
    g_gdt[slot + 1] = (uint64_t)base >> 32;
#endif
    g_tss[cpu].iomap_base = sizeof(struct tss); /* no I/O bitmap */
}

/* Every CPU loads the same GDT and its own TSS. */
void gdt_init_cpu(int cpu)
{
    g_gdt[1] = 0x00cf9a000000ffffull; /* SEL_CODE32 */
    g_gdt[2] = 0x00cf92000000ffffull; /* SEL_DATA */
    g_gdt[3] = 0x00af9a000000ffffull; /* SEL_CODE64 */
    /* CPL-3 code (64-bit on amd64, 32-bit on i386) and data, DPL 3, flat (LHV_OPT 0x40/0x800). */
    g_gdt[GDT_USER_INDEX] = sizeof(uintptr_t) == 8 ? 0x00affa000000ffffull : 0x00cffa000000ffffull;
    g_gdt[GDT_USER_INDEX + 1] = 0x00cff2000000ffffull;
    set_tss_descriptor(cpu);
    struct desc_ptr p = { sizeof(g_gdt) - 1, (uintptr_t)g_gdt };
    __asm__ volatile("lgdt %0" ::"m"(p));
    uint16_t tr = tss_selector(cpu);
    __asm__ volatile("ltr %0" ::"r"(tr));
}

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        uintptr_t off = isr_stub_table[v];
        struct idt_gate *g = &g_idt[v];
        memset(g, 0, sizeof(*g));
        g->off0 = (uint16_t)off;
        g->off1 = (uint16_t)(off >> 16);
        g->sel = SEL_L1_CODE;
        g->type = 0x8e; /* present, DPL 0, interrupt gate: IF is cleared on entry */
#ifdef __x86_64__
        g->off2 = (uint32_t)(off >> 32);
#endif
    }
}

void idt_load(void)
{
    struct desc_ptr p = { sizeof(g_idt) - 1, (uintptr_t)g_idt };
    __asm__ volatile("lidt %0" ::"m"(p));
}

uintptr_t tss_base(int cpu) { return (uintptr_t)&g_tss[cpu]; }

uint16_t tss_selector(int cpu) { return (uint16_t)(SEL_TSS_BASE + 8 * TSS_DESC_SLOTS * cpu); }

/* A TSS descriptor made available for LTR without the rest of gdt_init_cpu (selftest=). */
void tss_prepare(int cpu) { set_tss_descriptor(cpu); }

/* LTR of a selector whose descriptor is marked busy faults (SDM Vol. 3A 8.2.4): clear the busy
 * bit (type 0xb -> 0x9) in the GDT L1 runs on, then load it. */
void tr_reload(uint16_t selector)
{
    g_gdt[selector / 8] &= ~(2ull << 40);
    __asm__ volatile("ltr %0" ::"r"(selector));
}
uint32_t tss_limit(void) { return sizeof(struct tss) - 1; }

/* The stack an interrupt from CPL 3 switches to (SDM Vol. 3A 6.12.1, 8.7): RSP0, or SS0:ESP0. */
void tss_set_stack0(int cpu, uintptr_t sp)
{
#ifdef __x86_64__
    g_tss[cpu].rsp[0] = sp;
#else
    g_tss[cpu].fields[1] = (uint32_t)sp;
    g_tss[cpu].fields[2] = sp ? SEL_DATA : 0;
#endif
}
