/*
 * vmentry_fail_info: a VM entry that fails during or after loading guest state writes only the
 * exit reason and the exit qualification; every other VM-exit information field keeps what the
 * last real VM exit put there, the launch state does not change, and L1 comes back intact.
 *
 * Intel SDM Vol. 3C 27.8 "VM-Entry Failures During or After Loading Guest State": the exit
 * reason gets 33 (invalid guest state) or 34 (MSR loading) with bit 31 set, the exit
 * qualification gets 0 for 33 (the default; 2-4 name special causes) and the 1-based index of
 * the failing MSR entry for 34 (27.4 "Loading MSRs"); "all other VM-exit information fields are
 * unmodified"; host state is loaded as for a VM exit (28.5). 31.3 VMLAUNCH/VMRESUME: the launch
 * state becomes "launched" only when VM entry succeeds, so after a failed VMLAUNCH the VMCS is
 * still clear and VMRESUME fails with VM-instruction error 5 (31.4).
 * The failing entries (checks of 27.3.1 and 27.4):
 *   RFLAGS bit 1 clear (27.3.1.4);
 *   CR0.PG=1 with CR0.PE=0 under unrestricted guest (27.3.1.1);
 *   amd64: IA-32e mode guest with CR4.PAE=0 (27.3.1.1). i386: L1 runs outside IA-32e mode, and
 *     27.2.2 requires "IA-32e mode guest" to be 0 then, a host-state check made before any guest
 *     state is loaded, so the same VMCS must give VMfailValid with error 8 and change no exit
 *     field at all (not even reason and qualification);
 *   an injected external interrupt with RFLAGS.IF=0 (27.3.1.5);
 *   "load debug controls" with a reserved IA32_DEBUGCTL bit (bit 32; 27.3.1.1);
 *   an entry MSR-load list whose second entry is IA32_FS_BASE, which VM entry may not load
 *     (27.4): exit 0x80000022, qualification 2.
 * Each runs once by VMRESUME (a launched VMCS) and once by VMLAUNCH (after VMCLEAR), with the
 * guest's CR3 a copy of L1's top-level table (a different page that maps the same). Before them
 * L2 leaves many fields filled: an EPT violation (guest-physical and guest-linear address),
 * VMPTRST (instruction information, qualification) and INT 0x31 through a not-present gate, a
 * #NP exit during event delivery (interruption information 0x80000b0b, error code 0x18a,
 * IDT-vectoring information 0x80000431, instruction length 2).
 * Bugs: Linux KVM c3634d25fbee "KVM: nVMX: Leave most VM-Exit info fields unmodified on failed
 * VM-Entry" (5.18) and CVE-2023-30456 (KVM 112e66017bff: the CR0.PG/PE and IA-32e/CR4.PAE checks
 * were left to hardware, which saw vmcs02's values). Bochs (2.7 to master) overwrites the exit
 * instruction length, interruption information and IDT-vectoring information on a failed entry
 * and does not check reserved IA32_DEBUGCTL bits (harness/bochs-reports/).
 * GOOD: each entry fails as listed, every other exit field equals the value read just before,
 * VMRESUME works after a failed VMRESUME, fails with error 5 after a failed VMLAUNCH, L1's CR3,
 * GDTR, IDTR and RSP are unchanged, and the guest finally runs to its end.
 * BAD: an entry that succeeds, another reason or qualification, a changed field (each one named
 * in an INFO line), a changed launch state or L1 state.
 * Negative control (inject=vmentry_fail_info): L1 forgets to clear RFLAGS bit 1, so the first
 * entry succeeds.
 * Needs: EPT (the guest-physical address of the first exit); unrestricted guest and the
 * "load debug controls" 1-setting for their steps (INFO where not offered).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmentry_fail_info, LHV_OPT_USE_EPT, "vmx,ept", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, vmentry_fail_info);

#define EXIT_VMPTRST 22
#define VMXERR_INVALID_HOST_STATE 8
#define INT_VECTOR 0x31
#define MSR_IA32_FS_BASE 0xc0000100u
#define ENTRY_FAIL(reason) ((1u << 31) | (reason))

uint8_t g_efi_probe[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
uint64_t g_efi_vmcs_store;

extern const uint8_t efi_guest[], efi_int[], efi_done[];
__asm__(".pushsection .text\n"
        "efi_guest:\n"
        "    mov g_efi_probe, %eax\n"      /* EPT violation: L1 took the page away */
        "    vmptrst g_efi_vmcs_store\n"   /* exit 22 with instruction information */
        "efi_int:\n"
        "    .byte 0xcd, 0x31\n"           /* INT 0x31, gate not present: #NP during delivery */
        "efi_done:\n"
        "    xor %ebx, %ebx\n"
        "    mov $0x10, %eax\n"            /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

