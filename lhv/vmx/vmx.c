/* VMX operation of each CPU, the VMX instructions, and the checked VMCS accessors. */
#include "console/console.h"
#include "vmx/vmx.h"

const struct vmcs_field_info g_vmcs_fields[] = {
#define VMCS_INFO(name, enc) { #name, enc },
    VMCS_FIELD_TABLE(VMCS_INFO)
#undef VMCS_INFO
};
const size_t g_vmcs_field_count = ARRAY_SIZE(g_vmcs_fields);

static uint8_t g_vmxon_regions[MAX_CPUS][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static const char *field_name(uint32_t enc)
{
    for (size_t i = 0; i < g_vmcs_field_count; i++)
        if (g_vmcs_fields[i].encoding == enc)
            return g_vmcs_fields[i].name;
    return "?";
}

/* VMXON and VMCS regions start with the VMCS revision identifier (SDM 25.2). */
uint64_t vmx_alloc_region_phys(void *page)
{
    memset(page, 0, PAGE_SIZE);
    *(uint32_t *)page = (uint32_t)(g_vmx.basic & 0x7fffffff);
    return (uintptr_t)page;
}

/* SDM 24.7/24.8: VMXON needs IA32_FEATURE_CONTROL to allow it and CR0/CR4 within the fixed bits. */
bool vmx_cpu_enable(struct percpu *cpu, char *why, size_t why_size)
{
    if (!g_vmx.usable) {
        snprintf(why, why_size, "VMX not usable");
        return false;
    }
    uint64_t fc = rdmsr(MSR_IA32_FEATURE_CONTROL);
    if (!(fc & 1))
        wrmsr(MSR_IA32_FEATURE_CONTROL, fc | 5); /* lock, with VMX outside SMX allowed */
    write_cr0((uintptr_t)((read_cr0() | g_vmx.cr0_fixed0) & g_vmx.cr0_fixed1));
    write_cr4((uintptr_t)((read_cr4() | g_vmx.cr4_fixed0 | CR4_VMXE) & g_vmx.cr4_fixed1));
    cpu->vmxon_phys = vmx_alloc_region_phys(g_vmxon_regions[cpu->index]);
    int rc = vmx_on(cpu->vmxon_phys);
    if (rc != VMX_OK) {
        snprintf(why, why_size, "VMXON failed (status %d)", rc);
        return false;
    }
    cpu->vmx_on = true;
    return true;
}

#define VMX_STATUS_ASM(insn, ...)                                                           \
    ({                                                                                    \
        uint8_t cf, zf;                                                                   \
        __asm__ volatile(insn "; setc %0; setz %1" : "=qm"(cf), "=qm"(zf) : __VA_ARGS__ : "cc", "memory"); \
        cf ? VMX_FAIL_INVALID : zf ? VMX_FAIL_VALID : VMX_OK;                             \
    })

int vmx_on(uint64_t phys) { return VMX_STATUS_ASM("vmxon %2", "m"(phys)); }
int vmx_off(void) { return VMX_STATUS_ASM("vmxoff", "i"(0)); }
int vmcs_clear(uint64_t phys) { return VMX_STATUS_ASM("vmclear %2", "m"(phys)); }
int vmcs_load(uint64_t phys) { return VMX_STATUS_ASM("vmptrld %2", "m"(phys)); }
int vmcs_store(uint64_t *phys) { return VMX_STATUS_ASM("vmptrst %2", "m"(*phys)); }

int vmx_invept(uint64_t type, uint64_t eptp)
{
    uint64_t desc[2] = { eptp, 0 };
    uintptr_t t = (uintptr_t)type;
    return VMX_STATUS_ASM("invept %2, %3", "m"(desc), "r"(t));
}

int vmx_invvpid(uint64_t type, uint64_t desc_low, uint64_t linear)
{
    uint64_t desc[2] = { desc_low, linear };
    uintptr_t t = (uintptr_t)type;
    return VMX_STATUS_ASM("invvpid %2, %3", "m"(desc), "r"(t));
}

static int vmread_natural(uintptr_t field, uintptr_t *value)
{
    uint8_t cf, zf;
    uintptr_t v = 0; /* a failing VMREAD leaves its destination alone: "+rm" keeps this 0 */
    __asm__ volatile("vmread %3, %0; setc %1; setz %2" : "+rm"(v), "=qm"(cf), "=qm"(zf) : "r"(field) : "cc");
    *value = v;
    return cf ? VMX_FAIL_INVALID : zf ? VMX_FAIL_VALID : VMX_OK;
}

static int vmwrite_natural(uintptr_t field, uintptr_t value)
{
    return VMX_STATUS_ASM("vmwrite %2, %3", "rm"(value), "r"(field));
}

static bool field_is_64bit(uint32_t field) { return ((field >> 13) & 3) == 1; }

/* On i386 a 64-bit field is accessed as two halves: the high half has encoding bit 0 set. */
int vmx_vmread(uint32_t field, uint64_t *value)
{
    uintptr_t low = 0, high = 0;
    int rc = vmread_natural(field, &low);
    if (rc == VMX_OK && sizeof(uintptr_t) == 4 && field_is_64bit(field))
        rc = vmread_natural(field | 1, &high);
    *value = ((uint64_t)high << 16 << 16) | low;
    return rc;
}

int vmx_vmwrite(uint32_t field, uint64_t value)
{
    int rc = vmwrite_natural(field, (uintptr_t)value);
    if (rc == VMX_OK && sizeof(uintptr_t) == 4 && field_is_64bit(field))
        rc = vmwrite_natural(field | 1, (uintptr_t)(value >> 32));
    return rc;
}

uint32_t vmx_instruction_error(void)
{
    uint64_t err = 0;
    return vmx_vmread(VMCS_VM_INSTRUCTION_ERROR, &err) == VMX_OK ? (uint32_t)err : 0xffffffffu;
}

static vmx_failure_fn g_failure_handler;

void vmx_set_failure_handler(vmx_failure_fn handler) { g_failure_handler = handler; }

void vmx_fail(const char *fmt, ...)
{
    char reason[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (g_failure_handler)
        g_failure_handler(reason);
    lhv_printf("LHV ERROR: %s (no failure handler registered)\n", reason);
    halt_forever();
}

uint64_t vmcs_read(enum vmcs_field field)
{
    uint64_t v;
    int rc = vmx_vmread(field, &v);
    if (rc != VMX_OK)
        vmx_fail("VMREAD %s (0x%x) failed: status %d, VM-instruction error %u",
                 field_name(field), field, rc, rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
    return v;
}

void vmcs_write(enum vmcs_field field, uint64_t value)
{
    int rc = vmx_vmwrite(field, value);
    if (rc != VMX_OK)
        vmx_fail("VMWRITE %s (0x%x) = 0x%llx failed: status %d, VM-instruction error %u",
                 field_name(field), field, (unsigned long long)value, rc,
                 rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
}

const char *exit_reason_name(uint32_t reason)
{
    switch (reason & 0xffff) {
    case EXIT_EXCEPTION_NMI: return "exception";
    case EXIT_EXTERNAL_INTERRUPT: return "external interrupt";
    case EXIT_TRIPLE_FAULT: return "triple fault";
    case EXIT_INIT_SIGNAL: return "INIT signal";
    case EXIT_SIPI: return "SIPI";
    case EXIT_INTERRUPT_WINDOW: return "interrupt window";
    case EXIT_NMI_WINDOW: return "NMI window";
    case EXIT_TASK_SWITCH: return "task switch";
    case EXIT_CPUID: return "CPUID";
    case EXIT_HLT: return "HLT";
    case EXIT_VMCALL: return "VMCALL";
    case EXIT_CR_ACCESS: return "CR access";
    case EXIT_IO_INSTRUCTION: return "I/O instruction";
    case EXIT_RDMSR: return "RDMSR";
    case EXIT_WRMSR: return "WRMSR";
    case EXIT_INVALID_GUEST_STATE: return "invalid guest state";
    case EXIT_MSR_LOADING: return "MSR loading";
    case EXIT_MACHINE_CHECK_ENTRY: return "machine-check during VM entry";
    case EXIT_MTF: return "monitor trap flag";
    case EXIT_PREEMPTION_TIMER: return "preemption timer";
    case EXIT_EPT_VIOLATION: return "EPT violation";
    case EXIT_EPT_MISCONFIG: return "EPT misconfiguration";
    case EXIT_VMFUNC: return "VMFUNC";
    default: return "other";
    }
}
