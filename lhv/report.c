/*
 * The end of a run as a person sees it on a laptop without a serial port: the final screen's
 * rows (failures first with their reasons, skips grouped by reason with a hint for the common
 * causes, then the GOOD ones) and the text of its QR code, which carries the whole result
 * (banner, CAPS, every TEST line, SUMMARY, RESULT) in the serial log's own format, so that
 * `harness judge --photo` judges a photo exactly as it judges a log.
 */
#include "console/console.h"
#include "run.h"

#define ROW_SIZE 200
#define MAX_ROWS RUN_MAX_RESULTS

static struct {
    enum verdict result;
    const char *banner, *caps;
    char rows[MAX_ROWS][ROW_SIZE];
    const char *row_ptrs[MAX_ROWS];
    int nrows;
    uint32_t page_ms; /* how long each table page before the final one stays (report_set_page_ms) */
} g_report;

/* What a user can do about the common SKIP reasons (see README "On a laptop"). */
static const char *skip_hint(const char *reason)
{
    if (strstr(reason, "disabled by firmware"))
        return "enable Intel VT-x in the firmware setup";
    if (strstr(reason, "VMX not supported"))
        return "no VMX: use another CPU, or turn on nested VMX in the hypervisor below";
    return NULL;
}

static char *next_row(void) { return g_report.nrows < MAX_ROWS ? g_report.rows[g_report.nrows++] : NULL; }

/* "FAILED <id>: <VERDICT> <reason>"; returns the columns the rows need up to the verdict (the
 * form the harness checks), which the QR code must leave them. */
static uint32_t add_failure_rows(const struct run_totals *t)
{
    uint32_t need = 0;
    for (int i = 0; i < t->result_count; i++) {
        const struct scenario_result *r = &t->results[i];
        char *row;
        if (r->verdict == VERDICT_GOOD || r->verdict == VERDICT_SKIP || !(row = next_row()))
            continue;
        int head = snprintf(row, ROW_SIZE, "FAILED %s: %s", r->id, verdict_name(r->verdict));
        snprintf(row + head, ROW_SIZE - (size_t)head, " %s", r->reason);
        need = (uint32_t)head > need ? (uint32_t)head : need;
    }
    return need;
}

/* Skips that share a reason become one row, "12 skipped: <reason>", followed by what to do
 * about it where the cause is a common one ("  -> <hint>"). */
static void add_skip_rows(const struct run_totals *t)
{
    for (int i = 0; i < t->result_count; i++) {
        const struct scenario_result *r = &t->results[i];
        if (r->verdict != VERDICT_SKIP)
            continue;
        bool seen = false;
        int same = 0;
        for (int j = 0; j < t->result_count; j++) {
            bool alike = t->results[j].verdict == VERDICT_SKIP && !strcmp(t->results[j].reason, r->reason);
            seen |= alike && j < i;
            same += alike;
        }
        char *row;
        if (seen || !(row = next_row()))
            continue;
        if (same > 1)
            snprintf(row, ROW_SIZE, "%d skipped: %s", same, r->reason);
        else
            snprintf(row, ROW_SIZE, "SKIP %s: %s", r->id, r->reason);
        const char *hint = skip_hint(r->reason);
        if (hint && (row = next_row()))
            snprintf(row, ROW_SIZE, "  -> %s", hint);
    }
}

static void add_good_rows(const struct run_totals *t)
{
    for (int i = 0; i < t->result_count; i++) {
        char *row;
        if (t->results[i].verdict == VERDICT_GOOD && (row = next_row()))
            snprintf(row, ROW_SIZE, "GOOD %s", t->results[i].id);
    }
}

/* ---- The QR code's text ---- */

struct text_buf {
    char *buf;
    int capacity, len;
    bool overflow;
    int reserve;       /* bytes kept free for the SUMMARY and RESULT lines */
    bool skip_on_full; /* a line that does not fit is left out instead of failing the text */
};

