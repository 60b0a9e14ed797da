/*
 * vmcs_fields: VMREAD and VMWRITE of the VMCS fields themselves (Intel SDM Vol. 3C 25.11.2
 * "VMREAD, VMWRITE, and Encodings of VMCS Fields", Appendix B "Field Encoding in VMCS", 31.3
 * VMREAD/VMWRITE, 31.4 VM-instruction error numbers, Appendix A.9 IA32_VMX_VMCS_ENUM, A.6
 * IA32_VMX_MISC, 25.10 "VMCS Types: Ordinary and Shadow", 26.1.3 VMREAD/VMWRITE in non-root).
 *
 * On a scratch VMCS (never launched):
 * 1. Every field Appendix B defines, with the capability that makes it exist: a field whose
 *    capability is offered and whose index (encoding bits 9:1) is within IA32_VMX_VMCS_ENUM's
 *    highest index must read successfully (KVM bugzilla 216091: VMREAD of fields that always
 *    exist failed); a field above the highest index must give VMfailValid 12; a field whose
 *    capability is not offered gives 12 or, tolerated, exists anyway (INFO). Each present 64-bit
 *    field reads its upper half with the "high" access type (encoding | 1), on i386 too.
 * 2. Encodings that name no field (index above the highest in every width/type, the high access
 *    type on 16-/32-bit/natural fields, bit 12 set, bits 31:15 set, bits 63:32 set in 64-bit
 *    mode): VMREAD and VMWRITE give VMfailValid 12.
 * 3. VMWRITE to an unsupported encoding whose type bits say "read-only" gives 12, not 13: the
 *    "unsupported component" check comes first in the SDM's VMWRITE pseudocode (KVM
 *    693e02cc2409 fixed KVM's reverse order).
 * 4. VMWRITE to an existing read-only (exit-information) field gives 13 and leaves it alone,
 *    unless IA32_VMX_MISC bit 29 allows it: then it succeeds and reads back.
 * 5. High halves of the TSC offset and the executive-VMCS pointer: VMWRITE of the high access
 *    type changes bits 63:32 only; on i386 a full-access VMWRITE clears bits 63:32 (the field is
 *    longer than the operand, 31.3 VMWRITE).
 * 6. VMREAD to and VMWRITE from memory on an unmapped page: #PF (write resp. read, not present)
 *    with CR2 at the operand, RIP on the instruction and RFLAGS unchanged (a fault, no VMsucceed
 *    or VMfail), the field unchanged. L1 takes the fault through l1_expect_fault().
 * 7. VMCS shadowing (secondary control bit 14), where offered: a shadow VMCS (revision ID with
 *    bit 31 set) under the VMCS link pointer, VMREAD/VMWRITE bitmaps: L2's VMREAD/VMWRITE of a
 *    field whose bit is clear reads/writes the shadow VMCS without an exit; a set bit gives exit
 *    23 (VMREAD) / 25 (VMWRITE); with the link pointer all-ones L2's VMREAD is VMfailInvalid.
 *    Not offered: INFO with the MSR value, the rest still judged.
 * GOOD: all of the above. BAD: the first difference, with every failing field also in INFO.
 * Negative control (inject=vmcs_fields): L1 leaves the page mapped, so no #PF comes (BAD).
 * Needs: VMX.
 */
#include "guest/guest.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmcs_fields, 0, "vmx", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vmcs_fields);

#define MSR_VMX_VMCS_ENUM 0x48a
#define MSR_VMX_PROCBASED3 0x492
#define PROC_ACTIVATE_TERTIARY (1u << 17)
#define PROC2_VMCS_SHADOWING (1u << 14)
#define MISC_VMWRITE_READ_ONLY (1ull << 29)
#define VMXERR_UNSUPPORTED_FIELD 12
#define VMXERR_READ_ONLY_FIELD 13
#define EXIT_VMREAD 23
#define EXIT_VMWRITE 25
#define ARITH_FLAGS 0x8d5u /* CF PF AF ZF SF OF: VMsucceed clears them, VMfail sets CF or ZF */
#define PF_WRITE 2u
#define UNMAPPED_LINEAR 0xc0000000u /* a 2 MiB page L1 never uses; L1's PDE is cleared for a while */

/* Which capability makes a field exist (Appendix B: "exists only on processors that support the
 * 1-setting of ..."). OPTIONAL: conditions LHV does not read (CPUID leaves, newer controls). */
enum field_cond { ALWAYS, PIN, PROC, PROC2, PROC3, ENTRY, EXIT, ENTRY_OR_EXIT, EPTP_SWITCHING, OPTIONAL };

struct sdm_field {
    uint16_t enc;
    uint8_t cond, bit, exit_bit; /* exit_bit: the VM-exit control of ENTRY_OR_EXIT */
    const char *name;
};

