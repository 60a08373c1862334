/**
 * The Prometheus `file_sd` targets file of a local run (`train --workers N
 * --metrics-port P --targets-file FILE`): the coordinator on P and local
 * worker i on P + i, so a local Prometheus with a `file_sd_configs` job
 * pointing at FILE scrapes every process of the run. The `job` label of
 * each group (`coordinator`, `worker`) matches the jobs of
 * deploy/prometheus/prometheus.yml, so the dashboard works on both.
 */
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { writeFileAtomic } from "../core/write-atomic.js";

/** One target group of a file_sd file. */
export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** The endpoints of a local run. */
export interface LocalRunEndpoints {
  /** `--metrics-host`; a wildcard address is scraped through loopback. */
  host: string;
  coordinatorPort: number;
  workerPorts: number[];
  runId: string;
}

/** `host:port` as Prometheus wants it (IPv6 in brackets; wildcards become loopback). */
export function scrapeAddress(host: string, port: number): string {
  const h = host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/** The target groups of a local run: one for the coordinator, one for the workers (when there are any). */
export function localRunTargets(e: LocalRunEndpoints): TargetGroup[] {
  const groups: TargetGroup[] = [
    { targets: [scrapeAddress(e.host, e.coordinatorPort)], labels: { job: "coordinator", run: e.runId } },
  ];
  if (e.workerPorts.length > 0) {
    groups.push({
      targets: e.workerPorts.map((p) => scrapeAddress(e.host, p)),
      labels: { job: "worker", run: e.runId },
    });
  }
  return groups;
}

/**
 * Writes the targets file atomically (Prometheus watches it and must never
 * read half a file), creating its directory when needed.
 * @throws Error naming the file when it cannot be written.
 */
export async function writeTargetsFile(path: string, groups: TargetGroup[]): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomic(path, Buffer.from(`${JSON.stringify(groups, null, 2)}\n`));
  } catch (e) {
    throw new Error(
      `cannot write the Prometheus targets file ${path} (--targets-file): ${(e as Error).message}`,
    );
  }
}
