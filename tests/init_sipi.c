/*
 * init_sipi: INIT and SIPI sent to a CPU that runs an L2 guest. CPU 0's L1 sends the IPIs through
 * its local APIC; CPU 1's L1 runs the guest and records every exit.
 *
 * Checks, in this order (so that a lost INIT cannot hide the SIPI checks):
 *  (1) where IA32_VMX_MISC bit 8 offers it, L2 entered in the wait-for-SIPI activity state: a SIPI
 *      with vector 0x12 gives exit 4 (SIPI) with exit qualification 0x12; the activity state the
 *      exit saved is an INFO line; L2 then runs again once L1 makes it active;
 *  (2) a SIPI to an active L2 gives no exit: SIPIs are ignored outside wait-for-SIPI;
 *  (3) an INIT to the running L2 gives exit 3 (INIT signal) once; after L1 resumes L2, no second
 *      INIT exit follows: the exit consumed the INIT;
 *  (4) no exit saves blocking by SMI (interruptibility bit 2): VM exits that end outside SMM save
 *      it as 0 (28.3.4). L1 clears a wrongly saved bit before the next entry, which would fail
 *      otherwise (27.3.1.5), so that the other checks still run.
 * Intel SDM Vol. 3C 26.2 "Other Causes of VM Exits" (INIT signals cause VM exits; SIPIs cause VM
 * exits only in wait-for-SIPI), 25.4.2 "Guest Non-Register State" (activity states), 27.7
 * (VM entry to an inactive activity state), 28.2.1 (SIPI exit qualification: the vector), 24.8
 * "Restrictions on VMX Operation" (INIT is blocked in VMX root operation), Appendix A.6
 * (IA32_VMX_MISC bits 6-8: supported activity states).
 * Bugs: Bochs 2.7 kept the INIT pending after the INIT VM exit, so every later VM entry exits
 * with INIT again (stlintel/Bochs issue #11, PR #16, bochs-emu/Bochs commit 88f881c6d, fixed in
 * 2.8); Bochs 2.7 also saved blocking by SMI after the SIPI exit, because wait-for-SIPI had
 * masked SMIs (stlintel/Bochs issue #10, PR #15, commit 0ae5e6789, fixed in 2.8); KVM "nVMX: Ignore SIPI that arrives in L2 when vCPU is not in WFS" (2022); Xen 3643bb53a0
 * (activity states copied into the real VMCS). kvm-unit-tests vmx_init_signal_test and
 * vmx_sipi_signal_test check the same rules.
 * An INIT that stays pending is dangerous: it is held while CPU 1 is in VMX root operation and
 * resets CPU 1 at its next VMXOFF. When INIT exits keep coming (or exits save blocking by SMI,
 * which would break the next scenario's entries), CPU 1 therefore leaves VMX operation on purpose
 * (the pending INIT, or CPU 0's INIT, resets it to wait-for-SIPI) and CPU 0 starts it again with
 * INIT-SIPI-SIPI, so the next 2-CPU scenario still finds it.
 * GOOD: (1) exit 4 with qualification 0x12, (2) no exit, (3) exactly one INIT exit, (4) bit 2
 * clear. The activity state the SIPI exit saves is INFO (Bochs before 2026 saves 0, KVM 3).
 * BAD: no SIPI exit or a wrong vector, a SIPI exit from an active L2, no INIT exit, INIT exits
 * after the re-entry (the INIT stayed pending), blocking by SMI saved.
 * Negative control (inject=init_sipi): L1 on CPU 0 imitates the buggy target: once the resumed
 * guest runs, it sends CPU 1 a second INIT, which gives a second INIT exit.
 * Needs: VMX on two CPUs; part (1) the wait-for-SIPI activity state (else an INFO line with
 * IA32_VMX_MISC).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(init_sipi, 0, "vmx,cpus>=2", 10000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, init_sipi);

#define CALL_RELEASED (GUEST_CALL_USER + 1)
#define SIPI_VECTOR 0x12
#define ICR_INIT 0x4500u  /* delivery mode INIT, level assert, edge */
#define ICR_SIPI 0x4600u  /* delivery mode STARTUP; the vector in bits 7:0 */
#define MAX_EXTRA_INITS 6 /* re-entries that may each end in an INIT exit before L1 gives up */
#define NO_EXIT 0xffffffffu

