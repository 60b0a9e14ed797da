/* Local APIC (xAPIC or x2APIC, whichever the firmware left on), and the clocks: TSC and the
 * LAPIC timer are both measured once, on the BSP, against PIT channel 2 or, where there is no
 * PIT, the ACPI PM timer. */
#include "arch/arch.h"

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)
#define LAPIC_ID 0x20
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ISR 0x100
#define LAPIC_IRR 0x200
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
#define LVT_PERIODIC (1u << 17)
#define LVT_MASKED (1u << 16)

static volatile uint32_t *g_lapic_mmio;
static bool g_x2apic;
static bool g_one_shot_only; /* LHV_OPT 0x200: no periodic timer on any CPU */
static bool g_want_x2apic; /* apic=x2apic: each CPU switches to x2APIC mode in lapic_init_cpu */
/* The modes the CPUs were in when LHV got them (HANDOFF_* bits), until lapic_seal_handoff(): an
 * AP that a scenario's INIT resets and LHV starts again is not handed over by the firmware. */
#define HANDOFF_DISABLED 1u
#define HANDOFF_XAPIC 2u
#define HANDOFF_X2APIC 4u
static uint32_t g_handoff_seen;
static bool g_handoff_sealed;
static uint32_t g_lapic_ticks_per_10ms;
uint64_t g_tsc_hz;

static uint32_t lapic_read(uint32_t reg)
{
    return g_x2apic ? (uint32_t)rdmsr(0x800 + (reg >> 4)) : g_lapic_mmio[reg / 4];
}

static void lapic_write(uint32_t reg, uint32_t v)
{
    if (g_x2apic)
        wrmsr(0x800 + (reg >> 4), v);
    else
        g_lapic_mmio[reg / 4] = v;
}

uint32_t lapic_id(void)
{
    uint32_t id = lapic_read(LAPIC_ID);
    return g_x2apic ? id : id >> 24;
}

void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

/* One vector's bit in the in-service or the request register (eight 32-bit registers 16 bytes
 * apart, SDM Vol. 3A 11.8.4). */
static bool lapic_vector_bit(uint32_t first_reg, uint8_t vector)
{
    return (lapic_read(first_reg + 0x10u * (vector / 32u)) >> (vector % 32u)) & 1u;
}

bool lapic_in_service(uint8_t vector) { return lapic_vector_bit(LAPIC_ISR, vector); }
bool lapic_requested(uint8_t vector) { return lapic_vector_bit(LAPIC_IRR, vector); }

void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low)
{
    if (g_x2apic) {
        wrmsr(0x830, ((uint64_t)apic_id << 32) | icr_low);
        return;
    }
    lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
    lapic_write(LAPIC_ICR_LOW, icr_low);
    for (int i = 0; i < 1000000 && (lapic_read(LAPIC_ICR_LOW) & (1u << 12)); i++)
        cpu_relax(); /* delivery status: wait until the IPI has been sent */
}

static void lapic_start_timer(uint32_t hz)
{
    lapic_write(LAPIC_TIMER_DIV, 0x3); /* divide by 16 */
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VECTOR_TIMER);
    lapic_write(LAPIC_TIMER_INIT, (uint32_t)((uint64_t)g_lapic_ticks_per_10ms * 100 / hz));
}

/* The BIOS leaves the 8259 PICs delivering IRQ0 at vector 8, which would look like a double
 * fault: move them to 0x20-0x2f and mask every line; LHV uses only the local APIC. */
static void legacy_pic_disable(void)
{
    static const uint8_t init[2][4] = { { 0x11, 0x20, 0x04, 0x01 }, { 0x11, 0x28, 0x02, 0x01 } };
    for (int pic = 0; pic < 2; pic++) {
        uint16_t cmd = pic ? 0xa0 : 0x20;
        outb(cmd, init[pic][0]);
        for (int i = 1; i < 4; i++)
            outb((uint16_t)(cmd + 1), init[pic][i]);
        outb((uint16_t)(cmd + 1), 0xff);
    }
}

