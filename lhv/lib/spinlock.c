/* Spinlocks shared by all CPUs (the console lock above all). */
#include "lib/lib.h"

void spin_lock(struct spinlock *lock, int cpu)
{
    while (__atomic_exchange_n(&lock->locked, 1, __ATOMIC_ACQUIRE))
        while (lock->locked)
            __asm__ volatile("pause");
    lock->owner_cpu = cpu;
}

void spin_unlock(struct spinlock *lock)
{
    lock->owner_cpu = -1;
    __atomic_store_n(&lock->locked, 0, __ATOMIC_RELEASE);
}

/* Used when a scenario is torn down from an interrupt: it may have been interrupted while
 * printing, and the lock must not stay held by a context that will never run again. */
void spin_unlock_if_owner(struct spinlock *lock, int cpu)
{
    if (lock->locked && lock->owner_cpu == cpu)
        spin_unlock(lock);
}

bool spin_trylock(struct spinlock *lock, int cpu)
{
    if (__atomic_exchange_n(&lock->locked, 1, __ATOMIC_ACQUIRE))
        return false;
    lock->owner_cpu = cpu;
    return true;
}
