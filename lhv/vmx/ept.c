/*
 * EPT paging structures (SDM 29.3.2): a 4-level identity map of guest-physical memory with the
 * write-back memory type. Below 64 MiB, where LHV itself lives, 4 KiB pages unless LHV_OPT asks
 * for large pages; above it 2 MiB pages (when the CPU has them) up to 4 GiB.
 */
#include "options.h"
#include "vmx/vmx.h"

#define EPT_LARGE (1ull << 7)
#define EPT_ADDR_MASK 0x000ffffffffff000ull
#define SMALL_PAGE_LIMIT (64ull << 20)

static uint64_t *table_of(uint64_t entry) { return (uint64_t *)(uintptr_t)(entry & EPT_ADDR_MASK); }
static uint64_t table_entry(void *table) { return (uintptr_t)table | EPT_RWX; }

/* EPTP: WB paging-structure memory type, page-walk length 4 (SDM 25.6.11). */
static uint64_t eptp_of(const uint64_t *pml4) { return (uintptr_t)pml4 | (3u << 3) | 6u; }

static uint64_t *new_page_table(uint64_t first_gpa, uint64_t rights)
{
    uint64_t *pt = page_alloc();
    for (int i = 0; i < 512; i++)
        pt[i] = (first_gpa + ((uint64_t)i << 12)) | rights | EPT_MEMTYPE_WB;
    return pt;
}

void ept_build_identity(struct ept *ept, bool large_pages)
{
    bool have_2m = (g_vmx.ept_vpid & EPT_CAP_2M) != 0;
    uint64_t *pdpt = page_alloc();
    ept->pml4 = page_alloc();
    ept->pml4[0] = table_entry(pdpt);
    for (int i = 0; i < 4; i++) {
        uint64_t *pd = page_alloc();
        pdpt[i] = table_entry(pd);
        for (int j = 0; j < 512; j++) {
            uint64_t gpa = ((uint64_t)i << 30) | ((uint64_t)j << 21);
            if (have_2m && (large_pages || gpa >= SMALL_PAGE_LIMIT))
                pd[j] = gpa | EPT_RWX | EPT_MEMTYPE_WB | EPT_LARGE;
            else if (gpa < SMALL_PAGE_LIMIT)
                pd[j] = table_entry(new_page_table(gpa, EPT_RWX));
        }
    }
    ept->eptp = eptp_of(ept->pml4);
}

void ept_init_empty(struct ept *ept)
{
    ept->pml4 = page_alloc();
    ept->eptp = eptp_of(ept->pml4);
}

/* The next-level table an EPT entry points to; an empty one is made if it points nowhere. */
static uint64_t *next_table(uint64_t *entry)
{
    if (!(*entry & EPT_RWX))
        *entry = table_entry(page_alloc());
    return table_of(*entry);
}

uint64_t *ept_leaf_4k(struct ept *ept, uint64_t gpa)
{
    uint64_t *pdpt = next_table(&ept->pml4[(gpa >> 39) & 511]);
    uint64_t *pd = next_table(&pdpt[(gpa >> 30) & 511]);
    uint64_t *pde = &pd[(gpa >> 21) & 511];
    if (*pde & EPT_LARGE)
        *pde = table_entry(new_page_table(*pde & ~((1ull << 21) - 1) & EPT_ADDR_MASK, *pde & EPT_RWX));
    return &next_table(pde)[(gpa >> 12) & 511];
}

uint64_t *ept_entry(struct ept *ept, int level, uint64_t gpa)
{
    uint64_t *entry = &ept->pml4[(gpa >> 39) & 511];
    for (int l = 4; l > level; l--)
        entry = &next_table(entry)[(gpa >> (12 + 9 * (l - 2))) & 511];
    return entry;
}

/* A 2 MiB (level 2) or 1 GiB (level 3) leaf; rights 0 makes the entry not present. The caller
 * checks IA32_VMX_EPT_VPID_CAP for the page size. */
void ept_set_large(struct ept *ept, int level, uint64_t gpa, uint64_t hpa, uint64_t rights)
{
    uint64_t *entry = ept_entry(ept, level, gpa);
    *entry = rights ? ((hpa & EPT_ADDR_MASK) | rights | EPT_MEMTYPE_WB | EPT_LARGE) : 0;
}

void ept_set_4k(struct ept *ept, uint64_t gpa, uint64_t hpa, uint64_t rights)
{
    *ept_leaf_4k(ept, gpa) = rights ? ((hpa & EPT_ADDR_MASK) | rights | EPT_MEMTYPE_WB) : 0;
}

/* INVEPT for this EPTP (single-context when offered, else all contexts). */
void ept_invalidate(struct ept *ept)
{
    if (!(g_vmx.ept_vpid & EPT_CAP_INVEPT))
        return;
    int rc = (g_vmx.ept_vpid & EPT_CAP_INVEPT_SINGLE) ? vmx_invept(1, ept->eptp) : vmx_invept(2, 0);
    if (rc != VMX_OK)
        vmx_fail("INVEPT failed: status %d", rc);
}
