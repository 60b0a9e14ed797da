/* Which CPU is this: the per-CPU records and the lookup by local APIC ID. Everything above
 * (the console's lock owner, the runner, the VMX floor) asks here, and this file asks nothing
 * but the local APIC. */
#include "arch/arch.h"

struct percpu g_cpus[MAX_CPUS];
int g_cpu_count = 1;

struct percpu *this_cpu(void) { return &g_cpus[this_cpu_index()]; }

int this_cpu_index(void)
{
    if (g_cpu_count <= 1)
        return 0;
    uint32_t id = lapic_id();
    for (int i = 0; i < g_cpu_count; i++)
        if (g_cpus[i].apic_id == id)
            return i;
    return 0;
}
