import { request } from 'node:http';

/** One scrape: samples by `name{label="value",...}` (labels sorted), as Prometheus would read them. */
export interface Scrape {
  readonly contentType: string;
  readonly text: string;
  readonly samples: ReadonlyMap<string, number>;
  /** The sample's value; 0 when absent only if `orZero`, else undefined. */
  value(name: string, labels?: Readonly<Record<string, string>>): number | undefined;
}

export function sampleKey(name: string, labels: Readonly<Record<string, string>> = {}): string {
  const entries = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? name : `${name}{${entries.map(([k, v]) => `${k}="${v}"`).join(',')}}`;
}

/** Parses Prometheus's text format (enough of it for our own output: no escapes in label values). */
export function parseMetrics(text: string, contentType = ''): Scrape {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').split(',').filter(Boolean)) {
      const eq = pair.indexOf('=');
      labels[pair.slice(0, eq)] = pair.slice(eq + 1).replace(/^"|"$/g, '');
    }
    samples.set(sampleKey(match[1]!, labels), Number(match[3]));
  }
  return { contentType, text, samples, value: (name, labels) => samples.get(sampleKey(name, labels)) };
}

/** GET /metrics over TCP (`http://host:port`) with fetch, or over a unix socket. */
export async function scrape(target: { url: string } | { socketPath: string }, path = '/metrics'): Promise<Scrape & { status: number }> {
  if ('url' in target) {
    const response = await fetch(`${target.url}${path}`);
    const text = await response.text();
    return { ...parseIfOk(response.status, text, response.headers.get('content-type') ?? ''), status: response.status };
  }
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: target.socketPath, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ ...parseIfOk(res.statusCode ?? 0, text, String(res.headers['content-type'] ?? '')), status: res.statusCode ?? 0 });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function parseIfOk(status: number, text: string, contentType: string): Scrape {
  return status === 200 ? parseMetrics(text, contentType) : { contentType, text, samples: new Map(), value: () => undefined };
}
