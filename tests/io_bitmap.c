/*
 * io_bitmap: L2's IN, OUT, INS and OUTS exit to L1 exactly where the I/O bitmaps (or the
 * unconditional I/O-exiting control) say, with the right exit qualification; and a REP INSB that
 * runs into a page missing from EPT stops there with the iterations done and loses no data.
 *
 * Intel SDM Vol. 3C 25.6.4 "I/O-Bitmap Addresses": bitmap A covers ports 0000H-7FFFH, bitmap B
 * 8000H-FFFFH. 26.1.3 "Instructions That Cause VM Exits Conditionally" (IN, INS, OUT, OUTS): with
 * "use I/O bitmaps" (processor-based bit 25) an access exits iff a bit of any port it touches is
 * set (a word at 7FFFH touches both bitmaps), and an access that wraps around the 16-bit port
 * space (FFFFH and 0000H) exits unconditionally; "unconditional I/O exiting" (bit 24) is ignored
 * then, and alone it makes every I/O instruction exit. 28.2.1, Table 28-5: exit qualification =
 * size-1 in bits 2:0, direction (1 = IN) bit 3, string bit 4, REP bit 5, operand encoding
 * (1 = immediate) bit 6, port in bits 31:16; the instruction length and, for INS/OUTS, the
 * guest-linear address of the memory operand are saved. 28.2.1 and 29.3.3.2: an EPT violation
 * in an iteration of a REP string instruction is fault-like: RCX and RDI count the iterations
 * that completed.
 * Checks: 19 bitmap cases (byte/word/dword IN and OUT with immediate and DX ports, REP INSB, REP
 * OUTSW, OUTSB; the bit of every port an access touches, neighbours that must not count, the
 * A/B span at 7FFFH, the wraps at FFFFH and FFFEH), unconditional exiting with the bitmaps off,
 * no exit with both off; then REP INSB of 300 bytes from CMOS register 0DH (port 71H, not
 * intercepted) into a buffer whose second page L1 removed from EPT.
 * Bugs: CVE-2020-2732 (KVM's instruction emulator ignored L1's I/O bitmap for L2; fixed by
 * e71237d3ff1a and 35a571346a94, "KVM: nVMX: Check IO instruction VM-exit conditions"); Linux
 * KVM bugzilla 216234 (REP INS into a page missing from L1's EPT: after L1 mapped it the buffer
 * held zeros instead of the device data).
 * GOOD: every case exits or not as the SDM says, with qualification, instruction length, RCX and
 * guest-linear address right; one EPT violation at the second page with RCX = 200 and RDI at
 * that page, and after L1 maps it back all 300 bytes hold the port's value.
 * Negative control (inject=io_bitmap): L1 points the bitmap-B field at bitmap A, so a bit of
 * bitmap B (port 8000H) is lost and that access does not exit.
 * Needs: VMX, EPT; I/O bitmaps.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(io_bitmap, LHV_OPT_USE_EPT, "vmx,ept", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, io_bitmap);

#define CALL_PROBE_DONE 0x1fe /* EBX = the probe's EAX afterwards */
#define IN_VALUE 0x13572468u  /* what L1 returns for an intercepted IN */
#define GUEST_EAX 0x11223344u
#define NONE (-1)

#define IO_PROBE(name, insn) #name ":\n    " insn "\n" #name "_end:\n" \
    "    mov %eax, %ebx\n    mov $0x1fe, %eax\n    vmcall\n    ud2\n"
#define IO_LABELS(name) extern const uint8_t name[], name##_end[]
IO_LABELS(io_inb_imm); IO_LABELS(io_outw_imm); IO_LABELS(io_inl_imm); IO_LABELS(io_inb_dx); IO_LABELS(io_inw_dx);
IO_LABELS(io_inl_dx); IO_LABELS(io_outb_dx); IO_LABELS(io_outw_dx); IO_LABELS(io_outl_dx);
IO_LABELS(io_rep_insb); IO_LABELS(io_rep_outsw); IO_LABELS(io_outsb);
__asm__(".pushsection .text\n"
        IO_PROBE(io_inb_imm, "inb $0x80, %al")
        IO_PROBE(io_outw_imm, "outw %ax, $0x80")
        IO_PROBE(io_inl_imm, "inl $0x80, %eax")
        IO_PROBE(io_inb_dx, "inb %dx, %al")
        IO_PROBE(io_inw_dx, "inw %dx, %ax")
        IO_PROBE(io_inl_dx, "inl %dx, %eax")
        IO_PROBE(io_outb_dx, "outb %al, %dx")
        IO_PROBE(io_outw_dx, "outw %ax, %dx")
        IO_PROBE(io_outl_dx, "outl %eax, %dx")
        IO_PROBE(io_rep_insb, "rep insb")
        IO_PROBE(io_rep_outsw, "rep outsw")
        IO_PROBE(io_outsb, "outsb")
        ".popsection\n");

