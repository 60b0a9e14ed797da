/*
 * exception_bitmap: L2's exceptions exit to L1 exactly where the exception bitmap and, for #PF,
 * the page-fault error-code mask/match pair say; the others reach L2's own IDT.
 *
 * Intel SDM Vol. 3C 26.2 "Other Causes of VM Exits" (exceptions): an exception exits iff its bit
 * in the exception bitmap is 1, except #PF: with PFEC the page-fault error code, a #PF exits iff
 * ((PFEC & PFEC_MASK) == PFEC_MATCH) equals bit 14 of the bitmap. 28.2.1 "Basic VM-Exit
 * Information" and 28.2.2 "Information for VM Exits Due to Vectored Events": VM-exit
 * interruption information (vector, type 3 hardware exception, 5 privileged software exception
 * for INT1/ICEBP, 6 software exception for INT3/INTO, error-code valid bit 11), error code,
 * instruction length for software exceptions; exit qualification = linear address for #PF
 * (and CR2 is not loaded: 28.1 "Architectural State Before a VM Exit"), debug-exception bits
 * (BD = bit 13 for a MOV DR with DR7.GD = 1, Table 28-1) for #DB.
 * Probes in L2 (native mode): #DE (DIV by 0), ICEBP (0xF1), INT3 (0xCC), INTO with OF = 1
 * (32-bit code: on amd64 from a compatibility-mode segment), UD2, #GP(0x1238) from a bad FS
 * load, MOV from DR0 with DR7.GD = 1, and #PF: read and write of a not-present page (PFEC 0
 * and 2), write of a read-only page with CR0.WP = 1 (PFEC 3), read through a PTE with a
 * reserved address bit (PFEC 9); and at CPL 3 (Vol. 3A 4.7: U = 1 in the error code): read of a
 * not-present page (PFEC 4), read of a supervisor-only page (PFEC 5), write of a read-only user
 * page (PFEC 7). For those L2 enters CPL 3 straight from the VM entry (DPL-3 CS/SS/DS/ES of the
 * GDT it shares with L1, arch/desc.c) on a copy of user_page_tables() (arch/user.c, U = 1 at
 * every level, as nested_user_mode uses), with RSP0/ESP0 of L1's TSS (which L2's TR names) set
 * for the scenario and cleared after it. Every non-#PF probe runs with only its vector's bit set
 * (exit) and with every bit but its own set (delivered to L2's handler: guest/idt.c, which
 * reports vector, error code and frame RIP by VMCALL from CPL 0; that VMCALL is also how a CPL-3
 * fault gets back to L1). Every #PF runs under five mask/match pairs (all: 0/0, none: 0/1, P:
 * 1/1, W: 2/2, U: 4/4; U matches only the CPL-3 faults) with bit 14 set and clear. A CPL-3 #PF
 * that exits shows guest CS.RPL 3; one delivered to L2 left the frame of a privilege change
 * (user CS and SS, Vol. 3A 6.12.1) on the TSS stack.
 * Bug: Linux KVM 18712c13709d ("KVM: nVMX: Use vmx_need_pf_intercept() when deciding if L0
 * wants a #PF", 2020): the nested #PF intercept decision; kvm-unit-tests has no test of the
 * mask/match rule.
 * GOOD: every exit and every delivery as the rule says, with the right fields; L2's CR2 is the
 * value L1 left there after an intercepted #PF and the fault address after a delivered one.
 * BAD: a missing or extra exit, or a wrong field.
 * Negative control (inject=exception_bitmap): L1 writes mask = match = 0 whatever the pair is,
 * as a hypervisor that decides on bit 14 alone, so "none" with bit 14 set exits.
 * Needs: VMX; MOV-DR exiting clearable. The CPL-3 faults need SMEP/SMAP off in L2 (LHV never
 * sets them: L2's CR4 is L1's).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(exception_bitmap, 0, "vmx", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, exception_bitmap);

#define CALL_NO_EXCEPTION 0x1ff /* the probe instruction completed */
#define PF_REGION 0xc0000000u   /* three pages L2 sees through its own page tables */
#define PF_NOT_PRESENT (PF_REGION + 0x0000)
#define PF_READ_ONLY (PF_REGION + 0x1000)
#define PF_RESERVED (PF_REGION + 0x2000)
#define PF_SUPERVISOR (PF_REGION + 0x3000) /* in the CPL-3 tables: present, U=0 */
#define PFEC_P 1u
#define PFEC_W 2u
#define PFEC_U 4u
#define PFEC_RSVD 8u
#define CR2_SENTINEL 0x5a5a5000u
#define DR6_BD (1u << 13)
#define DR7_GD (1u << 13)
#define RFLAGS_OF (1u << 11)
#define GP_SELECTOR 0x1238u

