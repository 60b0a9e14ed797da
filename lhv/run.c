/*
 * The scenario runner: select (LHV_OPT bits, tests= globs, subarch, CPU features), run each
 * scenario under a watchdog, judge, report one TEST line each, then the summary and the result.
 */
#include "console/console.h"
#include "options.h"
#include "run.h"
#include "scenario.h"
#include "vmx/vmx.h"

/* Bounds of .lhv_scenarios, from the linker script. */
extern const struct lhv_scenario_def lhv_scenarios_start[], lhv_scenarios_end[];

static const struct run_options *g_options;
static struct scenario g_current;
static bool g_reported; /* the body said something: a silent scenario is an ERROR */
static lhv_jmp_buf g_abort_jmp;
static volatile bool g_in_scenario;
static volatile uint64_t g_deadline_tsc;
static struct run_totals g_totals;

static const char *const g_verdict_names[] = { "GOOD", "SKIP", "ERROR", "BAD", "TIMEOUT", "CRASH" };

const char *verdict_name(enum verdict v) { return g_verdict_names[v]; }

uint64_t lhv_opt(void) { return g_options ? g_options->opt : lhv_default_opt(); }

/* TIMEOUT ranks with BAD for "worst wins", but the first of them keeps its name and reason. */
static int rank(enum verdict v) { return v == VERDICT_TIMEOUT ? VERDICT_BAD : (int)v; }

/* The worst verdict wins; among equals the first reason stays, because the first failure is the
 * one that explains the others. */
static void record(struct scenario *s, enum verdict v, const char *fmt, va_list ap)
{
    g_reported = true;
    if (rank(v) < rank(s->verdict) || (s->reason[0] && rank(v) == rank(s->verdict)))
        return;
    s->verdict = v;
    vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
}

#define RECORD(s, v)                 \
    do {                             \
        va_list ap;                  \
        va_start(ap, fmt);           \
        record((s), (v), fmt, ap);   \
        va_end(ap);                  \
    } while (0)

bool scenario_bad(struct scenario *s, const char *fmt, ...)
{
    RECORD(s, VERDICT_BAD);
    return false;
}
bool scenario_error(struct scenario *s, const char *fmt, ...)
{
    RECORD(s, VERDICT_ERROR);
    return false;
}
bool scenario_skip(struct scenario *s, const char *fmt, ...)
{
    RECORD(s, VERDICT_SKIP);
    return false;
}
void scenario_good(struct scenario *s)
{
    (void)s;
    g_reported = true; /* GOOD stands unless something worse was recorded */
}

void scenario_info(struct scenario *s, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    lhv_printf("INFO %s: %s\n", s->def->id, text);
}

bool expect_eq_u64(struct scenario *s, const char *what, uint64_t expected, uint64_t observed)
{
    if (expected == observed)
        return true;
    return scenario_bad(s, "expected %s=0x%llx, observed %s=0x%llx", what, (unsigned long long)expected, what,
                        (unsigned long long)observed);
}

void scenario_abort(enum verdict v, const char *fmt, ...)
{
    RECORD(&g_current, v);
    if (!g_in_scenario || this_cpu_index() != 0) {
        lhv_printf("LHV ERROR: abort outside a scenario: %s\n", g_current.reason);
        run_end(VERDICT_CRASH);
    }
    g_in_scenario = false;
    console_release_if_owner(0);
    lhv_longjmp(g_abort_jmp, 1);
}

/* Called from the BSP's timer interrupt. */
void runner_watchdog(uintptr_t interrupted_ip)
{
    if (!g_in_scenario || rdtsc() < g_deadline_tsc)
        return;
    struct vcpu *v = g_running_vcpu; /* the timer interrupt has had its EOI already */
    if (v)
        scenario_abort(VERDICT_TIMEOUT, "budget %u ms: L1 at 0x%llx after %u VM exits, last %s (%u) at guest rip 0x%llx",
                       g_current.def->budget_ms, (unsigned long long)interrupted_ip, v->exits,
                       exit_reason_name(v->exit.reason), v->exit.reason & 0xffff,
                       (unsigned long long)v->exit.guest_rip);
    scenario_abort(VERDICT_TIMEOUT, "budget %u ms: L1 at 0x%llx, no guest run yet", g_current.def->budget_ms,
                   (unsigned long long)interrupted_ip);
}

