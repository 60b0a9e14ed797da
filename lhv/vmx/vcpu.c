/*
 * One L2 guest on the current CPU: VMCS creation (controls from the allowed-0/allowed-1 MSRs,
 * host state from the running L1, guest state for the requested mode) and the run loop.
 */
#include "console/console.h"
#include "guest/guest.h"
#include "options.h"
#include "vmx/vmx.h"

struct vcpu *volatile g_running_vcpu;

#define AR_CODE64 0xa09b
#define AR_CODE32 0xc09b
#define AR_DATA 0xc093
#define AR_TSS_BUSY 0x8b
#define AR_UNUSABLE 0x10000

/* SDM Appendix A.3-A.5 and 31.5.1: a control is set when wanted or required (allowed-0 = 1) and
 * cleared when it must be 0 (allowed-1 = 0). A wanted control that cannot be set makes the setup
 * an ERROR. */
static uint32_t adjust_controls(const char *name, uint64_t caps, uint32_t want)
{
    uint32_t value = (want | (uint32_t)caps) & (uint32_t)(caps >> 32);
    if ((value & want) != want)
        vmx_fail("%s control bits 0x%x not allowed (MSR 0x%llx)", name, want & ~value,
                 (unsigned long long)caps);
    return value;
}

void vcpu_set_controls(uint32_t field, uint32_t set_bits, uint32_t clear_bits)
{
    vmcs_write(field, (vmcs_read(field) | set_bits) & ~clear_bits);
}

/* Segments in VMCS order: ES CS SS DS FS GS LDTR TR (selector, limit, AR, base fields). */
static void set_guest_segment(int index, uint16_t sel, uint64_t base, uint32_t limit, uint32_t ar)
{
    vmcs_write(VMCS_GUEST_ES_SELECTOR + 2 * index, sel);
    vmcs_write(VMCS_GUEST_ES_LIMIT + 2 * index, limit);
    vmcs_write(VMCS_GUEST_ES_AR + 2 * index, ar);
    vmcs_write(VMCS_GUEST_ES_BASE + 2 * index, base);
}

static void setup_host_state(void)
{
    struct desc_ptr gdtr = read_gdtr(), idtr = read_idtr();
    vmcs_write(VMCS_HOST_CR0, read_cr0());
    vmcs_write(VMCS_HOST_CR3, read_cr3());
    vmcs_write(VMCS_HOST_CR4, read_cr4());
    vmcs_write(VMCS_HOST_CS_SELECTOR, SEL_L1_CODE);
    vmcs_write(VMCS_HOST_SS_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_HOST_DS_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_HOST_ES_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_HOST_FS_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_HOST_GS_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_HOST_TR_SELECTOR, read_tr());
    vmcs_write(VMCS_HOST_FS_BASE, 0);
    vmcs_write(VMCS_HOST_GS_BASE, 0);
    vmcs_write(VMCS_HOST_TR_BASE, tss_base(this_cpu_index()));
    vmcs_write(VMCS_HOST_GDTR_BASE, gdtr.base);
    vmcs_write(VMCS_HOST_IDTR_BASE, idtr.base);
    vmcs_write(VMCS_HOST_SYSENTER_CS, rdmsr(MSR_IA32_SYSENTER_CS));
    vmcs_write(VMCS_HOST_SYSENTER_ESP, rdmsr(MSR_IA32_SYSENTER_ESP));
    vmcs_write(VMCS_HOST_SYSENTER_EIP, rdmsr(MSR_IA32_SYSENTER_EIP));
    if (vmcs_read(VMCS_EXIT_CONTROLS) & EXIT_LOAD_EFER)
        vmcs_write(VMCS_HOST_IA32_EFER, rdmsr(MSR_IA32_EFER));
}

static bool want_load_efer(const struct guest_config *cfg)
{
    uint32_t both = EXIT_LOAD_EFER | EXIT_SAVE_EFER;
    bool available = ALLOWED1(g_vmx.entry, ENTRY_LOAD_EFER) && ALLOWED1(g_vmx.exit, both) == both;
    if (cfg->mode == GUEST_MODE_PAE32 && sizeof(uintptr_t) == 8 && !available)
        vmx_fail("a 32-bit guest under a 64-bit L1 needs the EFER load controls");
    return available;
}

