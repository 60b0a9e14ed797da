/*
 * The screen as a text grid. Row 0 holds the banner, row 1 the running scenario and a spinner
 * per CPU (so a hang and a slow test look different on a laptop without a serial port), the rest
 * scrolls the log. At the end the grid is redrawn with a large verdict and the failed scenarios.
 * Two back ends: VGA text memory (BIOS) and a linear framebuffer drawn with lhv_font8x16 (UEFI).
 */
#include "arch/arch.h"
#include "console/console.h"
#include "console/qr.h"

#define MAX_COLS 128
#define MAX_ROWS 64
#define LOG_TOP 2
#define ATTR_TEXT 0x07
#define ATTR_STATUS 0x1f

extern const uint8_t lhv_font8x16[256 * 16];

enum backend { SCREEN_NONE, SCREEN_VGA, SCREEN_FB };

static struct {
    enum backend backend;
    uint32_t cols, rows;
    uint32_t vga_stride; /* cells per VGA text line (cols may be narrowed for the final screen) */
    uint32_t scale; /* framebuffer: each font pixel is scale x scale pixels */
    uint32_t cursor_col, cursor_row;
    volatile uint16_t *vga;
    struct framebuffer_info fb;
    uint16_t cells[MAX_ROWS][MAX_COLS]; /* char | attr << 8: what is on screen */
    char status_id[40];
    struct spinlock lock;
} g_screen = { .lock = { 0, -1 } };

static const uint32_t g_palette[16] = {
    0x000000, 0x0000aa, 0x00aa00, 0x00aaaa, 0xaa0000, 0xaa00aa, 0xaa5500, 0xaaaaaa,
    0x555555, 0x5555ff, 0x55ff55, 0x55ffff, 0xff5555, 0xff55ff, 0xffff55, 0xffffff,
};

static uint32_t fb_color(uint32_t rgb)
{
    const struct framebuffer_info *fb = &g_screen.fb;
    return ((rgb >> 16 & 0xff) << fb->red_pos) | ((rgb >> 8 & 0xff) << fb->green_pos) |
           ((rgb & 0xff) << fb->blue_pos);
}

static void fb_fill(uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint32_t rgb)
{
    const struct framebuffer_info *fb = &g_screen.fb;
    uint32_t pixel = fb_color(rgb), bytes = fb->bpp / 8;
    for (uint32_t row = y; row < y + h && row < fb->height; row++) {
        uint8_t *line = (uint8_t *)fb->mapped + (uintptr_t)row * fb->pitch;
        for (uint32_t col = x; col < x + w && col < fb->width; col++)
            memcpy(line + col * bytes, &pixel, bytes);
    }
}

static void fb_draw_cell(uint32_t col, uint32_t row, uint16_t cell)
{
    const struct framebuffer_info *fb = &g_screen.fb;
    const uint8_t *glyph = &lhv_font8x16[(cell & 0xff) * 16];
    uint32_t fg = fb_color(g_palette[(cell >> 8) & 0xf]), bg = fb_color(g_palette[(cell >> 12) & 0xf]);
    uint32_t bytes = fb->bpp / 8, k = g_screen.scale;
    for (uint32_t y = 0; y < 16 * k; y++) {
        uint8_t *line = (uint8_t *)fb->mapped + (uintptr_t)(row * 16 * k + y) * fb->pitch + col * 8 * k * bytes;
        for (uint32_t x = 0; x < 8 * k; x++)
            memcpy(line + x * bytes, (glyph[y / k] & (0x80 >> (x / k))) ? &fg : &bg, bytes);
    }
}

static void put_cell(uint32_t col, uint32_t row, char c, uint8_t attr)
{
    if (col >= g_screen.cols || row >= g_screen.rows)
        return;
    uint16_t cell = (uint16_t)((uint8_t)c | attr << 8);
    g_screen.cells[row][col] = cell;
    if (g_screen.backend == SCREEN_VGA)
        g_screen.vga[row * g_screen.vga_stride + col] = cell;
    else if (g_screen.backend == SCREEN_FB)
        fb_draw_cell(col, row, cell);
}

