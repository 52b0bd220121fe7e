/* nkey.c - see nkey.h. */
#include "nkey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16_t crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static size_t b32_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = B32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = B32[(acc << (5 - bits)) & 31];
    out[o] = 0;
    return o;
}

/* Returns the number of bytes decoded, or -1 on a character outside the alphabet. */
static int b32_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(B32, in[i]);
        if (!p || !in[i])
            return -1;
        acc = (acc << 5) | (uint32_t)(p - B32);
        bits += 5;
        if (bits >= 8) {
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return (int)o;
}

static void with_crc(uint8_t *buf, size_t n)
{
    uint16_t c = crc16(buf, n);
    buf[n] = (uint8_t)(c & 0xff);
    buf[n + 1] = (uint8_t)(c >> 8);
}

void nkey_encode_public(uint8_t prefix, const uint8_t key[32], char out[NKEY_PUBLIC_LEN + 1])
{
    uint8_t buf[35];
    buf[0] = prefix;
    memcpy(buf + 1, key, 32);
    with_crc(buf, 33);
    b32_encode(buf, sizeof buf, out);
}

void nkey_encode_seed(uint8_t prefix, const uint8_t raw[32], char out[NKEY_SEED_LEN + 1])
{
    uint8_t buf[36];
    buf[0] = (uint8_t)(NKEY_PREFIX_SEED | (prefix >> 5));
    buf[1] = (uint8_t)((prefix & 31) << 3);
    memcpy(buf + 2, raw, 32);
    with_crc(buf, 34);
    b32_encode(buf, sizeof buf, out);
    OPENSSL_cleanse(buf, sizeof buf);
}

bool nkey_decode_seed(const char *seed, uint8_t *prefix, uint8_t raw[32])
{
    uint8_t buf[40];
    bool ok = strlen(seed) == NKEY_SEED_LEN && b32_decode(seed, NKEY_SEED_LEN, buf, sizeof buf) == 36 &&
              (buf[0] & 0xf8) == NKEY_PREFIX_SEED;
    if (ok) {
        uint16_t c = (uint16_t)(buf[34] | (buf[35] << 8));
        ok = c == crc16(buf, 34);
    }
    if (ok) {
        *prefix = (uint8_t)(((buf[0] & 7) << 5) | (buf[1] >> 3));
        memcpy(raw, buf + 2, 32);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return ok;
}

bool nkey_ed25519_public(const uint8_t raw[32], uint8_t pub[32])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, 32);
    size_t len = 32;
    bool ok = k && EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == 32;
    EVP_PKEY_free(k);
    return ok;
}

vstatus nkey_public_from_seed_file(const char *path, char pub[NKEY_PUBLIC_LEN + 1], verror *e)
{
    char *text = NULL;
    size_t len = 0;
    vstatus rc = file_read(path, 64 * 1024, &text, &len, e);
    if (rc != V_OK)
        return rc;
    /* the seed is the first 58-character token starting with 'S' and a key-type letter: a bare seed file or the
     * seed block of a credentials file */
    char seed[NKEY_SEED_LEN + 1] = "";
    for (size_t i = 0; i + NKEY_SEED_LEN <= len && !seed[0]; i++) {
        if (text[i] != 'S' || (i > 0 && text[i - 1] != '\n' && text[i - 1] != ' ' && text[i - 1] != '\r'))
            continue;
        size_t n = 0;
        while (i + n < len && strchr(B32, text[i + n]) && text[i + n])
            n++;
        if (n == NKEY_SEED_LEN) {
            memcpy(seed, text + i, NKEY_SEED_LEN);
            seed[NKEY_SEED_LEN] = 0;
        }
    }
    OPENSSL_cleanse(text, len);
    free(text);
    uint8_t prefix = 0, raw[32], key[32];
    bool ok = seed[0] && nkey_decode_seed(seed, &prefix, raw);
    OPENSSL_cleanse(seed, sizeof seed);
    if (!ok)
        return verror_set(e, V_EINVAL, "%s holds no valid nkey seed", path);
    ok = prefix == NKEY_PREFIX_USER && nkey_ed25519_public(raw, key);
    OPENSSL_cleanse(raw, sizeof raw);
    if (!ok)
        return verror_set(e, V_EINVAL, "%s: the seed is not a user nkey (it should start with SU)", path);
    nkey_encode_public(NKEY_PREFIX_USER, key, pub);
    return V_OK;
}
