/*
 * L1 start-up on the BSP (boot information, CPUs, clocks, VMX), the banner, the traps, and the
 * end of a run: result on serial and screen, then leave the machine the way its emulator wants.
 */
#include "console/console.h"
#include "options.h"
#include "run.h"
#include "vmx/vmx.h"

#define LHV_VERSION "0.1.0"
#define MB1_BOOT_MAGIC 0x2badb002u
#define MB2_BOOT_MAGIC 0x36d76289u

static uint64_t g_tsc_start;
static char g_cmdline[2048];
static char g_banner[200];
static const char *g_boot_method = "bios";
static struct framebuffer_info g_fb;
static bool g_have_fb, g_vga_text = true;
static enum { EMU_NONE, EMU_QEMU, EMU_BOCHS } g_emulator;
static volatile int g_crashing;

static void take_cmdline(const char *s)
{
    if (s)
        strlcpy(g_cmdline, s, sizeof(g_cmdline));
}

/* Multiboot 1 (offset 88) and 2 (tag offset 8) describe a framebuffer the same way: address,
 * pitch, width, height, bpp, then the type and the colour field positions. */
static void take_rgb_framebuffer(const uint8_t *fields, const uint8_t *colors)
{
    memcpy(&g_fb.addr, fields, 8);
    memcpy(&g_fb.pitch, fields + 8, 4);
    memcpy(&g_fb.width, fields + 12, 4);
    memcpy(&g_fb.height, fields + 16, 4);
    g_fb.bpp = fields[20];
    g_fb.red_pos = colors[0];
    g_fb.green_pos = colors[2];
    g_fb.blue_pos = colors[4];
    g_have_fb = true;
    g_vga_text = false;
}

static void parse_mb1(const uint8_t *info)
{
    uint32_t flags = *(const uint32_t *)info;
    if (flags & (1u << 2))
        take_cmdline((const char *)(uintptr_t) * (const uint32_t *)(info + 16));
    if ((flags & (1u << 12)) && info[109] == 1)
        take_rgb_framebuffer(info + 88, info + 110);
}

/* Multiboot 2 tags: everything is copied out, because low memory is reused for the AP trampoline. */
static void parse_mb2(const uint8_t *info)
{
    uint32_t total = *(const uint32_t *)info;
    for (const uint8_t *tag = info + 8; tag < info + total;) {
        uint32_t type = *(const uint32_t *)tag, size = *(const uint32_t *)(tag + 4);
        if (type == 0)
            break;
        if (type == 1)
            take_cmdline((const char *)(tag + 8));
        else if (type == 11 || type == 12)
            g_boot_method = "uefi";
        else if (type == 14 || type == 15)
            acpi_set_rsdp(tag + 8, size - 8);
        else if (type == 8) {
            uint8_t fb_type = tag[29];
            if (fb_type == 1) {
                take_rgb_framebuffer(tag + 8, tag + 32);
            } else if (fb_type != 2) {
                g_vga_text = false;
            }
        }
        tag += (size + 7) & ~7u;
    }
}

static void screen_setup(bool draw)
{
    if (!draw)
        return;
    if (g_have_fb) {
        g_fb.mapped = map_physical_range(g_fb.addr, (uint64_t)g_fb.pitch * g_fb.height);
        screen_init_framebuffer(&g_fb);
        if (!g_fb.mapped)
            lhv_printf("LHV NOTE: framebuffer at 0x%llx cannot be mapped; serial only\n",
                       (unsigned long long)g_fb.addr);
    }
    else if (g_vga_text && !strcmp(g_boot_method, "bios"))
        screen_init_vga_text(0xb8000, 80, 25);
}

/* The emulator back doors are used only when the machine says it is that emulator: ACPI tables
 * made by Bochs' BIOS or QEMU carry OEM ID "BOCHS ", QEMU also answers on fw_cfg, and the
 * harness enables Bochs' port 0xe9 hack, which reads back 0xe9. */
static void detect_emulator(void)
{
    if (!acpi_oem_is("BOCHS "))
        return;
    outw(0x510, 0); /* fw_cfg signature */
    char sig[4];
    for (int i = 0; i < 4; i++)
        sig[i] = (char)inb(0x511);
    if (!memcmp(sig, "QEMU", 4))
        g_emulator = EMU_QEMU;
    else if (inb(0xe9) == 0xe9)
        g_emulator = EMU_BOCHS;
}

/* page_ms= when given; else 4 s per table page for a person, none under an emulator, whose
 * harness reads the screen right after the RESULT line and must see the final page. */
static uint32_t page_ms_for(const struct run_options *o)
{
    if (o && o->page_ms_given)
        return o->page_ms;
    return g_emulator == EMU_NONE ? 4000 : 0;
}