/* apic=x2apic: imitate a firmware that hands over in x2APIC mode (every CPU in it, as the SDM
 * requires of all of them, Vol. 3A 11.12.5), where the CPU has one (CPUID.1:ECX[21]). */
bool lapic_request_x2apic(void)
{
    g_want_x2apic = (cpuid(1, 0).ecx >> 21) & 1;
    return g_want_x2apic;
}

bool lapic_is_x2apic(void) { return g_x2apic; }

static void note_handoff_mode(uint64_t base)
{
    uint32_t mode = !(base & APIC_BASE_ENABLE) ? HANDOFF_DISABLED
                    : (base & APIC_BASE_X2APIC) ? HANDOFF_X2APIC : HANDOFF_XAPIC;
    if (!__atomic_load_n(&g_handoff_sealed, __ATOMIC_ACQUIRE))
        __atomic_or_fetch(&g_handoff_seen, mode, __ATOMIC_RELAXED);
}

void lapic_seal_handoff(void) { __atomic_store_n(&g_handoff_sealed, true, __ATOMIC_RELEASE); }

/* "x2apic", "xapic" or "disabled" when every CPU came in that mode; "mixed" when they differ. */
const char *lapic_handoff_mode(void)
{
    switch (g_handoff_seen) {
    case HANDOFF_X2APIC: return "x2apic";
    case HANDOFF_XAPIC: return "xapic";
    case HANDOFF_DISABLED: return "disabled";
    default: return "mixed";
    }
}

/* BSP: the fast timer that drives the watchdog and the heartbeat. APs: a slow heartbeat.
 * Whichever mode the firmware left the APIC in is used: xAPIC through its MMIO page, x2APIC
 * (IA32_APIC_BASE bit 10) through MSRs 0x800-0x8ff throughout. */
void lapic_init_cpu(bool bsp)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    note_handoff_mode(base);
    if (bsp)
        legacy_pic_disable();
    if (!(base & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, base |= APIC_BASE_ENABLE);
    if (g_want_x2apic && !(base & APIC_BASE_X2APIC)) /* xAPIC to x2APIC: EN stays set, EXTD set */
        wrmsr(MSR_APIC_BASE, base |= APIC_BASE_X2APIC);
    g_x2apic = (base & APIC_BASE_X2APIC) != 0;
    g_lapic_mmio = (volatile uint32_t *)(uintptr_t)(base & 0xfffff000u);
    lapic_write(LAPIC_SVR, 0x100 | VECTOR_SPURIOUS);
    if (!bsp && !g_one_shot_only)
        lapic_start_timer(10);
}

void lapic_timer_one_shot_only(void) { g_one_shot_only = true; }

/* One interrupt on VECTOR_TIMER after about `ms` milliseconds, none after it (one-shot mode,
 * SDM Vol. 3A 11.5.4). The smallest divider whose 32-bit count reaches that far; beyond it the
 * longest count there is, and the handler arms again for the rest. */
void lapic_arm_one_shot_ms(uint64_t ms)
{
    static const struct { uint32_t code, shift; } dividers[] = { { 0x3, 0 }, { 0x8, 1 }, { 0x9, 2 }, { 0xa, 3 } };
    uint64_t count = (uint64_t)g_lapic_ticks_per_10ms * ms / 10;
    size_t i = 0;
    while (i + 1 < ARRAY_SIZE(dividers) && (count >> dividers[i].shift) > 0xffffffffull)
        i++;
    count >>= dividers[i].shift;
    lapic_write(LAPIC_TIMER_DIV, dividers[i].code);
    lapic_write(LAPIC_LVT_TIMER, VECTOR_TIMER); /* timer mode 00: one-shot */
    lapic_write(LAPIC_TIMER_INIT, count > 0xffffffffull ? 0xffffffffu : (count ? (uint32_t)count : 1u));
}

/* Initial count 0 stops the count down; masked so that nothing can come from it. */
void lapic_timer_stop(void)
{
    lapic_write(LAPIC_TIMER_INIT, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VECTOR_TIMER);
}

