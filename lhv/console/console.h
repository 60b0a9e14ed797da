/* One printf, several sinks: COM1 and the screen (VGA text or a linear framebuffer). */
#ifndef LHV_CONSOLE_H
#define LHV_CONSOLE_H

#include "lib/lib.h"

void lhv_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_release_if_owner(int cpu);

void serial_init(void);
void serial_write(const char *s, size_t n);
void serial_drain(void);

/* Screen: a text grid, drawn into VGA text memory or a framebuffer with the built-in font. */
struct framebuffer_info {
    uint64_t addr; /* physical */
    void *mapped;  /* where L1 reaches it */
    uint32_t pitch, width, height;
    uint8_t bpp, red_pos, green_pos, blue_pos;
};
void screen_init_vga_text(uintptr_t addr, uint32_t cols, uint32_t rows);
void screen_init_framebuffer(const struct framebuffer_info *fb);
void screen_disable(void);
void screen_write(const char *s, size_t n);
void screen_set_banner(const char *line);
void screen_set_status(const char *scenario_id);
void screen_heartbeat(void); /* called from the BSP timer interrupt */

enum screen_color { COLOR_GOOD, COLOR_BAD, COLOR_WARN, COLOR_TEXT };
struct screen_final_report {
    const char *verdict;
    enum screen_color color;
    const char *const *header; /* the RESULT and SUMMARY lines */
    int nheader;
    const char *const *rows;   /* one per scenario (skips sharing a reason grouped), failures first */
    int nrows;
    uint32_t min_text_cols;    /* the QR code leaves at least this many columns for the rows */
    /* Writes the complete result, shortened to at most capacity bytes, for the QR code;
     * returns its length. NULL: no QR code. */
    int (*qr_text)(char *buf, int capacity);
    uint32_t page_ms;          /* rows that do not fit go first on table pages, each shown this
                                * long; 0: no table pages (the final page's "... and N more") */
};
void screen_final(const struct screen_final_report *report);

#endif
