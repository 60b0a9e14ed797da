/*
 * Self-tests of the runner's safety nets, run only when the command line asks for them with
 * selftest=<name>[,<name>...]: they prove that a hang becomes TIMEOUT, an L1 fault inside a
 * scenario becomes ERROR and the run goes on, and a fault outside any scenario ends the run with
 * CRASH. The damage_* ones change one piece of L1's own state and return as if all were well:
 * the runner's guard (lhv/guard.c) must find it, put it back and give the self-test ERROR naming
 * it, and the next scenario must run on an intact L1. nmi sends L1 an NMI nobody expects: the
 * runner reports it and the run goes on. They are not in the scenario registry, so a normal run
 * never sees them.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "run.h"
#include "vmx/vmx.h"

static uintptr_t guest_spin_forever(uintptr_t arg)
{
    for (;;)
        cpu_relax();
    return arg;
}

/* L2 never exits on its own: only the timer's external-interrupt exits reach L1. */
static void selftest_l2_hang(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_spin_forever, 0);
    vcpu_run(&v);
    scenario_error(s, "the spinning guest exited");
}

static void selftest_l1_hang(struct scenario *s)
{
    for (;;)
        cpu_relax();
}

static void selftest_l1_fault(struct scenario *s)
{
    __asm__ volatile("ud2");
    scenario_error(s, "ud2 did not fault");
}

/* Writes a marker at 4 GiB + 16 MiB through map_physical_range() (the path a framebuffer above
 * 4 GiB takes); the harness reads physical memory back from QEMU and looks for it. */
#define HIGHMAP_PHYS 0x101000000ull
static void selftest_highmap(struct scenario *s)
{
    static const char marker[] = "LHV-HIGHMAP-OK";
    char *p = map_physical_range(HIGHMAP_PHYS, PAGE_SIZE);
    if (!p) {
        scenario_error(s, "map_physical_range(0x%llx) failed", HIGHMAP_PHYS);
        return;
    }
    memcpy(p, marker, sizeof(marker));
    scenario_info(s, "marker written at physical 0x%llx through %p", HIGHMAP_PHYS, (void *)p);
    scenario_good(s);
}

/* A copy of a page-sized (or smaller) table in a pool page: the same contents at another
 * address, so that loading it changes the register and nothing else. */
static void *pool_copy(const void *table, size_t size)
{
    void *copy = page_alloc();
    memcpy(copy, table, size < PAGE_SIZE ? size : PAGE_SIZE);
    return copy;
}

static void damage_cr0(struct scenario *s)
{
    write_cr0(read_cr0() ^ CR0_WP); /* L1 has no read-only pages: WP changes nothing it does */
    scenario_good(s);
}

static void damage_cr3(struct scenario *s)
{
    write_cr3((uintptr_t)pool_copy(phys_ptr(read_cr3() & ~0xfffu), PAGE_SIZE));
    scenario_good(s);
}

/* The same, then an L1 fault: the guard also runs after an abort. */
static void damage_cr3_abort(struct scenario *s)
{
    write_cr3((uintptr_t)pool_copy(phys_ptr(read_cr3() & ~0xfffu), PAGE_SIZE));
    __asm__ volatile("ud2");
    scenario_error(s, "ud2 did not fault");
}

#define CR4_TSD (1u << 2)
static void damage_cr4(struct scenario *s)
{
    write_cr4(read_cr4() ^ CR4_TSD); /* RDTSC at CPL 3 only: L1 runs at CPL 0 */
    scenario_good(s);
}

#define EFER_SCE 1u
static void damage_efer(struct scenario *s)
{
    /* Intel reports SYSCALL (EDX bit 11) only in 64-bit mode; a CPU with long mode has EFER.SCE. */
    if (cpuid(0x80000000u, 0).eax < 0x80000001u || !(cpuid(0x80000001u, 0).edx & ((1u << 11) | (1u << 29)))) {
        scenario_skip(s, "neither SYSCALL nor long mode (CPUID 0x80000001 EDX bits 11, 29): no EFER.SCE");
        return;
    }
    wrmsr(MSR_IA32_EFER, rdmsr(MSR_IA32_EFER) ^ EFER_SCE); /* L1 never executes SYSCALL */
    scenario_good(s);
}

static void damage_gdtr(struct scenario *s)
{
    struct desc_ptr gdtr = read_gdtr();
    gdtr.base = (uintptr_t)pool_copy((const void *)gdtr.base, gdtr.limit + 1u);
    write_gdtr(&gdtr);
    scenario_good(s);
}

static void damage_idtr(struct scenario *s)
{
    struct desc_ptr idtr = read_idtr();
    idtr.base = (uintptr_t)pool_copy((const void *)idtr.base, idtr.limit + 1u);
    write_idtr(&idtr);
    scenario_good(s);
}

/* The TSS of the last CPU slot, which no CPU uses while fewer than MAX_CPUS run. */
static void damage_tr(struct scenario *s)
{
    if (g_cpu_count >= MAX_CPUS) {
        scenario_skip(s, "every TSS is in use");
        return;
    }
    tss_prepare(MAX_CPUS - 1);
    __asm__ volatile("ltr %0" ::"r"(tss_selector(MAX_CPUS - 1)));
    scenario_good(s);
}

static void damage_if(struct scenario *s)
{
    irq_disable();
    scenario_good(s);
}

/* Twice the period: a watchdog that bites late. */
static void damage_timer(struct scenario *s)
{
    struct lapic_timer_state t = lapic_timer_read();
    t.initial_count *= 2;
    lapic_timer_write(&t);
    scenario_good(s);
}

/* What a stack that ran over its end leaves in the lowest word. */
static void damage_stack(struct scenario *s)
{
    *(volatile uint64_t *)(void *)g_cpu_stacks[0] = 0xdeadbeefull;
    scenario_good(s);
}

