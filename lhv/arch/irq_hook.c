/*
 * Fixed-vector interrupts other than the timer, NMIs and the spurious vector. LHV's own wake IPI
 * needs nothing but its EOI; a scenario that sends itself interrupts (to see in which order and
 * when L1 gets them) installs a hook for as long as it runs.
 */
#include "arch/arch.h"

static irq_hook_fn volatile g_irq_hook;

void irq_set_hook(irq_hook_fn hook) { g_irq_hook = hook; }

void irq_other(struct trap_frame *f)
{
    irq_hook_fn hook = g_irq_hook;
    if (f->vector == VECTOR_NOISE)
        noise_irq(); /* noise=ipi: counted, never a scenario's business */
    else if (hook)
        hook(f);
    lapic_eoi();
}
