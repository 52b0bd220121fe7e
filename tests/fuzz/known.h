/* known.h - lets a fuzz run step over a defect that is already reported and fixed on another branch, so the
 * run can look for new ones meanwhile: VERDICT_FUZZ_KNOWN=9,17 skips the checks tagged with those item numbers
 * of issue 14 (each target says which checks carry a tag). Unset, every check runs: that is the default of
 * `make fuzz`, and the state the project must pass once the fixes are merged. */
#ifndef VERDICT_FUZZ_KNOWN_H
#define VERDICT_FUZZ_KNOWN_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline bool fuzz_known(int item)
{
    const char *k = getenv("VERDICT_FUZZ_KNOWN");
    char want[16];
    snprintf(want, sizeof want, ",%d,", item);
    char list[128];
    snprintf(list, sizeof list, ",%s,", k ? k : "");
    return strstr(list, want) != NULL;
}

#endif
