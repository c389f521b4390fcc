/*
 * vmprocd-reaper: the parent of one VMM, so that its exit status is never lost; and the spawner
 * that forks such reapers for the daemon.
 *
 * Only a parent can read a child's exit status. If the daemon itself were the VMM's parent, a
 * daemon crash or upgrade would hand the VMM to init and its exit code would be gone. So each VMM
 * gets a reaper: a small process in a session of its own that forks the launch chain, waits for
 * it, and records how it ended in a status file the daemon can read at any time, even after a
 * restart.
 *
 * Two modes:
 *
 *   vmprocd-reaper --spawner
 *       Serves launch requests from the daemon on stdin and answers on stdout. The daemon starts
 *       one spawner and never forks itself per launch: forking a large Node process costs
 *       milliseconds and blocks its event loop; forking this one costs microseconds.
 *
 *   vmprocd-reaper --lock FILE
 *       Holds the daemon's lock on its state directory (see hold_lock): an OFD lock on FILE,
 *       because Node cannot call fcntl.
 *
 *   vmprocd-reaper STATUS_FILE PROGRAM [ARG...]
 *       Runs one reaper directly (for debugging; output goes to this process's stderr).
 *
 * Request framing (daemon -> spawner): a 4-byte little-endian payload length, then NUL-terminated
 * fields: id, status file, log file, kind, [sandbox fields], linkc, links..., argc, argv..., envc,
 * env... where argv[0] is an absolute path and kind is
 *   "exec"      run argv as it is (the script launch: argv is `unshare -m -- bash -c ...`), or
 *   "sandbox"   followed by sandbox dir, netns path and netns name: set the sandbox up in the VMM's
 *               own process (setup_sandbox), then exec argv.
 * Each link is four fields: a name in the sandbox dir (`vmlinux`, `rootfs.ext4`), an image root, a
 * path relative to it, and "file" or "file-or-block". The VMM's process opens link i beneath its
 * root (openat2 RESOLVE_BENEATH, O_PATH) as descriptor 3+i, kept across exec: the sandbox's
 * `<name>` is a symlink to /proc/<VMM pid>/fd/<3+i>, so the VMM gets exactly the file checked
 * beneath the root, whatever is renamed or swapped after the check.
 *
 * Answers (one line each, written with a single write(), so lines from the spawner and from
 * reapers never interleave):
 *   spawned <id> <reaper pid> <vmm pid> <log offset> <reaper start time> <vmm start time>
 *                                           the VMM exists, in its own session (written by the
 *                                           VMM's process itself, just before it execs); its
 *                                           output starts at that byte of the log
 *   failed <id> <reason>                    no VMM was started
 *   exited <id> [<base64 of the status file>]
 *                                           the VMM ended and its status file is written (written
 *                                           by the reaper; the content is left out when it would
 *                                           not fit in one atomic pipe write)
 *   reaped <reaper pid>                     a reaper ended (its status file is final by then)
 *
 * STATUS_FILE.pids ("<reaper pid> <vmm pid>") is written before the answer, so a daemon that dies
 * before it reads the answer can still find the VMM after a restart.
 *
 * The reaper: setsid(); stdout and stderr go to the log file; it forks the child, which calls
 * setsid() too (the VMM gets its own session and process group, so signals to the VMM's group never
 * hit the reaper), restores default signal handling and execs PROGRAM, normally
 * `unshare -m -- bash -c <launch script> ...`, whose every step execs: the child's PID is the VMM's.
 * When the child has ended, STATUS_FILE gets one line of key=value pairs:
 *   "pid=<PID> code=<N> at_ms=<unix ms>"                 exited with code N
 *   "pid=<PID> signal=<N> core=<0|1> at_ms=<unix ms>"    killed by signal N
 * followed by the end of what this run wrote to the log (at most 4 KiB, from a line start), all
 * written atomically (temp file + rename), so a reader sees all of it or nothing. It is not
 * fsync'd: it must survive a crash of the daemon, not of the host, and a host crash ends the VMM.
 * The child is observed with waitid(WNOWAIT) and reaped only after the status is recorded, so its
 * PID (and process group ID) cannot be reused before the daemon can know it has exited.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sched.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EX_SOFTWARE 70
#define MAX_REQUEST (1024 * 1024)
#define MAX_FIELDS 4096

/* Writes all of buf, retrying on EINTR. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One answer line in one write(): lines from several processes on one pipe stay whole. */
static void answer(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void answer(int fd, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len > sizeof line - 2) len = (int)sizeof line - 2;
    line[len++] = '\n';
    write_all(fd, line, (size_t)len);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The VMM must start with default signal dispositions and an empty mask: ignored signals and the
 * mask are inherited across exec. */
static void reset_signals(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &dfl, NULL); /* fails harmlessly for reserved real-time signals */
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void close_fds_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0U, 0U) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = first; fd < (max > 0 ? max : 1024); fd++) close((int)fd);
}

