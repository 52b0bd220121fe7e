/* ident.h - the one definition of every identifier that crosses a boundary: transaction ids (a subject token
 * and the dedup id), names (rule ids, list names) and NATS subjects taken from message headers.
 *
 * Each limit lives here once, so a name the rule compiler accepts is a name the KV replicas can store and look
 * up: before this module five places checked ids with different limits (63 vs 64 characters) and a list could
 * compile and never match. Pure functions, no allocation. */
#ifndef VERDICT_IDENT_H
#define VERDICT_IDENT_H

#include <stdbool.h>
#include <stddef.h>

#define IDENT_TXN_ID_MAX 64   /* txn_id: 1-64 of [A-Za-z0-9_-] */
#define IDENT_NAME_MAX 63     /* rule ids, list names: 1-63 characters */
#define IDENT_SUBJECT_MAX 255 /* a reply subject taken from a header or a request */

/* 1-IDENT_TXN_ID_MAX of [A-Za-z0-9_-]. */
bool ident_txn_id_valid(const char *s);

/* 1-max of [A-Za-z0-9_-] (len bytes of s): list names, feature arguments, labels. */
bool ident_token_valid(const char *s, size_t len, size_t max);

/* A list name: 1-IDENT_NAME_MAX of [A-Za-z0-9_-] (len bytes of s). */
bool ident_list_name_valid(const char *s, size_t len);

/* A rule id: 1-IDENT_NAME_MAX of [a-z0-9_], not starting with a digit. */
bool ident_rule_id_valid(const char *s, size_t len);

/* A literal NATS subject fit to publish to: 1-IDENT_SUBJECT_MAX printable ASCII characters without space, no
 * empty token, no wildcard token (`*`, `>`). Header values may hold a bare LF or a space, which would make the
 * server close the connection or split the subject: those are refused here. */
bool ident_subject_valid(const char *s);

/* True when subject s lies under one of the comma-separated subject prefixes, token by token ("_INBOX" admits
 * "_INBOX.abc.1" but neither "_INBOXX.1" nor "_INBOX" itself). */
bool ident_subject_under(const char *s, const char *prefixes);

#endif
