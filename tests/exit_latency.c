/*
 * exit_latency: a benchmark, not a pass/fail timing. It prints the TSC cycles of one L2 -> L1 ->
 * L2 round trip for each exit kind: VMCALL, CPUID, an EPT violation, an EPTP switch requested by
 * VMCALL (L1 VMWRITEs the EPT pointer) and, for comparison, an EPTP switch by VMFUNC inside L2
 * (no exit at all). The verdict checks only that every exit came as the guest's loop implies.
 *
 * Intel SDM Vol. 3C chapters 27 and 28 (VM entries, VM exits), 26.5.6.3 "EPTP Switching" (the
 * reason VMFUNC exists: switching without an exit). Figures are means over 200 round trips measured by L1
 * around its VM entry (rdtsc before VMRESUME, after the exit), so they include L1's exit path.
 * Under Bochs they are emulated cycles; under KVM or VMware they show what nesting costs.
 * The EPT-violation loop reads an unmapped page with a 3-byte MOV that L1 skips, so each
 * violation is a pure round trip.
 * Negative control (inject=exit_latency): L1 does not advance RIP past the VMCALL, so the guest
 * never leaves its ping loop and the expected final VMCALL does not come.
 * Needs: VMX (EPT and VMFUNC parts are left out, with an INFO, where absent).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(exit_latency, 0, "vmx", 8000, SUBARCH_ALL, SCENARIO_REPEATABLE, exit_latency);

#define ITERATIONS 200
#define CALL_PING (GUEST_CALL_USER + 1)
#define CALL_SWITCH (GUEST_CALL_USER + 2)  /* EBX = EPTP index L1 should switch to */
#define CALL_VMFUNC_CYCLES (GUEST_CALL_USER + 3) /* EBX = TSC cycles of ITERATIONS VMFUNCs */
#define EPT_PROBE_LENGTH 3

enum bench { BENCH_VMCALL, BENCH_CPUID, BENCH_EPT, BENCH_EPTP_VMCALL, BENCH_EPTP_VMFUNC, BENCH_KINDS };
static const char *const g_bench_names[BENCH_KINDS] = { "VMCALL", "CPUID", "EPT violation", "EPTP switch by VMCALL",
                                                        "EPTP switch by VMFUNC (no exit)" };

static uint32_t g_unmapped_page[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));

/* ECX = count, EBP = an unmapped page: the MOV faults every time, L1 skips it. */
extern const uint8_t ept_bench_loop[], ept_bench_read[];
__asm__(".pushsection .text\n"
        "ept_bench_loop:\n"
        "ept_bench_read:\n"
        "    .byte 0x8b, 0x45, 0x00\n"   /* mov (%ebp), %eax / mov (%rbp), %eax: 3 bytes */
        "    dec %ecx\n"
        "    jnz ept_bench_loop\n"
        "    xor %ebx, %ebx\n"
        "    mov $0x10, %eax\n"            /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static uintptr_t guest_bench(uintptr_t kind)
{
    for (uint32_t i = 0; i < ITERATIONS; i++) {
        if (kind == BENCH_VMCALL) {
            guest_vmcall(CALL_PING, i, 0);
        } else if (kind == BENCH_CPUID) {
            uint32_t a = 0, b, c = 0, d;
            __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
        } else if (kind == BENCH_EPTP_VMCALL) {
            guest_vmcall(CALL_SWITCH, i & 1, 0);
        }
    }
    if (kind == BENCH_EPTP_VMFUNC) {
        uint64_t start = rdtsc();
        for (uint32_t i = 0; i < ITERATIONS; i++)
            __asm__ volatile(".byte 0x0f, 0x01, 0xd4" ::"a"(0), "c"(i & 1) : "memory");
        guest_vmcall(CALL_VMFUNC_CYCLES, (uintptr_t)(rdtsc() - start), 0);
    }
    return 0;
}

/* One timed round trip, from just before VM entry to just after the exit; a failed entry is the
 * scenario's ERROR (its exit fields would be the previous exit's). */
static bool timed_run(struct scenario *s, struct vcpu *v, uint64_t *total)
{
    uint64_t start = rdtsc();
    int rc = vcpu_run(v);
    *total += rdtsc() - start;
    return vcpu_entered(s, v, rc);
}

/* ITERATIONS exits of one reason, each skipped (or, for EPTP switches, acted on), then DONE. */
static bool bench_exits(struct scenario *s, struct vcpu *v, enum bench kind, uint32_t reason, const uint64_t *eptps,
                        uint64_t *mean)
{
    uint64_t total = 0;
    for (int i = 0; i < ITERATIONS; i++) {
        if (!timed_run(s, v, &total) || !vcpu_check_exit(s, v, reason))
            return false;
        if (kind == BENCH_EPTP_VMCALL)
            vmcs_write(VMCS_EPT_POINTER, eptps[v->regs.rbx & 1]);
        if (kind == BENCH_EPT)
            vmcs_write(VMCS_GUEST_RIP, v->exit.guest_rip + EPT_PROBE_LENGTH);
        else if (!(s->inject && kind == BENCH_VMCALL))
            vcpu_skip_instruction(v);
    }
    *mean = total / ITERATIONS;
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax != GUEST_CALL_DONE)
        return scenario_bad(s, "expected the guest's final VMCALL after %d %s exits, observed VMCALL 0x%llx", ITERATIONS,
                            g_bench_names[kind], (unsigned long long)v->regs.rax);
    return true;
}

