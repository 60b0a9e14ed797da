/*
 * vmfunc_eptp_switch: VMFUNC leaf 0 (EPTP switching) switches only to a valid EPTP from L1's list,
 * exits with reason 59 exactly when the SDM says, and does not look at what a valid EPTP points to.
 *
 * Intel SDM Vol. 3C 25.6.14 "VM-Function Controls", 26.5.6.3 "EPTP Switching", the VMFUNC
 * reference (31.3) and 28.2.1 (exit 59 saves the instruction length, 3). Source: seed 004, the
 * review of KVM's emulation of EPTP switching for L1 (Bandan Das and Radim Krcmar, July 2017):
 * an EPTP that would make VM entry fail gives exit 59; a valid EPTP that points at memory nothing
 * backs must still be switched to, and the failure shows up afterwards as an EPT
 * misconfiguration on the next access (unbacked memory reads as all ones), never as exit 59.
 * Steps, each checked: index 1 (EPT B, which maps a probe page elsewhere) switches without an
 * exit and the guest reads B's page; index 0 switches back; function 1 gives exit 59; index 512
 * gives exit 59; index 2 (EPTP with the reserved memory type 2) gives exit 59 and no switch;
 * EAX = 64 gives #UD, not exit 59; index 3 (a valid EPTP at the top of the physical address space,
 * where nothing is) switches, not exit 59, and the next fetch faults in EPT: what it reads there
 * is the platform's business, so exit 49 (all ones: a misconfiguration) or 48 is an INFO; index 4
 * (a valid EPTP whose PML4E is write-only, a misconfiguration by the SDM's own rule) switches and
 * the next fetch gives exit 49.
 * Negative control (inject=vmfunc_eptp_switch): L1 leaves entry 1 of the EPTP list empty.
 * Needs: EPT, VMFUNC with EPTP switching (not on Bochs' sandy bridge model).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmfunc_eptp_switch, LHV_OPT_USE_EPT, "vmx,ept,eptp_switch", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vmfunc_eptp_switch);

#define CALL_READ (GUEST_CALL_USER + 1) /* EBX = the probe's value */
#define VMFUNC_EPTP_SWITCHING 1ull
#define VMFUNC_LENGTH 3


static inline void vmfunc(uint32_t function, uint32_t index)
{
    __asm__ volatile(".byte 0x0f, 0x01, 0xd4" ::"a"(function), "c"(index) : "memory");
}

static uintptr_t guest_switch_eptps(uintptr_t unused)
{
    vmfunc(0, 1);
    guest_vmcall(CALL_READ, *(volatile uint32_t *)marker_page(0), 0);
    vmfunc(0, 0);
    guest_vmcall(CALL_READ, *(volatile uint32_t *)marker_page(0), 0);
    vmfunc(1, 0);   /* function not enabled: exit 59 */
    vmfunc(0, 512); /* index past the list: exit 59 */
    vmfunc(0, 2);   /* invalid EPTP: exit 59, no switch */
    vmfunc(64, 0);  /* EAX >= 64: #UD */
    vmfunc(0, 3);   /* valid EPTP, unbacked tables: the next fetch faults in EPT */
    vmfunc(0, 4);   /* valid EPTP, misconfigured PML4E: the next fetch gives exit 49 */
    return unused;
}

static bool expect_read(struct scenario *s, struct vcpu *v, const char *what, uint32_t marker)
{
    return vcpu_expect_call(s, v, CALL_READ) && expect_eq(s, what, marker, (uint32_t)v->regs.rbx);
}

static bool expect_vmfunc_exit(struct scenario *s, struct vcpu *v, const char *what, uint64_t eptp_now)
{
    if (!vcpu_run_expect(s, v, EXIT_VMFUNC)) {
        scenario_bad(s, "expected exit 59 for %s, observed %s (%u)", what, exit_reason_name(v->exit.reason),
                     v->exit.reason & 0xffff);
        return false;
    }
    if (!expect_eq(s, "VMFUNC exit instruction length", VMFUNC_LENGTH, v->exit.instruction_length) ||
        !expect_eq(s, "EPTP after a VMFUNC exit", eptp_now, vmcs_read(VMCS_EPT_POINTER)))
        return false;
    vcpu_skip_instruction(v);
    return true;
}

