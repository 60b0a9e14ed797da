/*
 * apic_virt: TPR shadow and virtual-interrupt delivery (Intel SDM Vol. 3C ch. 30 "APIC
 * Virtualization and Virtual Interrupts": 30.1.1 virtualized APIC registers, 30.1.2 TPR
 * virtualization, 30.3 MOV to/from CR8, 30.4.3 virtualizing memory-mapped APIC writes, 30.1.3
 * and 30.2 virtual-interrupt delivery, 30.1.4 EOI virtualization, 30.5 x2APIC MSR virtualization;
 * 27.2.1.1 VM-entry checks on the TPR threshold; Appendix C exits 43 TPR below threshold and 45
 * virtualized EOI).
 *
 * 1. VM-entry checks with "use TPR shadow" and no virtual-interrupt delivery: TPR threshold bits
 *    31:4 set, and a threshold above VTPR[7:4] (virtualize APIC accesses 0), give VMfailValid 7.
 * 2. amd64: MOV from CR8 reads VTPR[7:4]; MOV to CR8 writes VTPR (value << 4); lowering it below
 *    the threshold gives exit 43 after the instruction (trap-like, RIP past the MOV). i386 has
 *    no CR8 ("CR8 exists only in 64-bit mode"): that part is an INFO there.
 * 3. With "virtualize APIC accesses" (both subarchs): L2's 32-bit write of VTPR through the
 *    APIC-access page (offset 80H) lands in the virtual-APIC page and, below the threshold,
 *    gives exit 43 after the instruction.
 * 4. Where virtualize x2APIC mode, APIC-register virtualization and virtual-interrupt delivery
 *    are offered (secondary bits 4, 8, 9): RVI 51H with VIRR 50H and 51H pending is delivered at
 *    VM entry through L2's IDT with IF=1 (SVI becomes 51H, RVI 50H); L2's EOI by WRMSR 80BH
 *    clears it and delivers 50H; the EOI of 50H, whose EOI-exit bitmap bit is set, gives exit 45
 *    with 50H in the qualification. Not offered: INFO with the MSR value.
 * 5. x2APIC MSRs that L1's MSR bitmap passes through with "virtualize x2APIC mode" off read L1's
 *    own x2APIC state (30.5 applies only with that control set; 26.1.3 "Instructions that cause
 *    VM exits conditionally"; Vol. 3A 11.12.1.2: in xAPIC mode RDMSR of them is #GP(0)). Xen
 *    7b2b93d30c ("nvmx: always trap accesses to x2APIC MSRs", 2020) fixed merged bitmaps that
 *    let L2 read the host's APIC instead. L2 reads MSRs 802H (ID), 803H (version), 808H (TPR):
 *    - L1 in xAPIC mode (LHV's default): L1 first checks its own RDMSR of each gives #GP; L2's
 *      passed-through RDMSR must give #GP(0) too (exit 0 through the exception bitmap), never a
 *      value;
 *    - L1 in x2APIC mode (firmware left it on): L1 sets its TPR to 30H for the step, and L2 must
 *      read exactly L1's ID, version and TPR;
 *    - with the bitmap's read bits set, each RDMSR exits (31) with ECX = the MSR.
 *    L1 does not switch modes for this step: the only way back from x2APIC to xAPIC mode passes
 *    through the globally disabled APIC (Vol. 3A 11.12.5), and Bochs (cpu/msr.cc relocate_apic,
 *    2.7 to master) ignores every IA32_APIC_BASE write while the APIC is disabled, so L1 would lose
 *    its LAPIC and its watchdog. The INFO line says which view was checked, with CPUID.1:ECX.
 * Not checked here (INFO): posted interrupts.
 * GOOD: all of the above. BAD: the first difference.
 * Negative control (inject=apic_virt): L1 leaves the TPR threshold at 0, so no exit 43 comes.
 * Needs: VMX with "use TPR shadow" (SKIP with the MSR otherwise).
 */
