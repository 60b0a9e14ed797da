/*
 * ps2_mouse: LHV_OPT 0x1000 USE_PS2_MOUSE, the original LHV's "PS/2 mouse interrupts": L1
 * initialises the PS/2 mouse through the i8042 controller, routes IRQ 12 to itself and counts the
 * mouse's packets as they arrive by interrupt. Not a VMX scenario (no L2): it runs wherever there
 * is an i8042 and an I/O APIC, QEMU TCG included, and gives a place where a hypervisor's device
 * interrupts reach L1 while nothing else happens.
 *
 * Facts (the original LHV, lxylxy123456/uberxmhf branch lhv, lhv-mouse.c, and the i8042 as PCs
 * have it; not the Intel SDM, which does not describe the i8042): port 0x64 reads the status
 * (bit 0 output buffer full, bit 1 input buffer full, bit 5 the byte is from the aux port) and
 * takes controller commands (0x20/0x60 read/write the configuration byte, bit 0 IRQ 1, bit 1
 * IRQ 12, bits 4/5 port clocks off; 0xA7/0xA8 aux port off/on, 0xAD keyboard port off, 0xD4 the
 * next data byte goes to the mouse); port 0x60 is the data. The mouse answers every command byte
 * with 0xFA; 0xF6 sets defaults, 0xF4/0xF5 enable/disable data reporting; with reporting on each
 * movement or button change is a 3-byte packet whose byte 0 has bit 3 set. With configuration
 * bit 1 the controller raises IRQ 12 for every byte it takes from the aux port, the 0xFA
 * answers included (the original dropped that first interrupt). The original routed IRQ 12
 * through the 8259s (vector 0x2c); LHV keeps the 8259s masked and uses the I/O APIC
 * (lhv/arch/ioapic.c: GSI and polarity/trigger from the MADT), with the same vector.
 * Steps:
 *   1. output buffer flushed, configuration byte read (to restore it), keyboard and aux ports
 *      off, written back with both IRQ bits off, aux port on;
 *   2. 0xD4 0xF6 (set defaults), answer polled: no 0xFA within 100 ms means no controller or
 *      no mouse: SKIP;
 *   3. IRQ 12 routed to this CPU at vector 0x2c, configuration bit 1 set;
 *   4. 0xD4 0xF4 (enable data reporting): its 0xFA must arrive by interrupt at 0x2c within
 *      100 ms;
 *   5. "INFO ps2_mouse: waiting for mouse packets" and up to 3 s for 3 well-formed packets
 *      (the harness moves the mouse through the QEMU monitor when it sees that line; with
 *      fewer the whole 3 s);
 *   6. IRQ 12's redirection entry restored, 0xF5 (disable reporting), the configuration byte and
 *      the ports as the firmware left them.
 * GOOD: the 0xFA of step 4 came by interrupt and at least one packet with bit 3 of byte 0 set
 * came by interrupt (INFO gives the count). BAD: the 0xFA of step 4 sat in the output buffer but
 * no interrupt came. SKIP: no controller or mouse (no 0xFA), no I/O APIC for IRQ 12, or no
 * movement within 3 s (nothing was moved: the routing itself was proven by step 4).
 * Negative control (inject=ps2_mouse): L1 forgets configuration bit 1 in step 3, so neither the
 * 0xFA nor any packet raises IRQ 12: BAD at step 4, with or without movement.
 * Needs: nothing from the CPU (requirement words: none); an i8042 with a mouse on its aux port.
 */
#include "arch/arch.h"
#include "options.h"
#include "scenario.h"

LHV_SCENARIO(ps2_mouse, LHV_OPT_USE_PS2_MOUSE, "", 8000, SUBARCH_ALL, ps2_mouse);

#define I8042_DATA 0x60
#define I8042_STATUS 0x64 /* read: status; write: controller command */
#define STATUS_OUT_FULL 0x01
#define STATUS_IN_FULL 0x02
#define STATUS_AUX 0x20
#define CONFIG_IRQ1 0x01
#define CONFIG_IRQ12 0x02
#define CONFIG_KEYBOARD_CLOCK_OFF 0x10
#define CONFIG_AUX_CLOCK_OFF 0x20
#define CMD_READ_CONFIG 0x20
#define CMD_WRITE_CONFIG 0x60
#define CMD_AUX_OFF 0xa7
#define CMD_AUX_ON 0xa8
#define CMD_KEYBOARD_OFF 0xad
#define CMD_TO_AUX 0xd4
#define MOUSE_ENABLE_REPORTING 0xf4
#define MOUSE_DISABLE_REPORTING 0xf5
#define MOUSE_SET_DEFAULTS 0xf6
#define MOUSE_ACK 0xfa
#define PACKET_SYNC 0x08 /* byte 0 bit 3: always set */
#define ISA_IRQ_MOUSE 12
#define VECTOR_PS2_MOUSE 0x2c /* the original's: 8259 slave base 0x28 + 4 */
#define ANSWER_MS 100
#define WAIT_PACKETS_MS 3000
#define PACKETS_ENOUGH 3 /* the wait ends early with this many */

