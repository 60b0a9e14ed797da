/* Freestanding helpers: strings, formatting, spinlocks. No libc anywhere in LHV. */
#ifndef LHV_LIB_H
#define LHV_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE 4096u
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))

void *memset(void *dst, int value, size_t len);
void *memcpy(void *dst, const void *src, size_t len);
int memcmp(const void *a, const void *b, size_t len);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);
char *strstr(const char *haystack, const char *needle);
size_t strlcpy(char *dst, const char *src, size_t size);

/* Glob match with '*' and '?' (used by tests=). */
bool glob_match(const char *pattern, const char *text, size_t text_len);

/* Parse an unsigned number: 0x-prefixed hex or decimal; the whole [s, s+len) must be consumed.
 * Returns false on malformed input or overflow of 64 bits. */
bool parse_u64(const char *s, size_t len, uint64_t *out);

/* snprintf-style formatting: %d %i %u %x %X %p %s %c %%, flags '0' '-', width, .precision
 * (strings; also .*), length l ll z. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A spinlock that remembers its owner so an aborted scenario can release what it held. */
struct spinlock {
    volatile uint32_t locked;
    volatile int32_t owner_cpu;
};
void spin_lock(struct spinlock *lock, int cpu);
void spin_unlock(struct spinlock *lock);
void spin_unlock_if_owner(struct spinlock *lock, int cpu);
bool spin_trylock(struct spinlock *lock, int cpu);

/* setjmp/longjmp (lib/jmp.S). */
typedef uintptr_t lhv_jmp_buf[8];
int lhv_setjmp(lhv_jmp_buf buf) __attribute__((returns_twice));
__attribute__((noreturn)) void lhv_longjmp(lhv_jmp_buf buf, int value);

/* A pointer to a fixed physical address (identity mapped). The empty asm hides the constant
 * from gcc, which otherwise treats low addresses as out-of-bounds objects. */
static inline void *phys_ptr(uintptr_t addr)
{
    __asm__("" : "+r"(addr));
    return (void *)addr;
}

#endif
