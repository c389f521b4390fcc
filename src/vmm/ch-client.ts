/**
 * Client for Cloud Hypervisor's REST API on its unix socket. One short-lived connection per call (CH allows
 * at most 10), a deadline on every call, every failure a VmmApiError. Prints nothing.
 */
import { createConnection } from 'node:net';
import { MAX_SOCKET_PATH_BYTES } from '../unix-socket-path.js';
import { exchange, type ConnectToSocket, type VmmCallOptions, type VmmHttpMethod, type VmmResponse } from './http-exchange.js';
import { VmmApiError } from './vmm-api-error.js';
import {
  decodeCounters,
  decodePing,
  decodeVmInfo,
  toRestoreRequestBody,
  type RestoreConfig,
  type VmInfo,
  type VmmPing,
} from './vmm-wire-format.js';

export interface ChClientOptions {
  /** Transport factory; defaults to `net.createConnection(socketPath)`. */
  connect?: ConnectToSocket;
}

/** Endpoint names are `vmm.ping`-like; anything else would smuggle bytes into the request line. */
const ENDPOINT_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

const defaultConnect: ConnectToSocket = (socketPath) => createConnection(socketPath);

// libuv silently truncates longer paths, which could reach another VMM's socket.
export { MAX_SOCKET_PATH_BYTES };

export class ChClient {
  readonly socketPath: string;
  readonly #connect: ConnectToSocket;

  /** Throws a TypeError for a path over MAX_SOCKET_PATH_BYTES unless a custom transport is given. */
  constructor(socketPath: string, options: ChClientOptions = {}) {
    if (options.connect === undefined && Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
      throw new TypeError(`unix socket path is ${Buffer.byteLength(socketPath)} bytes, over the limit of ${MAX_SOCKET_PATH_BYTES}: ${socketPath}`);
    }
    this.socketPath = socketPath;
    this.#connect = options.connect ?? defaultConnect;
  }

  /**
   * Sends one request to `/api/v1/<endpoint>`; `body` is serialized as JSON. Resolves with any 2xx response.
   * Rejects with a VmmApiError; a malformed endpoint or timeout is a programming error (TypeError).
   */
  async request(method: VmmHttpMethod, endpoint: string, body: unknown, options: VmmCallOptions): Promise<VmmResponse> {
    if (!ENDPOINT_PATTERN.test(endpoint)) throw new TypeError(`invalid VMM API endpoint ${JSON.stringify(endpoint)}`);
    if (!(options.timeoutMs > 0 && Number.isFinite(options.timeoutMs))) {
      throw new TypeError(`timeoutMs must be a positive number, got ${options.timeoutMs}`);
    }
    const json = body === undefined ? undefined : JSON.stringify(body);
    return exchange({ socketPath: this.socketPath, connect: this.#connect, method, endpoint, body: json }, options);
  }

  /** GET vmm.ping: the VMM's API loop is up and answering. */
  async ping(options: VmmCallOptions): Promise<VmmPing> {
    const response = await this.request('GET', 'vmm.ping', undefined, options);
    return this.#decode('GET vmm.ping', response, decodePing);
  }

  /** PUT vm.restore into a bare VMM. A failure deletes the VM but leaves the VMM running. */
  async restore(config: RestoreConfig, options: VmmCallOptions): Promise<void> {
    await this.request('PUT', 'vm.restore', toRestoreRequestBody(config), options);
  }

  /** GET vm.info. */
  async info(options: VmmCallOptions): Promise<VmInfo> {
    const response = await this.request('GET', 'vm.info', undefined, options);
    return this.#decode('GET vm.info', response, (value) => decodeVmInfo(value, response.body));
  }

  /** PUT vm.create with a VmConfig (JSON as Cloud Hypervisor takes it). */
  async create(config: Record<string, unknown>, options: VmmCallOptions): Promise<void> {
    await this.request('PUT', 'vm.create', config, options);
  }

  /** PUT on an endpoint that takes no body: vm.boot, vm.pause, vm.resume, vm.shutdown, vm.reboot... */
  async action(endpoint: 'vm.boot' | 'vm.pause' | 'vm.resume' | 'vm.shutdown' | 'vm.reboot' | 'vm.power-button', options: VmmCallOptions): Promise<void> {
    await this.request('PUT', endpoint, undefined, options);
  }

  /** PUT vm.snapshot into a `file://` directory; the VM must be paused. */
  async snapshot(destinationUrl: string, options: VmmCallOptions): Promise<void> {
    await this.request('PUT', 'vm.snapshot', { destination_url: destinationUrl }, options);
  }

  /** PUT vm.resize: vCPUs, memory and balloon in Cloud Hypervisor's units (bytes). */
  async resize(body: { desired_vcpus?: number; desired_ram?: number; desired_balloon?: number }, options: VmmCallOptions): Promise<void> {
    await this.request('PUT', 'vm.resize', body, options);
  }

  /** GET vm.counters. */
  async counters(options: VmmCallOptions): Promise<Record<string, Record<string, bigint>>> {
    const response = await this.request('GET', 'vm.counters', undefined, options);
    try {
      return decodeCounters(response.body);
    } catch (error) {
      throw new VmmApiError({
        kind: 'protocol',
        endpoint: 'GET vm.counters',
        socketPath: this.socketPath,
        requestSent: true,
        detail: `unexpected response body (${error instanceof Error ? error.message : String(error)})`,
        cause: error,
      });
    }
  }

  #decode<T>(label: string, response: VmmResponse, decode: (value: unknown) => T): T {
    try {
      return decode(JSON.parse(response.body));
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new VmmApiError({
        kind: 'protocol',
        endpoint: label,
        socketPath: this.socketPath,
        requestSent: true,
        detail: `unexpected response body (${detail})`,
        cause: error,
      });
    }
  }
}