static const struct sdm_field g_sdm_fields[] = {
    { 0x0000, PROC2, 5, 0, "VPID" }, { 0x0002, PIN, 7, 0, "posted-interrupt notification vector" },
    { 0x0004, PROC2, 18, 0, "EPTP index" }, { 0x0006, PROC3, 1, 0, "HLAT prefix size" },
    { 0x0008, PROC3, 4, 0, "last PID-pointer index" },
    { 0x0800, ALWAYS, 0, 0, "guest ES selector" }, { 0x0802, ALWAYS, 0, 0, "guest CS selector" },
    { 0x0804, ALWAYS, 0, 0, "guest SS selector" }, { 0x0806, ALWAYS, 0, 0, "guest DS selector" },
    { 0x0808, ALWAYS, 0, 0, "guest FS selector" }, { 0x080a, ALWAYS, 0, 0, "guest GS selector" },
    { 0x080c, ALWAYS, 0, 0, "guest LDTR selector" }, { 0x080e, ALWAYS, 0, 0, "guest TR selector" },
    { 0x0810, PROC2, 9, 0, "guest interrupt status" }, { 0x0812, PROC2, 17, 0, "PML index" },
    { 0x0814, OPTIONAL, 0, 0, "guest UINV" },
    { 0x0c00, ALWAYS, 0, 0, "host ES selector" }, { 0x0c02, ALWAYS, 0, 0, "host CS selector" },
    { 0x0c04, ALWAYS, 0, 0, "host SS selector" }, { 0x0c06, ALWAYS, 0, 0, "host DS selector" },
    { 0x0c08, ALWAYS, 0, 0, "host FS selector" }, { 0x0c0a, ALWAYS, 0, 0, "host GS selector" },
    { 0x0c0c, ALWAYS, 0, 0, "host TR selector" },
    { 0x2000, ALWAYS, 0, 0, "I/O bitmap A" }, { 0x2002, ALWAYS, 0, 0, "I/O bitmap B" },
    { 0x2004, PROC, 28, 0, "MSR bitmap" }, { 0x2006, ALWAYS, 0, 0, "VM-exit MSR-store address" },
    { 0x2008, ALWAYS, 0, 0, "VM-exit MSR-load address" }, { 0x200a, ALWAYS, 0, 0, "VM-entry MSR-load address" },
    { 0x200c, ALWAYS, 0, 0, "executive-VMCS pointer" }, { 0x200e, PROC2, 17, 0, "PML address" },
    { 0x2010, ALWAYS, 0, 0, "TSC offset" }, { 0x2012, PROC, 21, 0, "virtual-APIC address" },
    { 0x2014, PROC2, 0, 0, "APIC-access address" }, { 0x2016, PIN, 7, 0, "posted-interrupt descriptor address" },
    { 0x2018, PROC2, 13, 0, "VM-function controls" }, { 0x201a, PROC2, 1, 0, "EPT pointer" },
    { 0x201c, PROC2, 9, 0, "EOI-exit bitmap 0" }, { 0x201e, PROC2, 9, 0, "EOI-exit bitmap 1" },
    { 0x2020, PROC2, 9, 0, "EOI-exit bitmap 2" }, { 0x2022, PROC2, 9, 0, "EOI-exit bitmap 3" },
    { 0x2024, EPTP_SWITCHING, 0, 0, "EPTP-list address" }, { 0x2026, PROC2, 14, 0, "VMREAD-bitmap address" },
    { 0x2028, PROC2, 14, 0, "VMWRITE-bitmap address" }, { 0x202a, PROC2, 18, 0, "virtualization-exception information address" },
    { 0x202c, PROC2, 20, 0, "XSS-exiting bitmap" }, { 0x202e, PROC2, 15, 0, "ENCLS-exiting bitmap" },
    { 0x2030, PROC2, 23, 0, "sub-page-permission-table pointer" }, { 0x2032, PROC2, 25, 0, "TSC multiplier" },
    { 0x2034, PROC, 17, 0, "tertiary processor-based controls" }, { 0x2036, PROC2, 28, 0, "ENCLV-exiting bitmap" },
    { 0x2038, OPTIONAL, 0, 0, "low PASID directory address" }, { 0x203a, OPTIONAL, 0, 0, "high PASID directory address" },
    { 0x203c, OPTIONAL, 0, 0, "shared EPT pointer" }, { 0x203e, OPTIONAL, 0, 0, "PCONFIG-exiting bitmap" },
    { 0x2040, PROC3, 1, 0, "HLAT pointer" }, { 0x2042, PROC3, 4, 0, "PID-pointer table address" },
    { 0x2044, EXIT, 31, 0, "secondary VM-exit controls" },
    { 0x2400, PROC2, 1, 0, "guest-physical address" },
    { 0x2800, ALWAYS, 0, 0, "VMCS link pointer" }, { 0x2802, ALWAYS, 0, 0, "guest IA32_DEBUGCTL" },
    { 0x2804, ENTRY_OR_EXIT, 14, 18, "guest IA32_PAT" }, { 0x2806, ENTRY_OR_EXIT, 15, 20, "guest IA32_EFER" },
    { 0x2808, ENTRY, 13, 0, "guest IA32_PERF_GLOBAL_CTRL" }, { 0x280a, PROC2, 1, 0, "guest PDPTE0" },
    { 0x280c, PROC2, 1, 0, "guest PDPTE1" }, { 0x280e, PROC2, 1, 0, "guest PDPTE2" },
    { 0x2810, PROC2, 1, 0, "guest PDPTE3" }, { 0x2812, ENTRY_OR_EXIT, 16, 23, "guest IA32_BNDCFGS" },
    { 0x2814, ENTRY_OR_EXIT, 18, 25, "guest IA32_RTIT_CTL" }, { 0x2816, ENTRY_OR_EXIT, 21, 26, "guest IA32_LBR_CTL" },
    { 0x2818, ENTRY, 22, 0, "guest IA32_PKRS" },
    { 0x2c00, EXIT, 19, 0, "host IA32_PAT" }, { 0x2c02, EXIT, 21, 0, "host IA32_EFER" },
    { 0x2c04, EXIT, 12, 0, "host IA32_PERF_GLOBAL_CTRL" }, { 0x2c06, EXIT, 29, 0, "host IA32_PKRS" },
    { 0x4000, ALWAYS, 0, 0, "pin-based controls" }, { 0x4002, ALWAYS, 0, 0, "processor-based controls" },
    { 0x4004, ALWAYS, 0, 0, "exception bitmap" }, { 0x4006, ALWAYS, 0, 0, "page-fault error-code mask" },
    { 0x4008, ALWAYS, 0, 0, "page-fault error-code match" }, { 0x400a, ALWAYS, 0, 0, "CR3-target count" },
    { 0x400c, ALWAYS, 0, 0, "VM-exit controls" }, { 0x400e, ALWAYS, 0, 0, "VM-exit MSR-store count" },
    { 0x4010, ALWAYS, 0, 0, "VM-exit MSR-load count" }, { 0x4012, ALWAYS, 0, 0, "VM-entry controls" },
    { 0x4014, ALWAYS, 0, 0, "VM-entry MSR-load count" }, { 0x4016, ALWAYS, 0, 0, "VM-entry interruption information" },
    { 0x4018, ALWAYS, 0, 0, "VM-entry exception error code" }, { 0x401a, ALWAYS, 0, 0, "VM-entry instruction length" },
    { 0x401c, PROC, 21, 0, "TPR threshold" }, { 0x401e, PROC, 31, 0, "secondary processor-based controls" },
    { 0x4020, PROC2, 10, 0, "PLE_Gap" }, { 0x4022, PROC2, 10, 0, "PLE_Window" },
    { 0x4024, OPTIONAL, 0, 0, "instruction timeout control" },
    { 0x4400, ALWAYS, 0, 0, "VM-instruction error" }, { 0x4402, ALWAYS, 0, 0, "exit reason" },
    { 0x4404, ALWAYS, 0, 0, "VM-exit interruption information" }, { 0x4406, ALWAYS, 0, 0, "VM-exit interruption error code" },
    { 0x4408, ALWAYS, 0, 0, "IDT-vectoring information" }, { 0x440a, ALWAYS, 0, 0, "IDT-vectoring error code" },
    { 0x440c, ALWAYS, 0, 0, "VM-exit instruction length" }, { 0x440e, ALWAYS, 0, 0, "VM-exit instruction information" },
    { 0x4800, ALWAYS, 0, 0, "guest ES limit" }, { 0x4802, ALWAYS, 0, 0, "guest CS limit" },
    { 0x4804, ALWAYS, 0, 0, "guest SS limit" }, { 0x4806, ALWAYS, 0, 0, "guest DS limit" },
    { 0x4808, ALWAYS, 0, 0, "guest FS limit" }, { 0x480a, ALWAYS, 0, 0, "guest GS limit" },
    { 0x480c, ALWAYS, 0, 0, "guest LDTR limit" }, { 0x480e, ALWAYS, 0, 0, "guest TR limit" },
    { 0x4810, ALWAYS, 0, 0, "guest GDTR limit" }, { 0x4812, ALWAYS, 0, 0, "guest IDTR limit" },
    { 0x4814, ALWAYS, 0, 0, "guest ES access rights" }, { 0x4816, ALWAYS, 0, 0, "guest CS access rights" },
    { 0x4818, ALWAYS, 0, 0, "guest SS access rights" }, { 0x481a, ALWAYS, 0, 0, "guest DS access rights" },
    { 0x481c, ALWAYS, 0, 0, "guest FS access rights" }, { 0x481e, ALWAYS, 0, 0, "guest GS access rights" },
    { 0x4820, ALWAYS, 0, 0, "guest LDTR access rights" }, { 0x4822, ALWAYS, 0, 0, "guest TR access rights" },
    { 0x4824, ALWAYS, 0, 0, "guest interruptibility state" }, { 0x4826, ALWAYS, 0, 0, "guest activity state" },
    { 0x4828, ALWAYS, 0, 0, "guest SMBASE" }, { 0x482a, ALWAYS, 0, 0, "guest IA32_SYSENTER_CS" },
    { 0x482e, PIN, 6, 0, "VMX-preemption timer value" },
    { 0x4c00, ALWAYS, 0, 0, "host IA32_SYSENTER_CS" },
    { 0x6000, ALWAYS, 0, 0, "CR0 guest/host mask" }, { 0x6002, ALWAYS, 0, 0, "CR4 guest/host mask" },
    { 0x6004, ALWAYS, 0, 0, "CR0 read shadow" }, { 0x6006, ALWAYS, 0, 0, "CR4 read shadow" },
    { 0x6008, ALWAYS, 0, 0, "CR3-target value 0" }, { 0x600a, ALWAYS, 0, 0, "CR3-target value 1" },
    { 0x600c, ALWAYS, 0, 0, "CR3-target value 2" }, { 0x600e, ALWAYS, 0, 0, "CR3-target value 3" },
    { 0x6400, ALWAYS, 0, 0, "exit qualification" }, { 0x6402, ALWAYS, 0, 0, "I/O RCX" },
    { 0x6404, ALWAYS, 0, 0, "I/O RSI" }, { 0x6406, ALWAYS, 0, 0, "I/O RDI" },
    { 0x6408, ALWAYS, 0, 0, "I/O RIP" }, { 0x640a, ALWAYS, 0, 0, "guest-linear address" },
    { 0x6800, ALWAYS, 0, 0, "guest CR0" }, { 0x6802, ALWAYS, 0, 0, "guest CR3" },
    { 0x6804, ALWAYS, 0, 0, "guest CR4" }, { 0x6806, ALWAYS, 0, 0, "guest ES base" },
    { 0x6808, ALWAYS, 0, 0, "guest CS base" }, { 0x680a, ALWAYS, 0, 0, "guest SS base" },
    { 0x680c, ALWAYS, 0, 0, "guest DS base" }, { 0x680e, ALWAYS, 0, 0, "guest FS base" },
    { 0x6810, ALWAYS, 0, 0, "guest GS base" }, { 0x6812, ALWAYS, 0, 0, "guest LDTR base" },
    { 0x6814, ALWAYS, 0, 0, "guest TR base" }, { 0x6816, ALWAYS, 0, 0, "guest GDTR base" },
    { 0x6818, ALWAYS, 0, 0, "guest IDTR base" }, { 0x681a, ALWAYS, 0, 0, "guest DR7" },
    { 0x681c, ALWAYS, 0, 0, "guest RSP" }, { 0x681e, ALWAYS, 0, 0, "guest RIP" },
    { 0x6820, ALWAYS, 0, 0, "guest RFLAGS" }, { 0x6822, ALWAYS, 0, 0, "guest pending debug exceptions" },
    { 0x6824, ALWAYS, 0, 0, "guest IA32_SYSENTER_ESP" }, { 0x6826, ALWAYS, 0, 0, "guest IA32_SYSENTER_EIP" },
    { 0x6828, ENTRY, 20, 0, "guest IA32_S_CET" }, { 0x682a, ENTRY, 20, 0, "guest SSP" },
    { 0x682c, ENTRY, 20, 0, "guest IA32_INTERRUPT_SSP_TABLE_ADDR" },
    { 0x6c00, ALWAYS, 0, 0, "host CR0" }, { 0x6c02, ALWAYS, 0, 0, "host CR3" },
    { 0x6c04, ALWAYS, 0, 0, "host CR4" }, { 0x6c06, ALWAYS, 0, 0, "host FS base" },
    { 0x6c08, ALWAYS, 0, 0, "host GS base" }, { 0x6c0a, ALWAYS, 0, 0, "host TR base" },
    { 0x6c0c, ALWAYS, 0, 0, "host GDTR base" }, { 0x6c0e, ALWAYS, 0, 0, "host IDTR base" },
    { 0x6c10, ALWAYS, 0, 0, "host IA32_SYSENTER_ESP" }, { 0x6c12, ALWAYS, 0, 0, "host IA32_SYSENTER_EIP" },
    { 0x6c14, ALWAYS, 0, 0, "host RSP" }, { 0x6c16, ALWAYS, 0, 0, "host RIP" },
    { 0x6c18, EXIT, 28, 0, "host IA32_S_CET" }, { 0x6c1a, EXIT, 28, 0, "host SSP" },
    { 0x6c1c, EXIT, 28, 0, "host IA32_INTERRUPT_SSP_TABLE_ADDR" },
};