#include "guest/guest.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(apic_virt, 0, "vmx", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, apic_virt);

#define PROC_USE_TPR_SHADOW (1u << 21)
#define PROC2_VIRTUALIZE_APIC_ACCESSES (1u << 0)
#define PROC2_VIRTUALIZE_X2APIC (1u << 4)
#define PROC2_APIC_REGISTER_VIRT (1u << 8)
#define PROC2_VIRTUAL_INTR_DELIVERY (1u << 9)
#define PIN_POSTED_INTERRUPTS (1u << 7)
#define EXIT_TPR_BELOW_THRESHOLD 43
#define EXIT_VIRTUALIZED_EOI 45
#define VMXERR_INVALID_CONTROLS 7
#define VAPIC_TPR 0x80
#define VAPIC_ISR 0x100
#define VAPIC_IRR 0x200
#define CALL_CR8_READ (GUEST_CALL_USER + 1)
#define CALL_CR8_RAISED (GUEST_CALL_USER + 2)
#define CALL_CR8_AFTER (GUEST_CALL_USER + 3)
#define CALL_VIRQ (GUEST_CALL_USER + 0x10)
#define CALL_X2APIC_READ (GUEST_CALL_USER + 0x20)
#define VECTOR_HIGH 0x51
#define VECTOR_LOW 0x50

static uint32_t vapic_reg(const uint8_t *vapic, uint32_t offset) { return *(const volatile uint32_t *)(vapic + offset); }
static void vapic_set_bit(uint8_t *vapic, uint32_t base, uint32_t vector)
{
    *(volatile uint32_t *)(vapic + base + (vector / 32) * 16) |= 1u << (vector % 32);
}
static bool vapic_bit(const uint8_t *vapic, uint32_t base, uint32_t vector)
{
    return (vapic_reg(vapic, base + (vector / 32) * 16) >> (vector % 32)) & 1;
}

/* ---- L2 ---- */

#ifdef __x86_64__
/* MOV from/to CR8 (64-bit only), reported by VMCALL: RBX = what MOV from CR8 read. */
extern const uint8_t cr8_guest[], cr8_guest_after_lower[];
__asm__(".pushsection .text\n"
        "cr8_guest:\n"
        "    mov %cr8, %rbx\n"
        "    mov $0x101, %eax\n vmcall\n"         /* CALL_CR8_READ: RBX = VTPR[7:4] */
        "    mov $6, %ecx\n mov %rcx, %cr8\n"     /* not below the threshold: no exit */
        "    mov $0x102, %eax\n vmcall\n"         /* CALL_CR8_RAISED */
        "    mov $3, %ecx\n mov %rcx, %cr8\n"     /* below threshold 4: exit 43 after it */
        "cr8_guest_after_lower:\n"
        "    mov %cr8, %rbx\n"
        "    mov $0x103, %eax\n vmcall\n"         /* CALL_CR8_AFTER */
        "    xor %ebx, %ebx\n mov $0x10, %eax\n vmcall\n ud2\n"
        ".popsection\n");
#endif

/* A 32-bit write of VTPR through the APIC-access page; the address is the argument. */
extern const uint8_t mmio_tpr_guest_after[];
static uintptr_t mmio_tpr_guest(uintptr_t tpr_address)
{
    __asm__ volatile("movl $0x30, (%0)\n"
                     ".globl mmio_tpr_guest_after\nmmio_tpr_guest_after:\n" ::"r"(tpr_address)
                     : "memory");
    return 0;
}

/* Virtual-interrupt handlers: report the vector by VMCALL (registers kept), then IRET. */
extern const uint8_t virq_handler_high[], virq_handler_low[];
#ifdef __x86_64__
#define VIRQ_HANDLER(name, vector) \
    name ":\n push %rax\n push %rbx\n mov $0x110, %eax\n mov $" vector ", %ebx\n vmcall\n pop %rbx\n pop %rax\n iretq\n"
