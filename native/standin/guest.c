/* The modelled guest: see guest.h. Timing, lines and actions follow native/tiny-guest/tiny-guest.S. */
#include "guest.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "event-monitor.h"

#define KERNEL_MAX_BYTES (64 << 20)
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define TINY_BANNER "tiny-guest: boot cmdline="
#define DEFAULT_TICK_MS 300
/* Where CH puts the kernel command line in guest memory (arch/src/x86_64/layout.rs CMDLINE_START). */
#define CMDLINE_GPA 0x20000
/* What CH gives the pvpanic device's BAR0 in a small VM (seen on a real CH v53); only printed. */
#define PVPANIC_BAR 0xe7fffff0u
/* The .data words of tiny-guest.S, in order, starting at the `counter` symbol. */
enum { W_COUNTER, W_CMDLINE, W_TSC_KHZ, W_TICK_MS, W_POWEROFF, W_REBOOT, W_PANIC, W_HALT, W_COUNT };

enum kind { KIND_NONE, KIND_SILENT, KIND_TINY };

static struct {
    enum kind kind;
    uint32_t w[W_COUNT];  /* the tiny guest's variables, as in its memory */
    uint64_t data_gpa;    /* guest-physical address of w[0] */
    unsigned char *image; /* the loaded segments, for memory-ranges */
    struct {
        uint64_t gpa, filesz, memsz;
        size_t off; /* into image */
    } seg[8];
    int nseg;
    char *cmdline;
    bool pvpanic, halted, paused;
    int64_t due;          /* next line, now_ms() time; -1 while none is due */
    int64_t left_ms;      /* while paused: what was left of the delay */
    int serial_fd;        /* -1: output dropped */
    bool serial_owned;    /* a File we opened (stdout is not ours to close) */
    int memory_fd;        /* OnDemand restore keeps the memory file open */
} G = { .serial_fd = -1, .memory_fd = -1, .due = -1 };

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void guest_error_set(struct guest_error *e, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    e->n = n;
    for (int i = 0; i < n && i < 6; i++)
        snprintf(e->line[i], sizeof e->line[i], "%s", va_arg(ap, const char *));
    va_end(ap);
}

static const char *os_error(int err)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s (os error %d)", strerror(err), err);
    return buf;
}

/* ---- serial ---- */

bool guest_serial_open(const char *mode, const char *file, struct guest_error *err)
{
    guest_serial_close();
    if (mode && !strcmp(mode, "Tty")) {
        G.serial_fd = STDOUT_FILENO;
    } else if (mode && !strcmp(mode, "File")) {
        int fd = file ? open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666) : -1;
        if (fd < 0) {
            guest_error_set(err, 2, "Error creating console devices", file ? os_error(errno) : "Missing path for serial file");
            return false;
        }
        G.serial_fd = fd;
        G.serial_owned = true;
    }
    return true;
}

void guest_serial_close(void)
{
    if (G.serial_owned)
        close(G.serial_fd);
    G.serial_fd = -1;
    G.serial_owned = false;
}

