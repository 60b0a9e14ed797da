/* Processor setup shared by the BSP and the APs: descriptor tables, interrupts, paging,
 * LAPIC and its timer, ACPI and SMP bring-up, per-CPU data. */
#ifndef LHV_ARCH_H
#define LHV_ARCH_H

#include "arch/cpu.h"
#include "lib/lib.h"

#define MAX_CPUS 64

/* GDT layout, the same on both subarchs; per-CPU TSS descriptors follow. */
#include "arch/boot_defs.h"
#define SEL_TSS_BASE 0x20 /* + 8 (i386) or 16 (amd64) per CPU */
#ifdef __x86_64__
#define SEL_L1_CODE SEL_CODE64
#else
#define SEL_L1_CODE SEL_CODE32
#endif

/* After the fixed descriptors and the TSS slots: a CPL-3 code and data segment. */
#define GDT_USER_INDEX (4 + (sizeof(uintptr_t) == 8 ? 2 : 1) * MAX_CPUS)
#define SEL_USER_CODE ((uint16_t)(GDT_USER_INDEX * 8 + 3))
#define SEL_USER_DATA ((uint16_t)(GDT_USER_INDEX * 8 + 8 + 3))

#define VECTOR_TIMER 0x40
#define VECTOR_WAKE 0x41 /* IPI: an AP has work */
#define VECTOR_NOISE 0x42 /* IPI: noise=ipi (arch/noise.c) */
#define VECTOR_SPURIOUS 0xff

/* Register frame built by the interrupt stubs (isr.S); field order matches the pushes. */
struct trap_frame {
#ifdef __x86_64__
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t ip, cs, flags, sp, ss;
#else
    uint32_t edi, esi, ebp, esp_dummy, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t ip, cs, flags;
#endif
};

struct percpu {
    int index;
    uint32_t apic_id;
    volatile bool online;
    volatile bool vmx_on;
    volatile uint32_t heartbeat;
    uint64_t vmxon_phys;
    uint8_t *stack_top;
};

extern struct percpu g_cpus[MAX_CPUS];
extern int g_cpu_count;
extern uint64_t g_tsc_hz;
extern volatile uint64_t g_ticks; /* BSP timer ticks */
#define TIMER_HZ 100

void gdt_init_cpu(int cpu);
void idt_init(void);
void idt_load(void);
uintptr_t tss_base(int cpu);
uint32_t tss_limit(void);
uint16_t tss_selector(int cpu);
void tss_prepare(int cpu);
void tr_reload(uint16_t selector);
void tss_set_stack0(int cpu, uintptr_t sp); /* RSP0 / SS0:ESP0 of that CPU's TSS; 0 clears */

/* CPL 3 (arch/user.c, user.S), for LHV_OPT 0x40 in L1 and 0x800 in L2 (same code, same GDT and
 * TSS: L2 runs on L1's). A trip IRETs to `entry` at CPL 3 with IF=1 on a user stack, under a
 * copy of the current IDT in which VECTOR_USER_RETURN is a DPL-3 gate; it ends with INT
 * VECTOR_USER_RETURN (EAX is kept in ax) or with #GP/#UD (caught by the copy's gates), and
 * returns here with CR3, the IDT and the TSS as they were. at_cpl0: the same trip with L1's own
 * selectors (a negative control). switch_cr3: run on user_page_tables() (L1); L2 has them as
 * its guest CR3 already and must not touch CR3. cpu: whose TSS (L2 cannot ask the LAPIC). */
struct user_trip {
    uintptr_t vector, error, ip, cs, ax; /* user.S stores by these offsets */
};
void user_mode_run(uintptr_t entry, bool at_cpl0, bool switch_cr3, int cpu, struct user_trip *out);
/* A copy of the current paging structures with U=1 in every entry that has the bit (PAE PDPTEs
 * have none); returns the CR3 value. */
uintptr_t user_page_tables(void);
struct percpu *this_cpu(void);
int this_cpu_index(void);

