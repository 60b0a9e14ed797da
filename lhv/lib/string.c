/* String and memory primitives. gcc may emit calls to memset/memcpy/memcmp itself, so these
 * keep their standard names. */
#include "lib/lib.h"

void *memset(void *dst, int value, size_t len)
{
    unsigned char *d = dst;
    while (len--)
        *d++ = (unsigned char)value;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t len)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (len--)
        *d++ = *s++;
    return dst;
}

int memcmp(const void *a, const void *b, size_t len)
{
    const unsigned char *x = a, *y = b;
    for (; len; len--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

char *strchr(const char *s, int c)
{
    for (; *s; s++)
        if (*s == (char)c)
            return (char *)s;
    return c ? NULL : (char *)s;
}

size_t strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = 0;
    }
    return len;
}

bool glob_match(const char *pattern, const char *text, size_t text_len)
{
    if (!*pattern)
        return text_len == 0;
    if (*pattern == '*') {
        for (size_t skip = 0; skip <= text_len; skip++)
            if (glob_match(pattern + 1, text + skip, text_len - skip))
                return true;
        return false;
    }
    if (!text_len)
        return false;
    if (*pattern == '?' || *pattern == *text)
        return glob_match(pattern + 1, text + 1, text_len - 1);
    return false;
}

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 99;
}

bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    unsigned base = 10;
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        len -= 2;
    }
    if (!len)
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)digit_value(s[i]);
        if (d >= base)
            return false;
        if (value > (UINT64_MAX - d) / base)
            return false;
        value = value * base + d;
    }
    *out = value;
    return true;
}

char *strstr(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    for (; *haystack; haystack++)
        if (!strncmp(haystack, needle, n))
            return (char *)haystack;
    return n ? NULL : (char *)haystack;
}
