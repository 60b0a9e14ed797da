/*
 * msr_lists: the VM-entry MSR-load, VM-exit MSR-store and VM-exit MSR-load lists move exact
 * values (Intel SDM Vol. 3C, 25.7.2 "VM-Exit Controls for MSRs", 25.8.2 "VM-Entry Controls for
 * MSRs", 27.4 "Loading MSRs" at VM entry, 28.4 "Saving MSRs" and 28.6 "Loading MSRs" at VM
 * exit).
 *
 * For each MSR L1 picks three values different from its own: G for the entry-load list, W that
 * the guest writes, H2 for the exit-load list. The guest (no MSR exits: an all-zero MSR
 * bitmap) reads each MSR, expecting G, and writes W. At the exit the store list must hold W and
 * L1 must read H2. MSRs: the SYSCALL MSRs (STAR, LSTAR, FMASK, KERNEL_GS_BASE) on CPUs with long
 * mode, PAT (only the entries LHV's page tables never select), the last variable-range MTRR pair
 * while it is unused (valid bit kept 0), and EFER.NXE on CPUs with NX. A hypervisor that drops
 * or reorders list entries when it merges L1's lists with its own (the classic nested bug) shows
 * up here. This is the original LHV's USE_MSR_LOAD (0x1) check.
 * GOOD: every value where the SDM says. BAD: the first MSR and list that disagreed.
 * Negative control (inject=msr_lists): L1 leaves the VM-entry MSR-load count at 0, so the
 * guest sees L1's values.
 * Needs: VMX with MSR bitmaps.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(msr_lists, LHV_OPT_USE_MSR_LOAD, "vmx,msr_bitmap", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, msr_lists);

#define MAX_MSRS 8

struct msr_entry { /* SDM 25.7.2, Table 25-15: format of an MSR entry */
    uint32_t index;
    uint32_t reserved;
    uint64_t data;
} __attribute__((packed));

struct msr_case {
    uint32_t index;
    const char *name;
    uint64_t host, entry_value, guest_write, exit_value;
};

/* Shared with the guest: what to write, and what it read. */
struct guest_job {
    int count;
    uint32_t index[MAX_MSRS];
    uint64_t write[MAX_MSRS];
    uint64_t observed[MAX_MSRS];
};

static struct msr_case g_cases[MAX_MSRS];
static struct guest_job g_job;

static uintptr_t guest_read_then_write(uintptr_t arg)
{
    struct guest_job *job = (struct guest_job *)arg;
    for (int i = 0; i < job->count; i++) {
        job->observed[i] = rdmsr(job->index[i]);
        wrmsr(job->index[i], job->write[i]);
    }
    return 0;
}

static int add_case(int n, uint32_t index, const char *name, uint64_t entry, uint64_t write, uint64_t exit)
{
    uint64_t host = rdmsr(index);
    g_cases[n] = (struct msr_case){ index, name, host, entry, write, exit };
    return n + 1;
}

/* Values are chosen to be legal for each MSR (canonical addresses, valid memory types). */
static int choose_msrs(void)
{
    int n = 0;
    uint32_t ext_edx = cpuid(0x80000000u, 0).eax >= 0x80000001u ? cpuid(0x80000001u, 0).edx : 0;
    uint32_t std_edx = cpuid(1, 0).edx;
    if (ext_edx & (1u << 29)) {
        n = add_case(n, MSR_IA32_STAR, "STAR", 0x0023001000000000ull, 0x001b000800000000ull, 0x0013000800000000ull);
        n = add_case(n, MSR_IA32_LSTAR, "LSTAR", 0xfffff80000001000ull, 0x0000000000402000ull, 0x0000000000403000ull);
        n = add_case(n, MSR_IA32_FMASK, "FMASK", 0x4700, 0x0200, 0x0100);
        n = add_case(n, MSR_IA32_KERNEL_GS_BASE, "KERNEL_GS_BASE", 0x1000, 0x2000, 0x3000);
    }
    if (std_edx & (1u << 16)) {
        uint64_t low = rdmsr(MSR_IA32_PAT) & 0xffffffffull; /* entries 0-3: the ones in use */
        n = add_case(n, MSR_IA32_PAT, "PAT", low | 0x0406010500000000ull, low | 0x0106050400000000ull,
                     low | 0x0605040100000000ull);
    }
    uint32_t vcnt = (std_edx & (1u << 12)) ? (uint32_t)(rdmsr(MSR_IA32_MTRRCAP) & 0xff) : 0;
    uint32_t base = MSR_IA32_MTRR_PHYSBASE0 + 2 * (vcnt - 1);
    if (vcnt && !(rdmsr(base + 1) & (1u << 11))) {
        n = add_case(n, base, "MTRR_PHYSBASE", 0x10000006, 0x20000005, 0x30000004);
        n = add_case(n, base + 1, "MTRR_PHYSMASK", 0xffff0000, 0xfffe0000, 0xfffc0000);
    }
    if (ext_edx & (1u << 20)) {
        uint64_t efer = rdmsr(MSR_IA32_EFER);
        n = add_case(n, MSR_IA32_EFER, "EFER", efer ^ EFER_NXE, efer, efer ^ EFER_NXE);
    }
    return n;
}

