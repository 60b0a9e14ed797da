/* L1's VMX layer: capabilities, VMX instructions, the VMCS, the vCPU that runs an L2 guest. */
#ifndef LHV_VMX_H
#define LHV_VMX_H

#include "arch/arch.h"
#include "vmx/vmcs_fields.h"

enum vmcs_field {
#define VMCS_ENUM(name, enc) VMCS_##name = enc,
    VMCS_FIELD_TABLE(VMCS_ENUM)
#undef VMCS_ENUM
};

struct vmcs_field_info {
    const char *name;
    uint32_t encoding;
};
extern const struct vmcs_field_info g_vmcs_fields[];
extern const size_t g_vmcs_field_count;

/* Results of VMX instructions (SDM 31.2 "Conventions"). */
enum vmx_status { VMX_OK = 0, VMX_FAIL_INVALID = 1, VMX_FAIL_VALID = 2 };

/* VM-instruction error numbers used by the scenarios (SDM 31.4). */
#define VMXERR_VMLAUNCH_NONCLEAR 4
#define VMXERR_VMRESUME_NONLAUNCHED 5
#define VMXERR_ENTRY_INVALID_CONTROL 7
#define VMXERR_VMXON_IN_ROOT 15

/* Basic exit reasons (SDM Appendix C). */
#define EXIT_EXCEPTION_NMI 0
#define EXIT_EXTERNAL_INTERRUPT 1
#define EXIT_TRIPLE_FAULT 2
#define EXIT_INIT_SIGNAL 3
#define EXIT_SIPI 4
#define EXIT_INTERRUPT_WINDOW 7
#define EXIT_NMI_WINDOW 8
#define EXIT_TASK_SWITCH 9
#define EXIT_CPUID 10
#define EXIT_HLT 12
#define EXIT_VMCALL 18
#define EXIT_CR_ACCESS 28
#define EXIT_IO_INSTRUCTION 30
#define EXIT_RDMSR 31
#define EXIT_WRMSR 32
#define EXIT_INVALID_GUEST_STATE 33
#define EXIT_ENTRY_FAILURE (1u << 31) /* in the exit reason: VM entry failed (SDM 27.8) */
#define EXIT_MSR_LOADING 34
#define EXIT_MACHINE_CHECK_ENTRY 41
#define EXIT_MTF 37
#define EXIT_EPT_VIOLATION 48
#define EXIT_EPT_MISCONFIG 49
#define EXIT_PREEMPTION_TIMER 52
#define EXIT_VMFUNC 59
const char *exit_reason_name(uint32_t reason);

/* Control bits, named where LHV uses them (SDM 25.6, 25.7, 25.8). */
#define PIN_EXTERNAL_INTERRUPT_EXITING (1u << 0)
#define PIN_NMI_EXITING (1u << 3)
#define PIN_VIRTUAL_NMIS (1u << 5)
#define PIN_PREEMPTION_TIMER (1u << 6)
#define PROC_INTERRUPT_WINDOW (1u << 2)
#define PROC_HLT_EXITING (1u << 7)
#define PROC_CR3_LOAD_EXITING (1u << 15)
#define PROC_CR3_STORE_EXITING (1u << 16)
#define PROC_NMI_WINDOW (1u << 22)
#define PROC_MTF (1u << 27)
#define PROC_USE_MSR_BITMAPS (1u << 28)
#define PROC_ACTIVATE_SECONDARY (1u << 31)
#define PROC_CR8_LOAD_EXITING (1u << 19)
#define PROC_CR8_STORE_EXITING (1u << 20)
#define PROC_MOV_DR_EXITING (1u << 23)
#define PROC_UNCOND_IO_EXITING (1u << 24)
#define PROC_USE_IO_BITMAPS (1u << 25)
#define PROC2_EPT (1u << 1)
#define PROC2_VPID (1u << 5)
#define PROC2_UNRESTRICTED_GUEST (1u << 7)
#define PROC2_VMFUNC (1u << 13)
#define EXIT_HOST_ADDR_SPACE_SIZE (1u << 9)
#define EXIT_ACK_INTERRUPT (1u << 15)
#define EXIT_SAVE_EFER (1u << 20)
#define EXIT_LOAD_EFER (1u << 21)
#define ENTRY_LOAD_DEBUG_CONTROLS (1u << 2)
#define ENTRY_IA32E_MODE_GUEST (1u << 9)
#define ENTRY_LOAD_EFER (1u << 15)

