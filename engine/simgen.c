/* simgen.c - the synthetic payments world (see simgen.h).
 *
 * Cards belong to accounts with a home country, a usual device and IP, a usual merchant category and a typical
 * ticket size; legitimate traffic follows those habits, with the noise real traffic has (travel, foreign web
 * shops, VPNs, the occasional big purchase or gambling site, card-present payments that carry no IP or device).
 * Fraud patterns break the habits the way fraud teams see it happen: card testing (bursts of tiny online
 * amounts from bots), account takeover (a new device in another country, large amounts, mostly at night),
 * skimmed cards used abroad (high-value card-present payments and cash withdrawals in another country) and
 * merchant-category abuse. The design decision: every fraud signal also occurs, more rarely, in legitimate
 * traffic, so a model trained on this world has to weigh evidence instead of learning one give-away field.
 *
 * Traffic is diurnal: the arrival rate and the share of fraud depend on the hour of the simulated clock (UTC,
 * read as the population's local time). Everything is drawn from one xorshift stream seeded from cfg.seed, so a
 * seed reproduces the same transactions on every machine. */
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
    int left; /* remaining transactions of an ongoing pattern */
    int card;
    const char *label;
} burst;

struct simgen {
    simgen_cfg cfg;
    uint64_t rng;
    uint64_t seq;
    int64_t clock_ms;
    double fraud_start; /* probability that a transaction starts a fraud episode (before the hour factor) */
    card *cards;
    burst burst;
    /* storage for the transaction handed out */
    char txn_id[48], currency[4], merchant_id[24], merchant_country[4], ip[20], ip_country[4], device_id[24];
};

static const char *countries[] = {"DE", "FR", "NL", "ES", "IT", "GB", "US", "PL", "SE", "BE"};
static const char *risky_countries[] = {"NG", "RU", "BR", "ID", "VN"};
static const int common_mccs[] = {5411, 5812, 5541, 5912, 5311, 4121, 5999, 5732, 4111, 5814};
static const int risky_mccs[] = {7995, 6051, 5967, 4829, 6211};
static const int ato_mccs[] = {5732, 5944, 4829, 5947, 5999}; /* electronics, jewellery, transfers, gift cards */
static const int testing_mccs[] = {5999, 5815, 5818};           /* small online merchants, digital goods */

/* Relative arrival rate by hour of day, and how much more likely a transaction is to start a fraud episode in
 * that hour. Night traffic is thin and fraud-heavy; the evening is the legitimate peak. */
static const double hour_rate[24] = {0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.4, 0.7, 1.0, 1.1, 1.2, 1.3,
                                     1.4, 1.3, 1.2, 1.2, 1.3, 1.5, 1.7, 1.8, 1.6, 1.2, 0.8, 0.4};
static const double hour_fraud[24] = {3.0, 3.5, 4.0, 4.0, 3.5, 2.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0,
                                      1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.5, 2.0};

/* Episodes: card testing 5-15 transactions, account takeover 1-4, the other two 1: about 3.6 on average. */
#define MEAN_EPISODE_LEN ((10.0 + 2.5 + 1.0 + 1.0) / 4.0)

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
static bool chance(simgen *g, double p) { return unif(g) < p; }

/* A country other than home, from the usual set (or the risky one when risky is set). */
static const char *other_country(simgen *g, const char *home, bool risky)
{
    if (risky)
        return risky_countries[pick(g, (int)ARRAY_LEN(risky_countries))];
    for (;;) {
        const char *c = countries[pick(g, (int)ARRAY_LEN(countries))];
        if (strcmp(c, home) != 0)
            return c;
    }
}

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
    /* fraud_rate is the share of transactions, and an episode has several: start episodes less often */
    g->fraud_start = g->cfg.fraud_rate / MEAN_EPISODE_LEN;
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

static int hour_of(int64_t ms) { return (int)((ms / 1000 / 3600) % 24); }

/* Advances the simulated clock by an exponential gap whose rate follows the hour of day. hour_rate averages
 * about 0.9 over a day, so mean_gap_ms stays close to the mean gap over a whole day. */
static void advance_clock(simgen *g)
{
    double rate = hour_rate[hour_of(g->clock_ms)];
    g->clock_ms += (int64_t)(-log(1.0 - unif(g)) * g->cfg.mean_gap_ms / rate) + 1;
}