static void redirect_to_devnull(int fd, int flags) {
    int devnull = open("/dev/null", flags);
    if (devnull >= 0 && devnull != fd) {
        dup2(devnull, fd);
        close(devnull);
    }
}

/* Field 22 of /proc/<pid>/stat: the start time that, with the PID, identifies a process. */
static unsigned long long start_time_of(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    if (!p) return 0;
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? strtoull(p, NULL, 10) : 0;
}

/* The namespaced sandbox the native launch sets up before exec (see setup_sandbox). */
struct sandbox {
    const char *dir;
    const char *netns_path; /* e.g. /var/run/netns/NAME */
    const char *netns_name;
};

/* A file the VMM gets in its sandbox, opened beneath an image root (see the header comment). */
struct link {
    const char *name;
    const char *root;
    const char *relative;
    int allow_block;
};

#define MAX_LINKS 64
#define FIRST_LINK_FD 3

struct launch {
    const char *id;
    const char *status_path;
    long long log_offset;
    int report_fd;
    const struct sandbox *sandbox; /* NULL: exec argv as it is (the script launch) */
    const struct link *links;
    int link_count;
};

static int fail_setup(const char *what, const char *path) {
    dprintf(STDERR_FILENO, "vmprocd-reaper: %s%s%s: %s\n", what, path ? " " : "", path ? path : "", strerror(errno));
    return -1;
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* `ip netns exec`'s bind_etc: /etc/netns/NAME/<file> over /etc/<file>, warnings only. */
static void bind_netns_etc(const char *name) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "/etc/netns/%s", name);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char src[PATH_MAX * 2], dst[PATH_MAX];
        snprintf(src, sizeof src, "%s/%s", dir, entry->d_name);
        snprintf(dst, sizeof dst, "/etc/%s", entry->d_name);
        if (mount(src, dst, "none", MS_BIND, NULL) < 0) {
            dprintf(STDERR_FILENO, "vmprocd-reaper: bind %s -> %s failed: %s\n", src, dst, strerror(errno));
        }
    }
    closedir(d);
}

/*
 * The native launch: in this process, what `unshare -m -- bash -c <script>` and then
 * `ip netns exec NETNS` do, step for step, without their eight fork/execs:
 *   unshare -m; mount --make-rprivate /; mkdir -p DIR; mount -t tmpfs ... DIR;
 *   ln -s KERNEL DIR/vmlinux (boot only); ln -s ROOTFS DIR/rootfs.ext4;
 *   ip netns exec: setns(net), unshare -m, make / rslave, a fresh /sys for this netns,
 *   /etc/netns/NAME files bound over /etc.
 * Any failure is reported on stderr (the log) and ends the launch, like the script's `set -e`.
 */