/* One line on COM1; the UART never holds a byte back. */
static void serial_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void serial_printf(const char *fmt, ...)
{
    if (G.serial_fd < 0)
        return;
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    for (const char *p = line; len > 0;) {
        ssize_t w = write(G.serial_fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        len -= (size_t)w;
    }
}

/* ---- loading the kernel ---- */

static void forget_kernel(void)
{
    free(G.image);
    free(G.cmdline);
    G.image = NULL;
    G.cmdline = NULL;
    G.nseg = 0;
    G.kind = KIND_NONE;
}

static bool in_file(size_t size, uint64_t off, uint64_t len) { return off <= size && len <= size - off; }

/* Reads the ELF: its load segments, whether it has a PVH entry note, and the `counter` symbol. */
static bool parse_elf(const unsigned char *f, size_t size, bool *pvh, uint64_t *counter)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f;
    if (size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_machine != EM_X86_64 || !in_file(size, eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)))
        return false;
    *pvh = false;
    *counter = 0;
    size_t image_size = 0;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(f + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        if (!in_file(size, ph[i].p_offset, ph[i].p_filesz))
            return false;
        if (ph[i].p_type == PT_LOAD && G.nseg < 8 && ph[i].p_memsz < (64u << 20)) {
            G.seg[G.nseg].gpa = ph[i].p_paddr;
            G.seg[G.nseg].filesz = ph[i].p_filesz < ph[i].p_memsz ? ph[i].p_filesz : ph[i].p_memsz;
            G.seg[G.nseg].memsz = ph[i].p_memsz;
            G.seg[G.nseg].off = image_size;
            image_size += ph[i].p_memsz;
            G.nseg++;
        } else if (ph[i].p_type == PT_NOTE) {
            for (uint64_t o = 0; o + 12 <= ph[i].p_filesz;) {
                const uint32_t *n = (const uint32_t *)(f + ph[i].p_offset + o);
                uint64_t name = (n[0] + 3) & ~3u, desc = (n[1] + 3) & ~3u;
                if (n[0] == 4 && n[2] == XEN_ELFNOTE_PHYS32_ENTRY && !memcmp(n + 3, "Xen", 4))
                    *pvh = true;
                o += 12 + name + desc;
            }
        }
    }
    G.image = calloc(1, image_size ? image_size : 1);
    if (!G.image)
        return false;
    for (int i = 0, k = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && k < G.nseg && ph[i].p_memsz < (64u << 20)) {
            memcpy(G.image + G.seg[k].off, f + ph[i].p_offset, G.seg[k].filesz);
            k++;
        }
    }
    /* The symbol table, when the kernel has one (the tiny guest does). */
    if (!in_file(size, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)))
        return true;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(f + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum || !in_file(size, sh[i].sh_offset, sh[i].sh_size))
            continue;
        const Elf64_Shdr *str = &sh[sh[i].sh_link];
        if (!in_file(size, str->sh_offset, str->sh_size))
            continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(f + sh[i].sh_offset);
        for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
            if (sym[k].st_name < str->sh_size && !strncmp((const char *)f + str->sh_offset + sym[k].st_name, "counter", 8))
                *counter = sym[k].st_value;
    }
    return true;
}

/* The guest's words at data_gpa live inside a loaded segment: where, in image. */
static uint32_t *data_words(void)
{
    for (int i = 0; i < G.nseg; i++)
        if (G.data_gpa >= G.seg[i].gpa && G.data_gpa + W_COUNT * 4 <= G.seg[i].gpa + G.seg[i].memsz)
            return (uint32_t *)(G.image + G.seg[i].off + (G.data_gpa - G.seg[i].gpa));
    return NULL;
}

/* CH's CPUID 0x40000010 TSC frequency: the host's, in kHz (the model reads /proc/cpuinfo's MHz). */
static uint32_t tsc_khz(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    char line[256];
    double mhz = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "cpu MHz : %lf", &mhz) == 1)
            break;
    if (f)
        fclose(f);
    return (uint32_t)(mhz * 1000 + 0.5);
}

/* find_opt(): the decimal value of the first word starting with name, 0 if none. */
static uint32_t find_opt(const char *cmdline, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ') && !strncmp(p, name, n)) {
            uint32_t v = 0;
            for (p += n; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint32_t)(*p - '0');
            return v;
        }
    }
    return 0;
}

