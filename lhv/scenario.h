/*
 * The scenario contract. A scenario is one file in tests/ that declares itself with
 * LHV_SCENARIO(); the record lands in the .lhv_scenarios section, which the runner walks and the
 * harness reads straight out of the ELF (so the record layout below is fixed: 128 bytes).
 */
#ifndef LHV_SCENARIO_H
#define LHV_SCENARIO_H

#include "lib/lib.h"

/* Ordered: the worst verdict wins. TIMEOUT counts as BAD, CRASH ends the run. */
enum verdict { VERDICT_GOOD, VERDICT_SKIP, VERDICT_ERROR, VERDICT_BAD, VERDICT_TIMEOUT, VERDICT_CRASH };

#define SUBARCH_I386 1u
#define SUBARCH_AMD64 2u
#define SUBARCH_ALL 3u

struct scenario;
typedef void (*scenario_body)(struct scenario *s);

struct lhv_scenario_def {
    char id[40];
    char requires[56]; /* comma-separated requirement words, checked by vmx_requirement_met() */
    uint64_t opt_mask; /* selected when all these LHV_OPT bits are set */
    uint32_t budget_ms;
    uint32_t subarch_mask;
    union {
        scenario_body body;
        uint64_t body_slot;
    };
    uint64_t flags; /* SCENARIO_* below: what the scenario claims it survives */
};
_Static_assert(sizeof(struct lhv_scenario_def) == 128, "registry record layout is read by the harness");

/* Claims a scenario makes (lhv/repeat.c refuses a run that needs one it does not make):
 * REPEATABLE: it can run again in the same boot and judge the same way (it sets up everything
 *   it uses each time and consumes nothing that exists only once per boot);
 * NOISE_SAFE: NMIs and fixed-vector IPIs that another CPU fires at the BSP at any moment (in L1
 *   or as NMI / external-interrupt exits from L2, which vcpu_run absorbs) cannot change its
 *   verdict, and it needs no AP (noise= takes one). */
#define SCENARIO_REPEATABLE 0x1ull
#define SCENARIO_NOISE_SAFE 0x2ull

#define LHV_SCENARIO_FLAGS(ID, OPT_MASK, REQUIRES, BUDGET_MS, SUBARCH, FLAGS, BODY)          \
    static void BODY(struct scenario *s);                                                    \
    static const struct lhv_scenario_def lhv_scenario_##ID                                   \
        __attribute__((used, section(".lhv_scenarios"), aligned(8))) = {                     \
            #ID, REQUIRES, OPT_MASK, BUDGET_MS, SUBARCH, { .body = BODY }, FLAGS }
/* Without flags: neither repeatable nor noise-safe until someone checks. */
#define LHV_SCENARIO(ID, OPT_MASK, REQUIRES, BUDGET_MS, SUBARCH, BODY) \
    LHV_SCENARIO_FLAGS(ID, OPT_MASK, REQUIRES, BUDGET_MS, SUBARCH, 0, BODY)

/* Runtime state of the scenario being run. */
struct scenario {
    const struct lhv_scenario_def *def;
    enum verdict verdict;
    char reason[200];
    bool inject; /* inject=<this id>: L1 deliberately wrong, the scenario must say BAD */
};

uint64_t lhv_opt(void);

/* Record a verdict (the worst one is kept, with its reason). They return false so that a check
 * can be written as: if (!expect_eq(...)) return; */
bool scenario_bad(struct scenario *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool scenario_error(struct scenario *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool scenario_skip(struct scenario *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void scenario_info(struct scenario *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Every check passed: without this (or another verdict) the scenario is an ERROR. */
void scenario_good(struct scenario *s);
/* Leave the scenario at once (from anywhere in L1, also from an interrupt handler). */
__attribute__((noreturn)) void scenario_abort(enum verdict v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Independent steps of one scenario: a BAD step is printed as an INFO line ("step failed: ...")
 * and the next step still runs, so one target bug does not hide the other checks; the scenario
 * keeps its first BAD. An ERROR stops the steps (scenario_step_end returns false). */
struct scenario_step {
    enum verdict verdict;
    char reason[200];
};
void scenario_step_begin(struct scenario *s, struct scenario_step *kept);
bool scenario_step_end(struct scenario *s, const struct scenario_step *kept);
/* One step: `before` and `after` are the scenario's own set-up and clean-up around each. */
#define SCENARIO_STEP(s, call, before, after)             \
    do {                                                  \
        struct scenario_step kept_;                       \
        scenario_step_begin((s), &kept_);                 \
        before;                                           \
        (void)(call);                                     \
        after;                                            \
        if (!scenario_step_end((s), &kept_))              \
            return;                                       \
    } while (0)

/* BAD (expected <what>=<exp>, observed <what>=<obs>) unless equal. */
bool expect_eq_u64(struct scenario *s, const char *what, uint64_t expected, uint64_t observed);
#define expect_eq(s, what, expected, observed) \
    expect_eq_u64((s), (what), (uint64_t)(expected), (uint64_t)(observed))

/* An expected fault in L1 (lhv/run.c). A scenario that wants one L1 instruction to fault (a
 * VMREAD to an unmapped page...) arms it with the vector, the instruction's address and where L1
 * goes on afterwards; the exception handler hands a matching fault (that vector at that RIP, on
 * the BSP, inside a scenario) to the runner, which records it and resumes at `resume` instead of
 * ending the scenario with ERROR. Any other exception still ends it with ERROR. One shot: the
 * first match or l1_fault_taken() disarms it. */
struct l1_fault {
    uint32_t vector;
    uint64_t error, ip, flags, cr2; /* from the exception frame; CR2 read in the handler */
};
void l1_expect_fault(uint32_t vector, uintptr_t insn, uintptr_t resume);
/* Disarms; true (with *seen filled) when the armed fault came. */
bool l1_fault_taken(struct l1_fault *seen);

#endif