/* The VM-exit information fields (SDM 25.9), read together. */
struct exit_fields {
    uint64_t reason, qualification, guest_linear, guest_physical;
    uint64_t intr_info, intr_error, idt_info, idt_error, length, instruction_info;
};
static const struct {
    const char *name;
    enum vmcs_field field;
    size_t offset;
} g_exit_fields[] = {
    { "exit reason", VMCS_EXIT_REASON, offsetof(struct exit_fields, reason) },
    { "exit qualification", VMCS_EXIT_QUALIFICATION, offsetof(struct exit_fields, qualification) },
    { "guest-linear address", VMCS_GUEST_LINEAR_ADDRESS, offsetof(struct exit_fields, guest_linear) },
    { "guest-physical address", VMCS_GUEST_PHYSICAL_ADDRESS, offsetof(struct exit_fields, guest_physical) },
    { "exit interruption information", VMCS_EXIT_INTERRUPTION_INFO, offsetof(struct exit_fields, intr_info) },
    { "exit interruption error code", VMCS_EXIT_INTERRUPTION_ERROR_CODE, offsetof(struct exit_fields, intr_error) },
    { "IDT-vectoring information", VMCS_IDT_VECTORING_INFO, offsetof(struct exit_fields, idt_info) },
    { "IDT-vectoring error code", VMCS_IDT_VECTORING_ERROR_CODE, offsetof(struct exit_fields, idt_error) },
    { "exit instruction length", VMCS_EXIT_INSTRUCTION_LENGTH, offsetof(struct exit_fields, length) },
    { "exit instruction information", VMCS_EXIT_INSTRUCTION_INFO, offsetof(struct exit_fields, instruction_info) },
};

static uint64_t *exit_field(struct exit_fields *f, int i) { return (uint64_t *)((uint8_t *)f + g_exit_fields[i].offset); }

static void read_exit_fields(struct exit_fields *f)
{
    for (int i = 0; i < (int)ARRAY_SIZE(g_exit_fields); i++)
        *exit_field(f, i) = vmcs_read(g_exit_fields[i].field);
}

/* L1's own state that a failed entry must leave as it was. */
struct l1_state {
    uintptr_t cr3;
    struct desc_ptr gdtr, idtr;
};

static inline uintptr_t read_rsp(void)
{
    uintptr_t rsp;
#ifdef __x86_64__
    __asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
#else
    __asm__ volatile("mov %%esp, %0" : "=r"(rsp));
#endif
    return rsp;
}

/* One failing entry: arm() breaks the VMCS, disarm() repairs it. vmfail_error != 0: a VMfailValid
 * with that error is expected instead of an exit (then no exit field may change). */
struct fail_case {
    const char *what;
    void (*arm)(struct scenario *s);
    void (*disarm)(struct scenario *s);
    uint32_t reason;
    uint64_t qualification;
    uint32_t vmfail_error;
};

static uint64_t g_saved;
static struct vcpu g_vcpu;

