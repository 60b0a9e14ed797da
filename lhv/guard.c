/*
 * L1's integrity between scenarios. A scenario may change what L1 stands on (CR3, the IDT, VMX
 * operation...) and then fail before it puts it back; without this guard the next scenario would
 * run on that damage and the rest of the run would be lost (a hang, a triple fault, ERRORs that
 * belong to somebody else). Read before, compared after, restored, and reported in the verdict
 * of the scenario that changed it.
 *
 * VMX operation cannot be read without side effects: VMPTRST outside VMX operation is #UD. It is
 * probed with VMXON (SDM 31.3 VMXON): in VMX root operation it fails (VMfailValid 15 or
 * VMfailInvalid) and changes nothing; outside it, it succeeds, which is exactly the restore.
 */
#include "guard.h"
#include "console/console.h"
#include "vmx/vmx.h"

#define STACK_CANARY 0x4b54532d2d56484cull /* "LHV--STK" */
#define LVT_DELIVERY_STATUS (1u << 12)     /* read-only, set while an interrupt is pending */
#define NO_VMCS (~0ull)                    /* VMPTRST with no current VMCS */

struct l1_state {
    bool valid;
    uintptr_t cr0, cr3, cr4;
    bool has_efer;
    uint64_t efer;
    struct desc_ptr gdtr, idtr;
    uint16_t tr;
    bool irq;
    struct lapic_timer_state timer;
    uint64_t vmcs; /* current-VMCS pointer, when in VMX operation */
};

static struct l1_state g_bsp_before;
static struct l1_state g_ap_reference[MAX_CPUS];
static struct guard_changes g_ap_changes[MAX_CPUS];

static void note(struct guard_changes *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct guard_changes *c, const char *fmt, ...)
{
    size_t room = sizeof(c->text) - c->len;
    if (c->len && room > 2) {
        memcpy(c->text + c->len, ", ", 3);
        c->len += 2;
        room -= 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->text + c->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        c->cut = true;
        c->len = sizeof(c->text) - 1;
    } else {
        c->len += (size_t)n;
    }
}

static bool cpu_has_efer(void)
{
    if (cpuid(0x80000000u, 0).eax < 0x80000001u)
        return false;
    return (cpuid(0x80000001u, 0).edx & ((1u << 11) | (1u << 20) | (1u << 29))) != 0; /* SYSCALL, NX, LM */
}

static void capture(struct l1_state *s)
{
    s->cr0 = read_cr0();
    s->cr3 = read_cr3();
    s->cr4 = read_cr4();
    s->has_efer = cpu_has_efer();
    s->efer = s->has_efer ? rdmsr(MSR_IA32_EFER) : 0;
    s->gdtr = read_gdtr();
    s->idtr = read_idtr();
    s->tr = read_tr();
    s->irq = (read_flags() & RFLAGS_IF) != 0;
    s->timer = lapic_timer_read();
    s->vmcs = NO_VMCS;
    if (this_cpu()->vmx_on)
        vmcs_store(&s->vmcs);
    s->valid = true;
}

static void check_control_registers(const struct l1_state *b, struct guard_changes *c)
{
    uintptr_t cr3 = read_cr3(), cr4 = read_cr4(), cr0 = read_cr0();
    if (cr3 != b->cr3) {
        write_cr3(b->cr3);
        note(c, "CR3 0x%llx -> 0x%llx", (unsigned long long)b->cr3, (unsigned long long)cr3);
    }
    if (cr4 != b->cr4) {
        write_cr4(b->cr4);
        note(c, "CR4 0x%llx -> 0x%llx", (unsigned long long)b->cr4, (unsigned long long)cr4);
    }
    if (cr0 != b->cr0) {
        write_cr0(b->cr0);
        note(c, "CR0 0x%llx -> 0x%llx", (unsigned long long)b->cr0, (unsigned long long)cr0);
    }
    uint64_t efer = b->has_efer ? rdmsr(MSR_IA32_EFER) : 0;
    if (efer != b->efer) {
        wrmsr(MSR_IA32_EFER, b->efer);
        note(c, "EFER 0x%llx -> 0x%llx", (unsigned long long)b->efer, (unsigned long long)efer);
    }
}

/* Every VM exit sets the GDTR and IDTR limits to FFFFH (SDM 28.5.2): not the scenario's doing,
 * but not L1's tables either. Put back without blame; the runner, not a scenario, owns them. */
static bool vm_exit_limit(const struct desc_ptr *now, const struct desc_ptr *before)
{
    return now->base == before->base && now->limit == 0xffff;
}

static bool same_table(const struct desc_ptr *a, const struct desc_ptr *b)
{
    return a->base == b->base && a->limit == b->limit;
}

