/*
 * cr_shadows: CR0/CR4 guest/host masks and read shadows, CLTS, LMSW, CR3-target values and CR8
 * exiting behave exactly as the SDM says when the shadows differ from the real values.
 *
 * Intel SDM Vol. 3C 26.3 "Changes to Instruction Behavior in VMX Non-Root Operation": MOV from
 * CR0/CR4 and SMSW return, for each bit set in the guest/host mask, the read shadow's bit;
 * CLTS with CR0.TS owned and shadow TS = 0 completes without changing CR0.TS; LMSW and a MOV to
 * CR0/CR4 that does not exit leave the owned bits alone; LMSW cannot clear CR0.PE. 26.1.3
 * "Instructions That Cause VM Exits Conditionally": MOV to CR0/CR4 exits iff an owned bit of the
 * source differs from the shadow (not from the real value); CLTS exits iff TS is owned and the
 * shadow's TS is 1; LMSW exits iff PE is owned, shadow PE = 0 and source PE = 1, or one of
 * MP/EM/TS is owned and differs from the shadow; MOV to CR3 with "CR3-load exiting" exits unless
 * the value is one of the first CR3-target-count CR3-target values; MOV to/from CR8 (64-bit mode)
 * exits with "CR8-load/store exiting" (processor-based bits 19/20). 28.2.1, Table 28-3: exit
 * reason 28, qualification = CR number in 3:0, access type in 5:4 (0 MOV to CR, 1 MOV from CR,
 * 2 CLTS, 3 LMSW), LMSW operand type bit 6 (1 memory; then the guest-linear address is saved),
 * GPR in 11:8, LMSW source data in 31:16. 26.3 "MOV to CR0"/"MOV to CR4" and 24.8 "Restrictions
 * on VMX Operation": a MOV to CR0/CR4 that does not exit and sets a bit to a value VMX does not
 * allow (IA32_VMX_CR0/CR4_FIXED*; CR0.PE/PG too when "unrestricted guest" is 0) gives #GP(0).
 * So with unrestricted guest off, clearing CR0.PG or CR4.VMXE when L1 does not own them is
 * #GP(0) in L2 (an exception exit here, every vector being intercepted), and when L1 owns them
 * (vcpu_init does, with shadow 1 for PG and PE and 0 for VMXE) the write that differs from the
 * shadow exits with reason 28 and the real bits stay.
 * Setup: L1 owns CR0.TS and CR0.MP (real 0, shadow 1) and CR4.PCE (real 0, shadow 1) besides the
 * VMX-fixed bits.
 * Bugs: nested hypervisors that compare the new value with the real CR0 instead of the shadow, or
 * return real bits to reads (the class of Linux KVM's nested_vmx_exit_handled_cr handling; no
 * single upstream reference). Bochs up to 3.0 lets L2 clear CR0.PG without unrestricted guest
 * (GitHub issue #614, fixed after 3.0; BAD on the i386 image, listed in harness/known_bugs.py).
 * GOOD: every read, exit, non-exit and #GP as above with the right qualification and the real
 * CR0/CR4/CR3 as the SDM says afterwards.
 * Negative control (inject=cr_shadows): L1 writes the real values into the read shadows, as a
 * hypervisor that ignores them: L2 then reads CR0.TS = 0.
 * Needs: VMX, CR3-load exiting; CR8 exiting on amd64 only.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(cr_shadows, 0, "vmx", 5000, SUBARCH_ALL, SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, cr_shadows);

#define CALL_PROBE_DONE 0x1fd
#define CR0_MP (1u << 1)
#define CR0_TS (1u << 3)
#define CR0_AM (1u << 18)
#define CR4_PCE (1u << 8)
#define NO_EXIT (-1)
#define GP_FAULT (-2)
/* Exit qualification (Table 28-3): CR, access type, GPR 3 (RBX) for the MOV forms. */
#define QUAL_MOV_TO(cr) ((cr) | (3u << 8))
#define QUAL_MOV_FROM(cr) ((cr) | (1u << 4) | (3u << 8))
#define QUAL_CLTS (2u << 4)
#define QUAL_LMSW(src, mem) ((3u << 4) | ((mem) ? 1u << 6 : 0) | ((uint32_t)(src) << 16))