static void arm_rflags(struct scenario *s)
{
    g_saved = vmcs_read(VMCS_GUEST_RFLAGS);
    if (!s->inject) /* the negative control forgets this, so the entry works */
        vmcs_write(VMCS_GUEST_RFLAGS, g_saved & ~(uint64_t)0x2);
}
static void disarm_rflags(struct scenario *s) { (void)s; vmcs_write(VMCS_GUEST_RFLAGS, g_saved); }

static void arm_pg_without_pe(struct scenario *s)
{
    (void)s;
    g_saved = vmcs_read(VMCS_GUEST_CR0);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS2, PROC2_UNRESTRICTED_GUEST, 0);
    vmcs_write(VMCS_GUEST_CR0, g_saved & ~(uint64_t)CR0_PE);
}
static void disarm_pg_without_pe(struct scenario *s)
{
    (void)s;
    vmcs_write(VMCS_GUEST_CR0, g_saved);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS2, 0, PROC2_UNRESTRICTED_GUEST);
}

#ifdef __x86_64__
static void arm_ia32e_without_pae(struct scenario *s)
{
    (void)s;
    g_saved = vmcs_read(VMCS_GUEST_CR4);
    vmcs_write(VMCS_GUEST_CR4, g_saved & ~(uint64_t)CR4_PAE);
}
static void disarm_ia32e_without_pae(struct scenario *s) { (void)s; vmcs_write(VMCS_GUEST_CR4, g_saved); }
#else
static void arm_ia32e_without_pae(struct scenario *s)
{
    (void)s;
    vcpu_set_controls(VMCS_ENTRY_CONTROLS, ENTRY_IA32E_MODE_GUEST, 0);
}
static void disarm_ia32e_without_pae(struct scenario *s) { (void)s; vcpu_set_controls(VMCS_ENTRY_CONTROLS, 0, ENTRY_IA32E_MODE_GUEST); }
#endif

static void arm_extint_if0(struct scenario *s)
{
    (void)s;
    g_saved = vmcs_read(VMCS_GUEST_RFLAGS);
    vmcs_write(VMCS_GUEST_RFLAGS, g_saved & ~(uint64_t)RFLAGS_IF);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_EXTERNAL | 0x30);
}
static void disarm_extint_if0(struct scenario *s)
{
    uint32_t left = (uint32_t)vmcs_read(VMCS_ENTRY_INTERRUPTION_INFO);
    if (left & INTR_INFO_VALID) /* 27.8 does not say that a failed entry clears it */
        scenario_info(s, "VM-entry interruption information still 0x%x after the failed entry", left);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
    vmcs_write(VMCS_GUEST_RFLAGS, g_saved);
}

static void arm_debugctl(struct scenario *s)
{
    (void)s;
    vcpu_set_controls(VMCS_ENTRY_CONTROLS, ENTRY_LOAD_DEBUG_CONTROLS, 0);
    vmcs_write(VMCS_GUEST_IA32_DEBUGCTL, 1ull << 32); /* bits 63:16 are reserved */
}
static void disarm_debugctl(struct scenario *s)
{
    (void)s;
    vmcs_write(VMCS_GUEST_IA32_DEBUGCTL, 0);
    /* Leave "load debug controls" as vcpu_init chose it (it is a default-1 control). */
    if (!(g_vmx.entry & ENTRY_LOAD_DEBUG_CONTROLS))
        vcpu_set_controls(VMCS_ENTRY_CONTROLS, 0, ENTRY_LOAD_DEBUG_CONTROLS);
}

/* Entry 1 loads IA32_SYSENTER_CS with L1's own value (VM exit restores it anyway), entry 2 names
 * IA32_FS_BASE, which VM entry must refuse (SDM 27.4). */
struct msr_entry {
    uint32_t index, reserved;
    uint64_t data;
} __attribute__((packed));
static struct msr_entry *g_msr_list;

