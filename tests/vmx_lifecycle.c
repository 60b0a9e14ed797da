/*
 * vmx_lifecycle: the life cycle of a VMCS and the VMX instructions' status rules.
 *
 * Checks, in order (Intel SDM Vol. 3C, chapter 25.1 "VMCS states" and chapter 31.3/31.4,
 * "VMX instruction reference" and "VM-instruction error numbers"):
 *   - VMXON's rules from outside VMX operation, in the order of its pseudo-code (31.3 "VMXON -
 *     Enter VMX Operation"; 24.7 "Enabling and entering VMX operation", 24.8 "Restrictions on
 *     VMX operation"), in a VMXOFF window on the BSP with interrupts off: CR4.VMXE = 0 gives #UD;
 *     CR0.NE (fixed to 1 by IA32_VMX_CR0_FIXED0) cleared gives #GP(0); a CR4 bit fixed to 0 by
 *     IA32_VMX_CR4_FIXED1 that the CPU lets L1 set (TSD, DE, PCE, OSFXSR, OSXMMEXCPT, UMIP,
 *     FSGSBASE, OSXSAVE are tried; INFO when none can be set) gives #GP(0); IA32_FEATURE_CONTROL
 *     with its lock bit clear would give #GP(0), but LHV locks it at boot and the lock holds
 *     until reset: INFO with the value; a VMXON pointer with a bit beyond the physical-address
 *     width (CPUID 80000008H) or not 4 KiB aligned gives VMfailInvalid; a VMXON region whose
 *     revision identifier is wrong, or has bit 31 set, gives VMfailInvalid. CR0, CR4, IF, VMX
 *     operation and the current VMCS are put back before the checks below;
 *   - VMXON in VMX root operation with a current VMCS fails with VMfailValid, error 15;
 *   - VMPTRST returns the VMCS that VMPTRLD made current;
 *   - VMLAUNCH runs a guest that executes CPUID then VMCALL: exit reasons 10 and 18 with
 *     instruction lengths 2 and 3 (SDM 28.2.5 "Information for VM exits due to instruction
 *     execution");
 *   - VMLAUNCH of a launched VMCS fails with error 4;
 *   - VMCLEAR makes the VMCS not current (VMPTRST gives all ones, VMREAD gives VMfailInvalid),
 *     VMPTRLD brings back every field of the field table unchanged, VMRESUME of the now clear
 *     VMCS fails with error 5, and VMLAUNCH runs the guest again;
 *   - with LHV_OPT 0x80 (USE_VMXOFF): VMXOFF, VMXON, no current VMCS afterwards, relaunch.
 * This is the original LHV's basic loop, the ground every nested hypervisor must get right.
 * GOOD: all of the above. BAD: names the first rule that did not hold.
 * Negative control (inject=vmx_lifecycle): L1 forgets to advance RIP past CPUID, so the guest
 * executes CPUID again and the expected VMCALL exit does not come; and L1 forgets to clear
 * CR4.VMXE before the #UD probe, so VMXON succeeds instead. The VMXOFF window restores
 * everything and the scenario goes on after a BAD there, so one does not hide the other.
 * Needs: VMX.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmx_lifecycle, 0, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vmx_lifecycle);

#define CALL_AFTER_CPUID (GUEST_CALL_USER + 1)

static uintptr_t guest_cpuid_then_vmcall(uintptr_t arg)
{
    uint32_t eax = 0, ebx, ecx = 0, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx)); /* 0f a2: 2 bytes */
    guest_vmcall(CALL_AFTER_CPUID, eax, arg); /* 0f 01 c1: 3 bytes */
    return 0;
}

/* ---- VMXON from outside VMX operation ---- */

#define VMXON_FAULTED 0xffffffffu
#define FLAGS_CF 0x01u
#define FLAGS_ZF 0x40u
#define CR4_TSD (1u << 2)
#define CR4_DE (1u << 3)
#define CR4_PCE (1u << 8)
#define CR4_OSFXSR (1u << 9)
#define CR4_OSXMMEXCPT (1u << 10)
#define CR4_UMIP (1u << 11)
#define CR4_FSGSBASE (1u << 16)
#define CR4_OSXSAVE (1u << 18)
/* CR4 bits that change nothing L1 does for the one instruction they are set around. */
#define CR4_HARMLESS_BITS (CR4_TSD | CR4_DE | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_UMIP | CR4_FSGSBASE | CR4_OSXSAVE)

/* lc_vmxon(&pointer): RFLAGS after VMXON, or VMXON_FAULTED when the armed fault came.
 * lc_write_cr4(value): 0, or 1 when the armed #GP came (a bit the CPU does not have). */