#ifdef __x86_64__
#define XBX "%rbx"
#define XSI "%rsi"
#else
#define XBX "%ebx"
#define XSI "%esi"
#endif
#define CR_PROBE(name, insn) #name ":\n    " insn "\n    mov $0x1fd, %eax\n    vmcall\n    ud2\n"

extern const uint8_t cr_read0[], cr_read4[], cr_smsw[], cr_write0[], cr_write4[], cr_write3[], cr_clts[],
    cr_lmsw_reg[], cr_lmsw_mem[], cr_write8[], cr_read8[];
__asm__(".pushsection .text\n"
        CR_PROBE(cr_read0, "mov %cr0, " XBX)
        CR_PROBE(cr_read4, "mov %cr4, " XBX)
        CR_PROBE(cr_smsw, "smsw %bx")
        CR_PROBE(cr_write0, "mov " XBX ", %cr0")
        CR_PROBE(cr_write4, "mov " XBX ", %cr4")
        CR_PROBE(cr_write3, "mov " XBX ", %cr3")
        CR_PROBE(cr_clts, "clts")
        CR_PROBE(cr_lmsw_reg, "lmsw %bx")
        CR_PROBE(cr_lmsw_mem, "lmsw (" XSI ")")
#ifdef __x86_64__
        CR_PROBE(cr_write8, "mov %rbx, %cr8")
        CR_PROBE(cr_read8, "mov %cr8, %rbx")
#else
        "cr_write8:\ncr_read8:\n    ud2\n"
#endif
        ".popsection\n");

static uint16_t g_msw; /* LMSW's memory operand */

/* What L1 set up: real values, masks and shadows of CR0 and CR4. */
struct crs {
    uint64_t cr0, mask0, shadow0, cr4, mask4, shadow4;
};

static bool g_real_in_shadows; /* the negative control */

static void load_crs(const struct crs *c)
{
    vmcs_write(VMCS_GUEST_CR0, c->cr0);
    vmcs_write(VMCS_CR0_GUEST_HOST_MASK, c->mask0);
    vmcs_write(VMCS_CR0_READ_SHADOW, g_real_in_shadows ? c->cr0 : c->shadow0);
    vmcs_write(VMCS_GUEST_CR4, c->cr4);
    vmcs_write(VMCS_CR4_GUEST_HOST_MASK, c->mask4);
    vmcs_write(VMCS_CR4_READ_SHADOW, g_real_in_shadows ? c->cr4 : c->shadow4);
}

static uint64_t visible(uint64_t real, uint64_t mask, uint64_t shadow) { return (real & ~mask) | (shadow & mask); }

/* Runs one probe with RBX = rbx. expect: NO_EXIT (L2 reaches its VMCALL; *rbx_out gets RBX),
 * GP_FAULT (#GP(0) exit), or the CR-access exit qualification. */
