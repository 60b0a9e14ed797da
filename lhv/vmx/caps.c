/* Reading the VMX capability MSRs once, and answering "can this CPU run scenario X?" with the
 * reason taken from those MSRs (SDM Appendix A). */
#include "console/console.h"
#include "vmx/vmx.h"

struct vmx_caps g_vmx;

#define MSR_VMX_BASIC 0x480
#define MSR_VMX_PINBASED 0x481
#define MSR_VMX_PROCBASED 0x482
#define MSR_VMX_EXIT 0x483
#define MSR_VMX_ENTRY 0x484
#define MSR_VMX_MISC 0x485
#define MSR_VMX_CR0_FIXED0 0x486
#define MSR_VMX_CR0_FIXED1 0x487
#define MSR_VMX_CR4_FIXED0 0x488
#define MSR_VMX_CR4_FIXED1 0x489
#define MSR_VMX_PROCBASED2 0x48b
#define MSR_VMX_EPT_VPID_CAP 0x48c
#define MSR_VMX_TRUE_PINBASED 0x48d
#define MSR_VMX_VMFUNC 0x491
#define FEATURE_CONTROL_LOCKED 1u
#define FEATURE_CONTROL_VMX_OUTSIDE_SMX 4u

void vmx_read_caps(void)
{
    /* Never touch VMX MSRs or CR4.VMXE without CPUID.1:ECX[5]: QEMU TCG hangs on CR4.VMXE. */
    g_vmx.cpuid_vmx = (cpuid(1, 0).ecx >> 5) & 1;
    if (!g_vmx.cpuid_vmx)
        return;
    g_vmx.feature_control = rdmsr(MSR_IA32_FEATURE_CONTROL);
    bool locked = g_vmx.feature_control & FEATURE_CONTROL_LOCKED;
    g_vmx.usable = !locked || (g_vmx.feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX);
    g_vmx.basic = rdmsr(MSR_VMX_BASIC);
    /* With bit 55 of IA32_VMX_BASIC the TRUE_* MSRs describe which default-1 bits may be 0. */
    uint32_t ctl_base = (g_vmx.basic >> 55) & 1 ? MSR_VMX_TRUE_PINBASED : MSR_VMX_PINBASED;
    g_vmx.pin = rdmsr(ctl_base);
    g_vmx.proc = rdmsr(ctl_base + 1);
    g_vmx.exit = rdmsr(ctl_base + 2);
    g_vmx.entry = rdmsr(ctl_base + 3);
    g_vmx.misc = rdmsr(MSR_VMX_MISC);
    g_vmx.cr0_fixed0 = rdmsr(MSR_VMX_CR0_FIXED0);
    g_vmx.cr0_fixed1 = rdmsr(MSR_VMX_CR0_FIXED1);
    g_vmx.cr4_fixed0 = rdmsr(MSR_VMX_CR4_FIXED0);
    g_vmx.cr4_fixed1 = rdmsr(MSR_VMX_CR4_FIXED1);
    if (ALLOWED1(g_vmx.proc, PROC_ACTIVATE_SECONDARY))
        g_vmx.proc2 = rdmsr(MSR_VMX_PROCBASED2);
    if (ALLOWED1(g_vmx.proc2, PROC2_EPT | PROC2_VPID))
        g_vmx.ept_vpid = rdmsr(MSR_VMX_EPT_VPID_CAP);
    /* IA32_VMX_VMFUNC raises #GP on CPUs without VM functions (Bochs sandy bridge). */
    if (ALLOWED1(g_vmx.proc2, PROC2_VMFUNC))
        g_vmx.vmfunc = rdmsr(MSR_VMX_VMFUNC);
}

/* One table of features: the CAPS line, the requirement words and the SKIP reasons all come
 * from here. */
struct feature {
    const char *word;
    bool (*present)(void);
    const char *why_absent; /* printf format; gets the MSR value */
    const uint64_t *msr_value;
    const char *depends; /* checked first, so the reason names the missing foundation */
};