static void arm_msr_list(struct scenario *s)
{
    (void)s;
    g_msr_list[0] = (struct msr_entry){ MSR_IA32_SYSENTER_CS, 0, rdmsr(MSR_IA32_SYSENTER_CS) };
    g_msr_list[1] = (struct msr_entry){ MSR_IA32_FS_BASE, 0, 0 };
    vmcs_write(VMCS_ENTRY_MSR_LOAD_ADDR, (uintptr_t)g_msr_list);
    vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, 2);
}
static void disarm_msr_list(struct scenario *s) { (void)s; vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, 0); }

static const struct fail_case g_cases[] = {
    { "RFLAGS bit 1 clear", arm_rflags, disarm_rflags, ENTRY_FAIL(EXIT_INVALID_GUEST_STATE), 0, 0 },
    { "CR0.PG without CR0.PE (unrestricted guest)", arm_pg_without_pe, disarm_pg_without_pe,
      ENTRY_FAIL(EXIT_INVALID_GUEST_STATE), 0, 0 },
#ifdef __x86_64__
    { "IA-32e mode guest with CR4.PAE=0", arm_ia32e_without_pae, disarm_ia32e_without_pae,
      ENTRY_FAIL(EXIT_INVALID_GUEST_STATE), 0, 0 },
#else
    { "IA-32e mode guest from an L1 outside IA-32e mode", arm_ia32e_without_pae, disarm_ia32e_without_pae, 0, 0,
      VMXERR_INVALID_HOST_STATE },
#endif
    { "external interrupt injected with IF=0", arm_extint_if0, disarm_extint_if0,
      ENTRY_FAIL(EXIT_INVALID_GUEST_STATE), 0, 0 },
    { "IA32_FS_BASE in the entry MSR-load list (entry 2)", arm_msr_list, disarm_msr_list,
      ENTRY_FAIL(EXIT_MSR_LOADING), 2, 0 },
    /* Last: an entry that wrongly succeeds makes new exit information (and launches). */
    { "load debug controls with IA32_DEBUGCTL bit 32", arm_debugctl, disarm_debugctl,
      ENTRY_FAIL(EXIT_INVALID_GUEST_STATE), 0, 0 },
};

static bool case_offered(const struct fail_case *c)
{
    if (c->arm == arm_pg_without_pe)
        return ALLOWED1(g_vmx.proc2, PROC2_UNRESTRICTED_GUEST) != 0;
    if (c->arm == arm_debugctl)
        return ALLOWED1(g_vmx.entry, ENTRY_LOAD_DEBUG_CONTROLS) != 0;
#ifndef __x86_64__
    if (c->arm == arm_ia32e_without_pae)
        return ALLOWED1(g_vmx.entry, ENTRY_IA32E_MODE_GUEST) != 0;
#endif
    return true;
}

static bool expect_fields_kept(struct scenario *s, const char *how, const struct fail_case *c,
                               struct exit_fields *before, struct exit_fields *after)
{
    bool all_kept = true;
    for (int i = 0; i < (int)ARRAY_SIZE(g_exit_fields); i++) {
        uint64_t expected = *exit_field(before, i);
        if (!c->vmfail_error && i == 0)
            expected = c->reason;
        if (!c->vmfail_error && i == 1)
            expected = c->qualification;
        if (*exit_field(after, i) == expected)
            continue;
        scenario_info(s, "%s, %s: %s expected 0x%llx, observed 0x%llx", how, c->what,
                   g_exit_fields[i].name, (unsigned long long)expected, (unsigned long long)*exit_field(after, i));
        if (all_kept)
            scenario_bad(s, "%s failing on %s: expected %s 0x%llx, observed 0x%llx", how, c->what, g_exit_fields[i].name,
                         (unsigned long long)expected, (unsigned long long)*exit_field(after, i));
        all_kept = false;
    }
    return all_kept;
}