/* Where CPU 1's L1 is; CPU 0 waits on these. */
enum ap_step {
    STEP_SETUP = 1,       /* nonzero: `failed` holds a step */
    STEP_WFS_ENTERING,    /* L2 enters in wait-for-SIPI */
    STEP_WFS_RESUMED,     /* after the SIPI exit: L2 active again */
    STEP_ACTIVE_RUNNING,  /* L2 runs; CPU 0 sends a SIPI */
    STEP_INIT_RUNNING,    /* L2 runs; CPU 0 sends the INIT */
    STEP_INIT_RESUMED,    /* L2 resumed after the INIT exit */
    STEP_RESET,           /* CPU 1 left VMX operation and waits for CPU 0 to reset and restart it */
    STEP_FINISHED,
};

struct exit_record {
    uint32_t reason;
    uint64_t qualification;
    uint64_t activity_state;
    uint64_t interruptibility;
};

/* Shared by CPU 0, CPU 1's L1 and the guest on CPU 1. */
struct init_sipi_job {
    bool wait_sipi_offered;
    bool send_second_init; /* the negative control */
    volatile uint32_t step;
    volatile uint32_t spins;   /* the guest counts while it runs */
    volatile bool release;     /* CPU 0 (or CPU 1's L1) lets the guest finish with CALL_RELEASED */
    volatile int failed;       /* CPU 1's L1 could not go on: what it was doing */
    volatile uint32_t failed_exit;
    struct exit_record wfs_exit, active_end, init_exit;
    volatile uint32_t active_sipi_exits; /* SIPI exits while L2 was active */
    volatile uint32_t extra_init_exits;  /* INIT exits after the re-entry */
    volatile uint32_t smi_blocked_exit;  /* first exit that saved blocking by SMI, + 1 */
    volatile uint64_t smi_blocked_value;
};

static struct init_sipi_job g_job;
static uint8_t g_ap_vmcs[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* ---- L2 on CPU 1 ------------------------------------------------------------------------ */

static uintptr_t guest_spin_until_released(uintptr_t arg)
{
    struct init_sipi_job *job = (struct init_sipi_job *)arg;
    while (!job->release && !g_work_cancel)
        job->spins++;
    guest_vmcall(CALL_RELEASED, 0, 0);
    return 0;
}

/* ---- L1 on CPU 1 ------------------------------------------------------------------------ */

/* One VM entry; the basic exit reason, or NO_EXIT when the entry failed. An exit that saved
 * blocking by SMI outside SMM is noted, and the bit cleared so the next entry is legal (27.3.1.5). */
static uint32_t ap_enter(struct init_sipi_job *job, struct vcpu *v, enum ap_step step, struct exit_record *rec)
{
    job->step = step; /* before the entry: CPU 0 may send its IPI from now on */
    if (vcpu_run(v) != VMX_OK || (v->exit.reason & (1u << 31))) {
        job->failed = (int)step;
        job->failed_exit = v->exit.reason;
        return NO_EXIT;
    }
    uint32_t reason = v->exit.reason & 0xffff;
    uint64_t interruptibility = vmcs_read(VMCS_GUEST_INTERRUPTIBILITY);
    if (rec) {
        rec->reason = reason;
        rec->qualification = v->exit.qualification;
        rec->activity_state = vmcs_read(VMCS_GUEST_ACTIVITY_STATE);
        rec->interruptibility = interruptibility;
    }
    if (interruptibility & INTERRUPTIBILITY_SMI) {
        if (!job->smi_blocked_exit) {
            job->smi_blocked_exit = reason + 1;
            job->smi_blocked_value = interruptibility;
        }
        vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, interruptibility & ~(uint64_t)INTERRUPTIBILITY_SMI);
    }
    return reason;
}

static bool is_release(struct vcpu *v, uint32_t reason) { return reason == EXIT_VMCALL && v->regs.rax == CALL_RELEASED; }

/* The guest starts over, active and with nothing blocked, whatever the last exit saved. */
static void ap_restart_guest(struct init_sipi_job *job, struct vcpu *v)
{
    job->release = false;
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vcpu_restart_c_guest(v, guest_spin_until_released, (uintptr_t)job);
}

