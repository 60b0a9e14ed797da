/* The runner's interface to the rest of L1 (boot code, interrupt handlers). */
#ifndef LHV_RUN_H
#define LHV_RUN_H

#include "options.h"
#include "scenario.h"

/* What each scenario said, in run order, for the final screen and its QR code (report.c). */
#define RUN_MAX_RESULTS 64
struct scenario_result {
    char id[40];
    enum verdict verdict;
    char reason[160]; /* empty for GOOD; cut to this size */
};
struct run_totals {
    int count, good, bad, skipped, error; /* bad counts TIMEOUT too */
    int result_count;
    struct scenario_result results[RUN_MAX_RESULTS];
};

const char *verdict_name(enum verdict v);
void totals_add(struct run_totals *t, const char *id, enum verdict v, const char *reason);
enum verdict run_result(const struct run_totals *t);
struct run_totals *run_totals(void);

__attribute__((noreturn)) void run_scenarios(const struct run_options *o);
/* Prints the summary and the result, shows them on screen, and ends the run (main.c). */
__attribute__((noreturn)) void run_end(enum verdict result);
/* main.c hands run_end down before anything can fail: the runner ends the run through it. */
typedef void (*run_end_fn)(enum verdict result) __attribute__((noreturn));
void runner_init(run_end_fn end);

/* The final screen: large verdict, summary, a row per scenario, a QR code of the whole result
 * (report.c). banner and caps are the run's first two lines. */
void report_final_screen(enum verdict result, const char *banner, const char *caps);
void report_set_page_ms(uint32_t ms); /* the final screen's table pages: each this long, 0 none */

/* Race hunting (repeat.c): runs the selected scenarios in rounds, with noise= if asked; false
 * with the reason (nothing has run then) when a scenario does not claim what the run needs. */
#define RUN_MAX_SELECTED 128
bool repeat_run(const struct run_options *o, const struct lhv_scenario_def *const *list, int count, char *error,
                size_t size);
/* One scenario once, without its TEST line (repeat.c reports it at the end): the verdict, with
 * the reason copied out. noise: start the noise AP for it, on that stream of the schedule. */
enum verdict runner_run_once(const struct lhv_scenario_def *d, bool noise, uint64_t noise_stream, char *reason,
                             size_t size);
void runner_report(const struct lhv_scenario_def *d, enum verdict v, const char *reason);
/* INFO lines go into b instead of the console while it is set (NULL: printed again). */
struct info_buffer {
    char text[2048];
    uint32_t dropped; /* lines that did not fit */
};
void runner_buffer_info(struct info_buffer *b);

void runner_watchdog(uintptr_t interrupted_ip);
void runner_on_exception(const char *what);
/* Called first by the exception handler: true when the fault was the one a scenario armed with
 * l1_expect_fault() (then f->ip is the resume address and the handler just returns). */
struct trap_frame;
bool runner_fixup_exception(struct trap_frame *f);
const struct lhv_scenario_def *selftest_find(const char *name, bool *breaks_l1);
void selftest_break_l1_now(const char *name);
const char *selftest_names(void); /* "l2_hang l1_hang ...", for the error message */

#endif
