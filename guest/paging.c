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
            g_pae_pd[i][j] = (((uint64_t)i << 30) | ((uint64_t)j << 21)) | 0x87; /* P RW US PS */
        g_pae_pdpt[i] = (uintptr_t)g_pae_pd[i] | 1; /* PAE PDPTEs: only P may be set */
    }
    return (uintptr_t)g_pae_pdpt;
}

const uint64_t *guest_pae_pdpt(void) { return g_pae_pdpt; }