struct fields_ctx {
    uint32_t highest;     /* IA32_VMX_VMCS_ENUM bits 9:1 */
    uint64_t proc3;       /* IA32_VMX_PROCBASED_CTLS3 (all allowed-1 bits), 0 when not offered */
    int bad_fields;       /* fields that did not behave, each also in an INFO line */
    int unoffered_present; /* fields present although their capability is not offered */
};

/* ---- the instructions, one access each (vmx_vmread() does two on i386 for 64-bit fields) ---- */

static int raw_vmread(uintptr_t enc, uintptr_t *value)
{
    uint8_t cf, zf;
    uintptr_t v = 0;
    __asm__ volatile("vmread %3, %0; setc %1; setz %2" : "+r"(v), "=qm"(cf), "=qm"(zf) : "r"(enc) : "cc");
    *value = v;
    return cf ? VMX_FAIL_INVALID : zf ? VMX_FAIL_VALID : VMX_OK;
}

static int raw_vmwrite(uintptr_t enc, uintptr_t value)
{
    uint8_t cf, zf;
    __asm__ volatile("vmwrite %2, %3; setc %0; setz %1" : "=qm"(cf), "=qm"(zf) : "r"(value), "r"(enc) : "cc");
    return cf ? VMX_FAIL_INVALID : zf ? VMX_FAIL_VALID : VMX_OK;
}