static void put_text(uint32_t col, uint32_t row, const char *s, uint8_t attr, bool fill_line)
{
    for (; *s && col < g_screen.cols; s++)
        put_cell(col++, row, *s, attr);
    while (fill_line && col < g_screen.cols)
        put_cell(col++, row, ' ', attr);
}

static void clear_rows(uint32_t from, uint32_t to)
{
    for (uint32_t r = from; r < to; r++)
        put_text(0, r, "", ATTR_TEXT, true);
}

static void screen_reset(void)
{
    clear_rows(0, g_screen.rows);
    put_text(0, 1, "", ATTR_STATUS, true);
    g_screen.cursor_row = LOG_TOP;
    g_screen.cursor_col = 0;
}

void screen_init_vga_text(uintptr_t addr, uint32_t cols, uint32_t rows)
{
    g_screen.backend = SCREEN_VGA;
    g_screen.vga = (volatile uint16_t *)addr;
    g_screen.cols = cols < MAX_COLS ? cols : MAX_COLS;
    g_screen.rows = rows < MAX_ROWS ? rows : MAX_ROWS;
    g_screen.vga_stride = cols;
    outb(0x3d4, 0x0a); /* hide the hardware cursor */
    outb(0x3d5, 0x20);
    screen_reset();
}

void screen_init_framebuffer(const struct framebuffer_info *fb)
{
    if ((fb->bpp != 32 && fb->bpp != 24) || !fb->mapped)
        return; /* only direct-color framebuffers L1 can reach are drawn; serial still works */
    g_screen.backend = SCREEN_FB;
    g_screen.fb = *fb;
    /* Legible on laptop panels: 8x16 glyphs up to about 1000 lines, then doubled (1080p,
     * 2560x1600), tripled from 1620 lines. */
    g_screen.scale = fb->height >= 1000 ? fb->height / 540 : 1;
    uint32_t cell_w = 8 * g_screen.scale, cell_h = 16 * g_screen.scale;
    g_screen.cols = fb->width / cell_w < MAX_COLS ? fb->width / cell_w : MAX_COLS;
    g_screen.rows = fb->height / cell_h < MAX_ROWS ? fb->height / cell_h : MAX_ROWS;
    fb_fill(0, 0, fb->width, fb->height, 0);
    screen_reset();
}

void screen_disable(void) { g_screen.backend = SCREEN_NONE; }

static void scroll_log(void)
{
    for (uint32_t r = LOG_TOP; r + 1 < g_screen.rows; r++)
        for (uint32_t c = 0; c < g_screen.cols; c++) {
            uint16_t cell = g_screen.cells[r + 1][c];
            if (cell != g_screen.cells[r][c])
                put_cell(c, r, (char)(cell & 0xff), (uint8_t)(cell >> 8));
        }
    clear_rows(g_screen.rows - 1, g_screen.rows);
    g_screen.cursor_row = g_screen.rows - 1;
}

static bool contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, needle, k))
            return true;
    return false;
}

/* Verdict lines are coloured so that a glance at the screen finds the failures. */
static uint8_t line_attr(const char *line, size_t n)
{
    if (contains(line, n, ": GOOD"))
        return 0x0a;
    if (contains(line, n, ": BAD") || contains(line, n, ": TIMEOUT"))
        return 0x0c;
    if (contains(line, n, ": ERROR") || contains(line, n, "CRASH") || contains(line, n, "EXCEPTION"))
        return 0x0e;
    return ATTR_TEXT;
}

/* Wait a bounded while for the screen: another CPU, or the BSP's heartbeat, holds it only while
 * drawing a line; a lock left taken by a fault in the middle of drawing must not hang the run. */
static bool screen_lock_bounded(int owner)
{
    for (uint32_t spins = 0; spins < 10000000u; spins++) {
        if (spin_trylock(&g_screen.lock, owner))
            return true;
        cpu_relax();
    }
    return false;
}

void screen_write(const char *s, size_t n)
{
    if (g_screen.backend == SCREEN_NONE || !screen_lock_bounded(-2))
        return;
    uint8_t attr = line_attr(s, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' || g_screen.cursor_col >= g_screen.cols) {
            g_screen.cursor_col = 0;
            if (++g_screen.cursor_row >= g_screen.rows)
                scroll_log();
            if (s[i] == '\n')
                continue;
        }
        put_cell(g_screen.cursor_col++, g_screen.cursor_row, s[i], attr);
    }
    spin_unlock(&g_screen.lock);
}