static void setup_controls(const struct guest_config *cfg)
{
    bool load_efer = want_load_efer(cfg);
    uint16_t vpid = cfg->vpid ? cfg->vpid : (lhv_opt() & LHV_OPT_USE_VPID) ? 1 : 0;
    uint32_t proc2 = (cfg->eptp ? PROC2_EPT : 0) | (cfg->unrestricted ? PROC2_UNRESTRICTED_GUEST : 0) |
                     (vpid ? PROC2_VPID : 0);
    uint32_t proc = (cfg->msr_bitmap ? PROC_USE_MSR_BITMAPS : 0) | (proc2 ? PROC_ACTIVATE_SECONDARY : 0);
    uint32_t exit = (sizeof(uintptr_t) == 8 ? EXIT_HOST_ADDR_SPACE_SIZE : 0) |
                    (load_efer ? EXIT_SAVE_EFER | EXIT_LOAD_EFER : 0);
    uint32_t entry = (cfg->mode == GUEST_MODE_NATIVE && sizeof(uintptr_t) == 8 ? ENTRY_IA32E_MODE_GUEST : 0) |
                     (load_efer ? ENTRY_LOAD_EFER : 0);
    vmcs_write(VMCS_PIN_BASED_CONTROLS,
               adjust_controls("pin-based", g_vmx.pin, PIN_EXTERNAL_INTERRUPT_EXITING | PIN_NMI_EXITING));
    vmcs_write(VMCS_PROC_BASED_CONTROLS, adjust_controls("processor-based", g_vmx.proc, proc));
    if (proc & PROC_ACTIVATE_SECONDARY)
        vmcs_write(VMCS_PROC_BASED_CONTROLS2, adjust_controls("secondary", g_vmx.proc2, proc2));
    vmcs_write(VMCS_EXIT_CONTROLS, adjust_controls("VM-exit", g_vmx.exit, exit));
    vmcs_write(VMCS_ENTRY_CONTROLS, adjust_controls("VM-entry", g_vmx.entry, entry));
    vmcs_write(VMCS_EXCEPTION_BITMAP, 0xffffffffu); /* every L2 exception is seen by L1 */
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MASK, 0);
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MATCH, 0);
    vmcs_write(VMCS_CR3_TARGET_COUNT, 0);
    vmcs_write(VMCS_EXIT_MSR_STORE_COUNT, 0);
    vmcs_write(VMCS_EXIT_MSR_LOAD_COUNT, 0);
    vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, 0);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
    if (cfg->eptp)
        vmcs_write(VMCS_EPT_POINTER, cfg->eptp);
    if (vpid)
        vmcs_write(VMCS_VPID, vpid);
}

/* CR0/CR4 bits that VMX fixes are owned by L1 (mask) and hidden by the read shadows; with
 * unrestricted guest CR0.PE and CR0.PG belong to the guest (SDM 27.3.1.1). */
static void setup_cr_ownership(uint64_t cr0, uint64_t cr4, bool unrestricted)
{
    uint64_t cr0_fixed = (g_vmx.cr0_fixed0 | ~g_vmx.cr0_fixed1) & 0xffffffffu;
    if (unrestricted)
        cr0_fixed &= ~(uint64_t)(CR0_PE | CR0_PG);
    vmcs_write(VMCS_CR0_GUEST_HOST_MASK, cr0_fixed);
    vmcs_write(VMCS_CR0_READ_SHADOW, cr0);
    vmcs_write(VMCS_CR4_GUEST_HOST_MASK, (g_vmx.cr4_fixed0 | ~g_vmx.cr4_fixed1) & 0xffffffffu);
    vmcs_write(VMCS_CR4_READ_SHADOW, cr4 & ~(uint64_t)CR4_VMXE);
}