struct io_insn {
    const char *name;
    const uint8_t *start, *end;
    uint8_t size;
    bool in, string, rep, imm;
};
#define INSN(label, size, in, string, rep, imm) { #label, label, label##_end, size, in, string, rep, imm }
enum { INB_IMM, OUTW_IMM, INL_IMM, INB_DX, INW_DX, INL_DX, OUTB_DX, OUTW_DX, OUTL_DX, REP_INSB, REP_OUTSW, OUTSB };
static const struct io_insn g_insns[] = {
    INSN(io_inb_imm, 1, true, false, false, true),    INSN(io_outw_imm, 2, false, false, false, true),
    INSN(io_inl_imm, 4, true, false, false, true),    INSN(io_inb_dx, 1, true, false, false, false),
    INSN(io_inw_dx, 2, true, false, false, false),    INSN(io_inl_dx, 4, true, false, false, false),
    INSN(io_outb_dx, 1, false, false, false, false),  INSN(io_outw_dx, 2, false, false, false, false),
    INSN(io_outl_dx, 4, false, false, false, false),  INSN(io_rep_insb, 1, true, true, true, false),
    INSN(io_rep_outsw, 2, false, true, true, false),  INSN(io_outsb, 1, false, true, false, false),
};

enum io_mode { USE_BITMAPS, UNCONDITIONAL, NO_EXITING };

struct io_case {
    int insn;
    uint16_t port;
    int32_t bit;    /* the one port whose bitmap bit is set, NONE for none */
    enum io_mode mode;
    bool exits;
    uintptr_t count; /* RCX for the string forms */
};

/* Ports that run natively are unassigned on a PC (7FFxH, 8000H, FFFxH) or harmless (80H, the
 * POST port); port 0 (DMA) is only reached by the wrapping accesses, which must exit. */
static const struct io_case g_cases[] = {
    { INB_IMM, 0x80, 0x80, USE_BITMAPS, true, 0 },
    { INB_IMM, 0x80, NONE, USE_BITMAPS, false, 0 },
    { OUTW_IMM, 0x80, 0x81, USE_BITMAPS, true, 0 },      /* the second byte of a word */
    { INL_IMM, 0x80, 0x83, USE_BITMAPS, true, 0 },       /* the last byte of a dword */
    { INL_IMM, 0x80, 0x84, USE_BITMAPS, false, 0 },      /* the next port does not count */
    { INB_DX, 0x8000, 0x8000, USE_BITMAPS, true, 0 },    /* first bit of bitmap B */
    { OUTB_DX, 0x8000, 0x7fff, USE_BITMAPS, false, 0 },
    { INW_DX, 0x7fff, 0x7fff, USE_BITMAPS, true, 0 },    /* spans A and B: either bit */
    { INW_DX, 0x7fff, 0x8000, USE_BITMAPS, true, 0 },
    { INW_DX, 0x7fff, NONE, USE_BITMAPS, false, 0 },
    { INW_DX, 0xffff, NONE, USE_BITMAPS, true, 0 },      /* wraps to port 0: always exits */
    { INL_DX, 0xfffe, NONE, USE_BITMAPS, true, 0 },
    { OUTL_DX, 0xfffc, NONE, USE_BITMAPS, false, 0 },    /* ends at FFFFH: no wrap */
    { OUTL_DX, 0xfffc, 0xffff, USE_BITMAPS, true, 0 },   /* last bit of bitmap B */
    { OUTW_DX, 0x7ffe, 0x7fff, USE_BITMAPS, true, 0 },
    { REP_INSB, 0x8001, 0x8001, USE_BITMAPS, true, 5 },
    { REP_OUTSW, 0x7ffe, 0x7fff, USE_BITMAPS, true, 2 },
    { OUTSB, 0x80, 0x80, USE_BITMAPS, true, 1 },
    { REP_OUTSW, 0x7ffc, 0x7ffe, USE_BITMAPS, false, 3 },
    { INB_IMM, 0x80, NONE, UNCONDITIONAL, true, 0 },
    { REP_INSB, 0x8001, NONE, UNCONDITIONAL, true, 5 },
    { INB_IMM, 0x80, NONE, NO_EXITING, false, 0 },
};

