/* partition.h - which partition a transaction belongs to, computed exactly as NATS's own subject mapping does.
 *
 * Scale-out (docs/architecture.md, "Partitions") splits TXN into N partitions by a key (the card by default), so
 * that all of a card's transactions are decided in stream order by one engine. The partition of a key is
 * FNV-1a (32 bit) of the key's bytes modulo N: the function nats-server applies for the mapping
 * `{{partition(N,1)}}` (checked against a real server in tests/test_partition_fn.c). So a payment service may
 * publish `txn.card.<card_id>` and let the server map it, or compute the partition itself with this function
 * (it is four lines in any language: docs/architecture.md gives them) and publish to `txn.p.<P>.<card_id>`;
 * both put the transaction in the same partition. Pure logic: no broker, no allocation. */
#ifndef VERDICT_PARTITION_H
#define VERDICT_PARTITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PARTITIONS_MAX 1024u /* more partitions than this buys nothing on the machines we run on */

/* FNV-1a, 32 bit, of len bytes of key: nats-server's hash for partition(). */
uint32_t partition_hash(const char *key, size_t len);

/* The partition (0..n-1) of key among n (1..PARTITIONS_MAX) partitions. */
uint32_t partition_of(const char *key, size_t len, uint32_t n);

/* Whether key can be a subject token, as the mapping needs: 1..255 bytes, none of them '.', '*', '>', space,
 * tab, CR, LF or NUL. */
bool partition_key_ok(const char *key, size_t len);

/* --- partitioned TXN (--partitions N) ------------------------------------------------------------------
 * TXN's subjects are <base>.> with base ending in ".p" (config.c makes them so): a payment service publishes to
 * <base>.<P>.<card_id>, the ingress (verdict.v1.decide) to <base>.<P>.req.<card_id>, a subject only the engine's
 * NATS user may publish to, so that only the ingress's own messages may name a reply inbox (commit.c). Partition
 * P's durable consumer is <consumer>-p<P>, filtered on <base>.<P>.>. */
struct config;

/* The durable consumer of partition p: "<consumer>-p<p>". */
void partition_consumer(const struct config *c, unsigned p, char *out, size_t cap);

/* Its filter subject: "<base>.<p>.>". */
void partition_filter(const struct config *c, unsigned p, char *out, size_t cap);

/* The subject the ingress stores a request of card_id under; false when card_id cannot be a subject token. */
bool partition_ingress_subject(const struct config *c, const char *card_id, char *out, size_t cap);

/* Whether subj is one the ingress writes (<base>.<digits>.req.<token>). */
bool partition_is_ingress_subject(const struct config *c, const char *subj);

#endif
