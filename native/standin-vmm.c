/*
 * standin-vmm: a stand-in for the Cloud Hypervisor (CH) VMM process, for tests and the demo.
 *
 * What it is: a program that behaves, as far as vmprocd can observe, like
 * `cloud-hypervisor --api-socket path=...` started without a VM (the restore flow): CH's command line,
 * its start-up order (umask 077, SIGTERM/SIGINT blocked early, an OFD lock on `<socket>.lock`, stale socket
 * removal), its REST API on the unix socket with micro_http's wire quirks (no reason phrase, no
 * Content-Length on a 204, keep-alive, at most 10 connections, one request served at a time), its exit
 * codes and error chains, and what SIGTERM and SIGKILL leave behind. The VM is CH v53's state machine
 * (vmm/src/lib.rs, vm.rs) with its refusals and HTTP statuses, its --event-monitor events
 * (standin/event-monitor.c), the host side of its devices (standin/devices.c: disk images held open and
 * OFD-locked as CH locks them), and a modelled guest (standin/guest.c): the project's tiny guest is played
 * line for line on the serial console, with its counter in the snapshot's memory-ranges; any other kernel
 * boots silent. No guest code ever runs. The contract is /work/shared/cloud-hypervisor-api.md; where this
 * program and a real CH differ, this program is wrong.
 *
 * Why C: the test machines have no KVM and no CH binary, yet tests and the demo launch the VMM through
 * exactly the same path as real CH (unshare -m, a tmpfs, ip netns exec ...), hundreds at a time. A
 * libc-only C program costs about 1 MiB of RSS (mostly shared libc pages) and answers a ping within a
 * millisecond or two of exec; a Node or Python stand-in costs tens of MiB and tens of ms each.
 *
 * Per-sandbox knobs (see knob_defs): the daemon sets VMPROCD_SANDBOX_DIR and symlinks the request's rootfs
 * into it as rootfs.ext4. Tests make that "rootfs" a small text file of `standin.key=value` lines so that
 * one particular instance crashes, ignores SIGTERM, fails its restore, and so on.
 *
 * Shape: one thread, one poll() loop over a signalfd, the listening socket and up to 10 connections;
 * timed behaviour (socket delay, crash, delayed exit, the guest's next line) is a set of deadlines that become the
 * poll timeout.
 * Stand-in extension: GET /api/v1/standin.inspect reports what tests need to verify the launch (namespaces,
 * sandbox mount, symlinks, session, the last restore request).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "standin/event-monitor.h"
#include "standin/devices.h"
#include "standin/guest.h"

#define PROG "standin-vmm"
/* CH v53.0's CARGO_PKG_VERSION (vmm.ping's "version"); its build_version is the release tag, "v53.0". */
#define DEFAULT_VERSION "53.0.0"
/* micro_http serves at most this many connections; the next one gets a canned 503. */
#define MAX_CONNECTIONS 10
/* Rust's UnixListener::bind uses this backlog. */
#define LISTEN_BACKLOG 128
#define MAX_HEADER_BYTES (16 * 1024)
#define MAX_BODY_BYTES (1024 * 1024)
#define KNOB_FILE_MAX (64 * 1024)
#define KNOB_MAX_MS 86400000L
#define KNOB_MAX_COUNT 1000000L
/* CH's default guest memory (512 MiB), reported when the config does not say. */
#define DEFAULT_MEMORY_SIZE 536870912LL
/* serde_json's recursion limit. */
#define JSON_MAX_DEPTH 128
/* How long vmm.shutdown waits for its reply to drain before exiting anyway. */
#define SHUTDOWN_FLUSH_MS 1000
/* Connection buffers above this size are freed once empty, to keep idle instances small. */
#define BUFFER_KEEP_BYTES (16 * 1024)

/* micro_http's canned answer when all connections are taken (note: no space after 503). */
static const char SERVER_FULL_RESPONSE[] = "HTTP/1.1 503\r\n"
                                           "Server: Firecracker API\r\n"
                                           "Connection: close\r\n"
                                           "Content-Length: 40\r\n\r\n"
                                           "{ \"error\": \"Too many open connections\" }";

/* ------------------------------------------------------------------------------------------------ */
/* Small utilities                                                                                   */
/* ------------------------------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Blocks the whole process, like CH's single control loop does while it works on a request. */
static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static noreturn void out_of_memory(void)
{
    static const char msg[] = "Error: Cloud Hypervisor exited with the following chain of errors:\n"
                              "  0: Out of memory (" PROG ")\n";
    write_all(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(1);
}

/* One warning line on stderr, written with a single write() so concurrent writers do not interleave. */
static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    char line[2048];
    size_t n = (size_t)snprintf(line, sizeof line, PROG ": warning: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0)
        n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    line[n++] = '\n';
    write_all(STDERR_FILENO, line, n);
}

/* Rust's io::Error display, e.g. "No such file or directory (os error 2)". */
static const char *os_error(int err, char *buf, size_t size)
{
    snprintf(buf, size, "%s (os error %d)", strerror(err), err);
    return buf;
}

/* ------------------------------------------------------------------------------------------------ */
/* Growable string buffer                                                                            */
/* ------------------------------------------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_reserve(struct sbuf *sb, size_t extra)
{
    if (sb->len + extra + 1 <= sb->cap)
        return;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    char *p = realloc(sb->p, cap);
    if (!p)
        out_of_memory();
    sb->p = p;
    sb->cap = cap;
}

static void sb_add(struct sbuf *sb, const void *data, size_t n)
{
    sb_reserve(sb, n);
    if (n)
        memcpy(sb->p + sb->len, data, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void sb_puts(struct sbuf *sb, const char *s) { sb_add(sb, s, strlen(s)); }

static void sb_printf(struct sbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats into the spare room; grows and retries once if it did not fit. */
static void sb_printf(struct sbuf *sb, const char *fmt, ...)
{
    sb_reserve(sb, 128);
    for (;;) {
        size_t room = sb->cap - sb->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->p + sb->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            sb->p[sb->len] = '\0';
            return;
        }
        if ((size_t)n < room) {
            sb->len += (size_t)n;
            return;
        }
        sb_reserve(sb, (size_t)n);
    }
}

static void sb_free(struct sbuf *sb)
{
    free(sb->p);
    sb->p = NULL;
    sb->len = sb->cap = 0;
}

/* Drops the first n bytes, keeping the rest (pipelined requests) at the front. */
static void sb_consume(struct sbuf *sb, size_t n)
{
    if (n >= sb->len) {
        sb->len = 0;
    } else {
        memmove(sb->p, sb->p + n, sb->len - n);
        sb->len -= n;
    }
    if (sb->p)
        sb->p[sb->len] = '\0';
    if (sb->len == 0 && sb->cap > BUFFER_KEEP_BYTES)
        sb_free(sb);
}

/* ------------------------------------------------------------------------------------------------ */
/* JSON: output helpers                                                                              */
/* ------------------------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s, or 0 if the bytes there are not valid UTF-8. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0; /* overlong, surrogate or beyond U+10FFFF */
    return len;
}

/* Appends s as a quoted JSON string. Invalid UTF-8 (possible in argv or paths) becomes U+FFFD, so the
 * output always stays valid JSON. */
static void sb_json_str(struct sbuf *sb, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    sb_add(sb, "\"", 1);
    while (p < end) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            sb_add(sb, esc, 2);
            p++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': sb_puts(sb, "\\n"); break;
            case '\r': sb_puts(sb, "\\r"); break;
            case '\t': sb_puts(sb, "\\t"); break;
            case '\b': sb_puts(sb, "\\b"); break;
            case '\f': sb_puts(sb, "\\f"); break;
            default: sb_printf(sb, "\\u%04x", c); break;
            }
            p++;
        } else if (c < 0x80) {
            sb_add(sb, p, 1);
            p++;
        } else {
            size_t len = utf8_seq_len(p, (size_t)(end - p));
            if (len) {
                sb_add(sb, p, len);
                p += len;
            } else {
                sb_puts(sb, "\\ufffd");
                p++;
            }
        }
    }
    sb_add(sb, "\"", 1);
}

static void sb_json_cstr(struct sbuf *sb, const char *s)
{
    if (s)
        sb_json_str(sb, s, strlen(s));
    else
        sb_puts(sb, "null");
}

/* ------------------------------------------------------------------------------------------------ */
/* JSON: a small validating parser (enough to imitate serde_json's accept/reject and read fields)    */
/* ------------------------------------------------------------------------------------------------ */

struct jerr {
    char msg[256];
};

struct jparser {
    const char *start, *p, *end;
    int depth;
    struct jerr *err;
};

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

/* Records a serde_json-style message ("... at line L column C") and fails. */
static bool jp_fail(struct jparser *j, const char *what)
{
    int line = 1, col = 0;
    for (const char *q = j->start; q < j->p && q < j->end; q++) {
        if (*q == '\n') {
            line++;
            col = 0;
        } else {
            col++;
        }
    }
    if (j->p < j->end)
        col++;
    if (j->err)
        snprintf(j->err->msg, sizeof j->err->msg, "%s at line %d column %d", what, line, col);
    return false;
}

static void jp_ws(struct jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static void jp_out(struct sbuf *out, const void *d, size_t n)
{
    if (out)
        sb_add(out, d, n);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool jp_hex4(struct jparser *j, unsigned *cp)
{
    *cp = 0;
    for (int i = 0; i < 4; i++) {
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing a string");
        int v = hexval(*j->p);
        if (v < 0)
            return jp_fail(j, "invalid escape");
        *cp = *cp * 16 + (unsigned)v;
        j->p++;
    }
    return true;
}

static void utf8_encode(struct sbuf *out, unsigned cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    jp_out(out, b, n);
}

/* Parses the string at j->p (which points at the opening quote); decodes it into out when out != NULL. */
static bool jp_string(struct jparser *j, struct sbuf *out)
{
    j->p++;
    for (;;) {
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing a string");
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        if (c < 0x20)
            return jp_fail(j, "control character (\\u0000-\\u001F) found while parsing a string");
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return jp_fail(j, "EOF while parsing a string");
            char e = *j->p++;
            char lit;
            switch (e) {
            case '"': lit = '"'; break;
            case '\\': lit = '\\'; break;
            case '/': lit = '/'; break;
            case 'b': lit = '\b'; break;
            case 'f': lit = '\f'; break;
            case 'n': lit = '\n'; break;
            case 'r': lit = '\r'; break;
            case 't': lit = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!jp_hex4(j, &cp))
                    return false;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return jp_fail(j, "lone leading surrogate in hex escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return jp_fail(j, "unexpected end of hex escape");
                    j->p += 2;
                    if (!jp_hex4(j, &lo))
                        return false;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return jp_fail(j, "lone leading surrogate in hex escape");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                utf8_encode(out, cp);
                continue;
            }
            default:
                j->p--;
                return jp_fail(j, "invalid escape");
            }
            jp_out(out, &lit, 1);
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_seq_len((const unsigned char *)j->p, (size_t)(j->end - j->p));
            if (!len)
                return jp_fail(j, "invalid unicode code point");
            jp_out(out, j->p, len);
            j->p += len;
            continue;
        }
        jp_out(out, j->p, 1);
        j->p++;
    }
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool jp_number(struct jparser *j)
{
    if (*j->p == '-')
        j->p++;
    if (j->p >= j->end)
        return jp_fail(j, "EOF while parsing a value");
    if (*j->p == '0') {
        j->p++;
    } else if (is_digit(*j->p)) {
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    } else {
        return jp_fail(j, "invalid number");
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jp_fail(j, "invalid number");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jp_fail(j, "invalid number");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    return true;
}

static bool jp_literal(struct jparser *j, const char *word)
{
    for (const char *w = word; *w; w++, j->p++) {
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing a value");
        if (*j->p != *w)
            return jp_fail(j, "expected ident");
    }
    return true;
}

static bool jp_value(struct jparser *j);

static bool jp_object(struct jparser *j)
{
    if (++j->depth > JSON_MAX_DEPTH)
        return jp_fail(j, "recursion limit exceeded");
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        jp_ws(j);
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing an object");
        if (*j->p != '"')
            return jp_fail(j, "key must be a string");
        if (!jp_string(j, NULL))
            return false;
        jp_ws(j);
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing an object");
        if (*j->p != ':')
            return jp_fail(j, "expected `:`");
        j->p++;
        if (!jp_value(j))
            return false;
        jp_ws(j);
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing an object");
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == '}') {
            j->p++;
            j->depth--;
            return true;
        }
        return jp_fail(j, "expected `,` or `}`");
    }
}

static bool jp_array(struct jparser *j)
{
    if (++j->depth > JSON_MAX_DEPTH)
        return jp_fail(j, "recursion limit exceeded");
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        if (!jp_value(j))
            return false;
        jp_ws(j);
        if (j->p >= j->end)
            return jp_fail(j, "EOF while parsing a list");
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == ']') {
            j->p++;
            j->depth--;
            return true;
        }
        return jp_fail(j, "expected `,` or `]`");
    }
}