static int setup_sandbox(const struct sandbox *sb, int link_count, const struct link *links) {
    if (unshare(CLONE_NEWNS) < 0) return fail_setup("unshare(CLONE_NEWNS)", NULL);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return fail_setup("mount --make-rprivate", "/");
    if (make_dirs(sb->dir) < 0) return fail_setup("mkdir -p", sb->dir);
    if (mount("vmprocd-sandbox", sb->dir, "tmpfs", 0, "mode=0755,size=16m") < 0) return fail_setup("mount tmpfs on", sb->dir);
    for (int i = 0; i < link_count; i++) {
        char link[PATH_MAX], target[64];
        snprintf(link, sizeof link, "%s/%s", sb->dir, links[i].name);
        snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), FIRST_LINK_FD + i);
        if (symlink(target, link) < 0) return fail_setup("ln -s", link);
    }

    int netns = open(sb->netns_path, O_RDONLY | O_CLOEXEC);
    if (netns < 0) return fail_setup("cannot open network namespace", sb->netns_path);
    if (setns(netns, CLONE_NEWNET) < 0) {
        close(netns);
        return fail_setup("setns to", sb->netns_path);
    }
    close(netns);
    if (unshare(CLONE_NEWNS) < 0) return fail_setup("unshare(CLONE_NEWNS) for /sys", NULL);
    if (mount("", "/", "none", MS_SLAVE | MS_REC, NULL) < 0) return fail_setup("mount --make-rslave", "/");
    unsigned long sysfs_flags = 0;
    if (umount2("/sys", MNT_DETACH) < 0) {
        struct statvfs fs;
        /* A read-only /sys cannot be shadowed by a read-write one. */
        if (statvfs("/sys", &fs) == 0 && (fs.f_flag & ST_RDONLY)) sysfs_flags = MS_RDONLY;
    }
    if (mount(sb->netns_name, "/sys", "sysfs", sysfs_flags, NULL) < 0) return fail_setup("mount sysfs on", "/sys");
    bind_netns_etc(sb->netns_name);
    return 0;
}

static int record_status(const char *path, const char *status, const char *extra, size_t extra_len);

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/*
 * Opens each link beneath its root as descriptor FIRST_LINK_FD + i, without O_CLOEXEC: the VMM
 * keeps them, and its sandbox's symlinks point at them. RESOLVE_BENEATH refuses any path that
 * leaves the root (`..`, an absolute symlink, a symlink leading out), so a file swapped after the
 * daemon checked it can only ever be another file beneath the same root; and the VMM opens the
 * descriptor, never the path again. Expects descriptors from FIRST_LINK_FD up to be free.
 */
static int open_links(int link_count, const struct link *links) {
    for (int i = 0; i < link_count; i++) {
        const struct link *l = &links[i];
        int root = open(l->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0) return fail_setup("cannot open image root", l->root);
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = O_PATH;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        int fd = (int)syscall(SYS_openat2, root, l->relative, &how, sizeof how);
        int saved = errno;
        close(root);
        errno = saved;
        if (fd < 0) {
            dprintf(STDERR_FILENO, "vmprocd-reaper: %s: cannot open %s beneath %s: %s\n", l->name, l->relative, l->root, strerror(errno));
            return -1;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) return fail_setup("fstat", l->relative);
        if (!S_ISREG(st.st_mode) && !(l->allow_block && S_ISBLK(st.st_mode))) {
            dprintf(STDERR_FILENO, "vmprocd-reaper: %s: %s beneath %s is no longer a regular file%s\n", l->name, l->relative, l->root,
                    l->allow_block ? " or block device" : "");
            return -1;
        }
        int want = FIRST_LINK_FD + i;
        if (fd != want) {
            if (dup2(fd, want) < 0) return fail_setup("dup2", l->relative);
            close(fd);
        }
    }
    return 0;
}

/*
 * In the VMM's process: its own session, default signals, stdout = stderr = the log, exec.
 * It answers the daemon itself, once its session (and so its process group) exists: before that
 * a signal to the group would miss. The PIDs go to <status>.pids first, so a daemon that dies
 * before reading the answer can still find them.
 */