#ifdef __x86_64__
#define XAX "%rax"
#define XBX "%rbx"
#else
#define XAX "%eax"
#define XBX "%ebx"
#endif
#define NO_EXCEPTION "    mov $0x1ff, %eax\n    vmcall\n    ud2\n"

extern const uint8_t exb_de[], exb_icebp[], exb_int3[], exb_into_start[], exb_into[], exb_ud2[], exb_gp[],
    exb_pf_read[], exb_pf_write[], exb_db_start[], exb_db[];
__asm__(".pushsection .text\n"
        "exb_de: div %ecx\n" NO_EXCEPTION
        "exb_icebp: .byte 0xf1\n" NO_EXCEPTION
        "exb_int3: .byte 0xcc\n" NO_EXCEPTION
#ifdef __x86_64__
        "exb_into_start:\n"
        "    pushq $0x08\n" /* SEL_CODE32: INTO is invalid in 64-bit mode */
        "    pushq $exb_into\n"
        "    lretq\n"
        ".code32\n"
        "exb_into: into\n" NO_EXCEPTION
        ".code64\n"
#else
        "exb_into_start:\n"
        "exb_into: into\n" NO_EXCEPTION
#endif
        "exb_ud2: ud2\n" NO_EXCEPTION
        "exb_gp: mov %eax, %fs\n" NO_EXCEPTION
        "exb_pf_read: mov (" XBX "), %eax\n" NO_EXCEPTION
        "exb_pf_write: mov %eax, (" XBX ")\n" NO_EXCEPTION
        "exb_db_start: mov " XAX ", %dr7\n"
        "exb_db: mov %dr0, " XAX "\n" NO_EXCEPTION
        ".popsection\n");

struct probe {
    const char *name;
    const uint8_t *start, *insn; /* where L2 starts, the instruction that raises the exception */
    uint8_t vector;
    uint32_t type;   /* INTR_TYPE_* */
    int64_t error;   /* -1: no error code */
    uint8_t length;  /* software exceptions: instruction length; the frame RIP is insn + length */
    int64_t qualification; /* -1: not checked (undefined for this vector) */
    uintptr_t rax, rbx, rcx, rdx;
    uint32_t rflags;
};

static const struct probe g_probes[] = {
    { "#DE", exb_de, exb_de, 0, INTR_TYPE_HW_EXCEPTION, -1, 0, -1, 1, 0, 0, 0, 0 },
    { "ICEBP", exb_icebp, exb_icebp, 1, INTR_TYPE_PRIV_SW_EXCEPTION, -1, 1, 0, 0, 0, 0, 0, 0 },
    { "INT3", exb_int3, exb_int3, 3, INTR_TYPE_SW_EXCEPTION, -1, 1, -1, 0, 0, 0, 0, 0 },
    { "INTO", exb_into_start, exb_into, 4, INTR_TYPE_SW_EXCEPTION, -1, 1, -1, 0, 0, 0, 0, RFLAGS_OF },
    { "UD2", exb_ud2, exb_ud2, 6, INTR_TYPE_HW_EXCEPTION, -1, 0, -1, 0, 0, 0, 0, 0 },
    { "#GP", exb_gp, exb_gp, 13, INTR_TYPE_HW_EXCEPTION, GP_SELECTOR, 0, -1, GP_SELECTOR, 0, 0, 0, 0 },
    { "MOV DR with DR7.GD", exb_db_start, exb_db, 1, INTR_TYPE_HW_EXCEPTION, -1, 0, DR6_BD, 0x400 | DR7_GD, 0, 0, 0,
      0 },
};

struct fault {
    const char *name;
    const uint8_t *insn;
    uintptr_t address;
    uint32_t pfec;
    bool user; /* L2 makes the access at CPL 3, on its U=1 page tables */
};

static const struct fault g_faults[] = {
    { "read of a not-present page", exb_pf_read, PF_NOT_PRESENT, 0, false },
    { "write of a not-present page", exb_pf_write, PF_NOT_PRESENT, PFEC_W, false },
    { "write of a read-only page", exb_pf_write, PF_READ_ONLY, PFEC_P | PFEC_W, false },
    { "read through a reserved bit", exb_pf_read, PF_RESERVED, PFEC_P | PFEC_RSVD, false },
};

