/**
 * The HTTP endpoint of a gradfleet process (`--metrics-port`, `--metrics-host`):
 *
 * - `GET /metrics`: the registry in the Prometheus text format;
 * - `GET /healthz`: 200 while the process runs (liveness: restart it when this fails);
 * - `GET /readyz`: 200 when the process can do its work (Redis connected and,
 *   for a worker, its dataset loaded), else 503 with the reason.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";
import { listenOrExplain } from "./listen.js";
import type { Logger } from "./log.js";

/** Whether a process is ready, and why not. */
export interface Readiness {
  ready: boolean;
  /** Why the process is not ready (shown in the 503 body). */
  reason?: string;
}

/** Settings of {@link startMetricsServer}. */
export interface MetricsServerOptions {
  registry: Registry;
  host: string;
  /** 0 picks a free port (tests); the CLI never passes 0 (it means "off" there). */
  port: number;
  /** Asked on every `/readyz`; must answer quickly. */
  readiness: () => Readiness | Promise<Readiness>;
  log?: Logger;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  readonly host: string;
  /** The port it listens on (the real one when 0 was asked for). */
  readonly port: number;
  /** `http://host:port`, for logs and tests. */
  readonly url: string;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/**
 * Starts serving `/metrics`, `/healthz` and `/readyz`.
 * @throws Error naming the address when it cannot listen (in use, not an address of this host).
 */
export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    handle(o, req, res).catch((e) => {
      o.log?.warn({ err: (e as Error).message, path: req.url }, "metrics endpoint failed");
      if (!res.headersSent) send(res, 500, `error: ${(e as Error).message}\n`);
      else res.destroy();
    });
  });
  // A scrape must never keep the process alive on its way out.
  server.unref();
  const { port, url } = await listenOrExplain(server, {
    host: o.host,
    port: o.port,
    what: "metrics",
    portFlag: "--metrics-port",
    hostFlag: "--metrics-host",
    zeroMeans: "turn metrics off",
  });
  server.on("error", (e) => o.log?.warn({ err: e.message }, "metrics server error"));
  o.log?.debug({ url }, "serving /metrics, /healthz and /readyz");
  return {
    host: o.host,
    port,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "only GET and HEAD\n");
    return;
  }
  const path = (req.url ?? "/").split("?")[0];
  switch (path) {
    case "/metrics": {
      const body = await o.registry.metrics();
      send(res, 200, body, o.registry.contentType);
      return;
    }
    case "/healthz":
      send(res, 200, "ok\n");
      return;
    case "/readyz": {
      const r = await o.readiness();
      send(res, r.ready ? 200 : 503, r.ready ? "ready\n" : `not ready: ${r.reason ?? "starting"}\n`);
      return;
    }
    case "/":
      send(res, 200, "gradfleet: /metrics (Prometheus), /healthz (alive), /readyz (ready for work)\n");
      return;
    default:
      send(res, 404, `not found: ${path} (try /metrics, /healthz or /readyz)\n`);
  }
}

function send(res: ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8"): void {
  res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/**
 * A process's metrics with its HTTP endpoint: subclasses provide the
 * registry and the readiness rule, this serves them and closes the server.
 */
export abstract class ServedMetrics {
  abstract readonly registry: Registry;
  private server?: MetricsServer;

  /** Whether the process can work now (drives /readyz). */
  abstract readiness(): Readiness;

  /** Serves the metrics on host:port (see startMetricsServer). */
  async serve(host: string, port: number, log?: Logger): Promise<MetricsServer> {
    this.server = await startMetricsServer({
      registry: this.registry,
      host,
      port,
      readiness: () => this.readiness(),
      log,
    });
    return this.server;
  }

  /** Stops the server, if any. */
  async close(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }
}