void lapic_start_bsp_timer(void) { lapic_start_timer(TIMER_HZ); }

/* The timer's programming (not its current count), for the runner's check that a scenario left
 * it as it was: a stopped or slowed BSP timer is a watchdog that no longer bites. */
struct lapic_timer_state lapic_timer_read(void)
{
    struct lapic_timer_state t = { lapic_read(LAPIC_LVT_TIMER), lapic_read(LAPIC_TIMER_INIT),
                                   lapic_read(LAPIC_TIMER_DIV) };
    return t;
}

/* Writing the initial count restarts the count down (SDM Vol. 3A 11.5.4). */
void lapic_timer_write(const struct lapic_timer_state *t)
{
    lapic_write(LAPIC_TIMER_DIV, t->divide);
    lapic_write(LAPIC_LVT_TIMER, t->lvt);
    lapic_write(LAPIC_TIMER_INIT, t->initial_count);
}

/* An NMI to this CPU by its own APIC ID (the self shorthand is not valid with NMI delivery,
 * SDM Vol. 3A 11.6.1): fixed destination, delivery mode NMI, level assert. */
void lapic_send_self_nmi(void) { lapic_send_ipi(lapic_id(), 0x4400); }

/* The LAPIC timer counts down from its largest value (divide by 16, masked) while a reference
 * clock measures 10 ms; the TSC is read at both ends. */
static void lapic_count_start(uint64_t *tsc0)
{
    lapic_write(LAPIC_TIMER_DIV, 0x3);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_TIMER_INIT, 0xffffffffu);
    *tsc0 = rdtsc();
}

static void lapic_count_end(uint64_t tsc0, uint64_t *tsc_delta, uint32_t *lapic_delta)
{
    *tsc_delta = rdtsc() - tsc0;
    *lapic_delta = 0xffffffffu - lapic_read(LAPIC_TIMER_CUR);
    lapic_write(LAPIC_TIMER_INIT, 0);
}

/* PIT channel 2 counts 11932 ticks of 1.193182 MHz = 10 ms with its gate, independent of IRQs.
 * In mode 0 its output is low from the count's load until the count ends: an output already
 * high at the start means no PIT answers there (laptops that gate it off, QEMU pit=off). */
static bool pit_wait_10ms(uint64_t *tsc_delta, uint32_t *lapic_delta)
{
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
    outb(0x43, 0xb0);
    outb(0x42, 11932 & 0xff);
    outb(0x42, 11932 >> 8);
    /* Restart the count by toggling the gate, then time it. */
    outb(0x61, (uint8_t)(inb(0x61) & ~0x01));
    outb(0x61, (uint8_t)(inb(0x61) | 0x01));
    if (inb(0x61) & 0x20)
        return false;
    uint64_t t0;
    lapic_count_start(&t0);
    for (uint32_t spins = 0; !(inb(0x61) & 0x20); spins++)
        if (spins > 50000000u) {
            lapic_write(LAPIC_TIMER_INIT, 0);
            return false;
        }
    lapic_count_end(t0, tsc_delta, lapic_delta);
    return true;
}

/* 10 ms on the ACPI PM timer: 35795 ticks of 3.579545 MHz, counted across a wrap of its 24 or
 * 32 bits. A port that does not count (reads the same value for long) gives false. */
