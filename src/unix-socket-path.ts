/**
 * The longest unix socket path Linux takes: sun_path holds 108 bytes with the terminating NUL.
 * Longer paths fail late and obscurely (libuv even truncates them), so every layer that takes
 * one checks it against this.
 */
export const MAX_SOCKET_PATH_BYTES = 107;