/* At CPL 3 the CPU sets U in the error code (Intel SDM Vol. 3A 4.7): the "U" pair matches these. */
static const struct fault g_user_faults[] = {
    { "CPL-3 read of a not-present page", exb_pf_read, PF_NOT_PRESENT, PFEC_U, true },
    { "CPL-3 read of a supervisor page", exb_pf_read, PF_SUPERVISOR, PFEC_U | PFEC_P, true },
    { "CPL-3 write of a read-only user page", exb_pf_write, PF_READ_ONLY, PFEC_U | PFEC_P | PFEC_W, true },
};

struct pfec_pair {
    const char *name;
    uint32_t mask, match;
};

static const struct pfec_pair g_pairs[] = {
    { "all", 0, 0 }, { "none", 0, 1 }, { "P", PFEC_P, PFEC_P }, { "W", PFEC_W, PFEC_W }, { "U", PFEC_U, PFEC_U },
};

static uintptr_t read_dr6(void)
{
    uintptr_t v;
    __asm__ volatile("mov %%dr6, %0" : "=r"(v));
    return v;
}
static void write_dr6(uintptr_t v) { __asm__ volatile("mov %0, %%dr6" ::"r"(v)); }

/* L2's page tables: a copy of `cr3` (L1's, or its U=1 copy for CPL 3), except that the first 2 MiB
 * at PF_REGION are mapped by a page table of their own. CPL 0: page 0 not present, page 1
 * read-only, page 2 with a reserved address bit. CPL 3 (every level U=1 but the last where
 * said): page 0 not present, page 1 read-only user, page 3 read/write supervisor-only. */
#define ADDR_MASK 0x000ffffffffff000ull
static uint64_t *copy_table(uint64_t *entry)
{
    uint64_t *copy = page_alloc();
    memcpy(copy, (void *)(uintptr_t)(*entry & ADDR_MASK), PAGE_SIZE);
    *entry = (uintptr_t)copy | (*entry & ~ADDR_MASK);
    return copy;
}

static unsigned max_phys_addr(void)
{
    if (cpuid(0x80000000u, 0).eax >= 0x80000008u)
        return cpuid(0x80000008u, 0).eax & 0xff;
    return 36;
}

static uint64_t build_pf_tables(uintptr_t cr3, bool user)
{
    uint64_t root = cr3 & ~0xfffull, *pdpt;
#ifdef __x86_64__
    uint64_t *pml4 = copy_table(&root);
    pdpt = copy_table(&pml4[0]);
#else
    pdpt = copy_table(&root);
#endif
    uint64_t *pd = copy_table(&pdpt[(PF_REGION >> 30) & 3]);
    uint64_t *pt = page_alloc();
    uintptr_t backing = (uintptr_t)page_alloc();
    if (user) {
        pd[(PF_REGION >> 21) & 511] = (uintptr_t)pt | 0x7; /* P RW U */
        pt[1] = backing | 0x5;                               /* P U, read-only */
        pt[3] = backing | 0x3;                               /* P RW, supervisor-only */
        return root;
    }
    pd[(PF_REGION >> 21) & 511] = (uintptr_t)pt | 0x3; /* P RW */
    pt[1] = backing | 0x1;                               /* P, read-only */
    pt[2] = backing | 0x3 | (1ull << max_phys_addr());   /* P RW, reserved bit */
    return root;
}

/* Every probe starts like the first: CS as vcpu_init set it (INTO on amd64 leaves it 32-bit),
 * data segments and CR3 as exception_bitmap() set them (a CPL-3 fault changes them). */
struct cs_state {
    uint64_t selector, base, limit, ar;
    uint64_t data_ar, cr3, user_cr3;
    uintptr_t kernel_stack_top; /* TSS RSP0 / ESP0 while L2 is at CPL 3 */
};

