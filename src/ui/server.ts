/**
 * The live training page (`--ui-port`, `--ui-host`), served by the process
 * that runs the training (the coordinator, or `train --workers 0`) from its
 * own state, with node:http alone:
 *
 * - `GET /`, `/app.js`, `/style.css`: the page (src/ui/page/, read from disk
 *   at start; nothing is fetched from anywhere else, and the CSP says so);
 * - `GET /viz/centre-digit.js`, `/viz/weight-tiles.js`: the modules of
 *   src/viz that app.js imports, compiled (dist/src/viz/), so the page
 *   centres a drawn digit and draws the weights with the CLI's own code;
 * - `GET /events`: Server-Sent Events: `hello` (the run and its history, on
 *   connect), `progress` (new loss points, accuracy, samples/s, workers; 4 a
 *   second), `weights` (the first layer as float32 tiles, base64, at most 2 a
 *   second), `history` (the whole curve again after it was thinned), `end`;
 * - `POST /predict`: an input image in, every layer's activations and the
 *   prediction under the current weights out (see predict-request.ts).
 *
 * The page is a view of the run and must never cost it anything: connections
 * and streams are capped, slow requests time out, and a stream client that
 * stops reading is dropped (see limits.ts).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { ClusterStats } from "../coordinator/cluster-stats.js";
import type { RunConfig } from "../core/run-config.js";
import type { RunObserver } from "../run/observer.js";
import { listenOrExplain } from "../shared/listen.js";
import type { Logger } from "../shared/log.js";
import { hostAllowed, readBody, sendJson, sendText, streamHeaders } from "./http.js";
import {
  HEADERS_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  MAX_STREAM_CLIENTS,
  maxBehindBytes,
  maxConnections,
  REQUEST_TIMEOUT_MS,
  TIMEOUT_CHECK_MS,
} from "./limits.js";
import { LiveRunState } from "./live-state.js";
import { CSP, defaultPageDir, loadPage } from "./page-files.js";
import { maxPredictBodyBytes, PredictInputError, Predictor, parsePredictBody } from "./predict-request.js";

/** How often progress goes out. */
const TICK_MS = 250;
/** Weights go out at most this often (twice a second)... */
const WEIGHTS_EVERY_MS = 500;
/** ...and slower for a wide first layer, so the stream stays under ~2 MB/s per client. */
const WEIGHTS_BYTES_PER_SECOND = 2_000_000;
/** Tiles sent at most (the page cannot show thousands of 28x28 tiles anyway). */
export const MAX_TILES = 256;
/** A client this far behind gets no weights until it catches up. */
const SLOW_CLIENT_BYTES = 1_000_000;
/** A comment line keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;
/** A stream client whose queue has not emptied for this long is not reading: it is dropped. */
const STALLED_MS = 15_000;

/** Settings of {@link startLivePage}. */
export interface LivePageOptions {
  host: string;
  /** 0 picks a free port (tests); the CLI never passes 0 (it means "off" there). */
  port: number;
  config: RunConfig;
  /** The cluster's counters (workers that delivered results), or `in-process`. */
  workers: ClusterStats | "in-process";
  log?: Logger;
  /** Where index.html, app.js and style.css are (default: src/ui/page/ of the package). */
  pageDir?: string;
  /** Where the compiled src/viz modules that app.js imports are (default: dist/src/viz/ of the package). */
  moduleDir?: string;
}

/** A running live page. */
export interface LivePage {
  readonly host: string;
  readonly port: number;
  /** `http://host:port/`. */
  readonly url: string;
  /** Feed it the run's steps and epochs (combine it with the other observers). */
  readonly observer: RunObserver;
  /** The state the page shows (for tests and callers that add to it). */
  readonly state: LiveRunState;
  /** Open `/events` streams. */
  readonly streams: number;
  /** Stream clients dropped so far for not reading. */
  readonly droppedStreams: number;
  /** Tells the open pages the run ended, then stops serving. */
  close(): Promise<void>;
}

/**
 * Starts serving the live page of a run.
 * @throws Error naming the address when it cannot listen, or the file when the page is missing.
 */