/* GDTR first: TR's descriptor is looked up in the GDT that is loaded. */
static void check_descriptor_tables(const struct l1_state *b, struct guard_changes *c)
{
    struct desc_ptr gdtr = read_gdtr(), idtr = read_idtr();
    if (vm_exit_limit(&gdtr, &b->gdtr))
        write_gdtr(&b->gdtr);
    else if (!same_table(&gdtr, &b->gdtr)) {
        write_gdtr(&b->gdtr);
        note(c, "GDTR 0x%llx/0x%x -> 0x%llx/0x%x", (unsigned long long)b->gdtr.base, b->gdtr.limit,
             (unsigned long long)gdtr.base, gdtr.limit);
    }
    if (vm_exit_limit(&idtr, &b->idtr))
        write_idtr(&b->idtr);
    else if (!same_table(&idtr, &b->idtr)) {
        write_idtr(&b->idtr);
        note(c, "IDTR 0x%llx/0x%x -> 0x%llx/0x%x", (unsigned long long)b->idtr.base, b->idtr.limit,
             (unsigned long long)idtr.base, idtr.limit);
    }
    uint16_t tr = read_tr();
    if (tr != b->tr) {
        tr_reload(b->tr);
        note(c, "TR 0x%x -> 0x%x", b->tr, tr);
    }
}

static void check_lapic_timer(const struct l1_state *b, struct guard_changes *c)
{
    struct lapic_timer_state t = lapic_timer_read();
    if ((t.lvt & ~LVT_DELIVERY_STATUS) == (b->timer.lvt & ~LVT_DELIVERY_STATUS) &&
        t.initial_count == b->timer.initial_count && t.divide == b->timer.divide)
        return;
    lapic_timer_write(&b->timer);
    note(c, "LAPIC timer LVT/initial/divide 0x%x/0x%x/0x%x -> 0x%x/0x%x/0x%x", b->timer.lvt, b->timer.initial_count,
         b->timer.divide, t.lvt, t.initial_count, t.divide);
}

/* Only where the runner believes the CPU is in VMX operation: a scenario that leaves it with
 * VMXOFF says so in cpu->vmx_on, and vmx_after_scenario() takes it back in. */
static void check_vmx_operation(struct guard_changes *c)
{
    struct percpu *cpu = this_cpu();
    if (!cpu->vmx_on)
        return;
    if (vmx_on(cpu->vmxon_phys) == VMX_OK)
        note(c, "VMX operation on -> off");
}

static void check_vmcs_pointer(const struct l1_state *b, struct guard_changes *c)
{
    uint64_t vmcs = NO_VMCS;
    if (!this_cpu()->vmx_on || vmcs_store(&vmcs) != VMX_OK || vmcs == b->vmcs)
        return;
    if (b->vmcs == NO_VMCS)
        vmcs_clear(vmcs); /* its page may go back to the pool: VMCLEAR writes it out (SDM 25.11.3) */
    else
        vmcs_load(b->vmcs);
    note(c, "current VMCS 0x%llx -> 0x%llx", (unsigned long long)b->vmcs, (unsigned long long)vmcs);
}

static void check_cpu(const struct l1_state *b, bool check_irq, struct guard_changes *c)
{
    check_control_registers(b, c);
    check_descriptor_tables(b, c);
    if (check_irq && !(read_flags() & RFLAGS_IF) && b->irq)
        note(c, "RFLAGS.IF 1 -> 0"); /* the runner turns interrupts back on after every scenario */
    check_lapic_timer(b, c);
    check_vmx_operation(c);
}

/* Work for an AP: the first time it takes its reference, afterwards it checks against it. Runs
 * in the AP's work loop, where interrupts are on and no scenario work is left. */
static void ap_check(void *arg)
{
    (void)arg;
    int cpu = this_cpu_index();
    struct l1_state *ref = &g_ap_reference[cpu];
    struct guard_changes *c = &g_ap_changes[cpu];
    memset(c, 0, sizeof(*c));
    if (!ref->valid) {
        capture(ref);
        return;
    }
    check_cpu(ref, false, c);
    check_vmcs_pointer(ref, c);
}

static void check_aps(struct guard_changes *c)
{
    for (int cpu = 1; cpu < g_cpu_count; cpu++) {
        if (!g_cpus[cpu].online)
            continue;
        if (!smp_start_work(cpu, ap_check, NULL) || !smp_wait_work(cpu, 1000)) {
            note(c, "cpu%d did not answer the check", cpu);
            continue;
        }
        if (g_ap_changes[cpu].len)
            note(c, "cpu%d: %s", cpu, g_ap_changes[cpu].text);
        c->cut |= g_ap_changes[cpu].cut;
    }
}

/* The lowest word of each CPU's stack: overwritten only by a stack that ran over its end. */
static uint64_t *stack_canary(int cpu) { return (uint64_t *)(void *)g_cpu_stacks[cpu]; }

static void check_stack_canaries(struct guard_changes *c)
{
    for (int cpu = 0; cpu < g_cpu_count; cpu++) {
        uint64_t *canary = stack_canary(cpu);
        if (*canary == STACK_CANARY)
            continue;
        note(c, "cpu%d stack canary 0x%llx -> 0x%llx (stack overflow)", cpu, STACK_CANARY, (unsigned long long)*canary);
        *canary = STACK_CANARY;
    }
}

void guard_start(void)
{
    for (int cpu = 0; cpu < g_cpu_count; cpu++)
        *stack_canary(cpu) = STACK_CANARY;
    struct guard_changes ignored = { 0 };
    check_aps(&ignored); /* the first check of each AP takes its reference */
}

void guard_before_scenario(void) { capture(&g_bsp_before); }

void guard_after_body(bool returned, struct guard_changes *c) { check_cpu(&g_bsp_before, returned, c); }

void guard_after_cleanup(struct guard_changes *c)
{
    check_vmcs_pointer(&g_bsp_before, c);
    check_aps(c);
    check_stack_canaries(c);
}
