/**
 * Imported first by the entry points. A start does a dozen small file system operations on libuv's
 * thread pool (4 threads by default); bursts of starts queue behind each other there. Must be set
 * before the pool's first use, which is why this module has no imports of its own.
 */
process.env.UV_THREADPOOL_SIZE ??= '16';
