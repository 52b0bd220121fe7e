/* authkit.h - test support for authentication: user nkeys, TLS certificates (openssl CLI), small files. */
#ifndef VERDICT_TEST_AUTHKIT_H
#define VERDICT_TEST_AUTHKIT_H

#include "nkey.h"

#include <stdbool.h>
#include <stddef.h>

/* A fresh random user nkey: its seed ("SU...") and public key ("U..."). */
bool ak_user_nkey(char seed[NKEY_SEED_LEN + 1], char pub[NKEY_PUBLIC_LEN + 1]);

/* Decentralized auth (operator mode) for one user: an operator, an account with JetStream enabled and a user,
 * their JWTs signed with ed25519 as nats-server expects. conf receives the server's config lines (operator,
 * MEMORY resolver, preloaded account); creds the user's credentials file text (JWT and seed). */
bool ak_operator_mode(char *conf, size_t conf_cap, char *creds, size_t creds_cap);

/* Writes text to path with the given mode. */
bool ak_write_file(const char *path, const char *text, int mode);

/* In dir: ca.pem, server.pem/server.key (SAN IP:127.0.0.1, DNS:localhost), client.pem/client.key, all signed by
 * the CA, and other-ca.pem (an unrelated CA). Uses the openssl command. */
bool ak_make_certs(const char *dir);

/* A new temporary directory (mkdtemp) and its removal. */
bool ak_temp_dir(char *out, size_t cap);
void ak_remove_dir(const char *dir);

#endif