void screen_set_banner(const char *line)
{
    if (g_screen.backend != SCREEN_NONE)
        put_text(0, 0, line, 0x0f, true);
}

void screen_set_status(const char *scenario_id) { strlcpy(g_screen.status_id, scenario_id, sizeof(g_screen.status_id)); }

/* Runs in the BSP's timer interrupt: if the log is being drawn, skip this beat. */
void screen_heartbeat(void)
{
    if (g_screen.backend == SCREEN_NONE || !spin_trylock(&g_screen.lock, -3))
        return;
    static const char spin[4] = { '|', '/', '-', '\\' };
    char line[MAX_COLS + 1];
    uint64_t tenths = g_ticks / (TIMER_HZ / 10);
    /* 80 columns hold the clock, the scenario and 8 CPUs: " t=   12.3s <scenario id> cpu0| cpu1/ ..." */
    int len = snprintf(line, sizeof(line), " t=%5llu.%llus %-20.20s", (unsigned long long)(tenths / 10),
                       (unsigned long long)(tenths % 10), g_screen.status_id);
    for (int i = 0; i < g_cpu_count && len < (int)sizeof(line) - 8; i++)
        len += snprintf(line + len, sizeof(line) - (size_t)len, " cpu%d%c", i,
                        spin[(g_cpus[i].heartbeat / (i == 0 ? 10 : 1)) % 4]);
    put_text(0, 1, line, ATTR_STATUS, true);
    spin_unlock(&g_screen.lock);
}

/* Large letters: each pixel of glyph rows 2-11 (where the VGA font draws capitals) becomes one
 * cell: a full block in VGA text, a filled cell on a framebuffer. Where the row is too narrow
 * (VGA text beside the QR code) two pixels share a cell, drawn with the half-block characters. */
#define BIG_FIRST_ROW 2
#define BIG_ROWS 10
static char vga_pixel_pair(bool left, bool right)
{
    return left && right ? (char)0xdb : left ? (char)0xdd : right ? (char)0xde : ' ';
}

static void draw_big_word(const char *word, uint32_t top, uint8_t attr)
{
    uint32_t len = (uint32_t)strlen(word);
    bool half = g_screen.backend == SCREEN_VGA && g_screen.cols < len * 9;
    uint32_t pitch = half ? 5 : 9, width = half ? 4 : 8;
    uint32_t left = g_screen.cols > len * pitch ? (g_screen.cols - len * pitch) / 2 : 0;
    uint32_t k = g_screen.scale;
    for (uint32_t i = 0; i < len; i++) {
        const uint8_t *glyph = &lhv_font8x16[(uint8_t)word[i] * 16];
        for (uint32_t gy = 0; gy < BIG_ROWS; gy++)
            for (uint32_t cx = 0; cx < width; cx++) {
                uint8_t bits = glyph[BIG_FIRST_ROW + gy];
                uint32_t col = left + i * pitch + cx, row = top + gy;
                if (half)
                    put_cell(col, row, vga_pixel_pair(bits & (0x80 >> (2 * cx)), bits & (0x40 >> (2 * cx))), attr);
                else if (g_screen.backend == SCREEN_VGA)
                    put_cell(col, row, (bits & (0x80 >> cx)) ? (char)0xdb : ' ', attr);
                else if (bits & (0x80 >> cx))
                    fb_fill(col * 8 * k, row * 16 * k, 8 * k, 16 * k, g_palette[attr & 0xf]);
            }
    }
}

/* ---- QR code with the complete result ---- */

