/*
 * The scenario runner: select (LHV_OPT bits, tests= globs, subarch, CPU features), run each
 * scenario under a watchdog, judge, report one TEST line each, then the summary and the result.
 */
#include "console/console.h"
#include "guard.h"
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
static run_end_fn g_run_end; /* main.c's run_end: the runner never calls up by name */
static struct info_buffer *g_info_buffer; /* repeat.c: INFO lines held back, NULL: printed */
static bool g_noise_on; /* noise=: started on its AP before each body */
static uint64_t g_noise_stream;

static const char *const g_verdict_names[] = { "GOOD", "SKIP", "ERROR", "BAD", "TIMEOUT", "CRASH" };

const char *verdict_name(enum verdict v) { return g_verdict_names[v]; }

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
    struct info_buffer *b = g_info_buffer;
    if (!b) {
        lhv_printf("INFO %s: %s\n", s->def->id, text);
        return;
    }
    size_t len = strlen(b->text);
    int n = snprintf(b->text + len, sizeof(b->text) - len, "INFO %s: %s\n", s->def->id, text);
    if (n < 0 || (size_t)n >= sizeof(b->text) - len) {
        b->text[len] = 0; /* only whole lines */
        b->dropped++;
    }
}

void runner_buffer_info(struct info_buffer *b)
{
    if (b) {
        b->text[0] = 0;
        b->dropped = 0;
    }
    g_info_buffer = b;
}

_Static_assert(sizeof(((struct scenario_step *)0)->reason) == sizeof(((struct scenario *)0)->reason),
               "a step keeps the scenario's whole reason");

void scenario_step_begin(struct scenario *s, struct scenario_step *kept)
{
    kept->verdict = s->verdict;
    memcpy(kept->reason, s->reason, sizeof(kept->reason));
    s->verdict = VERDICT_GOOD;
    s->reason[0] = 0;
}

bool scenario_step_end(struct scenario *s, const struct scenario_step *kept)
{
    enum verdict step = s->verdict;
    if (step == VERDICT_BAD)
        scenario_info(s, "step failed: %s", s->reason);
    if (kept->verdict >= step) {
        s->verdict = kept->verdict;
        memcpy(s->reason, kept->reason, sizeof(kept->reason));
    }
    return step != VERDICT_ERROR;
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
        g_run_end(VERDICT_CRASH);
    }
    g_in_scenario = false;
    console_release_if_owner(0);
    lhv_longjmp(g_abort_jmp, 1);
}

/* LHV_OPT 0x200 NO_INTERRUPT: no periodic tick, so each scenario gets one LAPIC one-shot that
 * fires a little after its budget (the margin covers the LAPIC/TSC calibration difference, so
 * that a healthy scenario never sees it and a hung one sees exactly one). */
static bool one_shot_watchdog(void) { return (lhv_opt() & LHV_OPT_NO_INTERRUPT) != 0; }

static uint64_t one_shot_ms(uint64_t budget_ms) { return budget_ms + budget_ms / 8 + 20; }

