/* main.c - the `verdict` command line: dispatches to subcommands. */
#include <stdio.h>
int main(void) { puts("verdict"); return 0; }
