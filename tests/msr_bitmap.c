/*
 * msr_bitmap: RDMSR and WRMSR in the guest exit exactly when the MSR bitmap says so.
 *
 * Intel SDM Vol. 3C 25.6.9 "MSR-Bitmap Address": four 1-KiB bitmaps in one page, read-low
 * (MSRs 0-1fffH) at offset 0, read-high (C0000000H-C0001FFFH) at 1024, write-low at 2048,
 * write-high at 3072; 26.1.3 "Instructions That Cause VM Exits Conditionally": an MSR outside
 * both ranges always exits. This is the original LHV's USE_MSRBITMAP (0x400) check; the classic
 * mistake, in L1s and in nested hypervisors merging L1's bitmap with their own, is an offset
 * that puts a bit in the wrong quarter of the page.
 * One MSR per quarter is intercepted, and each probed MSR is also accessed in the direction that
 * is not intercepted, so a bit in the wrong quarter shows up as a missing or an extra exit.
 * Intercepted reads return L1's marker value, which the guest must see.
 * GOOD: the exits (reason and ECX) are exactly the intercepted accesses plus the out-of-range
 * MSR, in order, and the guest read the marker for each intercepted read.
 * Negative control (inject=msr_bitmap): L1 sets the read-high bit at the read-low offset.
 * Needs: MSR bitmaps; the SYSCALL MSRs (a CPU with long mode).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(msr_bitmap, LHV_OPT_USE_MSRBITMAP, "vmx,msr_bitmap", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, msr_bitmap);

#define RDMSR_VALUE 0x4c48564dull /* "LHVM": what L1 returns for an intercepted RDMSR */
#define MSR_OUTSIDE_RANGES 0x40000000u /* in neither bitmap range: always exits */
#define MAX_EXITS 16

enum quarter { READ_LOW = 0, READ_HIGH = 1024, WRITE_LOW = 2048, WRITE_HIGH = 3072 };

struct probe {
    uint32_t msr;
    bool write;
    bool intercepted;
};

/* Each quarter has one intercepted MSR; each MSR is also accessed the other way, natively. */
static const struct probe g_probes[] = {
    { MSR_IA32_SYSENTER_CS, false, true },  /* read-low */
    { MSR_IA32_SYSENTER_CS, true, false },
    { MSR_IA32_SYSENTER_ESP, false, false },
    { MSR_IA32_SYSENTER_ESP, true, true },  /* write-low */
    { MSR_IA32_KERNEL_GS_BASE, false, true }, /* read-high */
    { MSR_IA32_KERNEL_GS_BASE, true, false },
    { MSR_IA32_STAR, false, false },
    { MSR_IA32_STAR, true, true },          /* write-high */
    { MSR_OUTSIDE_RANGES, false, true },    /* no bitmap bit at all */
};
#define PROBES ((int)ARRAY_SIZE(g_probes))

/* Shared with the guest: the values native writes put back (so they change nothing), and
 * what each read returned. */
static struct {
    uint64_t write_value[PROBES];
    uint64_t read_value[PROBES];
} g_job;

static uintptr_t guest_probe_msrs(uintptr_t unused)
{
    for (int i = 0; i < PROBES; i++) {
        if (g_probes[i].write)
            wrmsr(g_probes[i].msr, g_job.write_value[i]);
        else
            g_job.read_value[i] = rdmsr(g_probes[i].msr);
    }
    return unused;
}

static void set_bitmap_bit(uint8_t *bitmap, enum quarter q, uint32_t msr)
{
    uint32_t bit = msr & 0x1fff;
    bitmap[q + bit / 8] |= (uint8_t)(1u << (bit % 8));
}

static enum quarter quarter_of(const struct probe *p)
{
    bool high = p->msr >= 0xc0000000u;
    return p->write ? (high ? WRITE_HIGH : WRITE_LOW) : (high ? READ_HIGH : READ_LOW);
}

static void fill_bitmap(struct scenario *s, uint8_t *bitmap)
{
    for (int i = 0; i < PROBES; i++) {
        const struct probe *p = &g_probes[i];
        if (!p->intercepted || p->msr == MSR_OUTSIDE_RANGES)
            continue;
        enum quarter q = quarter_of(p);
        if (s->inject && q == READ_HIGH)
            q = READ_LOW; /* the offset mistake */
        set_bitmap_bit(bitmap, q, p->msr);
    }
}

/* Guest values for native writes: what the guest would read there anyway. SYSENTER_CS/ESP come
 * from the VMCS guest fields (0), the SYSCALL MSRs are L1's own. */
static void prepare_job(void)
{
    for (int i = 0; i < PROBES; i++) {
        uint32_t msr = g_probes[i].msr;
        bool vmcs_switched = msr == MSR_IA32_SYSENTER_CS || msr == MSR_IA32_SYSENTER_ESP;
        g_job.write_value[i] = (g_probes[i].write && !vmcs_switched) ? rdmsr(msr) : 0;
        g_job.read_value[i] = 0;
    }
}

static bool expect_exit_for(struct scenario *s, const struct vmx_exit *e, uint32_t ecx, const struct probe *want)
{
    uint32_t reason = want->write ? EXIT_WRMSR : EXIT_RDMSR;
    if ((e->reason & 0xffff) == reason && ecx == want->msr)
        return true;
    return scenario_bad(s, "expected %s exit for MSR 0x%x, observed %s exit (ECX 0x%x)", exit_reason_name(reason),
                        want->msr, exit_reason_name(e->reason), ecx);
}

static void msr_bitmap(struct scenario *s)
{
    bool long_mode = cpuid(0x80000000u, 0).eax >= 0x80000001u && (cpuid(0x80000001u, 0).edx & (1u << 29));
    if (!long_mode)
        return (void)scenario_skip(s, "needs the SYSCALL MSRs: CPUID.80000001H:EDX[29]=0");
    prepare_job();
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .msr_bitmap = true };
    vcpu_init_c_guest(&v, &cfg, guest_probe_msrs, 0);
    fill_bitmap(s, v.msr_bitmap);
    for (int i = 0; i < PROBES; i++) {
        if (!g_probes[i].intercepted)
            continue;
        if (!vcpu_run_entered(s, &v))
            return;
        if (!expect_exit_for(s, &v.exit, (uint32_t)v.regs.rcx, &g_probes[i]))
            return;
        if (!g_probes[i].write) { /* emulate the read: EDX:EAX = marker */
            v.regs.rax = (uint32_t)RDMSR_VALUE;
            v.regs.rdx = 0;
        }
        vcpu_skip_instruction(&v);
    }
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    for (int i = 0; i < PROBES; i++)
        if (g_probes[i].intercepted && !g_probes[i].write &&
            !expect_eq(s, "value of an intercepted RDMSR in the guest", RDMSR_VALUE, g_job.read_value[i]))
            return;
    scenario_good(s);
}