/* Interruption-information fields: VM-entry, VM-exit and IDT-vectoring (SDM 25.8.3, 25.9.2,
 * 25.9.3): vector in bits 7:0, type in 10:8, error code valid bit 11, NMI unblocking due to IRET
 * bit 12 (exit fields only), valid bit 31. */
#define INTR_INFO_VALID (1u << 31)
#define INTR_INFO_ERROR_CODE (1u << 11)
#define INTR_INFO_NMI_UNBLOCKED_BY_IRET (1u << 12)
#define INTR_TYPE_EXTERNAL (0u << 8)
#define INTR_TYPE_NMI (2u << 8)
#define INTR_TYPE_HW_EXCEPTION (3u << 8)
#define INTR_TYPE_SW_INTERRUPT (4u << 8)
#define INTR_TYPE_PRIV_SW_EXCEPTION (5u << 8)
#define INTR_TYPE_SW_EXCEPTION (6u << 8)
#define INTR_TYPE_OTHER (7u << 8)
#define INTR_TYPE_MASK (7u << 8)

/* Guest interruptibility state (SDM 25.4.2, Table 25-3) and activity states (25.4.2). */
#define INTERRUPTIBILITY_STI (1u << 0)
#define INTERRUPTIBILITY_MOV_SS (1u << 1)
#define INTERRUPTIBILITY_SMI (1u << 2)
#define INTERRUPTIBILITY_NMI (1u << 3)
#define ACTIVITY_ACTIVE 0
#define ACTIVITY_HLT 1
#define ACTIVITY_SHUTDOWN 2
#define ACTIVITY_WAIT_SIPI 3

/* What the capability MSRs said, read once on the BSP (SDM Appendix A). */
struct vmx_caps {
    bool cpuid_vmx;
    bool usable; /* VMX present and allowed by IA32_FEATURE_CONTROL */
    uint64_t feature_control;
    uint64_t basic, misc, ept_vpid, vmfunc;
    uint64_t pin, proc, proc2, exit, entry; /* allowed-0 low, allowed-1 high (TRUE_* when offered) */
    uint64_t cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
};
extern struct vmx_caps g_vmx;

#define ALLOWED1(ctl_msr, bit) (((ctl_msr) >> 32) & (bit))
#define EPT_CAP_WALK4 (1ull << 6)
#define EPT_CAP_WB (1ull << 14)
#define EPT_CAP_2M (1ull << 16)
#define EPT_CAP_1G (1ull << 17)
#define EPT_CAP_INVEPT (1ull << 20)
#define EPT_CAP_AD (1ull << 21)
#define EPT_CAP_INVEPT_SINGLE (1ull << 25)
#define EPT_CAP_INVEPT_ALL (1ull << 26)
#define VPID_CAP_INVVPID (1ull << 32)

void vmx_read_caps(void);
int vmx_format_caps(char *buf, size_t size);
/* Checks one requirement word ("ept", "ug", "cpus>=2"...). When it is not met, the reason read
 * from the MSRs goes into reason. */
enum { REQ_MET, REQ_ABSENT, REQ_UNKNOWN };
int vmx_requirement_check(const char *word, size_t len, char *reason, size_t reason_size);

bool vmx_cpu_enable(struct percpu *cpu, char *why, size_t why_size);
uint64_t vmx_alloc_region_phys(void *page);