static void setup_guest_state(const struct guest_config *cfg)
{
    struct desc_ptr gdtr = read_gdtr(), idtr = read_idtr();
    bool native = cfg->mode == GUEST_MODE_NATIVE;
    uint64_t cr0 = native ? read_cr0() : ((CR0_PE | CR0_NE | CR0_PG | CR0_WP | 0x10u) | g_vmx.cr0_fixed0) & g_vmx.cr0_fixed1;
    uint64_t cr4 = native ? read_cr4() : ((CR4_PAE | g_vmx.cr4_fixed0) & g_vmx.cr4_fixed1);
    uint64_t cr3 = native ? read_cr3() : guest_pae_build();
    uint16_t cs = native ? SEL_L1_CODE : SEL_CODE32;
    uint32_t cs_ar = native && sizeof(uintptr_t) == 8 ? AR_CODE64 : AR_CODE32;

    vmcs_write(VMCS_GUEST_CR0, cr0);
    vmcs_write(VMCS_GUEST_CR3, cr3);
    vmcs_write(VMCS_GUEST_CR4, cr4);
    setup_cr_ownership(cr0, cr4, cfg->unrestricted);
    for (int seg = 0; seg < 6; seg++)
        set_guest_segment(seg, seg == 1 ? cs : SEL_DATA, 0, 0xffffffffu, seg == 1 ? cs_ar : AR_DATA);
    set_guest_segment(6, 0, 0, 0, AR_UNUSABLE);
    set_guest_segment(7, read_tr(), tss_base(this_cpu_index()), tss_limit(), AR_TSS_BUSY);
    vmcs_write(VMCS_GUEST_GDTR_BASE, gdtr.base);
    vmcs_write(VMCS_GUEST_GDTR_LIMIT, gdtr.limit);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idtr.base);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idtr.limit);
    if (vmcs_read(VMCS_ENTRY_CONTROLS) & ENTRY_LOAD_EFER)
        vmcs_write(VMCS_GUEST_IA32_EFER, native ? rdmsr(MSR_IA32_EFER) : 0);
    bool long_mode = native && sizeof(uintptr_t) == 8;
    if (cfg->eptp && !long_mode) {
        /* PAE paging with EPT: VM entry loads the PDPTEs from these fields (SDM 27.3.2.4). */
        const uint64_t *pdpt = (const uint64_t *)(uintptr_t)(cr3 & ~0x1full);
        for (int i = 0; i < 4; i++)
            vmcs_write(VMCS_GUEST_PDPTE0 + 2 * i, pdpt[i]);
    }
    vmcs_write(VMCS_GUEST_DR7, 0x400);
    vmcs_write(VMCS_GUEST_IA32_DEBUGCTL, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_CS, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_ESP, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_EIP, 0);
    vmcs_write(VMCS_VMCS_LINK_POINTER, ~0ull);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, 0);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write(VMCS_GUEST_PENDING_DEBUG, 0);
    bool guest_if = !(lhv_opt() & LHV_OPT_NO_EFLAGS_IF);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | (guest_if ? RFLAGS_IF : 0));
    vmcs_write(VMCS_GUEST_RSP, cfg->stack_top);
    vmcs_write(VMCS_GUEST_RIP, cfg->entry);
}

/* The VMCS is v->vmcs already (cleared, with its revision ID): used on APs, which must not take
 * pages from the pool while the BSP may. */
void vcpu_init_prepared(struct vcpu *v, const struct guest_config *cfg)
{
    if (vmcs_clear(v->vmcs_phys) != VMX_OK || vmcs_load(v->vmcs_phys) != VMX_OK)
        vmx_fail("VMCLEAR/VMPTRLD of a fresh VMCS failed");
    v->launched = false;
    setup_controls(cfg);
    if (cfg->msr_bitmap) {
        v->msr_bitmap = page_alloc(); /* all zero: no MSR access exits (BSP only) */
        vmcs_write(VMCS_MSR_BITMAP, (uintptr_t)v->msr_bitmap);
    }
    setup_host_state();
    setup_guest_state(cfg);
    v->regs.rdi = cfg->arg;
}