static bool jp_value(struct jparser *j)
{
    jp_ws(j);
    if (j->p >= j->end)
        return jp_fail(j, "EOF while parsing a value");
    switch (*j->p) {
    case '{': return jp_object(j);
    case '[': return jp_array(j);
    case '"': return jp_string(j, NULL);
    case 't': return jp_literal(j, "true");
    case 'f': return jp_literal(j, "false");
    case 'n': return jp_literal(j, "null");
    default:
        if (*j->p == '-' || is_digit(*j->p))
            return jp_number(j);
        return jp_fail(j, "expected value");
    }
}

/* True if [s, s+n) is exactly one JSON document (surrounding whitespace allowed). */
static bool json_validate(const char *s, size_t n, struct jerr *err)
{
    struct jparser j = { s, s, s + n, 0, err };
    if (!jp_value(&j))
        return false;
    jp_ws(&j);
    if (j.p != j.end)
        return jp_fail(&j, "trailing characters");
    return true;
}

static const char *json_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Type of the (validated) value starting at v. */
static enum jtype json_type(const char *v)
{
    switch (*v) {
    case 'n': return J_NULL;
    case 't': case 'f': return J_BOOL;
    case '"': return J_STR;
    case '[': return J_ARR;
    case '{': return J_OBJ;
    default: return J_NUM;
    }
}

/* Finds member `key` of the validated object at [v, end) and gives its value's span. A repeated key
 * resolves to its first occurrence. */
static bool json_member(const char *v, const char *end, const char *key, const char **vs, const char **ve)
{
    struct jparser j = { v, v, end, 0, NULL };
    size_t klen = strlen(key);
    jp_ws(&j);
    if (j.p >= end || *j.p != '{')
        return false;
    j.p++;
    for (;;) {
        jp_ws(&j);
        if (j.p >= end || *j.p != '"')
            return false;
        struct sbuf k = { 0 };
        if (!jp_string(&j, &k)) {
            sb_free(&k);
            return false;
        }
        bool match = k.len == klen && (klen == 0 || memcmp(k.p, key, klen) == 0);
        sb_free(&k);
        jp_ws(&j);
        j.p++; /* ':' */
        jp_ws(&j);
        const char *start = j.p;
        if (!jp_value(&j))
            return false;
        if (match) {
            *vs = start;
            *ve = j.p;
            return true;
        }
        jp_ws(&j);
        if (j.p >= end || *j.p != ',')
            return false;
        j.p++;
    }
}

/* Decodes the validated string value at [vs, ve) into out. */
static void json_string_value(const char *vs, const char *ve, struct sbuf *out)
{
    struct jparser j = { vs, vs, ve, 0, NULL };
    jp_string(&j, out);
}

/* serde's description of an unexpected value in "invalid type: <desc>, expected ...". */
static void json_describe(struct sbuf *sb, const char *vs, const char *ve)
{
    switch (json_type(vs)) {
    case J_NULL: sb_puts(sb, "null"); break;
    case J_BOOL: sb_printf(sb, "boolean `%.*s`", (int)(ve - vs), vs); break;
    case J_NUM:
        if (memchr(vs, '.', (size_t)(ve - vs)) || memchr(vs, 'e', (size_t)(ve - vs)) ||
            memchr(vs, 'E', (size_t)(ve - vs)))
            sb_printf(sb, "floating point `%.*s`", (int)(ve - vs), vs);
        else
            sb_printf(sb, "integer `%.*s`", (int)(ve - vs), vs);
        break;
    case J_STR: sb_printf(sb, "string %.*s", (int)(ve - vs), vs); break;
    case J_ARR: sb_puts(sb, "sequence"); break;
    case J_OBJ: sb_puts(sb, "map"); break;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Knobs: per-sandbox misbehaviour, read from $VMPROCD_SANDBOX_DIR/rootfs.ext4                       */
/* ------------------------------------------------------------------------------------------------ */

struct knobs {
    char version[64];        /* ping's version (CH's CARGO_PKG_VERSION) */
    char build_version[64];  /* ping's build_version and --version; "": the release tag of version */
    long socket_delay_ms;    /* wait before binding the API socket */
    bool no_socket;          /* never bind; stay alive */
    int exit_before_socket;  /* -1: off; else exit with this code before binding */
    long crash_after_ms;     /* -1: off; else crash this long after binding */
    int crash_signal;        /* 0: crash by exiting with crash_exit_code */
    int crash_exit_code;
    bool ignore_sigterm;     /* SIGTERM/SIGINT only print a warning */
    long sigterm_delay_ms;   /* delay between SIGTERM and the clean exit */
    long restore_delay_ms;   /* vm.restore blocks the loop this long */
    char *restore_error;     /* NULL: off; else vm.restore fails with this text */
    long ping_delay_ms;      /* vmm.ping blocks the loop this long */
    long stderr_lines;       /* numbered lines written to stderr at start-up */
    bool shutdown_no_reply;  /* vmm.shutdown exits without replying (a CH hazard) */
};

enum knob_kind { K_VERSION, K_MS, K_COUNT, K_BOOL, K_EXIT_CODE, K_SIGNAL, K_TEXT };

struct knob_def {
    const char *name; /* after "standin." */
    enum knob_kind kind;
    size_t offset;
};

#define KNOB(name, kind, field) { name, kind, offsetof(struct knobs, field) }
static const struct knob_def knob_defs[] = {
    KNOB("version", K_VERSION, version),
    KNOB("build_version", K_VERSION, build_version),
    KNOB("socket_delay_ms", K_MS, socket_delay_ms),
    KNOB("no_socket", K_BOOL, no_socket),
    KNOB("exit_before_socket", K_EXIT_CODE, exit_before_socket),
    KNOB("crash_after_ms", K_MS, crash_after_ms),
    KNOB("crash_signal", K_SIGNAL, crash_signal),
    KNOB("crash_exit_code", K_EXIT_CODE, crash_exit_code),
    KNOB("ignore_sigterm", K_BOOL, ignore_sigterm),
    KNOB("sigterm_delay_ms", K_MS, sigterm_delay_ms),
    KNOB("restore_delay_ms", K_MS, restore_delay_ms),
    KNOB("restore_error", K_TEXT, restore_error),
    KNOB("ping_delay_ms", K_MS, ping_delay_ms),
    KNOB("stderr_lines", K_COUNT, stderr_lines),
    KNOB("shutdown_no_reply", K_BOOL, shutdown_no_reply),
};

static const struct {
    const char *name;
    int sig;
} signal_names[] = {
    { "HUP", SIGHUP },   { "INT", SIGINT },   { "QUIT", SIGQUIT }, { "ILL", SIGILL },
    { "TRAP", SIGTRAP }, { "ABRT", SIGABRT }, { "BUS", SIGBUS },   { "FPE", SIGFPE },
    { "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "SEGV", SIGSEGV }, { "USR2", SIGUSR2 },
    { "PIPE", SIGPIPE }, { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "SYS", SIGSYS },
};

static void knobs_defaults(struct knobs *k)
{
    memset(k, 0, sizeof *k);
    snprintf(k->version, sizeof k->version, "%s", DEFAULT_VERSION);
    k->exit_before_socket = -1;
    k->crash_after_ms = -1;
    k->crash_exit_code = 1;
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    if (!is_digit(*s))
        return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes")) {
        *out = true;
        return true;
    }
    if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no")) {
        *out = false;
        return true;
    }
    return false;
}

/* "SIGSEGV", "segv" or "11". */
static bool parse_signal(const char *s, int *out)
{
    long n;
    if (parse_long(s, 1, SIGRTMAX, &n)) {
        *out = (int)n;
        return true;
    }
    const char *name = strncasecmp(s, "SIG", 3) == 0 ? s + 3 : s;
    for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++) {
        if (!strcasecmp(name, signal_names[i].name)) {
            *out = signal_names[i].sig;
            return true;
        }
    }
    return false;
}

static void knob_set(struct knobs *k, const char *key, const char *val)
{
    for (size_t i = 0; i < sizeof knob_defs / sizeof knob_defs[0]; i++) {
        const struct knob_def *d = &knob_defs[i];
        if (strcmp(d->name, key) != 0)
            continue;
        char *field = (char *)k + d->offset;
        long n;
        bool b;
        int sig;
        bool ok = true;
        switch (d->kind) {
        case K_VERSION:
            ok = *val && strlen(val) < sizeof k->version;
            if (ok)
                snprintf(field, sizeof k->version, "%s", val);
            break;
        case K_MS:
            if ((ok = parse_long(val, 0, KNOB_MAX_MS, &n)))
                *(long *)field = n;
            break;
        case K_COUNT:
            if ((ok = parse_long(val, 0, KNOB_MAX_COUNT, &n)))
                *(long *)field = n;
            break;
        case K_EXIT_CODE:
            if ((ok = parse_long(val, 0, 255, &n)))
                *(int *)field = (int)n;
            break;
        case K_BOOL:
            if ((ok = parse_bool(val, &b)))
                *(bool *)field = b;
            break;
        case K_SIGNAL:
            if ((ok = parse_signal(val, &sig)))
                *(int *)field = sig;
            break;
        case K_TEXT:
            free(*(char **)field);
            *(char **)field = strdup(val);
            if (!*(char **)field)
                out_of_memory();
            break;
        }
        if (!ok)
            warn("invalid value '%s' for knob standin.%s (ignored)", val, key);
        return;
    }
    warn("unknown knob standin.%s (ignored)", key);
}

/* Only lines of text (valid UTF-8, no control characters) can be knobs: this keeps the bytes of a real
 * ext4 image from being read as one. */
static bool is_text_line(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
        size_t len = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (!len)
            return false;
        i += len;
    }
    return true;
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Parses `standin.key=value` lines in buf[0..n) (buf[n] must be writable); everything else is ignored. */
static void knobs_parse(struct knobs *k, char *buf, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        char *line = buf + pos;
        char *nl = memchr(line, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - line) : n - pos;
        pos += len + 1;
        while (len > 0 && is_blank(line[len - 1]))
            len--;
        while (len > 0 && is_blank(*line)) {
            line++;
            len--;
        }
        if (len < 8 || strncmp(line, "standin.", 8) != 0 || !is_text_line(line, len))
            continue;
        line[len] = '\0';
        char *eq = strchr(line, '=');
        if (!eq) {
            warn("malformed knob line '%s' (expected standin.key=value; ignored)", line);
            continue;
        }
        char *key = line + 8, *val = eq + 1;
        char *kend = eq;
        while (kend > key && is_blank(kend[-1]))
            kend--;
        *kend = '\0';
        while (is_blank(*val))
            val++;
        knob_set(k, key, val);
    }
}