/* An exception in L1: the scenario that caused it ends with ERROR; anywhere else L1 is lost. */
void runner_on_exception(const char *what)
{
    if (g_in_scenario && this_cpu_index() == 0)
        scenario_abort(VERDICT_ERROR, "L1 exception: %s", what);
    run_end(VERDICT_CRASH);
}

static bool words_next(const char **p, const char **word, size_t *len)
{
    while (**p == ',')
        (*p)++;
    if (!**p)
        return false;
    *word = *p;
    while (**p && **p != ',')
        (*p)++;
    *len = (size_t)(*p - *word);
    return true;
}

/* The next glob of tests=, without its leading '-' (which sets *exclude). */
static bool next_glob(const char **p, char *pattern, size_t size, bool *exclude)
{
    const char *glob;
    size_t len;
    if (!words_next(p, &glob, &len))
        return false;
    *exclude = glob[0] == '-';
    snprintf(pattern, size, "%.*s", (int)(len - *exclude), glob + *exclude);
    return true;
}

static bool tests_select(const char *tests, const char *id)
{
    const char *p = tests;
    bool any_positive = false, included = false, exclude;
    char pattern[64];
    while (next_glob(&p, pattern, sizeof(pattern), &exclude)) {
        bool match = glob_match(pattern, id, strlen(id));
        if (exclude && match)
            return false;
        if (!exclude) {
            any_positive = true;
            included |= match;
        }
    }
    return !any_positive || included;
}

static const struct lhv_scenario_def *find_scenario(const char *id, size_t len)
{
    for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
        if (strlen(d->id) == len && !memcmp(d->id, id, len))
            return d;
    return NULL;
}

static bool selected(const struct lhv_scenario_def *d, const struct run_options *o)
{
    return (d->opt_mask & o->opt) == d->opt_mask && tests_select(o->tests, d->id);
}

/* Every glob in tests= must match some scenario, and inject= must name one. */
static bool validate_selection(const struct run_options *o, char *error, size_t size)
{
    const char *p = o->tests;
    bool exclude;
    char pattern[64];
    while (next_glob(&p, pattern, sizeof(pattern), &exclude)) {
        bool matched = false;
        for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
            matched |= glob_match(pattern, d->id, strlen(d->id));
        if (!matched) {
            snprintf(error, size, "tests=%s: '%s' matches no scenario", o->tests, pattern);
            return false;
        }
    }
    const struct lhv_scenario_def *target = o->inject[0] ? find_scenario(o->inject, strlen(o->inject)) : NULL;
    if (o->inject[0] && !target) {
        snprintf(error, size, "inject=%s: no such scenario", o->inject);
        return false;
    }
    if (target && !selected(target, o)) {
        snprintf(error, size, "inject=%s: that scenario is not selected by lhv_opt=0x%llx tests=%s", o->inject,
                 (unsigned long long)o->opt, o->tests[0] ? o->tests : "*");
        return false;
    }
    return true;
}

/* SKIP reasons: subarch, then each requirement word, then what LHV_OPT adds (VPID, large pages). */
static int check_requirements(const struct lhv_scenario_def *d, char *reason, size_t size)
{
    if (!(d->subarch_mask & LHV_SUBARCH_BIT)) {
        snprintf(reason, size, "not available on %s", LHV_ARCH_NAME);
        return REQ_ABSENT;
    }
    char words[96];
    snprintf(words, sizeof(words), "%s%s%s", d->requires, (lhv_opt() & LHV_OPT_USE_VPID) ? ",vpid" : "",
             (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) ? ",ept_2m" : "");
    const char *p = words, *word;
    size_t len;
    while (words_next(&p, &word, &len)) {
        int rc = vmx_requirement_check(word, len, reason, size);
        if (rc != REQ_MET)
            return rc;
    }
    return REQ_MET;
}

