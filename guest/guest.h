/*
 * The L2 side shared by scenarios: how a guest starts (guest_trampoline calls a C function with
 * one argument and reports its return by VMCALL), the VMCALL convention, the guest's stack and
 * its own PAE page tables.
 *
 * VMCALL convention: EAX = call number, EBX/ECX = arguments; L1 answers in EAX.
 * L2 exceptions are captured with the exception bitmap (all vectors exit to L1), so a fault in
 * L2 shows up in L1 as exit reason 0 with the vector, never as a silent reboot.
 */
#ifndef LHV_GUEST_H
#define LHV_GUEST_H

#include <stdint.h>

#define GUEST_CALL_DONE 0x10 /* EBX = the guest function's return value */
#define GUEST_CALL_EVENT 0x11 /* from guest/idt.S: EBX = vector, ECX = error code, EDX = frame RIP */
#define GUEST_CALL_USER 0x100 /* scenarios number their own calls from here */
#define GUEST_STACK_SIZE 16384

/* Brackets for a scenario's 32-bit L2 code in a top-level __asm__ (a PAE guest, or the 32-bit
 * part of a mode switch): the same text assembles for both subarchs. */
#define GUEST32_CODE_BEGIN ".pushsection .text\n.code32\n"
#ifdef __x86_64__
#define GUEST32_CODE_END ".code64\n.popsection\n"
#else
#define GUEST32_CODE_END ".popsection\n"
#endif

static inline uintptr_t guest_vmcall(uintptr_t call, uintptr_t arg1, uintptr_t arg2)
{
    __asm__ volatile("vmcall" : "+a"(call) : "b"(arg1), "c"(arg2) : "memory");
    return call;
}

typedef uintptr_t (*guest_main_fn)(uintptr_t arg);
extern const uint8_t guest_trampoline[]; /* RIP for C guests: RSI/ESI = function, RDI/EDI = arg */
uintptr_t guest_stack_top(void);

/* Identity-mapped PAE tables (4 x 1 GiB of 2 MiB pages) owned by the guest; the PDPT sits alone
 * in its page so that a scenario can take that page away in EPT. Returns the CR3 value. */
uint64_t guest_pae_build(void);
const uint64_t *guest_pae_pdpt(void);
/* The same tables but for one page, which maps to phys_page, under a PDPT of their own; returns
 * that CR3 (the first set stays as guest_pae_build() made it). */
uint64_t guest_pae_build_remapped(uintptr_t linear_page, uintptr_t phys_page);
/* Change where linear_page points in that second set (no TLB invalidation: the caller's job). */
void guest_pae_remap(uintptr_t linear_page, uintptr_t phys_page);

/* Marker pages: the first word of page i is MARKER(i), 'AAAA', 'BBBB', 'CCCC', so a guest that
 * reads through a mapping L1 changes tells L1 which page the mapping reached (guest/markers.c).
 * marker_pages_init() (re)writes the markers; L1 calls it, L2 only reads. */
#define MARKER_PAGES 3
#define MARKER(i) (0x41414141u + 0x01010101u * (uint32_t)(i))
#define MARKER_A MARKER(0)
#define MARKER_B MARKER(1)
#define MARKER_C MARKER(2)
void marker_pages_init(void);
uintptr_t marker_page(int i);

/* L2's own IDT for the native guest mode (guest/idt.c): returns its base, sets *limit. Every
 * vector's handler reports with GUEST_CALL_EVENT and never returns. Scenarios that want an event
 * delivered through it clear that vector's bit in the exception bitmap. */
uintptr_t guest_idt_build(uint16_t *limit);
uint32_t guest_idt_gate_size(void);
/* Point one vector at a handler of the scenario's own (after guest_idt_build). */
void guest_idt_set_gate(int vector, uintptr_t handler);

#endif
