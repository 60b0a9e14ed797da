/* LHV_OPT bits. Values and names of 0x1..0x2000 are those of the original LHV; the table in
 * options.c (which the harness reads out of the ELF and checks against LHV_OPT.md) says which
 * ones this LHV implements. */
#ifndef LHV_OPTIONS_H
#define LHV_OPTIONS_H

#include "lib/lib.h"

#define LHV_OPT_USE_MSR_LOAD 0x1ull
#define LHV_OPT_NO_EFLAGS_IF 0x2ull
#define LHV_OPT_USE_EPT 0x4ull
#define LHV_OPT_USE_SWITCH_EPT 0x8ull
#define LHV_OPT_USE_VPID 0x10ull
#define LHV_OPT_USE_UNRESTRICTED_GUEST 0x20ull
#define LHV_OPT_USER_MODE 0x40ull
#define LHV_OPT_USE_VMXOFF 0x80ull
#define LHV_OPT_USE_LARGE_PAGE 0x100ull
#define LHV_OPT_NO_INTERRUPT 0x200ull
#define LHV_OPT_USE_MSRBITMAP 0x400ull
#define LHV_OPT_NESTED_USER_MODE 0x800ull
#define LHV_OPT_USE_PS2_MOUSE 0x1000ull
#define LHV_OPT_NO_VGA_ART 0x2000ull

struct lhv_option_def {
    char name[32];
    uint64_t value;
    uint32_t implemented;
    uint32_t is_default;
    char meaning[80];
};
_Static_assert(sizeof(struct lhv_option_def) == 128, "option record layout is read by the harness");

struct run_options {
    uint64_t opt;
    char tests[1024]; /* tests= value, "" for all */
    char inject[256]; /* inject= value: globs of scenario ids, "" for none */
    char selftest[256]; /* selftest= value: one or more self-test names, comma-separated (lhv/selftest.c) */
    /* Race hunting (lhv/repeat.c): the selected scenarios again and again in one boot. */
    uint32_t repeat; /* repeat=N: at most N rounds; 0 when not given */
    uint32_t repeat_ms; /* repeat_ms=T: no new round after T ms; 0 when not given */
    bool repeat_until_fail; /* repeat_until=fail: stop after the round with the first BAD/ERROR/TIMEOUT */
    uint32_t noise; /* noise=nmi,ipi: NOISE_* bits, sent to the BSP from an AP (lhv/arch/noise.c) */
    bool seed_given;
    uint64_t seed; /* seed=: the noise schedule's PRNG seed */
    bool x2apic; /* apic=x2apic: every CPU switches its local APIC to x2APIC mode at start, as a
                  * firmware that hands over in x2APIC mode leaves it (lhv/arch/lapic.c) */
    bool page_ms_given;
    uint32_t page_ms; /* page_ms=T: each table page of the final screen stays T ms (lhv/report.c) */
};

#define NOISE_NMI 1u
#define NOISE_IPI 2u

/* Any of repeat=, repeat_ms=, repeat_until= given: the run goes in rounds. */
static inline bool options_repeating(const struct run_options *o)
{
    return o->repeat || o->repeat_ms || o->repeat_until_fail;
}

uint64_t lhv_default_opt(void);
void options_set_current(const struct run_options *o);
uint64_t lhv_opt(void); /* the LHV_OPT bits of this run */
/* Parses the multiboot command line. On error, writes the message and returns false. */
bool options_parse(const char *cmdline, struct run_options *out, char *error, size_t error_size);
bool options_validate_opt(uint64_t opt, char *error, size_t error_size);

#endif