static void knobs_load(struct knobs *k, const char *sandbox_dir)
{
    if (!sandbox_dir)
        return;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/rootfs.ext4", sandbox_dir) >= (int)sizeof path)
        return;
    /* O_NONBLOCK: a FIFO planted as the rootfs must not hang start-up; only regular files are read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        return;
    }
    size_t cap = st.st_size < KNOB_FILE_MAX ? (size_t)st.st_size : KNOB_FILE_MAX;
    char *buf = malloc(cap + 1);
    if (!buf)
        out_of_memory();
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    knobs_parse(k, buf, n);
    free(buf);
}

/*
 * CH's BUILD_VERSION (cloud-hypervisor/build.rs:10-18): `git describe --dirty` of the tree it was built
 * from, else "v" + the crate version. A release is built on its tag, which has no patch component: crate
 * version 53.0.0 is build v53.0. standin.build_version overrides it.
 */
static void knobs_finish(struct knobs *k)
{
    if (k->build_version[0])
        return;
    size_t n = strlen(k->version);
    const char *dot1 = strchr(k->version, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (dot2 && !strchr(dot2 + 1, '.') && !strcmp(dot2, ".0"))
        n = (size_t)(dot2 - k->version);
    snprintf(k->build_version, sizeof k->build_version, "v%.*s", (int)n, k->version);
}

/* ------------------------------------------------------------------------------------------------ */
/* Process state                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

/*
 * CH v53's model (vmm/src/lib.rs): a VmConfig once vm.create stored one, and a Vm object only while booted.
 * VM_CREATED is "config, no Vm", which is also what vm.shutdown leaves (CH drops the Vm, so vm.info says
 * Created again, never Shutdown).
 */
enum vm_state { VM_NONE, VM_CREATED, VM_RUNNING, VM_PAUSED, VM_LOAD_FAILED };

/* VM_LOAD_FAILED: vm.boot created the Vm but could not load its kernel; CH keeps that Vm (state Created),
 * so a later vm.boot is "already created" and vm.delete shuts it down first. */
static const char *const vm_state_names[] = {
    [VM_NONE] = NULL, [VM_CREATED] = "Created", [VM_RUNNING] = "Running", [VM_PAUSED] = "Paused",
    [VM_LOAD_FAILED] = "Created",
};

struct conn {
    int fd;                 /* -1: free slot */
    struct sbuf in;         /* received bytes not yet consumed by a request */
    struct sbuf out;        /* reply bytes not yet written */
    size_t out_off;
    bool eof;               /* the peer shut down its sending side */
    bool close_after_flush; /* after a protocol error: close once the reply is out */
    bool continue_sent;     /* "100 Continue" already sent for the pending request */
};

static struct {
    int argc;
    char **argv;
    const char *sandbox_dir;
    struct knobs knobs;
    const char *socket_path; /* --api-socket path=...; NULL with fd=N */
    const char *event_monitor; /* --event-monitor value, or NULL */
    int api_fd;              /* --api-socket fd=N; -1 otherwise */
    int sig_fd, listen_fd, lock_fd;
    bool socket_created;     /* we bound socket_path (dev/ino below) and remove it on a clean exit */
    dev_t sock_dev;
    ino_t sock_ino;
    int64_t bind_at, crash_at, exit_at; /* deadlines in now_ms() time; -1: not armed */
    struct conn conns[MAX_CONNECTIONS];
    enum vm_state vm_state;
    struct sbuf vm_config;   /* raw VmConfig JSON (empty: report {}) */
    struct sbuf last_restore;
    bool have_last_restore;
    bool serial_ready;       /* CH's console_info: made at vm.create, boot after a shutdown, reboot, restore */
    bool vcpu_removal_pending; /* a vm.resize down the guest never acknowledged */
    unsigned long restore_count;
} g;

/* ------------------------------------------------------------------------------------------------ */
/* Exits                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/* CH's fatal exit: the error chain on stderr. Takes NULL-terminated lines. Leaves any socket behind, as
 * CH does when it dies of an error. */
static noreturn void die_chain(int code, ...)
{
    struct sbuf sb = { 0 }, lines = { 0 };
    va_list ap;
    va_start(ap, code);
    int i = 0;
    const char *first = NULL;
    for (const char *line; (line = va_arg(ap, const char *));) {
        first = first ? first : line;
        sb_printf(&lines, "  %d: %s\n", i++, line);
    }
    va_end(ap);
    /* cli_print_error_chain(): an error without a source is printed on its own, unnumbered. */
    if (i == 1)
        sb_printf(&sb, "Error: Cloud Hypervisor exited with the following error:\n  %s\n", first);
    else
        sb_printf(&sb, "Error: Cloud Hypervisor exited with the following chain of errors:\n%s", lines.p ? lines.p : "");
    write_all(STDERR_FILENO, sb.p, sb.len);
    exit(code);
}

/* Removes the API socket, but only if it is still the one we bound: a path someone re-used is not ours
 * to delete. */
static void remove_own_socket(void)
{
    struct stat st;
    if (g.socket_created && lstat(g.socket_path, &st) == 0 && st.st_dev == g.sock_dev &&
        st.st_ino == g.sock_ino)
        unlink(g.socket_path);
    g.socket_created = false;
}

static bool vm_booted(void) { return g.vm_state == VM_RUNNING || g.vm_state == VM_PAUSED; }
/* A Vm object exists (CH's VmOwnership::Owned), booted or not. */
static bool vm_owned(void) { return vm_booted() || g.vm_state == VM_LOAD_FAILED; }

/* CH's vmm_shutdown(): vm_delete() (shutting a booted VM down first), then "vmm"/"shutdown". */
static void vmm_shutdown_events(void)
{
    if (g.vm_state != VM_NONE) {
        if (vm_owned())
            event_monitor_emit("vm", "shutdown", NULL, NULL);
        guest_stop();
        devices_close();
        guest_serial_close();
        g.vm_state = VM_NONE;
        event_monitor_emit("vm", "deleted", NULL, NULL);
    }
    event_monitor_emit("vmm", "shutdown", NULL, NULL);
}

/* The clean exit (SIGTERM, SIGINT, vmm.shutdown, a guest power-off): shut the VM down, remove the socket,
 * exit. The lock file stays (CH never deletes it); the lock itself goes with the process. */
static noreturn void exit_clean(int code)
{
    vmm_shutdown_events();
    remove_own_socket();
    exit(code);
}

/* standin.crash_after_ms: die like a crashing CH, leaving the socket file behind. */
static noreturn void crash_now(void)
{
    int sig = g.knobs.crash_signal;
    if (sig > 0) {
        /* A deliberate crash must not litter core files (tests run hundreds of these). */
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        /* Still here: this signal's default action does not kill (e.g. SIGCHLD). Exit instead. */
    }
    char detail[160];
    snprintf(detail, sizeof detail, "Simulated crash %ld ms after the API socket was bound (standin.crash_after_ms)",
             g.knobs.crash_after_ms);
    die_chain(g.knobs.crash_exit_code, "The VMM thread exited with an error", detail, NULL);
}

/* ------------------------------------------------------------------------------------------------ */
/* Signals                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

/* Blocked first thing, read later through a signalfd: a SIGTERM that arrives during start-up is held
 * pending, not lost and not fatal (CH does the same with its signal thread). */
static void signals_block(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* A vanished client or stderr reader must not kill us (Rust programs ignore SIGPIPE too). */
    signal(SIGPIPE, SIG_IGN);
}

static void signals_open(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    g.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (g.sig_fd < 0) {
        char e[128];
        die_chain(1, "Error creating the signal handler", os_error(errno, e, sizeof e), NULL);
    }
}

static void handle_signals(void)
{
    struct signalfd_siginfo si;
    while (read(g.sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        const char *name = si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (g.knobs.ignore_sigterm) {
            warn("received %s; ignoring it (standin.ignore_sigterm)", name);
        } else if (g.knobs.sigterm_delay_ms > 0) {
            if (g.exit_at < 0)
                g.exit_at = now_ms() + g.knobs.sigterm_delay_ms;
        } else {
            exit_clean(0);
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Command line                                                                                      */
/* ------------------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "Stand-in for the Cloud Hypervisor VMM (vmprocd tests and demo); it models a VM, never runs one.\n"
            "\n"
            "Usage: cloud-hypervisor [OPTIONS]\n"
            "\n"
            "Options:\n"
            "      --api-socket <api-socket>  HTTP API socket (UNIX domain socket): "
            "path=</path/to/a/file> or fd=<fd>\n"
            "      --event-monitor <event-monitor>  Path to report events on: path=<path> or fd=<fd>\n"
            "  -v...                          Sets the level of debugging output (ignored)\n"
            "  -h, --help                     Print help\n"
            "  -V, --version                  Print version\n"
            "\n"
            "Knobs: `standin.key=value` lines in $VMPROCD_SANDBOX_DIR/rootfs.ext4 (see standin-vmm.c).\n");
}

/* clap's behaviour on a bad command line: a message, the usage, exit status 2. */
static noreturn void arg_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static noreturn void arg_error(const char *fmt, ...)
{
    fputs("error: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    usage(stderr);
    exit(2);
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (!d)
        out_of_memory();
    return d;
}

/* CH's OptionParser: comma-separated key=value items (a double-quoted value may contain commas). When
 * the value does not parse that way, or names neither path nor fd, the whole value is a bare path. */
static void parse_api_socket(const char *value)
{
    char *path = NULL, *fd = NULL;
    bool ok = true;
    const char *p = value;
    while (ok && *p) {
        const char *item = p;
        bool quoted = false;
        while (*p && (quoted || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        size_t n = (size_t)(p - item);
        if (*p == ',')
            p++;
        const char *eq = memchr(item, '=', n);
        if (!eq) {
            ok = false;
            break;
        }
        size_t klen = (size_t)(eq - item);
        const char *v = eq + 1;
        size_t vlen = n - klen - 1;
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
            v++;
            vlen -= 2;
        }
        char **slot = NULL;
        if (klen == 4 && !strncmp(item, "path", 4))
            slot = &path;
        else if (klen == 2 && !strncmp(item, "fd", 2))
            slot = &fd;
        if (!slot) {
            ok = false;
            break;
        }
        free(*slot);
        *slot = xstrndup(v, vlen);
    }
    if (ok && fd) {
        long n;
        if (!parse_long(fd, 0, INT_MAX, &n))
            die_chain(1, "Error parsing --api-socket", "invalid digit found in string", NULL);
        g.api_fd = (int)n;
        free(path);
    } else if (ok && path) {
        g.socket_path = path;
    } else {
        free(path);
        g.socket_path = xstrndup(value, strlen(value));
    }
    free(fd);
}

static void parse_args(int argc, char **argv)
{
    const char *api = NULL;
    bool version = false, verbose = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val;
        if (!strcmp(a, "--event-monitor") || !strncmp(a, "--event-monitor=", 16)) {
            if (a[15] == '=')
                val = a + 16;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                arg_error("a value is required for '--event-monitor <event-monitor>' but none was supplied");
            if (g.event_monitor)
                arg_error("the argument '--event-monitor <event-monitor>' cannot be used multiple times");
            g.event_monitor = val;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            version = true;
            continue;
        }
        if (a[0] == '-' && a[1] == 'v' && strspn(a + 1, "v") == strlen(a + 1)) {
            verbose = true;
            continue;
        }
        if (!strcmp(a, "--api-socket")) {
            if (i + 1 >= argc)
                arg_error("a value is required for '--api-socket <api-socket>' but none was supplied");
            val = argv[++i];
        } else if (!strncmp(a, "--api-socket=", 13)) {
            val = a + 13;
        } else {
            arg_error("unexpected argument '%s' found", a);
        }
        if (api)
            arg_error("the argument '--api-socket <api-socket>' cannot be used multiple times");
        if (!*val)
            arg_error("a value is required for '--api-socket <api-socket>' but none was supplied");
        api = val;
    }
    /* main.rs:921-931, once clap has accepted the whole command line (no --api-socket needed). */
    if (version) {
        printf("cloud-hypervisor %s\nMigration Protocol Versions: 0\n", g.knobs.build_version);
        if (verbose)
            printf("Enabled features: [\"io_uring\", \"kvm\"]\n");
        exit(0);
    }
    if (!api)
        arg_error("the following required arguments were not provided:\n  --api-socket <api-socket>");
    parse_api_socket(api);
}

/* ------------------------------------------------------------------------------------------------ */
/* The API socket                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

#define API_SERVER_ERROR "Failed to start the HTTP API server"

/* CH v53+: an OFD write lock on <path>.lock tells a live owner from a stale socket. Held (the fd kept
 * open) for the whole life of the process; the file is never deleted. */
static void api_socket_lock(void)
{
    char lock_path[PATH_MAX + 8], e[128], what[PATH_MAX + 64];
    snprintf(lock_path, sizeof lock_path, "%s.lock", g.socket_path);
    int fd = open(lock_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        snprintf(what, sizeof what, "Error creating the API socket lock file %s", lock_path);
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    }
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        if (errno == EAGAIN || errno == EACCES) {
            snprintf(what, sizeof what, "API socket %s is already in use by another running instance",
                     g.socket_path);
            die_chain(1, API_SERVER_ERROR, what, NULL);
        }
        snprintf(what, sizeof what, "Error locking %s", lock_path);
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    }
    g.lock_fd = fd;
}

static int api_socket_bind_path(void)
{
    char e[128], what[PATH_MAX + 64];
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(what, sizeof what, "Error binding to UNIX socket %s", g.socket_path);
    /* Checked before taking the lock so that a path that can never work leaves no lock file. */
    if (strlen(g.socket_path) >= sizeof addr.sun_path)
        die_chain(1, API_SERVER_ERROR, what, "path must be shorter than SUN_LEN", NULL);
    memcpy(addr.sun_path, g.socket_path, strlen(g.socket_path) + 1);

    api_socket_lock();
    /* We hold the lock, so a socket at this path is stale (its owner died): remove it. Errors are ignored,
     * as in CH: bind() below reports any real problem. */
    (void)unlink(g.socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    struct stat st;
    if (stat(g.socket_path, &st) == 0) {
        g.socket_created = true;
        g.sock_dev = st.st_dev;
        g.sock_ino = st.st_ino;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0)
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    return fd;
}

/* --api-socket fd=N: a socket the parent already bound (listen() again is harmless and covers a socket
 * that is bound but not yet listening). */
static int api_socket_adopt_fd(void)
{
    char e[128], what[64];
    int fd = g.api_fd;
    struct stat st;
    snprintf(what, sizeof what, "Invalid API socket fd %d", fd);
    if (fstat(fd, &st) < 0)
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    if (!S_ISSOCK(st.st_mode))
        die_chain(1, API_SERVER_ERROR, what, os_error(ENOTSOCK, e, sizeof e), NULL);
    if (listen(fd, LISTEN_BACKLOG) < 0)
        die_chain(1, API_SERVER_ERROR, what, os_error(errno, e, sizeof e), NULL);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

static void api_socket_open(void)
{
    g.listen_fd = g.api_fd >= 0 ? api_socket_adopt_fd() : api_socket_bind_path();
    if (g.knobs.crash_after_ms >= 0)
        g.crash_at = now_ms() + g.knobs.crash_after_ms;
}

/* ------------------------------------------------------------------------------------------------ */
/* HTTP: request parsing and response framing (micro_http's wire behaviour)                          */
/* ------------------------------------------------------------------------------------------------ */

struct http_request {
    const char *method;
    size_t method_len;
    const char *path; /* absolute path, without query */
    size_t path_len;
    const char *body; /* NULL when there is none (no Content-Length, or 0) */
    size_t body_len;
    size_t header_len, total_len;
    bool expect_continue;
    int err_status;
    char err_msg[200];
};

enum { HTTP_BAD = -1, HTTP_INCOMPLETE = 0, HTTP_COMPLETE = 1 };

static int http_bad(struct http_request *rq, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int http_bad(struct http_request *rq, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rq->err_msg, sizeof rq->err_msg, fmt, ap);
    va_end(ap);
    rq->err_status = status;
    return HTTP_BAD;
}

static bool span_ieq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

static bool span_eq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Parses one request from the front of buf. HTTP_INCOMPLETE: wait for more bytes (rq->expect_continue
 * and rq->header_len are set once the headers are complete). HTTP_BAD: rq->err_*. */
static int http_parse(const char *buf, size_t len, struct http_request *rq)
{
    memset(rq, 0, sizeof *rq);
    const char *hend = memmem(buf, len, "\r\n\r\n", 4);
    if (!hend) {
        if (len >= MAX_HEADER_BYTES)
            return http_bad(rq, 400, "Request headers are larger than %d bytes.", MAX_HEADER_BYTES);
        return HTTP_INCOMPLETE;
    }
    rq->header_len = (size_t)(hend - buf) + 4;
    if (rq->header_len > MAX_HEADER_BYTES)
        return http_bad(rq, 400, "Request headers are larger than %d bytes.", MAX_HEADER_BYTES);

    /* Request line: METHOD SP URI SP VERSION */
    const char *le = memmem(buf, (size_t)(hend - buf) + 2, "\r\n", 2);
    const char *sp1 = memchr(buf, ' ', (size_t)(le - buf));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(le - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || memchr(sp2 + 1, ' ', (size_t)(le - sp2 - 1)))
        return http_bad(rq, 400, "Invalid request line.");
    rq->method = buf;
    rq->method_len = (size_t)(sp1 - buf);
    if (rq->method_len == 0)
        return http_bad(rq, 400, "Unsupported HTTP method.");
    for (size_t i = 0; i < rq->method_len; i++)
        if (buf[i] < 'A' || buf[i] > 'Z')
            return http_bad(rq, 400, "Unsupported HTTP method.");
    const char *ver = sp2 + 1;
    if (!span_eq(ver, (size_t)(le - ver), "HTTP/1.1") && !span_eq(ver, (size_t)(le - ver), "HTTP/1.0"))
        return http_bad(rq, 400, "Unsupported HTTP version.");
    const char *uri = sp1 + 1, *uend = sp2;
    if ((size_t)(uend - uri) >= 7 && strncasecmp(uri, "http://", 7) == 0) {
        /* Absolute form: drop scheme and authority. */
        const char *slash = memchr(uri + 7, '/', (size_t)(uend - uri - 7));
        uri = slash ? slash : uend;
    }
    if (uri < uend && *uri != '/')
        return http_bad(rq, 400, "Invalid URI.");
    const char *q = uri;
    while (q < uend && *q != '?' && *q != '#')
        q++;
    rq->path = uri;
    rq->path_len = (size_t)(q - uri);

    /* Header lines between the request line and the empty line. */
    unsigned long long content_length = 0;
    for (const char *p = le + 2; p < hend + 2;) {
        const char *e = memmem(p, (size_t)(hend + 2 - p), "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (!colon || colon == p)
            return http_bad(rq, 400, "Invalid header.");
        const char *v = colon + 1, *vend = e;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        size_t nlen = (size_t)(colon - p), vlen = (size_t)(vend - v);
        if (span_ieq(p, nlen, "Content-Length")) {
            if (vlen == 0 || vlen > 12)
                return http_bad(rq, vlen > 12 ? 413 : 400, "Invalid value. Key:Content-Length; Value:%.*s",
                                (int)vlen, v);
            content_length = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (!is_digit(v[i]))
                    return http_bad(rq, 400, "Invalid value. Key:Content-Length; Value:%.*s", (int)vlen, v);
                content_length = content_length * 10 + (unsigned)(v[i] - '0');
            }
        } else if (span_ieq(p, nlen, "Transfer-Encoding")) {
            /* micro_http cannot read chunked bodies: say so loudly instead of misreading the stream. */
            if (!span_ieq(v, vlen, "identity"))
                return http_bad(rq, 400, "Unsupported Transfer-Encoding: %.*s", (int)vlen, v);
        } else if (span_ieq(p, nlen, "Expect")) {
            rq->expect_continue = span_ieq(v, vlen, "100-continue");
        }
        p = e + 2;
    }
    if (content_length > MAX_BODY_BYTES)
        return http_bad(rq, 413, "Request payload with size %llu is larger than the limit of %d allowed by server.",
                        content_length, MAX_BODY_BYTES);
    if (len - rq->header_len < content_length)
        return HTTP_INCOMPLETE;
    rq->body = content_length ? buf + rq->header_len : NULL;
    rq->body_len = (size_t)content_length;
    rq->total_len = rq->header_len + (size_t)content_length;
    return HTTP_COMPLETE;
}

/* Status line with no reason phrase; Content-Type/Length on everything but 1xx and 204. */
static void http_frame(struct sbuf *out, int status, const char *server, const char *ctype, const char *body,
                       size_t n)
{
    sb_printf(out, "HTTP/1.1 %d \r\nServer: %s\r\nConnection: keep-alive\r\n", status, server);
    if (status != 204 && status >= 200)
        sb_printf(out, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, n);
    sb_puts(out, "\r\n");
    if (n)
        sb_add(out, body, n);
}

/* ------------------------------------------------------------------------------------------------ */
/* API handlers                                                                                      */
/* ------------------------------------------------------------------------------------------------ */

struct reply {
    int status;
    struct sbuf body;
    bool shutdown_vmm; /* vmm.shutdown: reply, then exit */
};

/* Sets a JSON array error chain as the body, like CH's error_response(). Takes NULL-terminated lines. */
static void reply_chain(struct reply *r, int status, ...)
{
    r->status = status;
    r->body.len = 0;
    sb_puts(&r->body, "[");
    va_list ap;
    va_start(ap, status);
    bool first = true;
    for (const char *line; (line = va_arg(ap, const char *)); first = false) {
        if (!first)
            sb_puts(&r->body, ",");
        sb_json_cstr(&r->body, line);
    }
    va_end(ap);
    sb_puts(&r->body, "]");
}

static void reply_bad_request(struct reply *r) { reply_chain(r, 400, "Bad Request", NULL); }

/* serde's deserialisation failure, e.g. ["Failed to deserialize JSON","missing field `source_url`"]. */
static void reply_serde(struct reply *r, const char *detail)
{
    reply_chain(r, 400, "Failed to deserialize JSON", detail, NULL);
}

static void reply_invalid_type(struct reply *r, const char *vs, const char *ve, const char *expected)
{
    struct sbuf d = { 0 };
    sb_puts(&d, "invalid type: ");
    json_describe(&d, vs, ve);
    sb_printf(&d, ", expected %s", expected);
    reply_serde(r, d.p);
    sb_free(&d);
}

static bool method_is(const struct http_request *rq, const char *m) { return span_eq(rq->method, rq->method_len, m); }

static const char *state_name(void) { return vm_state_names[g.vm_state]; }

static void set_config(const char *json, size_t n)
{
    g.vm_config.len = 0;
    if (json)
        sb_add(&g.vm_config, json, n);
}

/* memory_actual_size: the config's memory.size when it has one, else CH's default. */
static long long vm_memory_size(void)
{
    const char *cfg = g.vm_config.p, *end = cfg + g.vm_config.len, *ms, *me, *ss, *se;
    if (g.vm_config.len && json_member(cfg, end, "memory", &ms, &me) && json_member(ms, me, "size", &ss, &se) &&
        json_type(ss) == J_NUM) {
        long long v = strtoll(ss, NULL, 10);
        if (v > 0)
            return v;
    }
    return DEFAULT_MEMORY_SIZE;
}

/* The span of config member a.b (b NULL: just a), if the stored VmConfig has it. */
static bool config_member(const char *a, const char *b, const char **vs, const char **ve)
{
    const char *cfg = g.vm_config.p, *end = cfg + g.vm_config.len, *as, *ae;
    if (!g.vm_config.len || !json_member(cfg, end, a, &as, &ae))
        return false;
    if (!b) {
        *vs = as;
        *ve = ae;
        return true;
    }
    return json_type(as) == J_OBJ && json_member(as, ae, b, vs, ve);
}

/* A string member as a fresh C string (caller frees), or NULL. */
static char *config_string(const char *a, const char *b)
{
    const char *vs, *ve;
    if (!config_member(a, b, &vs, &ve) || json_type(vs) != J_STR)
        return NULL;
    struct sbuf out = { 0 };
    json_string_value(vs, ve, &out);
    sb_add(&out, "", 0);
    return out.p;
}

static long long config_number(const char *a, const char *b, long long fallback)
{
    const char *vs, *ve;
    if (!config_member(a, b, &vs, &ve) || json_type(vs) != J_NUM)
        return fallback;
    return strtoll(vs, NULL, 10);
}

static bool config_true(const char *a)
{
    const char *vs, *ve;
    return config_member(a, NULL, &vs, &ve) && json_type(vs) == J_BOOL && *vs == 't';
}

/* Sets config member a.b to the number v (creating a or b when missing), like CH updating its config. */
static void config_set_number(const char *a, const char *b, long long v)
{
    struct sbuf out = { 0 };
    const char *cfg = g.vm_config.p, *vs, *ve;
    if (!g.vm_config.len)
        sb_puts(&g.vm_config, "{}"), cfg = g.vm_config.p;
    if (config_member(a, b, &vs, &ve)) {
        sb_add(&out, cfg, (size_t)(vs - cfg));
        sb_printf(&out, "%lld", v);
        sb_add(&out, ve, g.vm_config.len - (size_t)(ve - cfg));
    } else {
        /* Insert right after the opening brace of a (or of the whole config when a is missing). */
        const char *obj = json_skip_ws(cfg, cfg + g.vm_config.len), *as, *ae;
        bool have_a = config_member(a, NULL, &as, &ae) && json_type(as) == J_OBJ;
        const char *brace = have_a ? as : obj;
        const char *after = json_skip_ws(brace + 1, cfg + g.vm_config.len);
        bool empty = *after == '}';
        sb_add(&out, cfg, (size_t)(brace + 1 - cfg));
        if (have_a)
            sb_printf(&out, "\"%s\":%lld%s", b, v, empty ? "" : ",");
        else
            sb_printf(&out, "\"%s\":{\"%s\":%lld}%s", a, b, v, empty ? "" : ",");
        sb_add(&out, brace + 1, g.vm_config.len - (size_t)(brace + 1 - cfg));
    }
    sb_free(&g.vm_config);
    g.vm_config = out;
}

/* pre_create_console_devices(): the serial device per the config (a File is created and truncated). */
static bool serial_prepare(struct reply *r, const char *head)
{
    char *mode = config_string("serial", "mode"), *file = config_string("serial", "file");
    struct guest_error e = { 0 };
    bool ok = guest_serial_open(mode, file, &e);
    free(mode);
    free(file);
    if (!ok && r)
        reply_chain(r, 500, "Error from API", head, e.line[0], e.line[1], NULL);
    g.serial_ready = ok;
    return ok;
}

static bool json_array_next(const char **p, const char *end, const char **es, const char **ee);

/* A 500 with `head` and then the chain in e, below "Error from API". */
static void reply_error(struct reply *r, const char *head, const struct guest_error *e)
{
    const char *l[6] = { 0 };
    for (int i = 0; i < e->n && i < 6; i++)
        l[i] = e->line[i];
    reply_chain(r, 500, "Error from API", head, l[0], l[1], l[2], l[3], l[4], l[5], NULL);
}

#define MAX_CONFIG_DISKS 16

/* Vm::new's block devices: opens the config's disks (CH device_manager.rs make_virtio_block_device). */
static bool vm_open_disks(struct guest_error *e)
{
    struct disk_spec disks[MAX_CONFIG_DISKS] = { 0 };
    struct sbuf paths[MAX_CONFIG_DISKS] = { 0 };
    size_t n = 0;
    const char *vs, *ve, *es, *ee, *ms, *me;
    if (config_member("disks", NULL, &vs, &ve) && json_type(vs) == J_ARR) {
        for (const char *p = vs; n < MAX_CONFIG_DISKS && json_array_next(&p, ve, &es, &ee);) {
            if (json_type(es) != J_OBJ || !json_member(es, ee, "path", &ms, &me) || json_type(ms) != J_STR)
                continue; /* vhost-user disks have no path, and no image to lock */
            json_string_value(ms, me, &paths[n]);
            sb_add(&paths[n], "", 0);
            disks[n].path = paths[n].p;
            disks[n].readonly = json_member(es, ee, "readonly", &ms, &me) && json_type(ms) == J_BOOL && *ms == 't';
            disks[n].full_lock = json_member(es, ee, "lock_granularity", &ms, &me) && json_type(ms) == J_STR &&
                                 span_eq(ms, (size_t)(me - ms), "\"Full\"");
            n++;
        }
    }
    bool ok = devices_open_disks(disks, n, e);
    for (size_t i = 0; i < n; i++)
        sb_free(&paths[i]);
    return ok;
}

/* Removes the top-level member `key` from the stored config (a plain key, no escapes in it). */
static void config_remove(const char *key)
{
    const char *cfg = g.vm_config.p, *end = cfg + g.vm_config.len, *vs, *ve;
    if (!config_member(key, NULL, &vs, &ve))
        return;
    /* Back from the value over `:`, blanks and the quoted key to where the member starts. */
    const char *ks = vs;
    while (ks > cfg && ks[-1] != '"')
        ks--;
    ks -= strlen(key) + 2;
    const char *from = ks, *to = json_skip_ws(ve, end);
    if (*to == ',') {
        to = json_skip_ws(to + 1, end); /* drop the member and the comma after it */
    } else {
        const char *p = from;
        while (p > cfg && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r'))
            p--;
        if (p > cfg && p[-1] == ',')
            from = p - 1; /* the last member: drop the comma before it */
    }
    struct sbuf out = { 0 };
    sb_add(&out, cfg, (size_t)(from - cfg));
    sb_add(&out, to, (size_t)(end - to));
    sb_free(&g.vm_config);
    g.vm_config = out;
}

#define MAX_CONFIG_TAPS 16

/* Vm::new's net devices. CH takes `net` out of the config while it makes them and puts it back only when
 * all were made (device_manager.rs:3074-3085), so a TAP that fails to open leaves the VM's config without
 * any net: vm.info no longer shows it and the next vm.boot makes a VM with no network. */
static bool vm_open_taps(struct guest_error *e)
{
    const char *names[MAX_CONFIG_TAPS] = { 0 };
    struct sbuf bufs[MAX_CONFIG_TAPS] = { 0 };
    size_t n = 0;
    const char *vs, *ve, *es, *ee, *ts, *te;
    if (config_member("net", NULL, &vs, &ve) && json_type(vs) == J_ARR) {
        for (const char *p = vs; n < MAX_CONFIG_TAPS && json_array_next(&p, ve, &es, &ee);) {
            /* A net with fds uses those, not a name (make_virtio_net_device); without a name CH makes a new
             * vmtapN, which the stand-in does not model, nor vhost-user. */
            const char *fs, *fe;
            if (json_type(es) != J_OBJ || !json_member(es, ee, "tap", &ts, &te) || json_type(ts) != J_STR ||
                (json_member(es, ee, "fds", &fs, &fe) && json_type(fs) != J_NULL))
                continue;
            json_string_value(ts, te, &bufs[n]);
            sb_add(&bufs[n], "", 0);
            names[n] = bufs[n].p;
            n++;
        }
    }
    bool ok = devices_open_taps(names, n, e);
    for (size_t i = 0; i < n; i++)
        sb_free(&bufs[i]);
    if (!ok)
        config_remove("net");
    return ok;
}

/* Vm::new's virtio devices in CH's order (device_manager.rs:2641-2644): disks, then TAPs. False with the
 * chain in e; nothing stays open then. */
static bool vm_open_devices(struct guest_error *e)
{
    if (vm_open_disks(e) && vm_open_taps(e))
        return true;
    devices_close();
    return false;
}

/* Vm::new + boot for the stored config; false with the chain in e when the kernel does not load. */
static bool guest_start(struct guest_error *e)
{
    char *kernel = config_string("payload", "kernel"), *cmdline = config_string("payload", "cmdline");
    struct guest_spec spec = { .kernel = kernel, .cmdline = cmdline, .pvpanic = config_true("pvpanic"),
                               .memory_size = vm_memory_size() };
    bool ok = guest_boot(&spec, e);
    g.vcpu_removal_pending = false;
    free(kernel);
    free(cmdline);
    return ok;
}

/* CH's vm_reboot() once the "rebooting" event is out: drop the VM (its disk locks go with it, lib.rs
 * vm_reboot), make the console again, then Vm::new and boot: open and lock the disks, load the kernel. */
static bool vm_reboot(struct guest_error *e)
{
    guest_stop();
    devices_close();
    serial_prepare(NULL, NULL);
    if (!vm_open_devices(e) || !devices_lock_disks(e) || !guest_start(e)) {
        devices_close();
        g.vm_state = VM_CREATED;
        return false;
    }
    g.vm_state = VM_RUNNING;
    event_monitor_emit("vm", "rebooted", NULL, NULL);
    return true;
}

static void h_vmm_ping(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "GET"))
        return reply_bad_request(r);
    if (g.knobs.ping_delay_ms > 0)
        sleep_ms(g.knobs.ping_delay_ms);
    struct sbuf *b = &r->body;
    sb_puts(b, "{\"build_version\":");
    sb_json_cstr(b, g.knobs.build_version);
    sb_puts(b, ",\"version\":");
    sb_json_cstr(b, g.knobs.version);
    sb_printf(b, ",\"pid\":%d,\"features\":[\"io_uring\",\"kvm\"]}", (int)getpid());
    r->status = 200;
}

static void h_vmm_shutdown(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "PUT"))
        return reply_bad_request(r);
    r->status = 200;
    r->shutdown_vmm = true;
}

static void h_vm_create(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "PUT"))
        return reply_bad_request(r);
    if (!rq->body) {
        r->status = 400; /* CH answers a bodiless vm.create with a bare 400 */
        return;
    }
    struct jerr e;
    if (!json_validate(rq->body, rq->body_len, &e))
        return reply_serde(r, e.msg);
    const char *v = json_skip_ws(rq->body, rq->body + rq->body_len);
    if (json_type(v) != J_OBJ)
        return reply_invalid_type(r, v, rq->body + rq->body_len, "struct VmConfig");
    if (g.vm_state != VM_NONE)
        return reply_chain(r, 500, "Error from API", "The VM could not be created", "VM is already created", NULL);
    set_config(rq->body, rq->body_len);
    if (!serial_prepare(r, "The VM could not be created")) {
        set_config(NULL, 0);
        return;
    }
    g.vm_state = VM_CREATED;
    r->status = 204;
}

/* vm.boot/shutdown/delete/pause/resume: PUT with no body, then a state transition. */
static bool vm_action_precheck(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "PUT") || rq->body) {
        reply_bad_request(r);
        return false;
    }
    return true;
}

/* An error CH reports from its VmState::valid_transition() through a MigratableError (vm.rs Pausable). */
static void reply_transition(struct reply *r, const char *head, const char *verb, const char *to)
{
    char cannot[32], failed[64], detail[128];
    snprintf(cannot, sizeof cannot, "Cannot %s VM", verb);
    snprintf(failed, sizeof failed, "Failed to %s migratable component", verb);
    snprintf(detail, sizeof detail, "Invalid transition: InvalidStateTransition(%s, %s)", state_name(), to);
    reply_chain(r, 500, "Error from API", head, cannot, failed, detail, NULL);
}

static void h_vm_boot(const struct http_request *rq, struct reply *r)
{
    if (!vm_action_precheck(rq, r))
        return;
    static const char head[] = "The VM could not boot";
    if (vm_owned())
        return reply_chain(r, 500, "Error from API", head, "VM is already created", NULL);
    event_monitor_emit("vm", "booting", NULL, NULL);
    if (g.vm_state == VM_NONE)
        return reply_chain(r, 404, "Error from API", head, "VM config is missing", NULL);
    if (!g.serial_ready && !serial_prepare(r, head))
        return;
    struct guest_error e = { 0 };
    /* Vm::new opens the disks (a failure there makes no Vm); Vm::boot then locks them before it waits for
     * the kernel (vm.rs:2761-2766), and a Vm that fails to boot stays (lib.rs:2285-2287). A config without
     * a payload fails validation before any of that. */
    bool bootable = config_member("payload", "kernel", &(const char *){ 0 }, &(const char *){ 0 });
    if (bootable && !vm_open_devices(&e))
        return reply_error(r, head, &e);
    if (bootable && !devices_lock_disks(&e)) {
        g.vm_state = VM_LOAD_FAILED;
        return reply_error(r, head, &e);
    }
    if (!guest_start(&e)) {
        /* A config that fails validation makes no Vm; a kernel that does not load leaves one behind. */
        if (strcmp(e.line[0], "Failed to validate config") != 0)
            g.vm_state = VM_LOAD_FAILED;
        else
            devices_close();
        return reply_chain(r, 500, "Error from API", head, e.line[0], e.line[1], e.n > 2 ? e.line[2] : NULL, NULL);
    }
    g.vm_state = VM_RUNNING;
    event_monitor_emit("vm", "booted", NULL, NULL);
    r->status = 204;
}

static void h_vm_shutdown(const struct http_request *rq, struct reply *r)
{
    if (!vm_action_precheck(rq, r))
        return;
    if (!vm_owned())
        return reply_chain(r, 500, "Error from API", "The VM could not shutdown", "VM is not running", NULL);
    guest_stop();
    devices_close();
    guest_serial_close();
    g.serial_ready = false;
    g.vm_state = VM_CREATED;
    event_monitor_emit("vm", "shutdown", NULL, NULL);
    r->status = 204;
}

static void h_vm_delete(const struct http_request *rq, struct reply *r)
{
    if (!vm_action_precheck(rq, r))
        return;
    /* Deleting no VM is not an error in CH, and emits nothing. */
    if (g.vm_state != VM_NONE) {
        if (vm_owned())
            event_monitor_emit("vm", "shutdown", NULL, NULL);
        guest_stop();
        devices_close();
        guest_serial_close();
        g.serial_ready = false;
        g.vm_state = VM_NONE;
        set_config(NULL, 0);
        event_monitor_emit("vm", "deleted", NULL, NULL);
    }
    r->status = 204;
}

static void h_vm_pause(const struct http_request *rq, struct reply *r)
{
    static const char head[] = "The VM could not be paused";
    if (!vm_action_precheck(rq, r))
        return;
    if (!vm_booted())
        return reply_chain(r, 500, "Error from API", head, "VM is not running", NULL);
    event_monitor_emit("vm", "pausing", NULL, NULL);
    if (g.vm_state != VM_RUNNING)
        return reply_transition(r, head, "pause", "Paused");
    guest_pause();
    g.vm_state = VM_PAUSED;
    event_monitor_emit("vm", "paused", NULL, NULL);
    r->status = 204;
}

/* Vm::resume(): "resuming", the transition check, "resumed". */
static bool vm_resume(struct reply *r, const char *head)
{
    event_monitor_emit("vm", "resuming", NULL, NULL);
    if (g.vm_state != VM_PAUSED) {
        reply_transition(r, head, "resume", "Running");
        return false;
    }
    guest_resume();
    g.vm_state = VM_RUNNING;
    event_monitor_emit("vm", "resumed", NULL, NULL);
    return true;
}

static void h_vm_resume(const struct http_request *rq, struct reply *r)
{
    if (!vm_action_precheck(rq, r))
        return;
    if (!vm_booted())
        return reply_chain(r, 500, "Error from API", "The VM could not resume", "VM is not running", NULL);
    if (vm_resume(r, "The VM could not resume"))
        r->status = 204;
}

/* CH's vm_reboot(): "rebooting" before anything is checked, then the VM is shut down and booted again. */
static void h_vm_reboot(const struct http_request *rq, struct reply *r)
{
    if (!vm_action_precheck(rq, r))
        return;
    event_monitor_emit("vm", "rebooting", NULL, NULL);
    if (!vm_owned())
        return reply_chain(r, 404, "Error from API", "The VM could not reboot", "VM is not created", NULL);
    struct guest_error e = { 0 };
    if (!vm_reboot(&e))
        return reply_chain(r, 500, "Error from API", "The VM could not reboot", e.line[0], e.line[1],
                           e.n > 2 ? e.line[2] : NULL, NULL);
    r->status = 204;
}

/* Checks that url is file://<existing directory>; on failure fills a 500 chain under `head`. */
static bool check_file_url_dir(struct reply *r, const char *head, const char *url)
{
    char detail[PATH_MAX + 128], e[128];
    if (strncmp(url, "file://", 7) != 0) {
        snprintf(detail, sizeof detail, "Invalid URL %s: only file:// URLs are supported", url);
        reply_chain(r, 500, "Error from API", head, detail, NULL);
        return false;
    }
    struct stat st;
    const char *dir = url + 7;
    int err = stat(dir, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
    if (err) {
        snprintf(detail, sizeof detail, "Cannot access snapshot directory %s: %s", dir, os_error(err, e, sizeof e));
        reply_chain(r, 500, "Error from API", head, detail, NULL);
        return false;
    }
    return true;
}

/* Creates dir/name (never over an existing file, like CH's create_new) with the given bytes. */
static bool snapshot_file(const char *dir, const char *name, const char *data, size_t n, int *err)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
    if (fd < 0) {
        *err = errno;
        return false;
    }
    write_all(fd, data, n);
    close(fd);
    return true;
}

/*
 * Vm::send() after "snapshotted": config.json (the VmConfig), state.json (the Snapshot tree: the vm's own
 * state, and cpu-manager, memory-manager, device-manager sections), then the memory manager's
 * memory-ranges. The stand-in's config.json is the VmConfig as it was given, not CH's expanded one.
 */
static bool snapshot_send(struct reply *r, const char *head, const char *dir)
{
    static const char send[] = "Cannot send VM snapshot", failed[] = "Failed to send migratable component snapshot";
    char e[128];
    int err = 0;
    const char *cfg = g.vm_config.len ? g.vm_config.p : "{}";
    if (!snapshot_file(dir, "config.json", cfg, strlen(cfg), &err)) {
        reply_chain(r, 500, "Error from API", head, send, failed, "Error creating VM config snapshot file",
                    os_error(err, e, sizeof e), NULL);
        return false;
    }
    char vcpu[512];
    struct guest_error ge = { 0 };
    long long mem = vm_memory_size();
    struct sbuf state = { 0 }, text = { 0 };
    guest_vcpu_state(vcpu, sizeof vcpu);
    sb_puts(&state, "{\"snapshots\":{\"cpu-manager\":{\"snapshots\":{\"0\":{\"snapshots\":{},\"snapshot_data\":{\"state\":");
    sb_json_cstr(&state, vcpu);
    sb_puts(&state, "}}},\"snapshot_data\":{\"state\":\"{}\"}},\"device-manager\":{\"snapshots\":{},"
                    "\"snapshot_data\":{\"state\":\"{}\"}},\"memory-manager\":{\"snapshots\":{},\"snapshot_data\":{\"state\":");
    sb_printf(&text, "{\"memory_ranges\":{\"data\":[{\"gpa\":0,\"length\":%lld}]}}", mem);
    sb_json_str(&state, text.p, text.len);
    sb_puts(&state, "}}},\"snapshot_data\":{\"state\":\"{\\\"clock\\\":null}\"}}");
    bool ok = snapshot_file(dir, "state.json", state.p, state.len, &err);
    sb_free(&state);
    sb_free(&text);
    if (!ok) {
        reply_chain(r, 500, "Error from API", head, send, failed, "Error creating VM state snapshot file",
                    os_error(err, e, sizeof e), NULL);
        return false;
    }
    if (!guest_save_memory(dir, mem, &ge)) {
        reply_chain(r, 500, "Error from API", head, ge.line[0], ge.line[1], ge.line[2], ge.line[3], NULL);
        return false;
    }
    return true;
}

static void h_vm_snapshot(const struct http_request *rq, struct reply *r)
{
    static const char head[] = "The VM could not be snapshotted";
    if (!method_is(rq, "PUT") || !rq->body)
        return reply_bad_request(r);
    struct jerr e;
    const char *end = rq->body + rq->body_len, *vs, *ve;
    if (!json_validate(rq->body, rq->body_len, &e))
        return reply_serde(r, e.msg);
    const char *v = json_skip_ws(rq->body, end);
    if (json_type(v) != J_OBJ)
        return reply_invalid_type(r, v, end, "struct VmSnapshotConfig");
    if (!json_member(v, end, "destination_url", &vs, &ve))
        return reply_serde(r, "missing field `destination_url`");
    if (json_type(vs) != J_STR)
        return reply_invalid_type(r, vs, ve, "a string");
    if (!vm_booted())
        return reply_chain(r, 500, "Error from API", head, "VM is not running", NULL);
    event_monitor_emit("vm", "snapshotting", NULL, NULL);
    if (g.vm_state != VM_PAUSED)
        return reply_chain(r, 500, "Error from API", head, "Cannot snapshot VM", "Failed to snapshot migratable component",
                           "Trying to snapshot while VM is running", NULL);
    event_monitor_emit("vm", "snapshotted", NULL, NULL);
    struct sbuf url = { 0 };
    json_string_value(vs, ve, &url);
    sb_add(&url, "", 0);
    if (strncmp(url.p, "file://", 7) != 0)
        check_file_url_dir(r, head, url.p);
    else if (snapshot_send(r, head, url.p + 7))
        r->status = 204;
    sb_free(&url);
}

/* Rust's Debug of a PathBuf: the path in quotes, with quotes and backslashes escaped. */
static void sb_debug_path(struct sbuf *sb, const char *path)
{
    sb_puts(sb, "\"");
    for (const char *p = path; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_add(sb, "\\", 1);
        sb_add(sb, p, 1);
    }
    sb_puts(sb, "\"");
}

/* serde_json's position of the end of the document's top-level value ("line L column C"). */
static void json_end_position(const char *s, size_t n, int *line, int *col)
{
    struct jparser j = { s, s, s + n, 0, NULL };
    jp_value(&j);
    *line = 1;
    *col = 0;
    for (const char *q = s; q < j.p; q++) {
        if (*q == '\n') {
            (*line)++;
            *col = 0;
        } else {
            (*col)++;
        }
    }
}

/*
 * migration/mod.rs recv_vm_config()/recv_vm_state(): reads dir/name as one JSON object for `type`
 * (`required`: a member serde insists on, or NULL), or fills r with CH's chain for what is wrong
 * (`what` is "config" or "state").
 */
static bool restore_read_json(struct reply *r, const char *head, const char *dir, const char *name, const char *what,
                              const char *type, const char *required, struct sbuf *out)
{
    static const char cannot[] = "Cannot restore VM", recv[] = "Failed to receive migratable component snapshot";
    char path[PATH_MAX + 32], e[128];
    struct sbuf line = { 0 };
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        sb_printf(&line, "Error opening VM %s snapshot file ", what);
        sb_debug_path(&line, path);
        reply_chain(r, 500, "Error from API", head, cannot, recv, line.p, os_error(errno, e, sizeof e), NULL);
        sb_free(&line);
        return false;
    }
    ssize_t n;
    char buf[65536];
    out->len = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0 && out->len <= MAX_BODY_BYTES * 4)
        sb_add(out, buf, (size_t)n);
    int read_err = n < 0 ? errno : 0;
    close(fd);
    sb_add(out, "", 0);
    if (read_err) {
        sb_printf(&line, "Error reading VM %s snapshot file ", what);
        sb_debug_path(&line, path);
        reply_chain(r, 500, "Error from API", head, cannot, recv, line.p, os_error(read_err, e, sizeof e), NULL);
        sb_free(&line);
        return false;
    }
    struct jerr je;
    char deser[64];
    snprintf(deser, sizeof deser, "Error deserialising VM %s snapshot", what);
    const char *end = out->p + out->len, *v = json_skip_ws(out->p, end), *vs, *ve;
    if (!json_validate(out->p, out->len, &je)) {
        reply_chain(r, 500, "Error from API", head, cannot, recv, deser, je.msg, NULL);
        return false;
    }
    if (json_type(v) != J_OBJ) {
        sb_puts(&line, "invalid type: ");
        json_describe(&line, v, end);
        sb_printf(&line, ", expected %s", type);
    } else if (required && !json_member(v, end, required, &vs, &ve)) {
        int l, c;
        json_end_position(out->p, out->len, &l, &c);
        sb_printf(&line, "missing field `%s` at line %d column %d", required, l, c);
    }
    if (line.len) {
        reply_chain(r, 500, "Error from API", head, cannot, recv, deser, line.p, NULL);
        sb_free(&line);
        return false;
    }
    return true;
}