/* The transaction being built, before it is copied into the protobuf struct. */
typedef struct draft {
    int64_t amount;
    int mcc;
    Verdict__V1__Channel channel;
    bool card_present; /* pos and atm: no customer IP or device */
} draft;

static void legit(simgen *g, const card *c, draft *d)
{
    double ch = unif(g);
    d->channel = ch < 0.48   ? VERDICT__V1__CHANNEL__CHANNEL_ECOM
                 : ch < 0.9  ? VERDICT__V1__CHANNEL__CHANNEL_POS
                 : ch < 0.96 ? VERDICT__V1__CHANNEL__CHANNEL_ATM
                             : VERDICT__V1__CHANNEL__CHANNEL_MOTO;
    d->amount = (int64_t)((double)c->typical_minor * exp((unif(g) - 0.5) * 1.4));
    d->mcc = chance(g, 0.5) ? c->home_mcc : common_mccs[pick(g, (int)ARRAY_LEN(common_mccs))];

    if (chance(g, 0.015))
        d->amount *= 5 + pick(g, 16); /* a new laptop, a holiday */
    if (chance(g, 0.015))
        d->mcc = risky_mccs[pick(g, (int)ARRAY_LEN(risky_mccs))]; /* legitimate gambling, crypto, transfers */
    if (chance(g, 0.03)) {
        d->amount = 100 + pick(g, 400); /* parking, transit, a coffee */
        d->mcc = chance(g, 0.5) ? 4111 : 4121;
    }

    switch (d->channel) {
    case VERDICT__V1__CHANNEL__CHANNEL_POS:
        d->card_present = true;
        if (chance(g, 0.05)) /* travelling */
            str_copy(g->merchant_country, sizeof g->merchant_country, other_country(g, c->country, chance(g, 0.05)));
        break;
    case VERDICT__V1__CHANNEL__CHANNEL_ATM:
        d->card_present = true;
        d->mcc = 6011;
        d->amount = (int64_t)(2 + pick(g, 20)) * 2000; /* 40 .. 420 in round twenties */
        if (chance(g, 0.05))
            str_copy(g->merchant_country, sizeof g->merchant_country, other_country(g, c->country, false));
        break;
    case VERDICT__V1__CHANNEL__CHANNEL_MOTO:
        d->mcc = chance(g, 0.5) ? 4722 : 5962; /* travel agencies, phone sales */
        d->amount *= 2;
        break;
    default: /* ecom */
        if (chance(g, 0.12)) /* a foreign web shop */
            str_copy(g->merchant_country, sizeof g->merchant_country, other_country(g, c->country, false));
        if (chance(g, 0.04)) /* a VPN or a trip */
            str_copy(g->ip_country, sizeof g->ip_country, other_country(g, c->country, chance(g, 0.1)));
        if (chance(g, 0.03)) /* a second phone, a new laptop */
            snprintf(g->device_id, sizeof g->device_id, "dev_%08llx", (unsigned long long)(rnd(g) & 0xffffffff));
        break;
    }
}

