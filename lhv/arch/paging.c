/*
 * L1's own page tables beyond the boot-time identity map of the low 4 GiB. UEFI firmware on
 * recent laptops places the GOP framebuffer above 4 GiB (a 64-bit graphics BAR); without a
 * mapping the screen would stay black, which on a machine without a serial port means no
 * result at all.
 */
#include "arch/arch.h"

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_LARGE 0x80ull
#define LARGE_PAGE (2ull << 20)
#define ADDR_MASK 0x000ffffffffff000ull

static void reload_cr3(void) { write_cr3(read_cr3()); }

#ifdef __x86_64__
static uint64_t g_extra_tables[4][512] __attribute__((aligned(PAGE_SIZE)));
static int g_extra_used;

static uint64_t *extra_table(void)
{
    if (g_extra_used >= (int)ARRAY_SIZE(g_extra_tables))
        return NULL;
    uint64_t *t = g_extra_tables[g_extra_used++];
    memset(t, 0, PAGE_SIZE);
    return t;
}

/* The table an entry points to, made (empty) when the entry is not present yet. */
static uint64_t *next_level(uint64_t *entry)
{
    if (!(*entry & PTE_PRESENT)) {
        uint64_t *t = extra_table();
        if (!t)
            return NULL;
        *entry = (uintptr_t)t | PTE_PRESENT | PTE_WRITE;
    }
    return (uint64_t *)(uintptr_t)(*entry & ADDR_MASK);
}

/* Identity-map [phys, phys + size) with 2 MiB pages. */
void *map_physical_range(uint64_t phys, uint64_t size)
{
    if (phys + size <= (4ull << 30))
        return (void *)(uintptr_t)phys;
    uint64_t *pml4 = (uint64_t *)(uintptr_t)(read_cr3() & ADDR_MASK);
    for (uint64_t a = phys & ~(LARGE_PAGE - 1); a < phys + size; a += LARGE_PAGE) {
        uint64_t *pdpt = next_level(&pml4[(a >> 39) & 511]);
        uint64_t *pd = pdpt ? next_level(&pdpt[(a >> 30) & 511]) : NULL;
        if (!pd)
            return NULL;
        pd[(a >> 21) & 511] = a | PTE_PRESENT | PTE_WRITE | PTE_LARGE;
    }
    reload_cr3();
    return (void *)(uintptr_t)phys;
}
#else
extern uint64_t boot_pdpt[512];

/* 32-bit linear addresses cannot reach it: map it at a window in the last GiB instead, over
 * addresses L1 never touches (0xf0000000 is PCI configuration space on most chipsets; the
 * local APIC at 0xfee00000 stays where it is). */
#define WINDOW_BASE 0xf0000000ull
#define WINDOW_SIZE (128ull << 20)
void *map_physical_range(uint64_t phys, uint64_t size)
{
    if (phys + size <= (4ull << 30))
        return (void *)(uintptr_t)phys;
    uint64_t first = phys & ~(LARGE_PAGE - 1);
    if (phys + size - first > WINDOW_SIZE)
        return NULL;
    uint64_t *pd = (uint64_t *)(uintptr_t)(boot_pdpt[3] & ADDR_MASK);
    for (uint64_t off = 0; first + off < phys + size; off += LARGE_PAGE)
        pd[((WINDOW_BASE + off) >> 21) & 511] = (first + off) | PTE_PRESENT | PTE_WRITE | PTE_LARGE;
    reload_cr3(); /* with PAE, CR3 reload re-reads the PDPTEs and flushes the TLB */
    return (void *)(uintptr_t)(WINDOW_BASE + (phys - first));
}
#endif