bool vcpu_prepare_on_page(struct vcpu *v, void *vmcs_page)
{
    memset(v, 0, sizeof(*v));
    v->vmcs = vmcs_page;
    v->vmcs_phys = vmx_alloc_region_phys(vmcs_page);
    return this_cpu()->vmx_on && vmcs_clear(v->vmcs_phys) == VMX_OK;
}

void vcpu_init(struct vcpu *v, const struct guest_config *cfg)
{
    memset(v, 0, sizeof(*v));
    v->vmcs = page_alloc();
    v->vmcs_phys = vmx_alloc_region_phys(v->vmcs);
    vcpu_track_vmcs(v->vmcs_phys);
    vcpu_init_prepared(v, cfg);
    /* What the BSP's watchdog reports. Set here, not at every VM entry: finding the current CPU
     * reads the local APIC, which a nested L0 may have to emulate (an exit of its own). */
    g_running_vcpu = v;
}

/* C guests start in guest_trampoline, which calls fn(arg). */
static void c_guest_config(struct guest_config *cfg, uintptr_t arg)
{
    cfg->entry = (uintptr_t)guest_trampoline;
    cfg->arg = arg;
    if (!cfg->stack_top)
        cfg->stack_top = guest_stack_top();
}

void vcpu_init_c_guest(struct vcpu *v, struct guest_config *cfg, guest_main_fn fn, uintptr_t arg)
{
    c_guest_config(cfg, arg);
    vcpu_init(v, cfg);
    v->regs.rsi = (uintptr_t)fn;
}

void vcpu_restart_c_guest(struct vcpu *v, guest_main_fn fn, uintptr_t arg)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)guest_trampoline);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    v->regs.rsi = (uintptr_t)fn;
    v->regs.rdi = arg;
}

void vcpu_init_c_guest_prepared(struct vcpu *v, struct guest_config *cfg, guest_main_fn fn, uintptr_t arg)
{
    c_guest_config(cfg, arg);
    vcpu_init_prepared(v, cfg);
    v->regs.rsi = (uintptr_t)fn;
}

static void read_exit_info(struct vcpu *v)
{
    struct vmx_exit *e = &v->exit;
    e->reason = (uint32_t)vmcs_read(VMCS_EXIT_REASON);
    e->qualification = vmcs_read(VMCS_EXIT_QUALIFICATION);
    e->instruction_length = (uint32_t)vmcs_read(VMCS_EXIT_INSTRUCTION_LENGTH);
    e->interruption_info = (uint32_t)vmcs_read(VMCS_EXIT_INTERRUPTION_INFO);
    e->interruption_error = (uint32_t)vmcs_read(VMCS_EXIT_INTERRUPTION_ERROR_CODE);
    e->idt_vectoring_info = (uint32_t)vmcs_read(VMCS_IDT_VECTORING_INFO);
    e->guest_rip = vmcs_read(VMCS_GUEST_RIP);
    uint32_t basic = e->reason & 0xffff;
    e->guest_physical = e->guest_linear = 0;
    if (basic == EXIT_EPT_VIOLATION || basic == EXIT_EPT_MISCONFIG)
        e->guest_physical = vmcs_read(VMCS_GUEST_PHYSICAL_ADDRESS);
    if (basic == EXIT_EPT_VIOLATION)
        e->guest_linear = vmcs_read(VMCS_GUEST_LINEAR_ADDRESS);
}

/* noise=nmi: an NMI exit (NMI exiting is on in every VMCS LHV makes) is the noise AP's NMI,
 * not the scenario's business. L1 takes it the way a hypervisor passes an NMI on (SDM Vol. 3C
 * chapter 28, "Information for VM Exits During Event Delivery" and "Information About NMI
 * Unblocking Due to IRET"): an event whose delivery the exit interrupted is re-injected,
 * blocking by NMI that an IRET in L2 had just lifted is put back, and the NMI blocking an NMI
 * exit may leave in L1 ends with an IRET (Vol. 3A 6.7.1). */
