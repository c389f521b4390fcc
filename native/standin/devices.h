/*
 * The host side of the VM's devices, as Cloud Hypervisor's device manager holds it: each disk image and
 * each TAP open for as long as the Vm exists, and the disks OFD-locked from the moment the VM boots or
 * restores (CH v53 vmm/src/vm.rs Vm::boot and Vm::restore call DeviceManager::try_lock_disks), so that a
 * second VMM given the same image or TAP fails where CH fails, with CH's error chain. Dropping the Vm
 * (vm.shutdown, vm.delete, a reboot, the VMM's exit) closes the files, which frees the TAPs and locks.
 */
#ifndef STANDIN_DEVICES_H
#define STANDIN_DEVICES_H

#include <stdbool.h>
#include <stddef.h>

#include "guest.h"

/* One entry of the VmConfig's `disks`. */
struct disk_spec {
    const char *path;
    bool readonly;
    bool full_lock; /* lock_granularity "Full": the whole file, not the byte range [0, size) */
};

/* Vm::new's make_virtio_block_devices(): opens every disk (read-only or read-write). False with CH's
 * chain in err when one cannot be opened; nothing stays open then. */
bool devices_open_disks(const struct disk_spec *disks, size_t n, struct guest_error *err);
/* try_lock_disks(): a read lock on each read-only disk, a write lock on the others. False with CH's chain
 * when one is taken (the files stay open: CH keeps the Vm). */
bool devices_lock_disks(struct guest_error *err);
/* Vm::new's make_virtio_net_devices(), after the disks: attaches an fd to each named TAP with TUNSETIFF
 * (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, as net_util's Tap::open_named). A TAP another process holds is
 * EBUSY. False with CH's chain in err; the TAPs opened before stay open until devices_close(). */
bool devices_open_taps(const char *const *names, size_t n, struct guest_error *err);
/* The Vm is dropped: every file closes, every lock goes. */
void devices_close(void);

#endif