void lapic_init_cpu(bool bsp);
bool lapic_request_x2apic(void); /* apic=x2apic; false when the CPU has no x2APIC */
bool lapic_is_x2apic(void);
void lapic_seal_handoff(void);         /* the CPUs LHV got from the firmware have all started */
const char *lapic_handoff_mode(void);  /* the mode they came in: x2apic, xapic, disabled, mixed */
uint32_t lapic_id(void);
void lapic_eoi(void);
void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low);
bool lapic_in_service(uint8_t vector); /* the vector's ISR bit */
bool lapic_requested(uint8_t vector);  /* the vector's IRR bit */
void timers_calibrate(void);
extern const char *g_clock_source; /* what timers_calibrate measured with: pit, acpi_pm, cpuid15... */
void lapic_start_bsp_timer(void);
/* LHV_OPT 0x200 NO_INTERRUPT: no CPU gets a periodic timer (call before the APs start); the
 * runner arms a one-shot per scenario at its budget instead, so the watchdog still bites. */
void lapic_timer_one_shot_only(void);
void lapic_arm_one_shot_ms(uint64_t ms);
void lapic_timer_stop(void);
void lapic_send_self_nmi(void);
struct lapic_timer_state {
    uint32_t lvt, initial_count, divide;
};
struct lapic_timer_state lapic_timer_read(void);
void lapic_timer_write(const struct lapic_timer_state *t);
uint64_t tsc_to_ms(uint64_t tsc_delta);
void delay_us(uint64_t us);

/* ACPI: RSDP given by the boot loader (multiboot 2) or found by scanning BIOS memory. */
void acpi_set_rsdp(const void *rsdp_copy, size_t len);
bool acpi_oem_is(const char *oem6);
int acpi_collect_apic_ids(uint32_t *ids, int max, int *x2apic_entries);
uint16_t acpi_pm_timer_port(bool *bits32);
/* setup runs on each AP before it counts as online (main.c hands in: enter VMX operation). */
typedef void (*ap_setup_fn)(struct percpu *cpu);
void smp_boot_aps(ap_setup_fn setup);
/* "madt_x2apic=1 apic_ids=0-3,256": how many CPUs the MADT lists as x2APIC entries, and the
 * started CPUs' APIC IDs (runs of consecutive IDs as ranges; "..." ends a list cut to size). */
void smp_describe_cpus(char *buf, size_t size);
extern uint8_t g_cpu_stacks[MAX_CPUS][CPU_STACK_SIZE]; /* [0] is the BSP's; each grows down to [i][0] */

/* Start-up notes kept until the console can print them (arch/ is below the console). */
void arch_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
size_t arch_take_notes(char *out, size_t size);

/* Running code on an AP (scenarios that need a second CPU). The function runs in the AP's L1
 * context with interrupts on; long-running work must poll g_work_cancel and return when set. */
typedef void (*cpu_work_fn)(void *arg);
bool smp_start_work(int cpu, cpu_work_fn fn, void *arg);
bool smp_wait_work(int cpu, uint64_t timeout_ms);
bool smp_cancel_all_work(uint64_t timeout_ms);
extern volatile bool g_work_cancel;
/* INIT-SIPI-SIPI again for an AP that an INIT reset; true when it is online again. */
bool smp_restart_ap(int cpu);

/* NMIs in L1 (arch/nmi.c). A scenario that expects NMIs installs a hook while it runs; every
 * other NMI is counted and returns normally (IRET), never a crash. */
#define VECTOR_NMI 2
typedef void (*nmi_hook_fn)(struct trap_frame *f);
void nmi_set_hook(nmi_hook_fn hook); /* NULL: no hook */
void nmi_handle(struct trap_frame *f);
uint32_t nmi_take_unexpected(void); /* NMIs no hook took, all CPUs, since the last call */
/* Studying NMI blocking (arch/isr.S). A hook that calls nmi_keep_blocked(f) returns from the NMI
 * without IRET, so L1 stays NMI-blocked; nmi_iret() executes an IRET (to nmi_iret_done) that ends
 * the blocking, and a pending NMI is then taken at once. nmi_guest_entry is an NMI handler for
 * L2's IDT that counts into g_nmi_guest_count and returns without IRET as well. */
#define ICR_NMI 0x4400 /* ICR low: delivery mode NMI, level assert (SDM Vol. 3A 11.6.1) */
#define NMI_NO_IRET_MARK 0x102 /* in trap_frame.vector; isr.S tests it */
void nmi_keep_blocked(struct trap_frame *f);
void nmi_iret(void);
extern const uint8_t nmi_iret_done[], nmi_guest_entry[];
extern volatile uint32_t g_nmi_guest_count;
/* For scenarios that study NMI blocking in L1: the hook nmi_count_and_keep_blocked counts each
 * NMI L1 takes into g_nmi_taken and keeps NMIs blocked; nmi_count_moves() waits a bounded while
 * (NMI_WAIT_US, and at least NMI_MIN_SPINS polls) for a count to move; nmi_iret_until_quiet()
 * IRETs until no counted NMI follows (at most 4 times) and says whether L1 ended quiet. */
