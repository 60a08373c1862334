/**
 * The live page's HTTP odds and ends, on node:http alone: which Host headers
 * a loopback page answers to, a request body read up to a limit, and the
 * headers of its responses (every one says nosniff).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { PredictInputError } from "./predict-request.js";

/**
 * Bound to a loopback address, the page answers only to loopback host
 * names: a web site that rebinds its DNS name to 127.0.0.1 cannot read it.
 */
export function hostAllowed(listen: string, hostHeader: string | undefined): boolean {
  if (!isLoopback(listen)) return true;
  if (!hostHeader) return false;
  const name = hostHeader.startsWith("[")
    ? hostHeader.slice(0, hostHeader.indexOf("]") + 1)
    : hostHeader.split(":")[0];
  return isLoopback(name) || name === "localhost" || name.endsWith(".localhost");
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The request body, refused with 413 past `limit` bytes (without reading the rest). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    return Promise.reject(
      new PredictInputError(413, `the body has ${declared} bytes; at most ${limit} are accepted`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Stop keeping it; the 413 goes out with `Connection: close`, which drops the rest.
        req.removeAllListeners("data");
        req.resume();
        reject(new PredictInputError(413, `the body has more than ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** The headers of an `/events` response. */
export function streamHeaders(): Record<string, string> {
  return {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    Connection: "keep-alive",
    "X-Accel-Buffering": "no",
    "X-Content-Type-Options": "nosniff",
  };
}

/** Sends a plain-text response (no body for HEAD). */
// Every response says nosniff: a browser must not read an error text or JSON as a script or a page.
export function sendText(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
  });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/** Sends a JSON response; a 413 also closes the connection. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    // After a refused body the rest of it may still be on its way: do not reuse the connection.
    ...(status === 413 ? { Connection: "close" } : {}),
  });
  res.end(JSON.stringify(body));
}
