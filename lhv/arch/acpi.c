/* Just enough ACPI to find the CPUs (MADT) and to tell whether we run on a Bochs/QEMU machine. */
#include "arch/arch.h"
#include "arch/madt.h"

struct rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt;
    uint32_t length;
    uint64_t xsdt;
    uint8_t ext_checksum;
    uint8_t reserved[3];
} __attribute__((packed));

struct sdt_header {
    char signature[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

static struct rsdp g_rsdp;
static bool g_have_rsdp;

static bool checksum_ok(const void *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + ((const uint8_t *)p)[i]);
    return sum == 0;
}

void acpi_set_rsdp(const void *rsdp_copy, size_t len)
{
    memset(&g_rsdp, 0, sizeof(g_rsdp));
    memcpy(&g_rsdp, rsdp_copy, len < sizeof(g_rsdp) ? len : sizeof(g_rsdp));
    g_have_rsdp = memcmp(g_rsdp.signature, "RSD PTR ", 8) == 0;
}

/* Under BIOS without multiboot 2 (QEMU -kernel): the RSDP is in the EBDA or 0xe0000-0xfffff. */
static void acpi_scan_bios(void)
{
    uintptr_t ebda = (uintptr_t)(*(volatile uint16_t *)phys_ptr(0x40e)) << 4;
    uintptr_t ranges[2][2] = { { ebda, ebda + 1024 }, { 0xe0000, 0x100000 } };
    for (int r = 0; r < 2; r++) {
        if (!ranges[r][0])
            continue;
        for (uintptr_t p = ranges[r][0]; p < ranges[r][1]; p += 16) {
            if (memcmp(phys_ptr(p), "RSD PTR ", 8) == 0 && checksum_ok(phys_ptr(p), 20)) {
                acpi_set_rsdp(phys_ptr(p), sizeof(struct rsdp));
                return;
            }
        }
    }
}

static bool acpi_ready(void)
{
    if (!g_have_rsdp)
        acpi_scan_bios();
    return g_have_rsdp;
}

bool acpi_oem_is(const char *oem6) { return acpi_ready() && memcmp(g_rsdp.oem_id, oem6, 6) == 0; }

static const struct sdt_header *acpi_find(const char *sig)
{
    if (!acpi_ready())
        return NULL;
    bool use_xsdt = g_rsdp.revision >= 2 && g_rsdp.xsdt && g_rsdp.xsdt < 0x100000000ull;
    const struct sdt_header *root =
        (const struct sdt_header *)(uintptr_t)(use_xsdt ? g_rsdp.xsdt : g_rsdp.rsdt);
    if (!root)
        return NULL;
    size_t entry_size = use_xsdt ? 8 : 4;
    size_t count = (root->length - sizeof(*root)) / entry_size;
    const uint8_t *entries = (const uint8_t *)(root + 1);
    for (size_t i = 0; i < count; i++) {
        uint64_t addr = 0;
        memcpy(&addr, entries + i * entry_size, entry_size);
        if (!addr || addr >= 0x100000000ull)
            continue;
        const struct sdt_header *h = (const struct sdt_header *)(uintptr_t)addr;
        if (memcmp(h->signature, sig, 4) == 0)
            return h;
    }
    return NULL;
}

/* APIC IDs of enabled (or online-capable) processors, in MADT order (the BSP is usually first);
 * x2APIC entries included (arch/madt.c), and counted in *x2apic_entries. */
int acpi_collect_apic_ids(uint32_t *ids, int max, int *x2apic_entries)
{
    const struct sdt_header *madt = acpi_find("APIC");
    *x2apic_entries = 0;
    if (!madt)
        return 0;
    struct madt_cpu_count count;
    int n = madt_apic_ids((const uint8_t *)madt, madt->length, ids, max, &count);
    if (count.listed > max)
        arch_note("LHV NOTE: the MADT lists %d CPUs, LHV starts the first %d", count.listed, max);
    *x2apic_entries = count.x2apic_entries;
    return n;
}

/* The first MADT entry of that type (and at least that length) that match() accepts for key. */
static const uint8_t *madt_find_entry(uint8_t type, uint8_t min_len, bool (*match)(const uint8_t *e, uint32_t key),
                                      uint32_t key)
{
    const struct sdt_header *madt = acpi_find("APIC");
    if (!madt)
        return NULL;
    for (const uint8_t *p = NULL; (p = madt_next_entry((const uint8_t *)madt, madt->length, p));)
        if (p[0] == type && p[1] >= min_len && match(p, key))
            return p;
    return NULL;
}

static bool override_matches(const uint8_t *e, uint32_t irq) { return e[2] == 0 && e[3] == irq; }

static bool ioapic_covers(const uint8_t *e, uint32_t gsi)
{
    uint32_t base;
    memcpy(&base, e + 8, 4);
    return gsi >= base && gsi < base + 24; /* checked against the IOAPIC's own count by the caller */
}

/* MADT type 2 (interrupt source override, ACPI 5.2.12.5): an ISA IRQ that is not identity
 * mapped to a GSI, or has another polarity/trigger; flags 0 = ISA default (edge, active high). */
void acpi_isa_irq_route(uint8_t irq, uint32_t *gsi, uint16_t *flags)
{
    const uint8_t *e = madt_find_entry(2, 10, override_matches, irq);
    *gsi = irq;
    *flags = 0;
    if (e) {
        memcpy(gsi, e + 4, 4);
        memcpy(flags, e + 8, 2);
    }
}

/* MADT type 1 (I/O APIC, ACPI 5.2.12.3): the one whose GSI range may hold gsi. */
bool acpi_ioapic_for_gsi(uint32_t gsi, uint32_t *mmio, uint32_t *gsi_base)
{
    const uint8_t *e = madt_find_entry(1, 12, ioapic_covers, gsi);
    if (!e)
        return false;
    memcpy(mmio, e + 4, 4);
    memcpy(gsi_base, e + 8, 4);
    return true;
}

/* The ACPI power-management timer (FADT PM_TMR_BLK, ACPI 6.5 sections 4.8.3.3 and 5.2.9): an
 * I/O port counting at 3.579545 MHz, 24 bits wide unless FADT flag TMR_VAL_EXT (bit 8) says 32.
 * It is there when the PIT is not (laptops, QEMU -machine pit=off). Returns 0 when absent. */
uint16_t acpi_pm_timer_port(bool *bits32)
{
    const uint8_t *fadt = (const uint8_t *)acpi_find("FACP");
    if (!fadt)
        return 0;
    uint32_t length, port = 0, flags = 0;
    memcpy(&length, fadt + 4, 4);
    if (length >= 116)
        memcpy(&flags, fadt + 112, 4);
    if (length >= 80)
        memcpy(&port, fadt + 76, 4);
    if (!port && length >= 220 && fadt[208] == 1) { /* X_PM_TMR_BLK in system I/O space */
        uint64_t xport;
        memcpy(&xport, fadt + 212, 8);
        port = xport <= 0xffff ? (uint32_t)xport : 0;
    }
    *bits32 = (flags >> 8) & 1;
    return port <= 0xffff ? (uint16_t)port : 0;
}
