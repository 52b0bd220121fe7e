/* partition.c - the partition of a key: FNV-1a 32 modulo N, as nats-server's partition() mapping computes it. */
#include "partition.h"

#include "config.h"

#include <stdio.h>
#include <string.h>

uint32_t partition_hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

uint32_t partition_of(const char *key, size_t len, uint32_t n)
{
    return n ? partition_hash(key, len) % n : 0;
}

bool partition_key_ok(const char *key, size_t len)
{
    if (!key || len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        switch (key[i]) {
        case '.': case '*': case '>': case ' ': case '\t': case '\r': case '\n': case '\0':
            return false;
        default:
            break;
        }
    }
    return true;
}

/* TXN's subjects without the trailing ".>": "txn.p" */
static int base_len(const config *c)
{
    size_t n = strlen(c->txn_subjects);
    return n >= 2 ? (int)(n - 2) : 0;
}

void partition_consumer(const config *c, unsigned p, char *out, size_t cap)
{
    snprintf(out, cap, "%s-p%u", c->consumer, p);
}

void partition_filter(const config *c, unsigned p, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s.%u.>", base_len(c), c->txn_subjects, p);
}

bool partition_ingress_subject(const config *c, const char *card_id, char *out, size_t cap)
{
    size_t n = card_id ? strlen(card_id) : 0;
    if (c->partitions <= 0 || !partition_key_ok(card_id, n))
        return false;
    unsigned p = partition_of(card_id, n, (uint32_t)c->partitions);
    int w = snprintf(out, cap, "%.*s.%u.req.%s", base_len(c), c->txn_subjects, p, card_id);
    return w > 0 && (size_t)w < cap;
}

bool partition_is_ingress_subject(const config *c, const char *subj)
{
    int b = base_len(c);
    if (c->partitions <= 0 || !subj || strncmp(subj, c->txn_subjects, (size_t)b) != 0 || subj[b] != '.')
        return false;
    const char *q = subj + b + 1;
    const char *d = q;
    while (*d >= '0' && *d <= '9')
        d++;
    if (d == q || strncmp(d, ".req.", 5) != 0)
        return false;
    const char *card = d + 5;
    return partition_key_ok(card, strlen(card));
}
