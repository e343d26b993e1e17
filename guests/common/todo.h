/* todo(): what a function of an assignment does before the student writes it.

   In the student version of a graded notebook, nbgrader puts
   `todo("function", its parameters...)` where the solution of a %%guest cell
   was (assignments/nbgrader_ext.py). Taking the parameters keeps -Wextra's
   unused-parameter check quiet, so the unfinished kernel still compiles; at
   run time it names the function on the SBI console and shuts the machine
   down as a failure (SRST reason 1: labvmm's exit code 1). For S-mode guests
   on SBI firmware (labvmm, OpenSBI), and M-mode guests without a trap vector
   (labvmm answers their ecalls as SBI calls). */
#ifndef TODO_H
#define TODO_H

#include "csr.h"
#include "sbi.h"

#define SBI_SRST_SHUTDOWN 0
#define SBI_SRST_REASON_FAILURE 1

static inline __attribute__((noreturn)) void todo(const char *function, ...)
{
    sbi_puts("todo: ");
    sbi_puts(function);
    sbi_puts(" is not written yet (replace its todo() with your code)\n");
    sbi_call(SBI_EXT_SRST, 0, SBI_SRST_SHUTDOWN, SBI_SRST_REASON_FAILURE, 0);
    for (;;)
        wfi();
}

#endif
