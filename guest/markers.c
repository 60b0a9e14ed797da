/* Pages that say which they are, for scenarios whose guest reads through a mapping L1 changes
 * (EPT roots, EPTP switching, PAE table sets, INVEPT/INVVPID flushes). */
#include "guest/guest.h"
#include "lib/lib.h"

static uint32_t g_marker_pages[MARKER_PAGES][PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));

void marker_pages_init(void)
{
    for (int i = 0; i < MARKER_PAGES; i++)
        g_marker_pages[i][0] = MARKER(i);
}

uintptr_t marker_page(int i) { return (uintptr_t)g_marker_pages[i]; }
