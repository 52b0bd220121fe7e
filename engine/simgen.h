/* simgen.h - a synthetic payments world: realistic card transactions with labelled fraud patterns,
 * reproducible from a seed. Used by the demo, the benchmarks and model training (through `verdict features`,
 * so training features are computed by the engine itself). */
#ifndef VERDICT_SIMGEN_H
#define VERDICT_SIMGEN_H

#include "codec.h"

#include <stdint.h>

typedef struct simgen_cfg {
    uint64_t seed;
    int cards;              /* population size (default 2000) */
    int64_t start_ms;       /* simulated clock start (event time of the first transaction) */
    double mean_gap_ms;     /* mean simulated time between transactions (default 500) */
    double fraud_rate;      /* share of transactions that belong to a fraud pattern (default 0.02) */
} simgen_cfg;

typedef struct simgen simgen;

/* Fills unset (zero) fields of cfg with defaults. */
void simgen_defaults(simgen_cfg *cfg);
simgen *simgen_create(const simgen_cfg *cfg);
void simgen_destroy(simgen *g);

/* Produces the next transaction into *out (initialised by the generator; its strings are owned by g and valid
 * until the next call). Returns the label: "legit" or the name of the fraud pattern. txn_id is unique per
 * generator and seed; created_at_ms is the simulated clock. */
const char *simgen_next(simgen *g, Transaction *out);

/* True when the label names a fraud pattern. */
bool simgen_is_fraud(const char *label);

#endif
