/*
 * The runner's guard of L1's own state (lhv/guard.c): what a scenario must leave as it found it
 * is read before the scenario and checked after it, on every CPU; what changed is put back and
 * described, so that the next scenario runs on the L1 the run started with.
 */
#ifndef LHV_GUARD_H
#define LHV_GUARD_H

#include "lib/lib.h"

/* What changed, as "CR3 0x1000 -> 0x5000, IDTR 0x... -> 0x..." (empty: nothing). */
struct guard_changes {
    char text[480];
    size_t len;
    bool cut; /* text is shortened */
};

/* Before the first scenario: stack canaries, and each AP's state as the reference for later. */
void guard_start(void);
/* On the BSP right before a scenario's body. */
void guard_before_scenario(void);
/* On the BSP as soon as the body has ended (returned: it returned rather than being aborted by
 * the watchdog or an exception, which leave interrupts off): control and descriptor registers,
 * EFER, RFLAGS.IF, the LAPIC timer, VMX operation. */
void guard_after_body(bool returned, struct guard_changes *c);
/* After the runner's own clean-up (APs' work cancelled, the scenario's VMCSs cleared): the
 * BSP's current VMCS, every AP's state, the stack canaries. */
void guard_after_cleanup(struct guard_changes *c);

#endif
