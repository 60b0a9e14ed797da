/* The MADT's processor entries (arch/madt.c); free of hardware access so the host can test it. */
#ifndef LHV_MADT_H
#define LHV_MADT_H

#include "lib/lib.h"

/* The MADT's entries in order: madt_next_entry(madt, length, NULL) is the first; NULL after the
 * last, or where an entry is cut short or malformed (length < 2, past the table's end). */
const uint8_t *madt_next_entry(const uint8_t *madt, uint32_t madt_length, const uint8_t *prev);

/* How many enabled (or online-capable) processors a MADT lists, and how many of them as
 * Processor Local x2APIC entries (type 9, 32-bit IDs, ACPI 6.5 section 5.2.12.12). */
struct madt_cpu_count {
    int listed;
    int x2apic_entries;
};

/* APIC IDs of those processors, in the MADT's order: Processor Local APIC entries (type 0,
 * 8-bit IDs) and x2APIC entries. At most max IDs are stored; *count counts them all. Returns the
 * number stored. */
int madt_apic_ids(const uint8_t *madt, uint32_t madt_length, uint32_t *ids, int max, struct madt_cpu_count *count);

#endif