static bool has_vmx(void) { return g_vmx.cpuid_vmx && g_vmx.usable; }
static bool has_ept(void) { return has_vmx() && ALLOWED1(g_vmx.proc2, PROC2_EPT) && (g_vmx.ept_vpid & EPT_CAP_WALK4) && (g_vmx.ept_vpid & EPT_CAP_WB); }
static bool has_vpid(void) { return has_vmx() && ALLOWED1(g_vmx.proc2, PROC2_VPID); }
static bool has_ug(void) { return has_ept() && ALLOWED1(g_vmx.proc2, PROC2_UNRESTRICTED_GUEST); }
static bool has_vmfunc(void) { return has_vmx() && ALLOWED1(g_vmx.proc2, PROC2_VMFUNC); }
static bool has_eptp_switch(void) { return has_vmfunc() && (g_vmx.vmfunc & 1); }
static bool has_mtf(void) { return has_vmx() && ALLOWED1(g_vmx.proc, PROC_MTF); }
static bool has_preempt(void) { return has_vmx() && ALLOWED1(g_vmx.pin, PIN_PREEMPTION_TIMER); }
static bool has_msr_bitmap(void) { return has_vmx() && ALLOWED1(g_vmx.proc, PROC_USE_MSR_BITMAPS); }
static bool has_invept(void) { return has_ept() && (g_vmx.ept_vpid & EPT_CAP_INVEPT); }
static bool has_invvpid(void) { return has_vpid() && (g_vmx.ept_vpid & VPID_CAP_INVVPID); }
static bool has_ept_2m(void) { return has_ept() && (g_vmx.ept_vpid & EPT_CAP_2M); }
static bool has_ept_1g(void) { return has_ept() && (g_vmx.ept_vpid & EPT_CAP_1G); }
static bool has_ept_ad(void) { return has_ept() && (g_vmx.ept_vpid & EPT_CAP_AD); }
/* IA32_VMX_MISC bit 8: VM entry may put the guest in the wait-for-SIPI activity state (A.6). */
static bool has_wait_sipi(void) { return has_vmx() && (g_vmx.misc & (1ull << 8)); }
static bool has_vnmi(void) { return has_vmx() && ALLOWED1(g_vmx.pin, PIN_NMI_EXITING | PIN_VIRTUAL_NMIS) == (PIN_NMI_EXITING | PIN_VIRTUAL_NMIS); }
static bool has_nmi_window(void) { return has_vnmi() && ALLOWED1(g_vmx.proc, PROC_NMI_WINDOW); }
static bool has_load_efer(void)
{
    uint32_t both = EXIT_LOAD_EFER | EXIT_SAVE_EFER;
    return has_vmx() && ALLOWED1(g_vmx.entry, ENTRY_LOAD_EFER) && ALLOWED1(g_vmx.exit, both) == both;
}