/* "ok", "VMfailInvalid" or "error N": what an instruction's status says, for messages. */
static const char *status_text(int rc, char *buf, size_t size)
{
    if (rc == VMX_OK)
        return "success";
    if (rc == VMX_FAIL_INVALID)
        return "VMfailInvalid";
    snprintf(buf, size, "VMfailValid %u", vmx_instruction_error());
    return buf;
}

static bool is_error(int rc, uint32_t error) { return rc == VMX_FAIL_VALID && vmx_instruction_error() == error; }

/* VMREAD/VMWRITE with a memory operand, RFLAGS loaded from `flags` just before; they return
 * RFLAGS after the instruction (or after the resume label, where a fault goes on). */
uintptr_t vf_vmread_mem(uintptr_t enc, uintptr_t address, uintptr_t flags);
uintptr_t vf_vmwrite_mem(uintptr_t enc, uintptr_t address, uintptr_t flags);
extern const uint8_t vf_vmread_mem_insn[], vf_vmread_mem_resume[], vf_vmwrite_mem_insn[], vf_vmwrite_mem_resume[];
#ifdef __x86_64__
__asm__(".pushsection .text\n"
        "vf_vmread_mem:\n push %rdx\n popf\n"
        "vf_vmread_mem_insn:\n vmread %rdi, (%rsi)\n"
        "vf_vmread_mem_resume:\n pushf\n pop %rax\n ret\n"
        "vf_vmwrite_mem:\n push %rdx\n popf\n"
        "vf_vmwrite_mem_insn:\n vmwrite (%rsi), %rdi\n"
        "vf_vmwrite_mem_resume:\n pushf\n pop %rax\n ret\n"
        ".popsection\n");
#else
__asm__(".pushsection .text\n"
        "vf_vmread_mem:\n mov 4(%esp), %ecx\n mov 8(%esp), %edx\n pushl 12(%esp)\n popf\n"
        "vf_vmread_mem_insn:\n vmread %ecx, (%edx)\n"
        "vf_vmread_mem_resume:\n pushf\n pop %eax\n ret\n"
        "vf_vmwrite_mem:\n mov 4(%esp), %ecx\n mov 8(%esp), %edx\n pushl 12(%esp)\n popf\n"
        "vf_vmwrite_mem_insn:\n vmwrite (%edx), %ecx\n"
        "vf_vmwrite_mem_resume:\n pushf\n pop %eax\n ret\n"
        ".popsection\n");