static bool absorb_noise_nmi(struct vcpu *v)
{
    const struct vmx_exit *e = &v->exit;
    bool nmi = (e->reason & 0xffff) == EXIT_EXCEPTION_NMI && (e->interruption_info & INTR_INFO_VALID) &&
               (e->interruption_info & INTR_TYPE_MASK) == INTR_TYPE_NMI;
    if (!nmi || !noise_absorbs_nmi_exits())
        return false;
    noise_nmi_exit_absorbed();
    if (e->idt_vectoring_info & INTR_INFO_VALID) {
        vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, e->idt_vectoring_info & ~INTR_INFO_NMI_UNBLOCKED_BY_IRET);
        if (e->idt_vectoring_info & INTR_INFO_ERROR_CODE)
            vmcs_write(VMCS_ENTRY_EXCEPTION_ERROR_CODE, vmcs_read(VMCS_IDT_VECTORING_ERROR_CODE));
        vmcs_write(VMCS_ENTRY_INSTRUCTION_LENGTH, e->instruction_length);
    } else if (e->interruption_info & INTR_INFO_NMI_UNBLOCKED_BY_IRET) {
        vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, vmcs_read(VMCS_GUEST_INTERRUPTIBILITY) | INTERRUPTIBILITY_NMI);
    }
    nmi_iret();
    return true;
}

int vcpu_run(struct vcpu *v)
{
    for (;;) {
        irq_disable(); /* no interrupt between loading guest registers and the VM entry */
        int rc = vmx_enter(&v->regs, v->launched);
        if (rc != VMX_OK) {
            v->entry_error = rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0;
            irq_enable();
            return rc;
        }
        v->exits++;
        read_exit_info(v);
        /* A VM-entry failure (exit reason bit 31) leaves the VMCS clear: VMLAUNCH next time. */
        if (!(v->exit.reason & (1u << 31)))
            v->launched = true;
        if (absorb_noise_nmi(v))
            continue; /* interrupts still off: straight back into L2 */
        bool external = (v->exit.reason & 0xffff) == EXIT_EXTERNAL_INTERRUPT;
        if (external && v->irq_exits_to_caller)
            return VMX_OK; /* interrupts still off: the caller looks at the exit and the LAPIC first */
        /* An external interrupt exit leaves the interrupt pending (no acknowledge on exit):
         * opening IF lets L1's handler take it (timer, watchdog), then L2 goes on. */
        irq_enable();
        if (!external)
            return VMX_OK;
    }
}

int vcpu_run_irq_off(struct vcpu *v)
{
    irq_disable();
    int rc = vmx_enter(&v->regs, v->launched);
    if (rc != VMX_OK) {
        v->entry_error = rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0;
        return rc;
    }
    v->exits++;
    read_exit_info(v);
    if (!(v->exit.reason & (1u << 31)))
        v->launched = true;
    return VMX_OK;
}

void vcpu_skip_instruction(struct vcpu *v)
{
    vmcs_write(VMCS_GUEST_RIP, v->exit.guest_rip + v->exit.instruction_length);
}

/* VMCSs made during the current scenario: VMCLEARed afterwards, because their pages go back to
 * the pool and a CPU may keep VMCS data cached until VMCLEAR (SDM 25.11.1). */
static uint64_t g_scenario_vmcs[8];
static int g_scenario_vmcs_count;

void vcpu_track_vmcs(uint64_t phys)
{
    if (g_scenario_vmcs_count < (int)ARRAY_SIZE(g_scenario_vmcs))
        g_scenario_vmcs[g_scenario_vmcs_count++] = phys;
}

void vmx_after_scenario(void)
{
    struct percpu *cpu = this_cpu();
    g_running_vcpu = NULL;
    if (!g_vmx.usable)
        return;
    if (!cpu->vmx_on) {
        char why[80];
        if (!vmx_cpu_enable(cpu, why, sizeof(why)))
            lhv_printf("LHV NOTE: cannot re-enter VMX operation: %s\n", why);
    }
    if (cpu->vmx_on)
        for (int i = 0; i < g_scenario_vmcs_count; i++)
            vmcs_clear(g_scenario_vmcs[i]);
    g_scenario_vmcs_count = 0;
}
