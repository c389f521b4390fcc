/*
 * The guest the stand-in VMM "runs": what Cloud Hypervisor would show for the kernel it was given.
 *
 * The stand-in cannot execute guest code, so it recognises the project's tiny guest
 * (native/tiny-guest: an ELF64 with a Xen PVH entry note, a `counter` symbol and its banner text) and
 * plays its part: the boot line, `tick N` lines every tick_ms on the serial console, poweroff_after,
 * reboot_after, panic_after (pvpanic) and halt_after, the counter kept in "guest memory" (written to the
 * snapshot's memory-ranges at the counter's guest-physical address and read back on restore). Any other
 * loadable ELF boots and stays silent (a guest the stand-in cannot model); a missing or non-ELF kernel
 * fails vm.boot with CH's error chain.
 */
#ifndef STANDIN_GUEST_H
#define STANDIN_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An error chain below "Error from API" / the API head, for the caller to send. */
struct guest_error {
    int n;
    char line[6][512];
};

/* What a boot needs from the VmConfig. */
struct guest_spec {
    const char *kernel;  /* payload.kernel, or NULL */
    const char *cmdline; /* payload.cmdline, or NULL (the guest then sees an empty one) */
    bool pvpanic;
    long long memory_size;
};

/* The serial device (CH's 8250 on COM1) per serial.mode: "Tty" is the VMM's stdout, "File" serial.file,
 * the rest ("Off", "Null", and the unmodelled "Pty"/"Socket") drop the output. Opening a File truncates
 * it, as CH's pre_create_console_devices() does at vm.create, boot after a shutdown, reboot and restore.
 * False (with err) when the file cannot be opened. */
/** Fills `e` with `n` lines of an error chain (at most six), as CH prints one. */
void guest_error_set(struct guest_error *e, int n, ...);

bool guest_serial_open(const char *mode, const char *file, struct guest_error *err);
void guest_serial_close(void);

/* Loads the kernel and starts the guest (its first line is due at once). False with err on failure. */
bool guest_boot(const struct guest_spec *spec, struct guest_error *err);
/* Shut down: no more output. */
void guest_stop(void);
void guest_pause(void);
void guest_resume(void);

enum guest_action { GUEST_IDLE, GUEST_POWEROFF, GUEST_REBOOT };

/* When the guest next does something (now_ms() time), or -1. */
int64_t guest_deadline(void);
/* Runs what is due at `now`; a power-off or reboot is for the VMM to carry out. */
enum guest_action guest_run(int64_t now);

/* The snapshot's guest side. The vCPU state, as JSON text for state.json (where the modelled guest is
 * and what is left of its delay; all else it has is in memory): */
void guest_vcpu_state(char *out, size_t size);
/* memory-ranges in dir: guest RAM from 0, sparse but for the guest's image and command line. False with
 * err on an I/O failure (an existing file included: CH never overwrites one). */
bool guest_save_memory(const char *dir, long long memory_size, struct guest_error *err);
/* Restores a guest saved by the two above (state.json's text and memory-ranges in dir); keep_memory_open
 * models OnDemand restore, which keeps reading the memory file. Returns false when the snapshot holds no
 * modelled guest (the VM then runs nothing). The guest is left paused. */
bool guest_restore(const char *dir, const char *state_json, bool keep_memory_open, bool pvpanic);

#endif