uint32_t lc_vmxon(const uint64_t *pointer);
uint32_t lc_write_cr4(uintptr_t value);
extern const uint8_t lc_vmxon_insn[], lc_vmxon_resume[], lc_write_cr4_insn[], lc_write_cr4_resume[];
#ifdef __x86_64__
__asm__(".pushsection .text\n"
        "lc_vmxon:\n"
        "lc_vmxon_insn:\n vmxon (%rdi)\n pushf\n pop %rax\n ret\n"
        "lc_vmxon_resume:\n mov $0xffffffff, %eax\n ret\n"
        "lc_write_cr4:\n"
        "lc_write_cr4_insn:\n mov %rdi, %cr4\n xor %eax, %eax\n ret\n"
        "lc_write_cr4_resume:\n mov $1, %eax\n ret\n"
        ".popsection\n");
#else
__asm__(".pushsection .text\n"
        "lc_vmxon:\n mov 4(%esp), %ecx\n"
        "lc_vmxon_insn:\n vmxon (%ecx)\n pushf\n pop %eax\n ret\n"
        "lc_vmxon_resume:\n mov $0xffffffff, %eax\n ret\n"
        "lc_write_cr4:\n mov 4(%esp), %ecx\n"
        "lc_write_cr4_insn:\n mov %ecx, %cr4\n xor %eax, %eax\n ret\n"
        "lc_write_cr4_resume:\n mov $1, %eax\n ret\n"
        ".popsection\n");
#endif

/* What L1 had when the window opened: every probe puts it back. */
struct vmx_off_window {
    uintptr_t cr0, cr4;
    uint64_t region; /* a VMXON region of our own with the right revision identifier */
};

/* A VMXON that should have failed entered VMX operation: leave it again with the saved CR0/CR4. */
static const char *vmxon_outcome(struct vmx_off_window *w, uint32_t flags)
{
    if (flags == VMXON_FAULTED)
        return "a fault";
    if (flags & FLAGS_CF)
        return "VMfailInvalid";
    if (flags & FLAGS_ZF)
        return "VMfailValid";
    write_cr0(w->cr0);
    write_cr4(w->cr4);
    vmx_off();
    return "success (VMX operation entered; left again)";
}

/* VMXON of `pointer` with the fault armed; CR0/CR4 are put back before returning. */
static void vmxon_expect_fault(struct scenario *s, struct vmx_off_window *w, uint64_t pointer, uint32_t vector,
                               const char *what)
{
    struct l1_fault seen;
    l1_expect_fault(vector, (uintptr_t)lc_vmxon_insn, (uintptr_t)lc_vmxon_resume);
    uint32_t flags = lc_vmxon(&pointer);
    bool faulted = l1_fault_taken(&seen);
    write_cr0(w->cr0);
    write_cr4(w->cr4);
    if (!faulted) {
        scenario_bad(s, "VMXON with %s: expected %s, observed %s", what, vector == 6 ? "#UD" : "#GP(0)",
                     vmxon_outcome(w, flags));
        return;
    }
    if (vector == 13)
        expect_eq(s, "VMXON #GP error code", 0, seen.error);
}

static void vmxon_expect_fail_invalid(struct scenario *s, struct vmx_off_window *w, uint64_t pointer, const char *what)
{
    uint32_t flags = lc_vmxon(&pointer);
    if (flags != VMXON_FAULTED && (flags & FLAGS_CF))
        return;
    scenario_bad(s, "VMXON with %s (pointer 0x%llx): expected VMfailInvalid, observed %s", what,
                 (unsigned long long)pointer, vmxon_outcome(w, flags));
}

static void probe_cr0_fixed0(struct scenario *s, struct vmx_off_window *w)
{
    if (!(g_vmx.cr0_fixed0 & CR0_NE)) {
        scenario_info(s, "VMXON with CR0.NE=0 not checked: IA32_VMX_CR0_FIXED0=0x%llx lets NE be 0",
                      (unsigned long long)g_vmx.cr0_fixed0);
        return;
    }
    write_cr0(w->cr0 & ~(uintptr_t)CR0_NE); /* x87 errors only: nothing in L1 notices for one instruction */
    vmxon_expect_fault(s, w, w->region, 13, "CR0.NE=0 (fixed to 1 by IA32_VMX_CR0_FIXED0)");
}