/* VMXOFF behind the runner's back: cpu->vmx_on still says on. */
static void damage_vmxoff(struct scenario *s)
{
    if (vmx_off() != VMX_OK)
        scenario_error(s, "VMXOFF failed");
    else
        scenario_good(s);
}

static void ap_vmxoff(void *result) { *(volatile int *)result = vmx_off(); }

static void damage_ap_vmxoff(struct scenario *s)
{
    volatile int rc = -1;
    if (!smp_start_work(1, ap_vmxoff, (void *)&rc) || !smp_wait_work(1, 1000))
        scenario_error(s, "cpu1 did not run VMXOFF");
    else if (rc != VMX_OK)
        scenario_error(s, "VMXOFF on cpu1 failed: status %d", rc);
    else
        scenario_good(s);
}

/* A VMCS made current that nobody tracks: the runner's clean-up does not know it. */
static void damage_vmcs(struct scenario *s)
{
    uint64_t phys = vmx_alloc_region_phys(page_alloc());
    if (vmcs_clear(phys) != VMX_OK || vmcs_load(phys) != VMX_OK)
        scenario_error(s, "VMCLEAR/VMPTRLD failed");
    else
        scenario_good(s);
}

/* An NMI to L1 while no scenario expects one (no NMI hook): counted by arch/nmi.c, reported
 * by the runner after this self-test, which itself is GOOD if L1 survives it. */
static void selftest_nmi(struct scenario *s)
{
    lapic_send_self_nmi();
    delay_us(10000);
    scenario_good(s);
}

static const struct lhv_scenario_def g_selftests[] = {
    { "selftest_highmap", "", 0, 500, SUBARCH_ALL, { .body = selftest_highmap }, 0 },
    { "selftest_l2_hang", "vmx", 0, 500, SUBARCH_ALL, { .body = selftest_l2_hang }, 0 },
    { "selftest_l1_hang", "", 0, 3000, SUBARCH_ALL, { .body = selftest_l1_hang }, 0 },
    { "selftest_l1_fault", "", 0, 500, SUBARCH_ALL, { .body = selftest_l1_fault }, 0 },
    { "selftest_damage_cr0", "", 0, 500, SUBARCH_ALL, { .body = damage_cr0 }, 0 },
    { "selftest_damage_cr3", "", 0, 500, SUBARCH_ALL, { .body = damage_cr3 }, 0 },
    { "selftest_damage_cr3_abort", "", 0, 500, SUBARCH_ALL, { .body = damage_cr3_abort }, 0 },
    { "selftest_damage_cr4", "", 0, 500, SUBARCH_ALL, { .body = damage_cr4 }, 0 },
    { "selftest_damage_efer", "", 0, 500, SUBARCH_ALL, { .body = damage_efer }, 0 },
    { "selftest_damage_gdtr", "", 0, 500, SUBARCH_ALL, { .body = damage_gdtr }, 0 },
    { "selftest_damage_idtr", "", 0, 500, SUBARCH_ALL, { .body = damage_idtr }, 0 },
    { "selftest_damage_tr", "", 0, 500, SUBARCH_ALL, { .body = damage_tr }, 0 },
    { "selftest_damage_if", "", 0, 500, SUBARCH_ALL, { .body = damage_if }, 0 },
    { "selftest_damage_timer", "", 0, 500, SUBARCH_ALL, { .body = damage_timer }, 0 },
    { "selftest_damage_stack", "", 0, 500, SUBARCH_ALL, { .body = damage_stack }, 0 },
    { "selftest_damage_vmxoff", "vmx", 0, 500, SUBARCH_ALL, { .body = damage_vmxoff }, 0 },
    { "selftest_damage_ap_vmxoff", "vmx,cpus>=2", 0, 500, SUBARCH_ALL, { .body = damage_ap_vmxoff }, 0 },
    { "selftest_damage_vmcs", "vmx", 0, 500, SUBARCH_ALL, { .body = damage_vmcs }, 0 },
    { "selftest_nmi", "", 0, 500, SUBARCH_ALL, { .body = selftest_nmi }, 0 },
};

/* The self-tests that are not scenarios: they break L1 itself, outside any scenario.
 * crash: an exception in the runner (the image reports CRASH);
 * triple_fault: an exception with an empty IDT (only the emulator can tell: the harness's CRASH);
 * stall: interrupts off and halt, no result ever (the harness's own TIMEOUT). */
static void selftest_break_l1(const char *name)
{
    if (!strcmp(name, "triple_fault")) {
        struct desc_ptr empty = { 0, 0 };
        __asm__ volatile("lidt %0; ud2" ::"m"(empty));
    }
    if (!strcmp(name, "stall"))
        halt_forever();
    if (!strcmp(name, "crash"))
        __asm__ volatile("ud2");
}

const struct lhv_scenario_def *selftest_find(const char *name, bool *breaks_l1)
{
    *breaks_l1 = !strcmp(name, "crash") || !strcmp(name, "triple_fault") || !strcmp(name, "stall");
    for (size_t i = 0; i < ARRAY_SIZE(g_selftests); i++)
        if (!strcmp(g_selftests[i].id + strlen("selftest_"), name))
            return &g_selftests[i];
    return NULL;
}

void selftest_break_l1_now(const char *name) { selftest_break_l1(name); }

const char *selftest_names(void)
{
    static char names[640];
    size_t len = 0;
    for (size_t i = 0; i < ARRAY_SIZE(g_selftests); i++)
        len += (size_t)snprintf(names + len, sizeof(names) - len, "%s ", g_selftests[i].id + strlen("selftest_"));
    snprintf(names + len, sizeof(names) - len, "crash triple_fault stall");
    return names;
}