#else
#define VIRQ_HANDLER(name, vector) \
    name ":\n push %eax\n push %ebx\n mov $0x110, %eax\n mov $" vector ", %ebx\n vmcall\n pop %ebx\n pop %eax\n iret\n"
#endif
__asm__(".pushsection .text\n" VIRQ_HANDLER("virq_handler_high", "0x51") VIRQ_HANDLER("virq_handler_low", "0x50")
        ".popsection\n");
_Static_assert(CALL_VIRQ == 0x110, "keep the handlers' constant in step");

/* Two virtualized EOIs by the x2APIC EOI MSR (EAX = EDX = 0). */
static uintptr_t eoi_guest(uintptr_t arg)
{
    (void)arg;
    __asm__ volatile("wrmsr" ::"c"(0x80b), "a"(0), "d"(0));
    __asm__ volatile("wrmsr" ::"c"(0x80b), "a"(0), "d"(0));
    return 0;
}

/* x2APIC MSRs L2 reads with virtualize x2APIC mode off: ID, version, TPR. */
static const uint32_t g_x2apic_msrs[] = { 0x802, 0x803, 0x808 };

/* Each read reported by VMCALL: EBX = EAX of RDMSR, ECX = the MSR. */
static uintptr_t x2apic_read_guest(uintptr_t arg)
{
    (void)arg;
    for (size_t i = 0; i < ARRAY_SIZE(g_x2apic_msrs); i++) {
        uint32_t low, high;
        __asm__ volatile("rdmsr" : "=a"(low), "=d"(high) : "c"(g_x2apic_msrs[i]));
        guest_vmcall(CALL_X2APIC_READ, low, g_x2apic_msrs[i]);
    }
    return 0;
}

/* ---- L1 ---- */

static uint8_t *setup_tpr_shadow(struct vcpu *v, uint32_t vtpr, uint32_t threshold)
{
    uint8_t *vapic = page_alloc();
    *(volatile uint32_t *)(vapic + VAPIC_TPR) = vtpr;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_USE_TPR_SHADOW, PROC_CR8_LOAD_EXITING | PROC_CR8_STORE_EXITING);
    vmcs_write(VMCS_VIRTUAL_APIC_PAGE, (uintptr_t)vapic);
    vmcs_write(VMCS_TPR_THRESHOLD, threshold);
    (void)v;
    return vapic;
}

static void set_secondary(uint32_t bits)
{
    bool secondary = (vmcs_read(VMCS_PROC_BASED_CONTROLS) & PROC_ACTIVATE_SECONDARY) != 0;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_ACTIVATE_SECONDARY, 0);
    vmcs_write(VMCS_PROC_BASED_CONTROLS2, (secondary ? vmcs_read(VMCS_PROC_BASED_CONTROLS2) : 0) | bits);
}

static bool expect_entry_fails(struct scenario *s, struct vcpu *v, uint32_t threshold, const char *what)
{
    vmcs_write(VMCS_TPR_THRESHOLD, threshold);
    int rc = vcpu_run(v);
    if (rc == VMX_FAIL_VALID && v->entry_error == VMXERR_INVALID_CONTROLS)
        return true;
    return scenario_bad(s, "VM entry with %s (threshold 0x%x, VTPR 0x50): expected VMfailValid 7, observed %s %u", what,
                        threshold, rc == VMX_OK ? "an entry, exit" : rc == VMX_FAIL_VALID ? "VMfailValid" : "VMfailInvalid",
                        rc == VMX_OK ? v->exit.reason : v->entry_error);
}

static bool check_threshold_entry_checks(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, eoi_guest, 0);
    setup_tpr_shadow(&v, 0x50, 0);
    return expect_entry_fails(s, &v, 0x14, "TPR threshold bits 31:4 set") &&
           expect_entry_fails(s, &v, 6, "TPR threshold above VTPR[7:4]");
}