static void append(struct text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(struct text_buf *b, const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line))
        n = (int)sizeof(line) - 1;
    if (b->overflow || b->len + n > b->capacity - b->reserve) {
        b->overflow |= !b->skip_on_full;
        return;
    }
    memcpy(b->buf + b->len, line, (size_t)n);
    b->len += n;
}

/* The serial log's lines, reasons cut to reason_max characters ("(...)" marks a cut one). */
static void append_result(struct text_buf *b, const struct run_totals *t, int reason_max, bool with_head,
                          bool with_good)
{
    if (with_head)
        append(b, "%s\n%s\n", g_report.banner, g_report.caps);
    else
        append(b, "LHV QR CUT\n"); /* banner and CAPS (and maybe GOOD lines) left out: see judge */
    for (int i = 0; i < t->result_count; i++) {
        const struct scenario_result *r = &t->results[i];
        if (r->verdict == VERDICT_GOOD) {
            if (with_good)
                append(b, "TEST %s: GOOD\n", r->id);
            continue;
        }
        bool cut = (int)strlen(r->reason) > reason_max;
        append(b, "TEST %s: %s (%.*s%s)\n", r->id, verdict_name(r->verdict), reason_max, r->reason,
               cut ? "..." : "");
    }
    b->reserve = 0;
    append(b, "LHV SUMMARY: %d good, %d bad, %d skipped, %d error\n", t->good, t->bad, t->skipped, t->error);
    append(b, "LHV RESULT: %s\n", verdict_name(g_report.result));
}

/* The whole result if it fits; else shorter reasons; else, on a small screen, without the
 * banner and the GOOD lines (marked by an "LHV QR CUT" line); at last, the SUMMARY and RESULT
 * with as many of the other TEST lines as fit (the judge checks a cut text against its SUMMARY). */
static int qr_text(char *buf, int capacity)
{
    static const int reason_limits[] = { 160, 80, 40, 16, 0 };
    const struct run_totals *t = run_totals();
    for (int head = 1; head >= 0; head--)
        for (int good = 1; good >= 0; good--)
            for (size_t i = 0; i < ARRAY_SIZE(reason_limits); i++) {
                if (head && !good)
                    continue; /* a banner without the GOOD lines helps no one */
                struct text_buf b = { buf, capacity, 0, false, 0, false };
                append_result(&b, t, reason_limits[i], head, good);
                if (!b.overflow)
                    return b.len;
            }
    struct text_buf b = { buf, capacity, 0, false, 80 /* SUMMARY + RESULT */, true };
    append_result(&b, t, 0, false, false);
    return b.overflow ? 0 : b.len;
}

void report_set_page_ms(uint32_t ms) { g_report.page_ms = ms; }

void report_final_screen(enum verdict result, const char *banner, const char *caps)
{
    const struct run_totals *t = run_totals();
    g_report.result = result;
    g_report.banner = banner;
    g_report.caps = caps;
    g_report.nrows = 0;
    uint32_t failure_cols = add_failure_rows(t);
    add_skip_rows(t);
    add_good_rows(t);
    for (int i = 0; i < g_report.nrows; i++)
        g_report.row_ptrs[i] = g_report.rows[i];
    static char result_line[40], summary_line[80];
    snprintf(result_line, sizeof(result_line), "LHV RESULT: %s", verdict_name(result));
    snprintf(summary_line, sizeof(summary_line), "LHV SUMMARY: %d good, %d bad, %d skipped, %d error", t->good,
             t->bad, t->skipped, t->error);
    static const char *header[2];
    header[0] = result_line;
    header[1] = summary_line;
    static const enum screen_color colors[] = { COLOR_GOOD, COLOR_WARN, COLOR_WARN, COLOR_BAD, COLOR_BAD, COLOR_BAD };
    struct screen_final_report report = {
        .verdict = verdict_name(result), .color = colors[result], .header = header, .nheader = 2,
        .rows = g_report.row_ptrs, .nrows = g_report.nrows, .min_text_cols = failure_cols, .qr_text = qr_text,
        .page_ms = g_report.page_ms,
    };
    screen_final(&report);
}