static void run_child(const struct launch *launch, char **argv, char **envp) {
    reset_signals();
    if (setsid() < 0) {
        answer(launch->report_fd, "failed %s setsid: %s", launch->id, strerror(errno));
        _exit(127);
    }
    pid_t self = getpid(), reaper = getppid();
    unsigned long long self_start = start_time_of(self), reaper_start = start_time_of(reaper);
    char pids_path[PATH_MAX], pids[64];
    if (snprintf(pids_path, sizeof pids_path, "%s.pids", launch->status_path) < (int)sizeof pids_path) {
        snprintf(pids, sizeof pids, "%d %d", (int)reaper, (int)self);
        if (record_status(pids_path, pids, "", 0) < 0) {
            dprintf(STDERR_FILENO, "vmprocd-reaper: cannot write %s: %s\n", pids_path, strerror(errno));
        }
    }
    answer(launch->report_fd, "spawned %s %d %d %lld %llu %llu", launch->id, (int)reaper, (int)self,
           launch->log_offset, reaper_start, self_start);
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) _exit(127);
    close_fds_from(FIRST_LINK_FD);
    if (open_links(launch->link_count, launch->links) < 0) _exit(1);
    if (launch->sandbox && setup_sandbox(launch->sandbox, launch->link_count, launch->links) < 0) _exit(1);
    if (envp) execve(argv[0], argv, envp);
    else execvp(argv[0], argv);
    dprintf(STDERR_FILENO, "vmprocd-reaper: cannot execute %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int record_status(const char *path, const char *status, const char *extra, size_t extra_len) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    char line[256];
    int len = snprintf(line, sizeof line, "%s\n", status);
    int ok = write_all(fd, line, (size_t)len) == 0 && write_all(fd, extra, extra_len) == 0;
    ok = close(fd) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

#define TAIL_BYTES 4096

/*
 * The end of what this run wrote to the log (our stderr), from `log_offset` on, at most
 * TAIL_BYTES, starting at a line boundary. Read here, where it costs a pread, so the daemon gets
 * the whole exit record in one file.
 */
static size_t read_log_tail(long long log_offset, char *out) {
    /* Our stderr is open for appending only: read the same file through a fresh descriptor. */
    int fd = open("/proc/self/fd/2", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 0;
    }
    if (st.st_size < log_offset) log_offset = 0; /* the log was rotated (copy-truncate) meanwhile */
    if (st.st_size <= log_offset) {
        close(fd);
        return 0;
    }
    long long start = st.st_size - TAIL_BYTES;
    if (start < log_offset) start = log_offset;
    /* One byte more than the tail, to see whether the cut falls at a line start. */
    long long from = start > log_offset ? start - 1 : start;
    ssize_t n = pread(fd, out, (size_t)(st.st_size - from), from);
    close(fd);
    if (n <= 0) return 0;
    size_t skip = 0;
    if (from < start) {
        char *newline = memchr(out, '\n', (size_t)n);
        skip = newline ? (size_t)(newline - out) + 1 : (size_t)n;
    }
    memmove(out, out + skip, (size_t)n - skip);
    return (size_t)n - skip;
}

static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64_encode(const unsigned char *in, size_t len, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = BASE64[v >> 18 & 63];
        out[o++] = BASE64[v >> 12 & 63];
        out[o++] = i + 1 < len ? BASE64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? BASE64[v & 63] : '=';
    }
    return o;
}

/* One write at most this long is atomic on a pipe: lines from many reapers never interleave. */
#define ATOMIC_LINE PIPE_BUF

/*
 * Tells the daemon, if it is listening, what the status file now says: "exited <id> <base64 of the
 * file>", or "exited <id>" when that would not fit in one atomic line (the daemon reads the file).
 * The file stays the record; this only saves the daemon a file system round trip per exit.
 */
static void report_exit(int fd, const char *id, const char *status, const char *tail, size_t tail_len) {
    static unsigned char content[256 + TAIL_BYTES];
    static char line[ATOMIC_LINE];
    int head = snprintf((char *)content, 256, "%s\n", status);
    if (head < 0 || head >= 256) return;
    memcpy(content + head, tail, tail_len);
    size_t content_len = (size_t)head + tail_len;
    int prefix = snprintf(line, sizeof line, "exited %s ", id);
    if (prefix < 0 || (size_t)prefix >= sizeof line) return;
    size_t len;
    if ((size_t)prefix + (content_len + 2) / 3 * 4 + 1 <= sizeof line) {
        len = (size_t)prefix + base64_encode(content, content_len, line + prefix);
    } else {
        len = (size_t)prefix - 1; /* drop the trailing space: no content */
    }
    line[len++] = '\n';
    write_all(fd, line, len);
}

/*
 * The reaper proper, in a fresh process whose stderr is the log. Starts the child, reports
 * "spawned" on report_fd (then lets go of it), waits, records the status, reaps. Never returns.
 */