/* The first harmless CR4 bit that FIXED1 forbids and the CPU still lets L1 set. */
static void probe_cr4_fixed1(struct scenario *s, struct vmx_off_window *w)
{
    uint32_t candidates = CR4_HARMLESS_BITS & ~(uint32_t)g_vmx.cr4_fixed1 & ~(uint32_t)w->cr4;
    for (uint32_t bit = 0; bit < 32; bit++) {
        if (!(candidates & (1u << bit)))
            continue;
        l1_expect_fault(13, (uintptr_t)lc_write_cr4_insn, (uintptr_t)lc_write_cr4_resume);
        bool refused = lc_write_cr4(w->cr4 | (1u << bit)) != 0;
        struct l1_fault seen;
        l1_fault_taken(&seen);
        if (refused)
            continue; /* the CPU has no such bit: MOV to CR4 gave #GP */
        char what[80];
        snprintf(what, sizeof(what), "CR4 bit %u set (fixed to 0 by IA32_VMX_CR4_FIXED1)", bit);
        vmxon_expect_fault(s, w, w->region, 13, what);
        return;
    }
    scenario_info(s, "VMXON with a CR4 bit fixed to 0 not checked: IA32_VMX_CR4_FIXED1=0x%llx, none of the "
                     "harmless bits outside it (0x%x of 0x%x) can be set",
                  (unsigned long long)g_vmx.cr4_fixed1, candidates, CR4_HARMLESS_BITS);
}

static uint32_t physical_address_width(void)
{
    if (cpuid(0x80000000u, 0).eax >= 0x80000008u)
        return cpuid(0x80000008u, 0).eax & 0xff;
    return 36; /* SDM Vol. 3A 4.1.4: without the leaf, MAXPHYADDR is 36 */
}

static void probe_vmxon_pointer(struct scenario *s, struct vmx_off_window *w)
{
    uint32_t width = physical_address_width();
    if (width < 64)
        vmxon_expect_fail_invalid(s, w, w->region | (1ull << width), "a bit beyond the physical-address width");
    vmxon_expect_fail_invalid(s, w, w->region + 0x10, "a pointer not 4 KiB aligned");
}

static void probe_revision(struct scenario *s, struct vmx_off_window *w)
{
    volatile uint32_t *revision = (volatile uint32_t *)(uintptr_t)w->region;
    uint32_t right = *revision;
    *revision = right ^ 1;
    vmxon_expect_fail_invalid(s, w, w->region, "a wrong revision identifier in the VMXON region");
    *revision = right | 0x80000000u;
    vmxon_expect_fail_invalid(s, w, w->region, "bit 31 set in the VMXON region's revision identifier");
    *revision = right;
}

/* The probes, outside VMX operation. */
static void vmxon_rules(struct scenario *s, struct vmx_off_window *w)
{
    if (!s->inject)
        write_cr4(w->cr4 & ~(uintptr_t)CR4_VMXE);
    vmxon_expect_fault(s, w, w->region, 6, "CR4.VMXE=0");
    probe_cr0_fixed0(s, w);
    probe_cr4_fixed1(s, w);
    uint64_t feature_control = rdmsr(MSR_IA32_FEATURE_CONTROL);
    if (feature_control & 1)
        scenario_info(s, "VMXON with IA32_FEATURE_CONTROL unlocked not checked: it is locked (0x%llx) and stays so "
                         "until reset", (unsigned long long)feature_control);
    else
        vmxon_expect_fault(s, w, w->region, 13, "IA32_FEATURE_CONTROL lock bit clear");
    probe_vmxon_pointer(s, w);
    probe_revision(s, w);
}

/* VMCLEAR the vcpu's VMCS (not yet launched, so nothing of it changes), VMXOFF, the probes,
 * VMXON, VMPTRLD: the checks below find what they would have found without the window. */
static bool vmxon_window(struct scenario *s, struct vcpu *v)
{
    struct percpu *cpu = this_cpu();
    struct vmx_off_window w = { read_cr0(), read_cr4(), vmx_alloc_region_phys(page_alloc()) };
    bool interrupts = (read_flags() & RFLAGS_IF) != 0;
    irq_disable(); /* no handler runs with CR0/CR4 half set */
    if (vmcs_clear(v->vmcs_phys) != VMX_OK || vmx_off() != VMX_OK) {
        if (interrupts)
            irq_enable();
        return scenario_bad(s, "expected VMCLEAR and VMXOFF to succeed");
    }
    cpu->vmx_on = false;
    vmxon_rules(s, &w);
    write_cr0(w.cr0);
    write_cr4(w.cr4);
    int rc = vmx_on(cpu->vmxon_phys);
    if (rc == VMX_OK)
        cpu->vmx_on = true;
    if (interrupts)
        irq_enable();
    if (rc != VMX_OK)
        return scenario_bad(s, "expected VMXON after the probes to succeed, observed status %d", rc);
    if (vmcs_load(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected VMPTRLD after the probes to succeed");
    return true;
}

/* ---- the life cycle ---- */

static bool expect_length(struct scenario *s, struct vcpu *v, uint32_t len)
{
    return expect_eq(s, "VM-exit instruction length", len, v->exit.instruction_length);
}

/* From the guest's first instruction to its final VMCALL. */
static bool run_guest_to_done(struct scenario *s, struct vcpu *v)
{
    vcpu_restart_c_guest(v, guest_cpuid_then_vmcall, 0);
    if (!vcpu_run_expect(s, v, EXIT_CPUID) || !expect_length(s, v, 2))
        return false;
    if (!s->inject)
        vcpu_skip_instruction(v);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL) || !expect_length(s, v, 3))
        return false;
    if (!expect_eq(s, "guest VMCALL number", CALL_AFTER_CPUID, v->regs.rax))
        return false;
    vcpu_skip_instruction(v);
    return vcpu_expect_call(s, v, GUEST_CALL_DONE);
}

