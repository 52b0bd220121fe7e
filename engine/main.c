/* main.c - the `verdict` binary: one command per job, each with its own --help. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#ifndef VERDICT_VERSION
#define VERDICT_VERSION "0.1.0"
#endif

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"serve", cmd_serve, "run the decision engine (the production process)"},
    {"check", cmd_check, "validate rules files: rule count, or every error with file:line:col"},
    {"rules", cmd_rules, "push a checked rules file to every engine (KV bucket), show, clear or trace its history"},
    {"replay", cmd_replay, "run candidate rules over stored transactions; show how outcomes would change"},
    {"features", cmd_features, "write the model's training table, computed by the engine from synthetic payments"},
    {"status", cmd_status, "streams, the consumer and every running engine at a glance (readable or --json)"},
    {"watch", cmd_watch, "follow decisions live, one line each, filtered by outcome, rule, card or txn id"},
    {"decision", cmd_decision, "print the decision stored for one transaction id (readable or --json)"},
    {"desk", cmd_desk, "the analysts' desk: a case per review decision, a web page to resolve them, labels"},
    {"dlq", cmd_dlq, "list, show and replay dead letters"},
    {"audit", cmd_audit, "prove every transaction has exactly one decision or one dead letter"},
    {"bench", cmd_bench, "benchmarks against a bare JetStream baseline (throughput, latency)"},
    {"lists", cmd_lists, "add, remove and list values of the named lists rules test (verdict_lists)"},
    {"profiles", cmd_profiles, "write and show account profiles (verdict_profiles)"},
    {"shadow", cmd_shadow, "report what a shadow (candidate) policy changed on live traffic: live -> shadow outcomes"},
    {"demo", cmd_demo, "start a local nats-server, the engine and a simulated payment service; print a summary"},
};

static void usage(FILE *out)
{
    fprintf(out, "verdict %s - a fraud-decision engine on NATS JetStream\n\nusage: verdict COMMAND [options]\n\n"
                 "commands:\n", VERDICT_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n\nRun `verdict COMMAND --help` for a command's options. Every option also has an\n"
                 "environment variable (VERDICT_NATS_URL, VERDICT_WORKERS, ...). Docs: README.md and docs/.\n",
            "version", "print the version");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("verdict %s\n", VERDICT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "verdict: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