#define AR_DPL3 (3u << 5)
/* Flat SS, DS, ES; all fields, since an event from CPL 3 in 64-bit mode leaves SS null at the exit. */
static void set_data_segments(uint16_t selector, uint64_t ar)
{
    static const enum vmcs_field fields[][4] = {
        { VMCS_GUEST_SS_SELECTOR, VMCS_GUEST_SS_BASE, VMCS_GUEST_SS_LIMIT, VMCS_GUEST_SS_AR },
        { VMCS_GUEST_DS_SELECTOR, VMCS_GUEST_DS_BASE, VMCS_GUEST_DS_LIMIT, VMCS_GUEST_DS_AR },
        { VMCS_GUEST_ES_SELECTOR, VMCS_GUEST_ES_BASE, VMCS_GUEST_ES_LIMIT, VMCS_GUEST_ES_AR },
    };
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
        vmcs_write(fields[i][0], selector);
        vmcs_write(fields[i][1], 0);
        vmcs_write(fields[i][2], 0xffffffffu);
        vmcs_write(fields[i][3], ar);
    }
}

/* L2 starts at CPL 3 straight from the VM entry: DPL-3 CS and SS (27.3.1.2: SS.DPL is the CPL)
 * from the GDT it shares with L1, on the U=1 tables. */
static void enter_at_cpl3(const struct cs_state *cs)
{
    vmcs_write(VMCS_GUEST_CS_SELECTOR, SEL_USER_CODE);
    vmcs_write(VMCS_GUEST_CS_AR, cs->ar | AR_DPL3);
    set_data_segments(SEL_USER_DATA, cs->data_ar | AR_DPL3);
    vmcs_write(VMCS_GUEST_CR3, cs->user_cr3);
}

static void prepare(struct vcpu *v, const struct cs_state *cs, const uint8_t *start, const struct probe *p)
{
    vmcs_write(VMCS_GUEST_CS_SELECTOR, cs->selector);
    vmcs_write(VMCS_GUEST_CS_BASE, cs->base);
    vmcs_write(VMCS_GUEST_CS_LIMIT, cs->limit);
    vmcs_write(VMCS_GUEST_CS_AR, cs->ar);
    set_data_segments(SEL_DATA, cs->data_ar);
    vmcs_write(VMCS_GUEST_CR3, cs->cr3);
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)start);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | (p ? p->rflags : 0));
    vmcs_write(VMCS_GUEST_DR7, 0x400);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
    if (p) {
        v->regs.rax = p->rax;
        v->regs.rbx = p->rbx;
        v->regs.rcx = p->rcx;
        v->regs.rdx = p->rdx;
    }
    write_cr2(CR2_SENTINEL);
    write_dr6(0xffff0ff0u);
}

/* An exception exit for probe p: reason 0 and the fields of SDM 28.2.1/28.2.2. */
static bool expect_exit(struct scenario *s, struct vcpu *v, const struct probe *p, const char *what)
{
    const struct vmx_exit *e = &v->exit;
    if (!vcpu_run_entered(s, v))
        return false;
    if ((e->reason & 0xffff) == EXIT_VMCALL)
        return scenario_bad(s, "%s: expected an exception exit, observed VMCALL 0x%llx (%s) with vector 0x%llx",
                            what, (unsigned long long)v->regs.rax,
                            v->regs.rax == GUEST_CALL_EVENT ? "delivered to L2" : "no exception",
                            (unsigned long long)v->regs.rbx);
    if (!vcpu_check_exit(s, v, EXIT_EXCEPTION_NMI))
        return false;
    uint32_t info = INTR_INFO_VALID | p->type | p->vector | (p->error >= 0 ? INTR_INFO_ERROR_CODE : 0);
    if (e->interruption_info != info)
        return scenario_bad(s, "%s: expected interruption information 0x%x, observed 0x%x", what, info,
                            e->interruption_info);
    if (p->error >= 0 && e->interruption_error != (uint32_t)p->error)
        return scenario_bad(s, "%s: expected error code 0x%x, observed 0x%x", what, (uint32_t)p->error,
                            e->interruption_error);
    if (e->guest_rip != (uintptr_t)p->insn)
        return scenario_bad(s, "%s: expected guest RIP 0x%llx at the exit, observed 0x%llx", what,
                            (unsigned long long)(uintptr_t)p->insn, (unsigned long long)e->guest_rip);
    if (p->length && e->instruction_length != p->length)
        return scenario_bad(s, "%s: expected instruction length %u, observed %u", what, p->length,
                            e->instruction_length);
    if (p->qualification >= 0 && e->qualification != (uint64_t)p->qualification)
        return scenario_bad(s, "%s: expected exit qualification 0x%llx, observed 0x%llx", what,
                            (unsigned long long)p->qualification, (unsigned long long)e->qualification);
    return true;
}

