/*
 * CPL 3 trips (LHV_OPT 0x40 USER_MODE in L1, 0x800 NESTED_USER_MODE in L2), the original LHV's
 * user mode: its code ran at CPL 3 between VM entries with its own user page tables, a TSS for
 * the return and a software interrupt back (lhv-user.c there). Here: the user segments are in
 * the GDT for good (desc.c); page tables, IDT copy and TSS stack are set for a trip and put back.
 */
#include "arch/arch.h"

#define PTE_PRESENT 0x1ull
#define PTE_USER 0x4ull
#define PTE_LARGE 0x80ull
#define ADDR_MASK 0x000ffffffffff000ull
#define USER_TABLES 6 /* amd64: PML4, PDPT, 4 PDs; i386: PDPT page, 4 PDs */

#ifdef __x86_64__
#define GATE_SIZE 16
#else
#define GATE_SIZE 8
#endif

struct user_trip g_user_trip;      /* filled by user.S */
uintptr_t g_user_saved_sp;         /* the kernel stack pointer of the trip's caller */
static uint64_t g_user_tables[USER_TABLES][512] __attribute__((aligned(PAGE_SIZE)));
static uint8_t g_user_idt[256 * GATE_SIZE] __attribute__((aligned(16)));
static uint8_t g_user_stack[PAGE_SIZE] __attribute__((aligned(16)));
static uint8_t g_user_kernel_stack[2 * PAGE_SIZE] __attribute__((aligned(16)));

void user_mode_enter(uintptr_t entry, uintptr_t user_sp, uintptr_t cs, uintptr_t ss);
extern const uint8_t user_return_stub[], user_fault_gp[], user_fault_ud[];

/* Copy one table, U set in every present entry; point non-leaf entries at copies made by next. */
static uint64_t *copy_table(const uint64_t *src, int *used, int levels_below, bool pae_pdpt)
{
    uint64_t *dst = g_user_tables[(*used)++];
    memcpy(dst, src, PAGE_SIZE);
    for (int i = 0; i < 512; i++) {
        if (!(dst[i] & PTE_PRESENT))
            continue;
        if (!pae_pdpt)
            dst[i] |= PTE_USER;
        bool leaf = levels_below == 0 || (dst[i] & PTE_LARGE);
        if (leaf || *used >= USER_TABLES)
            continue;
        const uint64_t *next = (const uint64_t *)(uintptr_t)(dst[i] & ADDR_MASK);
        dst[i] = (dst[i] & ~ADDR_MASK) | (uintptr_t)copy_table(next, used, levels_below - 1, false);
    }
    return dst;
}

uintptr_t user_page_tables(void)
{
    int used = 0;
#ifdef __x86_64__
    /* Only PML4[0] -> PDPT[0..3] (the low 4 GiB, where LHV lives) get copies; the rest is shared. */
    const uint64_t *pml4 = (const uint64_t *)(uintptr_t)(read_cr3() & ADDR_MASK);
    return (uintptr_t)copy_table(pml4, &used, 2, false);
#else
    /* PAE: the PDPT is 4 entries at a 32-byte boundary; its page copy keeps them at offset 0. */
    uint64_t pdpt[512] = { 0 };
    memcpy(pdpt, (const void *)(uintptr_t)(read_cr3() & ~0x1fu), 4 * sizeof(uint64_t));
    return (uintptr_t)copy_table(pdpt, &used, 1, true);
#endif
}

static void set_gate(int vector, const void *handler, uint8_t type)
{
    uintptr_t off = (uintptr_t)handler;
    uint8_t *g = g_user_idt + vector * GATE_SIZE;
    uint16_t low = (uint16_t)off, sel = SEL_L1_CODE, high = (uint16_t)(off >> 16);
    memcpy(g, &low, 2);
    memcpy(g + 2, &sel, 2);
    g[4] = 0;
    g[5] = type;
    memcpy(g + 6, &high, 2);
#ifdef __x86_64__
    uint32_t top = (uint32_t)(off >> 32);
    memcpy(g + 8, &top, 4);
#endif
}

void user_mode_run(uintptr_t entry, bool at_cpl0, bool switch_cr3, int cpu, struct user_trip *out)
{
    struct desc_ptr idtr = read_idtr();
    memcpy(g_user_idt, (const void *)idtr.base, sizeof(g_user_idt));
    set_gate(6, user_fault_ud, 0x8e);                  /* DPL 0: exceptions ignore the gate's DPL */
    set_gate(13, user_fault_gp, 0x8e);
    set_gate(VECTOR_USER_RETURN, user_return_stub, 0xee); /* DPL 3: INT n from CPL 3 allowed */
    struct desc_ptr user_idtr = { sizeof(g_user_idt) - 1, (uintptr_t)g_user_idt };
    uintptr_t cr3 = switch_cr3 ? read_cr3() : 0;
    uintptr_t user_cr3 = switch_cr3 ? user_page_tables() : 0;
    memset(&g_user_trip, 0, sizeof(g_user_trip));
    tss_set_stack0(cpu, (uintptr_t)(g_user_kernel_stack + sizeof(g_user_kernel_stack)));
    write_idtr(&user_idtr);
    if (switch_cr3)
        write_cr3(user_cr3);
    user_mode_enter(entry, (uintptr_t)(g_user_stack + sizeof(g_user_stack)), at_cpl0 ? SEL_L1_CODE : SEL_USER_CODE,
                    at_cpl0 ? SEL_DATA : SEL_USER_DATA);
    if (switch_cr3)
        write_cr3(cr3);
    write_idtr(&idtr);
    tss_set_stack0(cpu, 0);
    *out = g_user_trip;
}
