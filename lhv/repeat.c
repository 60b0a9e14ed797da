/*
 * Race hunting in one boot: repeat=N, repeat_ms=T, repeat_until=fail run the selected scenarios
 * in rounds (a reboot per round costs seconds under an emulator; a round of the EPT family costs
 * a fraction of that), and noise=nmi,ipi has an AP fire NMIs and IPIs at the BSP meanwhile
 * (arch/noise.c). Only scenarios that claim SCENARIO_REPEATABLE / SCENARIO_NOISE_SAFE
 * (scenario.h) are accepted; the run refuses the others before anything runs.
 *
 * Output: a short line per round, INFO lines of the first round (later rounds print theirs only
 * when the scenario was not GOOD there), then per scenario a REPEAT line and its one TEST line
 * with the worst verdict over the rounds and the reason of the first round that gave it:
 *   ROUND 7: 4 good, BAD ept_switch
 *   REPEAT ept_switch: rounds=50 good=49 skip=0 error=0 bad=1 worst=BAD worst_round=7 first_fail=7
 *   TEST ept_switch: BAD (expected ..., observed ...)
 */
#include "console/console.h"
#include "options.h"
#include "run.h"
#include "scenario.h"
#include "vmx/vmx.h"

struct repeat_state {
    const struct lhv_scenario_def *def;
    uint32_t rounds, good, skip, error, bad; /* bad counts TIMEOUT too */
    enum verdict worst;
    uint32_t worst_round, first_fail; /* 0: none */
    bool skipped_for_good; /* SKIP: the CPU lacks something, later rounds would only say it again */
    char reason[200];
};

static struct repeat_state g_states[RUN_MAX_SELECTED];
static struct info_buffer g_infos;

/* TIMEOUT ranks with BAD, as in run.c. */
static int rank(enum verdict v) { return v == VERDICT_TIMEOUT ? VERDICT_BAD : (int)v; }
static bool is_failure(enum verdict v) { return rank(v) >= VERDICT_ERROR; }

/* The word of the command line that asked for rounds, for the refusal message. */
static const char *repeat_word(const struct run_options *o)
{
    return o->repeat ? "repeat=" : o->repeat_ms ? "repeat_ms=" : "repeat_until=";
}

/* Every selected scenario must claim what the run needs: the first that does not is named. */
static bool check_claims(const struct run_options *o, const struct lhv_scenario_def *const *list, int count,
                         char *error, size_t size)
{
    for (int i = 0; i < count; i++) {
        if (options_repeating(o) && !(list[i]->flags & SCENARIO_REPEATABLE)) {
            snprintf(error, size, "%s: %s is not safe to repeat (select others with tests=)", repeat_word(o),
                     list[i]->id);
            return false;
        }
        if (o->noise && !(list[i]->flags & SCENARIO_NOISE_SAFE)) {
            snprintf(error, size, "noise=: %s is not safe under noise (select others with tests=)", list[i]->id);
            return false;
        }
    }
    return true;
}

static void record_round(struct repeat_state *st, uint32_t round, enum verdict v, const char *reason)
{
    st->rounds++;
    switch (v) {
    case VERDICT_GOOD: st->good++; break;
    case VERDICT_SKIP: st->skip++; break;
    case VERDICT_ERROR: st->error++; break;
    default: st->bad++; break;
    }
    if (is_failure(v) && !st->first_fail)
        st->first_fail = round;
    if (rank(v) > rank(st->worst) || round == 1) {
        st->worst = v;
        st->worst_round = round;
        strlcpy(st->reason, reason, sizeof(st->reason));
    }
    if (round == 1 && v == VERDICT_SKIP)
        st->skipped_for_good = true;
}

/* Line by line: one lhv_printf holds a line, not a whole buffer. */
static void print_lines(const char *text)
{
    while (*text) {
        const char *end = text;
        while (*end && *end != '\n')
            end++;
        lhv_printf("%.*s\n", (int)(end - text), text);
        text = *end ? end + 1 : end;
    }
}

/* Scenarios still to run: not those that SKIPped in round 1. */
static bool anything_left(int count)
{
    for (int i = 0; i < count; i++)
        if (!g_states[i].skipped_for_good)
            return true;
    return false;
}

