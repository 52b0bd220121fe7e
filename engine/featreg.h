/* featreg.h - the feature registry: one table naming every value a rule or the model can read.
 *
 * A feature has a canonical name, a type and a kind that says who computes it. Transaction fields and derived
 * values are built in, with fixed ids; velocity aggregates, list memberships, profile fields and attributes are
 * interned on demand when a rules file or a model names them, so the engine computes only what is used.
 * Rules and the model bind to ids at load time; at run time a feature vector is a flat array of fval indexed by
 * id, filled stage by stage (transaction -> derived -> lists/profiles -> velocity -> model score) with no
 * allocation. String values point into the decoded transaction or a replica and live as long as that message.
 *
 * Canonical names (also usable as XGBoost feature names):
 *   amount_minor, card_id, ..., hour_of_day, cross_border          builtins (see featreg_init)
 *   count(card_id,10m)  sum(amount_minor,card_id,24h)  distinct(card_id,device_id,24h)
 *   in_list(card_id,blocked_cards)   profile.account_age_days   attributes.some_key   score */
#ifndef VERDICT_FEATREG_H
#define VERDICT_FEATREG_H

#include "common.h"

#include <stdbool.h>
#include <stdint.h>

struct Verdict__V1__Transaction;

typedef enum feat_type { FT_NUM = 1, FT_STR = 2, FT_BOOL = 3 } feat_type;

typedef struct fstr {
    const char *ptr;
    uint32_t len;
} fstr;

/* One feature value. present=false means missing (an empty string field, an absent attribute or profile,
 * a list replica that is not loaded); rules and the model each define what missing means for them. */
typedef struct fval {
    uint8_t type; /* feat_type */
    bool present;
    union {
        double num;
        fstr str;
        bool b;
    };
} fval;

typedef enum feat_kind {
    FK_TXN = 1,  /* a Transaction field */
    FK_DERIVED,  /* computed from the transaction alone */
    FK_ATTR,     /* attributes.<key> */
    FK_VELOCITY, /* count/sum/distinct over a window, from velocity state */
    FK_LIST,     /* membership of a field's value in a named list (verdict_lists replica) */
    FK_PROFILE,  /* profile.<field> (verdict_profiles replica, keyed by account_id) */
    FK_MODEL,    /* the model's score */
} feat_kind;

typedef enum vel_agg { VEL_COUNT = 1, VEL_SUM, VEL_DISTINCT } vel_agg;

/* Built-in feature ids. Their order is fixed; interned features follow FEAT_BUILTIN_COUNT. */
enum {
    FEAT_TXN_ID = 0,
    FEAT_CREATED_AT_MS,
    FEAT_AMOUNT_MINOR,
    FEAT_CURRENCY,
    FEAT_CARD_ID,
    FEAT_ACCOUNT_ID,
    FEAT_MERCHANT_ID,
    FEAT_MCC,
    FEAT_MERCHANT_COUNTRY,
    FEAT_CARD_COUNTRY,
    FEAT_IP,
    FEAT_IP_COUNTRY,
    FEAT_DEVICE_ID,
    FEAT_CHANNEL, /* "ecom", "pos", "atm", "moto" */
    FEAT_EMAIL_HASH,
    FEAT_CARD_BIN,
    /* derived */
    FEAT_AMOUNT,          /* major units: amount_minor / 10^exponent(currency) */
    FEAT_HOUR_OF_DAY,     /* 0..23, UTC, from event time */
    FEAT_DAY_OF_WEEK,     /* 0 = Monday .. 6 = Sunday, UTC */
    FEAT_CROSS_BORDER,    /* merchant_country != card_country (both present) */
    FEAT_IP_COUNTRY_MISMATCH, /* ip_country != card_country (both present) */
    FEAT_SCORE,           /* the model's probability, 0..1; missing when the model was skipped */
    /* derived, added after score so earlier ids keep their numbers */
    FEAT_CHANNEL_CODE, /* channel as a number for the model: 1 ecom, 2 pos, 3 atm, 4 moto; missing if unset */
    FEAT_BUILTIN_COUNT
};

#define FEAT_MAX 256
/* Room for the longest canonical name, distinct(attributes.<63>,attributes.<63>,<window>): names are never
 * truncated, so a name identifies its definition. */
#define FEAT_NAME_MAX 192

typedef struct feat_def {
    char name[FEAT_NAME_MAX]; /* canonical name */
    feat_type type;
    feat_kind kind;
    /* FK_VELOCITY */
    vel_agg agg;
    int key_feat;   /* the entity: FEAT_CARD_ID, FEAT_ACCOUNT_ID, FEAT_DEVICE_ID, FEAT_IP, ... */
    int value_feat; /* VEL_SUM: a numeric feature; VEL_DISTINCT: a string feature; VEL_COUNT: -1 */
    int64_t window_ms;
    /* FK_LIST: the list name in arg and the looked-up field in key_feat; FK_PROFILE: the field; FK_ATTR: the key */
    char arg[64];
} feat_def;

typedef struct featreg {
    feat_def defs[FEAT_MAX];
    int n;
} featreg;

/* Fills r with the built-ins. */
void featreg_init(featreg *r);

/* The id of a feature by canonical name (exact match), or -1. */
int featreg_find(const featreg *r, const char *name, size_t len);

/* Interning: returns the id (existing or new, >= 0) or a negative vstatus with a message in e.
 * Velocity keys must be string features; windows must be between 1m and 24h. */
int featreg_velocity(featreg *r, vel_agg agg, int value_feat, int key_feat, int64_t window_ms, verror *e);
int featreg_list(featreg *r, const char *list, size_t list_len, int key_feat, verror *e);
int featreg_profile(featreg *r, const char *field, size_t len, verror *e);
int featreg_attr(featreg *r, const char *key, size_t len, verror *e);

/* Resolves any canonical name, interning it when it is well-formed (used for model feature names). */
int featreg_resolve(featreg *r, const char *name, size_t len, verror *e);

/* The schema of profile fields (a profile is a JSON object in verdict_profiles keyed by account_id). */
feat_type featreg_profile_type(const char *field, size_t len, bool *known);

/* Fills the FK_TXN, FK_DERIVED and FK_ATTR slots of vals from t; every other slot is set missing with its
 * type. event_ms is the event time (the transaction's created_at_ms or the stream time). Allocates nothing;
 * string values point into t. */
void features_from_txn(const featreg *r, const struct Verdict__V1__Transaction *t, int64_t event_ms, fval *vals);

/* Currency exponent (2 for EUR, 0 for JPY, 3 for KWD ...). Unknown currencies default to 2. */
int currency_exponent(const char *code);

#endif
