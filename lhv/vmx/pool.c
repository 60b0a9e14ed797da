/* Zeroed pages for VMCSs, EPT tables and bitmaps; everything is returned between scenarios. */
#include "vmx/vmx.h"

#define POOL_PAGES 384
static uint8_t g_pool[POOL_PAGES][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static size_t g_pool_used;

void *page_alloc(void)
{
    if (g_pool_used >= POOL_PAGES)
        vmx_fail("page pool exhausted (%u pages)", POOL_PAGES);
    void *page = g_pool[g_pool_used++];
    memset(page, 0, PAGE_SIZE);
    return page;
}

void page_pool_reset(void) { g_pool_used = 0; }