static bool expect_tpr_exit(struct scenario *s, struct vcpu *v, uintptr_t after, const char *what)
{
    if (!vcpu_run_expect(s, v, EXIT_TPR_BELOW_THRESHOLD))
        return false;
    char text[80];
    snprintf(text, sizeof(text), "%s: guest RIP at exit 43 (after the instruction)", what);
    return expect_eq(s, text, after, v->exit.guest_rip);
}

#ifdef __x86_64__
static bool check_cr8(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)cr8_guest, .stack_top = guest_stack_top() };
    vcpu_init(&v, &cfg);
    uint8_t *vapic = setup_tpr_shadow(&v, 0x50, s->inject ? 0 : 4);
    if (!vcpu_expect_call(s, &v, CALL_CR8_READ) || !expect_eq(s, "MOV from CR8 (VTPR[7:4])", 5, v.regs.rbx))
        return false;
    if (!vcpu_expect_call(s, &v, CALL_CR8_RAISED) || !expect_eq(s, "VTPR after MOV to CR8 of 6", 0x60, vapic_reg(vapic, VAPIC_TPR)))
        return false;
    if (!expect_tpr_exit(s, &v, (uintptr_t)cr8_guest_after_lower, "MOV to CR8 of 3") ||
        !expect_eq(s, "VTPR after MOV to CR8 of 3", 0x30, vapic_reg(vapic, VAPIC_TPR)))
        return false;
    vmcs_write(VMCS_TPR_THRESHOLD, 0); /* VTPR 3 < 4 would fail the next entry (27.2.1.1) */
    return vcpu_expect_call(s, &v, CALL_CR8_AFTER) && expect_eq(s, "MOV from CR8 after the exit", 3, v.regs.rbx) &&
           vcpu_expect_call(s, &v, GUEST_CALL_DONE);
}
#endif

static bool check_mmio_tpr(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.proc, PROC_ACTIVATE_SECONDARY) || !ALLOWED1(g_vmx.proc2, PROC2_VIRTUALIZE_APIC_ACCESSES)) {
        scenario_info(s, "TPR write through the APIC-access page not checked: virtualize APIC accesses not allowed by "
                         "IA32_VMX_PROCBASED_CTLS2=0x%llx", (unsigned long long)g_vmx.proc2);
        return true;
    }
    uint8_t *apic_access = page_alloc();
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, mmio_tpr_guest, (uintptr_t)apic_access + VAPIC_TPR);
    uint8_t *vapic = setup_tpr_shadow(&v, 0x50, s->inject ? 0 : 4);
    set_secondary(PROC2_VIRTUALIZE_APIC_ACCESSES);
    vmcs_write(VMCS_APIC_ACCESS_ADDR, (uintptr_t)apic_access);
    if (!expect_tpr_exit(s, &v, (uintptr_t)mmio_tpr_guest_after, "VTPR write through the APIC-access page") ||
        !expect_eq(s, "VTPR after the write through the APIC-access page", 0x30, vapic_reg(vapic, VAPIC_TPR)) ||
        !expect_eq(s, "APIC-access page itself (not written)", 0, *(volatile uint32_t *)(apic_access + VAPIC_TPR)))
        return false;
    vmcs_write(VMCS_TPR_THRESHOLD, 0);
    return vcpu_expect_call(s, &v, GUEST_CALL_DONE);
}

static bool expect_virq(struct scenario *s, struct vcpu *v, uint32_t vector, uint32_t rvi, uint32_t svi)
{
    char text[64];
    snprintf(text, sizeof(text), "virtual interrupt delivered to L2");
    if (!vcpu_expect_call(s, v, CALL_VIRQ) || !expect_eq(s, text, vector, v->regs.rbx))
        return false;
    uint64_t status = vmcs_read(VMCS_GUEST_INTR_STATUS);
    snprintf(text, sizeof(text), "RVI after delivering 0x%x", vector);
    if (!expect_eq(s, text, rvi, status & 0xff))
        return false;
    snprintf(text, sizeof(text), "SVI after delivering 0x%x", vector);
    return expect_eq(s, text, svi, status >> 8);
}

