/*
 * Notes from start-up (a CPU that did not start, a PIT that did not count): arch/ sits below the
 * console, so it keeps them here and main.c prints them once the console is there to say them.
 */
#include "arch/arch.h"

static char g_notes[1024];
static size_t g_notes_len;

void arch_note(const char *fmt, ...)
{
    size_t room = sizeof(g_notes) - g_notes_len - 1; /* one byte kept for the newline */
    if (room < 2)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_notes + g_notes_len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    g_notes_len += (size_t)n < room ? (size_t)n : room - 1; /* what was written, if cut short */
    g_notes[g_notes_len++] = '\n';
    g_notes[g_notes_len] = 0;
}

size_t arch_take_notes(char *out, size_t size)
{
    size_t n = strlcpy(out, g_notes, size);
    g_notes_len = 0;
    g_notes[0] = 0;
    return n;
}
