/* simgen.c - the synthetic payments world (see simgen.h).
 *
 * Cards belong to accounts with a home country, a usual device and IP, and a typical ticket size; legitimate
 * traffic follows those habits. Fraud patterns break them in the ways fraud teams see: card testing (bursts
 * of tiny amounts), account takeover (a new device and country), high-value cross-border, risky MCCs. */
#include "simgen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct card {
    char card_id[24];
    char account_id[24];
    char device_id[24];
    char ip[20];
    char email_hash[20];
    char bin[16];
    const char *country;
    int64_t typical_minor;
    int home_mcc;
} card;

typedef struct burst {
    int left;           /* remaining transactions of an ongoing pattern */
    int card;
    const char *label;
} burst;

struct simgen {
    simgen_cfg cfg;
    uint64_t rng;
    uint64_t seq;
    int64_t clock_ms;
    card *cards;
    burst burst;
    /* storage for the transaction handed out */
    char txn_id[48], currency[4], merchant_id[24], merchant_country[4], ip[20], ip_country[4], device_id[24];
};

static const char *countries[] = {"DE", "FR", "NL", "ES", "IT", "GB", "US", "PL", "SE", "BE"};
static const char *risky_countries[] = {"NG", "RU", "BR", "ID", "VN"};
static const int common_mccs[] = {5411, 5812, 5541, 5912, 5311, 4121, 5999, 5732, 4111, 5814};
static const int risky_mccs[] = {7995, 6051, 5967, 4829, 6211};

static uint64_t rnd(simgen *g)
{
    /* xorshift64* */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 2685821657736338717ULL;
}

static double unif(simgen *g) { return (double)(rnd(g) >> 11) / 9007199254740992.0; }
static int pick(simgen *g, int n) { return (int)(rnd(g) % (uint64_t)n); }

void simgen_defaults(simgen_cfg *cfg)
{
    if (!cfg->seed)
        cfg->seed = 42;
    if (!cfg->cards)
        cfg->cards = 2000;
    if (!cfg->start_ms)
        cfg->start_ms = 1767225600000LL; /* 2026-01-01T00:00:00Z */
    if (cfg->mean_gap_ms <= 0)
        cfg->mean_gap_ms = 500;
    if (cfg->fraud_rate <= 0)
        cfg->fraud_rate = 0.02;
}

simgen *simgen_create(const simgen_cfg *cfg_in)
{
    simgen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->cfg = *cfg_in;
    simgen_defaults(&g->cfg);
    g->rng = g->cfg.seed * 0x9E3779B97F4A7C15ULL + 1;
    g->clock_ms = g->cfg.start_ms;
    g->cards = calloc((size_t)g->cfg.cards, sizeof *g->cards);
    if (!g->cards) {
        free(g);
        return NULL;
    }
    for (int i = 0; i < g->cfg.cards; i++) {
        card *c = &g->cards[i];
        snprintf(c->card_id, sizeof c->card_id, "tok_c%06d", i);
        snprintf(c->account_id, sizeof c->account_id, "acct_%06d", i / 2 + (i % 7 == 0 ? 1 : 0));
        snprintf(c->device_id, sizeof c->device_id, "dev_%08llx", (unsigned long long)(rnd(g) & 0xffffffff));
        snprintf(c->ip, sizeof c->ip, "10.%d.%d.%d", pick(g, 256), pick(g, 256), pick(g, 254) + 1);
        snprintf(c->email_hash, sizeof c->email_hash, "em_%012llx",
                 (unsigned long long)(rnd(g) & 0xffffffffffffULL));
        snprintf(c->bin, sizeof c->bin, "%d%05d", 4 + pick(g, 2), pick(g, 100000));
        c->country = countries[pick(g, (int)ARRAY_LEN(countries))];
        c->typical_minor = (int64_t)(exp(3.0 + unif(g) * 2.5) * 100); /* about 20 .. 250 major units */
        c->home_mcc = common_mccs[pick(g, (int)ARRAY_LEN(common_mccs))];
    }
    return g;
}

void simgen_destroy(simgen *g)
{
    if (!g)
        return;
    free(g->cards);
    free(g);
}

bool simgen_is_fraud(const char *label) { return label && strcmp(label, "legit") != 0; }