/*
 * What vm.restore reads of the snapshot, in CH v53's order, failing where CH fails with its chain: the
 * URL (migration/mod.rs url_to_path), config.json (recv_vm_config, lib.rs:2354-2356), the restore
 * config against it (config.rs RestoreConfig::validate), state.json (recv_vm_state, lib.rs:1912), then
 * in Vm::new the config's validation and memory-ranges (memory_manager.rs SnapshotOpen). On success the
 * VM has the snapshot's config, its console and its guest (Paused); on failure nothing is left.
 */
static bool restore_snapshot_files(struct reply *r, const char *head, const char *url, bool on_demand, bool prefault)
{
    static const char cannot[] = "Cannot restore VM", send[] = "Failed to send migratable component snapshot";
    struct sbuf line = { 0 }, config = { 0 }, state = { 0 };
    char e[128], path[PATH_MAX + 32];
    bool ok = false;
    struct stat st;
    const char *dir = url + 7;
    if (strncmp(url, "file://", 7) != 0) {
        sb_printf(&line, "Could not extract path from URL: %s", url);
        reply_chain(r, 500, "Error from API", head, cannot, send, line.p, NULL);
        goto out;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        sb_puts(&line, "Destination is not a directory: ");
        sb_debug_path(&line, dir);
        reply_chain(r, 500, "Error from API", head, cannot, send, line.p, NULL);
        goto out;
    }
    if (!restore_read_json(r, head, dir, "config.json", "config", "struct VmConfig", NULL, &config))
        goto out;
    if (on_demand && prefault) {
        reply_chain(r, 500, "Error from API", head, "Failed to validate config",
                    "'prefault' cannot be combined with 'memory_restore_mode=ondemand'", NULL);
        goto out;
    }
    if (!restore_read_json(r, head, dir, "state.json", "state", "struct Snapshot", "snapshots", &state))
        goto out;
    set_config(config.p, config.len);
    serial_prepare(NULL, NULL);
    if (!config_member("payload", "kernel", &(const char *){ 0 }, &(const char *){ 0 })) {
        reply_chain(r, 500, "Error from API", head, "Failed to validate config", "Payload configuration is not bootable",
                    "No bootitem provided: neither firmware nor kernel", NULL);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/memory-ranges", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        reply_chain(r, 500, "Error from API", head, "Memory manager error", "Error opening snapshot file",
                    os_error(errno, e, sizeof e), NULL);
        goto fail;
    }
    close(fd);
    /* The guest comes back from state.json and memory-ranges; a snapshot of a guest the stand-in does not
     * model (or one CH made) restores a VM that runs nothing. */
    guest_restore(dir, state.p, on_demand, config_true("pvpanic"));
    ok = true;
    goto out;
