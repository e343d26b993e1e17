/* For start code in assembly (.S files, run through the C preprocessor).

   clear_bss zeroes [__bss_start, __bss_end) 8 bytes at a time (sections.ld
   aligns both ends to 8), using t0 and t1 only: C expects zero-initialised
   statics, and the loader need not clear memory the ELF file does not hold
   (NOLOAD .bss). */
#ifndef BSS_H
#define BSS_H

.macro clear_bss
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
.endm

#endif