/* Called from the BSP's timer interrupt. */
void runner_watchdog(uintptr_t interrupted_ip)
{
    if (!g_in_scenario)
        return;
    uint64_t now = rdtsc();
    if (now < g_deadline_tsc && one_shot_watchdog())
        lapic_arm_one_shot_ms(one_shot_ms(tsc_to_ms(g_deadline_tsc - now))); /* early: the rest of the budget */
    if (now < g_deadline_tsc)
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

/* An exception in L1: the scenario that caused it ends with ERROR. Returns when no scenario
 * runs on this CPU: then L1 is lost and the caller ends the run. */
void runner_on_exception(const char *what)
{
    if (g_in_scenario && this_cpu_index() == 0)
        scenario_abort(VERDICT_ERROR, "L1 exception: %s", what);
}

/* The expected fault a scenario armed (scenario.h). Written by the BSP's scenario, read by the
 * BSP's exception handler: volatile keeps the order of arming and the instruction. */
static struct {
    volatile bool armed, taken;
    uint32_t vector;
    uintptr_t insn, resume;
    struct l1_fault seen;
} g_expected_fault;

void l1_expect_fault(uint32_t vector, uintptr_t insn, uintptr_t resume)
{
    g_expected_fault.vector = vector;
    g_expected_fault.insn = insn;
    g_expected_fault.resume = resume;
    g_expected_fault.taken = false;
    g_expected_fault.armed = true;
}

bool l1_fault_taken(struct l1_fault *seen)
{
    g_expected_fault.armed = false;
    if (g_expected_fault.taken)
        *seen = g_expected_fault.seen;
    return g_expected_fault.taken;
}

bool runner_fixup_exception(struct trap_frame *f)
{
    if (!g_expected_fault.armed || !g_in_scenario || this_cpu_index() != 0 || f->vector != g_expected_fault.vector ||
        f->ip != g_expected_fault.insn)
        return false;
    struct l1_fault *seen = &g_expected_fault.seen;
    seen->vector = (uint32_t)f->vector;
    seen->error = f->error;
    seen->ip = f->ip;
    seen->flags = f->flags;
    seen->cr2 = read_cr2();
    f->ip = g_expected_fault.resume;
    g_expected_fault.armed = false;
    g_expected_fault.taken = true;
    return true;
}

/* The VMX floor's checked accessors and VMCS set-up report a failure here (vmx_fail()): the
 * scenario that asked for it ends with ERROR, as any other abort. */
static __attribute__((noreturn)) void vmx_failed(const char *reason) { scenario_abort(VERDICT_ERROR, "%s", reason); }

void runner_init(run_end_fn end)
{
    g_run_end = end;
    vmx_set_failure_handler(vmx_failed);
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

/* Selected by LHV_OPT and tests=, whichever image it is built for. */
static bool selected_any_arch(const struct lhv_scenario_def *d, const struct run_options *o)
{
    return (d->opt_mask & o->opt) == d->opt_mask && tests_select(o->tests, d->id);
}

/* A scenario built for the other subarch is not part of this image's run at all (no SKIP line). */
static bool selected(const struct lhv_scenario_def *d, const struct run_options *o)
{
    return (d->subarch_mask & LHV_SUBARCH_BIT) && selected_any_arch(d, o);
}

static bool validate_inject(const struct run_options *o, char *error, size_t size);

/* Every glob in tests= must match some scenario, and so must every glob of inject=. */
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
    return validate_inject(o, error, size);
}

/* inject= takes globs as tests= does, without exclusions: each must match a selected scenario. */
static bool validate_inject(const struct run_options *o, char *error, size_t size)
{
    const char *p = o->inject;
    bool exclude;
    char pattern[64];
    while (next_glob(&p, pattern, sizeof(pattern), &exclude)) {
        bool exists = false, armed = false;
        for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++) {
            bool match = glob_match(pattern, d->id, strlen(d->id));
            exists |= match;
            armed |= match && selected(d, o);
        }
        if (exclude || !exists) {
            snprintf(error, size, "inject=%s: %s", o->inject,
                     exclude ? "takes no exclusions" : "no such scenario");
            return false;
        }
        if (!armed) {
            snprintf(error, size, "inject=%s: '%s' is not selected by lhv_opt=0x%llx tests=%s", o->inject, pattern,
                     (unsigned long long)o->opt, o->tests[0] ? o->tests : "*");
            return false;
        }
    }
    return true;
}

/* inject=: is this scenario's negative control armed? */
static bool injected(const struct run_options *o, const char *id)
{
    const char *p = o->inject;
    bool exclude;
    char pattern[64];
    while (next_glob(&p, pattern, sizeof(pattern), &exclude))
        if (glob_match(pattern, id, strlen(id)))
            return true;
    return false;
}