/* VGA text: two modules per cell, one above the other (CP437 half blocks), black on white. */
static void vga_draw_qr(uint32_t left, int size, int quiet)
{
    int span = size + 2 * quiet;
    for (int cell_row = 0; cell_row * 2 < span; cell_row++)
        for (int x = 0; x < span; x++) {
            bool top = qr_module(x - quiet, cell_row * 2 - quiet);
            bool bottom = cell_row * 2 + 1 < span && qr_module(x - quiet, cell_row * 2 + 1 - quiet);
            /* Foreground black, background white: the glyph's set pixels are the dark modules. */
            char c = top && bottom ? (char)0xdb : top ? (char)0xdf : bottom ? (char)0xdc : ' ';
            put_cell(left + (uint32_t)x, (uint32_t)cell_row, c, 0xf0);
        }
}

static void fb_draw_qr(uint32_t left_px, uint32_t top_px, uint32_t module_px, int size, int quiet)
{
    int span = size + 2 * quiet;
    fb_fill(left_px, top_px, (uint32_t)span * module_px, (uint32_t)span * module_px, 0xffffff);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            if (qr_module(x, y))
                fb_fill(left_px + (uint32_t)(x + quiet) * module_px, top_px + (uint32_t)(y + quiet) * module_px,
                        module_px, module_px, 0x000000);
}

#define VGA_QR_QUIET 2 /* modules; the white border zbar and phones need around the symbol */
#define FB_QR_QUIET 4
#define FB_QR_MIN_MODULE_PX 2

/* The largest version that fits the space; 0 when none does. */
static int qr_version_for(int modules_available, int quiet)
{
    int v = (modules_available - 2 * quiet - 17) / 4;
    return v < 1 ? 0 : v > QR_MAX_VERSION ? QR_MAX_VERSION : v;
}

/* Framebuffer: the QR code's square at the right edge, at most half the width and the height,
 * leaving the rows their columns. */
static uint32_t fb_qr_side(const struct screen_final_report *r)
{
    uint32_t side = g_screen.fb.width / 2 < g_screen.fb.height ? g_screen.fb.width / 2 : g_screen.fb.height;
    uint32_t text_px = (r->min_text_cols + 1) * 8 * g_screen.scale;
    if (text_px >= g_screen.fb.width)
        return 0;
    return side < g_screen.fb.width - text_px ? side : g_screen.fb.width - text_px;
}

/* Draws the QR code at the right edge; returns the text columns left of it. */
static uint32_t draw_final_qr(const struct screen_final_report *r)
{
    static char text[3000];
    int version, len;
    if (g_screen.backend == SCREEN_VGA) {
        /* Two modules per row: 25 rows hold a version 6 symbol with its quiet zone. */
        /* Two modules per row, and at least 30 columns left for the text: 80x25 holds a version
         * 7 symbol with its quiet zone. */
        uint32_t text = r->min_text_cols > 30 ? r->min_text_cols : 30;
        int tall = (int)g_screen.rows * 2, wide = (int)g_screen.cols - (int)text - 1; /* a gap */
        version = qr_version_for(tall < wide ? tall : wide, VGA_QR_QUIET);
    } else {
        version = qr_version_for((int)(fb_qr_side(r) / FB_QR_MIN_MODULE_PX), FB_QR_QUIET);
    }
    if (!version || !r->qr_text)
        return g_screen.cols;
    len = r->qr_text(text, qr_capacity(version));
    int size = qr_encode(text, len, version);
    if (!size)
        return g_screen.cols;
    if (g_screen.backend == SCREEN_VGA) {
        uint32_t width = (uint32_t)(size + 2 * VGA_QR_QUIET);
        vga_draw_qr(g_screen.cols - width, size, VGA_QR_QUIET);
        return g_screen.cols - width - 1;
    }
    uint32_t span = (uint32_t)(size + 2 * FB_QR_QUIET), side = fb_qr_side(r);
    uint32_t module_px = side / span, left_px = g_screen.fb.width - span * module_px;
    fb_draw_qr(left_px, 0, module_px, size, FB_QR_QUIET);
    return left_px / (8 * g_screen.scale) - 1;
}

/* ---- The final screen and the table pages before it ---- */

#define FINAL_TOP (1 + BIG_ROWS + 1) /* the first row below the large verdict */

/* How many of the report's rows the final page shows: all when they fit, else one less than fit
 * (its last line counts the others); 0 when nothing fits. */