static bool probe(struct scenario *s, struct vcpu *v, const char *what, const uint8_t *insn, uintptr_t rbx,
                  int64_t expect, uintptr_t *rbx_out)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)insn);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    v->regs.rbx = rbx;
    v->regs.rsi = (uintptr_t)&g_msw;
    if (!vcpu_run_entered(s, v))
        return false;
    const struct vmx_exit *e = &v->exit;
    uint32_t reason = e->reason & 0xffff;
    if (expect == NO_EXIT) {
        if (reason == EXIT_CR_ACCESS)
            return scenario_bad(s, "%s: expected no exit, observed a CR-access exit, qualification 0x%llx", what,
                                (unsigned long long)e->qualification);
        if (!vcpu_check_exit(s, v, EXIT_VMCALL) || !expect_eq(s, "L2's VMCALL after the probe", CALL_PROBE_DONE,
                                                               v->regs.rax))
            return false;
        if (rbx_out)
            *rbx_out = v->regs.rbx;
        return true;
    }
    if (expect == GP_FAULT) {
        if (reason == EXIT_EXCEPTION_NMI && e->interruption_info == 0x80000b0du && e->interruption_error == 0)
            return expect_eq(s, "guest RIP at the #GP", (uintptr_t)insn, e->guest_rip);
        return scenario_bad(s, "%s: expected #GP(0) in L2, observed %s exit (%u), interruption info 0x%x, "
                               "qualification 0x%llx",
                            what, exit_reason_name(reason), reason, e->interruption_info,
                            (unsigned long long)e->qualification);
    }
    if (reason == EXIT_VMCALL)
        return scenario_bad(s, "%s: expected a CR-access exit, observed none", what);
    if (!vcpu_check_exit(s, v, EXIT_CR_ACCESS))
        return false;
    if (e->qualification != (uint64_t)expect || e->guest_rip != (uintptr_t)insn)
        return scenario_bad(s, "%s: expected qualification 0x%llx at rip 0x%llx, observed 0x%llx at 0x%llx", what,
                            (unsigned long long)expect, (unsigned long long)(uintptr_t)insn,
                            (unsigned long long)e->qualification, (unsigned long long)e->guest_rip);
    return true;
}

static bool expect_real(struct scenario *s, const char *what, enum vmcs_field field, uint64_t expected)
{
    uint64_t real = vmcs_read(field);
    if (real == expected)
        return true;
    return scenario_bad(s, "%s: expected the real value 0x%llx afterwards, observed 0x%llx", what,
                        (unsigned long long)expected, (unsigned long long)real);
}

static bool reads(struct scenario *s, struct vcpu *v, const struct crs *c)
{
    uintptr_t cr0 = 0, cr4 = 0, msw = 0;
    load_crs(c);
    if (!probe(s, v, "MOV from CR0", cr_read0, 0, NO_EXIT, &cr0) || !probe(s, v, "MOV from CR4", cr_read4, 0, NO_EXIT, &cr4) ||
        !probe(s, v, "SMSW", cr_smsw, 0, NO_EXIT, &msw))
        return false;
    return expect_eq(s, "CR0 read by L2 (shadow for owned bits)", visible(c->cr0, c->mask0, c->shadow0), cr0) &&
           expect_eq(s, "CR4 read by L2 (shadow for owned bits)", visible(c->cr4, c->mask4, c->shadow4), cr4) &&
           expect_eq(s, "SMSW in L2", visible(c->cr0, c->mask0, c->shadow0) & 0xffff, msw & 0xffff);
}