/* The highest page the CPU can address: nothing backs it on any machine LHV runs on. */
static uint64_t unbacked_page(void)
{
    uint32_t maxphys = cpuid(0x80000000u, 0).eax >= 0x80000008u ? cpuid(0x80000008u, 0).eax & 0xff : 36;
    return (1ull << maxphys) - PAGE_SIZE;
}

static void vmfunc_eptp_switch(struct scenario *s)
{
    marker_pages_init();
    struct ept ept_a, ept_b;
    ept_build_identity(&ept_a, false);
    ept_build_identity(&ept_b, false);
    ept_set_4k(&ept_b, marker_page(0), marker_page(1), EPT_RWX);
    uint64_t *list = page_alloc();
    uint64_t unbacked_eptp = unbacked_page() | (3u << 3) | 6u;
    list[0] = ept_a.eptp;
    list[1] = s->inject ? 0 : ept_b.eptp;
    list[2] = (ept_a.eptp & ~7ull) | 2u; /* memory type 2 is reserved: an invalid EPTP */
    list[3] = unbacked_eptp;
    uint64_t *bad_pml4 = page_alloc();
    bad_pml4[0] = (uintptr_t)page_alloc() | EPT_WRITE; /* write without read: misconfigured */
    uint64_t misconfigured_eptp = (uintptr_t)bad_pml4 | (3u << 3) | 6u;
    list[4] = misconfigured_eptp;

    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = ept_a.eptp };
    vcpu_init_c_guest(&v, &cfg, guest_switch_eptps, 0);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS2, PROC2_VMFUNC, 0);
    vmcs_write(VMCS_VMFUNC_CONTROLS, VMFUNC_EPTP_SWITCHING);
    vmcs_write(VMCS_EPTP_LIST_ADDR, (uintptr_t)list);

    if (!expect_read(s, &v, "probe after VMFUNC to EPTP 1 (EPT B)", MARKER_B) ||
        !expect_eq(s, "EPTP after the switch to index 1", ept_b.eptp, vmcs_read(VMCS_EPT_POINTER)) ||
        !expect_read(s, &v, "probe after VMFUNC back to EPTP 0", MARKER_A))
        return;
    if (!expect_vmfunc_exit(s, &v, "function 1", ept_a.eptp) || !expect_vmfunc_exit(s, &v, "index 512", ept_a.eptp) ||
        !expect_vmfunc_exit(s, &v, "an invalid EPTP", ept_a.eptp))
        return;
    if (!vcpu_run_expect(s, &v, EXIT_EXCEPTION_NMI) || !expect_eq(s, "exception vector for EAX=64", 6,
                                                                   v.exit.interruption_info & 0xff))
        return;
    vcpu_skip_instruction(&v);
    if (!vcpu_run_entered(s, &v))
        return;
    uint32_t reason = v.exit.reason & 0xffff;
    if (reason != EXIT_EPT_MISCONFIG && reason != EXIT_EPT_VIOLATION)
        return (void)scenario_bad(s, "expected the switch to EPTP 3 (unbacked tables) to succeed and the next access to "
                                     "fault in EPT (48 or 49), observed %s (%u)",
                                  exit_reason_name(reason), reason);
    if (!expect_eq(s, "EPTP after switching to unbacked tables", unbacked_eptp, vmcs_read(VMCS_EPT_POINTER)))
        return;
    scenario_info(s, "after the switch to tables at unbacked 0x%llx the next fetch gave %s (%u)",
                  (unsigned long long)unbacked_page(), exit_reason_name(reason), reason);
    vmcs_write(VMCS_EPT_POINTER, ept_a.eptp); /* give the guest its memory back */
    if (!vcpu_run_expect(s, &v, EXIT_EPT_MISCONFIG) ||
        !expect_eq(s, "EPTP after switching to misconfigured tables", misconfigured_eptp, vmcs_read(VMCS_EPT_POINTER)))
        return;
    vmcs_write(VMCS_EPT_POINTER, ept_a.eptp);
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    scenario_good(s);
}
