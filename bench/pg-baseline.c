/* pg-baseline: the bare libpq baseline of bench/scenarios/checkpoints_pg.py. One connection
 * inserts rows of 100 bytes, one INSERT per commit (autocommit: one round trip and one durable
 * commit per row, the server's synchronous_commit), for SECONDS; prints
 *
 *   rows ELAPSED_S
 *   LATENCY_US        (one line per row)
 *
 *   pg-baseline CONNINFO SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ok(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 1;
    fprintf(stderr, "pg-baseline: %s: %s", what, PQerrorMessage(c));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pg-baseline CONNINFO SECONDS\n");
        return 2;
    }
    double secs = atof(argv[2]);
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg-baseline: %s", PQerrorMessage(c));
        return 1;
    }
    if (!ok(c,
            PQexec(c, "CREATE TABLE IF NOT EXISTS baseline (id bigint GENERATED ALWAYS AS "
                      "IDENTITY PRIMARY KEY, k text NOT NULL, data bytea NOT NULL)"),
            "create the table"))
        return 1;
    char data[100], key[32];
    memset(data, 'x', sizeof data);
    size_t cap = 1 << 20, n = 0;
    unsigned *lat = malloc(cap * sizeof *lat);
    double t0 = now();
    while (now() - t0 < secs && n < cap) {
        snprintf(key, sizeof key, "k%zu", n);
        const char *v[] = {key, data};
        int len[] = {0, (int)sizeof data}, fmt[] = {0, 1};
        double t = now();
        if (!ok(c,
                PQexecParams(c, "INSERT INTO baseline (k, data) VALUES ($1, $2)", 2, NULL, v, len,
                             fmt, 0),
                "insert"))
            return 1;
        lat[n++] = (unsigned)((now() - t) * 1e6);
    }
    printf("%zu %.6f\n", n, now() - t0);
    for (size_t i = 0; i < n; i++)
        printf("%u\n", lat[i]);
    free(lat);
    PQfinish(c);
    return 0;
}