#endif

/* ---- which fields exist ---- */

static uint32_t field_index(uint32_t enc) { return (enc >> 1) & 0x1ff; }
static bool field_is_64bit(uint32_t enc) { return ((enc >> 13) & 3) == 1; }

static bool field_offered(const struct fields_ctx *c, const struct sdm_field *f)
{
    bool secondary = ALLOWED1(g_vmx.proc, PROC_ACTIVATE_SECONDARY) != 0;
    switch (f->cond) {
    case ALWAYS: return true;
    case PIN: return ALLOWED1(g_vmx.pin, 1u << f->bit) != 0;
    case PROC: return ALLOWED1(g_vmx.proc, 1u << f->bit) != 0;
    case PROC2: return secondary && ALLOWED1(g_vmx.proc2, 1u << f->bit) != 0;
    case PROC3: return (c->proc3 >> f->bit) & 1;
    case ENTRY: return ALLOWED1(g_vmx.entry, 1u << f->bit) != 0;
    case EXIT: return ALLOWED1(g_vmx.exit, 1u << f->bit) != 0;
    case ENTRY_OR_EXIT: return ALLOWED1(g_vmx.entry, 1u << f->bit) || ALLOWED1(g_vmx.exit, 1u << f->exit_bit);
    case EPTP_SWITCHING: return secondary && ALLOWED1(g_vmx.proc2, PROC2_VMFUNC) && (g_vmx.vmfunc & 1);
    default: return false;
    }
}

static void field_bad(struct scenario *s, struct fields_ctx *c, const struct sdm_field *f, const char *what)
{
    c->bad_fields++;
    scenario_info(s, "field 0x%04x (%s): %s", f->enc, f->name, what);
    scenario_bad(s, "field 0x%04x (%s): %s", f->enc, f->name, what);
}

/* The high access type of a present 64-bit field reads bits 63:32 (amd64: the full read's top). */
static void check_high_half(struct scenario *s, struct fields_ctx *c, const struct sdm_field *f, uintptr_t full)
{
    char text[120], st[24];
    uintptr_t high;
    int rc = raw_vmread(f->enc | 1u, &high);
    if (rc != VMX_OK) {
        snprintf(text, sizeof(text), "VMREAD of the high half 0x%04x gave %s", f->enc | 1u, status_text(rc, st, sizeof(st)));
        field_bad(s, c, f, text);
    } else if (sizeof(uintptr_t) == 8 && (uint64_t)high != (uint64_t)full >> 32) {
        snprintf(text, sizeof(text), "high half read 0x%llx, bits 63:32 of the field are 0x%llx",
                 (unsigned long long)high, (unsigned long long)((uint64_t)full >> 32));
        field_bad(s, c, f, text);
    }
}

static void check_one_field(struct scenario *s, struct fields_ctx *c, const struct sdm_field *f)
{
    char text[120], st[24];
    uintptr_t value;
    int rc = raw_vmread(f->enc, &value);
    bool in_range = field_index(f->enc) <= c->highest;
    if (!in_range && rc == VMX_OK) {
        snprintf(text, sizeof(text), "reads successfully but its index %u is above VMCS_ENUM's highest %u",
                 field_index(f->enc), c->highest);
        field_bad(s, c, f, text);
    } else if (in_range && field_offered(c, f) && rc != VMX_OK) {
        snprintf(text, sizeof(text), "the capability MSRs offer it, VMREAD gave %s (KVM bugzilla 216091)",
                 status_text(rc, st, sizeof(st)));
        field_bad(s, c, f, text);
    } else if (rc != VMX_OK && !is_error(rc, VMXERR_UNSUPPORTED_FIELD)) {
        snprintf(text, sizeof(text), "not supported, VMREAD gave %s instead of VMfailValid 12", status_text(rc, st, sizeof(st)));
        field_bad(s, c, f, text);
    } else if (rc == VMX_OK && !field_offered(c, f)) {
        c->unoffered_present++;
        if (f->cond != OPTIONAL)
            scenario_info(s, "field 0x%04x (%s) exists although its capability is not offered", f->enc, f->name);
    }
    if (rc == VMX_OK && field_is_64bit(f->enc))
        check_high_half(s, c, f, value);
}

static void check_defined_fields(struct scenario *s, struct fields_ctx *c)
{
    for (size_t i = 0; i < ARRAY_SIZE(g_sdm_fields); i++)
        check_one_field(s, c, &g_sdm_fields[i]);
    scenario_info(s, "%u SDM fields checked against VMCS_ENUM highest index %u: %d misbehaved, %d present without "
                     "their capability",
                  (unsigned)ARRAY_SIZE(g_sdm_fields), c->highest, c->bad_fields, c->unoffered_present);
}

/* ---- encodings that name no field ---- */

static void expect_unsupported(struct scenario *s, uintptr_t enc, const char *why)
{
    char st[24];
    uintptr_t value;
    int rc = raw_vmread(enc, &value);
    if (!is_error(rc, VMXERR_UNSUPPORTED_FIELD)) {
        scenario_bad(s, "VMREAD of 0x%llx (%s): expected VMfailValid 12, observed %s", (unsigned long long)enc, why,
                     status_text(rc, st, sizeof(st)));
        return;
    }
    rc = raw_vmwrite(enc, 0);
    if (!is_error(rc, VMXERR_UNSUPPORTED_FIELD))
        scenario_bad(s, "VMWRITE of 0x%llx (%s): expected VMfailValid 12, observed %s%s", (unsigned long long)enc, why,
                     status_text(rc, st, sizeof(st)),
                     is_error(rc, VMXERR_READ_ONLY_FIELD) ? " (read-only checked before unsupported: KVM 693e02cc2409)" : "");
}

