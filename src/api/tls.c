#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "../base/alloc.h"
#include "../base/fileio.h"
#include "../base/log.h"
#include "tls.h"

#define TLS_FILE_MAX ((size_t)1 << 20)

static int read_pem(const char *what, const char *path, const char *setting, char **ret, Error *e)
{
    size_t n;
    int r = fileio_read_all(path, TLS_FILE_MAX, ret, &n);
    if (r == -EFBIG)
        return error_set(e, r, "could not read the TLS %s file \"%s\" (%s): larger than 1 MiB",
                         what, path, setting);
    if (r == -EBADFD)
        return error_set(e, -EINVAL, "could not read the TLS %s file \"%s\" (%s): not a file", what,
                         path, setting);
    if (r < 0)
        return error_set(e, r, "could not read the TLS %s file \"%s\" (%s): %s", what, path,
                         setting, strerror(-r));
    return 0;
}

static void format_time(time_t t, char buf[static 32])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, 32, "%lld", (long long)t);
}

/* The certificates of the chain, the server's first; warns when the server's is not valid now. */
static int check_cert(const char *path, const char *pem, Error *e)
{
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)strlen(pem)};
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;

    int r = gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0 || n == 0)
        return error_set(e, -EINVAL,
                         "could not load the TLS certificate file \"%s\" (RUNTARA_TLS_CERT_FILE): "
                         "%s. hint: it must hold the server's certificate in PEM "
                         "(\"-----BEGIN CERTIFICATE-----\"), then any intermediates",
                         path, r < 0 ? gnutls_strerror(r) : "no certificate in it");
    time_t now = time(NULL), from = gnutls_x509_crt_get_activation_time(crts[0]),
           until = gnutls_x509_crt_get_expiration_time(crts[0]);
    char when[32];
    if (until != (time_t)-1 && now > until) {
        format_time(until, when);
        log_warning("the TLS certificate in \"%s\" expired on %s; clients that verify it will "
                    "refuse to connect",
                    path, when);
    } else if (from != (time_t)-1 && now < from) {
        format_time(from, when);
        log_warning("the TLS certificate in \"%s\" is not valid before %s; clients that verify "
                    "it will refuse to connect until then",
                    path, when);
    }
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    return 0;
}

static int check_key(const char *path, const char *pem, Error *e)
{
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)strlen(pem)};
    gnutls_x509_privkey_t key;

    if (strstr(pem, "ENCRYPTED"))
        return error_set(e, -EINVAL,
                         "could not load the TLS private key file \"%s\" (RUNTARA_TLS_KEY_FILE): "
                         "the key is encrypted, and there is no setting for a passphrase. hint: "
                         "store it unencrypted, readable only by the daemon's user",
                         path);
    int r = gnutls_x509_privkey_init(&key);
    if (r >= 0) {
        r = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
        gnutls_x509_privkey_deinit(key);
    }
    if (r < 0)
        return error_set(e, -EINVAL,
                         "could not load the TLS private key file \"%s\" (RUNTARA_TLS_KEY_FILE): "
                         "%s. hint: it must hold an unencrypted private key in PEM "
                         "(\"-----BEGIN PRIVATE KEY-----\")",
                         path, gnutls_strerror(r));
    return 0;
}

/* As libmicrohttpd will load them: the pair must match. */
static int check_pair(const TlsFiles *t, const char *cert_path, const char *key_path, Error *e)
{
    gnutls_datum_t c = {(unsigned char *)t->cert, (unsigned)strlen(t->cert)};
    gnutls_datum_t k = {(unsigned char *)t->key, (unsigned)strlen(t->key)};
    gnutls_certificate_credentials_t cred;

    int r = gnutls_certificate_allocate_credentials(&cred);
    if (r < 0)
        return error_set(e, -ENOMEM, "could not set up TLS: %s", gnutls_strerror(r));
    r = gnutls_certificate_set_x509_key_mem(cred, &c, &k, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(cred);
    if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
        return error_set(e, -EINVAL,
                         "the TLS private key in \"%s\" does not belong to the certificate in "
                         "\"%s\". hint: RUNTARA_TLS_KEY_FILE must hold the key the certificate of "
                         "RUNTARA_TLS_CERT_FILE was issued for",
                         key_path, cert_path);
    if (r < 0)
        return error_set(e, -EINVAL,
                         "could not use the TLS certificate \"%s\" with the private key \"%s\": %s",
                         cert_path, key_path, gnutls_strerror(r));
    return 0;
}

/* PostgreSQL's rule, as a warning: the key may be read by its owner only, or also by the group
 * when root owns it (a group such as ssl-cert). */
static void check_key_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    mode_t loose = st.st_uid == 0 ? (S_IWGRP | S_IXGRP | S_IRWXO) : (S_IRWXG | S_IRWXO);
    if (st.st_mode & loose)
        log_warning("the TLS private key file \"%s\" is accessible to other users (mode %04o); "
                    "hint: chmod 600 it",
                    path, (unsigned)(st.st_mode & 07777));
}

int tls_files_load(const char *cert_path, const char *key_path, TlsFiles *ret, Error *e)
{
    TlsFiles t = {0};

    int r = read_pem("certificate", cert_path, "RUNTARA_TLS_CERT_FILE", &t.cert, e);
    if (r >= 0)
        r = read_pem("private key", key_path, "RUNTARA_TLS_KEY_FILE", &t.key, e);
    if (r >= 0)
        r = check_cert(cert_path, t.cert, e);
    if (r >= 0)
        r = check_key(key_path, t.key, e);
    if (r >= 0)
        r = check_pair(&t, cert_path, key_path, e);
    if (r < 0) {
        tls_files_done(&t);
        return r;
    }
    check_key_mode(key_path);
    *ret = t;
    return 0;
}

void tls_files_done(TlsFiles *t)
{
    if (t->key)
        explicit_bzero(t->key, strlen(t->key));
    free(t->key);
    free(t->cert);
    t->key = t->cert = NULL;
}
