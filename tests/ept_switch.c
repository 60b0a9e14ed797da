/*
 * ept_switch: L1 switches the guest between EPT roots by VMWRITE to the EPT pointer, changes a
 * mapping inside the current root, and invalidates with single-context and all-context INVEPT;
 * the guest must see each change. INVEPT's failure rules are checked on the way.
 *
 * Intel SDM Vol. 3C 29.4.3 "Invalidating Cached EPT Mappings" (INVEPT types 1 single-context and
 * 2 all-context; IA32_VMX_EPT_VPID_CAP bits 25 and 26), 31.3 "INVEPT" (an unsupported type or,
 * for single-context, an EPTP that would be invalid in the VMCS fails with VM-instruction error
 * 28). Source: seed 003 (XMHF nesting LHV: "add code to switch EPTP and EPT entries"; in XMHF,
 * INVEPT from L1 had to be emulated) and the original LHV's USE_SWITCH_EPT (0x8).
 * Three pages hold 'A', 'B', 'C'; the probe address maps to A under root A and to B under root B.
 * Steps: the guest reads A; L1 switches to root B (single-context INVEPT): B; L1 remaps the probe
 * to C inside root B (single-context INVEPT): C; L1 switches back to root A (all-context INVEPT): A.
 * GOOD: each read as listed and each INVEPT rule held. BAD: the first that did not.
 * Negative control (inject=ept_switch): L1 executes the INVEPT but leaves out the VMWRITE of the
 * new EPT pointer.
 * Needs: EPT with INVEPT.
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ept_switch, LHV_OPT_USE_EPT | LHV_OPT_USE_SWITCH_EPT, "vmx,ept,invept", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ept_switch);

#define CALL_READ (GUEST_CALL_USER + 1) /* EBX = the probe's value */
#define VMXERR_INVALID_OPERAND 28


static uintptr_t guest_read_forever(uintptr_t probe)
{
    for (;;)
        guest_vmcall(CALL_READ, *(volatile uint32_t *)probe, 0);
    return 0;
}

static bool expect_guest_reads(struct scenario *s, struct vcpu *v, const char *after, int page)
{
    if (!vcpu_expect_call(s, v, CALL_READ))
        return false;
    if ((uint32_t)v->regs.rbx == MARKER(page))
        return true;
    return scenario_bad(s, "expected the guest to read page %c after %s, observed 0x%x", 'A' + page, after,
                        (uint32_t)v->regs.rbx);
}

static bool invept_ok(struct scenario *s, uint64_t type, uint64_t eptp)
{
    if (vmx_invept(type, eptp) == VMX_OK)
        return true;
    return scenario_error(s, "INVEPT type %llu failed: VM-instruction error %u", (unsigned long long)type,
                          vmx_instruction_error());
}

static bool expect_invept_fails(struct scenario *s, const char *what, uint64_t type, uint64_t eptp)
{
    int rc = vmx_invept(type, eptp);
    if (rc == VMX_FAIL_VALID && vmx_instruction_error() == VMXERR_INVALID_OPERAND)
        return true;
    return scenario_bad(s, "expected INVEPT %s to fail with error 28, observed status %d error %u", what, rc,
                        rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
}

static bool check_invept_rules(struct scenario *s, uint64_t eptp)
{
    bool single = g_vmx.ept_vpid & EPT_CAP_INVEPT_SINGLE, all = g_vmx.ept_vpid & EPT_CAP_INVEPT_ALL;
    if (!expect_invept_fails(s, "type 0 (undefined)", 0, eptp) || !expect_invept_fails(s, "type 3 (undefined)", 3, eptp))
        return false;
    if (!single && !expect_invept_fails(s, "single-context (not offered)", 1, eptp))
        return false;
    if (!all && !expect_invept_fails(s, "all-context (not offered)", 2, 0))
        return false;
    return !single || expect_invept_fails(s, "single-context with an invalid EPTP", 1, (eptp & ~7ull) | 2u);
}

/* Single-context when offered, else all-context. */
static uint64_t narrowest_type(void) { return (g_vmx.ept_vpid & EPT_CAP_INVEPT_SINGLE) ? 1 : 2; }
static uint64_t widest_type(void) { return (g_vmx.ept_vpid & EPT_CAP_INVEPT_ALL) ? 2 : 1; }

static void switch_root(struct scenario *s, const struct ept *to, uint64_t type)
{
    if (!s->inject)
        vmcs_write(VMCS_EPT_POINTER, to->eptp);
    invept_ok(s, type, to->eptp);
}

static void ept_switch(struct scenario *s)
{
    marker_pages_init();
    uintptr_t probe = marker_page(0);
    struct ept root_a, root_b;
    ept_build_identity(&root_a, false);
    ept_build_identity(&root_b, false);
    ept_set_4k(&root_b, probe, marker_page(1), EPT_RWX);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = root_a.eptp };
    vcpu_init_c_guest(&v, &cfg, guest_read_forever, probe);
    if (!check_invept_rules(s, root_a.eptp) || !expect_guest_reads(s, &v, "entry with root A", 0))
        return;
    switch_root(s, &root_b, narrowest_type());
    if (!expect_guest_reads(s, &v, "the switch to root B", 1))
        return;
    ept_set_4k(&root_b, probe, marker_page(2), EPT_RWX);
    invept_ok(s, narrowest_type(), root_b.eptp);
    if (!expect_guest_reads(s, &v, "remapping the probe inside root B", 2))
        return;
    switch_root(s, &root_a, widest_type());
    if (!expect_guest_reads(s, &v, "the switch back to root A", 0))
        return;
    scenario_good(s);
}