/* Raw instructions: they return what the CPU said, for scenarios that test the instructions. */
int vmx_on(uint64_t phys);
int vmx_off(void);
int vmcs_clear(uint64_t phys);
int vmcs_load(uint64_t phys);
int vmcs_store(uint64_t *phys);
int vmx_vmread(uint32_t field, uint64_t *value);
int vmx_vmwrite(uint32_t field, uint64_t value);
int vmx_invept(uint64_t type, uint64_t eptp);
/* desc_low: the descriptor's first quadword (VPID in bits 15:0, the rest reserved). */
int vmx_invvpid(uint64_t type, uint64_t desc_low, uint64_t linear);
uint32_t vmx_instruction_error(void);

/* Checked accessors: a failure here is a bug in the scenario's setup, so the scenario ends
 * with ERROR naming the field (through vmx_fail()). */
uint64_t vmcs_read(enum vmcs_field field);
void vmcs_write(enum vmcs_field field, uint64_t value);

/* A failure the VMX floor cannot go on from (a checked VMREAD/VMWRITE, a control the CPU does
 * not allow, an exhausted page pool): it is handed to the handler the runner registered, which
 * does not return (it ends the scenario with ERROR). The VMX floor never judges a scenario. */
typedef void (*vmx_failure_fn)(const char *reason) __attribute__((noreturn));
void vmx_set_failure_handler(vmx_failure_fn handler);
__attribute__((noreturn)) void vmx_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* General-purpose registers of L2, in the order vmentry.S uses. */
struct guest_regs {
#ifdef __x86_64__
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
#else
    uint32_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
#endif
};
int vmx_enter(struct guest_regs *regs, int launched);

/* How an L2 guest starts. */
enum guest_mode {
    GUEST_MODE_NATIVE, /* like L1: long mode on amd64, 32-bit PAE paging on i386, L1's page tables */
    GUEST_MODE_PAE32,  /* 32-bit protected mode, PAE paging with the guest's own tables (guest/) */
};

struct guest_config {
    enum guest_mode mode;
    uintptr_t entry;     /* guest RIP */
    uintptr_t arg;       /* passed to the guest in RDI/EDI... see guest/guest.h */
    uintptr_t stack_top; /* guest RSP */
    uint64_t eptp;       /* 0: no EPT */
    bool unrestricted;
    bool msr_bitmap;     /* use an all-zero MSR bitmap: no RDMSR/WRMSR exits */
    uint16_t vpid;       /* run with this VPID (0: only when LHV_OPT asks for VPID, then 1) */
};

struct vmx_exit {
    uint32_t reason; /* full exit reason; bit 31 set for a VM-entry failure */
    uint64_t qualification;
    uint64_t guest_physical;
    uint64_t guest_linear;
    uint64_t guest_rip;
    uint32_t instruction_length;
    uint32_t interruption_info;
    uint32_t interruption_error;
    uint32_t idt_vectoring_info;
};

struct vcpu {
    struct guest_regs regs;
    void *vmcs;
    uint64_t vmcs_phys;
    bool launched;
    uint32_t exits; /* exits seen so far, for the watchdog's report */
    struct vmx_exit exit;
    uint32_t entry_error; /* VM-instruction error after a VMfailValid entry */
    uint8_t *msr_bitmap;
    /* vcpu_run() returns external-interrupt exits (with interrupts still disabled) instead of
     * letting L1 take the interrupt and re-entering: for scenarios that examine those exits. */
    bool irq_exits_to_caller;
};

/* Creates the VMCS, makes it current and fills host state, controls and guest state. */
void vcpu_init(struct vcpu *v, const struct guest_config *cfg);
/* Runs L2 until an exit the scenario must see (external interrupts are handled here).
 * Returns VMX_OK with v->exit filled, or the VMfail status of the entry. */
int vcpu_run(struct vcpu *v);
/* One VM entry with interrupts disabled in L1 before and after it (an interrupt handler's IRET
 * would end L1's NMI blocking): every exit comes back, external-interrupt exits too. */
int vcpu_run_irq_off(struct vcpu *v);
void vcpu_skip_instruction(struct vcpu *v);
/* The judging helpers below take the scenario and record its verdict: they live on the runner
 * floor (lhv/expect.c) and are declared here, where the scenarios have always found them. */