static bool expect_l1_intact(struct scenario *s, const char *what, const struct l1_state *l1, uintptr_t rsp_before,
                             uintptr_t rsp_after)
{
    struct desc_ptr gdtr = read_gdtr(), idtr = read_idtr();
    if (read_cr3() != l1->cr3 || rsp_after != rsp_before || gdtr.base != l1->gdtr.base ||
        gdtr.limit != l1->gdtr.limit || idtr.base != l1->idtr.base || idtr.limit != l1->idtr.limit)
        return scenario_bad(s, "L1 changed by the failed entry (%s): CR3 0x%llx->0x%llx RSP 0x%llx->0x%llx "
                               "GDTR 0x%llx->0x%llx IDTR 0x%llx->0x%llx",
                            what, (unsigned long long)l1->cr3, (unsigned long long)read_cr3(),
                            (unsigned long long)rsp_before, (unsigned long long)rsp_after,
                            (unsigned long long)l1->gdtr.base, (unsigned long long)gdtr.base,
                            (unsigned long long)l1->idtr.base, (unsigned long long)idtr.base);
    return true;
}

/* One failing entry by VMLAUNCH or VMRESUME (whatever the launch state says). Returns false
 * when going on is unsafe (the entry did not fail). */
static bool run_case(struct scenario *s, const struct fail_case *c, const struct l1_state *l1)
{
    const char *how = g_vcpu.launched ? "VMRESUME" : "VMLAUNCH";
    struct exit_fields before, after;
    read_exit_fields(&before);
    c->arm(s);
    bool was_launched = g_vcpu.launched;
    uintptr_t rsp_before = read_rsp();
    int rc = vcpu_run(&g_vcpu);
    uintptr_t rsp_after = read_rsp();
    c->disarm(s);
    if (!expect_l1_intact(s, c->what, l1, rsp_before, rsp_after))
        return false;
    read_exit_fields(&after);
    if (c->vmfail_error) {
        if (rc != VMX_FAIL_VALID || g_vcpu.entry_error != c->vmfail_error)
            return scenario_bad(s, "%s with %s: expected VMfailValid error %u, observed status %d error %u", how,
                                c->what, c->vmfail_error, rc, g_vcpu.entry_error);
    } else if (rc != VMX_OK) {
        return scenario_bad(s, "%s with %s: expected a VM-entry failure exit 0x%x, observed VMfail status %d error %u",
                            how, c->what, c->reason, rc, g_vcpu.entry_error);
    } else if (!(g_vcpu.exit.reason & (1u << 31))) {
        scenario_info(s, "%s with %s: the entry succeeded (%s exit %u)", how, c->what,
                      exit_reason_name(g_vcpu.exit.reason), g_vcpu.exit.reason);
        scenario_bad(s, "%s with %s: expected a VM-entry failure exit 0x%x, observed the entry succeed (%s exit %u)", how,
                     c->what, c->reason, exit_reason_name(g_vcpu.exit.reason), g_vcpu.exit.reason);
        /* L2 ran into its #NP exit again: safe to go on after the last step, which comes last
         * so that a CPU that misses this check does not hide the others. */
        return c == &g_cases[ARRAY_SIZE(g_cases) - 1];
    }
    if (g_vcpu.launched != was_launched)
        return scenario_error(s, "the vCPU's launch state changed on a failed entry");
    expect_fields_kept(s, how, c, &before, &after);
    return true;
}

static bool run_cases(struct scenario *s, const struct l1_state *l1)
{
    for (int i = 0; i < (int)ARRAY_SIZE(g_cases); i++) {
        if (!case_offered(&g_cases[i])) {
            scenario_info(s, "step '%s' not run: control not offered (IA32_VMX_PROCBASED_CTLS2=0x%llx, "
                             "IA32_VMX_ENTRY_CTLS=0x%llx)",
                          g_cases[i].what, (unsigned long long)g_vmx.proc2, (unsigned long long)g_vmx.entry);
            continue;
        }
        if (!run_case(s, &g_cases[i], l1))
            return false;
    }
    return true;
}