static int final_shown(const struct screen_final_report *r)
{
    int top = FINAL_TOP + r->nheader, room = top < (int)g_screen.rows ? (int)g_screen.rows - top : 0;
    if (r->nrows <= room)
        return r->nrows;
    return room > 0 ? room - 1 : 0;
}

/* Table pages: a title line, then rows; 0 when the screen has no room for any. */
static int page_capacity(void) { return g_screen.rows > 1 ? (int)g_screen.rows - 1 : 0; }

/* The table pages the rows the final page leaves out need (0: none, or no time to show them). */
static int table_pages(const struct screen_final_report *r)
{
    int rest = r->nrows - final_shown(r), cap = page_capacity();
    if (!r->page_ms || rest <= 0 || !cap)
        return 0;
    return (rest + cap - 1) / cap;
}

static void put_row(uint32_t row, const char *text) { put_text(0, row, text, line_attr(text, strlen(text)), true); }

/* Table page k of n (1-based; page n is the final one): the rows from 'first', for page_ms. */
static void draw_table_page(const struct screen_final_report *r, int k, int n, int first)
{
    char title[48];
    snprintf(title, sizeof(title), "LHV results, page %d/%d", k, n);
    clear_rows(0, g_screen.rows);
    put_text(0, 0, title, 0x0f, true);
    for (int i = first, row = 1; i < r->nrows && row < (int)g_screen.rows; i++, row++)
        put_row((uint32_t)row, r->rows[i]);
    delay_us((uint64_t)r->page_ms * 1000);
}

/* The final page's last line counts the rows it leaves out, and says where they are. The words
 * "... and N more" are what the harness' screen check reads (harness/screen.py). */
static void put_more_line(uint32_t row, int more, int pages)
{
    char line[64];
    if (pages == 1)
        snprintf(line, sizeof(line), "... and %d more (on page 1 and serial)", more);
    else if (pages > 1)
        snprintf(line, sizeof(line), "... and %d more (on pages 1-%d and serial)", more, pages);
    else
        snprintf(line, sizeof(line), "... and %d more (see serial log)", more);
    put_text(0, row, line, ATTR_TEXT, true);
}

/* The final page: the QR code with the complete result at the right edge; left of it the
 * large verdict, the result and summary lines, then the report's first rows (failures first, as
 * "FAILED <id>: <VERDICT> <reason>", then skips and the rest) for as many as fit, and
 * "... and N more" for the rest, so the harness can tell a shortened list from a wrong one. */
static void draw_final_page(const struct screen_final_report *r, int pages)
{
    static const uint8_t attrs[] = { 0x0a, 0x0c, 0x0e, 0x07 };
    uint8_t attr = attrs[r->color];
    clear_rows(0, g_screen.rows);
    uint32_t text_cols = draw_final_qr(r), full_cols = g_screen.cols;
    g_screen.cols = text_cols; /* rows are cut at the QR code */
    if (pages) {
        char title[48];
        snprintf(title, sizeof(title), "LHV results, page %d/%d", pages + 1, pages + 1);
        put_text(0, 0, title, 0x0f, true);
    }
    draw_big_word(r->verdict, 1, attr);
    uint32_t row = FINAL_TOP;
    for (int i = 0; i < r->nheader && row < g_screen.rows; i++, row++)
        put_text(0, row, r->header[i], i == 0 ? attr : ATTR_TEXT, true);
    int shown = final_shown(r);
    for (int i = 0; i < shown; i++, row++)
        put_row(row, r->rows[i]);
    if (shown < r->nrows && row < g_screen.rows)
        put_more_line(row, r->nrows - shown, pages);
    g_screen.cols = full_cols;
}

/* Rows that do not fit on the final page come first, on table pages shown page_ms each; then
 * the final page, which stays. */
void screen_final(const struct screen_final_report *r)
{
    if (g_screen.backend == SCREEN_NONE)
        return;
    screen_lock_bounded(-4); /* the run is ending: draw even if a fault left the lock taken */
    int pages = table_pages(r), first = final_shown(r);
    for (int k = 1; k <= pages; k++, first += page_capacity())
        draw_table_page(r, k, pages + 1, first);
    draw_final_page(r, pages);
    spin_unlock(&g_screen.lock);
}
