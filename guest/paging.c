/* The guest's own PAE paging structures and stack. */
#include "guest/guest.h"
#include "lib/lib.h"

static uint64_t g_pae_pdpt[512] __attribute__((aligned(PAGE_SIZE)));
static uint64_t g_pae_pd[4][512] __attribute__((aligned(PAGE_SIZE)));
static uint8_t g_guest_stack[GUEST_STACK_SIZE] __attribute__((aligned(16)));

uintptr_t guest_stack_top(void) { return (uintptr_t)(g_guest_stack + GUEST_STACK_SIZE); }

uint64_t guest_pae_build(void)
{
    memset(g_pae_pdpt, 0, sizeof(g_pae_pdpt));
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 512; j++)
            /* P RW US A D PS: accessed and dirty already, so guest page walks never write */
            g_pae_pd[i][j] = (((uint64_t)i << 30) | ((uint64_t)j << 21)) | 0xe7;
        g_pae_pdpt[i] = (uintptr_t)g_pae_pd[i] | 1; /* PAE PDPTEs: only P may be set */
    }
    return (uintptr_t)g_pae_pdpt;
}

const uint64_t *guest_pae_pdpt(void) { return g_pae_pdpt; }

/* A second set of PAE tables, identical to the first except for one 4 KiB page: its own PDPT
 * (so the PDPTEs differ), a copy of the PD that covers linear_page, and a page table for the
 * 2 MiB region around it in which linear_page maps to phys_page. */
static uint64_t g_alt_pdpt[512] __attribute__((aligned(PAGE_SIZE)));
static uint64_t g_alt_pd[512] __attribute__((aligned(PAGE_SIZE)));
static uint64_t g_alt_pt[512] __attribute__((aligned(PAGE_SIZE)));

void guest_pae_remap(uintptr_t linear_page, uintptr_t phys_page)
{
    g_alt_pt[(linear_page >> 12) & 511] = phys_page | 0x7;
}

uint64_t guest_pae_build_remapped(uintptr_t linear_page, uintptr_t phys_page)
{
    guest_pae_build();
    unsigned gib = (unsigned)(linear_page >> 30), pde = (unsigned)((linear_page >> 21) & 511);
    uintptr_t region = linear_page & ~(uintptr_t)((2u << 20) - 1);
    memcpy(g_alt_pd, g_pae_pd[gib], PAGE_SIZE);
    for (unsigned i = 0; i < 512; i++)
        g_alt_pt[i] = (region + ((uintptr_t)i << 12)) | 0x7; /* P RW US */
    g_alt_pt[(linear_page >> 12) & 511] = phys_page | 0x7;
    g_alt_pd[pde] = (uintptr_t)g_alt_pt | 0x7;
    memset(g_alt_pdpt, 0, sizeof(g_alt_pdpt));
    for (unsigned i = 0; i < 4; i++)
        g_alt_pdpt[i] = i == gib ? ((uintptr_t)g_alt_pd | 1) : g_pae_pdpt[i];
    return (uintptr_t)g_alt_pdpt;
}
