/* L2's own IDT, alone in its page (so a scenario can take that page away in EPT), with a gate
 * per vector to the stubs of guest/idt.S, in the format of the native guest mode. */
#include "arch/arch.h"
#include "guest/guest.h"

extern const uintptr_t guest_stub_table[256];
static uint8_t g_guest_idt[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

#ifdef __x86_64__
#define GATE_SIZE 16
#else
#define GATE_SIZE 8
#endif

void guest_idt_set_gate(int vector, uintptr_t handler)
{
    uint8_t *gate = g_guest_idt + vector * GATE_SIZE;
    uint16_t low = (uint16_t)handler, selector = SEL_L1_CODE, high = (uint16_t)(handler >> 16);
    memcpy(gate, &low, 2);
    memcpy(gate + 2, &selector, 2);
    gate[5] = 0x8e; /* present, DPL 0, interrupt gate */
    memcpy(gate + 6, &high, 2);
#ifdef __x86_64__
    uint32_t top = (uint32_t)(handler >> 32);
    memcpy(gate + 8, &top, 4);
#endif
}

uintptr_t guest_idt_build(uint16_t *limit)
{
    memset(g_guest_idt, 0, sizeof(g_guest_idt));
    for (int v = 0; v < 256; v++)
        guest_idt_set_gate(v, guest_stub_table[v]);
    *limit = 256 * GATE_SIZE - 1;
    return (uintptr_t)g_guest_idt;
}

uint32_t guest_idt_gate_size(void) { return GATE_SIZE; }