/* What the IRQ 12 handler saw, in arrival order: the first byte is the 0xFA of step 4. */
static volatile uint32_t g_irq_count, g_bytes, g_packets, g_out_of_sync;
static volatile uint8_t g_first_byte, g_packet_at, g_first_packet[3];
static volatile uint8_t g_packet[3];

static bool ms_passed(uint64_t start_tsc, uint64_t ms) { return tsc_to_ms(rdtsc() - start_tsc) >= ms; }

/* Bounded waits on the status register; false when the controller never got there. */
static bool wait_status(uint8_t mask, uint8_t want, uint64_t ms)
{
    uint64_t start = rdtsc();
    while ((inb(I8042_STATUS) & mask) != want)
        if (ms_passed(start, ms))
            return false;
        else
            cpu_relax();
    return true;
}

static bool i8042_command(uint8_t cmd)
{
    if (!wait_status(STATUS_IN_FULL, 0, ANSWER_MS))
        return false;
    outb(I8042_STATUS, cmd);
    return true;
}

static bool i8042_write_data(uint8_t value)
{
    if (!wait_status(STATUS_IN_FULL, 0, ANSWER_MS))
        return false;
    outb(I8042_DATA, value);
    return true;
}

static bool i8042_read_polled(uint8_t *value)
{
    if (!wait_status(STATUS_OUT_FULL, STATUS_OUT_FULL, ANSWER_MS))
        return false;
    *value = inb(I8042_DATA);
    return true;
}

static void i8042_flush(void)
{
    for (int i = 0; i < 64 && (inb(I8042_STATUS) & STATUS_OUT_FULL); i++)
        (void)inb(I8042_DATA);
}

static bool i8042_write_config(uint8_t config)
{
    return i8042_command(CMD_WRITE_CONFIG) && i8042_write_data(config);
}

/* 0xD4 then the byte: the controller passes it to the mouse. */
static bool mouse_send(uint8_t cmd) { return i8042_command(CMD_TO_AUX) && i8042_write_data(cmd); }

/* A mouse command whose 0xFA is read by polling (no IRQ 12 yet); skips other bytes (packets). */
static bool mouse_command_polled(uint8_t cmd, uint8_t *answer)
{
    if (!mouse_send(cmd))
        return false;
    for (int i = 0; i < 16; i++)
        if (!i8042_read_polled(answer) || *answer == MOUSE_ACK)
            return *answer == MOUSE_ACK;
    return false;
}

/* IRQ 12: one byte from the aux port per interrupt; packets assembled on the sync bit. */
static void mouse_irq(struct trap_frame *f)
{
    if (f->vector != VECTOR_PS2_MOUSE)
        return;
    g_irq_count++;
    if (!(inb(I8042_STATUS) & STATUS_OUT_FULL))
        return;
    uint8_t byte = inb(I8042_DATA);
    if (g_bytes++ == 0) {
        g_first_byte = byte;
        return;
    }
    if (g_packet_at == 0 && !(byte & PACKET_SYNC)) {
        g_out_of_sync++;
        return;
    }
    g_packet[g_packet_at++] = byte;
    if (g_packet_at < 3)
        return;
    g_packet_at = 0;
    if (g_packets++ == 0)
        for (int i = 0; i < 3; i++)
            g_first_packet[i] = g_packet[i];
}

static void counters_reset(void)
{
    g_irq_count = g_bytes = g_packets = g_out_of_sync = 0;
    g_packet_at = 0;
}

/* Step 1 and 2: the ports quiet, IRQs off in the controller, the mouse answering. */
static bool controller_setup(struct scenario *s, uint8_t *config, bool *have_config)
{
    uint8_t answer = 0;
    i8042_flush();
    /* Read before the ports go off: 0xAD/0xA7 set bits 4/5, and the firmware's are restored. */
    if (!i8042_command(CMD_READ_CONFIG) || !i8042_read_polled(config))
        return scenario_skip(s, "no i8042: no answer to command 0x20 (status 0x%x)", inb(I8042_STATUS));
    *have_config = true;
    if (!i8042_command(CMD_KEYBOARD_OFF) || !i8042_command(CMD_AUX_OFF))
        return scenario_skip(s, "no i8042: the input buffer never emptied (status 0x%x)", inb(I8042_STATUS));
    i8042_flush();
    if (!i8042_write_config((uint8_t)(*config & ~(CONFIG_IRQ1 | CONFIG_IRQ12))) || !i8042_command(CMD_AUX_ON))
        return scenario_skip(s, "no i8042: the input buffer never emptied (status 0x%x)", inb(I8042_STATUS));
    if (!mouse_command_polled(MOUSE_SET_DEFAULTS, &answer))
        return scenario_skip(s, "no PS/2 mouse: the i8042 did not answer the aux-port command 0xD4/0xF6 with 0xFA "
                                "within %d ms (last byte 0x%x, status 0x%x)", ANSWER_MS, answer, inb(I8042_STATUS));
    return true;
}