static void run_reaper(const char *id, const char *status_path, char **argv, char **envp, int report_fd, long long log_offset,
                       const struct sandbox *sandbox, int link_count, const struct link *links) {
    /* The daemon may vanish at any moment: a closed pipe or a hangup must not end us. SIGTERM and
     * SIGINT keep their default so an operator can still end a stray reaper. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    pid_t pid = fork();
    if (pid < 0) {
        answer(report_fd, "failed %s fork: %s", id, strerror(errno));
        _exit(EX_SOFTWARE);
    }
    if (pid == 0) {
        struct launch launch = { id, status_path, log_offset, report_fd, sandbox, links, link_count };
        run_child(&launch, argv, envp);
    }
    /* The child answers "spawned"; the reaper keeps the daemon's pipe for "exited". */

    siginfo_t info;
    for (;;) {
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) == 0) break;
        if (errno != EINTR) {
            dprintf(STDERR_FILENO, "vmprocd-reaper: waitid: %s\n", strerror(errno));
            _exit(EX_SOFTWARE);
        }
    }
    char status[192];
    long long at = now_ms();
    if (info.si_code == CLD_EXITED) {
        snprintf(status, sizeof status, "pid=%d code=%d at_ms=%lld", (int)pid, info.si_status, at);
    } else {
        snprintf(status, sizeof status, "pid=%d signal=%d core=%d at_ms=%lld", (int)pid, info.si_status,
                 info.si_code == CLD_DUMPED ? 1 : 0, at);
    }
    static char tail[TAIL_BYTES + 1];
    size_t tail_len = read_log_tail(log_offset, tail);
    int recorded = record_status(status_path, status, tail, tail_len);
    if (recorded < 0) dprintf(STDERR_FILENO, "vmprocd-reaper: cannot record %s in %s: %s\n", status, status_path, strerror(errno));
    else report_exit(report_fd, id, status, tail, tail_len);
    redirect_to_devnull(report_fd, O_WRONLY);
    /* Only now may the PID be reused. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    _exit(recorded < 0 ? EX_SOFTWARE : 0);
}

/* ---- spawner mode ---------------------------------------------------------------------------- */

struct request {
    char *fields[MAX_FIELDS];
    int count;
};

/* Splits a payload into its NUL-terminated fields; -1 if a field is unterminated or too many. */
static int split_fields(char *payload, size_t len, struct request *rq) {
    rq->count = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (payload[i] != '\0') continue;
        if (rq->count == MAX_FIELDS) return -1;
        rq->fields[rq->count++] = payload + start;
        start = i + 1;
    }
    return start == len ? 0 : -1;
}

static int parse_count(const char *text, int max) {
    char *end;
    long value = strtol(text, &end, 10);
    return *text && !*end && value >= 0 && value <= max ? (int)value : -1;
}