static void check_undefined_encodings(struct scenario *s, const struct fields_ctx *c)
{
    if (c->highest < 0x1ff)
        for (uint32_t width = 0; width < 4; width++)
            for (uint32_t type = 0; type < 4; type++)
                expect_unsupported(s, (width << 13) | (type << 10) | ((c->highest + 1) << 1), "index above VMCS_ENUM");
    expect_unsupported(s, 0x0801, "high access type on a 16-bit field");
    expect_unsupported(s, 0x4001, "high access type on a 32-bit field");
    expect_unsupported(s, 0x6801, "high access type on a natural-width field");
    expect_unsupported(s, 0x1800, "encoding bit 12 set");
    expect_unsupported(s, 0x10800, "encoding bits 31:15 not 0");
#ifdef __x86_64__
    expect_unsupported(s, 0x100000800ull, "register bits 63:32 not 0");
#endif
    /* Read-only type bits on encodings that name no field: 12 before 13 (31.3 VMWRITE). */
    expect_unsupported(s, 0x0400, "16-bit read-only type: no such field");
    expect_unsupported(s, 0x2402, "64-bit read-only type, index 1");
    expect_unsupported(s, 0x640c, "natural-width read-only type, index 6");
}

/* ---- VMWRITE to read-only fields ---- */

static void check_read_only_write(struct scenario *s, uint32_t enc, const char *name)
{
    char st[24];
    uintptr_t before, after;
    bool allowed = (g_vmx.misc & MISC_VMWRITE_READ_ONLY) != 0;
    raw_vmread(enc, &before);
    uintptr_t value = before ^ 0x5a5a5a5au;
    int rc = raw_vmwrite(enc, value);
    raw_vmread(enc, &after);
    if (allowed && (rc != VMX_OK || after != value))
        scenario_bad(s, "VMWRITE of read-only %s with IA32_VMX_MISC bit 29 set: expected success and 0x%llx read back, "
                        "observed %s and 0x%llx", name, (unsigned long long)value, status_text(rc, st, sizeof(st)),
                     (unsigned long long)after);
    if (!allowed && (!is_error(rc, VMXERR_READ_ONLY_FIELD) || after != before))
        scenario_bad(s, "VMWRITE of read-only %s with IA32_VMX_MISC bit 29 clear: expected VMfailValid 13 and the field "
                        "unchanged, observed %s and 0x%llx -> 0x%llx", name, status_text(rc, st, sizeof(st)),
                     (unsigned long long)before, (unsigned long long)after);
}

static void check_read_only_fields(struct scenario *s)
{
    scenario_info(s, "IA32_VMX_MISC=0x%llx: VMWRITE to read-only fields %s", (unsigned long long)g_vmx.misc,
                  (g_vmx.misc & MISC_VMWRITE_READ_ONLY) ? "allowed (bit 29)" : "not allowed (bit 29 clear)");
    check_read_only_write(s, VMCS_EXIT_QUALIFICATION, "exit qualification");
    check_read_only_write(s, VMCS_IDT_VECTORING_ERROR_CODE, "IDT-vectoring error code");
}

/* ---- high halves ---- */

static bool expect_half(struct scenario *s, const char *name, const char *what, uint32_t enc, uint32_t expected)
{
    char text[96];
    uintptr_t v = 0;
    int rc = raw_vmread(enc, &v);
    snprintf(text, sizeof(text), "%s %s (0x%x read, status %d)", name, what, enc, rc);
    return expect_eq(s, text, expected, (uint64_t)v);
}

static void check_high_access(struct scenario *s, uint32_t enc, const char *name)
{
#ifdef __x86_64__
    raw_vmwrite(enc, 0x1122334455667788ull);
    expect_half(s, name, "bits 63:32 after a full write", enc | 1, 0x11223344u);
    raw_vmwrite(enc | 1, 0xffffffffa5a5f00dull); /* a 32-bit field: the source's bits 63:32 are ignored */
    uintptr_t full = 0;
    raw_vmread(enc, &full);
    expect_eq(s, "field after a high write of 0xa5a5f00d", 0xa5a5f00d55667788ull, (uint64_t)full);
    expect_half(s, name, "bits 63:32 after a high write", enc | 1, 0xa5a5f00du);
#else
    raw_vmwrite(enc | 1, 0x11223344u);
    raw_vmwrite(enc, 0x55667788u); /* the field is longer than the operand: bits 63:32 cleared */
    expect_half(s, name, "bits 63:32 after a 32-bit full write", enc | 1, 0);
    raw_vmwrite(enc | 1, 0xa5a5f00du);
    expect_half(s, name, "bits 63:32 after a high write", enc | 1, 0xa5a5f00du);
    expect_half(s, name, "bits 31:0 after a high write", enc, 0x55667788u);
#endif
}

/* ---- #PF on a memory operand ---- */

