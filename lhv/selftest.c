/*
 * Self-tests of the runner's safety nets, run only when the command line asks for one with
 * selftest=<name>: they prove that a hang becomes TIMEOUT, an L1 fault inside a scenario becomes
 * ERROR and the run goes on, and a fault outside any scenario ends the run with CRASH. They are
 * not in the scenario registry, so a normal run never sees them.
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

static const struct lhv_scenario_def g_selftests[] = {
    { "selftest_highmap", "", 0, 500, SUBARCH_ALL, { .body = selftest_highmap }, 0 },
    { "selftest_l2_hang", "vmx", 0, 500, SUBARCH_ALL, { .body = selftest_l2_hang }, 0 },
    { "selftest_l1_hang", "", 0, 3000, SUBARCH_ALL, { .body = selftest_l1_hang }, 0 },
    { "selftest_l1_fault", "", 0, 500, SUBARCH_ALL, { .body = selftest_l1_fault }, 0 },
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