static const struct feature g_features[] = {
    { "vmx", has_vmx, "", &g_vmx.feature_control, NULL }, /* reasons written in vmx_requirement_check */
    { "ept", has_ept, "EPT with 4-level WB tables not offered (IA32_VMX_PROCBASED_CTLS2=0x%llx)", &g_vmx.proc2, NULL },
    { "vpid", has_vpid, "VPID not allowed by IA32_VMX_PROCBASED_CTLS2=0x%llx", &g_vmx.proc2, NULL },
    { "ug", has_ug, "unrestricted guest not allowed by IA32_VMX_PROCBASED_CTLS2=0x%llx", &g_vmx.proc2, "ept" },
    { "vmfunc", has_vmfunc, "VMFUNC not allowed by IA32_VMX_PROCBASED_CTLS2=0x%llx", &g_vmx.proc2, NULL },
    { "eptp_switch", has_eptp_switch, "EPTP switching not in IA32_VMX_VMFUNC=0x%llx", &g_vmx.vmfunc, "vmfunc" },
    { "mtf", has_mtf, "monitor trap flag not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx", &g_vmx.proc, NULL },
    { "preempt_timer", has_preempt, "preemption timer not allowed by IA32_VMX_PINBASED_CTLS=0x%llx", &g_vmx.pin, NULL },
    { "msr_bitmap", has_msr_bitmap, "MSR bitmaps not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx", &g_vmx.proc, NULL },
    { "invept", has_invept, "INVEPT not in IA32_VMX_EPT_VPID_CAP=0x%llx", &g_vmx.ept_vpid, "ept" },
    { "invvpid", has_invvpid, "INVVPID not in IA32_VMX_EPT_VPID_CAP=0x%llx", &g_vmx.ept_vpid, "vpid" },
    { "ept_2m", has_ept_2m, "2 MiB EPT pages not in IA32_VMX_EPT_VPID_CAP=0x%llx", &g_vmx.ept_vpid, "ept" },
    { "ept_1g", has_ept_1g, "1 GiB EPT pages not in IA32_VMX_EPT_VPID_CAP=0x%llx", &g_vmx.ept_vpid, "ept" },
    { "ept_ad", has_ept_ad, "EPT A/D bits not in IA32_VMX_EPT_VPID_CAP=0x%llx", &g_vmx.ept_vpid, "ept" },
    { "load_efer", has_load_efer, "EFER load/save controls not allowed (IA32_VMX_ENTRY_CTLS=0x%llx)", &g_vmx.entry, NULL },
    { "wait_sipi", has_wait_sipi, "wait-for-SIPI activity state not offered: IA32_VMX_MISC=0x%llx, bit 8 clear", &g_vmx.misc, NULL },
    { "vnmi", has_vnmi, "NMI exiting and virtual NMIs (bits 3, 5) not both allowed by IA32_VMX_PINBASED_CTLS=0x%llx", &g_vmx.pin, NULL },
    { "nmi_window", has_nmi_window, "NMI-window exiting (bit 22) not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx", &g_vmx.proc, "vnmi" },
};

int vmx_format_caps(char *buf, size_t size)
{
    int n = snprintf(buf, size, "LHV CAPS");
    for (size_t i = 0; i < ARRAY_SIZE(g_features) && n < (int)size; i++)
        n += snprintf(buf + n, size - (size_t)n, " %s=%d", g_features[i].word, g_features[i].present() ? 1 : 0);
    if (n < (int)size)
        n += snprintf(buf + n, size - (size_t)n, " feature_control=0x%llx",
                      (unsigned long long)g_vmx.feature_control);
    return n;
}

int vmx_requirement_check(const char *word, size_t len, char *reason, size_t reason_size)
{
    if (len == 7 && !memcmp(word, "cpus>=2", 7)) {
        if (g_cpu_count >= 2)
            return REQ_MET;
        snprintf(reason, reason_size, "needs 2 CPUs, the MADT lists %d", g_cpu_count);
        return REQ_ABSENT;
    }
    bool known = false;
    for (size_t i = 0; i < ARRAY_SIZE(g_features); i++)
        known |= strlen(g_features[i].word) == len && !memcmp(g_features[i].word, word, len);
    if (known && !has_vmx()) {
        /* Without VMX every other feature is absent for the same reason: say that one. */
        word = "vmx";
        len = 3;
    }
    for (size_t i = 0; i < ARRAY_SIZE(g_features); i++) {
        const struct feature *f = &g_features[i];
        if (strlen(f->word) != len || memcmp(f->word, word, len))
            continue;
        if (f->present())
            return REQ_MET;
        if (f->depends && vmx_requirement_check(f->depends, strlen(f->depends), reason, reason_size) != REQ_MET)
            return REQ_ABSENT;
        if (f->present == has_vmx && !g_vmx.cpuid_vmx)
            snprintf(reason, reason_size, "VMX not supported: CPUID.1:ECX[5]=0");
        else if (f->present == has_vmx)
            snprintf(reason, reason_size, "VMX disabled by firmware: IA32_FEATURE_CONTROL=0x%llx (locked, bit 2 clear)",
                     (unsigned long long)g_vmx.feature_control);
        else
            snprintf(reason, reason_size, f->why_absent, (unsigned long long)*f->msr_value);
        return REQ_ABSENT;
    }
    snprintf(reason, reason_size, "unknown requirement '%.*s' in the registry", (int)len, word);
    return REQ_UNKNOWN;
}