static uint8_t g_io_src[64];
static uint8_t g_io_dst[64];
static uint8_t g_ins_buffer[2 * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static uint64_t qualification_of(const struct io_insn *in, uint16_t port)
{
    return (uint64_t)(in->size - 1) | (in->in ? 1u << 3 : 0) | (in->string ? 1u << 4 : 0) |
           (in->rep ? 1u << 5 : 0) | (in->imm ? 1u << 6 : 0) | ((uint64_t)port << 16);
}

static void set_mode(enum io_mode mode)
{
    uint32_t bits = mode == USE_BITMAPS ? PROC_USE_IO_BITMAPS : mode == UNCONDITIONAL ? PROC_UNCOND_IO_EXITING : 0;
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, bits, (PROC_USE_IO_BITMAPS | PROC_UNCOND_IO_EXITING) & ~bits);
}

static void set_port_bit(uint8_t *bitmap_a, uint8_t *bitmap_b, int32_t port)
{
    memset(bitmap_a, 0, PAGE_SIZE);
    memset(bitmap_b, 0, PAGE_SIZE);
    if (port == NONE)
        return;
    uint8_t *bitmap = port & 0x8000 ? bitmap_b : bitmap_a;
    bitmap[(port & 0x7fff) / 8] |= (uint8_t)(1u << (port % 8));
}

static bool check_io_exit(struct scenario *s, struct vcpu *v, const struct io_case *c, const char *what)
{
    const struct io_insn *in = &g_insns[c->insn];
    const struct vmx_exit *e = &v->exit;
    if ((e->reason & 0xffff) == EXIT_VMCALL)
        return scenario_bad(s, "%s: expected an I/O-instruction exit, observed none", what);
    if (!vcpu_check_exit(s, v, EXIT_IO_INSTRUCTION))
        return false;
    uint64_t qual = qualification_of(in, c->port);
    if (e->qualification != qual)
        return scenario_bad(s, "%s: expected exit qualification 0x%llx, observed 0x%llx", what, (unsigned long long)qual,
                            (unsigned long long)e->qualification);
    if (e->guest_rip != (uintptr_t)in->start || e->instruction_length != (uint32_t)(in->end - in->start))
        return scenario_bad(s, "%s: expected rip 0x%llx length %u, observed rip 0x%llx length %u", what,
                            (unsigned long long)(uintptr_t)in->start, (unsigned)(in->end - in->start),
                            (unsigned long long)e->guest_rip, e->instruction_length);
    if (!in->string)
        return true;
    uintptr_t operand = in->in ? (uintptr_t)g_io_dst : (uintptr_t)g_io_src;
    if (v->regs.rcx != c->count)
        return scenario_bad(s, "%s: expected RCX %llu untouched at the exit, observed %llu", what,
                            (unsigned long long)c->count, (unsigned long long)v->regs.rcx);
    return expect_eq(s, "guest-linear address of the string operand", operand, vmcs_read(VMCS_GUEST_LINEAR_ADDRESS));
}

static bool run_case(struct scenario *s, struct vcpu *v, uint8_t *bitmap_a, uint8_t *bitmap_b, const struct io_case *c)
{
    const struct io_insn *in = &g_insns[c->insn];
    char what[96];
    snprintf(what, sizeof(what), "%s port 0x%x, %s %s", in->name, c->port,
             c->mode == USE_BITMAPS ? "bitmap bit" : c->mode == UNCONDITIONAL ? "unconditional exiting" : "no exiting",
             c->mode != USE_BITMAPS ? "" : c->bit == NONE ? "none" : "set");
    set_mode(c->mode);
    set_port_bit(bitmap_a, bitmap_b, c->bit);
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)in->start);
    v->regs.rax = GUEST_EAX;
    v->regs.rdx = c->port;
    v->regs.rcx = c->count;
    v->regs.rsi = (uintptr_t)g_io_src;
    v->regs.rdi = (uintptr_t)g_io_dst;
    if (!vcpu_run_entered(s, v))
        return false;
    if (c->exits) {
        if (!check_io_exit(s, v, c, what))
            return false;
        v->regs.rax = IN_VALUE; /* L1 "emulates" and steps over the instruction */
        vcpu_skip_instruction(v);
        if (!vcpu_run_expect(s, v, EXIT_VMCALL))
            return false;
        if (v->regs.rax != CALL_PROBE_DONE || (uint32_t)v->regs.rbx != IN_VALUE)
            return scenario_bad(s, "%s: expected L2 to go on after the instruction L1 stepped over with EAX 0x%x, "
                                   "observed VMCALL 0x%llx EBX 0x%llx",
                                what, IN_VALUE, (unsigned long long)v->regs.rax, (unsigned long long)v->regs.rbx);
    } else {
        if ((v->exit.reason & 0xffff) == EXIT_IO_INSTRUCTION)
            return scenario_bad(s, "%s: expected no exit, observed an I/O-instruction exit, qualification 0x%llx",
                                what, (unsigned long long)v->exit.qualification);
        if (!vcpu_check_exit(s, v, EXIT_VMCALL) || !expect_eq(s, "L2's VMCALL after the probe", CALL_PROBE_DONE,
                                                               v->regs.rax))
            return false;
        if (in->string && !expect_eq(s, "RCX after a native string I/O", 0, v->regs.rcx))
            return false;
    }
    vcpu_skip_instruction(v);
    return true;
}

