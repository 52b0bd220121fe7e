/* nkey.h - NATS nkeys (ed25519 identities) as far as the engine needs them: reading a user seed file and deriving
 * its public key, which nats.c's natsOptions_SetNKeyFromSeed() requires alongside the seed file. The encoding
 * follows the nkeys format: base32 (RFC 4648, no padding) of a prefix byte, the 32-byte key and a CRC-16/XMODEM,
 * little-endian; a seed carries two prefix bytes (seed, then the key type). Seeds are wiped after use. */
#ifndef VERDICT_NKEY_H
#define VERDICT_NKEY_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

enum { NKEY_PREFIX_OPERATOR = 14 << 3, NKEY_PREFIX_ACCOUNT = 0, NKEY_PREFIX_USER = 20 << 3, NKEY_PREFIX_SEED = 18 << 3 };

#define NKEY_PUBLIC_LEN 56 /* characters, without the terminator */
#define NKEY_SEED_LEN 58

/* The public key ("U...") of the user seed in path (a file holding the seed alone, or a credentials file). */
vstatus nkey_public_from_seed_file(const char *path, char pub[NKEY_PUBLIC_LEN + 1], verror *e);

/* Encodings, also used by the tests to make keys. */
void nkey_encode_public(uint8_t prefix, const uint8_t key[32], char out[NKEY_PUBLIC_LEN + 1]);
void nkey_encode_seed(uint8_t prefix, const uint8_t raw[32], char out[NKEY_SEED_LEN + 1]);
/* Decodes a seed string into its key type prefix and raw 32 bytes; false if malformed or the CRC is wrong. */
bool nkey_decode_seed(const char *seed, uint8_t *prefix, uint8_t raw[32]);
/* The ed25519 public key of a raw seed (OpenSSL). */
bool nkey_ed25519_public(const uint8_t raw[32], uint8_t pub[32]);

#endif