fail:
    guest_serial_close();
    g.serial_ready = false;
    set_config(NULL, 0);
out:
    sb_free(&line);
    sb_free(&config);
    sb_free(&state);
    return ok;
}

/* Reads an optional boolean member; false (with a 400 in r) on a wrong type. */
static bool restore_bool(const char *obj, const char *end, const char *key, bool *out, struct reply *r)
{
    const char *vs, *ve;
    if (!json_member(obj, end, key, &vs, &ve))
        return true;
    if (json_type(vs) != J_BOOL) {
        reply_invalid_type(r, vs, ve, "a boolean");
        return false;
    }
    *out = *vs == 't';
    return true;
}

static void h_vm_restore(const struct http_request *rq, struct reply *r)
{
    static const char head[] = "The VM could not be restored";
    if (!method_is(rq, "PUT") || !rq->body)
        return reply_bad_request(r);
    const char *end = rq->body + rq->body_len, *vs, *ve;
    struct jerr e;
    if (!json_validate(rq->body, rq->body_len, &e))
        return reply_serde(r, e.msg);
    /* Recorded before any check, so tests see exactly what the daemon sent even when it fails. */
    g.last_restore.len = 0;
    sb_add(&g.last_restore, rq->body, rq->body_len);
    g.have_last_restore = true;
    g.restore_count++;

    /* Deserialisation, in the HTTP thread in CH: a failure here is a 400. */
    const char *obj = json_skip_ws(rq->body, end);
    if (json_type(obj) != J_OBJ)
        return reply_invalid_type(r, obj, end, "struct RestoreConfig");
    if (!json_member(obj, end, "source_url", &vs, &ve))
        return reply_serde(r, "missing field `source_url`");
    if (json_type(vs) != J_STR)
        return reply_invalid_type(r, vs, ve, "path string");
    struct sbuf url = { 0 };
    json_string_value(vs, ve, &url);
    sb_add(&url, "", 0);
    bool prefault = false, resume = false, on_demand = false;
    if (!restore_bool(obj, end, "prefault", &prefault, r) || !restore_bool(obj, end, "resume", &resume, r))
        goto out;
    if (json_member(obj, end, "memory_restore_mode", &vs, &ve)) {
        if (json_type(vs) != J_STR) {
            reply_invalid_type(r, vs, ve, "enum MemoryRestoreMode");
            goto out;
        }
        struct sbuf mode = { 0 };
        json_string_value(vs, ve, &mode);
        sb_add(&mode, "", 0);
        bool copy = !strcmp(mode.p, "Copy");
        on_demand = !strcmp(mode.p, "OnDemand");
        if (!copy && !on_demand) {
            struct sbuf d = { 0 };
            sb_printf(&d, "unknown variant `%s`, expected `Copy` or `OnDemand`", mode.p);
            reply_serde(r, d.p);
            sb_free(&d);
        }
        sb_free(&mode);
        if (!copy && !on_demand)
            goto out;
    }
    if (json_member(obj, end, "net_fds", &vs, &ve) && json_type(vs) != J_ARR && json_type(vs) != J_NULL) {
        reply_invalid_type(r, vs, ve, "a sequence");
        goto out;
    }

    /* The restore itself, in CH's VMM thread: failures are 500 chains and leave no VM behind. */
    if (g.vm_state != VM_NONE) {
        reply_chain(r, 500, "Error from API", head, "VM is already created", NULL);
        goto out;
    }
    if (g.knobs.restore_delay_ms > 0)
        sleep_ms(g.knobs.restore_delay_ms);
    if (g.knobs.restore_error) {
        reply_chain(r, 500, "Error from API", head, g.knobs.restore_error, NULL);
        goto out;
    }
    if (!restore_snapshot_files(r, head, url.p, on_demand, prefault))
        goto out;
    /* Vm::new_from_snapshot opens the snapshot config's disks; Vm::restore() emits "restoring", then takes
     * the disk locks (vm.rs:2960-2967). A failure drops the Vm. */
    struct guest_error de = { 0 };
    bool devices_ok = vm_open_devices(&de);
    if (devices_ok)
        event_monitor_emit("vm", "restoring", NULL, NULL);
    if (!devices_ok || !devices_lock_disks(&de)) {
        guest_stop();
        devices_close();
        guest_serial_close();
        g.serial_ready = false;
        set_config(NULL, 0);
        reply_error(r, head, &de);
        goto out;
    }
    /* Vm::restore() brings the VM back Paused; resume: true is a vm_resume() after it. */
    g.vm_state = VM_PAUSED;
    event_monitor_emit("vm", "restored", NULL, NULL);
    if (resume && !vm_resume(r, head))
        goto out;
    r->status = 204;
out:
    sb_free(&url);
}