/* One round over every scenario; prints its ROUND line; true when something failed in it. */
static bool run_round(const struct run_options *o, uint32_t round, int count, bool print_round)
{
    int good = 0;
    char failed[160] = "";
    size_t used = 0;
    bool any_failure = false, cut = false;
    for (int i = 0; i < count; i++) {
        struct repeat_state *st = &g_states[i];
        if (st->skipped_for_good)
            continue;
        char reason[200];
        runner_buffer_info(round > 1 ? &g_infos : NULL);
        uint64_t stream = (uint64_t)round << 16 | (uint64_t)i;
        enum verdict v = runner_run_once(st->def, o->noise != 0, stream, reason, sizeof(reason));
        runner_buffer_info(NULL);
        record_round(st, round, v, reason);
        if (v == VERDICT_GOOD) {
            good++;
            continue;
        }
        if (round > 1 && v != VERDICT_SKIP) { /* what it said in the round that went wrong */
            print_lines(g_infos.text);
            if (g_infos.dropped)
                lhv_printf("LHV NOTE: %u more INFO lines of %s in round %u not kept\n", g_infos.dropped,
                           st->def->id, round);
        }
        any_failure |= is_failure(v);
        if (cut)
            continue;
        int n = snprintf(failed + used, sizeof(failed) - used, ", %s %s", verdict_name(v), st->def->id);
        if (n > 0 && (size_t)n < sizeof(failed) - used - 4) {
            used += (size_t)n;
        } else { /* room is kept for the mark that says more failed than the line names */
            failed[used] = 0;
            strlcpy(failed + used, " ...", sizeof(failed) - used);
            cut = true;
        }
    }
    if (print_round)
        lhv_printf("ROUND %u: %d good%s\n", round, good, failed);
    return any_failure;
}

static const char *noise_name(uint32_t kinds)
{
    return kinds == (NOISE_NMI | NOISE_IPI) ? "nmi,ipi" : kinds == NOISE_NMI ? "nmi" : kinds == NOISE_IPI ? "ipi" : "-";
}

static void print_noise_counts(void)
{
    struct noise_counts c;
    noise_counts(&c);
    lhv_printf("LHV NOISE: cpu%d sent %u NMIs and %u IPIs; cpu0 took %u NMI exits from L2, %u NMIs and %u IPIs in L1\n",
               noise_cpu(), c.sent_nmi, c.sent_ipi, c.nmi_exits, c.nmi_in_l1, c.ipi_taken);
}

bool repeat_run(const struct run_options *o, const struct lhv_scenario_def *const *list, int count, char *error,
                size_t size)
{
    if (!check_claims(o, list, count, error, size))
        return false;
    uint64_t seed = o->seed_given ? o->seed : rdtsc();
    if (o->noise) {
        char why[120];
        if (!noise_arm(o->noise, seed, why, sizeof(why))) {
            snprintf(error, size, "noise=: %s", why);
            return false;
        }
    }
    if (o->noise || o->seed_given)
        lhv_printf("LHV SEED 0x%llx\n", (unsigned long long)seed);
    bool repeating = options_repeating(o);
    if (repeating)
        lhv_printf("LHV REPEAT rounds=%u ms=%u until=%s noise=%s\n", o->repeat, o->repeat_ms,
                   o->repeat_until_fail ? "fail" : "-", noise_name(o->noise));
    memset(g_states, 0, sizeof(g_states));
    for (int i = 0; i < count; i++)
        g_states[i].def = list[i];
    uint64_t start = rdtsc();
    for (uint32_t round = 1;; round++) {
        bool failed = run_round(o, round, count, repeating);
        if (!repeating || (o->repeat && round >= o->repeat) || !anything_left(count))
            break;
        if (o->repeat_ms && (rdtsc() - start) / (g_tsc_hz / 1000) >= o->repeat_ms)
            break;
        if (o->repeat_until_fail && failed)
            break;
    }
    if (o->noise)
        print_noise_counts();
    for (int i = 0; i < count; i++) {
        struct repeat_state *st = &g_states[i];
        if (repeating)
            lhv_printf("REPEAT %s: rounds=%u good=%u skip=%u error=%u bad=%u worst=%s worst_round=%u first_fail=%u\n",
                       st->def->id, st->rounds, st->good, st->skip, st->error, st->bad, verdict_name(st->worst),
                       st->worst_round, st->first_fail);
        runner_report(st->def, st->worst, st->reason);
    }
    return true;
}