/* L2's first exits: EPT violation, VMPTRST, then #NP while delivering INT 0x31. */
static bool fill_exit_fields(struct scenario *s, struct ept *ept)
{
    uintptr_t probe = (uintptr_t)g_efi_probe;
    ept_set_4k(ept, probe, 0, 0);
    ept_invalidate(ept);
    if (!vcpu_run_expect(s, &g_vcpu, EXIT_EPT_VIOLATION) ||
        !expect_eq(s, "EPT violation address", probe, g_vcpu.exit.guest_physical))
        return false;
    ept_set_4k(ept, probe, probe, EPT_RWX);
    ept_invalidate(ept);
    if (!vcpu_run_expect(s, &g_vcpu, EXIT_VMPTRST))
        return false;
    vcpu_skip_instruction(&g_vcpu);
    if (!vcpu_run_expect(s, &g_vcpu, EXIT_EXCEPTION_NMI))
        return false;
    const struct vmx_exit *e = &g_vcpu.exit;
    return expect_eq(s, "interruption information of the #NP exit", INTR_INFO_VALID | INTR_INFO_ERROR_CODE |
                     INTR_TYPE_HW_EXCEPTION | 11, e->interruption_info & ~INTR_INFO_NMI_UNBLOCKED_BY_IRET) &&
           expect_eq(s, "#NP error code", INT_VECTOR * 8 + 2, e->interruption_error) &&
           expect_eq(s, "IDT-vectoring information of the #NP exit", INTR_INFO_VALID | INTR_TYPE_SW_INTERRUPT | INT_VECTOR,
                     e->idt_vectoring_info & ~(1u << 12));
}

static void vmentry_fail_info(struct scenario *s)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    ((uint8_t *)idt)[INT_VECTOR * guest_idt_gate_size() + 5] &= 0x7f; /* an interrupt gate, not present */
    struct ept ept;
    ept_build_identity(&ept, false);
    g_msr_list = page_alloc();
    uint8_t *root_copy = page_alloc();
    uintptr_t l1_cr3 = read_cr3();
    memcpy(root_copy, (const void *)(l1_cr3 & ~(uintptr_t)0xfff), PAGE_SIZE);

    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)efi_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp };
    vcpu_init(&g_vcpu, &cfg);
    vmcs_write(VMCS_GUEST_CR3, (uintptr_t)root_copy | (l1_cr3 & 0xfff));
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | RFLAGS_IF);
    if (!fill_exit_fields(s, &ept))
        return;

    struct l1_state l1 = { read_cr3(), read_gdtr(), read_idtr() };
    if (!run_cases(s, &l1)) /* VMRESUME: the VMCS is launched */
        return;
    if (vmcs_clear(g_vcpu.vmcs_phys) != VMX_OK || vmcs_load(g_vcpu.vmcs_phys) != VMX_OK)
        return (void)scenario_error(s, "VMCLEAR/VMPTRLD failed");
    g_vcpu.launched = false;
    for (int i = 0; i + 1 < (int)ARRAY_SIZE(g_cases); i++) /* VMLAUNCH, the DEBUGCTL step after the check below */
        if (case_offered(&g_cases[i]) && !run_case(s, &g_cases[i], &l1))
            return;
    g_vcpu.launched = true; /* the failed VMLAUNCHes must have left the VMCS clear */
    int rc = vcpu_run(&g_vcpu);
    g_vcpu.launched = false;
    if (rc != VMX_FAIL_VALID || g_vcpu.entry_error != VMXERR_VMRESUME_NONLAUNCHED)
        return (void)scenario_bad(s, "expected VMRESUME after failed VMLAUNCHes to fail with error 5, observed status %d "
                                     "error %u (exit reason 0x%x)",
                                  rc, g_vcpu.entry_error, rc == VMX_OK ? g_vcpu.exit.reason : 0);
    const struct fail_case *last = &g_cases[ARRAY_SIZE(g_cases) - 1];
    if (case_offered(last) && !run_case(s, last, &l1))
        return;
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)efi_done);
    if (!vcpu_expect_call(s, &g_vcpu, GUEST_CALL_DONE))
        return;
    scenario_good(s);
}
