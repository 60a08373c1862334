/**
 * Listening on a host and port for one of the process's HTTP endpoints (the
 * metrics and the live page), with the error a user can act on when the
 * port or host is not to be had: which endpoint, where, and which flag to
 * change.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

/** The port asked for is another process's: the caller may try another. */
export class PortInUseError extends Error {
  override name = "PortInUseError";
}

/** What to listen on, and how the error names it. */
export interface ListenTarget {
  host: string;
  port: number;
  /** The endpoint in the error: "metrics", "the live page". */
  what: string;
  /** The flags that set the port and host: "--metrics-port", "--metrics-host". */
  portFlag: string;
  hostFlag: string;
  /** What port 0 does for this endpoint, for the in-use hint: "turn metrics off". */
  zeroMeans: string;
}

/**
 * Listens; rejects with `cannot serve <what> on <host:port>: <hint>` (a
 * {@link PortInUseError} for a port in use) when the
 * port is in use, the host is not this machine's, or the port is privileged.
 * Resolves with the URL it serves (`http://host:port`, IPv6 hosts bracketed)
 * and the port (the one chosen when `port` was 0).
 */
export async function listenOrExplain(
  server: Server,
  t: ListenTarget,
): Promise<{ port: number; url: string }> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => {
      const hint =
        e.code === "EADDRINUSE"
          ? `the port is in use: choose another ${t.portFlag}, or 0 to ${t.zeroMeans}`
          : e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND"
            ? `not an address of this host: check ${t.hostFlag}`
            : e.code === "EACCES"
              ? "not allowed to listen on this port: choose a port above 1023"
              : e.message;
      const message = `cannot serve ${t.what} on ${t.host}:${t.port}: ${hint}`;
      reject(e.code === "EADDRINUSE" ? new PortInUseError(message) : new Error(message));
    });
    server.listen(t.port, t.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = t.host.includes(":") ? `[${t.host}]` : t.host;
  return { port, url: `http://${shownHost}:${port}` };
}