#define NMI_WAIT_US 2000
#define NMI_MIN_SPINS 2000
extern volatile uint32_t g_nmi_taken;
void nmi_count_and_keep_blocked(struct trap_frame *f);
bool nmi_count_moves(volatile uint32_t *count, uint32_t before);
bool nmi_iret_until_quiet(void);
/* After a scenario (also one that aborted): a hook still installed is removed, and L1 IRETs so
 * that no NMI blocking outlives the scenario; a pending NMI is then counted as unexpected. */
void nmi_after_scenario(void);
/* NMIs that no scenario hook takes go here instead of being counted as unexpected (noise=nmi). */
void nmi_set_fallback_hook(nmi_hook_fn hook);

/* noise=nmi,ipi (arch/noise.c): an AP fires NMIs and VECTOR_NOISE IPIs at the BSP at
 * PRNG-chosen intervals while each scenario runs. noise_arm() once (false with the reason when
 * there is no AP to send from), noise_start() before each scenario (stream: which round and
 * scenario, so a seed replays the same schedule), smp_cancel_all_work() stops it. */
struct noise_counts {
    uint32_t sent_nmi, sent_ipi; /* by the noise AP */
    uint32_t nmi_in_l1, nmi_exits, ipi_taken; /* on the BSP: NMIs taken in L1, NMI exits from L2 absorbed */
};
bool noise_arm(uint32_t kinds, uint64_t seed, char *why, size_t size);
bool noise_start(uint64_t stream);
int noise_cpu(void); /* the AP that sends, -1 without noise */
bool noise_absorbs_nmi_exits(void); /* vcpu_run: an NMI exit is noise, take it and resume L2 */
void noise_nmi_exit_absorbed(void);
void noise_irq(void); /* irq_other: a VECTOR_NOISE IPI */
void noise_counts(struct noise_counts *c);

/* Fixed-vector interrupts that are not LHV's own (arch/irq_hook.c): a scenario that raises them
 * installs a hook that sees each one before its EOI; without a hook they only get the EOI. */
typedef void (*irq_hook_fn)(struct trap_frame *f);
void irq_set_hook(irq_hook_fn hook); /* NULL: no hook */
void irq_other(struct trap_frame *f);

/* MADT look-ups for the I/O APIC (arch/acpi.c): an ISA IRQ's GSI and MADT polarity/trigger flags
 * (the IRQ itself and 0 without an override), and the I/O APIC serving a GSI. */
void acpi_isa_irq_route(uint8_t irq, uint32_t *gsi, uint16_t *flags);
bool acpi_ioapic_for_gsi(uint32_t gsi, uint32_t *mmio, uint32_t *gsi_base);
/* One ISA IRQ routed through the I/O APIC (arch/ioapic.c): fixed delivery of vector to apic_id
 * (physical), the polarity and trigger the MADT gives; false with the reason when no I/O APIC
 * serves it. ioapic_restore() writes back the entry found there (the firmware leaves it masked). */
struct ioapic_route {
    volatile uint32_t *mmio;
    uint32_t gsi, pin;
    uint64_t saved;
};
bool ioapic_route_isa_irq(uint8_t irq, uint8_t vector, uint32_t apic_id, struct ioapic_route *r, char *why,
                          size_t size);
void ioapic_restore(const struct ioapic_route *r);

/* Every vector enters trap_dispatch (arch/trap.c): NMIs go to nmi_handle, the timer and the
 * exceptions to the handlers the floor above registers (main.c), the rest get their EOI. */
typedef void (*trap_handler_fn)(struct trap_frame *f);
void trap_set_handlers(trap_handler_fn timer, trap_handler_fn exception);
void trap_dispatch(struct trap_frame *f);

/* A pointer through which L1 reaches physical memory that the boot-time identity map (the low
 * 4 GiB) does not cover, such as a framebuffer above 4 GiB; NULL if it cannot be mapped. */
void *map_physical_range(uint64_t phys, uint64_t size);

/* Page tables of L1: identity map of the low 4 GiB, 2 MiB pages; built in boot code. */
extern uint64_t boot_page_root[]; /* CR3 target: PML4 (amd64) or PDPT (i386) */

#endif
