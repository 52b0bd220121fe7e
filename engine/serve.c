/* serve.c - `verdict serve`: run the engine until SIGTERM/SIGINT, then shut down gracefully. */
#include "cli.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"

#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

void cli_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_wait_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    sigwait(&set, &sig);
    return sig;
}

static void serve_help(void)
{
    printf("usage: verdict serve [options]\n\n"
           "Runs the decision engine: creates or verifies the streams and the durable consumer, answers\n"
           "decide requests on verdict.v1.decide, decides every transaction in TXN exactly once, and publishes\n"
           "decisions to DECISIONS. Stops gracefully on SIGTERM or SIGINT (finishes in-flight work, drains).\n"
           "Logs are JSON lines on stderr.\n\noptions (flag, then its environment variable):\n");
    config_print_help(stdout, "serve");
}

int cmd_serve(int argc, char **argv)
{
    config cfg;
    config_defaults(&cfg);
    bool help;
    verror e = {0};
    if (config_parse(&cfg, argc, argv, &help, NULL, NULL, &e) != V_OK) {
        fprintf(stderr, "verdict serve: %s\n", e.msg);
        return 2;
    }
    if (help) {
        serve_help();
        return 0;
    }
    log_set_component("serve");
    config_log(&cfg);
    cli_block_signals();
    engine *en = NULL;
    if (engine_start(&cfg, &en, &e) != V_OK) {
        log_error("cannot start", "\"error\":\"%s\"", log_esc(e.msg));
        if (e.code == V_EPARSE || e.code == V_EIO)
            fprintf(stderr, "%s", e.msg); /* the compiler's file:line:col report, readable */
        nats_Close();
        return 1;
    }
    for (;;) {
        int sig = cli_wait_signal();
        if (sig == SIGHUP) {
            log_info("SIGHUP: reloading rules and model", NULL);
            verror re = {0};
            engine_reload_now(en, "SIGHUP", &re); /* a refusal is logged; the running policy stays */
            continue;
        }
        log_info("shutting down", "\"signal\":\"%s\"", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    engine_stop(en);
    nats_Close();
    return 0;
}