export async function startLivePage(o: LivePageOptions): Promise<LivePage> {
  const files = await loadPage(o.pageDir ?? defaultPageDir(), o.moduleDir);
  const state = new LiveRunState({ config: o.config, workers: o.workers });
  const predictor = new Predictor(o.config.spec);
  /** Open streams, and since when each has had bytes queued (undefined: its queue is empty). */
  const clients = new Map<ServerResponse, { behindSince: number | undefined }>();
  let droppedStreams = 0;
  /** The largest frame sent so far: a client is behind by a number of frames, not of bytes. */
  let largestFrame = 0;
  let closed = false;
  let lastWeightsAt = -Infinity;
  let lastWeightsVersion = -1;
  let weightsEveryMs = WEIGHTS_EVERY_MS;

  const send = (res: ServerResponse, event: string, data: unknown): void => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  /** Drops a stream client: its queued bytes are freed with its socket. */
  const drop = (res: ServerResponse, why: string): void => {
    clients.delete(res);
    droppedStreams++;
    o.log?.debug({ why, queued: res.writableLength }, "live page stream client dropped");
    res.destroy();
  };
  /** Writes a frame to a stream client, unless it is so far behind that it is dropped instead. */
  const push = (res: ServerResponse, frame: string): void => {
    largestFrame = Math.max(largestFrame, frame.length);
    if (res.writableLength > maxBehindBytes(largestFrame)) drop(res, "too far behind");
    else res.write(frame);
  };
  const broadcast = (event: string, data: unknown): void => {
    if (clients.size === 0) return;
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const res of [...clients.keys()]) push(res, frame);
  };
  /** Drops the clients whose queue has not emptied for {@link STALLED_MS}. */
  const dropStalled = (now: number): void => {
    for (const [res, c] of [...clients]) {
      if (res.writableLength === 0) c.behindSince = undefined;
      else if (c.behindSince === undefined) c.behindSince = now;
      else if (now - c.behindSince > STALLED_MS) drop(res, "not reading");
    }
  };
  const weightsEvent = (): Record<string, unknown> | undefined => {
    const tiles = state.firstLayerTiles(MAX_TILES);
    if (!tiles) return undefined;
    const bytes = tiles.w.byteLength + tiles.b.byteLength;
    weightsEveryMs = Math.max(WEIGHTS_EVERY_MS, (bytes / WEIGHTS_BYTES_PER_SECOND) * 1000);
    return {
      version: tiles.version,
      nIn: tiles.nIn,
      nOut: tiles.nOut,
      shown: tiles.shown,
      // Float32 little-endian (every platform Node runs on), neuron-major.
      w: Buffer.from(tiles.w.buffer, tiles.w.byteOffset, tiles.w.byteLength).toString("base64"),
      b: Buffer.from(tiles.b.buffer, tiles.b.byteOffset, tiles.b.byteLength).toString("base64"),
    };
  };
  const hello = () => ({
    layers: o.config.spec.layers,
    hidden: o.config.spec.hidden,
    output: o.config.spec.output,
    cost: o.config.spec.cost,
    optimizer: o.config.optimizer.name,
    lr: o.config.optimizer.lr,
    batch: o.config.batch,
    shards: o.config.shards,
    epochs: o.config.epochs,
    kernel: o.config.kernel,
    cluster: o.workers !== "in-process",
    ...state.history(),
    progress: state.progress(),
  });

  /** Sends what is new; `final` also sends the latest weights whatever the rate limit. */
  const tick = (final = false): void => {
    const news = state.take();
    if (clients.size === 0) return;
    dropStalled(performance.now());
    if (news.reset) broadcast("history", state.history());
    broadcast("progress", {
      points: news.reset ? [] : news.points,
      accuracy: news.reset ? [] : news.accuracy,
      progress: state.progress(),
    });
    const now = performance.now();
    if (state.version !== lastWeightsVersion && (final || now - lastWeightsAt >= weightsEveryMs)) {
      const ev = weightsEvent();
      if (ev) {
        const frame = `event: weights\ndata: ${JSON.stringify(ev)}\n\n`;
        for (const res of [...clients.keys()]) if (res.writableLength < SLOW_CLIENT_BYTES) push(res, frame);
        lastWeightsAt = now;
        lastWeightsVersion = state.version;
      }
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!hostAllowed(o.host, req.headers.host)) {
      sendText(res, 403, "this page answers to its own address only (Host header refused)\n");
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/predict") {
      if (req.method !== "POST") {
        res.setHeader("Allow", "POST");
        sendText(res, 405, "POST an image to /predict\n");
        return;
      }
      await predict(req, res);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      sendText(res, 405, "only GET and HEAD here (POST /predict)\n");
      return;
    }
    if (path === "/events") {
      if (req.method === "HEAD") {
        // The headers a stream would have, and the end: a HEAD must not become a client.
        res.writeHead(200, streamHeaders());
        res.end();
        return;
      }
      if (!closed && clients.size >= MAX_STREAM_CLIENTS) {
        res.setHeader("Retry-After", "10");
        sendText(res, 503, `too many open streams (${MAX_STREAM_CLIENTS}); close another page of this run\n`);
        return;
      }
      openStream(req, res);
      return;
    }
    const page = files.get(path);
    if (page) {
      res.writeHead(200, {
        "Content-Type": page.type,
        "Content-Length": page.body.length,
        "Cache-Control": "no-store",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
      });
      res.end(req.method === "HEAD" ? undefined : page.body);
      return;
    }
    sendText(res, 404, `not found: ${path} (the page is at /)\n`);
  };

  const openStream = (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, streamHeaders());
    if (closed) {
      send(res, "end", { t: state.elapsed() });
      res.end();
      return;
    }
    res.write("retry: 2000\n\n");
    send(res, "hello", hello());
    const ev = weightsEvent();
    if (ev) send(res, "weights", ev);
    clients.set(res, { behindSince: undefined });
    // Streams are managed here (dropped when not reading), not by the idle timeout.
    req.socket.setTimeout(0);
    req.on("close", () => clients.delete(res));
  };

  const predict = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const nIn = o.config.spec.layers[0];
    try {
      const body = await readBody(req, maxPredictBodyBytes(nIn));
      const pixels = parsePredictBody(body, req.headers["content-type"], nIn);
      const snap = state.snapshot();
      if (!snap) throw new PredictInputError(503, "no weights yet: the run has not finished its first step");
      sendJson(res, 200, predictor.predict(snap.params, pixels, snap.version));
    } catch (e) {
      if (!(e instanceof PredictInputError)) throw e;
      sendJson(res, e.status, { error: e.message });
    }
  };

  const server = createServer(
    {
      // A half-sent request holds a descriptor: headers and bodies must come in time.
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: TIMEOUT_CHECK_MS,
    },
    (req, res) => {
      handle(req, res).catch((e) => {
        o.log?.warn({ err: (e as Error).message, path: req.url }, "live page request failed");
        if (!res.headersSent) sendText(res, 500, `error: ${(e as Error).message}\n`);
        else res.destroy();
      });
    },
  );
  // Past the cap a new connection is closed at once: descriptors stay for the run's own files.
  server.maxConnections = maxConnections();
  server.timeout = IDLE_TIMEOUT_MS;
  // The page must never keep the process alive once the run is over.
  server.unref();
  const { port, url: base } = await listenOrExplain(server, {
    host: o.host,
    port: o.port,
    what: "the live page",
    portFlag: "--ui-port",
    hostFlag: "--ui-host",
    zeroMeans: "turn the page off",
  });
  server.on("error", (e) => o.log?.warn({ err: e.message }, "live page server error"));
  const ticker = setInterval(() => tick(), TICK_MS);
  ticker.unref();
  const keepalive = setInterval(() => {
    for (const res of [...clients.keys()]) push(res, ": keep-alive\n\n");
  }, KEEPALIVE_MS);
  keepalive.unref();

  const url = `${base}/`;
  return {
    host: o.host,
    port,
    url,
    observer: state.observer,
    state,
    get streams() {
      return clients.size;
    },
    get droppedStreams() {
      return droppedStreams;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(ticker);
      clearInterval(keepalive);
      // The last points and the final weights, then `end`, so an open page keeps the finished run.
      tick(true);
      broadcast("end", { t: state.elapsed(), progress: state.progress() });
      for (const res of clients.keys()) res.end();
      clients.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/**
 * The CLI's side: starts the page when `uiPort` is not 0 and prints its
 * address on stderr (`gradfleet: live page at http://127.0.0.1:8080/`).
 * @returns undefined when the page is off.
 */
export async function serveLivePage(
  o: { uiPort: number; uiHost: string },
  config: RunConfig,
  workers: ClusterStats | "in-process",
  log?: Logger,
): Promise<LivePage | undefined> {
  if (o.uiPort === 0) return undefined;
  const page = await startLivePage({ host: o.uiHost, port: o.uiPort, config, workers, log });
  const wildcard = o.uiHost === "0.0.0.0" || o.uiHost === "::";
  const shown = wildcard ? `http://localhost:${page.port}/ (listening on ${o.uiHost})` : page.url;
  process.stderr.write(`gradfleet: live page at ${shown}\n`);
  return page;
}
