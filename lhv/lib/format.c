/* The one formatter behind every line LHV prints. */
#include "lib/lib.h"

struct out {
    char *buf;
    size_t size;
    size_t len;
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, bool left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left)
        while (fill-- > 0)
            put(o, pad);
    for (size_t i = 0; i < n; i++)
        put(o, s[i]);
    if (left)
        while (fill-- > 0)
            put(o, ' ');
}

/* Unsigned 64-bit to text without 64-bit division helpers being a problem on i386:
 * libgcc provides them, but keeping this loop simple keeps the code path obvious. */
static size_t u64_to_text(uint64_t v, unsigned base, bool upper, char *tmp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n / 2; i++) {
        char c = tmp[i];
        tmp[i] = tmp[n - 1 - i];
        tmp[n - 1 - i] = c;
    }
    return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        bool left = false;
        char pad = ' ';
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        int width = 0, precision = -1;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        if (*fmt == '.') {
            fmt++;
            precision = 0;
            if (*fmt == '*') {
                precision = va_arg(ap, int);
                fmt++;
            }
            while (*fmt >= '0' && *fmt <= '9')
                precision = precision * 10 + (*fmt++ - '0');
        }
        int longs = 0;
        bool size_t_arg = false;
        while (*fmt == 'l')
            longs++, fmt++;
        if (*fmt == 'z')
            size_t_arg = true, fmt++;
        char tmp[24];
        uint64_t uv;
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t sv = longs >= 2 ? va_arg(ap, long long)
                       : longs == 1 ? va_arg(ap, long)
                       : size_t_arg ? (int64_t)va_arg(ap, size_t)
                                    : va_arg(ap, int);
            size_t n = 0;
            if (sv < 0) {
                tmp[0] = '-';
                n = 1 + u64_to_text((uint64_t)(-(sv + 1)) + 1, 10, false, tmp + 1);
            } else {
                n = u64_to_text((uint64_t)sv, 10, false, tmp);
            }
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
            uv = longs >= 2 ? va_arg(ap, unsigned long long)
               : longs == 1 ? va_arg(ap, unsigned long)
               : size_t_arg ? va_arg(ap, size_t)
                            : va_arg(ap, unsigned int);
            put_padded(&o, tmp, u64_to_text(uv, *fmt == 'u' ? 10 : 16, *fmt == 'X', tmp), width, left,
                       pad);
            break;
        case 'p':
            uv = (uintptr_t)va_arg(ap, void *);
            put(&o, '0');
            put(&o, 'x');
            put_padded(&o, tmp, u64_to_text(uv, 16, false, tmp), width, left, pad);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            size_t n = 0;
            while (s[n] && (precision < 0 || n < (size_t)precision))
                n++; /* with a precision the string need not be terminated */
            put_padded(&o, s, n, width, left, ' ');
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            put_padded(&o, tmp, 1, width, left, ' ');
            break;
        case '%':
            put(&o, '%');
            break;
        default:
            /* An unknown conversion is a bug in LHV itself: make it visible in the output. */
            put(&o, '%');
            put(&o, '?');
            if (!*fmt)
                fmt--;
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
