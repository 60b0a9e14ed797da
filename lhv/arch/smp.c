/* Bringing up the application processors: APIC IDs from the ACPI MADT, then INIT-SIPI-SIPI
 * (SDM Vol. 3A 9.4.4.1) one CPU at a time, each with its own stack. What else an AP must do
 * before it is online (enter VMX operation) is handed in from above by smp_boot_aps(). */
#include "arch/arch.h"

uint8_t g_cpu_stacks[MAX_CPUS][CPU_STACK_SIZE] __attribute__((aligned(16)));

extern const uint8_t ap_trampoline_start[], ap_trampoline_end[];
extern volatile uint64_t ap_boot_stack;
extern volatile uint32_t ap_boot_cpu;

static ap_setup_fn g_ap_setup;
static int g_madt_x2apic_entries;

/* Work for the APs: one slot per CPU, posted by the BSP, woken by an IPI. */
struct cpu_work {
    volatile cpu_work_fn fn;
    void *arg;
    volatile bool busy;
};
static struct cpu_work g_work[MAX_CPUS];
volatile bool g_work_cancel;

/* Park with interrupts on: the LAPIC timer (heartbeat) or the BSP's wake-up IPI ends each hlt;
 * "sti; hlt" cannot lose a wake-up that arrives between the check and the hlt. */
static __attribute__((noreturn)) void ap_work_loop(struct percpu *cpu)
{
    struct cpu_work *w = &g_work[cpu->index];
    for (;;) {
        __asm__ volatile("cli");
        cpu_work_fn fn = w->fn;
        if (fn) {
            __asm__ volatile("sti");
            fn(w->arg);
            w->fn = NULL;
            __atomic_store_n(&w->busy, false, __ATOMIC_RELEASE);
            continue;
        }
        __asm__ volatile("sti; hlt");
    }
}

bool smp_start_work(int cpu, cpu_work_fn fn, void *arg)
{
    if (cpu <= 0 || cpu >= g_cpu_count || !g_cpus[cpu].online || g_work[cpu].busy)
        return false;
    g_work_cancel = false;
    g_work[cpu].arg = arg;
    g_work[cpu].busy = true;
    __atomic_store_n(&g_work[cpu].fn, fn, __ATOMIC_RELEASE);
    lapic_send_ipi(g_cpus[cpu].apic_id, 0x4000 | VECTOR_WAKE); /* fixed delivery */
    return true;
}

bool smp_wait_work(int cpu, uint64_t timeout_ms)
{
    uint64_t end = rdtsc() + g_tsc_hz / 1000 * timeout_ms;
    while (g_work[cpu].busy && rdtsc() < end)
        cpu_relax();
    return !g_work[cpu].busy;
}

/* After a scenario: work still running is told to stop (it polls g_work_cancel), and waited for. */
bool smp_cancel_all_work(uint64_t timeout_ms)
{
    g_work_cancel = true;
    bool all = true;
    for (int cpu = 1; cpu < g_cpu_count; cpu++)
        all &= smp_wait_work(cpu, timeout_ms);
    return all;
}

/* Runs on each AP once the trampoline has reached the identity-mapped kernel. */
void ap_main(int index)
{
    struct percpu *cpu = &g_cpus[index];
    gdt_init_cpu(index);
    idt_load();
    lapic_init_cpu(false);
    if (g_ap_setup)
        g_ap_setup(cpu);
    cpu->online = true;
    ap_work_loop(cpu);
}

static bool start_ap(int index)
{
    struct percpu *cpu = &g_cpus[index];
    ap_boot_stack = (uintptr_t)(g_cpu_stacks[index] + CPU_STACK_SIZE);
    ap_boot_cpu = (uint32_t)index;
    lapic_send_ipi(cpu->apic_id, 0x4500); /* INIT */
    delay_us(10000);
    for (int i = 0; i < 2 && !cpu->online; i++) {
        lapic_send_ipi(cpu->apic_id, 0x4600 | (AP_TRAMPOLINE_ADDR >> 12)); /* STARTUP */
        delay_us(200);
    }
    uint64_t deadline = rdtsc() + g_tsc_hz; /* one second */
    while (!cpu->online && rdtsc() < deadline)
        cpu_relax();
    return cpu->online;
}

/* An AP that an INIT has reset (its L1 and VMX state are gone, it waits for a SIPI): bring it
 * back the way it first came up. The work it was running is lost; its slot is freed. */
bool smp_restart_ap(int index)
{
    if (index <= 0 || index >= g_cpu_count)
        return false;
    g_cpus[index].online = false;
    g_cpus[index].vmx_on = false;
    g_work[index].fn = NULL;
    __atomic_store_n(&g_work[index].busy, false, __ATOMIC_RELEASE);
    memcpy(phys_ptr(AP_TRAMPOLINE_ADDR), ap_trampoline_start,
           (size_t)(ap_trampoline_end - ap_trampoline_start));
    return start_ap(index);
}

void smp_boot_aps(ap_setup_fn setup)
{
    g_ap_setup = setup;
    uint32_t ids[MAX_CPUS];
    int found = acpi_collect_apic_ids(ids, MAX_CPUS, &g_madt_x2apic_entries);
    uint32_t bsp_id = lapic_id();
    g_cpus[0].apic_id = bsp_id;
    g_cpus[0].online = true;
    memcpy(phys_ptr(AP_TRAMPOLINE_ADDR), ap_trampoline_start,
           (size_t)(ap_trampoline_end - ap_trampoline_start));
    for (int i = 0; i < found; i++) {
        if (ids[i] == bsp_id)
            continue;
        if (ids[i] >= 0xff && !lapic_is_x2apic()) {
            /* An xAPIC ICR holds an 8-bit destination: the IPI would go to ID & 0xff (the BSP's
             * own 0 for 256), and 0xff is the broadcast. The SDM wants x2APIC mode for these. */
            arch_note("LHV NOTE: cpu with APIC ID %u not started: the APIC is in xAPIC mode", ids[i]);
            continue;
        }
        int index = g_cpu_count;
        g_cpus[index].index = index;
        g_cpus[index].apic_id = ids[i];
        g_cpu_count++; /* counted before start so that this_cpu_index() finds the AP */
        if (!start_ap(index)) {
            g_cpu_count--;
            arch_note("LHV NOTE: cpu with APIC ID %u did not start", ids[i]);
        }
    }
    lapic_seal_handoff();
}

void smp_describe_cpus(char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "madt_x2apic=%d apic_ids=", g_madt_x2apic_entries);
    size_t list_start = used;
    for (int i = 0; i < g_cpu_count && used < size; i++) {
        uint32_t first = g_cpus[i].apic_id;
        while (i + 1 < g_cpu_count && g_cpus[i + 1].apic_id == g_cpus[i].apic_id + 1)
            i++;
        const char *sep = used > list_start ? "," : "";
        if (g_cpus[i].apic_id == first)
            used += (size_t)snprintf(buf + used, size - used, "%s%u", sep, first);
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%u-%u", sep, first, g_cpus[i].apic_id);
    }
    if (used >= size && size > 4)
        memcpy(buf + size - 4, "...", 4); /* the list was cut: say so */
}
