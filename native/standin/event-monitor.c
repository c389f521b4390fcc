/* Cloud Hypervisor's event monitor, as the stand-in VMM writes it: see event-monitor.h. */
#include "event-monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int monitor_fd = -1;
static struct timespec monitor_start;

#define PARSE_HEAD "Error parsing --event-monitor"
#define IO_HEAD "Error doing event monitor I/O"

static void os_error(int err, char *detail, size_t size)
{
    snprintf(detail, size, "%s (os error %d)", strerror(err), err);
}

/* OptionParser's dequote(): drops the quotes, keeps a doubled one. */
static void dequote(char *s)
{
    char *d = s, prev = '\0';
    bool in_quotes = false;
    for (char *p = s; *p; p++) {
        if (*p == '"') {
            if (prev == '"' && !in_quotes)
                *d++ = '"';
            in_quotes = !in_quotes;
        } else {
            *d++ = *p;
        }
        prev = *p;
    }
    *d = '\0';
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/*
 * OptionParser with the options "path" and "fd": comma-separated items (commas inside quotes or brackets do
 * not split), each `key=value`. An unknown key or an item without '=' fails the whole parse.
 */
static const char *parse(char *input, char **path, char **fd, char *detail, size_t size)
{
    char *s = trim(input);
    if (!*s)
        return NULL;
    /* split_commas() checks the balance of quotes and brackets before any item is looked at. */
    int brackets = 0;
    bool quoted = false;
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == '[')
            brackets++;
        else if (!quoted && *p == ']' && --brackets < 0)
            break;
    }
    if (quoted || brackets != 0) {
        snprintf(detail, size, "invalid syntax: %s", s);
        return PARSE_HEAD;
    }
    for (char *item = s, *p = s;; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == '[')
            brackets++;
        else if (!quoted && *p == ']')
            brackets--;
        if (*p && (quoted || brackets > 0 || *p != ','))
            continue;
        bool last = *p == '\0';
        *p = '\0';
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        char **slot = !strcmp(item, "path") ? path : !strcmp(item, "fd") ? fd : NULL;
        if (!slot) {
            snprintf(detail, size, "unknown option: %s", item);
            return PARSE_HEAD;
        }
        if (!eq) {
            snprintf(detail, size, "invalid syntax: %s", item);
            return PARSE_HEAD;
        }
        *slot = trim(eq + 1);
        if (last)
            break;
        item = p + 1;
    }
    return NULL;
}

const char *event_monitor_start(const char *value, char *detail, size_t size)
{
    char *copy = strdup(value), *path = NULL, *fd_text = NULL;
    const char *head = NULL;
    int fd = -1;
    detail[0] = '\0';
    if (!copy) {
        os_error(ENOMEM, detail, size);
        return IO_HEAD;
    }
    if ((head = parse(copy, &path, &fd_text, detail, size)))
        goto out;
    if (fd_text) {
        /* RawFd's FromStr: an optional sign, decimal digits, in i32 range. */
        char *end;
        errno = 0;
        long n = strtol(fd_text, &end, 10);
        if (!*fd_text || *end || errno || n < INT32_MIN || n > INT32_MAX) {
            snprintf(detail, size, "unable to convert %s for fd", fd_text);
            head = PARSE_HEAD;
            goto out;
        }
        fd = (int)n;
    } else if (path) {
        dequote(path);
        /* OpenOptions write + create + truncate: mode 0666 under CH's umask 077. */
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd < 0) {
            os_error(errno, detail, size);
            head = IO_HEAD;
            goto out;
        }
    } else {
        head = "Error parsing --event-monitor: path or fd required";
        goto out;
    }
    /* set_file_nonblocking(): F_GETFL's -1 on a bad fd makes F_SETFL fail with EBADF, as in CH. */
    int flags = fcntl(fd, F_GETFL);
    if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        os_error(errno, detail, size);
        head = IO_HEAD;
        goto out;
    }
    monitor_fd = fd;
    clock_gettime(CLOCK_MONOTONIC, &monitor_start);
out:
    free(copy);
    return head;
}

/* Growable text for one event. */
struct text {
    char *p;
    size_t len, cap;
};

static void add(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p)
            return; /* an event lost to memory pressure; CH would abort, the stand-in just drops it */
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void adds(struct text *t, const char *s) { add(t, s, strlen(s)); }

/* serde_json's string escaping: \" \\ \b \f \n \r \t, other control characters as \u00XX; the rest as is. */
static void add_json_string(struct text *t, const char *s)
{
    adds(t, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': adds(t, "\\\""); break;
        case '\\': adds(t, "\\\\"); break;
        case '\b': adds(t, "\\b"); break;
        case '\f': adds(t, "\\f"); break;
        case '\n': adds(t, "\\n"); break;
        case '\r': adds(t, "\\r"); break;
        case '\t': adds(t, "\\t"); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                adds(t, esc);
            } else {
                add(t, (const char *)p, 1);
            }
        }
    }
    adds(t, "\"");
}

/* write_all(): retried on EINTR; any other failure (EAGAIN on a full pipe included) drops the rest. */
static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(monitor_fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void event_monitor_emit(const char *source, const char *event, const char *key, const char *value)
{
    if (monitor_fd < 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = ((int64_t)now.tv_sec - monitor_start.tv_sec) * 1000000000 + (now.tv_nsec - monitor_start.tv_nsec);
    if (ns < 0)
        ns = 0;
    char num[96];
    struct text t = { 0 };
    snprintf(num, sizeof num, "{\n  \"timestamp\": {\n    \"secs\": %lld,\n    \"nanos\": %lld\n  },\n  \"source\": ",
             (long long)(ns / 1000000000), (long long)(ns % 1000000000));
    adds(&t, num);
    add_json_string(&t, source);
    adds(&t, ",\n  \"event\": ");
    add_json_string(&t, event);
    if (key) {
        adds(&t, ",\n  \"properties\": {\n    ");
        add_json_string(&t, key);
        adds(&t, ": ");
        add_json_string(&t, value);
        adds(&t, "\n  }\n}");
    } else {
        adds(&t, ",\n  \"properties\": null\n}");
    }
    if (t.p)
        write_all(t.p, t.len);
    write_all("\n\n", 2);
    free(t.p);
}
