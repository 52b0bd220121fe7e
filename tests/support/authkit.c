/* authkit.c - see authkit.h. */
#define _POSIX_C_SOURCE 200809L
#include "authkit.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool ak_user_nkey(char seed[NKEY_SEED_LEN + 1], char pub[NKEY_PUBLIC_LEN + 1])
{
    uint8_t raw[32], key[32];
    if (RAND_bytes(raw, sizeof raw) != 1 || !nkey_ed25519_public(raw, key))
        return false;
    nkey_encode_seed(NKEY_PREFIX_USER, raw, seed);
    nkey_encode_public(NKEY_PREFIX_USER, key, pub);
    OPENSSL_cleanse(raw, sizeof raw);
    return true;
}

bool ak_write_file(const char *path, const char *text, int mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return false;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n;
    return close(fd) == 0 && ok;
}

bool ak_make_certs(const char *d)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; exec >openssl.log 2>&1\n"
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=verdict-test-ca -keyout ca.key -out ca.pem\n"
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other-ca.key "
             "-out other-ca.pem\n"
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext\n"
             "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr\n"
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext "
             "-out server.pem\n"
             "openssl req -newkey rsa:2048 -nodes -subj /CN=verdict-engine -keyout client.key -out client.csr\n"
             "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem\n",
             d);
    return system(cmd) == 0;
}

bool ak_temp_dir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/verdict-auth-XXXXXX");
    return mkdtemp(out) != NULL;
}

void ak_remove_dir(const char *dir)
{
    if (!dir[0] || strncmp(dir, "/tmp/verdict-auth-", 18) != 0)
        return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "authkit: could not remove %s\n", dir);
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = A[(v >> 18) & 63];
        out[o++] = A[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = A[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = A[v & 63];
    }
    out[o] = 0;
    return o;
}

typedef struct akey {
    uint8_t raw[32];
    char seed[NKEY_SEED_LEN + 1], pub[NKEY_PUBLIC_LEN + 1];
} akey;

static bool make_key(uint8_t prefix, akey *k)
{
    uint8_t pub[32];
    if (RAND_bytes(k->raw, sizeof k->raw) != 1 || !nkey_ed25519_public(k->raw, pub))
        return false;
    nkey_encode_seed(prefix, k->raw, k->seed);
    nkey_encode_public(prefix, pub, k->pub);
    return true;
}

/* header.payload.signature, signed by issuer. */
static bool jwt(const char *claims, const akey *issuer, char *out, size_t cap)
{
    static const char header[] = "{\"typ\":\"JWT\",\"alg\":\"ed25519-nkey\"}";
    size_t n = strlen(claims);
    if (cap < (sizeof header + n) * 2 + 200)
        return false;
    size_t o = b64url((const uint8_t *)header, strlen(header), out);
    out[o++] = '.';
    o += b64url((const uint8_t *)claims, n, out + o);
    uint8_t sig[64];
    size_t siglen = sizeof sig;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, issuer->raw, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = k && ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) == 1 &&
              EVP_DigestSign(ctx, sig, &siglen, (const uint8_t *)out, o) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    if (!ok)
        return false;
    out[o++] = '.';
    b64url(sig, siglen, out + o);
    return true;
}

bool ak_operator_mode(char *conf, size_t conf_cap, char *creds, size_t creds_cap)
{
    akey op, acc, usr, sys;
    if (!make_key(NKEY_PREFIX_OPERATOR, &op) || !make_key(NKEY_PREFIX_ACCOUNT, &acc) ||
        !make_key(NKEY_PREFIX_USER, &usr) || !make_key(NKEY_PREFIX_ACCOUNT, &sys))
        return false;
    long now = (long)time(NULL);
    char claims[2048], opj[4096], accj[4096], usrj[4096];
    snprintf(claims, sizeof claims,
             "{\"jti\":\"OPJTI%ld\",\"iat\":%ld,\"iss\":\"%s\",\"sub\":\"%s\",\"name\":\"verdict-test-op\","
             "\"nats\":{\"system_account\":\"%s\",\"type\":\"operator\",\"version\":2}}",
             now, now, op.pub, op.pub, sys.pub);
    if (!jwt(claims, &op, opj, sizeof opj))
        return false;
    /* JetStream needs a system account in operator mode */
    char sysj[4096];
    snprintf(claims, sizeof claims,
             "{\"jti\":\"SYJTI%ld\",\"iat\":%ld,\"iss\":\"%s\",\"sub\":\"%s\",\"name\":\"SYS\","
             "\"nats\":{\"limits\":{\"subs\":-1,\"data\":-1,\"payload\":-1,\"imports\":-1,\"exports\":-1,"
             "\"wildcards\":true,\"conn\":-1,\"leaf\":-1},\"type\":\"account\",\"version\":2}}",
             now, now, op.pub, sys.pub);
    if (!jwt(claims, &op, sysj, sizeof sysj))
        return false;
    snprintf(claims, sizeof claims,
             "{\"jti\":\"ACJTI%ld\",\"iat\":%ld,\"iss\":\"%s\",\"sub\":\"%s\",\"name\":\"verdict-test-acc\","
             "\"nats\":{\"limits\":{\"subs\":-1,\"data\":-1,\"payload\":-1,\"imports\":-1,\"exports\":-1,"
             "\"wildcards\":true,\"conn\":-1,\"leaf\":-1,\"mem_storage\":-1,\"disk_storage\":-1,\"streams\":-1,"
             "\"consumer\":-1},\"default_permissions\":{\"pub\":{},\"sub\":{}},\"type\":\"account\",\"version\":2}}",
             now, now, op.pub, acc.pub);
    if (!jwt(claims, &op, accj, sizeof accj))
        return false;
    snprintf(claims, sizeof claims,
             "{\"jti\":\"USJTI%ld\",\"iat\":%ld,\"iss\":\"%s\",\"sub\":\"%s\",\"name\":\"verdict-test-user\","
             "\"nats\":{\"pub\":{},\"sub\":{},\"subs\":-1,\"data\":-1,\"payload\":-1,\"type\":\"user\","
             "\"version\":2}}",
             now, now, acc.pub, usr.pub);
    if (!jwt(claims, &acc, usrj, sizeof usrj))
        return false;
    int a = snprintf(conf, conf_cap,
                     "operator: \"%s\"\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: \"%s\"\n"
                     "  %s: \"%s\"\n}\n",
                     opj, sys.pub, acc.pub, accj, sys.pub, sysj);
    int b = snprintf(creds, creds_cap,
                     "-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
                     "************************* IMPORTANT *************************\n"
                     "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                     "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n",
                     usrj, usr.seed);
    OPENSSL_cleanse(&op, sizeof op);
    OPENSSL_cleanse(&acc, sizeof acc);
    OPENSSL_cleanse(&usr, sizeof usr);
    OPENSSL_cleanse(&sys, sizeof sys);
    return a > 0 && (size_t)a < conf_cap && b > 0 && (size_t)b < creds_cap;
}
