/* authkit.c - see authkit.h. */
#define _POSIX_C_SOURCE 200809L
#include "authkit.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
