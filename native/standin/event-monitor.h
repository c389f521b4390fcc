/*
 * The stand-in's copy of Cloud Hypervisor's event monitor (CH event_monitor/src/lib.rs and the
 * --event-monitor handling in cloud-hypervisor/src/main.rs): `--event-monitor path=<file>` or `fd=<n>`.
 *
 * Every event is one serde_json::to_string_pretty() of {timestamp, source, event, properties} followed
 * by "\n\n" (two writes, as CH's monitor thread does), on a file made non-blocking; write errors are
 * ignored. The timestamp is a Duration {"secs","nanos"} since the monitor was set up.
 */
#ifndef STANDIN_EVENT_MONITOR_H
#define STANDIN_EVENT_MONITOR_H

#include <stddef.h>

/*
 * Parses the option value like CH's OptionParser and opens (path: create + truncate, write-only) or adopts
 * (fd) the file. Returns NULL on success; on failure the head of CH's error chain, with the next line (its
 * source) in detail, or detail[0] == '\0' when the error has no source.
 */
const char *event_monitor_start(const char *value, char *detail, size_t detail_size);

/* Emits one event when a monitor is set (a no-op otherwise). key/value: one property, or key NULL for
 * `"properties": null`. */
void event_monitor_emit(const char *source, const char *event, const char *key, const char *value);

#endif
