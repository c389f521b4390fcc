/*
 * vmprocd-reaper: the parent of one VMM, so that its exit status is never lost.
 *
 * Only a parent can read a child's exit status. If the daemon itself were the VMM's parent,
 * a daemon crash or upgrade would hand the VMM to init and its exit code would be gone. So the
 * daemon spawns this reaper (in a session of its own) and the reaper forks the launch chain:
 *
 *   vmprocd-reaper STATUS_FILE PROGRAM [ARG...]
 *
 * The child calls setsid() (the VMM gets its own session and process group, separate from the
 * reaper, so signals to the VMM's group never hit the reaper) and execs PROGRAM, normally
 * `unshare -m -- bash -c <launch script> ...`, whose every step execs: the child's PID is the
 * VMM's PID.
 *
 * Protocol: stdout (a pipe to the daemon, which may be gone by then) gets "pid <PID>\n" once the
 * child exists. When the child has ended, STATUS_FILE gets one line of key=value pairs:
 *   "pid=<PID> code=<N> at_ms=<unix ms>"                 exited with code N
 *   "pid=<PID> signal=<N> core=<0|1> at_ms=<unix ms>"    killed by signal N
 * STATUS_FILE is written atomically (temp file + rename), so a reader sees all of it or nothing.
 * It is not fsync'd: it must survive a crash of the daemon, not of the host, and a host crash
 * ends the VMM too.
 *
 * The child is observed with waitid(WNOWAIT) and reaped only after the status is recorded, so
 * its PID (and process group ID) cannot be reused by another process before the daemon can know
 * it has exited.
 *
 * Exit codes of the reaper itself: 0 after reporting a child's end, 70 (EX_SOFTWARE) when it
 * could not fork or record; the child exits 127 when PROGRAM cannot be executed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EX_SOFTWARE 70

static void die(const char *what) {
    dprintf(STDERR_FILENO, "vmprocd-reaper: %s: %s\n", what, strerror(errno));
    exit(EX_SOFTWARE);
}

/* Writes all of buf, retrying on EINTR; a closed pipe (EPIPE) is not an error for us. */
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

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Restores what the reaper changed before exec: the VMM must start with default signal
 * dispositions and an empty mask (ignored signals would otherwise be inherited across exec). */
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

static void close_inherited_fds(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++) close((int)fd);
}

static void run_child(char **argv) {
    reset_signals();
    if (setsid() < 0) {
        dprintf(STDERR_FILENO, "vmprocd-reaper: setsid: %s\n", strerror(errno));
        _exit(127);
    }
    /* stdout is the daemon's pipe: the VMM writes to the log (our stderr) instead. */
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) _exit(127);
    close_inherited_fds();
    execvp(argv[0], argv);
    dprintf(STDERR_FILENO, "vmprocd-reaper: cannot execute %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static void format_status(char *buf, size_t size, pid_t pid, const siginfo_t *info) {
    long long at = now_ms();
    if (info->si_code == CLD_EXITED) {
        snprintf(buf, size, "pid=%d code=%d at_ms=%lld", (int)pid, info->si_status, at);
    } else {
        snprintf(buf, size, "pid=%d signal=%d core=%d at_ms=%lld", (int)pid, info->si_status,
                 info->si_code == CLD_DUMPED ? 1 : 0, at);
    }
}

static void record_status(const char *path, const char *status) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        die("status file path");
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("open status file");
    char line[256];
    int len = snprintf(line, sizeof line, "%s\n", status);
    if (write_all(fd, line, (size_t)len) < 0) die("write status file");
    if (close(fd) < 0) die("close status file");
    if (rename(tmp, path) < 0) die("rename status file");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        dprintf(STDERR_FILENO, "usage: vmprocd-reaper STATUS_FILE PROGRAM [ARG...]\n");
        return 2;
    }
    const char *status_path = argv[1];

    /* The daemon may go away at any moment: its pipe closing must not kill us, and neither may
     * a hangup. SIGTERM/SIGINT keep their default so an operator can still end a stray reaper. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) run_child(argv + 2);

    char line[64];
    int len = snprintf(line, sizeof line, "pid %d\n", (int)pid);
    write_all(STDOUT_FILENO, line, (size_t)len);
    /* The daemon only needs the PID from the pipe; the status goes to the file. */
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }

    siginfo_t info;
    for (;;) {
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) == 0) break;
        if (errno != EINTR) die("waitid");
    }

    char status[192];
    format_status(status, sizeof status, pid, &info);
    record_status(status_path, status);

    /* Only now may the PID be reused. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return 0;
}
