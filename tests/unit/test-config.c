/* The settings table: defaults, derived defaults, validation messages, printing. */
#include "../../src/base/alloc.h"
#include "../../src/daemon/config.h"
#include "../../src/store/store.h"
#include "../lib/tests.h"

typedef struct Env {
    const char *const *kv; /* NULL-terminated name, value pairs */
} Env;

static const char *lookup(const char *name, void *userdata)
{
    const Env *env = userdata;
    for (size_t i = 0; env->kv[i]; i += 2)
        if (strcmp(env->kv[i], name) == 0)
            return env->kv[i + 1];
    return NULL;
}

static int load(const char *const *kv, Config *c, Error *e)
{
    Env env = {kv};
    return config_load(lookup, &env, c, e);
}

TEST(defaults)
{
    static const char *const kv[] = {"DATA_DIR", "/srv/rt", NULL};
    Config c;
    ASSERT_OK(load(kv, &c, NULL));
    ASSERT_STREQ(c.data_dir, "/srv/rt");
    ASSERT_STREQ(c.database_url, "sqlite:/srv/rt/runtara.db");
    ASSERT_STREQ(c.core_socket, "/srv/rt/core.sock");
    ASSERT_STREQ(c.bind, "127.0.0.1");
    ASSERT_EQ(c.http_port, 8002);
    ASSERT_EQ(c.max_image_size, 1ULL << 30);
    ASSERT_EQ(c.execution_timeout_secs, 300);
    ASSERT_NULL(c.api_keys_file);
    ASSERT_FALSE(c.use_systemd_cgroup);
    config_done(&c);
    ASSERT_NULL(c.data_dir);
}

TEST(relative_paths_become_absolute)
{
    static const char *const kv[] = {"DATA_DIR", "rel/dir", NULL};
    Config c;
    ASSERT_OK(load(kv, &c, NULL));
    ASSERT_EQ(c.data_dir[0], '/');
    ASSERT_TRUE(strstr(c.data_dir, "/rel/dir") != NULL);
    config_done(&c);
}

TEST(values_are_parsed)
{
    static const char *const kv[] = {"RUNTARA_ENV_HTTP_PORT",
                                     "9000",
                                     "RUNTARA_MAX_IMAGE_SIZE",
                                     "16M",
                                     "USE_SYSTEMD_CGROUP",
                                     "yes",
                                     "RUNTARA_DATABASE_URL",
                                     "postgres://db/rt",
                                     "RUNTARA_CORE_ADDR",
                                     "127.0.0.1:8001",
                                     NULL};
    Config c;
    ASSERT_OK(load(kv, &c, NULL));
    ASSERT_EQ(c.http_port, 9000);
    ASSERT_EQ(c.max_image_size, 16ULL << 20);
    ASSERT_TRUE(c.use_systemd_cgroup);
    ASSERT_STREQ(c.database_url, "postgres://db/rt");
    ASSERT_STREQ(c.core_addr, "127.0.0.1:8001");
    config_done(&c);
}