static bool check_virtual_interrupts(struct scenario *s)
{
    uint32_t needed = PROC2_VIRTUALIZE_X2APIC | PROC2_APIC_REGISTER_VIRT | PROC2_VIRTUAL_INTR_DELIVERY;
    if (!ALLOWED1(g_vmx.proc, PROC_ACTIVATE_SECONDARY) || ALLOWED1(g_vmx.proc2, needed) != needed) {
        scenario_info(s, "virtual-interrupt delivery not checked: secondary bits 4, 8, 9 not all allowed by "
                         "IA32_VMX_PROCBASED_CTLS2=0x%llx", (unsigned long long)g_vmx.proc2);
        return true;
    }
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .msr_bitmap = true };
    vcpu_init_c_guest(&v, &cfg, eoi_guest, 0);
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    guest_idt_set_gate(VECTOR_HIGH, (uintptr_t)virq_handler_high);
    guest_idt_set_gate(VECTOR_LOW, (uintptr_t)virq_handler_low);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vmcs_write(VMCS_GUEST_RFLAGS, vmcs_read(VMCS_GUEST_RFLAGS) | RFLAGS_IF);
    uint8_t *vapic = setup_tpr_shadow(&v, 0, 0);
    set_secondary(needed);
    vapic_set_bit(vapic, VAPIC_IRR, VECTOR_HIGH);
    vapic_set_bit(vapic, VAPIC_IRR, VECTOR_LOW);
    vmcs_write(VMCS_GUEST_INTR_STATUS, VECTOR_HIGH); /* RVI 51H, SVI 0 */
    vmcs_write(VMCS_EOI_EXIT_BITMAP1, 1ull << (VECTOR_LOW - 64));
    if (!expect_virq(s, &v, VECTOR_HIGH, VECTOR_LOW, VECTOR_HIGH) ||
        !expect_eq(s, "VISR bit of 51H", 1, vapic_bit(vapic, VAPIC_ISR, VECTOR_HIGH)) ||
        !expect_virq(s, &v, VECTOR_LOW, 0, VECTOR_LOW) ||
        !expect_eq(s, "VISR bit of 51H after its EOI", 0, vapic_bit(vapic, VAPIC_ISR, VECTOR_HIGH)))
        return false;
    if (!vcpu_run_expect(s, &v, EXIT_VIRTUALIZED_EOI) ||
        !expect_eq(s, "exit 45 qualification (the vector)", VECTOR_LOW, v.exit.qualification) ||
        !expect_eq(s, "SVI after the EOI of 50H", 0, vmcs_read(VMCS_GUEST_INTR_STATUS) >> 8))
        return false;
    return vcpu_expect_call(s, &v, GUEST_CALL_DONE);
}

/* ---- x2APIC MSRs passed through (step 5) ---- */

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_EXTD (1u << 10)
#define CPUID1_ECX_X2APIC (1u << 21)
#define X2APIC_TPR 0x808
#define L1_X2APIC_TPR 0x30
#define RDMSR_LENGTH 2                 /* 0f 32 */
#define GP_EXCEPTION_EXIT 0x80000b0du /* valid, hardware exception, error code valid, vector 13 */

/* av_rdmsr(msr): EAX of L1's own RDMSR, or ~0 when the armed #GP came. */
uint32_t av_rdmsr(uint32_t msr);
extern const uint8_t av_rdmsr_insn[], av_rdmsr_resume[];
#ifdef __x86_64__
__asm__(".pushsection .text\n"
        "av_rdmsr:\n mov %edi, %ecx\n"
        "av_rdmsr_insn:\n rdmsr\n ret\n"
        "av_rdmsr_resume:\n mov $0xffffffff, %eax\n ret\n"
        ".popsection\n");
