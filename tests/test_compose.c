/* test_compose.c - the container files are valid without a container engine: Debian's docker-compose validates
 * the compose files (`config -q`, refusing a missing password), nats-server accepts their config files (`-t`), and
 * the Dockerfile's HEALTHCHECK command, run as written against a real engine, says healthy only when it is. */
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(compose, .timeout = 120);

/* Runs a shell command in compose/; returns its exit status (-1 if abnormal). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "cd '%s/compose' && ", VERDICT_SOURCE_DIR);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define PW "VERDICT_NATS_PASSWORD=a PAYMENTS_NATS_PASSWORD=b ADMIN_NATS_PASSWORD=c "
/* the server binary under test (make test NATS_VERSION=..., docs/testing.md) */
#define NATS_SERVER "\"${VERDICT_NATS_SERVER:-nats-server}\" "

Test(compose, the_compose_files_validate)
{
    cr_assert_eq(sh("command -v docker-compose >/dev/null"), 0, "docker-compose missing: run tools/install-deps");
    cr_assert_eq(sh("docker-compose -f compose.yaml config -q"), 0, "compose.yaml is invalid");
    cr_assert_eq(sh("docker-compose -f compose.yaml --profile demo config --services | grep -qx payments"), 0);
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config -q"), 0, "compose.cluster.yaml is invalid");
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config --services | grep -c '^nats-[123]$' | grep -qx 3"),
                 0, "the cluster file has three nats nodes");
    cr_assert_eq(sh("docker-compose -f compose.cluster.yaml config | grep -q 'VERDICT_REPLICAS: .3.'"), 0,
                 "the cluster's engine creates R3 streams");
    /* without compose/.env and the environment, a password is a clear refusal, not an empty string */
    char empty[256];
    temp_path(empty, sizeof empty, ".env");
    FILE *f = fopen(empty, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(sh("env -u VERDICT_NATS_PASSWORD docker-compose --env-file '%s' -f compose.yaml config -q "
                    "2>&1 | grep -q 'set VERDICT_NATS_PASSWORD'",
                    empty),
                 0, "a missing password must be refused by name");
    unlink(empty);
}

Test(compose, nats_server_accepts_the_config_files)
{
    cr_assert_eq(sh(PW NATS_SERVER "-t -c nats.conf >/dev/null 2>&1"), 0, "compose/nats.conf is invalid");
    cr_assert_eq(sh("NATS_NODE=nats-1 " NATS_SERVER "-t -c nats-cluster.conf >/dev/null 2>&1"), 0,
                 "compose/nats-cluster.conf is invalid");
    /* and the check is real: a broken file fails it */
    char bad[256];
    temp_path(bad, sizeof bad, ".conf");
    FILE *f = fopen(bad, "w");
    cr_assert_not_null(f);
    fputs("jetstream { store_dir: \n", f);
    fclose(f);
    cr_assert_neq(sh(NATS_SERVER "-t -c '%s' >/dev/null 2>&1", bad), 0);
    unlink(bad);
}

/* The HEALTHCHECK line's bash command, with the metrics port replaced. */
static void healthcheck_cmd(int port, char *out, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/compose/Dockerfile", VERDICT_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024], script[1024] = "";
    while (fgets(line, sizeof line, f)) {
        const char *c = strstr(line, "\"/bin/bash\", \"-c\", \"");
        if (!c)
            continue;
        c += strlen("\"/bin/bash\", \"-c\", \"");
        const char *end = strrchr(c, '"');
        cr_assert_not_null(end);
        size_t k = 0;
        for (const char *p = c; p < end && k < sizeof script - 1; p++) {
            if (p[0] == '\\' && p[1] == '\\') /* JSON \\ -> \ */
                p++;
            script[k++] = *p;
        }
        script[k] = 0;
    }
    fclose(f);
    cr_assert(script[0], "no bash HEALTHCHECK in the Dockerfile");
    char *p9464 = strstr(script, "/9464");
    cr_assert_not_null(p9464, "the healthcheck does not probe port 9464: %s", script);
    *p9464 = 0;
    snprintf(out, cap, "/bin/bash -c \"%s/%d%s\"", script, port, p9464 + 5);
}

Test(compose, the_dockerfile_healthcheck_reports_readiness)
{
    test_server srv;
    cr_assert(server_start(&srv, NULL));
    char logp[256];
    temp_path(logp, sizeof logp, ".log");
    int port = free_port();
    char cmd[2048];
    healthcheck_cmd(port, cmd, sizeof cmd);
    cr_assert_neq(sh("%s 2>/dev/null", cmd), 0, "healthy with nothing listening: %s", cmd);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    cr_assert_eq(sh("%s", cmd), 0, "not healthy while ready: %s", cmd);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    server_stop(&srv);
    unlink(logp);
}