struct scenario;
/* vcpu_run(); a failed VM entry (VMfail, or exit reason bit 31) is the scenario's ERROR. */
bool vcpu_run_entered(struct scenario *s, struct vcpu *v);
/* The same judgement of a vcpu_run() the caller made itself (rc is what it returned). */
bool vcpu_entered(struct scenario *s, struct vcpu *v, int rc);
/* vcpu_run() and check the exit reason: entry failure is ERROR, another exit is BAD. */
bool vcpu_run_expect(struct scenario *s, struct vcpu *v, uint32_t expected_reason);
/* The same check on the exit that vcpu_run() already returned. */
bool vcpu_check_exit(struct scenario *s, struct vcpu *v, uint32_t expected_reason);
/* Expect VMCALL number `call` (guest/guest.h) and step over it. */
bool vcpu_expect_call(struct scenario *s, struct vcpu *v, uintptr_t call);
/* For guests written in C (see guest/guest.h): sets RIP, RSP and the trampoline registers. */
typedef uintptr_t (*vcpu_guest_fn)(uintptr_t arg);
void vcpu_init_c_guest(struct vcpu *v, struct guest_config *cfg, vcpu_guest_fn fn, uintptr_t arg);
/* An AP's vcpu on a VMCS page the scenario owns (not the page pool, which CPU 0 may be using
 * meanwhile): v zeroed and pointed at the page, VMCLEARed. False when this CPU is not in VMX
 * operation or the VMCLEAR fails; then vcpu_init_*_prepared() would stop L1 with vmx_fail. */
bool vcpu_prepare_on_page(struct vcpu *v, void *vmcs_page);
/* The same with v->vmcs/vmcs_phys already set (a page the caller owns, for APs). */
void vcpu_init_prepared(struct vcpu *v, const struct guest_config *cfg);
void vcpu_init_c_guest_prepared(struct vcpu *v, struct guest_config *cfg, vcpu_guest_fn fn, uintptr_t arg);
/* Start the same VMCS's C guest over: fn(arg) from the trampoline, on a fresh guest stack. */
void vcpu_restart_c_guest(struct vcpu *v, vcpu_guest_fn fn, uintptr_t arg);
void vcpu_set_controls(uint32_t field, uint32_t set_bits, uint32_t clear_bits);
extern struct vcpu *volatile g_running_vcpu;
/* Remember a VMCS made by hand so the runner VMCLEARs it after the scenario. */
void vcpu_track_vmcs(uint64_t phys);
/* After each scenario (runner): VMX operation back on this CPU, the scenario's VMCSs cleared. */
void vmx_after_scenario(void);

/* EPT (SDM 29.3): identity map of the low 4 GiB, write-back, built from the page pool. */
struct ept {
    uint64_t *pml4;
    uint64_t eptp;
};
#define EPT_READ 1ull
#define EPT_WRITE 2ull
#define EPT_EXEC 4ull
#define EPT_RWX 7ull
#define EPT_MEMTYPE_WB (6ull << 3)
void ept_build_identity(struct ept *ept, bool large_pages);
void ept_init_empty(struct ept *ept); /* nothing mapped: every access is an EPT violation */
/* The 4 KiB leaf entry for gpa: splits a 2 MiB mapping, makes missing tables. */
uint64_t *ept_leaf_4k(struct ept *ept, uint64_t gpa);
void ept_set_4k(struct ept *ept, uint64_t gpa, uint64_t hpa, uint64_t rights);
/* The entry for gpa at one level (4 PML4E, 3 PDPTE, 2 PDE, 1 PTE), making missing tables above
 * it but leaving a large page above it in place. */
uint64_t *ept_entry(struct ept *ept, int level, uint64_t gpa);
/* level 2: a 2 MiB page, level 3: a 1 GiB page (check the capability first). */
void ept_set_large(struct ept *ept, int level, uint64_t gpa, uint64_t hpa, uint64_t rights);
void ept_invalidate(struct ept *ept);

/* Page pool: zeroed 4 KiB pages for VMCSs, EPT tables, bitmaps; reset between scenarios. */
void *page_alloc(void);
void page_pool_reset(void);

#endif
