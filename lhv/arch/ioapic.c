/*
 * Just enough I/O APIC to route one ISA interrupt to the BSP (LHV_OPT 0x1000, the PS/2 mouse on
 * IRQ 12) and to put the redirection entry back afterwards. The 8259 PICs stay masked (lapic.c).
 * Facts: the MADT names each I/O APIC's MMIO base and first GSI, and the overrides of ISA IRQs;
 * the registers are IOREGSEL at +0 and IOWIN at +0x10; register 1 bits 16-23 hold the highest
 * redirection entry; entry n is registers 0x10+2n (low: vector, polarity bit 13, trigger bit 15,
 * mask bit 16) and 0x11+2n (bits 24-31: the destination APIC ID in physical mode).
 */
#include "arch/arch.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000u
#define IOREGSEL 0
#define IOWIN (0x10 / 4)
#define REG_VERSION 1
#define REG_REDIR_LOW(pin) (0x10 + 2 * (pin))
#define REDIR_ACTIVE_LOW (1u << 13)
#define REDIR_LEVEL (1u << 15)
#define REDIR_MASKED (1u << 16)

static uint32_t ioapic_read(volatile uint32_t *mmio, uint32_t reg)
{
    mmio[IOREGSEL] = reg;
    return mmio[IOWIN];
}

static void ioapic_write(volatile uint32_t *mmio, uint32_t reg, uint32_t value)
{
    mmio[IOREGSEL] = reg;
    mmio[IOWIN] = value;
}

static uint64_t redir_read(const struct ioapic_route *r)
{
    return ioapic_read(r->mmio, REG_REDIR_LOW(r->pin)) |
           (uint64_t)ioapic_read(r->mmio, REG_REDIR_LOW(r->pin) + 1) << 32;
}

/* Masked first, so that no half-written entry ever delivers. */
static void redir_write(const struct ioapic_route *r, uint64_t entry)
{
    ioapic_write(r->mmio, REG_REDIR_LOW(r->pin), REDIR_MASKED);
    ioapic_write(r->mmio, REG_REDIR_LOW(r->pin) + 1, (uint32_t)(entry >> 32));
    ioapic_write(r->mmio, REG_REDIR_LOW(r->pin), (uint32_t)entry);
}

/* MADT flags (ACPI 5.2.12.5): polarity bits 0-1 and trigger bits 2-3, 3 = active low / level,
 * 0 = as the bus says (ISA: active high, edge). */
static uint32_t redir_mode(uint16_t madt_flags)
{
    return ((madt_flags & 3) == 3 ? REDIR_ACTIVE_LOW : 0) | (((madt_flags >> 2) & 3) == 3 ? REDIR_LEVEL : 0);
}

bool ioapic_route_isa_irq(uint8_t irq, uint8_t vector, uint32_t apic_id, struct ioapic_route *r, char *why,
                          size_t size)
{
    uint32_t gsi, mmio = IOAPIC_DEFAULT_BASE, gsi_base = 0;
    uint16_t flags;
    acpi_isa_irq_route(irq, &gsi, &flags);
    if (!acpi_ioapic_for_gsi(gsi, &mmio, &gsi_base) && gsi >= 24) {
        snprintf(why, size, "no I/O APIC in the MADT for ISA IRQ %u (GSI %u)", irq, gsi);
        return false;
    }
    r->mmio = (volatile uint32_t *)phys_ptr(mmio);
    r->pin = gsi - gsi_base;
    uint32_t version = ioapic_read(r->mmio, REG_VERSION);
    if (version == 0xffffffffu) { /* nothing decodes the address: reads float high */
        snprintf(why, size, "no I/O APIC answers at 0x%x (version register reads 0xffffffff)", mmio);
        return false;
    }
    uint32_t max_entry = (version >> 16) & 0xff;
    if (r->pin > max_entry) {
        snprintf(why, size, "the I/O APIC at 0x%x has entries 0-%u, ISA IRQ %u is GSI %u (pin %u)", mmio, max_entry,
                 irq, gsi, r->pin);
        return false;
    }
    r->saved = redir_read(r);
    r->gsi = gsi;
    redir_write(r, (uint64_t)apic_id << 56 | redir_mode(flags) | vector);
    return true;
}

void ioapic_restore(const struct ioapic_route *r) { redir_write(r, r->saved); }