#else
__asm__(".pushsection .text\n"
        "av_rdmsr:\n mov 4(%esp), %ecx\n"
        "av_rdmsr_insn:\n rdmsr\n ret\n"
        "av_rdmsr_resume:\n mov $0xffffffff, %eax\n ret\n"
        ".popsection\n");
#endif

/* L1's own view of the MSRs: their values in x2APIC mode; in xAPIC mode each RDMSR must #GP
 * (SDM Vol. 3A 11.12.1.2), which L1 checks on itself first. */
struct x2apic_view {
    bool x2apic;
    uint32_t value[ARRAY_SIZE(g_x2apic_msrs)];
};

static bool l1_x2apic_view(struct scenario *s, struct x2apic_view *view)
{
    view->x2apic = (rdmsr(MSR_APIC_BASE) & APIC_BASE_EXTD) != 0;
    for (size_t i = 0; i < ARRAY_SIZE(g_x2apic_msrs); i++) {
        if (view->x2apic) {
            view->value[i] = (uint32_t)rdmsr(g_x2apic_msrs[i]);
            continue;
        }
        struct l1_fault seen;
        l1_expect_fault(13, (uintptr_t)av_rdmsr_insn, (uintptr_t)av_rdmsr_resume);
        av_rdmsr(g_x2apic_msrs[i]);
        if (!l1_fault_taken(&seen)) {
            scenario_info(s, "x2APIC MSRs passed through not checked: L1's own RDMSR 0x%x in xAPIC mode gave no #GP "
                             "(CPUID.1:ECX=0x%x, x2APIC %s)",
                          g_x2apic_msrs[i], cpuid(1, 0).ecx, (cpuid(1, 0).ecx & CPUID1_ECX_X2APIC) ? "offered" : "not offered");
            return false;
        }
    }
    return true;
}

/* L2 read the MSR passed through: L1's value in x2APIC mode; in xAPIC mode the #GP L1 gets too
 * (exit 0 through the exception bitmap), after which L1 steps over the RDMSR. */
static bool expect_passed_through(struct scenario *s, struct vcpu *v, const struct x2apic_view *view, size_t i)
{
    char text[96];
    if (!view->x2apic) {
        if (!vcpu_run_expect(s, v, EXIT_EXCEPTION_NMI))
            return false;
        snprintf(text, sizeof(text), "L2's RDMSR 0x%x passed through in xAPIC mode: interruption info", g_x2apic_msrs[i]);
        if (!expect_eq(s, text, GP_EXCEPTION_EXIT, v->exit.interruption_info) ||
            !expect_eq(s, "its #GP error code", 0, v->exit.interruption_error))
            return false;
        vmcs_write(VMCS_GUEST_RIP, v->exit.guest_rip + RDMSR_LENGTH);
        return vcpu_expect_call(s, v, CALL_X2APIC_READ);
    }
    snprintf(text, sizeof(text), "L2's RDMSR 0x%x passed through (L1's x2APIC value)", g_x2apic_msrs[i]);
    return vcpu_expect_call(s, v, CALL_X2APIC_READ) && expect_eq(s, "MSR reported", g_x2apic_msrs[i], v->regs.rcx) &&
           expect_eq(s, text, view->value[i], (uint32_t)v->regs.rbx);
}

/* Intercepted: each RDMSR exits 31 with ECX = the MSR; L1 emulates it with its own value. */
static bool expect_intercepted(struct scenario *s, struct vcpu *v, size_t i)
{
    if (!vcpu_run_expect(s, v, EXIT_RDMSR) ||
        !expect_eq(s, "ECX at the RDMSR exit of an intercepted x2APIC MSR", g_x2apic_msrs[i], (uint32_t)v->regs.rcx))
        return false;
    v->regs.rax = 0x5a5a0000u | g_x2apic_msrs[i];
    v->regs.rdx = 0;
    vcpu_skip_instruction(v);
    return vcpu_expect_call(s, v, CALL_X2APIC_READ) &&
           expect_eq(s, "L2's RDMSR of an intercepted x2APIC MSR (L1's emulation)", 0x5a5a0000u | g_x2apic_msrs[i],
                     (uint32_t)v->regs.rbx);
}

