/**
 * The cluster and output options of the option table (see option-table.ts):
 * how processes reach Redis and each other, and what they report where.
 */
import { hostname } from "node:os";
import { LOG_FORMATS, LOG_LEVELS } from "../shared/command-options.js";
import { DISPATCHES } from "../shared/dispatch.js";
import { RUN_ID_PATTERN } from "../shared/keys.js";
import { redactUrl } from "../shared/redis.js";
import { CLUSTER, LOGGERS, type OptionDef, RUNNERS } from "./option-def.js";
import { checkRedisUrl } from "./redis-url.js";

/** Why `--dispatch lanes` and `--dispatch jobs` are refused. */
const REMOVED_DISPATCH =
  "was removed (the Redis-only dispatches are gone; direct, the default, is the only one): drop --dispatch or pass --dispatch direct";

/** Cluster and output options, in help order (after the run's). */
export const CLUSTER_AND_OUTPUT_OPTIONS: readonly OptionDef[] = [
  // Cluster
  {
    name: "redis-url",
    kind: "string",
    commands: CLUSTER,
    group: "Cluster",
    description: "Redis server (TLS with rediss://)",
    env: "REDIS_URL",
    metavar: "URL",
    patternText: "a redis:// or rediss:// URL",
    default: "redis://127.0.0.1:6379",
    check: (v: string) => checkRedisUrl(v),
    redact: (v: string) => redactUrl(v),
  },
  {
    name: "redis-ca",
    kind: "path",
    commands: CLUSTER,
    group: "Cluster",
    description: "CA certificate (PEM) that signs the Redis server's TLS certificate",
    metavar: "FILE",
    defaultText: "system CAs",
  },
  {
    name: "run-id",
    kind: "string",
    commands: CLUSTER,
    group: "Cluster",
    description: "Run name; keys live under gf:{run-id}:",
    metavar: "ID",
    pattern: RUN_ID_PATTERN,
    patternText: "1 to 64 letters, digits, _ or -",
    defaults: { coordinator: "default", worker: "default" },
    defaultText: { train: "a fresh id per run" },
  },
  {
    name: "step-timeout",
    kind: "float",
    commands: RUNNERS,
    group: "Cluster",
    description: "Seconds the coordinator waits for a step's shards before it re-enqueues them",
    metavar: "SECONDS",
    min: 0,
    minExclusive: true,
    default: 30,
  },
  {
    name: "min-workers",
    kind: "int",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Workers that must have joined before the first step (the clock starts then); later steps take whoever is connected",
    metavar: "N",
    min: 1,
    default: 1,
  },
  {
    name: "dispatch",
    kind: "enum",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "How steps reach workers. Only direct: workers take a BullMQ seat, then get each step's weights and shards over the coordinator's data port and answer there (no Redis command per step). Kept so existing scripts work; lanes and jobs were removed",
    values: DISPATCHES,
    removed: {
      lanes: REMOVED_DISPATCH,
      jobs: REMOVED_DISPATCH,
    },
    default: "direct",
  },
  {
    name: "data-port",
    kind: "int",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Port where seated workers get steps; 0: any free port (workers find it in the run spec); containers publish a fixed one",
    metavar: "PORT",
    min: 0,
    max: 65535,
    default: 0,
  },
  {
    name: "data-host",
    kind: "string",
    commands: RUNNERS,
    group: "Cluster",
    description: "Address the data port listens on",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    defaults: { coordinator: "0.0.0.0", train: "127.0.0.1" },
  },
  {
    name: "advertise-host",
    kind: "string",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Address workers dial to reach the data port (in the run spec): a name or IP this host has for them",
    metavar: "HOST",
    pattern: /^[A-Za-z0-9.:_-]{1,253}$/,
    patternText: "a host name or IP address",
    defaults: { train: "127.0.0.1" },
    defaultText: { coordinator: "this host's name", train: "127.0.0.1" },
  },
  {
    name: "shm-dir",
    kind: "string",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Directory in shared memory (tmpfs) where workers on the coordinator's host take each step's weights and leave their gradients, instead of sending them over the data port; none: always the data port. Workers elsewhere (other hosts, other containers) use the data port either way",
    metavar: "DIR",
    pattern: /^\S.{0,4095}$/,
    patternText: "a directory, or none",
    default: "/dev/shm",
  },
  {
    name: "lock-seconds",
    kind: "float",
    commands: ["worker"],
    group: "Cluster",
    description:
      "BullMQ lock time of a worker's seat: the seat of a worker that stops renewing its lock this long (killed, frozen) is handed to another worker",
    metavar: "SECONDS",
    min: 0,
    minExclusive: true,
    default: 30,
  },
  {
    name: "worker-id",
    kind: "string",
    commands: ["worker"],
    group: "Cluster",
    description: "Name of this worker in logs and metrics",
    metavar: "ID",
    // Printable ASCII: it travels in refusal notices and metric labels.
    pattern: /^[\x21-\x7e]{1,128}$/,
    patternText: "1 to 128 printable ASCII characters, no spaces",
    default: () => `${hostname()}-${process.pid}`,
    defaultText: "<hostname>-<pid>",
  },
  {
    name: "metrics-port",
    kind: "int",
    commands: CLUSTER,
    group: "Output",
    description: "Port of the Prometheus /metrics endpoint (0: off)",
    metavar: "PORT",
    min: 0,
    max: 65535,
    defaults: { coordinator: 9464, worker: 9465, train: 0 },
  },
  {
    name: "metrics-host",
    kind: "string",
    commands: CLUSTER,
    group: "Output",
    description: "Address the metrics endpoint listens on (containers use 0.0.0.0)",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    default: "127.0.0.1",
  },
  {
    name: "targets-file",
    kind: "path",
    commands: ["train"],
    group: "Output",
    description:
      "Write a Prometheus file_sd targets file: the coordinator on --metrics-port, local worker i on that port + i",
    metavar: "FILE",
    defaultText: "not written",
  },
  {
    name: "ui-port",
    kind: "int",
    commands: RUNNERS,
    group: "Output",
    description:
      "Port of the live training page: loss, accuracy, first-layer weights, draw a digit (0: off; npm start turns it on)",
    metavar: "PORT",
    min: 0,
    max: 65535,
    default: 0,
  },
  {
    name: "ui-host",
    kind: "string",
    commands: RUNNERS,
    group: "Output",
    description: "Address the live page listens on (containers use 0.0.0.0)",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    default: "127.0.0.1",
  },
  // Output
  {
    name: "trace",
    kind: "path",
    commands: ["train", "coordinator", "worker"],
    group: "Output",
    description:
      "Write a Chrome trace-event JSON of each step (send, wait, results, update; a worker's wait, compute, send) at the end: open it in Perfetto or chrome://tracing. train --workers N merges its workers' tracks in",
    metavar: "FILE",
    defaultText: "no trace",
  },
  {
    name: "json",
    kind: "boolean",
    commands: ["train", "coordinator", "evaluate", "predict"],
    group: "Output",
    description: "Print results as JSON lines instead of text",
    default: false,
  },
  {
    name: "log-level",
    kind: "enum",
    commands: LOGGERS,
    group: "Output",
    description: "Log level (logs go to stderr)",
    values: LOG_LEVELS,
    default: "info",
  },
  {
    name: "log-format",
    kind: "enum",
    commands: LOGGERS,
    group: "Output",
    description:
      "Log lines: auto (readable lines when stderr is a terminal, else JSON), text (readable lines) or json",
    values: LOG_FORMATS,
    default: "auto",
  },
  {
    name: "dry-run",
    kind: "boolean",
    commands: CLUSTER,
    group: "Output",
    description: "Validate the configuration, print it as JSON and exit",
    default: false,
  },
];
