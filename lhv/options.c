/*
 * The option table and the command line. The table is placed in .lhv_options so the harness can
 * read it out of the ELF and check LHV_OPT.md against it. Nothing is guessed: an unknown word, a
 * malformed number, an unknown or unimplemented bit stops the run with a message.
 */
#include "options.h"

#define OPTION(NAME, IMPL, DEF, MEANING)                                                    \
    static const struct lhv_option_def lhv_option_##NAME                                    \
        __attribute__((used, section(".lhv_options"), aligned(8))) = { #NAME, LHV_OPT_##NAME, IMPL, DEF, MEANING }

OPTION(USE_MSR_LOAD, 1, 1, "VM-entry/VM-exit MSR load and store lists (selects msr_lists)");
OPTION(NO_EFLAGS_IF, 1, 0, "L2 guests run with RFLAGS.IF=0");
OPTION(USE_EPT, 1, 1, "EPT (selects ept_*, idt_vectoring, vmfunc_eptp_switch, pae_pdpte_reload)");
OPTION(USE_SWITCH_EPT, 1, 1, "switch between EPT roots, INVEPT (needs 0x4; selects ept_switch)");
OPTION(USE_VPID, 1, 0, "L2 guests run with VPID 1 (scenarios SKIP without VPID)");
OPTION(USE_UNRESTRICTED_GUEST, 1, 1, "unrestricted guest (with 0x4 selects ug_paging_toggle, pae_cr3_unmapped)");
OPTION(USER_MODE, 1, 0, "L1 code at CPL 3 between VM entries (selects l1_user_mode; not with 0x2)");
OPTION(USE_VMXOFF, 1, 1, "VMXOFF/VMXON cycle and relaunch in vmx_lifecycle");
OPTION(USE_LARGE_PAGE, 1, 0, "2 MiB EPT pages everywhere (needs 0x4 and 2 MiB EPT pages)");
OPTION(NO_INTERRUPT, 1, 0, "no periodic timer; the watchdog uses one LAPIC one-shot per scenario");
OPTION(USE_MSRBITMAP, 1, 1, "MSR bitmap: exits exactly as the bitmap says (selects msr_bitmap)");
OPTION(NESTED_USER_MODE, 1, 0, "L2 enters CPL 3; exits from there (selects nested_user_mode; not with 0x2)");
OPTION(USE_PS2_MOUSE, 1, 0, "PS/2 mouse interrupts through the I/O APIC (selects ps2_mouse)");
OPTION(NO_VGA_ART, 1, 0, "do not draw on the screen (serial only)");

/* Bounds of .lhv_options, from the linker script. */
extern const struct lhv_option_def lhv_options_start[], lhv_options_end[];

uint64_t lhv_default_opt(void)
{
    uint64_t opt = 0;
    for (const struct lhv_option_def *o = lhv_options_start; o < lhv_options_end; o++)
        if (o->is_default)
            opt |= o->value;
    return opt;
}

bool options_validate_opt(uint64_t opt, char *error, size_t error_size)
{
    uint64_t known = 0;
    for (const struct lhv_option_def *o = lhv_options_start; o < lhv_options_end; o++) {
        known |= o->value;
        if ((opt & o->value) && !o->implemented) {
            snprintf(error, error_size, "lhv_opt bit 0x%llx %s is not implemented in this LHV",
                     (unsigned long long)o->value, o->name);
            return false;
        }
    }
    if (opt & ~known) {
        snprintf(error, error_size, "lhv_opt=0x%llx has unknown bits 0x%llx", (unsigned long long)opt,
                 (unsigned long long)(opt & ~known));
        return false;
    }
    static const uint64_t needs_guest_if[] = { LHV_OPT_USER_MODE, LHV_OPT_NESTED_USER_MODE };
    for (size_t i = 0; i < ARRAY_SIZE(needs_guest_if); i++)
        if ((opt & needs_guest_if[i]) && (opt & LHV_OPT_NO_EFLAGS_IF)) {
            snprintf(error, error_size, "lhv_opt bit 0x%llx cannot be combined with 0x2 NO_EFLAGS_IF (user code runs with "
                     "interrupts on, as in the original LHV)", (unsigned long long)needs_guest_if[i]);
            return false;
        }
    static const uint64_t needs_ept[] = { LHV_OPT_USE_SWITCH_EPT, LHV_OPT_USE_LARGE_PAGE };
    for (size_t i = 0; i < ARRAY_SIZE(needs_ept); i++)
        if ((opt & needs_ept[i]) && !(opt & LHV_OPT_USE_EPT)) {
            snprintf(error, error_size, "lhv_opt bit 0x%llx needs 0x4 USE_EPT", (unsigned long long)needs_ept[i]);
            return false;
        }
    return true;
}

static bool value_is(const char *word, size_t len, const char *key, const char **value, size_t *value_len)
{
    size_t k = strlen(key);
    if (len < k || memcmp(word, key, k))
        return false;
    *value = word + k;
    *value_len = len - k;
    return true;
}

/* A decimal or 0x count of at least 1 that fits 32 bits. */
static bool parse_count(const char *key, const char *value, size_t len, uint32_t *out, char *error, size_t error_size)
{
    uint64_t n;
    if (!parse_u64(value, len, &n) || n == 0 || n > 0xffffffffull) {
        snprintf(error, error_size, "malformed %s value '%.*s' (want a count from 1 to 4294967295)", key, (int)len, value);
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

/* noise=nmi,ipi: which kinds of interrupts an AP fires at the BSP while scenarios run. */
static bool parse_noise(const char *value, size_t len, uint32_t *out, char *error, size_t error_size)
{
    *out = 0;
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && value[end] != ',')
            end++;
        size_t n = end - i;
        if (n == 3 && !memcmp(value + i, "nmi", 3))
            *out |= NOISE_NMI;
        else if (n == 3 && !memcmp(value + i, "ipi", 3))
            *out |= NOISE_IPI;
        else if (n) {
            snprintf(error, error_size, "noise=%.*s: unknown kind '%.*s' (known: nmi ipi)", (int)len, value, (int)n,
                     value + i);
            return false;
        }
        i = end + 1;
    }
    if (!*out)
        snprintf(error, error_size, "noise= needs nmi, ipi or both");
    return *out != 0;
}

/* The race-hunting words (lhv/repeat.c); false with *handled when the word is none of them. */
static bool parse_repeat_word(const char *word, size_t len, struct run_options *out, bool *handled, char *error,
                              size_t error_size)
{
    const char *value;
    size_t value_len;
    *handled = true;
    if (value_is(word, len, "repeat=", &value, &value_len))
        return parse_count("repeat=", value, value_len, &out->repeat, error, error_size);
    if (value_is(word, len, "repeat_ms=", &value, &value_len))
        return parse_count("repeat_ms=", value, value_len, &out->repeat_ms, error, error_size);
    if (value_is(word, len, "repeat_until=", &value, &value_len)) {
        if (value_len == 4 && !memcmp(value, "fail", 4))
            return out->repeat_until_fail = true;
        snprintf(error, error_size, "repeat_until=%.*s: only repeat_until=fail is known", (int)value_len, value);
        return false;
    }
    if (value_is(word, len, "noise=", &value, &value_len))
        return parse_noise(value, value_len, &out->noise, error, error_size);
    if (value_is(word, len, "seed=", &value, &value_len)) {
        if (!parse_u64(value, value_len, &out->seed)) {
            snprintf(error, error_size, "malformed seed value '%.*s' (want 0x<hex> or decimal)", (int)value_len, value);
            return false;
        }
        return out->seed_given = true;
    }
    if (value_is(word, len, "apic=", &value, &value_len)) {
        if (value_len == 6 && !memcmp(value, "x2apic", 6))
            return out->x2apic = true;
        snprintf(error, error_size, "apic=%.*s: only apic=x2apic is known", (int)value_len, value);
        return false;
    }
    *handled = false;
    return false;
}

/* page_ms=T: 0 is allowed (no table pages: the final page at once, as under emulators). */
static bool parse_page_ms(const char *value, size_t len, struct run_options *out, char *error, size_t error_size)
{
    uint64_t n;
    if (!parse_u64(value, len, &n) || n > 600000) {
        snprintf(error, error_size, "malformed page_ms= value '%.*s' (want 0 to 600000 ms)", (int)len, value);
        return false;
    }
    out->page_ms = (uint32_t)n;
    return out->page_ms_given = true;
}

static bool parse_word(const char *word, size_t len, struct run_options *out, char *error, size_t error_size)
{
    const char *value;
    size_t value_len;
    bool handled;
    bool ok = parse_repeat_word(word, len, out, &handled, error, error_size);
    if (handled)
        return ok;
    if (value_is(word, len, "lhv_opt=", &value, &value_len)) {
        if (!parse_u64(value, value_len, &out->opt)) {
            snprintf(error, error_size, "malformed lhv_opt value '%.*s' (want 0x<hex> or decimal)", (int)value_len, value);
            return false;
        }
        return options_validate_opt(out->opt, error, error_size);
    }
    if (value_is(word, len, "page_ms=", &value, &value_len))
        return parse_page_ms(value, value_len, out, error, error_size);
    char *dst = NULL;
    size_t size = 0;
    if (value_is(word, len, "tests=", &value, &value_len))
        dst = out->tests, size = sizeof(out->tests);
    else if (value_is(word, len, "inject=", &value, &value_len))
        dst = out->inject, size = sizeof(out->inject);
    else if (value_is(word, len, "selftest=", &value, &value_len))
        dst = out->selftest, size = sizeof(out->selftest);
    if (dst && !value_len) {
        snprintf(error, error_size, "%.*s needs a value", (int)len, word);
        return false;
    }
    if (dst) {
        if (value_len >= size) {
            snprintf(error, error_size, "%.*s value too long", (int)(value - word - 1), word);
            return false;
        }
        memcpy(dst, value, value_len);
        dst[value_len] = 0;
        return true;
    }
    snprintf(error, error_size, "unknown command-line word '%.*s' (known: lhv_opt= tests= inject= selftest= repeat= repeat_ms= repeat_until= noise= seed= apic= page_ms=)", (int)len, word);
    return false;
}

static bool has_equals(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '=')
            return true;
    return false;
}

/* The first word is the kernel's path when GRUB or QEMU put it there: it has no '='. */
bool options_parse(const char *cmdline, struct run_options *out, char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    out->opt = lhv_default_opt();
    bool first = true;
    for (const char *p = cmdline ? cmdline : ""; *p;) {
        while (*p == ' ')
            p++;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        size_t len = (size_t)(p - start);
        if (!len)
            break;
        bool is_path = first && !has_equals(start, len);
        first = false;
        if (!is_path && !parse_word(start, len, out, error, error_size))
            return false;
    }
    return true;
}

/* The options of this run, for every floor that asks lhv_opt() (the VMX floor reads VPID and
 * guest IF from it): set by the runner, the defaults until then. */
static const struct run_options *g_current_options;

void options_set_current(const struct run_options *o) { g_current_options = o; }

uint64_t lhv_opt(void) { return g_current_options ? g_current_options->opt : lhv_default_opt(); }