static void run_one(const struct lhv_scenario_def *d)
{
    memset(&g_current, 0, sizeof(g_current));
    g_current.def = d;
    g_current.inject = !strcmp(g_options->inject, d->id);
    g_reported = false;
    int req = check_requirements(d, g_current.reason, sizeof(g_current.reason));
    if (req != REQ_MET) {
        g_current.verdict = req == REQ_UNKNOWN ? VERDICT_ERROR : VERDICT_SKIP;
        g_reported = true;
    } else {
        screen_set_status(d->id);
        page_pool_reset(); /* g_running_vcpu is NULL: vmx_after_scenario() cleared it */
        g_deadline_tsc = rdtsc() + g_tsc_hz / 1000 * d->budget_ms;
        if (lhv_setjmp(g_abort_jmp) == 0) {
            g_in_scenario = true;
            irq_enable();
            d->body(&g_current);
        }
        g_in_scenario = false;
        nmi_after_scenario(); /* no NMI blocking outlives a scenario, even one that aborted */
        irq_enable();
        if (!smp_cancel_all_work(2000))
            lhv_printf("LHV NOTE: an AP did not stop the work of %s\n", d->id);
        vmx_after_scenario();
        screen_set_status("-");
    }
    if (!g_reported)
        scenario_error(&g_current, "the scenario reported nothing");
    enum verdict v = g_current.verdict;
    if (v == VERDICT_GOOD)
        lhv_printf("TEST %s: GOOD\n", d->id);
    else
        lhv_printf("TEST %s: %s (%s)\n", d->id, verdict_name(v), g_current.reason);
    totals_add(&g_totals, d->id, v);
}

void run_scenarios(const struct run_options *o)
{
    g_options = o;
    char error[200];
    if (!validate_selection(o, error, sizeof(error))) {
        lhv_printf("LHV ERROR: %s\n", error);
        run_end(VERDICT_ERROR);
    }
    if (o->selftest[0]) {
        bool breaks_l1;
        const struct lhv_scenario_def *d = selftest_find(o->selftest, &breaks_l1);
        if (breaks_l1)
            selftest_break_l1_now(o->selftest);
        if (!d) {
            lhv_printf("LHV ERROR: selftest=%s: no such self-test (l2_hang l1_hang l1_fault highmap crash triple_fault stall)\n",
                       o->selftest);
            run_end(VERDICT_ERROR);
        }
        run_one(d);
    }
    for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
        if (selected(d, o))
            run_one(d);
    if (!g_totals.count) {
        lhv_printf("LHV ERROR: no scenario selected by lhv_opt=0x%llx tests=%s\n", (unsigned long long)o->opt,
                   o->tests[0] ? o->tests : "*");
        run_end(VERDICT_ERROR);
    }
    run_end(g_totals.worst);
}

struct run_totals *run_totals(void) { return &g_totals; }

void totals_add(struct run_totals *t, const char *id, enum verdict v)
{
    t->count++;
    if (rank(v) > rank(t->worst))
        t->worst = v == VERDICT_TIMEOUT ? VERDICT_BAD : v;
    switch (v) {
    case VERDICT_GOOD: t->good++; return;
    case VERDICT_SKIP: t->skipped++; return;
    case VERDICT_ERROR: t->error++; break;
    default: t->bad++; break;
    }
    if (t->failed_count < RUN_MAX_FAILED)
        snprintf(t->failed[t->failed_count++], sizeof(t->failed[0]), "FAILED %s: %s", id, verdict_name(v));
}
