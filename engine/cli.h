/* cli.h - the subcommands of the `verdict` binary. Each takes argv with argv[0] = its own name and returns
 * the process exit status: 0 success, 1 failure, 2 usage error. */
#ifndef VERDICT_CLI_H
#define VERDICT_CLI_H

int cmd_serve(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_dlq(int argc, char **argv);
int cmd_decision(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_rules(int argc, char **argv);
int cmd_lists(int argc, char **argv);
int cmd_profiles(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_desk(int argc, char **argv);
int cmd_shadow(int argc, char **argv);

/* Blocks SIGINT/SIGTERM/SIGHUP in the calling thread (call before starting threads) and waits for one.
 * Returns the signal number. */
int cli_wait_signal(void);
void cli_block_signals(void);

#endif
