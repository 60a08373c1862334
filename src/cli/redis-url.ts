/** `--redis-url`: what the connection can read of a URL, and the URL with its secrets hidden. */

/** Why a string is not a usable Redis URL, or undefined when it is. */
export function checkRedisUrl(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "is not a URL; expected redis://HOST:PORT or rediss://HOST:PORT";
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    return `has protocol ${url.protocol}; expected redis:// or rediss://`;
  }
  if (url.hostname === "") return "has no host; expected redis://HOST:PORT or rediss://HOST:PORT";
  // ioredis reads the path as the database number.
  if (!/^\/?(\d+)?$/.test(url.pathname)) {
    return `has path ${url.pathname}; the only path allowed is a database number, e.g. /0`;
  }
  // The connection reads user, password, host, port and database only: a
  // query (`?password=...`, as some clients accept) would be silently
  // ignored, and the server would then say that no password was given.
  if (url.search !== "" || url.hash !== "") {
    const names = [...url.searchParams.keys()];
    const password = names.includes("password")
      ? "; give the password before the host instead: redis://:PASSWORD@HOST:PORT (or redis://USER:PASSWORD@HOST:PORT)"
      : "";
    const what = url.search !== "" ? `a query (${names.map((k) => `${k}=`).join(", ")})` : "a #fragment";
    return `has ${what}, which is not read here${password}`;
  }
  return undefined;
}
