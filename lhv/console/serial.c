/* COM1, 115200 8N1, polled. */
#include "arch/cpu.h"
#include "console/console.h"

#define COM1 0x3f8
#define LSR_THR_EMPTY 0x20
#define LSR_TX_IDLE 0x40

void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* no UART interrupts */
    outb(COM1 + 3, 0x80); /* DLAB */
    outb(COM1 + 0, 0x01); /* divisor 1: 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0xc7); /* FIFO on, cleared */
    outb(COM1 + 4, 0x03); /* DTR, RTS */
}

/* Bounded waits: on a machine without a UART nothing ever becomes ready, and LHV must not hang. */
static void serial_wait(uint8_t bit)
{
    for (uint32_t i = 0; i < 1000000u && !(inb(COM1 + 5) & bit); i++)
        cpu_relax();
}

static void serial_putc(char c)
{
    serial_wait(LSR_THR_EMPTY);
    outb(COM1, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            serial_putc('\r');
        serial_putc(s[i]);
    }
}

/* Bochs models the transmitter: without this the last line is lost when the run ends. */
void serial_drain(void) { serial_wait(LSR_TX_IDLE); }
