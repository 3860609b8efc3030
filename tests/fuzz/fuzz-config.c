/* The settings (daemon/config.c): the input is an environment, one NAME=value per line, read
 * through the same table as the daemon's, and also a settings file (config_file_parse()) loaded
 * under an empty environment. A loaded Config is also printed (--print-config), and the parse
 * must not depend on anything but the input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/daemon/config.h"
#include "fuzz.h"

typedef struct Env {
    char *names[64];
    char *values[64];
    size_t n;
} Env;

static const char *lookup(const char *name, void *userdata)
{
    const Env *env = userdata;
    for (size_t i = 0; i < env->n; i++)
        if (strcmp(env->names[i], name) == 0)
            return env->values[i];
    return NULL;
}

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    devnull = fopen("/dev/null", "we");
    return devnull ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size), *save = NULL;
    Env env = {.n = 0};
    Config c;
    Error e = ERROR_INIT;

    for (char *line = strtok_r(text, "\n", &save); line && env.n < 64;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        env.names[env.n] = line;
        env.values[env.n++] = eq + 1;
    }
    if (config_load(lookup, &env, &c, &e) >= 0) {
        config_print(&c, lookup, &env, devnull);
        (void)config_bind_is_loopback(c.bind);
        config_done(&c);
    } else if (!error_message(&e)[0])
        abort();
    error_done(&e);

    ConfigFile *file = NULL;
    Env none = {.n = 0};
    if (config_file_parse("fuzz", (const char *)data, size, &file, &e) >= 0) {
        if (config_load_from(lookup, &none, file, &c, &e) >= 0) {
            config_print_from(&c, lookup, &none, file, devnull);
            config_done(&c);
        } else if (!error_message(&e)[0])
            abort();
        config_file_free(file);
    } else if (!error_message(&e)[0])
        abort();
    error_done(&e);
    free(text);
    return 0;
}
