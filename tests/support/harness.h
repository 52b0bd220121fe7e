/* harness.h - test support: a real nats-server on a free loopback port with a temporary store, and helpers
 * to run the verdict binary as a child process. Never a mock of NATS. */
#ifndef VERDICT_TEST_HARNESS_H
#define VERDICT_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_server {
    pid_t pid;
    int port;
    char url[64];
    char store[256]; /* temporary JetStream store, removed by server_stop */
    char conf[300];  /* optional config file path (empty if none) */
} test_server;

/* A free TCP port on 127.0.0.1 (bound and released). */
int free_port(void);

/* Starts nats-server -js on a free loopback port and waits until it accepts connections. extra_conf, if not
 * NULL, is written into a config file and passed with -c. Returns false (with a message on stderr) on failure. */
bool server_start(test_server *s, const char *extra_conf);
/* Restarts on the same port and store (for crash tests). */
bool server_restart(test_server *s);
void server_kill(test_server *s, int sig);
void server_stop(test_server *s);

/* Spawns the verdict binary with argv (argv[0] ignored; NULL-terminated). stderr goes to log_path if given.
 * Returns the child's pid. */
pid_t verdict_spawn(const char *const argv[], const char *log_path);
/* Waits for a child with a timeout; returns its exit status (or -1 on timeout / abnormal exit). */
int child_wait(pid_t pid, int timeout_ms);

/* Polls until log_path contains needle or the timeout passes. */
bool file_wait_for(const char *log_path, const char *needle, int timeout_ms);

/* A unique temporary path (for logs, rules files). */
void temp_path(char *out, size_t cap, const char *suffix);

#endif