static void h_vm_info(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "GET"))
        return reply_bad_request(r);
    if (g.vm_state == VM_NONE)
        return reply_chain(r, 404, "Error from API", "The VM info is not available", "VM is not created", NULL);
    struct sbuf *b = &r->body;
    sb_puts(b, "{\"config\":");
    if (g.vm_config.len)
        sb_add(b, g.vm_config.p, g.vm_config.len);
    else
        sb_puts(b, "{}");
    sb_printf(b, ",\"state\":\"%s\",\"memory_actual_size\":%lld}", state_name(), vm_memory_size());
    r->status = 200;
}

/* The next element of the validated array whose remaining text starts at *p (after '[' or ','). */
static bool json_array_next(const char **p, const char *end, const char **es, const char **ee)
{
    struct jparser j = { *p, *p, end, 0, NULL };
    jp_ws(&j);
    if (j.p >= end || *j.p == ']')
        return false;
    if (*j.p == ',' || *j.p == '[')
        j.p++;
    jp_ws(&j);
    if (j.p >= end || *j.p == ']')
        return false;
    *es = j.p;
    if (!jp_value(&j))
        return false;
    *ee = j.p;
    *p = j.p;
    return true;
}

/* Appends one device's counters, named by its id or, without one, the name CH generates (_disk0, _net1). */
static void counters_of(struct sbuf *b, const char *array, const char *prefix, const char *names, int *next_id,
                        bool *first)
{
    const char *vs, *ve, *es, *ee, *is, *ie;
    if (!config_member(array, NULL, &vs, &ve) || json_type(vs) != J_ARR)
        return;
    for (const char *p = vs; json_array_next(&p, ve, &es, &ee);) {
        sb_puts(b, *first ? "" : ",");
        *first = false;
        if (json_type(es) == J_OBJ && json_member(es, ee, "id", &is, &ie) && json_type(is) == J_STR)
            sb_add(b, is, (size_t)(ie - is));
        else
            sb_printf(b, "\"%s%d\"", prefix, (*next_id)++);
        sb_printf(b, ":{%s}", names);
    }
}