/* Forks one reaper for a request. The spawner itself never waits here: it only forks. */
static void spawn_reaper(struct request *rq, int request_fd, int signal_fd) {
    const char *id = rq->count > 0 ? rq->fields[0] : "?";
    if (rq->count < 6) {
        answer(STDOUT_FILENO, "failed %s malformed request", id);
        return;
    }
    const char *status_path = rq->fields[1], *log_path = rq->fields[2], *kind = rq->fields[3];
    struct sandbox sandbox;
    const struct sandbox *setup = NULL;
    int at = 4;
    if (strcmp(kind, "sandbox") == 0) {
        if (rq->count < at + 3 + 3) {
            answer(STDOUT_FILENO, "failed %s malformed request", id);
            return;
        }
        sandbox = (struct sandbox){ rq->fields[at], rq->fields[at + 1], rq->fields[at + 2] };
        setup = &sandbox;
        at += 3;
    } else if (strcmp(kind, "exec") != 0) {
        answer(STDOUT_FILENO, "failed %s unknown launch kind %s", id, kind);
        return;
    }
    int link_count = at < rq->count ? parse_count(rq->fields[at], MAX_LINKS) : -1;
    if (link_count < 0 || at + 1 + 4 * link_count + 2 > rq->count) {
        answer(STDOUT_FILENO, "failed %s malformed request", id);
        return;
    }
    struct link links[MAX_LINKS];
    for (int i = 0; i < link_count; i++) {
        char **f = rq->fields + at + 1 + 4 * i;
        const char *check = f[3];
        if (strcmp(check, "file") != 0 && strcmp(check, "file-or-block") != 0) {
            answer(STDOUT_FILENO, "failed %s malformed request", id);
            return;
        }
        /* A link name is one file name in the sandbox dir; a root absolute; a relative path relative. */
        if (!f[0][0] || strchr(f[0], '/') || strcmp(f[0], ".") == 0 || strcmp(f[0], "..") == 0 || f[1][0] != '/' || !f[2][0] || f[2][0] == '/') {
            answer(STDOUT_FILENO, "failed %s malformed request", id);
            return;
        }
        links[i] = (struct link){ f[0], f[1], f[2], strcmp(check, "file-or-block") == 0 };
    }
    at += 1 + 4 * link_count;
    int argc = parse_count(rq->fields[at], rq->count - at - 2);
    int envc = argc < 1 ? -1 : parse_count(rq->fields[at + 1 + argc], rq->count - at - 2 - argc);
    if (argc < 1 || envc < 0 || at + 2 + argc + envc != rq->count || rq->fields[at + 1][0] != '/') {
        answer(STDOUT_FILENO, "failed %s malformed request", id);
        return;
    }
    char *argv[MAX_FIELDS + 1], *envp[MAX_FIELDS + 1];
    memcpy(argv, rq->fields + at + 1, (size_t)argc * sizeof *argv);
    argv[argc] = NULL;
    memcpy(envp, rq->fields + at + 2 + argc, (size_t)envc * sizeof *envp);
    envp[envc] = NULL;

    /* Opened here, so a bad log path is a clean "failed" rather than a reaper that dies. */
    int log = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log < 0) {
        answer(STDOUT_FILENO, "failed %s cannot open log %s: %s", id, log_path, strerror(errno));
        return;
    }
    long long log_offset = (long long)lseek(log, 0, SEEK_END);
    unlink(status_path);
    char pids_path[PATH_MAX];
    if (snprintf(pids_path, sizeof pids_path, "%s.pids", status_path) < (int)sizeof pids_path) unlink(pids_path);

    pid_t reaper = fork();
    if (reaper < 0) {
        answer(STDOUT_FILENO, "failed %s fork: %s", id, strerror(errno));
    } else if (reaper == 0) {
        close(request_fd);
        close(signal_fd);
        redirect_to_devnull(STDIN_FILENO, O_RDONLY);
        dup2(log, STDERR_FILENO);
        close(log);
        if (setsid() < 0) {
            answer(STDOUT_FILENO, "failed %s setsid: %s", id, strerror(errno));
            _exit(EX_SOFTWARE);
        }
        run_reaper(id, status_path, argv, envp, STDOUT_FILENO, log_offset, setup, link_count, links);
    }
    close(log);
}

/* Reaps every reaper that has ended and tells the daemon. */
static void report_reaped(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid <= 0) return;
        answer(STDOUT_FILENO, "reaped %d", (int)pid);
    }
}

static int serve(void) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* a Ctrl-C meant for the daemon's terminal: the daemon decides */
    signal(SIGHUP, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int signal_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd < 0) {
        dprintf(STDERR_FILENO, "vmprocd-reaper: signalfd: %s\n", strerror(errno));
        return EX_SOFTWARE;
    }

    static char buffer[MAX_REQUEST + 4];
    size_t filled = 0;
    struct request rq;
    for (;;) {
        struct pollfd fds[2] = { { STDIN_FILENO, POLLIN, 0 }, { signal_fd, POLLIN, 0 } };
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return EX_SOFTWARE;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(signal_fd, &si, sizeof si) == sizeof si) {
            }
            report_reaped();
        }
        if (!(fds[0].revents & (POLLIN | POLLHUP))) continue;
        ssize_t n = read(STDIN_FILENO, buffer + filled, sizeof buffer - filled);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0; /* the daemon is gone: reapers carry on without us */
        filled += (size_t)n;
        for (;;) {
            if (filled < 4) break;
            uint32_t len = (uint32_t)(unsigned char)buffer[0] | (uint32_t)(unsigned char)buffer[1] << 8 |
                           (uint32_t)(unsigned char)buffer[2] << 16 | (uint32_t)(unsigned char)buffer[3] << 24;
            if (len > MAX_REQUEST) {
                dprintf(STDERR_FILENO, "vmprocd-reaper: request of %u bytes is too large\n", len);
                return EX_SOFTWARE;
            }
            if (filled < 4 + (size_t)len) break;
            if (split_fields(buffer + 4, len, &rq) == 0) spawn_reaper(&rq, STDIN_FILENO, signal_fd);
            else answer(STDOUT_FILENO, "failed ? malformed request");
            memmove(buffer, buffer + 4 + len, filled - 4 - len);
            filled -= 4 + len;
        }
    }
}

