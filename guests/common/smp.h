/* What a guest with several harts needs: a spinlock on LR/SC, atomic adds,
   and how many harts the machine has (from the device tree).

   LR/SC and AMOs are the "A" extension (unprivileged spec v20191213, chapter
   8): lr.w registers a reservation on a word, sc.w stores only if the
   reservation still holds and writes 0 to its destination on success. The
   .aq/.rl bits order the lock's critical section (8.2): acquire on the lock's
   LR, release on the store that frees it. */
#ifndef SMP_H
#define SMP_H

#include <stdint.h>
#include "fdt.h"

/* The harts the guests handle; every image's 16 KiB stack is split in eight. */
#define SMP_MAX_HARTS 8
#define SMP_STACK_BYTES 2048

typedef volatile uint32_t spinlock_t;

static inline void spin_lock(spinlock_t *lock)
{
    uint32_t seen, failed;
    __asm__ volatile("1:  lr.w.aq %0, (%2)\n"
                     "    bnez    %0, 1b\n"   /* held: wait for a 0 */
                     "    sc.w    %1, %3, (%2)\n"
                     "    bnez    %1, 1b\n"   /* reservation lost: start over */
                     : "=&r"(seen), "=&r"(failed)
                     : "r"(lock), "r"(1u)
                     : "memory");
}

static inline void spin_unlock(spinlock_t *lock)
{
    __asm__ volatile("amoswap.w.rl zero, zero, (%0)" : : "r"(lock) : "memory");
}

static inline void atomic_add64(volatile uint64_t *p, uint64_t v)
{
    __asm__ volatile("amoadd.d zero, %1, (%0)" : : "r"(p), "r"(v) : "memory");
}

/* amoadd.w with both ordering bits: everything before it is visible to a
   hart that sees the new count (8.4). */
static inline void atomic_add32_aqrl(volatile uint32_t *p, uint32_t v)
{
    __asm__ volatile("amoadd.w.aqrl zero, %1, (%0)" : : "r"(p), "r"(v) : "memory");
}

static inline uint32_t load_acquire32(volatile uint32_t *p)
{
    uint32_t v = *p;
    __asm__ volatile("fence r, rw" : : : "memory");
    return v;
}

static inline void store_release32(volatile uint32_t *p, uint32_t v)
{
    __asm__ volatile("fence rw, w" : : : "memory");
    *p = v;
}

/* The harts the device tree at dtb lists, into cpus[0..SMP_MAX_HARTS): its
   /cpus/cpu@N nodes are the only ones whose `compatible` is exactly "riscv" on
   virt (QEMU and labvmm), and their `reg` is the hart id. Returns how many,
   or -1 without a tree, with none, with more than SMP_MAX_HARTS, or with a
   hart id of SMP_MAX_HARTS or more (the guests have no stack for it). */
static inline int smp_find_harts(uint64_t dtb, struct fdt_device cpus[SMP_MAX_HARTS + 1])
{
    int harts = fdt_find_compatible(dtb, "riscv", cpus, SMP_MAX_HARTS + 1);
    if (harts < 1 || harts > SMP_MAX_HARTS)
        return -1;
    for (int i = 0; i < harts; i++)
        if (cpus[i].base >= SMP_MAX_HARTS)
            return -1;
    return harts;
}

#endif