/* MOV to CR0/CR4: against the shadow, not the real value. */
static bool writes(struct scenario *s, struct vcpu *v, const struct crs *c)
{
    uint64_t seen0 = visible(c->cr0, c->mask0, c->shadow0), seen4 = visible(c->cr4, c->mask4, c->shadow4);
    struct {
        const char *what;
        const uint8_t *insn;
        uint64_t value;
        int64_t expect;
        enum vmcs_field field;
        uint64_t real_after;
    } steps[] = {
        { "CR0 := what L2 reads", cr_write0, seen0, NO_EXIT, VMCS_GUEST_CR0, c->cr0 },
        { "CR0 := the real value (owned TS, MP differ from the shadow)", cr_write0, c->cr0, QUAL_MOV_TO(0),
          VMCS_GUEST_CR0, c->cr0 },
        { "CR0 := what L2 reads with AM flipped (not owned)", cr_write0, seen0 ^ CR0_AM, NO_EXIT, VMCS_GUEST_CR0,
          c->cr0 ^ CR0_AM },
        { "CR0 := PG cleared (owned)", cr_write0, seen0 & ~(uint64_t)CR0_PG, QUAL_MOV_TO(0), VMCS_GUEST_CR0, c->cr0 },
        { "CR0 := PE cleared (owned)", cr_write0, seen0 & ~(uint64_t)CR0_PE, QUAL_MOV_TO(0), VMCS_GUEST_CR0, c->cr0 },
        { "CR4 := what L2 reads", cr_write4, seen4, NO_EXIT, VMCS_GUEST_CR4, c->cr4 },
        { "CR4 := VMXE set (owned, shadow 0)", cr_write4, seen4 | CR4_VMXE, QUAL_MOV_TO(4), VMCS_GUEST_CR4, c->cr4 },
        { "CR4 := the real value (owned PCE differs)", cr_write4, c->cr4 & ~(uint64_t)CR4_VMXE, QUAL_MOV_TO(4),
          VMCS_GUEST_CR4, c->cr4 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
        load_crs(c);
        if (!probe(s, v, steps[i].what, steps[i].insn, (uintptr_t)steps[i].value, steps[i].expect, NULL) ||
            !expect_real(s, steps[i].what, steps[i].field, steps[i].real_after))
            return false;
    }
    return true;
}

static bool clts(struct scenario *s, struct vcpu *v, const struct crs *c)
{
    struct crs t = *c;
    t.cr0 |= CR0_TS;
    t.mask0 &= ~(uint64_t)CR0_TS; /* not owned: clears the real TS */
    load_crs(&t);
    if (!probe(s, v, "CLTS, TS not owned", cr_clts, 0, NO_EXIT, NULL) ||
        !expect_real(s, "CLTS, TS not owned", VMCS_GUEST_CR0, t.cr0 & ~(uint64_t)CR0_TS))
        return false;
    t.mask0 |= CR0_TS;
    t.shadow0 &= ~(uint64_t)CR0_TS; /* owned, shadow 0: completes, real TS stays */
    load_crs(&t);
    if (!probe(s, v, "CLTS, TS owned, shadow TS 0", cr_clts, 0, NO_EXIT, NULL) ||
        !expect_real(s, "CLTS, TS owned, shadow TS 0", VMCS_GUEST_CR0, t.cr0))
        return false;
    load_crs(c); /* owned, shadow 1: exits */
    return probe(s, v, "CLTS, TS owned, shadow TS 1", cr_clts, 0, QUAL_CLTS, NULL);
}

static bool lmsw(struct scenario *s, struct vcpu *v, const struct crs *c)
{
    uint16_t shadow_msw = (uint16_t)c->shadow0;
    load_crs(c);
    if (!probe(s, v, "LMSW of the shadow's MSW", cr_lmsw_reg, shadow_msw, NO_EXIT, NULL) ||
        !expect_real(s, "LMSW of the shadow's MSW", VMCS_GUEST_CR0, c->cr0))
        return false;
    uint16_t mp_flipped = shadow_msw ^ CR0_MP;
    if (!probe(s, v, "LMSW reg with MP differing from the shadow", cr_lmsw_reg, mp_flipped, QUAL_LMSW(mp_flipped, 0), NULL))
        return false;
    g_msw = mp_flipped;
    if (!probe(s, v, "LMSW mem with MP differing from the shadow", cr_lmsw_mem, 0, QUAL_LMSW(mp_flipped, 1), NULL) ||
        !expect_eq(s, "guest-linear address of LMSW's operand", (uintptr_t)&g_msw,
                   vmcs_read(VMCS_GUEST_LINEAR_ADDRESS)))
        return false;
    /* PE: LMSW cannot clear it, so source PE 0 with shadow PE 1 does not exit. */
    uint16_t pe_clear = shadow_msw & ~CR0_PE;
    if (!probe(s, v, "LMSW with PE 0, shadow PE 1", cr_lmsw_reg, pe_clear, NO_EXIT, NULL) ||
        !expect_real(s, "LMSW with PE 0", VMCS_GUEST_CR0, c->cr0))
        return false;
    struct crs pe_hidden = *c;
    pe_hidden.shadow0 &= ~(uint64_t)CR0_PE;
    load_crs(&pe_hidden);
    if (!probe(s, v, "LMSW with PE 1, shadow PE 0", cr_lmsw_reg, shadow_msw, QUAL_LMSW(shadow_msw, 0), NULL))
        return false;
    return probe(s, v, "LMSW with PE 0, shadow PE 0", cr_lmsw_reg, pe_clear, NO_EXIT, NULL) &&
           expect_real(s, "LMSW with PE 0, shadow PE 0", VMCS_GUEST_CR0, c->cr0);
}

static bool cr3_targets(struct scenario *s, struct vcpu *v)
{
    uint32_t supported = (uint32_t)(g_vmx.misc >> 16) & 0x1ff;
    uint64_t cr3 = vmcs_read(VMCS_GUEST_CR3), other = cr3 + PAGE_SIZE;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_CR3_LOAD_EXITING, 0);
    struct {
        const char *what;
        uint32_t count;
        int index; /* where the real CR3 sits among the targets, -1 nowhere */
        bool exits;
    } steps[] = {
        { "MOV to CR3, target count 0", 0, -1, true },
        { "MOV to CR3, value is target 1 of 2", 2, 1, false },
        { "MOV to CR3, value is target 1 but count 1", 1, 1, true },
        { "MOV to CR3, value is target 3 of 4", 4, 3, false },
    };
    for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
        if (steps[i].count > supported) {
            scenario_info(s, "%s left out: IA32_VMX_MISC=0x%llx offers %u CR3-target values", steps[i].what,
                          (unsigned long long)g_vmx.misc, supported);
            continue;
        }
        for (int t = 0; t < 4 && (uint32_t)t < supported; t++)
            vmcs_write(VMCS_CR3_TARGET_VALUE0 + 2 * t, t == steps[i].index ? cr3 : other);
        vmcs_write(VMCS_CR3_TARGET_COUNT, steps[i].count);
        if (!probe(s, v, steps[i].what, cr_write3, (uintptr_t)cr3, steps[i].exits ? (int64_t)QUAL_MOV_TO(3) : NO_EXIT, NULL))
            return false;
    }
    vmcs_write(VMCS_CR3_TARGET_COUNT, 0);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, 0, PROC_CR3_LOAD_EXITING & ~(uint32_t)g_vmx.proc);
    return expect_real(s, "CR3 after the target checks", VMCS_GUEST_CR3, cr3);
}