/* ---- lock mode ------------------------------------------------------------------------------- */

/*
 * `--lock FILE`: takes a write lock on all of FILE, without waiting, and holds it until stdin ends.
 *
 * Why a process: the lock is an OFD lock (fcntl F_OFD_SETLK), which belongs to the open file, so
 * it lives exactly as long as this process's descriptor: however the daemon dies, even by SIGKILL,
 * its end of our stdin closes, read() returns 0 and we exit, releasing the lock. A file with mode
 * 0600 in root's state directory, unlike the abstract socket this replaces, cannot be taken or
 * flooded by another user (containerd CVE-2020-15257); a read lock by anyone who can open the file
 * would block us, hence 0600 and root's.
 *
 * One line on stdout, written at once:
 *   locked              the lock is ours until stdin reaches EOF; then exit 0
 *   busy                another open file holds a lock on FILE (another daemon); exit 1
 *   failed <reason>     FILE is a symlink or not a regular file, or a system call failed; exit 2
 *
 * It holds nothing but stdin, stdout and the lock file: stderr goes to /dev/null (failures are
 * told on stdout), so it never keeps the daemon's log pipe or terminal open.
 */
static int hold_lock(const char *path) {
    /* A Ctrl-C or hangup meant for the daemon's terminal, or a SIGTERM sent to its whole process
     * group (timeout(1), kill -- -PGID): the daemon decides when to release, and a daemon that
     * saw us die first would stop with "lock lost" instead of cleanly. Ignoring SIGTERM strands
     * nothing: we end with the daemon whatever kills it (stdin EOF), and SIGKILL still works. A
     * daemon gone before our answer must not end us with SIGPIPE either. */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    close_fds_from(3);
    redirect_to_devnull(STDERR_FILENO, O_WRONLY);

    /* O_NOFOLLOW: a symlink planted at FILE would make us create or lock whatever it names.
     * O_NONBLOCK: a FIFO planted there must not hang the open; fstat refuses it right after. */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == ELOOP) answer(STDOUT_FILENO, "failed %s is a symbolic link; refusing to follow it", path);
        else answer(STDOUT_FILENO, "failed cannot open %s: %s", path, strerror(errno));
        return 2;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        answer(STDOUT_FILENO, "failed cannot stat %s: %s", path, strerror(errno));
        return 2;
    }
    if (!S_ISREG(st.st_mode)) {
        answer(STDOUT_FILENO, "failed %s is not a regular file", path);
        return 2;
    }
    /* A file left by someone else, or with a looser mode, is made root's own and 0600 again. */
    if ((st.st_uid != geteuid() || st.st_gid != getegid()) && fchown(fd, geteuid(), getegid()) < 0) {
        answer(STDOUT_FILENO, "failed cannot chown %s: %s", path, strerror(errno));
        return 2;
    }
    if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0) {
        answer(STDOUT_FILENO, "failed cannot chmod %s: %s", path, strerror(errno));
        return 2;
    }

    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET; /* l_start = l_len = 0: the whole file, however long */
    if (fcntl(fd, F_OFD_SETLK, &lock) < 0) {
        if (errno == EAGAIN || errno == EACCES) {
            answer(STDOUT_FILENO, "busy");
            return 1;
        }
        answer(STDOUT_FILENO, "failed cannot lock %s: %s", path, strerror(errno));
        return 2;
    }
    answer(STDOUT_FILENO, "locked");

    char buf[64];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) break; /* no daemon to read from either */
    }
    /* Exiting closes fd, which releases the lock. */
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--spawner") == 0) return serve();
    if (argc == 3 && strcmp(argv[1], "--lock") == 0) return hold_lock(argv[2]);
    if (argc < 3) {
        dprintf(STDERR_FILENO, "usage: vmprocd-reaper --spawner\n       vmprocd-reaper --lock FILE\n       vmprocd-reaper STATUS_FILE PROGRAM [ARG...]\n");
        return 2;
    }
    unlink(argv[1]);
    run_reaper("-", argv[1], argv + 2, NULL, STDOUT_FILENO, 0, NULL, 0, NULL);
}