static bool x2apic_reads(struct scenario *s, const struct x2apic_view *view, bool intercept)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .msr_bitmap = true };
    vcpu_init_c_guest(&v, &cfg, x2apic_read_guest, 0);
    for (size_t i = 0; intercept && i < ARRAY_SIZE(g_x2apic_msrs); i++)
        v.msr_bitmap[g_x2apic_msrs[i] / 8] |= (uint8_t)(1u << (g_x2apic_msrs[i] % 8)); /* read bitmap, low MSRs */
    for (size_t i = 0; i < ARRAY_SIZE(g_x2apic_msrs); i++)
        if (!(intercept ? expect_intercepted(s, &v, i) : expect_passed_through(s, &v, view, i)))
            return false;
    return vcpu_expect_call(s, &v, GUEST_CALL_DONE);
}

static bool check_x2apic_passthrough(struct scenario *s)
{
    uint32_t cpuid1_ecx = cpuid(1, 0).ecx;
    if (!ALLOWED1(g_vmx.proc, PROC_USE_MSR_BITMAPS)) {
        scenario_info(s, "x2APIC MSRs passed through not checked: MSR bitmaps not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx",
                      (unsigned long long)g_vmx.proc);
        return true;
    }
    struct x2apic_view view;
    uint64_t saved_tpr = 0;
    bool x2apic = (rdmsr(MSR_APIC_BASE) & APIC_BASE_EXTD) != 0;
    if (x2apic) { /* a TPR of its own, so that L2 cannot read the right value by chance */
        saved_tpr = rdmsr(X2APIC_TPR);
        wrmsr(X2APIC_TPR, L1_X2APIC_TPR);
    }
    bool ok = l1_x2apic_view(s, &view) && x2apic_reads(s, &view, false) && x2apic_reads(s, &view, true);
    if (x2apic)
        wrmsr(X2APIC_TPR, saved_tpr);
    if (!ok)
        return s->verdict != VERDICT_BAD;
    if (view.x2apic)
        scenario_info(s, "x2APIC MSRs passed through, L1 in x2APIC mode: L2 read ID 0x%x, version 0x%x, TPR 0x%x "
                         "(L1's); intercepted: exits 31",
                      view.value[0], view.value[1], view.value[2]);
    else
        scenario_info(s, "x2APIC MSRs passed through, L1 in xAPIC mode: #GP(0) in L2 as in L1; intercepted: exits 31; "
                         "values not compared (L1 stays in xAPIC mode; CPUID.1:ECX=0x%x, x2APIC %s)",
                      cpuid1_ecx, (cpuid1_ecx & CPUID1_ECX_X2APIC) ? "offered" : "not offered");
    return true;
}

static void apic_virt(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.proc, PROC_USE_TPR_SHADOW)) {
        scenario_skip(s, "use TPR shadow not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx", (unsigned long long)g_vmx.proc);
        return;
    }
    if (!check_threshold_entry_checks(s))
        return;
#ifdef __x86_64__
    if (!check_cr8(s))
        return;
#else
    scenario_info(s, "MOV to/from CR8 not checked: CR8 exists only in 64-bit mode");
#endif
    if (!check_mmio_tpr(s) || !check_virtual_interrupts(s) || !check_x2apic_passthrough(s))
        return;
    scenario_info(s, "posted interrupts not checked (%s by IA32_VMX_PINBASED_CTLS=0x%llx)",
                  ALLOWED1(g_vmx.pin, PIN_POSTED_INTERRUPTS) ? "allowed" : "not allowed", (unsigned long long)g_vmx.pin);
    scenario_good(s);
}