/* CR8 exists in 64-bit mode only. L2 writes back the TPR L1 runs with. */
static bool cr8_exiting(struct scenario *s, struct vcpu *v)
{
    if (sizeof(uintptr_t) == 4)
        return true;
    uint32_t both = PROC_CR8_LOAD_EXITING | PROC_CR8_STORE_EXITING;
    if (ALLOWED1(g_vmx.proc, both) != both || ((uint32_t)g_vmx.proc & both)) {
        scenario_info(s, "CR8 exiting not both settable and clearable (IA32_VMX_PROCBASED_CTLS=0x%llx): left out",
                      (unsigned long long)g_vmx.proc);
        return true;
    }
    uintptr_t tpr;
    __asm__ volatile("mov %%cr8, %0" : "=r"(tpr));
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, both, 0);
    if (!probe(s, v, "MOV to CR8, CR8-load exiting", cr_write8, tpr, QUAL_MOV_TO(8), NULL) ||
        !probe(s, v, "MOV from CR8, CR8-store exiting", cr_read8, 0, QUAL_MOV_FROM(8), NULL))
        return false;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, 0, both);
    uintptr_t read = ~(uintptr_t)0;
    return probe(s, v, "MOV to CR8, no exiting", cr_write8, tpr, NO_EXIT, NULL) &&
           probe(s, v, "MOV from CR8, no exiting", cr_read8, 0, NO_EXIT, &read) &&
           expect_eq(s, "CR8 read by L2", tpr, read);
}