/* (1) Enter in wait-for-SIPI; CPU 0's SIPI must bring the exit. Then L2 runs once, active. */
static void ap_wait_for_sipi(struct init_sipi_job *job, struct vcpu *v)
{
    ap_restart_guest(job, v);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_WAIT_SIPI);
    if (ap_enter(job, v, STEP_WFS_ENTERING, &job->wfs_exit) == NO_EXIT)
        return;
    ap_restart_guest(job, v);
    job->release = true;
    uint32_t reason = ap_enter(job, v, STEP_WFS_RESUMED, NULL);
    if (reason != NO_EXIT && !is_release(v, reason)) {
        job->failed = STEP_WFS_RESUMED;
        job->failed_exit = reason;
    }
}

/* (2) L2 active while CPU 0 sends a SIPI: the run must end only with the guest's release call. */
static void ap_sipi_while_active(struct init_sipi_job *job, struct vcpu *v)
{
    ap_restart_guest(job, v);
    uint32_t reason = ap_enter(job, v, STEP_ACTIVE_RUNNING, &job->active_end);
    while (reason == EXIT_SIPI && job->active_sipi_exits < 4) { /* wrong, but go on to see the end */
        job->active_sipi_exits++;
        vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
        reason = ap_enter(job, v, STEP_ACTIVE_RUNNING, &job->active_end);
    }
    if (reason != NO_EXIT && reason != EXIT_SIPI && !is_release(v, reason)) {
        job->failed = STEP_ACTIVE_RUNNING;
        job->failed_exit = reason;
    }
}

/* (3) L2 runs until CPU 0's INIT; then resumed, it must run on until released. Each INIT exit
 * after the re-entry is counted; when they keep coming the INIT is stuck. */
static void ap_init_exit(struct init_sipi_job *job, struct vcpu *v)
{
    ap_restart_guest(job, v);
    if (ap_enter(job, v, STEP_INIT_RUNNING, &job->init_exit) == NO_EXIT)
        return;
    uint32_t reason = ap_enter(job, v, STEP_INIT_RESUMED, NULL);
    while (reason == EXIT_INIT_SIGNAL && job->extra_init_exits < MAX_EXTRA_INITS) {
        job->extra_init_exits++;
        reason = ap_enter(job, v, STEP_INIT_RESUMED, NULL);
    }
    if (reason != NO_EXIT && reason != EXIT_INIT_SIGNAL && !is_release(v, reason)) {
        job->failed = STEP_INIT_RESUMED;
        job->failed_exit = reason;
    }
}

/* The target left this CPU in a state the next scenario cannot use: an INIT still pending (it is
 * held in VMX root operation and would hit the next VM entry), or events masked so that every exit
 * saves blocking by SMI. Leave VMX operation and wait: the pending INIT, or CPU 0's INIT, resets
 * this CPU to wait-for-SIPI, and CPU 0 starts it again with INIT-SIPI-SIPI. */