/* Step 3 and 4: IRQ 12 on, reporting on; its 0xFA must come by interrupt. */
static bool interrupts_on(struct scenario *s, uint8_t config)
{
    uint8_t irq_bits = s->inject ? 0 : CONFIG_IRQ12; /* negative control: IRQ 12 forgotten */
    /* The keyboard stays off: a key's byte in the output buffer would hold up the mouse's. */
    uint8_t running = (uint8_t)((config & ~(CONFIG_IRQ1 | CONFIG_AUX_CLOCK_OFF)) | CONFIG_KEYBOARD_CLOCK_OFF | irq_bits);
    counters_reset();
    if (!i8042_write_config(running) || !mouse_send(MOUSE_ENABLE_REPORTING))
        return scenario_skip(s, "no i8042: the input buffer never emptied (status 0x%x)", inb(I8042_STATUS));
    uint64_t start = rdtsc();
    while (!g_bytes && !ms_passed(start, ANSWER_MS))
        cpu_relax();
    if (g_bytes)
        return g_first_byte == MOUSE_ACK ||
               scenario_bad(s, "IRQ 12 brought 0x%x first, expected the mouse's 0xFA to 0xF4", g_first_byte);
    uint8_t status = inb(I8042_STATUS), byte = 0;
    if (!(status & STATUS_OUT_FULL))
        return scenario_skip(s, "no PS/2 mouse: the i8042 did not answer the aux-port command 0xD4/0xF4 within %d ms "
                                "(status 0x%x)", ANSWER_MS, status);
    byte = inb(I8042_DATA);
    return scenario_bad(s, "the mouse answered 0xF4 with 0x%x (status 0x%x) but no interrupt came at vector 0x%x "
                           "within %d ms (configuration byte 0x%x: IRQ 12 %s)", byte, status, VECTOR_PS2_MOUSE,
                        ANSWER_MS, running, (running & CONFIG_IRQ12) ? "on" : "off");
}

/* Step 6: reporting off and the controller as the firmware left it (read back: ERROR if not). */
static void controller_restore(struct scenario *s, uint8_t config)
{
    uint8_t answer, now = 0;
    (void)mouse_command_polled(MOUSE_DISABLE_REPORTING, &answer);
    (void)i8042_write_config(config);
    i8042_flush();
    if (!i8042_command(CMD_READ_CONFIG) || !i8042_read_polled(&now) || now != config)
        scenario_error(s, "the i8042 configuration byte is 0x%x after the scenario, the firmware left 0x%x", now,
                       config);
}

static void wait_for_packets(void)
{
    uint64_t start = rdtsc();
    while (g_packets < PACKETS_ENOUGH && !ms_passed(start, WAIT_PACKETS_MS))
        cpu_relax();
}

static void ps2_mouse(struct scenario *s)
{
    uint8_t config = 0;
    bool have_config = false; /* only a configuration byte read from the controller is written back */
    char why[120];
    struct ioapic_route route;
    if (!controller_setup(s, &config, &have_config)) {
        if (have_config)
            (void)i8042_write_config(config);
        return;
    }
    if (lapic_id() > 0xff || !ioapic_route_isa_irq(ISA_IRQ_MOUSE, VECTOR_PS2_MOUSE, lapic_id(), &route, why,
                                                   sizeof(why))) {
        controller_restore(s, config);
        scenario_skip(s, "%s", lapic_id() > 0xff ? "the BSP's APIC ID is above 255 (I/O APIC physical mode)" : why);
        return;
    }
    irq_set_hook(mouse_irq);
    bool routed = interrupts_on(s, config);
    if (routed) {
        scenario_info(s, "waiting for mouse packets (IRQ 12 = GSI %u, vector 0x%x, up to %d ms)", route.gsi,
                      VECTOR_PS2_MOUSE, WAIT_PACKETS_MS);
        wait_for_packets();
    }
    ioapic_restore(&route);
    irq_set_hook(NULL);
    controller_restore(s, config);
    if (!routed)
        return;
    scenario_info(s, "packets=%u bytes=%u interrupts=%u out_of_sync=%u first packet %02x %02x %02x", g_packets,
                  g_bytes, g_irq_count, g_out_of_sync, g_first_packet[0], g_first_packet[1], g_first_packet[2]);
    if (g_packets)
        scenario_good(s);
    else
        scenario_skip(s, "no mouse movement within %d ms (the 0xFA to 0xF4 came by IRQ 12: the routing works)",
                      WAIT_PACKETS_MS);
}