/* Delivered through L2's IDT: its handler reports vector, error code and the RIP in its frame. */
static bool expect_delivery(struct scenario *s, struct vcpu *v, const struct probe *p, const char *what)
{
    if (!vcpu_run_entered(s, v))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_EXCEPTION_NMI)
        return scenario_bad(s, "%s: expected delivery to L2, observed an exception exit, interruption info 0x%x",
                            what, v->exit.interruption_info);
    if (!vcpu_check_exit(s, v, EXIT_VMCALL) || !expect_eq(s, "L2's VMCALL (11: its handler ran)", GUEST_CALL_EVENT,
                                                           v->regs.rax))
        return false;
    uintptr_t frame_rip = (uintptr_t)p->insn + p->length;
    uint32_t error = p->error >= 0 ? (uint32_t)p->error : 0;
    if (v->regs.rbx != p->vector || (uint32_t)v->regs.rcx != error || v->regs.rdx != frame_rip)
        return scenario_bad(s, "%s: expected L2's handler to see vector %u error 0x%x rip 0x%llx, observed vector "
                               "%llu error 0x%x rip 0x%llx",
                            what, p->vector, error, (unsigned long long)frame_rip, (unsigned long long)v->regs.rbx,
                            (uint32_t)v->regs.rcx, (unsigned long long)v->regs.rdx);
    return true;
}

static bool run_probe(struct scenario *s, struct vcpu *v, const struct cs_state *cs, const struct probe *p)
{
    char what[80];
    snprintf(what, sizeof(what), "%s, bitmap 0x%x", p->name, 1u << p->vector);
    prepare(v, cs, p->start, p);
    vmcs_write(VMCS_EXCEPTION_BITMAP, 1u << p->vector);
    if (!expect_exit(s, v, p, what))
        return false;
    snprintf(what, sizeof(what), "%s, bitmap 0x%x", p->name, ~(1u << p->vector));
    prepare(v, cs, p->start, p);
    vmcs_write(VMCS_EXCEPTION_BITMAP, ~(1u << p->vector));
    if (!expect_delivery(s, v, p, what))
        return false;
    if (p->qualification == DR6_BD && !(read_dr6() & DR6_BD))
        return scenario_bad(s, "%s: expected DR6.BD set in L2 after the delivered #DB, observed DR6=0x%llx", what,
                            (unsigned long long)read_dr6());
    return true;
}

static unsigned g_pf_exits, g_pf_deliveries;

/* A #PF from CPL 3 switched L2 to the TSS stack (Intel SDM Vol. 3A 6.12.1): the frame under the
 * error code is RIP, CS, RFLAGS, RSP, SS, ending at the (16-aligned) top; its CS is the user one.
 * L2's handler (guest/idt.S) ran at CPL 0 there and reported by VMCALL: that is the way back. */
static bool expect_delivered_from_cpl3(struct scenario *s, const struct cs_state *cs, const char *what)
{
    const uintptr_t *top = (const uintptr_t *)cs->kernel_stack_top;
    uint64_t frame_cs = top[-4] & 0xffff, frame_ss = top[-1] & 0xffff; /* 32-bit: upper halves reserved */
    if (frame_cs == SEL_USER_CODE && frame_ss == SEL_USER_DATA)
        return true;
    return scenario_bad(s, "%s: expected the handler's frame on the TSS stack with CS 0x%x and SS 0x%x, observed "
                           "CS 0x%llx SS 0x%llx",
                        what, SEL_USER_CODE, SEL_USER_DATA, (unsigned long long)frame_cs,
                        (unsigned long long)frame_ss);
}