/* VMX-fixed bits L1 does not own, unrestricted guest off: #GP(0) (SDM 26.3 "MOV to CR0", 24.8).
 * Last, and both run even when the first is BAD: Bochs up to 3.0 lets L2 clear CR0.PG (its
 * check_CR0 skips the PE/PG rule for any VMX guest; Bochs GitHub issue #614). In 64-bit mode
 * clearing PG is #GP anyway, so only the i386 image can tell the two apart. */
static bool fixed_bits(struct scenario *s, struct vcpu *v, const struct crs *c)
{
    uint64_t seen0 = visible(c->cr0, c->mask0, c->shadow0), seen4 = visible(c->cr4, c->mask4, c->shadow4);
    struct crs pg_free = *c, vmxe_free = *c;
    pg_free.mask0 &= ~(uint64_t)CR0_PG;
    vmxe_free.mask4 &= ~(uint64_t)CR4_VMXE;
    load_crs(&vmxe_free);
    bool vmxe_ok = probe(s, v, "CR4 := VMXE cleared, VMXE not owned", cr_write4, (uintptr_t)(seen4 & ~(uint64_t)CR4_VMXE),
                         GP_FAULT, NULL) &&
                   expect_real(s, "CR4 after #GP", VMCS_GUEST_CR4, c->cr4);
    load_crs(&pg_free);
    bool pg_ok = probe(s, v, "CR0 := PG cleared, PG not owned", cr_write0, (uintptr_t)(seen0 & ~(uint64_t)CR0_PG),
                       GP_FAULT, NULL) &&
                 expect_real(s, "CR0 after #GP", VMCS_GUEST_CR0, c->cr0);
    load_crs(c); /* the real CR0 again, whatever L2 did */
    return vmxe_ok && pg_ok;
}

static void cr_shadows(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)cr_read0 };
    cfg.stack_top = guest_stack_top();
    vcpu_init(&v, &cfg);
    if (!ALLOWED1(g_vmx.proc, PROC_CR3_LOAD_EXITING))
        return (void)scenario_skip(s, "CR3-load exiting not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx",
                                   (unsigned long long)g_vmx.proc);
    /* Real TS, MP, PCE 0; L1 owns them with shadow 1, besides the VMX-fixed bits. */
    struct crs c;
    c.cr0 = vmcs_read(VMCS_GUEST_CR0) & ~(uint64_t)(CR0_TS | CR0_MP);
    c.mask0 = vmcs_read(VMCS_CR0_GUEST_HOST_MASK) | CR0_TS | CR0_MP;
    c.shadow0 = c.cr0 | CR0_TS | CR0_MP;
    c.cr4 = vmcs_read(VMCS_GUEST_CR4) & ~(uint64_t)CR4_PCE;
    c.mask4 = vmcs_read(VMCS_CR4_GUEST_HOST_MASK) | CR4_PCE;
    c.shadow4 = (c.cr4 & ~(uint64_t)CR4_VMXE) | CR4_PCE;
    g_real_in_shadows = s->inject;
    if (!(c.mask0 & CR0_PG) || !(c.mask4 & CR4_VMXE))
        return (void)scenario_error(s, "vcpu_init did not own CR0.PG and CR4.VMXE (masks 0x%llx, 0x%llx)",
                                    (unsigned long long)c.mask0, (unsigned long long)c.mask4);
    if (!reads(s, &v, &c) || !writes(s, &v, &c) || !clts(s, &v, &c) || !lmsw(s, &v, &c))
        return;
    load_crs(&c);
    if (!cr3_targets(s, &v) || !cr8_exiting(s, &v) || !fixed_bits(s, &v, &c))
        return;
    scenario_good(s);
}
