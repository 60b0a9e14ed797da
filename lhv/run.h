/* The runner's interface to the rest of L1 (boot code, interrupt handlers). */
#ifndef LHV_RUN_H
#define LHV_RUN_H

#include "options.h"
#include "scenario.h"

#define RUN_MAX_FAILED 24
struct run_totals {
    int count, good, bad, skipped, error; /* bad counts TIMEOUT too */
    int failed_count;
    char failed[RUN_MAX_FAILED][64]; /* "FAILED <id>: <VERDICT>", also drawn on the screen */
};

const char *verdict_name(enum verdict v);
void totals_add(struct run_totals *t, const char *id, enum verdict v);
enum verdict run_result(const struct run_totals *t);
struct run_totals *run_totals(void);

__attribute__((noreturn)) void run_scenarios(const struct run_options *o);
/* Prints the summary and the result, shows them on screen, and ends the run (main.c). */
__attribute__((noreturn)) void run_end(enum verdict result);
/* main.c hands run_end down before anything can fail: the runner ends the run through it. */
typedef void (*run_end_fn)(enum verdict result) __attribute__((noreturn));
void runner_init(run_end_fn end);

void runner_watchdog(uintptr_t interrupted_ip);
void runner_on_exception(const char *what);
const struct lhv_scenario_def *selftest_find(const char *name, bool *breaks_l1);
void selftest_break_l1_now(const char *name);
const char *selftest_names(void); /* "l2_hang l1_hang ...", for the error message */

#endif
