/* The one printf. Lines from different CPUs never interleave: the whole line is formatted first
 * and written under the console lock. */
#include "arch/arch.h"
#include "console/console.h"

static struct spinlock g_console_lock = { 0, -1 };

void lhv_printf(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    size_t len = n < (int)sizeof(line) ? (size_t)n : sizeof(line) - 1;
    int cpu = this_cpu_index();
    spin_lock(&g_console_lock, cpu);
    serial_write(line, len);
    screen_write(line, len);
    spin_unlock(&g_console_lock);
}

void console_release_if_owner(int cpu) { spin_unlock_if_owner(&g_console_lock, cpu); }
