/* The VM's host-side devices: see devices.h. */
#include "devices.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* The stand-in models the first this-many disks of a config; more are not opened. */
#define MAX_DISKS 16
#define MAX_TAPS 16

static struct {
    struct {
        int fd;
        char *path; /* as the config gives it: CH's messages show the config's path */
        bool readonly, full_lock;
    } disk[MAX_DISKS];
    size_t ndisks;
    int tap_fd[MAX_TAPS];
    size_t ntaps;
} D;

static const char *os_error(int err, char *buf, size_t size)
{
    snprintf(buf, size, "%s (os error %d)", strerror(err), err);
    return buf;
}

bool devices_open_disks(const struct disk_spec *disks, size_t n, struct guest_error *err)
{
    devices_close();
    for (size_t i = 0; i < n && i < MAX_DISKS; i++) {
        /* block/src/factory.rs open_disk(): read, and write unless readonly. */
        int fd = open(disks[i].path, (disks[i].readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            char io[4096 + 64], e[128];
            snprintf(io, sizeof io, "I/O error (path=%s op=open)", disks[i].path);
            guest_error_set(err, 4, "Error from device manager", "Cannot open disk path", io, os_error(errno, e, sizeof e));
            devices_close();
            return false;
        }
        D.disk[i].fd = fd;
        D.disk[i].path = strdup(disks[i].path);
        D.disk[i].readonly = disks[i].readonly;
        D.disk[i].full_lock = disks[i].full_lock;
        D.ndisks = i + 1;
    }
    return true;
}

bool devices_lock_disks(struct guest_error *err)
{
    for (size_t i = 0; i < D.ndisks; i++) {
        const char *type = D.disk[i].readonly ? "Read" : "Write";
        /* virtio-devices/src/block.rs lock_granularity(): by default the byte range [0, max(logical,
         * physical)), physical being st_blocks * 512 (block/src/lib.rs); an l_len of 0 is the whole file. */
        struct stat st;
        off_t len = 0;
        if (!D.disk[i].full_lock && fstat(D.disk[i].fd, &st) == 0)
            len = st.st_size > (off_t)st.st_blocks * 512 ? st.st_size : (off_t)st.st_blocks * 512;
        struct flock fl = { .l_type = D.disk[i].readonly ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET, .l_start = 0,
                            .l_len = len };
        int rc;
        while ((rc = fcntl(D.disk[i].fd, F_OFD_SETLK, &fl)) < 0 && errno == EINTR) {
        }
        if (rc == 0)
            continue;
        int e = errno;
        char what[4096 + 64], os[128];
        snprintf(what, sizeof what, "Failed to get %s lock for disk image: %s", type, D.disk[i].path);
        if (e == EAGAIN || e == EACCES)
            guest_error_set(err, 4, "Error locking disk images: Another instance likely holds a lock",
                      "Cannot lock images of all block devices", what, "The file is already locked");
        else
            guest_error_set(err, 5, "Error locking disk images: Another instance likely holds a lock",
                      "Cannot lock images of all block devices", what, "The lock state could not be checked or set",
                      os_error(e, os, sizeof os));
        return false;
    }
    return true;
}

/* The chain of virtio-devices' Net::new over net_util's open_tap() (one queue pair: CH's default). */
static void tap_error(struct guest_error *err, const char *what, const char *why)
{
    guest_error_set(err, 6, "Error from device manager", "Cannot create virtio-net device", "Failed to open taps",
              "Open tap device failed", what, why);
}

bool devices_open_taps(const char *const *names, size_t n, struct guest_error *err)
{
    for (size_t i = 0; i < n && i < MAX_TAPS; i++) {
        char os[128], what[IFNAMSIZ + 64];
        /* net_util/src/tap.rs Tap::open_named(). */
        if (strlen(names[i]) > IFNAMSIZ - 1) {
            snprintf(what, sizeof what, "Interface name too long (max length is %d): %s", IFNAMSIZ - 1, names[i]);
            guest_error_set(err, 5, "Error from device manager", "Cannot create virtio-net device", "Failed to open taps",
                      "Open tap device failed", what);
            return false;
        }
        int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            tap_error(err, "Couldn't open /dev/net/tun", os_error(errno, os, sizeof os));
            return false;
        }
        unsigned int features = 0;
        if (ioctl(fd, TUNGETFEATURES, &features) < 0) {
            int e = errno;
            close(fd);
            tap_error(err, "Unable to retrieve features", os_error(e, os, sizeof os));
            return false;
        }
        /* TUNSETIFF attaches this fd to the TAP (creating it when there is none, as for CH): a TAP that
         * another VMM's fd holds answers EBUSY. */
        struct ifreq ifr = { 0 };
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        memcpy(ifr.ifr_name, names[i], strlen(names[i]));
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
            int e = errno;
            close(fd);
            tap_error(err, "Unable to configure tap interface", os_error(e, os, sizeof os));
            return false;
        }
        D.tap_fd[D.ntaps++] = fd;
    }
    return true;
}

void devices_close(void)
{
    for (size_t i = 0; i < D.ndisks; i++) {
        close(D.disk[i].fd);
        free(D.disk[i].path);
    }
    for (size_t i = 0; i < D.ntaps; i++)
        close(D.tap_fd[i]);
    memset(&D, 0, sizeof D);
}
