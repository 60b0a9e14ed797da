/* Host driver for lhv/arch/madt.c: a MADT on stdin, "<listed> <x2apic entries> <id> <id> ..." on
 * stdout. */
#include <stdio.h>
#include <stdlib.h>

#include "arch/madt.h"

int main(int argc, char **argv)
{
    static uint8_t table[65536];
    uint32_t ids[256];
    int max = argc > 1 ? atoi(argv[1]) : 64;
    struct madt_cpu_count count;
    size_t len = fread(table, 1, sizeof(table), stdin);
    int n = madt_apic_ids(table, (uint32_t)len, ids, max, &count);
    printf("%d %d", count.listed, count.x2apic_entries);
    for (int i = 0; i < n; i++)
        printf(" %u", ids[i]);
    printf("\n");
    return 0;
}
