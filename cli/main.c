/*
 * evstream: the command-line program. It dispatches to a subcommand:
 *
 *   evstream serve [options]       the SSE hub (serve.c)
 *   evstream tail [options] URL    print an SSE stream as JSON lines (tail.c)
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: evstream COMMAND [options]\n"
    "\n"
    "  serve        serve server-sent events over HTTP: publish with POST /publish,\n"
    "               subscribe with GET /events (evstream serve --help)\n"
    "  tail URL     print the events of any SSE endpoint as JSON lines\n"
    "               (evstream tail --help)\n"
    "  --version    print the version\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EVS_CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return evs_cli_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "tail") == 0)
        return evs_cli_tail(argc - 1, argv + 1);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("evstream %s\n", EVS_VERSION_STRING);
        return 0;
    }
    fprintf(stderr, "evstream: unknown command '%s'\n", cmd);
    fputs(usage_text, stderr);
    return EVS_CLI_USAGE;
}
