/* mopt serve where the build did not find libmicrohttpd. */
#include <stdio.h>

#include "cli.h"

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "mopt serve: this mopt was built without libmicrohttpd; install it "
                    "(apt-get install libmicrohttpd-dev) and build again\n");
    return EXIT_USAGE;
}