const char *simgen_next(simgen *g, Transaction *t)
{
    verdict__v1__transaction__init(t);
    g->seq++;
    g->clock_ms += (int64_t)(-log(1.0 - unif(g)) * g->cfg.mean_gap_ms) + 1;

    const char *label = "legit";
    int ci;
    if (g->burst.left > 0) {
        g->burst.left--;
        ci = g->burst.card;
        label = g->burst.label;
    } else if (unif(g) < g->cfg.fraud_rate) {
        ci = pick(g, g->cfg.cards);
        static const char *patterns[] = {"card_testing", "account_takeover", "cross_border_high_value",
                                         "risky_mcc"};
        label = patterns[pick(g, (int)ARRAY_LEN(patterns))];
        if (strcmp(label, "card_testing") == 0) {
            g->burst = (burst){.left = 4 + pick(g, 8), .card = ci, .label = label};
        } else if (strcmp(label, "account_takeover") == 0) {
            g->burst = (burst){.left = 1 + pick(g, 3), .card = ci, .label = label};
        }
    } else {
        ci = pick(g, g->cfg.cards);
    }
    card *c = &g->cards[ci];

    snprintf(g->txn_id, sizeof g->txn_id, "t%llx-%08llu", (unsigned long long)(g->cfg.seed & 0xffff),
             (unsigned long long)g->seq);
    str_copy(g->currency, sizeof g->currency, "EUR");
    str_copy(g->merchant_country, sizeof g->merchant_country, c->country);
    str_copy(g->ip, sizeof g->ip, c->ip);
    str_copy(g->ip_country, sizeof g->ip_country, c->country);
    str_copy(g->device_id, sizeof g->device_id, c->device_id);
    snprintf(g->merchant_id, sizeof g->merchant_id, "m_%04d", pick(g, 400));

    int64_t amount = (int64_t)((double)c->typical_minor * exp((unif(g) - 0.5) * 1.2));
    int mcc = unif(g) < 0.5 ? c->home_mcc : common_mccs[pick(g, (int)ARRAY_LEN(common_mccs))];
    Verdict__V1__Channel channel = unif(g) < 0.55 ? VERDICT__V1__CHANNEL__CHANNEL_ECOM
                                                  : VERDICT__V1__CHANNEL__CHANNEL_POS;

    if (strcmp(label, "card_testing") == 0) {
        amount = 50 + pick(g, 250);
        channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
        mcc = 5999;
        snprintf(g->device_id, sizeof g->device_id, "dev_bot%03d", pick(g, 50));
    } else if (strcmp(label, "account_takeover") == 0) {
        snprintf(g->device_id, sizeof g->device_id, "dev_ato%05d", pick(g, 100000));
        const char *rc = risky_countries[pick(g, (int)ARRAY_LEN(risky_countries))];
        str_copy(g->ip_country, sizeof g->ip_country, rc);
        snprintf(g->ip, sizeof g->ip, "198.51.%d.%d", pick(g, 256), pick(g, 254) + 1);
        amount = c->typical_minor * (3 + pick(g, 8));
        channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
    } else if (strcmp(label, "cross_border_high_value") == 0) {
        str_copy(g->merchant_country, sizeof g->merchant_country,
                 risky_countries[pick(g, (int)ARRAY_LEN(risky_countries))]);
        amount = 150000 + pick(g, 500000);
    } else if (strcmp(label, "risky_mcc") == 0) {
        mcc = risky_mccs[pick(g, (int)ARRAY_LEN(risky_mccs))];
        amount = c->typical_minor * (2 + pick(g, 10));
        channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
    }

    t->txn_id = g->txn_id;
    t->created_at_ms = g->clock_ms;
    t->amount_minor = amount < 1 ? 1 : amount;
    t->currency = g->currency;
    t->card_id = c->card_id;
    t->account_id = c->account_id;
    t->merchant_id = g->merchant_id;
    t->mcc = (uint32_t)mcc;
    t->merchant_country = g->merchant_country;
    t->card_country = (char *)c->country;
    t->ip = g->ip;
    t->ip_country = g->ip_country;
    t->device_id = g->device_id;
    t->channel = channel;
    t->email_hash = c->email_hash;
    t->card_bin = c->bin;
    return label;
}