TEST(bad_values_name_the_variable_and_the_range)
{
    static const struct {
        const char *name, *value, *expect;
    } cases[] = {
        {"RUNTARA_ENV_HTTP_PORT", "99999",
         "invalid value \"99999\" for RUNTARA_ENV_HTTP_PORT: must be an integer between 1 and "
         "65535"},
        {"RUNTARA_ENV_HTTP_PORT", "0", "between 1 and 65535"},
        {"RUNTARA_ENV_HTTP_PORT", "80x", "between 1 and 65535"},
        {"RUNTARA_DATABASE_URL", "mysql://x", "expected sqlite:PATH, postgres://..."},
        {"RUNTARA_DATABASE_URL", "sqlite:", "names no file"},
        {"RUNTARA_DATABASE_URL", "postgres://u:pw@h/db?bogus=1", "invalid PostgreSQL connection"},
        {"RUNTARA_DATABASE_URL", "host=/run dbnam=x", "invalid PostgreSQL connection"},
        {"RUNTARA_RUNNER", "docker", "must be one of oci, native, mock"},
        {"RUNTARA_LOG_LEVEL", "loud", "must be one of error, warning, notice, info, debug"},
        {"USE_SYSTEMD_CGROUP", "maybe", "must be one of true, false"},
        {"RUNTARA_CORE_ADDR", "localhost", "host:port"},
        {"RUNTARA_MAX_JSON_BODY", "1", "between 1024 and"},
        {"DATA_DIR", "", "must be a path"},
        {"RUNTARA_ALLOW_PLAINTEXT_HTTP", "sure", "must be one of true, false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *kv[] = {cases[i].name, cases[i].value, NULL};
        Config c;
        Error e = ERROR_INIT;
        ASSERT_EQ(load(kv, &c, &e), -EINVAL);
        /* a database URL may hold a password: it is never quoted back */
        if (strcmp(cases[i].name, "RUNTARA_DATABASE_URL") == 0 && strpbrk(cases[i].value, "=/") &&
            strstr(error_message(&e), cases[i].value))
            TEST_FAIL("%s=%s: quoted in \"%s\"", cases[i].name, cases[i].value, error_message(&e));
        if (!strstr(error_message(&e), cases[i].expect) ||
            !strstr(error_message(&e), cases[i].name))
            TEST_FAIL("%s=%s: got \"%s\"", cases[i].name, cases[i].value, error_message(&e));
        error_done(&e);
    }
}

TEST(database_urls)
{
    static const char *const good[] = {"sqlite:/var/lib/r.db", "sqlite:///var/lib/r.db",
                                       "postgresql://u:pw@db:5432/rt?sslmode=require",
                                       "host=/run/postgresql dbname=runtara"};
    for (size_t i = 0; i < ELEMENTSOF(good); i++) {
        const char *kv[] = {"RUNTARA_DATABASE_URL", good[i], NULL};
        Config c;
        Error e = ERROR_INIT;
        if (load(kv, &c, &e) < 0)
            TEST_FAIL("%s: %s", good[i], error_message(&e));
        ASSERT_STREQ(c.database_url, good[i]);
        config_done(&c);
    }
    const char *target = NULL;
    ASSERT_EQ(store_url_parse("sqlite:///x.db", &target, NULL), STORE_SQLITE);
    ASSERT_STREQ(target, "/x.db");
    ASSERT_EQ(store_url_parse("host=db dbname=rt", &target, NULL), STORE_POSTGRES);
    ASSERT_STREQ(target, "host=db dbname=rt");
}

TEST(tls_needs_both_files)
{
    static const char *const both[] = {"RUNTARA_TLS_CERT_FILE", "/etc/rt/cert.pem",
                                       "RUNTARA_TLS_KEY_FILE", "key.pem", NULL};
    static const char *const cert_only[] = {"RUNTARA_TLS_CERT_FILE", "/etc/rt/cert.pem", NULL};
    static const char *const key_only[] = {"RUNTARA_TLS_KEY_FILE", "/etc/rt/key.pem", NULL};
    Config c;
    Error e = ERROR_INIT;

    ASSERT_OK(load((const char *const[]){NULL}, &c, NULL));
    ASSERT_NULL(c.tls_cert_file);
    ASSERT_FALSE(c.allow_plaintext_http);
    config_done(&c);

    ASSERT_OK(load(both, &c, NULL));
    ASSERT_STREQ(c.tls_cert_file, "/etc/rt/cert.pem");
    ASSERT_EQ(c.tls_key_file[0], '/');
    config_done(&c);

    ASSERT_EQ(load(cert_only, &c, &e), -EINVAL);
    ASSERT_STREQ(error_message(&e),
                 "RUNTARA_TLS_CERT_FILE is set but RUNTARA_TLS_KEY_FILE is not: TLS needs both");
    error_done(&e);
    ASSERT_EQ(load(key_only, &c, &e), -EINVAL);
    ASSERT_TRUE(strstr(error_message(&e), "RUNTARA_TLS_KEY_FILE is set but") != NULL);
    error_done(&e);
}

TEST(print_shows_origin)
{
    static const char *const kv[] = {"RUNTARA_ENV_HTTP_PORT", "9000", NULL};
    Env env = {kv};
    Config c;
    ASSERT_OK(load(kv, &c, NULL));
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    config_print(&c, lookup, &env, f);
    fclose(f);
    ASSERT_TRUE(strstr(buf, "RUNTARA_ENV_HTTP_PORT=9000  # from environment\n") != NULL);
    ASSERT_TRUE(strstr(buf, "RUNTARA_RUNNER=oci  # default\n") != NULL);
    free(buf);
    config_done(&c);
}

static ConfigFile *parse_file(const char *text, Error *e)
{
    ConfigFile *f = NULL;
    return config_file_parse("/etc/runtara/environment", text, strlen(text), &f, e) < 0 ? NULL : f;
}

TEST(settings_file_lines_under_the_environment)
{
    ConfigFile *f = parse_file("# the daemon's settings\n"
                               "\n"
                               "; an old-style comment\n"
                               "RUNTARA_ENV_HTTP_PORT=9100\n"
                               "  RUNTARA_LOG_LEVEL = \"warning\"\r\n"
                               "RUNTARA_ENV_BIND='0.0.0.0'\n"
                               "RUNTARA_ALLOW_PLAINTEXT_HTTP=yes\n"
                               "DATA_DIR=/srv/first\n"
                               "DATA_DIR=/srv/rt",
                               NULL);
    ASSERT_NOT_NULL(f);
    /* the environment wins over the file, which wins over the defaults; a later line wins */
    static const char *const kv[] = {"RUNTARA_ENV_BIND", "127.0.0.2", NULL};
    Env env = {kv};
    Config c;
    ASSERT_OK(config_load_from(lookup, &env, f, &c, NULL));
    ASSERT_EQ(c.http_port, 9100);
    ASSERT_STREQ(c.log_level, "warning");
    ASSERT_STREQ(c.bind, "127.0.0.2");
    ASSERT_TRUE(c.allow_plaintext_http);
    ASSERT_STREQ(c.data_dir, "/srv/rt");
    ASSERT_EQ(c.max_image_size, 1ULL << 30);

    char *buf = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&buf, &n);
    config_print_from(&c, lookup, &env, f, out);
    fclose(out);
    ASSERT_TRUE(strstr(buf, "RUNTARA_ENV_HTTP_PORT=9100  # from /etc/runtara/environment, line "
                            "4\n") != NULL);
    ASSERT_TRUE(strstr(buf, "RUNTARA_ENV_BIND=127.0.0.2  # from environment\n") != NULL);
    ASSERT_TRUE(strstr(buf, "RUNTARA_RUNNER=oci  # default\n") != NULL);
    free(buf);
    config_done(&c);
    config_file_free(f);
}