static void fill_list(struct msr_entry *list, int n, int which)
{
    for (int i = 0; i < n; i++) {
        list[i].index = g_cases[i].index;
        list[i].data = which == 0 ? g_cases[i].entry_value : which == 1 ? 0xdeadbeefull : g_cases[i].exit_value;
    }
}

static bool check_results(struct scenario *s, int n, const struct msr_entry *store)
{
    for (int i = 0; i < n; i++) {
        const struct msr_case *c = &g_cases[i];
        uint64_t now = rdmsr(c->index);
        if (g_job.observed[i] != c->entry_value)
            return scenario_bad(s, "expected guest to read %s=0x%llx (VM-entry MSR-load list), observed 0x%llx",
                                c->name, (unsigned long long)c->entry_value, (unsigned long long)g_job.observed[i]);
        if (store[i].data != c->guest_write)
            return scenario_bad(s, "expected VM-exit MSR-store list %s=0x%llx, observed 0x%llx", c->name,
                                (unsigned long long)c->guest_write, (unsigned long long)store[i].data);
        if (now != c->exit_value)
            return scenario_bad(s, "expected L1 to read %s=0x%llx after exit (VM-exit MSR-load list), observed 0x%llx",
                                c->name, (unsigned long long)c->exit_value, (unsigned long long)now);
    }
    return true;
}

static void msr_lists(struct scenario *s)
{
    int n = choose_msrs();
    if (!n) {
        scenario_skip(s, "no MSR suitable for the lists: no long mode, PAT, free MTRR or NX in CPUID");
        return;
    }
    struct msr_entry *entry_load = page_alloc(), *exit_store = page_alloc(), *exit_load = page_alloc();
    fill_list(entry_load, n, 0);
    fill_list(exit_store, n, 1);
    fill_list(exit_load, n, 2);
    g_job.count = n;
    for (int i = 0; i < n; i++) {
        g_job.index[i] = g_cases[i].index;
        g_job.write[i] = g_cases[i].guest_write;
    }
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .msr_bitmap = true };
    vcpu_init_c_guest(&v, &cfg, guest_read_then_write, (uintptr_t)&g_job);
    vmcs_write(VMCS_ENTRY_MSR_LOAD_ADDR, (uintptr_t)entry_load);
    vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, s->inject ? 0 : (uint64_t)n);
    vmcs_write(VMCS_EXIT_MSR_STORE_ADDR, (uintptr_t)exit_store);
    vmcs_write(VMCS_EXIT_MSR_STORE_COUNT, (uint64_t)n);
    vmcs_write(VMCS_EXIT_MSR_LOAD_ADDR, (uintptr_t)exit_load);
    vmcs_write(VMCS_EXIT_MSR_LOAD_COUNT, (uint64_t)n);
    bool ran = vcpu_expect_call(s, &v, GUEST_CALL_DONE);
    bool ok = ran && check_results(s, n, exit_store);
    for (int i = 0; i < n; i++) /* L1 gets its own values back whatever happened */
        wrmsr(g_cases[i].index, g_cases[i].host);
    if (ok) {
        scenario_info(s, "%d MSRs moved through all three lists", n);
        scenario_good(s);
    }
}