/* L1's page-directory entry for a linear address below 4 GiB (2 MiB pages, see arch/). */
static uint64_t *l1_pde(uintptr_t linear)
{
#ifdef __x86_64__
    uint64_t *pml4 = (uint64_t *)(read_cr3() & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(uintptr_t)(pml4[0] & 0x000ffffffffff000ull);
#else
    uint64_t *pdpt = (uint64_t *)(read_cr3() & ~0x1fu);
#endif
    uint64_t *pd = (uint64_t *)(uintptr_t)(pdpt[(linear >> 30) & 3] & 0x000ffffffffff000ull);
    return &pd[(linear >> 21) & 511];
}

static void invlpg(uintptr_t linear) { __asm__ volatile("invlpg (%0)" ::"r"(linear) : "memory"); }

static void check_fault(struct scenario *s, const char *what, const struct l1_fault *f, uintptr_t insn, uint32_t error,
                        uintptr_t address, uintptr_t flags)
{
    char text[80];
    snprintf(text, sizeof(text), "%s: #PF RIP", what);
    expect_eq(s, text, (uintptr_t)insn, f->ip);
    snprintf(text, sizeof(text), "%s: #PF error code", what);
    expect_eq(s, text, error, f->error & 0x1f);
    snprintf(text, sizeof(text), "%s: CR2", what);
    expect_eq(s, text, address, f->cr2);
    snprintf(text, sizeof(text), "%s: RFLAGS arithmetic flags at the fault", what);
    expect_eq(s, text, flags & ARITH_FLAGS, f->flags & ARITH_FLAGS);
    scenario_info(s, "%s on a not-present page: #PF error 0x%llx, CR2 0x%llx, RFLAGS 0x%llx at the fault", what,
                  (unsigned long long)f->error, (unsigned long long)f->cr2, (unsigned long long)f->flags);
}

static void check_memory_operand_faults(struct scenario *s)
{
    uintptr_t address = UNMAPPED_LINEAR + 0x100;
    uint64_t *pde = l1_pde(address), saved = *pde;
    uintptr_t flags = (read_flags() & ~(uintptr_t)ARITH_FLAGS) | ARITH_FLAGS;
    struct l1_fault seen;
    raw_vmwrite(VMCS_TSC_OFFSET, 0x1234);
    if (!s->inject) {
        *pde = 0; /* not present: the operand's page faults */
        invlpg(address);
    }
    l1_expect_fault(14, (uintptr_t)vf_vmread_mem_insn, (uintptr_t)vf_vmread_mem_resume);
    vf_vmread_mem(VMCS_TSC_OFFSET, address, flags);
    bool read_faulted = l1_fault_taken(&seen);
    if (read_faulted)
        check_fault(s, "VMREAD to memory", &seen, (uintptr_t)vf_vmread_mem_insn, PF_WRITE, address, flags);
    l1_expect_fault(14, (uintptr_t)vf_vmwrite_mem_insn, (uintptr_t)vf_vmwrite_mem_resume);
    vf_vmwrite_mem(VMCS_TSC_OFFSET, address, flags);
    bool write_faulted = l1_fault_taken(&seen);
    if (write_faulted)
        check_fault(s, "VMWRITE from memory", &seen, (uintptr_t)vf_vmwrite_mem_insn, 0, address, flags);
    *pde = saved;
    invlpg(address);
    if (!read_faulted || !write_faulted)
        scenario_bad(s, "expected #PF from VMREAD to and VMWRITE from unmapped 0x%llx, observed %s", (unsigned long long)address,
                     read_faulted ? "no fault from VMWRITE" : "no fault from VMREAD");
    uintptr_t value = 0;
    raw_vmread(VMCS_TSC_OFFSET, &value);
    expect_eq(s, "TSC offset after the faulting VMWRITE", 0x1234, value);
}

/* ---- VMCS shadowing ---- */

#define CALL_READ_SHADOWED (GUEST_CALL_USER + 1)
#define CALL_WRITE_SHADOWED (GUEST_CALL_USER + 2)
#define CALL_UNLINK (GUEST_CALL_USER + 3)
#define CALL_READ_UNLINKED (GUEST_CALL_USER + 4)
#define SHADOW_READ_FIELD VMCS_EXCEPTION_BITMAP        /* bit clear: read from the shadow */
#define SHADOW_WRITE_FIELD VMCS_PAGE_FAULT_ERROR_MASK  /* bit clear: written into the shadow */
#define EXITING_READ_FIELD VMCS_PAGE_FAULT_ERROR_MATCH /* bit set: exit 23 */
#define EXITING_WRITE_FIELD VMCS_CR3_TARGET_COUNT      /* bit set: exit 25 */
#define SHADOW_READ_VALUE 0x5a5a1234u
#define SHADOW_WRITE_VALUE 0x0badf00du

/* L2: each VMREAD/VMWRITE reports its status (EBX) and value (ECX) by VMCALL. */
static uintptr_t shadow_guest(uintptr_t arg)
{
    (void)arg;
    uintptr_t value;
    int rc = raw_vmread(SHADOW_READ_FIELD, &value);
    guest_vmcall(CALL_READ_SHADOWED, (uintptr_t)rc, value);
    rc = raw_vmwrite(SHADOW_WRITE_FIELD, SHADOW_WRITE_VALUE);
    guest_vmcall(CALL_WRITE_SHADOWED, (uintptr_t)rc, 0);
    raw_vmread(EXITING_READ_FIELD, &value);
    raw_vmwrite(EXITING_WRITE_FIELD, 1);
    guest_vmcall(CALL_UNLINK, 0, 0);
    value = 0;
    rc = raw_vmread(SHADOW_READ_FIELD, &value);
    guest_vmcall(CALL_READ_UNLINKED, (uintptr_t)rc, value);
    return 0;
}

static void set_bitmap_bit(uint8_t *bitmap, uint32_t enc) { bitmap[(enc & 0x7fff) / 8] |= (uint8_t)(1u << (enc & 7)); }

/* The shadow VMCS: revision ID with bit 31 set (25.10), SHADOW_READ_FIELD filled by L1, then
 * VMCLEARed so that its data is in memory when L2 reaches it through the link pointer. */
static uint64_t make_shadow_vmcs(const struct vcpu *v)
{
    void *page = page_alloc();
    uint64_t phys = vmx_alloc_region_phys(page);
    *(uint32_t *)page |= 1u << 31;
    vcpu_track_vmcs(phys);
    if (vmcs_clear(phys) != VMX_OK || vmcs_load(phys) != VMX_OK)
        vmx_fail("VMCLEAR/VMPTRLD of the shadow VMCS failed");
    vmcs_write(SHADOW_READ_FIELD, SHADOW_READ_VALUE);
    vmcs_write(SHADOW_WRITE_FIELD, 0);
    vmcs_clear(phys);
    vmcs_load(v->vmcs_phys);
    return phys;
}

static uint64_t shadow_field(const struct vcpu *v, uint64_t shadow, uint32_t enc)
{
    vmcs_load(shadow);
    uint64_t value = vmcs_read(enc);
    vmcs_clear(shadow);
    vmcs_load(v->vmcs_phys);
    return value;
}

static bool expect_guest_status(struct scenario *s, struct vcpu *v, uintptr_t call, int status, const char *what)
{
    if (!vcpu_expect_call(s, v, call))
        return false;
    return expect_eq(s, what, status, v->regs.rbx);
}

static bool run_shadowed_accesses(struct scenario *s, struct vcpu *v, uint64_t shadow)
{
    if (!expect_guest_status(s, v, CALL_READ_SHADOWED, VMX_OK, "L2 VMREAD status of a shadowed field") ||
        !expect_eq(s, "L2 VMREAD of a shadowed field (the shadow VMCS's value)", SHADOW_READ_VALUE, v->regs.rcx))
        return false;
    if (!expect_guest_status(s, v, CALL_WRITE_SHADOWED, VMX_OK, "L2 VMWRITE status of a shadowed field") ||
        !expect_eq(s, "page-fault error-code mask of L2's own VMCS after L2's VMWRITE", 0,
                   vmcs_read(SHADOW_WRITE_FIELD)) ||
        !expect_eq(s, "shadow VMCS field after L2's VMWRITE", SHADOW_WRITE_VALUE, shadow_field(v, shadow, SHADOW_WRITE_FIELD)))
        return false;
    if (!vcpu_run_expect(s, v, EXIT_VMREAD))
        return false;
    vcpu_skip_instruction(v);
    if (!vcpu_run_expect(s, v, EXIT_VMWRITE))
        return false;
    vcpu_skip_instruction(v);
    if (!vcpu_expect_call(s, v, CALL_UNLINK))
        return false;
    vmcs_write(VMCS_VMCS_LINK_POINTER, ~0ull);
    return expect_guest_status(s, v, CALL_READ_UNLINKED, VMX_FAIL_INVALID,
                               "L2 VMREAD status with the link pointer all-ones (2: VMfailInvalid)") &&
           vcpu_expect_call(s, v, GUEST_CALL_DONE);
}

static void check_shadowing(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.proc, PROC_ACTIVATE_SECONDARY) || !ALLOWED1(g_vmx.proc2, PROC2_VMCS_SHADOWING)) {
        scenario_info(s, "VMCS shadowing not checked: not allowed by IA32_VMX_PROCBASED_CTLS2=0x%llx",
                      (unsigned long long)g_vmx.proc2);
        return;
    }
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, shadow_guest, 0);
    uint8_t *read_bitmap = page_alloc(), *write_bitmap = page_alloc();
    set_bitmap_bit(read_bitmap, EXITING_READ_FIELD);
    set_bitmap_bit(write_bitmap, EXITING_WRITE_FIELD);
    bool secondary = (vmcs_read(VMCS_PROC_BASED_CONTROLS) & PROC_ACTIVATE_SECONDARY) != 0;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_ACTIVATE_SECONDARY, 0);
    vmcs_write(VMCS_PROC_BASED_CONTROLS2,
               (secondary ? vmcs_read(VMCS_PROC_BASED_CONTROLS2) : 0) | PROC2_VMCS_SHADOWING);
    vmcs_write(VMCS_VMREAD_BITMAP, (uintptr_t)read_bitmap);
    vmcs_write(VMCS_VMWRITE_BITMAP, (uintptr_t)write_bitmap);
    uint64_t shadow = make_shadow_vmcs(&v);
    vmcs_write(VMCS_VMCS_LINK_POINTER, shadow);
    if (run_shadowed_accesses(s, &v, shadow))
        scenario_info(s, "VMCS shadowing: shadowed VMREAD/VMWRITE without exits, exits 23/25 where the bitmaps say, "
                         "VMfailInvalid without a link");
}