/* vm.counters: the guest moves no data, so every counter is at its start value (for a block device's
 * latencies that is what CH reports before any I/O: min and max u64::MAX, avg u64::MAX / 10000). */
static void h_vm_counters(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "GET"))
        return reply_bad_request(r);
    if (!vm_booted())
        return reply_chain(r, 500, "Error from API", "The VM info is not available", "VM is not running", NULL);
    static const char block[] = "\"read_bytes\":0,\"write_bytes\":0,\"read_ops\":0,\"write_ops\":0,"
                                "\"read_latency_min\":18446744073709551615,\"read_latency_max\":18446744073709551615,"
                                "\"read_latency_avg\":1844674407370955,\"write_latency_min\":18446744073709551615,"
                                "\"write_latency_max\":18446744073709551615,\"write_latency_avg\":1844674407370955";
    static const char net[] = "\"rx_bytes\":0,\"rx_frames\":0,\"tx_bytes\":0,\"tx_frames\":0";
    bool first = true;
    int next_id = 0;
    sb_puts(&r->body, "{");
    counters_of(&r->body, "disks", "_disk", block, &next_id, &first);
    counters_of(&r->body, "net", "_net", net, &next_id, &first);
    sb_puts(&r->body, "}");
    r->status = 200;
}

/* Reads an optional unsigned member; false (with a 400 in r) on a wrong type. */
static bool resize_field(const char *obj, const char *end, const char *key, const char *type, long long *out,
                         struct reply *r)
{
    const char *vs, *ve;
    if (!json_member(obj, end, key, &vs, &ve) || json_type(vs) == J_NULL)
        return true;
    if (json_type(vs) != J_NUM || *vs == '-' || memchr(vs, '.', (size_t)(ve - vs))) {
        reply_invalid_type(r, vs, ve, type);
        return false;
    }
    *out = strtoll(vs, NULL, 10);
    return true;
}

static void h_vm_resize(const struct http_request *rq, struct reply *r)
{
    static const char head[] = "The VM could not be resized";
    if (!method_is(rq, "PUT") || !rq->body)
        return reply_bad_request(r);
    struct jerr e;
    const char *end = rq->body + rq->body_len;
    if (!json_validate(rq->body, rq->body_len, &e))
        return reply_serde(r, e.msg);
    const char *obj = json_skip_ws(rq->body, end);
    if (json_type(obj) != J_OBJ)
        return reply_invalid_type(r, obj, end, "struct VmResizeData");
    long long vcpus = -1, ram = -1, balloon = -1;
    if (!resize_field(obj, end, "desired_vcpus", "u32", &vcpus, r) || !resize_field(obj, end, "desired_ram", "u64", &ram, r) ||
        !resize_field(obj, end, "desired_balloon", "u64", &balloon, r))
        return;
    if (g.vm_state == VM_NONE)
        return reply_chain(r, 404, "Error from API", head, "VM is not created", NULL);
    if (!vm_booted()) {
        /* No Vm yet: CH only edits the config it will boot. */
        if (vcpus >= 0)
            config_set_number("cpus", "boot_vcpus", vcpus);
        if (ram >= 0)
            config_set_number("memory", "size", ram);
        if (balloon >= 0 && config_member("balloon", NULL, &(const char *){ 0 }, &(const char *){ 0 }))
            config_set_number("balloon", "size", balloon);
        r->status = 204;
        return;
    }
    event_monitor_emit("vm", "resizing", NULL, NULL);
    if (vcpus >= 0) {
        long long boot = config_number("cpus", "boot_vcpus", 1), max = config_number("cpus", "max_vcpus", boot);
        if (vcpus == 0)
            return reply_chain(r, 500, "Error from API", head, "Error from CPU manager", "Requested zero vCPUs", NULL);
        if (vcpus > max)
            return reply_chain(r, 500, "Error from API", head, "Error from CPU manager", "Requested vCPUs exceed maximum",
                               NULL);
        if (vcpus != boot && g.vcpu_removal_pending) {
            /* The modelled guest never ejects a removed vCPU, so a removal stays pending: CH's 429. */
            r->status = 429;
            sb_puts(&r->body, "[\"Too Many Requests\"]");
            return;
        }
        if (vcpus < boot)
            g.vcpu_removal_pending = true;
        config_set_number("cpus", "boot_vcpus", vcpus);
    }
    if (ram >= 0) {
        long long size = vm_memory_size(), hotplug = config_number("memory", "hotplug_size", 0);
        if (ram != size && (ram < size || ram > size + hotplug))
            return reply_chain(r, 500, "Error from API", head, "Memory manager error",
                               "The requested hotplug memory addition is not a valid size", NULL);
        config_set_number("memory", "size", ram);
    }
    if (balloon >= 0) {
        const char *bs, *be;
        if (!config_member("balloon", NULL, &bs, &be) || json_type(bs) != J_OBJ)
            return reply_chain(r, 500, "Error from API", head, "Error from device manager",
                               "Missing virtio-balloon, can't proceed as expected", NULL);
        config_set_number("balloon", "size", balloon);
    }
    event_monitor_emit("vm", "resized", NULL, NULL);
    r->status = 204;
}

/* ---- standin.inspect: facts about this process for launch tests ---- */

static void sb_json_readlink(struct sbuf *b, const char *path)
{
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target);
    if (n < 0 || (size_t)n >= sizeof target)
        sb_puts(b, "null");
    else
        sb_json_str(b, target, (size_t)n);
}

/* Undoes mountinfo's octal escapes (\040 for a space, ...) in place. */
static void mountinfo_unescape(char *s)
{
    char *d = s;
    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *d++ = *s++;
        }
    }
    *d = '\0';
}

/* The fstype of the mount whose mount point is dir (the last such entry: it is mounted on top). */
static bool mount_fstype(const char *dir, char *out, size_t size)
{
    char canon[PATH_MAX];
    const char *want = realpath(dir, canon) ? canon : dir;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (getline(&line, &cap, f) > 0) {
        /* id parent major:minor root mount-point options [optional...] - fstype source super-options */
        char *save = NULL, *mp = NULL, *fstype = NULL;
        int i = 0;
        bool after_sep = false;
        for (char *t = strtok_r(line, " \n", &save); t; t = strtok_r(NULL, " \n", &save), i++) {
            if (i == 4)
                mp = t;
            if (after_sep) {
                fstype = t;
                break;
            }
            if (i > 5 && !strcmp(t, "-"))
                after_sep = true;
        }
        if (!mp || !fstype)
            continue;
        mountinfo_unescape(mp);
        if (!strcmp(mp, want)) {
            snprintf(out, size, "%s", fstype);
            found = true;
        }
    }
    free(line);
    fclose(f);
    return found;
}

