/* Walking the MADT's interrupt controller structures (ACPI 6.5 section 5.2.12): after the
 * 36-byte table header come the local interrupt controller address and flags (8 bytes), then
 * entries of (type, length, ...). Firmware lists a CPU whose APIC ID is 255 or more as a type 9
 * x2APIC entry, some firmware lists every CPU that way. */
#include "arch/madt.h"

#define MADT_FIRST_ENTRY 44
#define MADT_LOCAL_APIC 0
#define MADT_LOCAL_X2APIC 9
#define MADT_CPU_ENABLED 1u
#define MADT_CPU_ONLINE_CAPABLE 2u

const uint8_t *madt_next_entry(const uint8_t *madt, uint32_t madt_length, const uint8_t *prev)
{
    const uint8_t *p = prev ? prev + prev[1] : madt + MADT_FIRST_ENTRY, *end = madt + madt_length;
    return p + 2 <= end && p[1] >= 2 && p + p[1] <= end ? p : NULL;
}

int madt_apic_ids(const uint8_t *madt, uint32_t madt_length, uint32_t *ids, int max, struct madt_cpu_count *count)
{
    int n = 0;
    *count = (struct madt_cpu_count){ 0, 0 };
    for (const uint8_t *p = NULL; (p = madt_next_entry(madt, madt_length, p));) {
        uint32_t flags, id;
        bool x2apic = p[0] == MADT_LOCAL_X2APIC && p[1] >= 16;
        if (x2apic) {
            memcpy(&flags, p + 8, 4);
            memcpy(&id, p + 4, 4);
        } else if (p[0] == MADT_LOCAL_APIC && p[1] >= 8) {
            memcpy(&flags, p + 4, 4);
            id = p[3];
        } else {
            continue;
        }
        if (!(flags & (MADT_CPU_ENABLED | MADT_CPU_ONLINE_CAPABLE)))
            continue;
        count->x2apic_entries += x2apic;
        if (count->listed++ < max)
            ids[n++] = id;
    }
    return n;
}