static void fraud(simgen *g, const card *c, const char *label, draft *d)
{
    if (strcmp(label, "card_testing") == 0) {
        d->channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
        d->amount = 50 + pick(g, 250);
        d->mcc = testing_mccs[pick(g, (int)ARRAY_LEN(testing_mccs))];
        snprintf(g->device_id, sizeof g->device_id, "dev_bot%03d", pick(g, 50));
        snprintf(g->ip, sizeof g->ip, "203.0.113.%d", pick(g, 254) + 1);
        if (chance(g, 0.6))
            str_copy(g->ip_country, sizeof g->ip_country, other_country(g, c->country, chance(g, 0.5)));
        if (chance(g, 0.6))
            str_copy(g->merchant_country, sizeof g->merchant_country, chance(g, 0.5) ? "US" : "GB");
    } else if (strcmp(label, "account_takeover") == 0) {
        d->channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
        snprintf(g->device_id, sizeof g->device_id, "dev_ato%05d", pick(g, 100000));
        str_copy(g->ip_country, sizeof g->ip_country, other_country(g, c->country, chance(g, 0.7)));
        snprintf(g->ip, sizeof g->ip, "198.51.%d.%d", pick(g, 256), pick(g, 254) + 1);
        d->amount = c->typical_minor * (3 + pick(g, 8));
        d->mcc = ato_mccs[pick(g, (int)ARRAY_LEN(ato_mccs))];
        if (chance(g, 0.3))
            str_copy(g->merchant_country, sizeof g->merchant_country, other_country(g, c->country, false));
    } else if (strcmp(label, "cross_border_high_value") == 0) {
        /* a skimmed card used abroad: card present, so no IP or device */
        d->card_present = true;
        str_copy(g->merchant_country, sizeof g->merchant_country, other_country(g, c->country, chance(g, 0.6)));
        if (chance(g, 0.3)) {
            d->channel = VERDICT__V1__CHANNEL__CHANNEL_ATM;
            d->mcc = 6011;
            d->amount = (int64_t)(10 + pick(g, 41)) * 2000; /* 200 .. 1000 in round twenties */
        } else {
            d->channel = VERDICT__V1__CHANNEL__CHANNEL_POS;
            d->mcc = chance(g, 0.5) ? 5944 : 5732;
            d->amount = 150000 + pick(g, 500000);
        }
    } else { /* risky_mcc */
        d->channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
        d->mcc = risky_mccs[pick(g, (int)ARRAY_LEN(risky_mccs))];
        d->amount = c->typical_minor * (2 + pick(g, 10));
        if (chance(g, 0.3))
            str_copy(g->ip_country, sizeof g->ip_country, other_country(g, c->country, chance(g, 0.5)));
    }
}

const char *simgen_next(simgen *g, Transaction *t)
{
    verdict__v1__transaction__init(t);
    g->seq++;
    advance_clock(g);

    const char *label = "legit";
    int ci;
    if (g->burst.left > 0) {
        g->burst.left--;
        ci = g->burst.card;
        label = g->burst.label;
    } else if (unif(g) < g->fraud_start * hour_fraud[hour_of(g->clock_ms)]) {
        static const char *patterns[] = {"card_testing", "account_takeover", "cross_border_high_value",
                                         "risky_mcc"};
        ci = pick(g, g->cfg.cards);
        label = patterns[pick(g, (int)ARRAY_LEN(patterns))];
        if (strcmp(label, "card_testing") == 0)
            g->burst = (burst){.left = 4 + pick(g, 11), .card = ci, .label = label};
        else if (strcmp(label, "account_takeover") == 0)
            g->burst = (burst){.left = pick(g, 4), .card = ci, .label = label};
    } else {
        ci = pick(g, g->cfg.cards);
    }
    const card *c = &g->cards[ci];

    snprintf(g->txn_id, sizeof g->txn_id, "t%llx-%08llu", (unsigned long long)(g->cfg.seed & 0xffff),
             (unsigned long long)g->seq);
    str_copy(g->currency, sizeof g->currency, "EUR");
    str_copy(g->merchant_country, sizeof g->merchant_country, c->country);
    str_copy(g->ip, sizeof g->ip, c->ip);
    str_copy(g->ip_country, sizeof g->ip_country, c->country);
    str_copy(g->device_id, sizeof g->device_id, c->device_id);
    snprintf(g->merchant_id, sizeof g->merchant_id, "m_%04d", pick(g, 400));

    draft d = {0};
    if (simgen_is_fraud(label))
        fraud(g, c, label, &d);
    else
        legit(g, c, &d);

    t->txn_id = g->txn_id;
    t->created_at_ms = g->clock_ms;
    t->amount_minor = d.amount < 1 ? 1 : d.amount;
    t->currency = g->currency;
    t->card_id = (char *)c->card_id;
    t->account_id = (char *)c->account_id;
    t->merchant_id = g->merchant_id;
    t->mcc = (uint32_t)d.mcc;
    t->merchant_country = g->merchant_country;
    t->card_country = (char *)c->country;
    t->channel = d.channel;
    t->email_hash = (char *)c->email_hash;
    t->card_bin = (char *)c->bin;
    if (!d.card_present) {
        t->ip = g->ip;
        t->ip_country = g->ip_country;
        t->device_id = g->device_id;
    } /* else they stay the empty strings of verdict__v1__transaction__init */
    return label;
}