bool guest_boot(const struct guest_spec *spec, struct guest_error *err)
{
    forget_kernel();
    if (!spec->kernel) {
        guest_error_set(err, 3, "Failed to validate config", "Payload configuration is not bootable",
                  "No bootitem provided: neither firmware nor kernel");
        return false;
    }
    int fd = open(spec->kernel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        guest_error_set(err, 2, "Cannot open kernel file", os_error(e));
        return false;
    }
    size_t size = S_ISREG(st.st_mode) && st.st_size < KERNEL_MAX_BYTES ? (size_t)st.st_size : 0;
    unsigned char *f = malloc(size + 1);
    size_t got = 0;
    while (f && got < size) {
        ssize_t r = read(fd, f + got, size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    bool pvh = false;
    uint64_t counter = 0;
    if (!f || got != size || !parse_elf(f, size, &pvh, &counter)) {
        free(f);
        forget_kernel();
        guest_error_set(err, 3, "Cannot load the kernel into memory",
                  "Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage",
                  "Kernel Loader: Invalid bzImage");
        return false;
    }
    G.data_gpa = counter;
    bool tiny = pvh && counter && memmem(f, size, TINY_BANNER, strlen(TINY_BANNER)) && data_words();
    free(f);
    G.kind = tiny ? KIND_TINY : KIND_SILENT;
    G.cmdline = strdup(spec->cmdline ? spec->cmdline : "");
    G.pvpanic = spec->pvpanic;
    G.halted = G.paused = false;
    G.due = -1;
    if (!tiny)
        return true;
    /* _start: the options, then the boot line, then `tick 1` at once. */
    uint32_t *w = data_words();
    w[W_COUNTER] = 0;
    w[W_CMDLINE] = CMDLINE_GPA;
    w[W_TSC_KHZ] = tsc_khz();
    w[W_TICK_MS] = find_opt(G.cmdline, "tick_ms=");
    if (!w[W_TICK_MS])
        w[W_TICK_MS] = DEFAULT_TICK_MS;
    w[W_POWEROFF] = find_opt(G.cmdline, "poweroff_after=");
    w[W_REBOOT] = find_opt(G.cmdline, "reboot_after=");
    w[W_PANIC] = find_opt(G.cmdline, "panic_after=");
    w[W_HALT] = find_opt(G.cmdline, "halt_after=");
    serial_printf("tiny-guest: boot cmdline=%s tsc_khz=%u\n", G.cmdline, w[W_TSC_KHZ]);
    G.due = now_ms();
    return true;
}

void guest_stop(void)
{
    forget_kernel();
    G.due = -1;
    G.halted = G.paused = false;
    if (G.memory_fd >= 0)
        close(G.memory_fd);
    G.memory_fd = -1;
}

void guest_pause(void)
{
    if (G.paused)
        return;
    G.paused = true;
    if (G.due >= 0) {
        int64_t left = G.due - now_ms();
        G.left_ms = left > 0 ? left : 0;
    }
}

void guest_resume(void)
{
    if (!G.paused)
        return;
    G.paused = false;
    if (G.kind == KIND_TINY && !G.halted)
        G.due = now_ms() + G.left_ms;
}

int64_t guest_deadline(void) { return G.paused ? -1 : G.due; }

enum guest_action guest_run(int64_t now)
{
    if (G.paused || G.due < 0 || now < G.due || G.kind != KIND_TINY)
        return GUEST_IDLE;
    uint32_t *w = data_words();
    uint32_t n = ++w[W_COUNTER];
    serial_printf("tiny-guest: tick %u\n", n);
    if (n == w[W_POWEROFF]) {
        serial_printf("tiny-guest: poweroff\n");
        G.due = -1;
        return GUEST_POWEROFF;
    }
    if (n == w[W_REBOOT]) {
        serial_printf("tiny-guest: reboot\n");
        G.due = -1;
        return GUEST_REBOOT;
    }
    if (n == w[W_PANIC]) {
        G.due = -1;
        G.halted = true;
        if (!G.pvpanic) {
            serial_printf("tiny-guest: panic pvpanic=none\n");
        } else {
            serial_printf("tiny-guest: panic pvpanic=0x%08x\n", PVPANIC_BAR);
            /* The write of PVPANIC_PANICKED to BAR0: CH's pvpanic device only reports it. */
            event_monitor_emit("guest", "panic", "event", "panic");
        }
        return GUEST_IDLE;
    }
    if (n == w[W_HALT]) {
        serial_printf("tiny-guest: halt\n");
        G.due = -1;
        G.halted = true;
        return GUEST_IDLE;
    }
    /* The delay runs from after the line (the UART writes themselves take no modelled time). */
    G.due = now_ms() + w[W_TICK_MS];
    return GUEST_IDLE;
}

/* ---- snapshot ---- */

static bool write_at(int fd, const void *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p = (const char *)p + w;
        n -= (size_t)w;
        off += w;
    }
    return true;
}

bool guest_save_memory(const char *dir, long long memory_size, struct guest_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/memory-ranges", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    bool ok = fd >= 0 && ftruncate(fd, memory_size) == 0;
    for (int i = 0; ok && i < G.nseg; i++)
        if (G.seg[i].gpa + G.seg[i].memsz <= (uint64_t)memory_size)
            ok = write_at(fd, G.image + G.seg[i].off, G.seg[i].memsz, (off_t)G.seg[i].gpa);
    if (ok && G.cmdline && CMDLINE_GPA + strlen(G.cmdline) < (uint64_t)memory_size)
        ok = write_at(fd, G.cmdline, strlen(G.cmdline) + 1, CMDLINE_GPA);
    if (!ok) {
        int e = errno;
        guest_error_set(err, 4, "Cannot send VM snapshot", "Failed to send migratable component snapshot",
                  "Error creating snapshot file", os_error(e));
        if (fd >= 0)
            close(fd);
        return false;
    }
    close(fd);
    return true;
}

void guest_vcpu_state(char *vcpu, size_t size)
{
    int64_t left = G.paused ? G.left_ms : 0;
    snprintf(vcpu, size,
             "{\"standin_guest\":{\"kind\":\"%s\",\"data_gpa\":%llu,\"halted\":%s,\"due\":%s,\"delay_left_ms\":%lld}}",
             G.kind == KIND_TINY ? "tiny-guest" : G.kind == KIND_SILENT ? "silent" : "none",
             (unsigned long long)G.data_gpa, G.halted ? "true" : "false", G.due >= 0 ? "true" : "false",
             (long long)left);
}

bool guest_restore(const char *dir, const char *state, bool keep_memory_open, bool pvpanic)
{
    guest_stop();
    /* Written by guest_save inside a JSON string, so its quotes arrive escaped. */
    const char *p = state ? strstr(state, "standin_guest") : NULL;
    unsigned long long gpa = 0;
    long long left = 0;
    if (!p || !strstr(p, "tiny-guest"))
        return false;
    const char *g = strstr(p, "data_gpa");
    const char *l = strstr(p, "delay_left_ms");
    if (!g || !l || sscanf(g + 8, "%*[^0-9]%llu", &gpa) != 1 || sscanf(l + 13, "%*[^0-9]%lld", &left) != 1)
        return false;
    char path[4096];
    snprintf(path, sizeof path, "%s/memory-ranges", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint32_t w[W_COUNT];
    if (pread(fd, w, sizeof w, (off_t)gpa) != (ssize_t)sizeof w) {
        close(fd);
        return false;
    }
    /* Enough of the image to hold the words; the rest of memory stays in the file. */
    G.image = calloc(1, sizeof w);
    if (!G.image) {
        close(fd);
        return false;
    }
    G.nseg = 1;
    G.seg[0].gpa = gpa;
    G.seg[0].filesz = G.seg[0].memsz = sizeof w;
    G.seg[0].off = 0;
    G.data_gpa = gpa;
    memcpy(G.image, w, sizeof w);
    G.kind = KIND_TINY;
    G.pvpanic = pvpanic;
    G.halted = strstr(p, "\\\"halted\\\":true") != NULL;
    bool due = strstr(p, "\\\"due\\\":true") != NULL;
    G.paused = true;
    G.left_ms = left;
    G.due = due && !G.halted ? 0 : -1;
    if (keep_memory_open)
        G.memory_fd = fd;
    else
        close(fd);
    return true;
}