#define PM_TIMER_10MS 35795u
static uint32_t pm_timer_read(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static bool pm_timer_wait_10ms(uint64_t *tsc_delta, uint32_t *lapic_delta)
{
    bool bits32;
    uint16_t port = acpi_pm_timer_port(&bits32);
    if (!port)
        return false;
    uint32_t mask = bits32 ? 0xffffffffu : 0xffffffu, start = pm_timer_read(port) & mask, elapsed = 0, spins = 0;
    uint64_t t0;
    lapic_count_start(&t0);
    while (elapsed < PM_TIMER_10MS) {
        uint32_t now = pm_timer_read(port) & mask;
        elapsed = (now - start) & mask;
        if (!elapsed && ++spins > 10000000u) {
            lapic_write(LAPIC_TIMER_INIT, 0);
            return false;
        }
    }
    lapic_count_end(t0, tsc_delta, lapic_delta);
    *tsc_delta = *tsc_delta * PM_TIMER_10MS / elapsed;
    *lapic_delta = (uint32_t)((uint64_t)*lapic_delta * PM_TIMER_10MS / elapsed);
    return true;
}

/* Without a counting clock: CPUID leaf 0x15 (TSC = crystal x EBX / EAX; the LAPIC timer runs
 * at the crystal's frequency, SDM Vol. 3A 11.5.4 and 19.7.3), else leaf 0x16's base MHz. */
static const char *cpuid_frequencies(void)
{
    uint32_t max_leaf = cpuid(0, 0).eax;
    struct cpuid_regs r15 = max_leaf >= 0x15 ? cpuid(0x15, 0) : (struct cpuid_regs){ 0 };
    struct cpuid_regs r16 = max_leaf >= 0x16 ? cpuid(0x16, 0) : (struct cpuid_regs){ 0 };
    if (r15.eax && r15.ebx && r15.ecx) {
        g_tsc_hz = (uint64_t)r15.ecx * r15.ebx / r15.eax;
        g_lapic_ticks_per_10ms = r15.ecx / 100 / 16;
        return "cpuid15";
    }
    g_tsc_hz = (r16.eax ? r16.eax : 1000) * 1000000ull;
    g_lapic_ticks_per_10ms = (r16.ecx ? r16.ecx : 100) * 10000u / 16;
    return r16.eax ? "cpuid16" : "guess";
}

const char *g_clock_source = "pit";

/* Three 10 ms measurements, the median one kept: one measurement disturbed by the host (an
 * emulator's thread descheduled, its TSC corrected) must not set every later deadline. */
typedef bool (*clock_wait_10ms)(uint64_t *tsc_delta, uint32_t *lapic_delta);
static bool measure_median(clock_wait_10ms wait, uint64_t *tsc_delta, uint32_t *lapic_delta)
{
    uint64_t tsc[3];
    uint32_t lapic[3];
    for (int i = 0; i < 3; i++)
        if (!wait(&tsc[i], &lapic[i]) || !tsc[i] || !lapic[i])
            return false;
    int mid = 0;
    for (int i = 0; i < 3; i++) {
        int below = 0, above = 0;
        for (int j = 0; j < 3; j++)
            below += j != i && tsc[j] <= tsc[i], above += j != i && tsc[j] >= tsc[i];
        if (below >= 1 && above >= 1)
            mid = i;
    }
    *tsc_delta = tsc[mid];
    *lapic_delta = lapic[mid];
    return true;
}

/* The clock that measured the TSC and the LAPIC timer, in the order of trust: the PIT, the
 * ACPI PM timer, what CPUID says. The source is printed on the LHV TSC line (clock=). */
void timers_calibrate(void)
{
    uint64_t tsc_delta;
    uint32_t lapic_delta;
    if (measure_median(pit_wait_10ms, &tsc_delta, &lapic_delta))
        g_clock_source = "pit";
    else if (measure_median(pm_timer_wait_10ms, &tsc_delta, &lapic_delta))
        g_clock_source = "acpi_pm";
    else {
        g_clock_source = cpuid_frequencies();
        arch_note("LHV NOTE: neither the PIT nor the ACPI PM timer counted; TSC %llu Hz from %s",
                  (unsigned long long)g_tsc_hz, g_clock_source);
        return;
    }
    g_tsc_hz = tsc_delta * 100;
    g_lapic_ticks_per_10ms = lapic_delta;
}

uint64_t tsc_to_ms(uint64_t tsc_delta) { return g_tsc_hz ? tsc_delta / (g_tsc_hz / 1000) : 0; }

void delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + g_tsc_hz / 1000000 * us;
    while (rdtsc() < end)
        cpu_relax();
}