/* ---- the scenario ---- */

static uint64_t make_scratch_vmcs(void)
{
    void *page = page_alloc();
    uint64_t phys = vmx_alloc_region_phys(page);
    vcpu_track_vmcs(phys);
    if (vmcs_clear(phys) != VMX_OK || vmcs_load(phys) != VMX_OK)
        vmx_fail("VMCLEAR/VMPTRLD of the scratch VMCS failed");
    return phys;
}

static void vmcs_fields(struct scenario *s)
{
    struct fields_ctx c = { 0 };
    c.highest = (uint32_t)(rdmsr(MSR_VMX_VMCS_ENUM) >> 1) & 0x1ff;
    if (ALLOWED1(g_vmx.proc, PROC_ACTIVATE_TERTIARY))
        c.proc3 = rdmsr(MSR_VMX_PROCBASED3);
    uint64_t previous = ~0ull;
    vmcs_store(&previous);
    make_scratch_vmcs();
    check_memory_operand_faults(s); /* first: it needs a VMCS whose TSC offset it knows */
    check_defined_fields(s, &c);
    check_undefined_encodings(s, &c);
    check_read_only_fields(s);
    check_high_access(s, VMCS_TSC_OFFSET, "TSC offset");
    check_high_access(s, VMCS_EXECUTIVE_VMCS_PTR, "executive-VMCS pointer");
    check_shadowing(s);
    uint64_t now = ~0ull;
    vmcs_store(&now);
    if (previous == ~0ull)
        vmcs_clear(now);
    else
        vmcs_load(previous);
    scenario_good(s);
}