static void cpu_description(char *out, size_t size)
{
    struct cpuid_regs v = cpuid(0, 0);
    char vendor[13];
    memcpy(vendor, &v.ebx, 4);
    memcpy(vendor + 4, &v.edx, 4);
    memcpy(vendor + 8, &v.ecx, 4);
    vendor[12] = 0;
    char brand[49] = "";
    if (cpuid(0x80000000u, 0).eax >= 0x80000004u) {
        for (uint32_t i = 0; i < 3; i++) {
            struct cpuid_regs r = cpuid(0x80000002u + i, 0);
            memcpy(brand + 16 * i, &r, 16);
        }
        brand[48] = 0;
    }
    const char *b = brand;
    while (*b == ' ')
        b++;
    snprintf(out, size, "%s%s%s", vendor, *b ? " " : "", b);
}

static int count_vmx_on(void)
{
    int n = 0;
    for (int i = 0; i < g_cpu_count; i++)
        n += g_cpus[i].vmx_on;
    return n;
}

static void print_banner(uint64_t opt)
{
    char cpu[80], caps[400], cpus[320];
    cpu_description(cpu, sizeof(cpu));
    snprintf(g_banner, sizeof(g_banner), "LHV %s arch=%s boot=%s cpus=%d opt=0x%llx cpu=\"%s\"", LHV_VERSION,
             LHV_ARCH_NAME, g_boot_method, g_cpu_count, (unsigned long long)opt, cpu);
    lhv_printf("%s\n", g_banner);
    screen_set_banner(g_banner);
    vmx_format_caps(caps, sizeof(caps));
    lhv_printf("%s\n", caps);
    smp_describe_cpus(cpus, sizeof(cpus));
    lhv_printf("LHV SMP cpus=%d vmxon=%d apic=%s handoff=%s %s\n", g_cpu_count, count_vmx_on(),
               lapic_is_x2apic() ? "x2apic" : "xapic", lapic_handoff_mode(), cpus);
    lhv_printf("LHV TSC start=%llu hz=%llu clock=%s\n", (unsigned long long)g_tsc_start, (unsigned long long)g_tsc_hz,
               g_clock_source);
}

static void emulator_exit(enum verdict result)
{
    if (g_emulator == EMU_BOCHS) {
        /* Magic breakpoint: Bochs' debugger takes over (the harness dumps the screen, then quits). */
        __asm__ volatile("xchg %%bx, %%bx" ::: "memory");
        for (const char *p = "Shutdown"; *p; p++)
            outb(0x8900, (uint8_t)*p);
    } else if (g_emulator == EMU_QEMU) {
        /* Time for the harness to read the screen through the QEMU monitor, then isa-debug-exit. */
        delay_us(5000000);
        outb(0xf4, (uint8_t)(0x10 + (result == VERDICT_TIMEOUT ? VERDICT_BAD : result)));
    }
}

void run_end(enum verdict result)
{
    if (__atomic_exchange_n(&g_crashing, 1, __ATOMIC_SEQ_CST)) {
        if (this_cpu_index() != 0 || result != VERDICT_CRASH)
            halt_forever(); /* someone else is already ending the run */
    }
    irq_disable();
    console_release_if_owner(this_cpu_index());
    struct run_totals *t = run_totals();
    uint64_t now = rdtsc();
    lhv_printf("LHV TSC end=%llu elapsed_ms=%llu\n", (unsigned long long)now,
               (unsigned long long)tsc_to_ms(now - g_tsc_start));
    lhv_printf("LHV SUMMARY: %d good, %d bad, %d skipped, %d error\n", t->good, t->bad, t->skipped, t->error);
    lhv_printf("LHV RESULT: %s\n", verdict_name(result));
    char caps[400];
    vmx_format_caps(caps, sizeof(caps));
    report_final_screen(result, g_banner, caps);
    serial_drain();
    emulator_exit(result);
    halt_forever();
}

static const char *const g_exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "22", "23", "24", "25", "26", "27", "28", "29", "#SX", "31",
};