static __attribute__((noreturn)) void ap_park_for_reset(struct init_sipi_job *job)
{
    this_cpu()->vmx_on = false;
    job->step = STEP_RESET; /* first: a pending INIT resets this CPU right after VMXOFF */
    vmx_off();
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void ap_init_sipi(void *arg)
{
    struct init_sipi_job *job = arg;
    static struct vcpu v;
    if (!vcpu_prepare_on_page(&v, g_ap_vmcs)) {
        job->failed = STEP_SETUP;
        job->step = STEP_FINISHED;
        return;
    }
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest_prepared(&v, &cfg, guest_spin_until_released, (uintptr_t)job);
    if (job->wait_sipi_offered)
        ap_wait_for_sipi(job, &v);
    if (!job->failed)
        ap_sipi_while_active(job, &v);
    if (!job->failed)
        ap_init_exit(job, &v);
    vmcs_clear(v.vmcs_phys);
    if (job->extra_init_exits >= MAX_EXTRA_INITS || job->smi_blocked_exit)
        ap_park_for_reset(job);
    job->step = STEP_FINISHED;
}

/* ---- L1 on CPU 0 ------------------------------------------------------------------------ */

static uint64_t deadline_ms(uint64_t ms) { return rdtsc() + g_tsc_hz / 1000 * ms; }

/* Until CPU 1 is past `step` or has finished; false on timeout. */
static bool wait_step_leaves(uint32_t step, uint64_t ms)
{
    uint64_t end = deadline_ms(ms);
    while (g_job.step == step && rdtsc() < end)
        cpu_relax();
    return g_job.step != step;
}

static bool wait_step_reaches(uint32_t step, uint64_t ms)
{
    uint64_t end = deadline_ms(ms);
    while (g_job.step < step && rdtsc() < end)
        cpu_relax();
    return g_job.step >= step;
}

/* True once the guest counts again while CPU 1 is still at `step` (so L2 is running). */
static bool wait_guest_runs(uint32_t step, uint64_t ms)
{
    uint32_t before = g_job.spins;
    uint64_t end = deadline_ms(ms);
    while (g_job.step == step && rdtsc() < end) {
        if (g_job.spins - before > 100)
            return true;
        cpu_relax();
    }
    return false;
}

static void send_to_cpu1(uint32_t icr) { lapic_send_ipi(g_cpus[1].apic_id, icr); }

/* (1) SIPI to L2 in wait-for-SIPI. A SIPI that comes before the VM entry finished is ignored
 * (CPU 1 is not in wait-for-SIPI yet), so it is sent again a few times. */
static void bsp_wait_for_sipi(struct scenario *s)
{
    if (!wait_step_reaches(STEP_WFS_ENTERING, 2000))
        return (void)scenario_error(s, "cpu1 did not start its guest (failure at step %d)", g_job.failed);
    int sent = 0;
    while (g_job.step == STEP_WFS_ENTERING && sent < 5) {
        delay_us(10000);
        send_to_cpu1(ICR_SIPI | SIPI_VECTOR);
        sent++;
        wait_step_leaves(STEP_WFS_ENTERING, 200);
    }
    if (g_job.step == STEP_WFS_ENTERING)
        return (void)scenario_bad(s, "expected a SIPI exit (4) from L2 in wait-for-SIPI, observed none after %d SIPIs", sent);
    if (sent > 1)
        scenario_info(s, "the SIPI exit came after %d SIPIs", sent);
    const struct exit_record *e = &g_job.wfs_exit;
    if (!expect_eq(s, "exit reason for a SIPI in wait-for-SIPI", EXIT_SIPI, e->reason) ||
        !expect_eq(s, "SIPI exit qualification (the vector)", SIPI_VECTOR, e->qualification))
        return;
    scenario_info(s, "the SIPI exit saved guest activity state %llu (3 = wait-for-SIPI), interruptibility 0x%llx",
                  (unsigned long long)e->activity_state, (unsigned long long)e->interruptibility);
}

/* (2) SIPI to an active L2: no exit. */
static void bsp_sipi_while_active(struct scenario *s)
{
    if (!wait_step_reaches(STEP_ACTIVE_RUNNING, 2000) || !wait_guest_runs(STEP_ACTIVE_RUNNING, 2000))
        return (void)scenario_error(s, "the active guest on cpu1 did not run (failure at step %d, exit 0x%x)",
                                    g_job.failed, g_job.failed_exit);
    send_to_cpu1(ICR_SIPI | SIPI_VECTOR);
    delay_us(20000);
    g_job.release = true;
    if (!wait_step_leaves(STEP_ACTIVE_RUNNING, 2000))
        return (void)scenario_error(s, "the active guest on cpu1 did not end when released");
    if (g_job.active_sipi_exits)
        scenario_bad(s, "expected no exit for a SIPI to an active L2 (SIPIs are ignored outside wait-for-SIPI), "
                        "observed %u SIPI exits",
                     g_job.active_sipi_exits);
}

/* (3) INIT to the running L2, then watch the resumed L2. */
static void bsp_init(struct scenario *s)
{
    if (!wait_step_reaches(STEP_INIT_RUNNING, 2000) || !wait_guest_runs(STEP_INIT_RUNNING, 2000))
        return (void)scenario_error(s, "the guest on cpu1 did not run before the INIT (failure at step %d, exit 0x%x)",
                                    g_job.failed, g_job.failed_exit);
    send_to_cpu1(ICR_INIT);
    if (!wait_step_leaves(STEP_INIT_RUNNING, 1000)) {
        scenario_bad(s, "expected an INIT exit (3), observed none: the guest on cpu1 kept running");
        g_job.release = true;
        wait_step_leaves(STEP_INIT_RUNNING, 1000);
    }
    /* The resumed guest runs on unless the INIT is still pending. */
    if (wait_guest_runs(STEP_INIT_RESUMED, 500) && g_job.send_second_init)
        send_to_cpu1(ICR_INIT);
    delay_us(30000);
    g_job.release = true;
}

/* CPU 1 parked outside VMX operation (see ap_park_for_reset): reset it and start it again. */
static void bsp_restart_cpu1(struct scenario *s)
{
    delay_us(10000); /* CPU 1 reaches its HLT */
    bool back = smp_restart_ap(1) && g_cpus[1].vmx_on;
    bool init_stuck = g_job.extra_init_exits >= MAX_EXTRA_INITS;
    scenario_info(s, "cpu1 left VMX operation (%s%s%s) and INIT-SIPI-SIPI from cpu0 %s",
                  init_stuck ? "an INIT stayed pending" : "", init_stuck && g_job.smi_blocked_exit ? ", " : "",
                  g_job.smi_blocked_exit ? "exits saved blocking by SMI" : "",
                  back ? "started it again" : "did not bring it back");
    if (!back)
        scenario_error(s, "cpu1 lost: not restarted after its reset");
}

/* Blocking by SMI saved by an exit that ends outside SMM (SDM 28.3.4). */
static void judge_smi_blocking(struct scenario *s)
{
    if (!g_job.smi_blocked_exit)
        return;
    scenario_info(s, "a %s exit saved interruptibility 0x%llx (blocking by SMI)", exit_reason_name(g_job.smi_blocked_exit - 1),
                  (unsigned long long)g_job.smi_blocked_value);
    scenario_bad(s, "expected blocking by SMI clear in the interruptibility state saved by %s exits (VM exits "
                    "that end outside SMM save bit 2 as 0), observed 0x%llx",
                 exit_reason_name(g_job.smi_blocked_exit - 1), (unsigned long long)g_job.smi_blocked_value);
}

static void judge_init(struct scenario *s)
{
    const struct exit_record *e = &g_job.init_exit;
    if (e->reason != EXIT_INIT_SIGNAL)
        return (void)scenario_bad(s, "expected an INIT exit (3) for an INIT to the running L2, observed %s exit (%u)",
                                  exit_reason_name(e->reason), e->reason);
    uint32_t extra = g_job.extra_init_exits;
    const char *more = extra >= MAX_EXTRA_INITS ? " or more" : "";
    if (!extra)
        return;
    scenario_info(s, "%u%s more INIT exits after L1 resumed L2", extra, more);
    scenario_bad(s, "expected one INIT exit, observed 1 + %u%s after L1 resumed L2 (the INIT stayed pending after its "
                    "VM exit and was delivered again)",
                 extra, more);
}

static void init_sipi(struct scenario *s)
{
    memset(&g_job, 0, sizeof(g_job));
    char why[160];
    g_job.wait_sipi_offered = vmx_requirement_check("wait_sipi", 9, why, sizeof(why)) == REQ_MET;
    g_job.send_second_init = s->inject;
    if (!g_job.wait_sipi_offered)
        scenario_info(s, "wait-for-SIPI part skipped: %s", why);
    if (!smp_start_work(1, ap_init_sipi, &g_job))
        return (void)scenario_error(s, "cpu1 is not available for work");
    if (g_job.wait_sipi_offered)
        bsp_wait_for_sipi(s);
    if (g_job.step < STEP_ACTIVE_RUNNING && g_job.step != STEP_FINISHED && !wait_step_reaches(STEP_ACTIVE_RUNNING, 2000))
        return (void)scenario_error(s, "cpu1 is stuck at step %u (failure %d, exit 0x%x)", g_job.step, g_job.failed,
                                    g_job.failed_exit);
    if (!g_job.failed)
        bsp_sipi_while_active(s);
    if (!g_job.failed)
        bsp_init(s);
    if (!wait_step_reaches(STEP_RESET, 3000))
        return (void)scenario_error(s, "cpu1 did not finish (step %u)", g_job.step);
    if (g_job.step == STEP_RESET)
        bsp_restart_cpu1(s);
    else
        smp_wait_work(1, 2000);
    if (g_job.failed)
        return (void)scenario_error(s, "cpu1's L1 stopped at step %d: exit 0x%x", g_job.failed, g_job.failed_exit);
    judge_init(s);
    judge_smi_blocking(s);
    scenario_good(s);
}
