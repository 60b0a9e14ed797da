/*
 * vpid_invvpid: VPID on, and the four INVVPID types: when they must fail, and the flush they
 * promise.
 *
 * Intel SDM Vol. 3C 31.3 "INVVPID" and 29.4.3.3 "Guidelines for Use of the INVVPID Instruction";
 * VM-instruction error 28 "invalid operand to INVEPT/INVVPID" (31.4). Failures checked: a type
 * not offered by IA32_VMX_EPT_VPID_CAP (bits 40-43) or above 3; reserved descriptor bits 63:16
 * set; VPID 0 for the individual-address, single-context and single-context-retaining-globals
 * types; a non-canonical linear address for the individual-address type. Every offered type with
 * a valid operand must succeed.
 * Then the flush: a PAE guest running with VPID 7 reads a probe address; L1 changes the guest's
 * page-table entry for it (the guest itself never invalidates), executes one INVVPID type, and
 * the guest reads again: after any INVVPID covering that address it must see the new page. With
 * no INVVPID at all the SDM allows the old or the new page: that observation is an INFO (Bochs
 * 2.7 flushes its TLB on every VM entry, so it always shows the new page there).
 * Source: seed 003 (XMHF implementing nested VPID: "use all 4 kinds of INVVPID").
 * GOOD: all rules and every flush held. BAD: names the first that did not.
 * Negative control (inject=vpid_invvpid): L1 builds the "VPID 0" descriptor with VPID 7, so the
 * INVVPID that must fail succeeds.
 * Needs: VPID with INVVPID; the EFER load controls (a 32-bit guest under a 64-bit L1).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vpid_invvpid, 0, "vmx,vpid,invvpid,load_efer", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vpid_invvpid);

#define GUEST_VPID 7
#define VMXERR_INVALID_OPERAND 28
#define CALL_READ 0x101 /* GUEST_CALL_USER + 1: EBX = the value at the probe */
#define NONCANONICAL 0x8000000000000000ull /* bit 63 without bit 56 or 47: non-canonical at 48 and 57 bits */
_Static_assert(CALL_READ == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

static const char *const g_type_names[4] = { "individual-address", "single-context", "all-context",
                                              "single-context-retaining-globals" };


/* EBP = probe address: read it, tell L1, again and again. */
extern const uint8_t vpid_guest[];
__asm__(GUEST32_CODE_BEGIN
        "vpid_guest:\n"
        "1:  mov (%ebp), %ebx\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    jmp 1b\n"
        GUEST32_CODE_END);

static bool type_offered(uint64_t type) { return type < 4 && (g_vmx.ept_vpid >> (40 + type) & 1); }

static bool expect_invvpid(struct scenario *s, const char *what, uint64_t type, uint64_t desc_low, uint64_t linear,
                           bool must_fail)
{
    int rc = vmx_invvpid(type, desc_low, linear);
    if (!must_fail && rc == VMX_OK)
        return true;
    if (must_fail && rc == VMX_FAIL_VALID && vmx_instruction_error() == VMXERR_INVALID_OPERAND)
        return true;
    return scenario_bad(s, "expected INVVPID type %llu (%s) to %s, observed status %d error %u", (unsigned long long)type,
                        what, must_fail ? "fail with error 28" : "succeed", rc,
                        rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
}

static bool check_rules(struct scenario *s)
{
    uint64_t vpid0 = s->inject ? GUEST_VPID : 0; /* the negative control's mistake */
    for (uint64_t type = 0; type < 5; type++)
        if (!expect_invvpid(s, type < 4 ? g_type_names[type] : "undefined", type, GUEST_VPID, 0x1000,
                            !type_offered(type)))
            return false;
    if (type_offered(0) && (!expect_invvpid(s, "individual-address, VPID 0", 0, vpid0, 0x1000, true) ||
                            !expect_invvpid(s, "individual-address, non-canonical", 0, GUEST_VPID, NONCANONICAL, true)))
        return false;
    if (type_offered(1) && !expect_invvpid(s, "single-context, VPID 0", 1, vpid0, 0, true))
        return false;
    if (type_offered(3) && !expect_invvpid(s, "single-context-retaining-globals, VPID 0", 3, vpid0, 0, true))
        return false;
    uint64_t reserved_set = GUEST_VPID | (1ull << 16);
    for (uint64_t type = 0; type < 4; type++)
        if (type_offered(type) && !expect_invvpid(s, "reserved descriptor bits set", type, reserved_set, 0x1000, true))
            return false;
    return true;
}

static bool guest_reads(struct scenario *s, struct vcpu *v, uint32_t *value)
{
    if (!vcpu_expect_call(s, v, CALL_READ))
        return false;
    *value = (uint32_t)v->regs.rbx;
    return true;
}

/* Point the probe at the other page, invalidate with `type` (or not, type < 0), read again. */
static bool flip_and_read(struct scenario *s, struct vcpu *v, int type, uint32_t *now_marker)
{
    bool to_a = *now_marker == MARKER_B;
    guest_pae_remap(marker_page(0), to_a ? marker_page(0) : marker_page(1));
    uint32_t expected = to_a ? MARKER_A : MARKER_B, seen;
    if (type >= 0 && vmx_invvpid((uint64_t)type, GUEST_VPID, marker_page(0)) != VMX_OK)
        return scenario_bad(s, "expected INVVPID type %d to succeed, it failed", type);
    if (!guest_reads(s, v, &seen))
        return false;
    *now_marker = seen;
    if (type < 0) {
        scenario_info(s, "without INVVPID the guest saw the %s page", seen == expected ? "new" : "old (stale TLB)");
        return true;
    }
    if (seen != expected)
        return scenario_bad(s, "expected the new page (0x%x) after INVVPID %s, observed 0x%x: stale translation",
                            expected, g_type_names[type], seen);
    return true;
}

static void vpid_invvpid(struct scenario *s)
{
    marker_pages_init();
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_PAE32, .entry = (uintptr_t)vpid_guest,
                                .stack_top = guest_stack_top(), .vpid = GUEST_VPID };
    vcpu_init(&v, &cfg);
    if (!check_rules(s))
        return;
    vmcs_write(VMCS_GUEST_CR3, guest_pae_build_remapped(marker_page(0), marker_page(1)));
    v.regs.rbp = marker_page(0);
    uint32_t marker;
    if (!guest_reads(s, &v, &marker) || !expect_eq(s, "first read through the remapped page", MARKER_B, marker))
        return;
    if (!flip_and_read(s, &v, -1, &marker))
        return;
    for (int type = 0; type < 4; type++)
        if (type_offered((uint64_t)type) && !flip_and_read(s, &v, type, &marker))
            return;
    scenario_good(s);
}