static void exception(struct trap_frame *f)
{
    if (runner_fixup_exception(f))
        return; /* a fault a scenario asked for (l1_expect_fault): recorded, L1 resumes */
    static volatile int depth[MAX_CPUS];
    int cpu = this_cpu_index();
    if (depth[cpu]++ > 0 || f->vector == 8) {
        console_release_if_owner(cpu);
        lhv_printf("LHV EXCEPTION cpu=%d nested or double fault vector=%u\n", cpu, (unsigned)f->vector);
        depth[cpu] = 1;
        run_end(VERDICT_CRASH);
    }
    char what[120];
    snprintf(what, sizeof(what), "%s error=0x%llx at rip 0x%llx cr2=0x%llx", g_exception_names[f->vector & 31],
             (unsigned long long)f->error, (unsigned long long)f->ip, (unsigned long long)read_cr2());
    console_release_if_owner(cpu);
    lhv_printf("LHV EXCEPTION cpu=%d vector=%u %s\n", cpu, (unsigned)f->vector, what);
#ifdef __x86_64__
    lhv_printf("LHV EXCEPTION rax=%llx rbx=%llx rcx=%llx rdx=%llx rsi=%llx rdi=%llx rbp=%llx rsp=%llx\n",
               (unsigned long long)f->rax, (unsigned long long)f->rbx, (unsigned long long)f->rcx,
               (unsigned long long)f->rdx, (unsigned long long)f->rsi, (unsigned long long)f->rdi,
               (unsigned long long)f->rbp, (unsigned long long)f->sp);
#else
    lhv_printf("LHV EXCEPTION eax=%x ebx=%x ecx=%x edx=%x esi=%x edi=%x ebp=%x\n", f->eax, f->ebx, f->ecx, f->edx,
               f->esi, f->edi, f->ebp);
#endif
    depth[cpu] = 0;
    runner_on_exception(what); /* returns only when no scenario was running on this CPU */
    run_end(VERDICT_CRASH);
}

static void timer_tick(struct trap_frame *f)
{
    lapic_eoi();
    struct percpu *cpu = this_cpu();
    cpu->heartbeat++;
    if (cpu->index != 0)
        return;
    if (++g_ticks % 10 == 0)
        screen_heartbeat();
    runner_watchdog(f->ip);
}

/* The work an AP does before it is online: VMX operation, like the BSP. */
static void ap_enter_vmx(struct percpu *cpu)
{
    char why[80];
    if (g_vmx.usable && !vmx_cpu_enable(cpu, why, sizeof(why)))
        lhv_printf("LHV NOTE: cpu%d: %s\n", cpu->index, why);
}

static void print_start_up_notes(void)
{
    char notes[1024];
    if (arch_take_notes(notes, sizeof(notes)))
        lhv_printf("%s", notes);
}

void lhv_main(uint32_t magic, uint32_t info);
void lhv_main(uint32_t magic, uint32_t info)
{
    g_tsc_start = rdtsc();
    trap_set_handlers(timer_tick, exception);
    runner_init(run_end);
    serial_init();
    if (magic == MB2_BOOT_MAGIC)
        parse_mb2((const uint8_t *)(uintptr_t)info);
    else if (magic == MB1_BOOT_MAGIC)
        parse_mb1((const uint8_t *)(uintptr_t)info);
    struct run_options options;
    char option_error[200] = "";
    bool options_ok = options_parse(g_cmdline, &options, option_error, sizeof(option_error));
    screen_setup(!options_ok || !(options.opt & LHV_OPT_NO_VGA_ART));
    detect_emulator(); /* early: even a crash during start-up must end the emulator's run */
    report_set_page_ms(page_ms_for(options_ok ? &options : NULL));

    gdt_init_cpu(0);
    idt_init();
    idt_load();
    if (options_ok && options.x2apic && !lapic_request_x2apic())
        lhv_printf("LHV NOTE: apic=x2apic: this CPU has no x2APIC (CPUID.1:ECX[21]=0); xAPIC used\n");
    lapic_init_cpu(true);
    timers_calibrate();
    vmx_read_caps();
    char why[80];
    if (g_vmx.usable && !vmx_cpu_enable(&g_cpus[0], why, sizeof(why)))
        lhv_printf("LHV NOTE: cpu0: %s\n", why);
    bool no_interrupt = options_ok && (options.opt & LHV_OPT_NO_INTERRUPT);
    if (no_interrupt)
        lapic_timer_one_shot_only(); /* before the APs start their heartbeat timers */
    smp_boot_aps(ap_enter_vmx);
    print_start_up_notes();
    if (!no_interrupt)
        lapic_start_bsp_timer(); /* with 0x200 the runner arms a one-shot per scenario */
    irq_enable();

    print_banner(options_ok ? options.opt : lhv_default_opt());
    if (magic != MB1_BOOT_MAGIC && magic != MB2_BOOT_MAGIC)
        lhv_printf("LHV NOTE: not started by a multiboot loader (magic 0x%x)\n", magic);
    if (!options_ok) {
        lhv_printf("LHV ERROR: %s (command line: \"%s\")\n", option_error, g_cmdline);
        run_end(VERDICT_ERROR);
    }
    run_scenarios(&options);
}
