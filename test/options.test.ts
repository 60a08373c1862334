import { hostname } from "node:os";
import { describe, expect, it } from "vitest";
import { helpText, optionsMarkdownTable } from "../src/cli/help.js";
import {
  allEnvVars,
  COMMAND_NAMES,
  type CommandName,
  type CommandOptions,
  defaultOf,
  envVarOf,
  envVarsOf,
  formatValue,
  isRequired,
  OPTIONS,
  optionKey,
  optionsOf,
  type ParsedCommand,
  parseCommandLine,
  parseValue,
  redactedOptions,
  typedOptions,
  UsageError,
  unreadEnvVars,
} from "../src/cli/options.js";

/** Parses with an empty environment unless one is given. */
function parse(argv: string[], env: NodeJS.ProcessEnv = {}): ParsedCommand {
  return parseCommandLine(argv, env);
}

/** The UsageError a command line raises (the test fails when it parses). */
function usageError(argv: string[], env: NodeJS.ProcessEnv = {}): UsageError {
  try {
    parseCommandLine(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    const err = e as UsageError;
    expect(err.exitCode).toBe(2);
    expect(err.message).not.toContain("\n");
    return err;
  }
  throw new Error(`expected a UsageError for ${JSON.stringify(argv)} ${JSON.stringify(env)}`);
}

describe("defaults", () => {
  it("train gets the documented defaults, all from the table", () => {
    const p = parse(["train"]);
    expect(p.command).toBe("train");
    expect(p.help).toBe(false);
    expect(p.positionals).toEqual([]);
    expect(p.options).toEqual({
      layers: [784, 16, 16, 10],
      activation: "sigmoid",
      output: "sigmoid",
      cost: "quadratic",
      optimizer: "sgd",
      lr: 1.5,
      momentum: 0.9,
      weightDecay: 0,
      epochs: 30,
      batch: 10,
      shards: 4,
      seed: 1,
      kernel: "fast",
      workers: 0,
      checkpointEvery: 0,
      resume: false,
      redisUrl: "redis://127.0.0.1:6379",
      stepTimeout: 30,
      minWorkers: 1,
      shmDir: "/dev/shm",
      dispatch: "direct",
      dataPort: 0,
      dataHost: "127.0.0.1",
      advertiseHost: "127.0.0.1",
      metricsPort: 0,
      metricsHost: "127.0.0.1",
      uiPort: 0,
      uiHost: "127.0.0.1",
      json: false,
      logLevel: "info",
      logFormat: "auto",
      dryRun: false,
    });
    expect(new Set(Object.values(p.sources))).toEqual(new Set(["default"]));
    expect(Object.keys(p.sources).sort()).toEqual(Object.keys(p.options).sort());
  });

  it("has per-command defaults for metrics port and run id", () => {
    const c = typedOptions(parse(["coordinator"]), "coordinator");
    expect(c.metricsPort).toBe(9464);
    expect(c.runId).toBe("default");
    const w = typedOptions(parse(["worker"]), "worker");
    expect(w.metricsPort).toBe(9465);
    expect(w.runId).toBe("default");
    expect(w.workerId).toBe(`${hostname()}-${process.pid}`);
    expect(w.lockSeconds).toBe(30);
    expect(typedOptions(parse(["train"]), "train").runId).toBeUndefined();
  });

  it("gives train and coordinator the same run defaults, so they compute the same bits", () => {
    const t = parse(["train"]).options;
    const c = parse(["coordinator"]).options;
    const shared = optionsOf("train").filter((o) => o.commands.includes("coordinator"));
    for (const o of shared) {
      // Where a process listens and how others reach it may differ; what it computes may not.
      if (["metrics-port", "run-id", "data-host", "advertise-host"].includes(o.name)) continue;
      expect(c[optionKey(o.name)], o.name).toEqual(t[optionKey(o.name)]);
    }
  });
});

describe("the option table", () => {
  it("has unique kebab-case names and unique environment variables", () => {
    const names = OPTIONS.map((o) => o.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/);
    const envs = OPTIONS.map(envVarOf);
    expect(new Set(envs).size).toBe(envs.length);
    for (const o of OPTIONS) expect(o.commands.length, o.name).toBeGreaterThan(0);
  });

  it("names every env twin GRADFLEET_<FLAG>, except REDIS_URL", () => {
    for (const o of OPTIONS) {
      const expected =
        o.name === "redis-url" ? "REDIS_URL" : `GRADFLEET_${o.name.toUpperCase().replace(/-/g, "_")}`;
      expect(envVarOf(o)).toBe(expected);
    }
    expect(envVarOf(OPTIONS.find((o) => o.name === "train-limit")!)).toBe("GRADFLEET_TRAIN_LIMIT");
  });

  it("has defaults that pass their own validation, and no default on a required option", () => {
    for (const command of COMMAND_NAMES) {
      for (const o of optionsOf(command)) {
        const d = defaultOf(o, command);
        if (isRequired(o, command)) expect(d, `${command} --${o.name}`).toBeUndefined();
        if (d === undefined) continue;
        expect(parseValue(o, formatValue(d)), `${command} --${o.name}`).toEqual(d);
      }
    }
  });

  it("matches the typed option interfaces key for key", () => {
    // Record<keyof T, true> makes tsc refuse a missing or extra key here.
    const keys: { [C in CommandName]: Record<keyof CommandOptions[C], true> } = {
      train: {
        layers: true,
        activation: true,
        output: true,
        cost: true,
        optimizer: true,
        lr: true,
        momentum: true,
        weightDecay: true,
        epochs: true,
        batch: true,
        shards: true,
        seed: true,
        kernel: true,
        data: true,
        trainLimit: true,
        testLimit: true,
        out: true,
        checkpointDir: true,
        checkpointEvery: true,
        resume: true,
        json: true,
        logLevel: true,
        logFormat: true,
        redisUrl: true,
        redisCa: true,
        runId: true,
        metricsPort: true,
        metricsHost: true,
        dryRun: true,
        workers: true,
        stepTimeout: true,
        minWorkers: true,
        dispatch: true,
        dataPort: true,
        dataHost: true,
        advertiseHost: true,
        trace: true,
        targetsFile: true,
        uiPort: true,
        uiHost: true,
        shmDir: true,
      },
      coordinator: {
        shmDir: true,
        layers: true,
        activation: true,
        output: true,
        cost: true,
        optimizer: true,
        lr: true,
        momentum: true,
        weightDecay: true,
        epochs: true,
        batch: true,
        shards: true,
        seed: true,
        kernel: true,
        data: true,
        trainLimit: true,
        testLimit: true,
        out: true,
        checkpointDir: true,
        checkpointEvery: true,
        resume: true,
        json: true,
        logLevel: true,
        logFormat: true,
        redisUrl: true,
        redisCa: true,
        runId: true,
        metricsPort: true,
        metricsHost: true,
        uiPort: true,
        uiHost: true,
        dryRun: true,
        stepTimeout: true,
        minWorkers: true,
        dispatch: true,
        dataPort: true,
        dataHost: true,
        advertiseHost: true,
        trace: true,
      },
      worker: {
        trace: true,
        redisUrl: true,
        redisCa: true,
        runId: true,
        data: true,
        workerId: true,
        lockSeconds: true,
        metricsPort: true,
        metricsHost: true,
        logLevel: true,
        logFormat: true,
        dryRun: true,
      },
      evaluate: { model: true, data: true, testLimit: true, json: true },
      predict: { model: true, index: true, data: true, json: true },
      weights: { model: true, out: true },
    };
    for (const command of COMMAND_NAMES) {
      const fromTable = optionsOf(command)
        .map((o) => optionKey(o.name))
        .sort();
      expect(fromTable, command).toEqual(Object.keys(keys[command]).sort());
    }
  });
});

describe("precedence: flag, then env, then default", () => {
  it("takes env over the default and the flag over env", () => {
    const fromEnv = parse(["train"], { GRADFLEET_EPOCHS: "5", GRADFLEET_TRAIN_LIMIT: "100" });
    expect(fromEnv.options.epochs).toBe(5);
    expect(fromEnv.options.trainLimit).toBe(100);
    expect(fromEnv.sources.epochs).toBe("env");
    const fromFlag = parse(["train", "--epochs", "7"], { GRADFLEET_EPOCHS: "5" });
    expect(fromFlag.options.epochs).toBe(7);
    expect(fromFlag.sources.epochs).toBe("flag");
    expect(fromFlag.sources.batch).toBe("default");
  });

  it("reads REDIS_URL for --redis-url", () => {
    const p = parse(["worker"], { REDIS_URL: "redis://redis:6379" });
    expect(p.options.redisUrl).toBe("redis://redis:6379");
    expect(p.sources.redisUrl).toBe("env");
    expect(parse(["worker"], { GRADFLEET_REDIS_URL: "redis://other:1" }).options.redisUrl).toBe(
      "redis://127.0.0.1:6379",
    );
  });

  it("treats an empty environment variable as unset", () => {
    const p = parse(["train"], { GRADFLEET_EPOCHS: "", GRADFLEET_DATA: "" });
    expect(p.options.epochs).toBe(30);
    expect(p.sources.epochs).toBe("default");
    expect(p.options.data).toBeUndefined();
  });

  it("reads every variable envVarsOf lists, for every command", () => {
    for (const command of COMMAND_NAMES) {
      const env: NodeJS.ProcessEnv = {};
      for (const o of optionsOf(command)) {
        const fallback =
          o.kind === "int" ? 3 : o.kind === "intlist" ? [3] : o.kind === "string" ? "sample-1" : "some/path";
        const sample = defaultOf(o, command) ?? fallback;
        env[envVarOf(o)] = formatValue(sample);
      }
      expect(Object.keys(env).sort()).toEqual(envVarsOf(command));
      // --resume needs --checkpoint-dir, which the env sets too.
      const p = parse([command], env);
      for (const o of optionsOf(command))
        expect(p.sources[optionKey(o.name)], `${command} ${o.name}`).toBe("env");
    }
  });
});

describe("flag syntax", () => {
  it("accepts --flag value and --flag=value alike", () => {
    const a = parse(["train", "--lr", "0.5", "--layers", "784,30,10", "--run-id", "exp-1"]).options;
    const b = parse(["train", "--lr=0.5", "--layers=784,30,10", "--run-id=exp-1"]).options;
    expect(a).toEqual(b);
    expect(a.lr).toBe(0.5);
    expect(a.layers).toEqual([784, 30, 10]);
    expect(a.runId).toBe("exp-1");
  });

  it("keeps the last of a repeated flag (npm start -- --workers 4)", () => {
    expect(parse(["train", "--workers", "2", "--workers", "4"]).options.workers).toBe(4);
  });

  it("parses floats in exponent notation", () => {
    expect(parse(["train", "--lr", "1e-3"]).options.lr).toBe(0.001);
  });

  it("sets booleans by presence, by =value and from env", () => {
    expect(parse(["train", "--json"]).options.json).toBe(true);
    expect(parse(["train", "--json=false"], { GRADFLEET_JSON: "1" }).options.json).toBe(false);
    for (const [raw, value] of [
      ["1", true],
      ["true", true],
      ["TRUE", true],
      ["0", false],
      ["false", false],
    ] as const) {
      expect(parse(["train"], { GRADFLEET_DRY_RUN: raw }).options.dryRun, raw).toBe(value);
    }
    // A boolean flag does not swallow the next argument.
    expect(usageError(["train", "--json", "yes"]).message).toContain('"yes"');
  });

  it("refuses positionals for commands that declare none, also after --", () => {
    expect(usageError(["train", "extra"]).message).toBe(
      'unexpected argument "extra"; train takes no positional arguments (options start with --)',
    );
    expect(usageError(["worker", "--", "--lock-seconds"]).message).toContain('"--lock-seconds"');
  });

  it("gives help on --help, -h or help, before validating anything", () => {
    expect(parse(["--help"])).toMatchObject({ command: "", help: true });
    expect(parse(["help", "worker"])).toMatchObject({ command: "worker", help: true });
    expect(parse(["train", "--epochs", "abc", "-h"])).toMatchObject({ command: "train", help: true });
    expect(parse(["evaluate", "--help"])).toMatchObject({ command: "evaluate", help: true });
    expect(usageError(["help", "nope"]).message).toContain('unknown command "nope"');
  });
});

describe("errors: one line naming the flag, the value and what is accepted", () => {
  const cases: [string, string[], NodeJS.ProcessEnv, string][] = [
    [
      "unknown enum value",
      ["train", "--activation", "tanh"],
      {},
      '--activation: "tanh" is not one of sigmoid, relu',
    ],
    [
      "unknown enum value from env",
      ["train"],
      { GRADFLEET_OPTIMIZER: "rmsprop" },
      '--optimizer (from GRADFLEET_OPTIMIZER): "rmsprop" is not one of sgd, momentum, adam',
    ],
    ["missing value", ["train", "--epochs"], {}, "--epochs: needs a value (an integer >= 1)"],
    ["missing value before a flag", ["train", "--epochs", "--json"], {}, "--epochs: needs a value"],
    [
      "empty =value",
      ["worker", "--run-id="],
      {},
      "--run-id: needs a value (1 to 64 letters, digits, _ or -)",
    ],
    [
      "non-numeric",
      ["train", "--epochs", "abc"],
      {},
      '--epochs: "abc" is not a number; expected an integer >= 1',
    ],
    ["hex is not a number", ["train", "--batch", "0x10"], {}, '--batch: "0x10" is not a number'],
    [
      "non-integer",
      ["train", "--epochs", "2.5"],
      {},
      '--epochs: "2.5" is not an integer; expected an integer >= 1',
    ],
    [
      "zero size",
      ["train", "--batch", "0"],
      {},
      '--batch: "0" is out of range; expected an integer from 1 to 1000000',
    ],
    ["negative port", ["worker", "--metrics-port", "-2"], {}, "expected an integer from 0 to 65535"],
    [
      "above max",
      ["train", "--shards", "4097"],
      {},
      '--shards: "4097" is out of range; expected an integer from 1 to 4096',
    ],
    ["seed above 2^32-1", ["train", "--seed", "4294967296"], {}, "expected an integer from 0 to 4294967295"],
    ["port out of range", ["worker", "--metrics-port", "65536"], {}, "expected an integer from 0 to 65535"],
    ["zero learning rate", ["train", "--lr", "0"], {}, '--lr: "0" is out of range; expected a number > 0'],
    ["momentum of 1", ["train", "--momentum", "1"], {}, "expected a number >= 0 and < 1"],
    [
      "Infinity",
      ["coordinator", "--step-timeout", "Infinity"],
      {},
      '--step-timeout: "Infinity" is not a number',
    ],
    [
      "env non-integer",
      ["coordinator"],
      { GRADFLEET_TRAIN_LIMIT: "1e3" },
      '--train-limit (from GRADFLEET_TRAIN_LIMIT): "1e3" is not an integer',
    ],
    [
      "bad env boolean",
      ["train"],
      { GRADFLEET_JSON: "yes" },
      '--json (from GRADFLEET_JSON): "yes" is not one of true, false, 1, 0',
    ],
    [
      "bad run id",
      ["coordinator", "--run-id", "a b"],
      {},
      '--run-id: "a b" is not valid; expected 1 to 64 letters, digits, _ or -',
    ],
    ["run id too long", ["coordinator", "--run-id", "x".repeat(65)], {}, "--run-id:"],
    ["required", ["evaluate"], {}, "--model: required; give --model FILE or set GRADFLEET_MODEL"],
    [
      "resume without a checkpoint dir",
      ["coordinator", "--resume"],
      {},
      "--resume: needs --checkpoint-dir (or GRADFLEET_CHECKPOINT_DIR) as well",
    ],
    [
      "unknown flag, with a guess",
      ["train", "--epoch", "3"],
      {},
      "--epoch: unknown option; did you mean --epochs?",
    ],
    [
      "unknown flag",
      ["train", "--frobnicate"],
      {},
      "--frobnicate: unknown option; gradfleet train --help lists the options",
    ],
    ["short flag", ["train", "-e", "3"], {}, "-e: unknown option"],
    [
      "another command's flag",
      ["train", "--worker-id", "w2"],
      {},
      "--worker-id: not an option of train (only of worker)",
    ],
    [
      "a removed dispatch",
      ["coordinator", "--dispatch", "lanes"],
      {},
      '--dispatch: "lanes" was removed (the Redis-only dispatches are gone; direct, the default, is the only one): drop --dispatch or pass --dispatch direct',
    ],
    [
      "the other removed dispatch, from the environment",
      ["train"],
      { GRADFLEET_DISPATCH: "jobs" },
      '--dispatch (from GRADFLEET_DISPATCH): "jobs" was removed',
    ],
    ["an unknown dispatch", ["train", "--dispatch", "fast"], {}, '--dispatch: "fast" is not one of direct'],
    [
      "unknown command",
      ["trian"],
      {},
      'unknown command "trian"; did you mean train? expected one of train, coordinator',
    ],
    ["no command", [], {}, "no command given; expected one of train, coordinator, worker, evaluate"],
    ["flag before the command", ["--epochs", "3"], {}, "--epochs: options come after the command"],
  ];
  for (const [name, argv, env, message] of cases) {
    it(name, () => {
      expect(usageError(argv, env).message).toContain(message);
    });
  }

  it("says where the value came from in the error's fields", () => {
    const fromEnv = usageError(["train"], { GRADFLEET_EPOCHS: "x" });
    expect(fromEnv.flag).toBe("--epochs");
    expect(fromEnv.envVar).toBe("GRADFLEET_EPOCHS");
    const fromFlag = usageError(["train", "--epochs", "x"]);
    expect(fromFlag.flag).toBe("--epochs");
    expect(fromFlag.envVar).toBeUndefined();
  });

  it("keeps a control character in a value from breaking the line", () => {
    expect(usageError(["train", "--activation", "re\nlu"]).message).toContain('"re\\nlu"');
  });
});

describe("--layers", () => {
  it("parses comma-separated positive integers", () => {
    expect(parse(["train", "--layers", "784,16,16,10"]).options.layers).toEqual([784, 16, 16, 10]);
    expect(parse(["train", "--layers", "784, 100 ,10"]).options.layers).toEqual([784, 100, 10]);
    expect(parse(["coordinator"], { GRADFLEET_LAYERS: "4,2" }).options.layers).toEqual([4, 2]);
  });

  it.each([
    ["784,,10", "has an empty entry"],
    ["784,10,", "has an empty entry"],
    ["784,0,10", "has 0; entries must be at least 1"],
    ["784,-5,10", "has -5"],
    ["a,b", 'has "a"'],
    ["784,1.5,10", 'has "1.5"'],
    ["784", "has 1 entry; expected at least 2 comma-separated positive integers"],
  ])("refuses %s", (raw, problem) => {
    const message = usageError(["train", "--layers", raw]).message;
    expect(message).toContain(`--layers: ${JSON.stringify(raw)} ${problem}`);
  });
});

describe("--redis-url", () => {
  it.each([
    "redis://127.0.0.1:6379",
    "rediss://user:pw@redis.example.com:6380/2",
    "redis://[::1]:6379",
    "redis://redis",
  ])("accepts %s", (url) => {
    expect(parse(["worker", "--redis-url", url]).options.redisUrl).toBe(url);
  });

  it.each([
    ["http://x:6379", "has protocol http:; expected redis:// or rediss://"],
    ["127.0.0.1:6379", "is not a URL; expected redis://HOST:PORT or rediss://HOST:PORT"],
    ["localhost:6379", "has protocol localhost:; expected redis:// or rediss://"],
    ["nope", "is not a URL"],
    ["redis://h:6379/abc", "has path /abc"],
  ])("refuses %s", (url, problem) => {
    const message = usageError(["worker"], { REDIS_URL: url }).message;
    expect(message).toContain("--redis-url (from REDIS_URL)");
    expect(message).toContain(problem);
  });

  it("does not print a password in errors or in redactedOptions", () => {
    const message = usageError(["worker"], { REDIS_URL: "redis://u:hunter2@h:6379/x" }).message;
    expect(message).not.toContain("hunter2");
    expect(message).toContain("u:***@h");
    const shown = redactedOptions(parse(["worker", "--redis-url", "redis://:hunter2@h:6379"]));
    expect(JSON.stringify(shown)).not.toContain("hunter2");
    expect(shown.redisUrl).toBe("redis://:***@h:6379");
  });
});

describe("env var lists", () => {
  it("lists what the worker reads", () => {
    expect(envVarsOf("worker")).toEqual([
      "GRADFLEET_DATA",
      "GRADFLEET_DRY_RUN",
      "GRADFLEET_LOCK_SECONDS",
      "GRADFLEET_LOG_FORMAT",
      "GRADFLEET_LOG_LEVEL",
      "GRADFLEET_METRICS_HOST",
      "GRADFLEET_METRICS_PORT",
      "GRADFLEET_REDIS_CA",
      "GRADFLEET_RUN_ID",
      "GRADFLEET_TRACE",
      "GRADFLEET_WORKER_ID",
      "REDIS_URL",
    ]);
  });

  it("lists the union of the commands in allEnvVars", () => {
    const union = new Set(COMMAND_NAMES.flatMap((c) => envVarsOf(c)));
    expect(allEnvVars()).toEqual([...union].sort());
    expect(allEnvVars()).toContain("GRADFLEET_TRAIN_LIMIT");
    expect(envVarsOf("coordinator")).toContain("GRADFLEET_EPOCHS");
    expect(envVarsOf("coordinator")).not.toContain("GRADFLEET_WORKERS");
    expect(envVarsOf("evaluate")).toEqual([
      "GRADFLEET_DATA",
      "GRADFLEET_JSON",
      "GRADFLEET_MODEL",
      "GRADFLEET_TEST_LIMIT",
    ]);
  });

  it("finds GRADFLEET_ variables a command does not read", () => {
    const env = { GRADFLEET_EPOCH: "3", GRADFLEET_EPOCHS: "3", GRADFLEET_WORKERS: "", PATH: "/bin" };
    expect(unreadEnvVars("train", env)).toEqual(["GRADFLEET_EPOCH"]);
    expect(unreadEnvVars("worker", env)).toEqual(["GRADFLEET_EPOCH", "GRADFLEET_EPOCHS"]);
  });
});

describe("typedOptions", () => {
  it("returns the options typed for the command, and refuses another command's", () => {
    const t = typedOptions(parse(["train", "--train-limit", "500"]), "train");
    expect(t.trainLimit).toBe(500);
    expect(() => typedOptions(parse(["worker"]), "train")).toThrow(/not "train"/);
  });
});

describe("help", () => {
  it("lists every command", () => {
    const text = helpText();
    for (const c of COMMAND_NAMES) expect(text).toMatch(new RegExp(`^  ${c} `, "m"));
    expect(helpText("")).toBe(text);
  });

  it.each(COMMAND_NAMES)(
    "lists every option of %s with its env var, default and accepted values",
    (command) => {
      const text = helpText(command);
      expect(text.startsWith(`Usage: gradfleet ${command} [options]`)).toBe(true);
      for (const o of optionsOf(command)) {
        expect(text).toMatch(new RegExp(`^  --${o.name}\\b`, "m"));
        expect(text).toContain(`env ${envVarOf(o)};`);
      }
      for (const o of OPTIONS.filter((x) => !x.commands.includes(command))) {
        expect(text).not.toMatch(new RegExp(`^  --${o.name}\\b`, "m"));
      }
    },
  );

  it("shows per-command defaults and accepted values", () => {
    expect(helpText("worker")).toContain(
      "env GRADFLEET_METRICS_PORT; default 9465; an integer from 0 to 65535",
    );
    expect(helpText("coordinator")).toContain("env GRADFLEET_METRICS_PORT; default 9464;");
    expect(helpText("train")).toContain("env GRADFLEET_ACTIVATION; default sigmoid; one of sigmoid, relu");
    expect(helpText("evaluate")).toContain("env GRADFLEET_MODEL; required; a path");
  });

  it("refuses an unknown command", () => {
    expect(() => helpText("nope")).toThrow(UsageError);
  });
});

describe("optionsMarkdownTable", () => {
  it("has one row per option with its flag and env var", () => {
    const lines = optionsMarkdownTable().trimEnd().split("\n");
    expect(lines).toHaveLength(OPTIONS.length + 2);
    for (const o of OPTIONS) {
      const row = lines.find((l) => new RegExp(`^\\| \`--${o.name}[ \`]`).test(l));
      expect(row, o.name).toBeDefined();
      expect(row).toContain(`\`${envVarOf(o)}\``);
      // Every row has as many cells as the header.
      expect(row!.split(" | ").length).toBe(lines[0].split(" | ").length);
    }
    expect(optionsMarkdownTable()).toContain("0 (train); 9464 (coordinator); 9465 (worker)");
  });

  it("can be limited to one command", () => {
    const lines = optionsMarkdownTable("evaluate").trimEnd().split("\n");
    expect(lines).toHaveLength(optionsOf("evaluate").length + 2);
    expect(lines.find((l) => l.startsWith("| `--model"))).toContain("| required |");
  });
});