TEST(settings_file_errors_name_the_file_and_line)
{
    Error e = ERROR_INIT;
    ASSERT_NULL(parse_file("RUNTARA_LOG_LEVEL=info\nRUNTARA_ENV_HTTP_PROT=9000\n", &e));
    ASSERT_STREQ(error_message(&e), "/etc/runtara/environment, line 2: unknown setting "
                                    "\"RUNTARA_ENV_HTTP_PROT\"; hint: runtara-environment "
                                    "--help lists them");
    error_done(&e);
    ASSERT_NULL(parse_file("# ok\nexport\n", &e));
    ASSERT_STREQ(error_message(&e), "/etc/runtara/environment, line 2: expected NAME=value; "
                                    "hint: a comment starts with #");
    error_done(&e);
    ASSERT_NULL(parse_file("=9000\n", &e));
    ASSERT_EQ(e.code, -EINVAL);
    error_done(&e);
    ConfigFile *f = NULL;
    ASSERT_EQ(config_file_parse("x", "A\0B", 3, &f, &e), -EINVAL);
    error_done(&e);
    char *big = xcalloc(1, CONFIG_FILE_MAX + 2);
    memset(big, '#', CONFIG_FILE_MAX + 1);
    ASSERT_EQ(config_file_parse("x", big, CONFIG_FILE_MAX + 1, &f, &e), -EFBIG);
    error_done(&e);
    free(big);

    /* a bad value is reported with where it came from */
    f = parse_file("RUNTARA_LOG_LEVEL=info\nRUNTARA_ENV_HTTP_PORT=99999\n", NULL);
    ASSERT_NOT_NULL(f);
    static const char *const none[] = {NULL};
    Env env = {none};
    Config c;
    ASSERT_EQ(config_load_from(lookup, &env, f, &c, &e), -EINVAL);
    ASSERT_STREQ(error_message(&e),
                 "/etc/runtara/environment, line 2: invalid value \"99999\" for "
                 "RUNTARA_ENV_HTTP_PORT: must be an integer between 1 and 65535");
    error_done(&e);
    config_file_free(f);

    /* a missing file is no file, unless it was named */
    ASSERT_OK(config_file_load("/nonexistent/runtara/environment", false, &f, NULL));
    ASSERT_NULL(f);
    ASSERT_EQ(config_file_load("/nonexistent/runtara/environment", true, &f, &e), -ENOENT);
    ASSERT_TRUE(strstr(error_message(&e), "could not read the settings file") != NULL);
    error_done(&e);
}

TEST(loopback_detection)
{
    ASSERT_TRUE(config_bind_is_loopback("127.0.0.1"));
    ASSERT_TRUE(config_bind_is_loopback("127.1.2.3"));
    ASSERT_TRUE(config_bind_is_loopback("::1"));
    ASSERT_TRUE(config_bind_is_loopback("localhost"));
    ASSERT_FALSE(config_bind_is_loopback("0.0.0.0"));
    ASSERT_FALSE(config_bind_is_loopback("::"));
    ASSERT_FALSE(config_bind_is_loopback("10.0.0.1"));
    ASSERT_FALSE(config_bind_is_loopback("example.com"));
}

TESTS_MAIN(T(defaults), T(relative_paths_become_absolute), T(values_are_parsed),
           T(bad_values_name_the_variable_and_the_range), T(database_urls), T(tls_needs_both_files),
           T(print_shows_origin), T(settings_file_lines_under_the_environment),
           T(settings_file_errors_name_the_file_and_line), T(loopback_detection))