static bool expect_vmfail_valid(struct scenario *s, const char *what, int rc, uint32_t error)
{
    if (rc == VMX_FAIL_VALID && vmx_instruction_error() == error)
        return true;
    return scenario_bad(s, "expected %s to give VMfailValid with error %u, observed status %d error %u", what,
                        error, rc, rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
}

static bool expect_current_vmcs(struct scenario *s, uint64_t expected)
{
    uint64_t current = 0;
    if (vmcs_store(&current) != VMX_OK)
        return scenario_bad(s, "expected VMPTRST to succeed");
    return expect_eq(s, "VMPTRST", expected, current);
}

/* Every field of the table, read back: status and value. */
struct field_dump {
    uint8_t status[160];
    uint64_t value[160];
};
static struct field_dump g_before, g_after;

static void dump_fields(struct field_dump *d)
{
    for (size_t i = 0; i < g_vmcs_field_count && i < ARRAY_SIZE(d->value); i++)
        d->status[i] = (uint8_t)vmx_vmread(g_vmcs_fields[i].encoding, &d->value[i]);
}

static bool clear_and_reload(struct scenario *s, struct vcpu *v)
{
    dump_fields(&g_before);
    if (vmcs_clear(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected VMCLEAR of the current VMCS to succeed");
    if (!expect_current_vmcs(s, ~0ull))
        return false;
    uint64_t value;
    if (vmx_vmread(VMCS_GUEST_RIP, &value) != VMX_FAIL_INVALID)
        return scenario_bad(s, "expected VMREAD without a current VMCS to give VMfailInvalid");
    if (vmcs_load(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected VMPTRLD of the cleared VMCS to succeed");
    dump_fields(&g_after);
    for (size_t i = 0; i < g_vmcs_field_count && i < ARRAY_SIZE(g_before.value); i++)
        if (g_before.status[i] != g_after.status[i] ||
            (g_before.status[i] == VMX_OK && g_before.value[i] != g_after.value[i])) /* only fields that exist */
            return scenario_bad(s, "expected %s=0x%llx after VMCLEAR+VMPTRLD, observed 0x%llx", g_vmcs_fields[i].name,
                                (unsigned long long)g_before.value[i], (unsigned long long)g_after.value[i]);
    v->launched = true; /* ask for VMRESUME: the CPU must refuse it, the VMCS is clear */
    if (!expect_vmfail_valid(s, "VMRESUME of a clear VMCS", vcpu_run(v), VMXERR_VMRESUME_NONLAUNCHED))
        return false;
    v->launched = false;
    return run_guest_to_done(s, v);
}

static bool vmxoff_cycle(struct scenario *s, struct vcpu *v)
{
    struct percpu *cpu = this_cpu();
    if (vmcs_clear(v->vmcs_phys) != VMX_OK || vmx_off() != VMX_OK)
        return scenario_bad(s, "expected VMCLEAR and VMXOFF to succeed");
    cpu->vmx_on = false;
    if (vmx_on(cpu->vmxon_phys) != VMX_OK)
        return scenario_bad(s, "expected VMXON after VMXOFF to succeed");
    cpu->vmx_on = true;
    if (!expect_current_vmcs(s, ~0ull) || vmcs_load(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected no current VMCS after VMXON and a working VMPTRLD");
    v->launched = false;
    return run_guest_to_done(s, v);
}

static void vmx_lifecycle(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_cpuid_then_vmcall, 0);
    if (!vmxon_window(s, &v))
        return;
    if (!expect_vmfail_valid(s, "VMXON in VMX root operation", vmx_on(this_cpu()->vmxon_phys), VMXERR_VMXON_IN_ROOT))
        return;
    if (!expect_current_vmcs(s, v.vmcs_phys) || !run_guest_to_done(s, &v))
        return;
    v.launched = false; /* ask for VMLAUNCH: the CPU must refuse it, the VMCS is launched */
    if (!expect_vmfail_valid(s, "VMLAUNCH of a launched VMCS", vcpu_run(&v), VMXERR_VMLAUNCH_NONCLEAR))
        return;
    if (!clear_and_reload(s, &v))
        return;
    if ((lhv_opt() & LHV_OPT_USE_VMXOFF) && !vmxoff_cycle(s, &v))
        return;
    scenario_good(s);
}