/* SKIP reasons: each requirement word, then what LHV_OPT adds (VPID, large pages). */
static int check_requirements(const struct lhv_scenario_def *d, char *reason, size_t size)
{
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

/* What the guard found changed goes into the verdict of the scenario that changed it: ERROR, or
 * the BAD/TIMEOUT/ERROR it already has with the damage added to its reason. */
static void record_damage(struct scenario *s, const struct guard_changes *c)
{
    g_reported = true;
    if (rank(s->verdict) < rank(VERDICT_ERROR))
        s->verdict = VERDICT_ERROR;
    size_t len = strlen(s->reason);
    int n = snprintf(s->reason + len, sizeof(s->reason) - len, "%sL1 state damaged: %s, restored", len ? "; " : "",
                     c->text);
    if (c->cut || n < 0 || (size_t)n >= sizeof(s->reason) - len)
        lhv_printf("LHV NOTE: %s damaged L1 state: %s%s, restored\n", s->def->id, c->text, c->cut ? " ..." : "");
}

/* NMIs that nobody expected are counted by arch/nmi.c and returned from; say when they came. */
static void report_unexpected_nmis(const char *when, const char *id)
{
    uint32_t n = nmi_take_unexpected();
    if (n)
        lhv_printf("LHV NOTE: %u NMI%s that no scenario expected reached L1 %s %s (counted and returned from)\n", n,
                   n == 1 ? "" : "s", when, id);
}

/* The body under the watchdog, then the runner's clean-up, with L1's state checked around it. */
static void run_body(const struct lhv_scenario_def *d)
{
    struct guard_changes changes = { 0 };
    volatile bool returned = false;
    screen_set_status(d->id);
    page_pool_reset(); /* g_running_vcpu is NULL: vmx_after_scenario() cleared it */
    report_unexpected_nmis("before", d->id);
    if (one_shot_watchdog())
        lapic_arm_one_shot_ms(one_shot_ms(d->budget_ms)); /* before the guard: its state is the reference */
    guard_before_scenario();
    if (g_noise_on && !noise_start(g_noise_stream))
        lhv_printf("LHV NOTE: noise did not start on cpu%d for %s\n", noise_cpu(), d->id);
    g_deadline_tsc = rdtsc() + g_tsc_hz / 1000 * d->budget_ms;
    if (lhv_setjmp(g_abort_jmp) == 0) {
        g_in_scenario = true;
        irq_enable();
        d->body(&g_current);
        g_in_scenario = false; /* before `returned`: no watchdog abort may follow it */
        returned = true;
    }
    g_in_scenario = false;
    g_expected_fault.armed = false; /* a fault armed and never taken belongs to this scenario only */
    guard_after_body(returned, &changes); /* first: CR3, the IDT, VMX operation the rest relies on */
    if (!returned)
        nmi_iret(); /* an abort from an NMI handler never reached its IRET: unblock NMIs */
    nmi_after_scenario(); /* the scenario's NMI hook ends with it, and so does its NMI blocking */
    irq_enable();
    if (!smp_cancel_all_work(2000))
        lhv_printf("LHV NOTE: an AP did not stop the work of %s\n", d->id);
    vmx_after_scenario();
    guard_after_cleanup(&changes);
    if (one_shot_watchdog())
        lapic_timer_stop();
    screen_set_status("-");
    if (changes.len)
        record_damage(&g_current, &changes);
    report_unexpected_nmis("during", d->id);
}

/* One scenario, once: its verdict, with the reason in g_current. */
static enum verdict run_once(const struct lhv_scenario_def *d)
{
    memset(&g_current, 0, sizeof(g_current));
    g_current.def = d;
    g_current.inject = injected(g_options, d->id);
    g_reported = false;
    int req = check_requirements(d, g_current.reason, sizeof(g_current.reason));
    if (req != REQ_MET) {
        g_current.verdict = req == REQ_UNKNOWN ? VERDICT_ERROR : VERDICT_SKIP;
        g_reported = true;
    } else {
        run_body(d);
    }
    if (!g_reported)
        scenario_error(&g_current, "the scenario reported nothing");
    return g_current.verdict;
}

enum verdict runner_run_once(const struct lhv_scenario_def *d, bool noise, uint64_t noise_stream, char *reason,
                             size_t size)
{
    g_noise_on = noise;
    g_noise_stream = noise_stream;
    enum verdict v = run_once(d);
    g_noise_on = false;
    strlcpy(reason, g_current.reason, size);
    return v;
}

/* The one TEST line of a scenario, and its place in the totals. */
void runner_report(const struct lhv_scenario_def *d, enum verdict v, const char *reason)
{
    if (v == VERDICT_GOOD)
        lhv_printf("TEST %s: GOOD\n", d->id);
    else
        lhv_printf("TEST %s: %s (%s)\n", d->id, verdict_name(v), reason);
    totals_add(&g_totals, d->id, v, reason);
}

static void run_one(const struct lhv_scenario_def *d)
{
    enum verdict v = run_once(d);
    runner_report(d, v, g_current.reason);
}

/* selftest=<name>[,<name>...]: each self-test in turn, before the selected scenarios. Names are
 * checked first, so that a typo never leaves a run half done. */
static void run_selftests(const char *names)
{
    for (int pass = 0; pass < 2; pass++) {
        const char *p = names, *word;
        size_t len;
        while (words_next(&p, &word, &len)) {
            char name[32];
            snprintf(name, sizeof(name), "%.*s", (int)len, word);
            bool breaks_l1;
            const struct lhv_scenario_def *d = selftest_find(name, &breaks_l1);
            if (!d && !breaks_l1) {
                lhv_printf("LHV ERROR: selftest=%s: no such self-test (%s)\n", name, selftest_names());
                g_run_end(VERDICT_ERROR);
            }
            if (pass == 0)
                continue;
            if (breaks_l1)
                selftest_break_l1_now(name);
            else
                run_one(d);
        }
    }
}

void run_scenarios(const struct run_options *o)
{
    g_options = o;
    options_set_current(o);
    char error[200];
    if (!validate_selection(o, error, sizeof(error))) {
        lhv_printf("LHV ERROR: %s\n", error);
        g_run_end(VERDICT_ERROR);
    }
    guard_start();
    if (o->selftest[0])
        run_selftests(o->selftest);
    if (options_repeating(o) || o->noise) {
        const struct lhv_scenario_def *list[RUN_MAX_SELECTED];
        int count = 0;
        for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
            if (selected(d, o) && count < RUN_MAX_SELECTED)
                list[count++] = d;
        if (!repeat_run(o, list, count, error, sizeof(error))) {
            lhv_printf("LHV ERROR: %s\n", error);
            g_run_end(VERDICT_ERROR);
        }
    } else {
        for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
            if (selected(d, o))
                run_one(d);
    }
    if (!g_totals.count) {
        bool other_arch_only = false;
        for (const struct lhv_scenario_def *d = lhv_scenarios_start; d < lhv_scenarios_end; d++)
            other_arch_only |= selected_any_arch(d, o);
        if (other_arch_only)
            lhv_printf("LHV NOTE: lhv_opt=0x%llx tests=%s selects only scenarios of the other subarch: nothing runs on %s\n",
                       (unsigned long long)o->opt, o->tests, LHV_ARCH_NAME);
        else
            lhv_printf("LHV ERROR: no scenario selected by lhv_opt=0x%llx tests=%s\n", (unsigned long long)o->opt,
                       o->tests[0] ? o->tests : "*");
        /* Asking only for the other image's scenarios runs nothing: SKIP, not a usage error. */
        g_run_end(other_arch_only ? VERDICT_SKIP : VERDICT_ERROR);
    }
    if (one_shot_watchdog())
        lhv_printf("LHV NOTE: lhv_opt 0x200 NO_INTERRUPT: no periodic timer; %llu watchdog one-shot interrupt%s\n",
                   (unsigned long long)g_ticks, g_ticks == 1 ? "" : "s");
    g_run_end(run_result(&g_totals));
}

/* The run is GOOD when something ran GOOD and nothing is worse than SKIP (a CPU that lacks a
 * feature is not a failure; the skips are listed with their reasons), SKIP when nothing ran,
 * else the worst verdict (TIMEOUT counts as BAD). */
enum verdict run_result(const struct run_totals *t)
{
    if (t->bad)
        return VERDICT_BAD;
    if (t->error)
        return VERDICT_ERROR;
    return t->good ? VERDICT_GOOD : VERDICT_SKIP;
}

struct run_totals *run_totals(void) { return &g_totals; }

void totals_add(struct run_totals *t, const char *id, enum verdict v, const char *reason)
{
    t->count++;
    switch (v) {
    case VERDICT_GOOD: t->good++; break;
    case VERDICT_SKIP: t->skipped++; break;
    case VERDICT_ERROR: t->error++; break;
    default: t->bad++; break;
    }
    if (t->result_count >= RUN_MAX_RESULTS)
        return;
    struct scenario_result *r = &t->results[t->result_count++];
    strlcpy(r->id, id, sizeof(r->id));
    r->verdict = v;
    strlcpy(r->reason, v == VERDICT_GOOD ? "" : reason, sizeof(r->reason));
}