static void h_standin_inspect(const struct http_request *rq, struct reply *r)
{
    if (!method_is(rq, "GET"))
        return reply_bad_request(r);
    struct sbuf *b = &r->body;
    char path[PATH_MAX + 32], fstype[64];
    sb_printf(b, "{\"pid\":%d,\"ppid\":%d,\"pgid\":%d,\"sid\":%d", (int)getpid(), (int)getppid(), (int)getpgrp(),
              (int)getsid(0));
    sb_puts(b, ",\"netns\":");
    sb_json_readlink(b, "/proc/self/ns/net");
    sb_puts(b, ",\"mntns\":");
    sb_json_readlink(b, "/proc/self/ns/mnt");
    sb_puts(b, ",\"sandbox_dir\":");
    sb_json_cstr(b, g.sandbox_dir);
    sb_puts(b, ",\"sandbox_fstype\":");
    sb_json_cstr(b, g.sandbox_dir && mount_fstype(g.sandbox_dir, fstype, sizeof fstype) ? fstype : NULL);
    sb_puts(b, ",\"links\":{\"vmlinux\":");
    if (g.sandbox_dir && snprintf(path, sizeof path, "%s/vmlinux", g.sandbox_dir) < (int)sizeof path)
        sb_json_readlink(b, path);
    else
        sb_puts(b, "null");
    sb_puts(b, ",\"rootfs.ext4\":");
    if (g.sandbox_dir && snprintf(path, sizeof path, "%s/rootfs.ext4", g.sandbox_dir) < (int)sizeof path)
        sb_json_readlink(b, path);
    else
        sb_puts(b, "null");
    /* Where each link leads in the end (through /proc/PID/fd/N to the file the VMM holds open). */
    sb_puts(b, "},\"files\":{");
    static const char *const link_names[] = { "vmlinux", "rootfs.ext4" };
    for (size_t i = 0; i < sizeof link_names / sizeof *link_names; i++) {
        char resolved[PATH_MAX];
        sb_printf(b, "%s\"%s\":", i ? "," : "", link_names[i]);
        if (g.sandbox_dir && snprintf(path, sizeof path, "%s/%s", g.sandbox_dir, link_names[i]) < (int)sizeof path &&
            realpath(path, resolved))
            sb_json_cstr(b, resolved);
        else
            sb_puts(b, "null");
    }
    sb_puts(b, "},\"last_restore\":");
    if (g.have_last_restore)
        sb_add(b, g.last_restore.p, g.last_restore.len); /* validated JSON, embedded as is */
    else
        sb_puts(b, "null");
    sb_printf(b, ",\"restore_count\":%lu,\"argv\":[", g.restore_count);
    for (int i = 0; i < g.argc; i++) {
        if (i)
            sb_puts(b, ",");
        sb_json_cstr(b, g.argv[i]);
    }
    sb_puts(b, "],\"state\":");
    sb_json_cstr(b, state_name());
    sb_puts(b, ",\"api_socket\":");
    sb_json_cstr(b, g.socket_path);
    if (g.api_fd >= 0)
        sb_printf(b, ",\"api_socket_fd\":%d", g.api_fd);
    else
        sb_puts(b, ",\"api_socket_fd\":null");
    sb_puts(b, ",\"version\":");
    sb_json_cstr(b, g.knobs.version);
    sb_puts(b, "}");
    r->status = 200;
}

typedef void (*handler_fn)(const struct http_request *rq, struct reply *r);

static const struct route {
    const char *path;
    handler_fn fn;
} routes[] = {
    { "/api/v1/vmm.ping", h_vmm_ping },       { "/api/v1/vmm.shutdown", h_vmm_shutdown },
    { "/api/v1/vm.create", h_vm_create },     { "/api/v1/vm.boot", h_vm_boot },
    { "/api/v1/vm.shutdown", h_vm_shutdown }, { "/api/v1/vm.delete", h_vm_delete },
    { "/api/v1/vm.pause", h_vm_pause },       { "/api/v1/vm.resume", h_vm_resume },
    { "/api/v1/vm.snapshot", h_vm_snapshot }, { "/api/v1/vm.restore", h_vm_restore },
    { "/api/v1/vm.info", h_vm_info },         { "/api/v1/vm.reboot", h_vm_reboot },
    { "/api/v1/vm.counters", h_vm_counters }, { "/api/v1/vm.resize", h_vm_resize },
    { "/api/v1/standin.inspect", h_standin_inspect },
};

/* ------------------------------------------------------------------------------------------------ */
/* Connections                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

static void conn_close(struct conn *c)
{
    close(c->fd);
    sb_free(&c->in);
    sb_free(&c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static bool conn_has_output(const struct conn *c) { return c->out_off < c->out.len; }

/* Writes what the socket takes now; the poll loop finishes the rest. A peer that is gone loses its
 * replies, as with micro_http. */
static void conn_flush(struct conn *c)
{
    while (conn_has_output(c)) {
        ssize_t w = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            conn_close(c);
            return;
        }
    }
    c->out_off = 0;
    sb_consume(&c->out, c->out.len);
}

/* For vmm.shutdown: the reply should reach the client before the process goes away. */
static void conn_flush_blocking(struct conn *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        conn_flush(c);
        if (c->fd < 0 || !conn_has_output(c))
            return;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return;
        struct pollfd p = { .fd = c->fd, .events = POLLOUT };
        poll(&p, 1, (int)left);
    }
}

static void conn_read(struct conn *c)
{
    sb_reserve(&c->in, 4096);
    ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1, MSG_DONTWAIT);
    if (n > 0) {
        c->in.len += (size_t)n;
        c->in.p[c->in.len] = '\0';
    } else if (n == 0) {
        c->eof = true;
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
        conn_close(c);
    }
}

static noreturn void vmm_shutdown(struct conn *c, struct reply *r)
{
    if (!g.knobs.shutdown_no_reply) {
        http_frame(&c->out, r->status, "Cloud Hypervisor API", "application/json", r->body.p, r->body.len);
        conn_flush_blocking(c, SHUTDOWN_FLUSH_MS);
    }
    exit_clean(0);
}

static void route_request(struct conn *c, const struct http_request *rq)
{
    struct reply r = { 0 };
    const struct route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !rt; i++)
        if (span_eq(rq->path, rq->path_len, routes[i].path))
            rt = &routes[i];
    if (rt)
        rt->fn(rq, &r);
    else
        reply_chain(&r, 404, "Not Found", NULL);
    if (r.shutdown_vmm)
        vmm_shutdown(c, &r);
    http_frame(&c->out, r.status, "Cloud Hypervisor API", "application/json", r.body.p, r.body.len);
    sb_free(&r.body);
}

/* Serves complete requests from the connection's buffer, one at a time, in order. Stops while a reply is
 * still being written (a client that does not read cannot make us buffer without bound). */
static void conn_process(struct conn *c)
{
    while (c->fd >= 0 && !conn_has_output(c) && !c->close_after_flush) {
        struct http_request rq;
        int rc = http_parse(c->in.p ? c->in.p : "", c->in.len, &rq);
        if (rc == HTTP_INCOMPLETE) {
            if (rq.expect_continue && !c->continue_sent) {
                /* micro_http's interim answer (built by the library, hence its own Server name). */
                http_frame(&c->out, 100, "Firecracker API", "", NULL, 0);
                c->continue_sent = true;
                conn_flush(c);
                continue;
            }
            break;
        }
        if (rc == HTTP_BAD) {
            /* Where the next request starts is unknown: answer like micro_http, then close. */
            struct sbuf body = { 0 }, msg = { 0 };
            sb_printf(&msg, "%s\nAll previous unanswered requests will be dropped.", rq.err_msg);
            sb_puts(&body, "{ \"error\": ");
            sb_json_str(&body, msg.p, msg.len);
            sb_puts(&body, " }");
            http_frame(&c->out, rq.err_status, "Firecracker API", "text/plain", body.p, body.len);
            sb_free(&body);
            sb_free(&msg);
            c->close_after_flush = true;
            break;
        }
        route_request(c, &rq);
        sb_consume(&c->in, rq.total_len);
        c->continue_sent = false;
        conn_flush(c);
    }
    if (c->fd < 0)
        return;
    conn_flush(c);
    if (c->fd >= 0 && !conn_has_output(c) && (c->close_after_flush || c->eof))
        conn_close(c);
}

static struct conn *conn_free_slot(void)
{
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (g.conns[i].fd < 0)
            return &g.conns[i];
    return NULL;
}

static void accept_connections(void)
{
    for (;;) {
        int fd = accept4(g.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        struct conn *c = conn_free_slot();
        if (!c) {
            (void)send(fd, SERVER_FULL_RESPONSE, sizeof SERVER_FULL_RESPONSE - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            continue;
        }
        memset(c, 0, sizeof *c);
        c->fd = fd;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Event loop                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

static int next_timeout(void)
{
    int64_t deadlines[] = { g.bind_at, g.crash_at, g.exit_at, guest_deadline() }, now = now_ms(), best = -1;
    for (size_t i = 0; i < sizeof deadlines / sizeof deadlines[0]; i++)
        if (deadlines[i] >= 0 && (best < 0 || deadlines[i] < best))
            best = deadlines[i];
    if (best < 0)
        return -1;
    return best <= now ? 0 : (int)(best - now);
}

static void run_timers(void)
{
    int64_t now = now_ms();
    if (g.bind_at >= 0 && now >= g.bind_at) {
        g.bind_at = -1;
        api_socket_open();
    }
    if (g.crash_at >= 0 && now >= g.crash_at)
        crash_now();
    if (g.exit_at >= 0 && now >= g.exit_at)
        exit_clean(0);
    switch (guest_run(now)) {
    case GUEST_POWEROFF:
        /* ACPI S5: CH's guest_exit_evt, then vmm_shutdown() and a clean exit (no --no-shutdown here). */
        exit_clean(0);
    case GUEST_REBOOT: {
        /* The reset_evt: the same vm_reboot() as the API's; a failure ends CH's control loop. */
        struct guest_error e = { 0 };
        event_monitor_emit("vm", "rebooting", NULL, NULL);
        if (!vm_reboot(&e))
            die_chain(1, "VMM thread exited with error", "Error rebooting VM", e.line[0], e.line[1], NULL);
        break;
    }
    case GUEST_IDLE: break;
    }
}

static noreturn void event_loop(void)
{
    struct pollfd pfd[2 + MAX_CONNECTIONS];
    struct conn *owner[2 + MAX_CONNECTIONS];
    for (;;) {
        int n = 0, listen_idx = -1;
        pfd[n] = (struct pollfd){ .fd = g.sig_fd, .events = POLLIN };
        owner[n++] = NULL;
        if (g.listen_fd >= 0) {
            listen_idx = n;
            pfd[n] = (struct pollfd){ .fd = g.listen_fd, .events = POLLIN };
            owner[n++] = NULL;
        }
        for (int i = 0; i < MAX_CONNECTIONS; i++) {
            struct conn *c = &g.conns[i];
            if (c->fd < 0)
                continue;
            short ev = conn_has_output(c) ? POLLOUT : c->eof ? 0 : POLLIN;
            pfd[n] = (struct pollfd){ .fd = c->fd, .events = ev };
            owner[n++] = c;
        }
        int rc = poll(pfd, (nfds_t)n, next_timeout());
        if (rc < 0 && errno != EINTR) {
            char e[128];
            die_chain(1, "Error in the VMM control loop", os_error(errno, e, sizeof e), NULL);
        }
        run_timers();
        if (rc <= 0)
            continue;
        if (pfd[0].revents)
            handle_signals();
        for (int k = 0; k < n; k++) {
            struct conn *c = owner[k];
            if (!c || !pfd[k].revents || c->fd != pfd[k].fd)
                continue;
            if (pfd[k].revents & POLLOUT)
                conn_flush(c);
            if (c->fd >= 0 && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                conn_read(c);
            if (c->fd >= 0)
                conn_process(c);
        }
        /* New connections after the existing ones, so a slot freed above is reusable right away. */
        if (listen_idx >= 0 && pfd[listen_idx].revents)
            accept_connections();
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Start-up                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

static void emit_stderr_lines(void)
{
    for (long i = 1; i <= g.knobs.stderr_lines; i++) {
        char line[96];
        int n = snprintf(line, sizeof line, PROG ": stderr line %ld of %ld\n", i, g.knobs.stderr_lines);
        write_all(STDERR_FILENO, line, (size_t)n);
    }
}

int main(int argc, char **argv)
{
    umask(077);
    signals_block();

    g.argc = argc;
    g.argv = argv;
    g.api_fd = g.sig_fd = g.listen_fd = g.lock_fd = -1;
    g.bind_at = g.crash_at = g.exit_at = -1;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        g.conns[i].fd = -1;
    const char *sd = getenv("VMPROCD_SANDBOX_DIR");
    g.sandbox_dir = sd && *sd ? sd : NULL;

    /* Knobs first: --version reports standin.version. */
    knobs_defaults(&g.knobs);
    knobs_load(&g.knobs, g.sandbox_dir);
    knobs_finish(&g.knobs);
    parse_args(argc, argv);
    emit_stderr_lines();
    if (g.knobs.exit_before_socket >= 0)
        die_chain(g.knobs.exit_before_socket, "Error creating hypervisor",
                  "Failed to open /dev/kvm (standin.exit_before_socket)", NULL);

    /* CH sets the monitor up after creating the hypervisor (/dev/kvm) and before the VMM thread binds the
     * API socket; "vmm"/"starting" is its first event. */
    if (g.event_monitor) {
        char detail[PATH_MAX + 128];
        const char *head = event_monitor_start(g.event_monitor, detail, sizeof detail);
        if (head)
            die_chain(1, head, detail[0] ? detail : NULL, NULL);
    }
    event_monitor_emit("vmm", "starting", NULL, NULL);

    signals_open();
    if (!g.knobs.no_socket)
        g.bind_at = now_ms() + g.knobs.socket_delay_ms;
    event_loop();
}
