/*
 * The one entry of every interrupt and exception (isr.S calls trap_dispatch). The floor above
 * (main.c) says what the timer tick and an exception do, by handlers it registers at start-up:
 * arch/ never calls up into the floors that use it.
 */
#include "arch/arch.h"

volatile uint64_t g_ticks; /* BSP timer ticks, counted by the registered timer handler */

static trap_handler_fn g_timer_handler, g_exception_handler;

void trap_set_handlers(trap_handler_fn timer, trap_handler_fn exception)
{
    g_timer_handler = timer;
    g_exception_handler = exception;
}

void trap_dispatch(struct trap_frame *f)
{
    if (f->vector == VECTOR_TIMER && g_timer_handler)
        g_timer_handler(f);
    else if (f->vector == VECTOR_TIMER)
        lapic_eoi();
    else if (f->vector == VECTOR_NMI)
        nmi_handle(f);
    else if (f->vector < 32 && g_exception_handler)
        g_exception_handler(f);
    else if (f->vector < 32)
        halt_forever(); /* an exception before start-up registered its handler: nothing to report with */
    else if (f->vector != VECTOR_SPURIOUS)
        irq_other(f); /* VECTOR_WAKE and anything else: a scenario's hook, if any, then the EOI */
}
