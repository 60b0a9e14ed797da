/*
 * invept_per_cpu: INVEPT invalidates the EPT-derived translations of the CPU that executes it,
 * and only those. A guest on CPU 1 keeps reading a probe page while CPU 0 remaps that page in the
 * shared EPT and runs INVEPT on itself: CPU 1 may go on using the old translation (the SDM allows
 * it: an INFO line says what was seen) until CPU 1 runs INVEPT itself, after which it must see
 * the new page (checked).
 *
 * Intel SDM Vol. 3C 29.4.3.1 "Operations that Invalidate Cached Mappings" and 29.4.3.3
 * "Guidelines for Use of the INVEPT Instruction" (software must run INVEPT on every logical
 * processor that may have cached the mappings: a TLB shootdown). Source: seed 003, the LHV
 * experiment behind the answer to https://stackoverflow.com/questions/70179745/ and TrustVisor
 * changing a shared EPT without a shootdown. Bochs 2.7 flushes its TLB at every VM entry and
 * exit, so there the INFO always reports the new page.
 * GOOD: CPU 1 reads page A first, page B after its own INVEPT. BAD: page A after that INVEPT.
 * Negative control (inject=invept_per_cpu): CPU 0 leaves the EPT entry unchanged, so CPU 1 still
 * reads page A after its INVEPT.
 * Needs: EPT with INVEPT, two CPUs in VMX operation.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(invept_per_cpu, LHV_OPT_USE_EPT, "vmx,ept,invept,cpus>=2", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, invept_per_cpu);

#define CALL_POLL (GUEST_CALL_USER + 1)
#define READS_PER_POLL 200

static uint8_t g_ap_vmcs[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* Shared by the BSP, the AP's L1 and the AP's guest. */
struct ap_job {
    uint64_t eptp;
    uintptr_t probe;
    volatile uint32_t seen;       /* the guest's last read */
    volatile int invept_request;  /* BSP -> AP L1 */
    volatile int invept_done;     /* AP L1 -> BSP */
    volatile int failed;          /* AP L1: what went wrong, 0 if nothing */
    volatile uint32_t exit_reason;
};
static struct ap_job g_job;

static uintptr_t guest_watch(uintptr_t arg)
{
    struct ap_job *job = (struct ap_job *)arg;
    for (;;) {
        for (int i = 0; i < READS_PER_POLL; i++)
            job->seen = *(volatile uint32_t *)job->probe;
        guest_vmcall(CALL_POLL, 0, 0);
    }
    return 0;
}

/* CPU 1's L1: run the guest; at each poll, do what CPU 0 asked. */
static void ap_run_guest(void *arg)
{
    struct ap_job *job = arg;
    static struct vcpu v;
    if (!vcpu_prepare_on_page(&v, g_ap_vmcs)) {
        job->failed = 1;
        return;
    }
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = job->eptp };
    vcpu_init_c_guest_prepared(&v, &cfg, guest_watch, (uintptr_t)job);
    while (!g_work_cancel) {
        if (vcpu_run(&v) != VMX_OK || (v.exit.reason & 0xffff) != EXIT_VMCALL || v.regs.rax != CALL_POLL) {
            job->exit_reason = v.exit.reason;
            job->failed = 2;
            break;
        }
        vcpu_skip_instruction(&v);
        if (job->invept_request && !job->invept_done) {
            job->invept_done = vmx_invept((g_vmx.ept_vpid & EPT_CAP_INVEPT_SINGLE) ? 1 : 2, job->eptp) == VMX_OK ? 1 : -1;
        }
    }
    vmcs_clear(v.vmcs_phys);
}

static bool wait_for(volatile uint32_t *value, uint32_t want, uint64_t ms)
{
    uint64_t end = rdtsc() + g_tsc_hz / 1000 * ms;
    while (*value != want && rdtsc() < end && !g_job.failed)
        cpu_relax();
    return *value == want;
}

static void invept_per_cpu(struct scenario *s)
{
    marker_pages_init();
    struct ept ept;
    ept_build_identity(&ept, false);
    memset(&g_job, 0, sizeof(g_job));
    g_job.eptp = ept.eptp;
    g_job.probe = marker_page(0);
    if (!smp_start_work(1, ap_run_guest, &g_job))
        return (void)scenario_error(s, "cpu1 is not available for work");
    if (!wait_for(&g_job.seen, MARKER_A, 2000))
        return (void)scenario_error(s, "the guest on cpu1 did not start reading (failure %d, exit 0x%x)", g_job.failed,
                                    g_job.exit_reason);
    if (!s->inject)
        ept_set_4k(&ept, g_job.probe, marker_page(1), EPT_RWX);
    ept_invalidate(&ept); /* on cpu0 only */
    delay_us(20000);
    uint32_t before = g_job.seen;
    if (!s->inject) /* with the entry unchanged there is nothing to observe */
        scenario_info(s, "after cpu0's INVEPT alone, the guest on cpu1 read %s", before == MARKER_A ? "the old page (stale, allowed)"
                                                                                           : "the new page");
    g_job.invept_request = 1;
    if (!wait_for((volatile uint32_t *)&g_job.invept_done, 1, 2000))
        return (void)scenario_error(s, "cpu1 did not run its INVEPT (state %d, failure %d)", g_job.invept_done,
                                    g_job.failed);
    g_job.seen = 0;
    uint64_t end = rdtsc() + g_tsc_hz / 1000 * 2000;
    while (!g_job.seen && rdtsc() < end && !g_job.failed)
        cpu_relax();
    uint32_t after = g_job.seen;
    g_work_cancel = true;
    smp_wait_work(1, 2000);
    if (!after)
        return (void)scenario_error(s, "the guest on cpu1 stopped reading (failure %d)", g_job.failed);
    if (after != MARKER_B)
        return (void)scenario_bad(s, "expected cpu1 to read the new page (0x%x) after its own INVEPT, observed 0x%x",
                                  MARKER_B, after);
    scenario_good(s);
}