static void exit_latency(struct scenario *s)
{
    bool have_ept = g_vmx.ept_vpid & EPT_CAP_WB && ALLOWED1(g_vmx.proc2, PROC2_EPT);
    bool have_vmfunc = have_ept && ALLOWED1(g_vmx.proc2, PROC2_VMFUNC) && (g_vmx.vmfunc & 1);
    struct ept ept[2];
    uint64_t eptps[2] = { 0, 0 }, mean[BENCH_KINDS] = { 0 };
    if (have_ept) {
        for (int i = 0; i < 2; i++) {
            ept_build_identity(&ept[i], false);
            ept_set_4k(&ept[i], (uintptr_t)g_unmapped_page, 0, 0);
            eptps[i] = ept[i].eptp;
        }
    }
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = eptps[0] };
    vcpu_init_c_guest(&v, &cfg, guest_bench, BENCH_VMCALL);
    if (!bench_exits(s, &v, BENCH_VMCALL, EXIT_VMCALL, eptps, &mean[BENCH_VMCALL]))
        return;
    vcpu_restart_c_guest(&v, guest_bench, BENCH_CPUID);
    if (!bench_exits(s, &v, BENCH_CPUID, EXIT_CPUID, eptps, &mean[BENCH_CPUID]))
        return;
    if (have_ept) {
        vmcs_write(VMCS_GUEST_RIP, (uintptr_t)ept_bench_loop);
        v.regs.rcx = ITERATIONS;
        v.regs.rbp = (uintptr_t)g_unmapped_page;
        if (!bench_exits(s, &v, BENCH_EPT, EXIT_EPT_VIOLATION, eptps, &mean[BENCH_EPT]))
            return;
        vcpu_restart_c_guest(&v, guest_bench, BENCH_EPTP_VMCALL);
        if (!bench_exits(s, &v, BENCH_EPTP_VMCALL, EXIT_VMCALL, eptps, &mean[BENCH_EPTP_VMCALL]))
            return;
    }
    if (have_vmfunc) {
        uint64_t *list = page_alloc();
        list[0] = eptps[0];
        list[1] = eptps[1];
        vcpu_set_controls(VMCS_PROC_BASED_CONTROLS2, PROC2_VMFUNC, 0);
        vmcs_write(VMCS_VMFUNC_CONTROLS, 1);
        vmcs_write(VMCS_EPTP_LIST_ADDR, (uintptr_t)list);
        vcpu_restart_c_guest(&v, guest_bench, BENCH_EPTP_VMFUNC);
        if (!vcpu_expect_call(s, &v, CALL_VMFUNC_CYCLES))
            return;
        mean[BENCH_EPTP_VMFUNC] = v.regs.rbx / ITERATIONS;
        if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
            return;
    }
    for (int k = 0; k < BENCH_KINDS; k++)
        if (mean[k])
            scenario_info(s, "%-32s %8llu TSC cycles (mean of %d)", g_bench_names[k], (unsigned long long)mean[k],
                          ITERATIONS);
        else
            scenario_info(s, "%-32s not measured: the CPU lacks %s", g_bench_names[k], k == BENCH_EPTP_VMFUNC ? "VMFUNC EPTP switching" : "EPT");
    scenario_info(s, "TSC at %llu Hz", (unsigned long long)g_tsc_hz);
    scenario_good(s);
}