static bool run_fault(struct scenario *s, struct vcpu *v, const struct cs_state *cs, const struct fault *f,
                      const struct pfec_pair *pair, bool bit14)
{
    const struct probe p = { f->name, f->insn, f->insn, 14, INTR_TYPE_HW_EXCEPTION, f->pfec, 0, f->address, 0,
                             f->address, 0, 0, 0 };
    bool exits = ((f->pfec & pair->mask) == pair->match) == bit14;
    char what[120];
    snprintf(what, sizeof(what), "#PF %s (PFEC 0x%x), mask 0x%x match 0x%x, bit 14 %s", f->name, f->pfec, pair->mask,
             pair->match, bit14 ? "set" : "clear");
    prepare(v, cs, f->insn, &p);
    if (f->user)
        enter_at_cpl3(cs);
    vmcs_write(VMCS_EXCEPTION_BITMAP, ~(1u << 14) | (bit14 ? 1u << 14 : 0));
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MASK, s->inject ? 0 : pair->mask);
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MATCH, s->inject ? 0 : pair->match);
    if (exits) {
        g_pf_exits++;
        if (!expect_exit(s, v, &p, what))
            return false;
        if (read_cr2() != CR2_SENTINEL)
            return scenario_bad(s, "%s: expected CR2 0x%x left alone by the #PF exit, observed 0x%llx", what,
                                CR2_SENTINEL, (unsigned long long)read_cr2());
        uint64_t guest_cs = vmcs_read(VMCS_GUEST_CS_SELECTOR);
        if (f->user && (guest_cs & 3) != 3)
            return scenario_bad(s, "%s: expected guest CS.RPL 3 at the exit, observed CS 0x%llx", what,
                                (unsigned long long)guest_cs);
        return true;
    }
    g_pf_deliveries++;
    if (!expect_delivery(s, v, &p, what))
        return false;
    if (!expect_eq(s, "CR2 in L2 after a delivered #PF", f->address, read_cr2()))
        return false;
    return !f->user || expect_delivered_from_cpl3(s, cs, what);
}

/* Every fault under every mask/match pair, bit 14 clear and set. */
static bool run_faults(struct scenario *s, struct vcpu *v, const struct cs_state *cs, const struct fault *faults,
                       size_t count)
{
    for (size_t f = 0; f < count; f++)
        for (size_t k = 0; k < ARRAY_SIZE(g_pairs); k++)
            for (int bit14 = 0; bit14 < 2; bit14++)
                if (!run_fault(s, v, cs, &faults[f], &g_pairs[k], bit14))
                    return false;
    return true;
}

static void exception_bitmap(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)exb_de };
    cfg.stack_top = guest_stack_top();
    vcpu_init(&v, &cfg);
    if ((uint32_t)g_vmx.proc & PROC_MOV_DR_EXITING)
        return (void)scenario_skip(s, "MOV-DR exiting cannot be cleared: IA32_VMX_PROCBASED_CTLS=0x%llx",
                                   (unsigned long long)g_vmx.proc);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, 0, PROC_MOV_DR_EXITING);
    if (ALLOWED1(g_vmx.entry, ENTRY_LOAD_DEBUG_CONTROLS)) /* L2 runs with GUEST_DR7, not L1's */
        vcpu_set_controls(VMCS_ENTRY_CONTROLS, ENTRY_LOAD_DEBUG_CONTROLS, 0);
    uint16_t idt_limit;
    vmcs_write(VMCS_GUEST_IDTR_BASE, guest_idt_build(&idt_limit));
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vmcs_write(VMCS_GUEST_CR0, vmcs_read(VMCS_GUEST_CR0) | CR0_WP); /* supervisor writes obey R/W */
    const struct cs_state cs = { vmcs_read(VMCS_GUEST_CS_SELECTOR),
                                 vmcs_read(VMCS_GUEST_CS_BASE),
                                 vmcs_read(VMCS_GUEST_CS_LIMIT),
                                 vmcs_read(VMCS_GUEST_CS_AR),
                                 vmcs_read(VMCS_GUEST_SS_AR),
                                 build_pf_tables(read_cr3(), false),
                                 build_pf_tables(user_page_tables(), true),
                                 (uintptr_t)page_alloc() + PAGE_SIZE };

    for (size_t i = 0; i < ARRAY_SIZE(g_probes); i++)
        if (!run_probe(s, &v, &cs, &g_probes[i]))
            return;
    bool reserved_bit = max_phys_addr() < 52;
    g_pf_exits = g_pf_deliveries = 0;
    if (!reserved_bit)
        scenario_info(s, "MAXPHYADDR is 52: no reserved address bit, the PFEC 9 fault is left out");
    if (!run_faults(s, &v, &cs, g_faults, ARRAY_SIZE(g_faults) - (reserved_bit ? 0 : 1)))
        return;
    int cpu = this_cpu_index();
    tss_set_stack0(cpu, cs.kernel_stack_top); /* L2 runs on L1's TSS; put back below, even on BAD */
    bool user_ok = run_faults(s, &v, &cs, g_user_faults, ARRAY_SIZE(g_user_faults));
    tss_set_stack0(cpu, 0);
    if (!user_ok)
        return;
    scenario_info(s, "%u probes exited and were delivered; %u #PFs exited, %u were delivered to L2",
                  (unsigned)ARRAY_SIZE(g_probes), g_pf_exits, g_pf_deliveries);
    scenario_good(s);
}