/* REP INSB from CMOS register 0DH (a constant) into g_ins_buffer + PAGE_SIZE - HEAD, with the
 * second page missing from EPT. */
#define HEAD 100
#define INS_COUNT 300
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71

static bool rep_ins_into_missing_page(struct scenario *s, struct vcpu *v, struct ept *ept)
{
    outb(CMOS_INDEX, 0x0d);
    uint8_t value = inb(CMOS_DATA);
    uint8_t fill = (uint8_t)~value;
    uintptr_t start = (uintptr_t)g_ins_buffer + PAGE_SIZE - HEAD, second = (uintptr_t)g_ins_buffer + PAGE_SIZE;
    memset(g_ins_buffer, fill, sizeof(g_ins_buffer));
    set_mode(USE_BITMAPS);
    set_port_bit((uint8_t *)(uintptr_t)vmcs_read(VMCS_IO_BITMAP_A), (uint8_t *)(uintptr_t)vmcs_read(VMCS_IO_BITMAP_B),
                 NONE);
    ept_set_4k(ept, second, 0, 0);
    ept_invalidate(ept);
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)io_rep_insb);
    v->regs.rdx = CMOS_DATA;
    v->regs.rcx = INS_COUNT;
    v->regs.rdi = start;
    if (!vcpu_run_expect(s, v, EXIT_EPT_VIOLATION))
        return false;
    if (!expect_eq(s, "EPT violation address (REP INSB)", second, v->exit.guest_physical) ||
        !expect_eq(s, "EPT violation qualification bits 2:0 (a write)", 2, v->exit.qualification & 7) ||
        !expect_eq(s, "guest RIP at the EPT violation", (uintptr_t)io_rep_insb, v->exit.guest_rip) ||
        !expect_eq(s, "RCX at the EPT violation (iterations left)", INS_COUNT - HEAD, v->regs.rcx) ||
        !expect_eq(s, "RDI at the EPT violation", second, v->regs.rdi))
        return false;
    ept_set_4k(ept, second, second, EPT_RWX);
    ept_invalidate(ept);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL) || !expect_eq(s, "L2's VMCALL after REP INSB", CALL_PROBE_DONE, v->regs.rax))
        return false;
    if (!expect_eq(s, "RCX after REP INSB", 0, v->regs.rcx) ||
        !expect_eq(s, "RDI after REP INSB", start + INS_COUNT, v->regs.rdi))
        return false;
    for (int i = 0; i < INS_COUNT; i++)
        if (g_ins_buffer[PAGE_SIZE - HEAD + i] != value)
            return scenario_bad(s, "expected byte %d of the REP INSB buffer to be 0x%x (port 0x71), observed 0x%x", i,
                                value, g_ins_buffer[PAGE_SIZE - HEAD + i]);
    if (g_ins_buffer[PAGE_SIZE - HEAD - 1] != fill || g_ins_buffer[PAGE_SIZE - HEAD + INS_COUNT] != fill)
        return scenario_bad(s, "REP INSB wrote outside its 300 bytes");
    scenario_info(s, "REP INSB: EPT violation at 0x%llx with RCX=%d left, then %d bytes of 0x%02x",
                  (unsigned long long)second, INS_COUNT - HEAD, INS_COUNT, value);
    return true;
}

static void io_bitmap(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.proc, PROC_USE_IO_BITMAPS | PROC_UNCOND_IO_EXITING))
        return (void)scenario_skip(s, "I/O bitmaps not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx",
                                   (unsigned long long)g_vmx.proc);
    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)io_inb_imm, .eptp = ept.eptp };
    cfg.stack_top = guest_stack_top();
    vcpu_init(&v, &cfg);
    uint8_t *bitmap_a = page_alloc(), *bitmap_b = page_alloc();
    vmcs_write(VMCS_IO_BITMAP_A, (uintptr_t)bitmap_a);
    vmcs_write(VMCS_IO_BITMAP_B, (uintptr_t)(s->inject ? bitmap_a : bitmap_b)); /* the lost bitmap B */
    for (size_t i = 0; i < ARRAY_SIZE(g_cases); i++)
        if (!run_case(s, &v, bitmap_a, bitmap_b, &g_cases[i]))
            return;
    if (!rep_ins_into_missing_page(s, &v, &ept))
        return;
    scenario_good(s);
}
