/**
 * Parsing and validating one option value, as given by a flag or an
 * environment variable: a one-line UsageError naming the flag, the value and
 * what is accepted when it does not fit.
 */
import type {
  BooleanOption,
  FloatOption,
  IntListOption,
  IntOption,
  OptionDef,
  OptionValue,
} from "./option-def.js";
import { describeAccepted } from "./option-queries.js";
import { UsageError } from "./usage-error.js";

const INT_RE = /^[+-]?\d+$/;
// Decimal notation only: no hex, no Infinity/NaN, no empty string (Number("") is 0).
const FLOAT_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** Where a raw value came from, for error messages. */
export interface ValueOrigin {
  source: "flag" | "env";
  envVar?: string;
}

/** `--epochs` or `--epochs (from GRADFLEET_EPOCHS)`: the prefix of a value error. */
export function who(def: OptionDef, origin: ValueOrigin): string {
  return origin.source === "env" ? `--${def.name} (from ${origin.envVar})` : `--${def.name}`;
}

/** A raw value quoted for an error: one line, bounded length, secrets hidden. */
function quote(def: OptionDef, raw: string): string {
  let shown = def.redact ? (def.redact as (v: string) => string)(raw) : raw;
  if (shown.length > 80) shown = `${shown.slice(0, 77)}...`;
  return JSON.stringify(shown);
}

function valueError(def: OptionDef, origin: ValueOrigin, raw: string, problem: string): UsageError {
  return new UsageError(`${who(def, origin)}: ${quote(def, raw)} ${problem}`, {
    flag: `--${def.name}`,
    envVar: origin.envVar,
  });
}

function parseNumber(def: IntOption | FloatOption, raw: string, origin: ValueOrigin): number {
  const accepted = describeAccepted(def);
  const text = raw.trim();
  if (!FLOAT_RE.test(text)) throw valueError(def, origin, raw, `is not a number; expected ${accepted}`);
  if (def.kind === "int" && !INT_RE.test(text)) {
    throw valueError(def, origin, raw, `is not an integer; expected ${accepted}`);
  }
  const n = Number(text);
  if (def.kind === "int" && !Number.isSafeInteger(n)) {
    throw valueError(def, origin, raw, `is out of range; expected ${accepted}`);
  }
  const minEx = def.kind === "float" && def.minExclusive;
  const maxEx = def.kind === "float" && def.maxExclusive;
  const low = def.min !== undefined && (n < def.min || (minEx && n === def.min));
  const high = def.max !== undefined && (n > def.max || (maxEx && n === def.max));
  if (!Number.isFinite(n) || low || high) {
    throw valueError(def, origin, raw, `is out of range; expected ${accepted}`);
  }
  return n;
}

function parseIntList(def: IntListOption, raw: string, origin: ValueOrigin): number[] {
  const accepted = describeAccepted(def);
  const parts = raw.split(",").map((p) => p.trim());
  if (parts.some((p) => p === "")) {
    throw valueError(def, origin, raw, `has an empty entry; expected ${accepted}`);
  }
  const min = def.min ?? 1;
  const out: number[] = [];
  for (const p of parts) {
    if (!INT_RE.test(p)) throw valueError(def, origin, raw, `has ${JSON.stringify(p)}; expected ${accepted}`);
    const n = Number(p);
    if (!Number.isSafeInteger(n) || n < min || (def.max !== undefined && n > def.max)) {
      const bound = def.max !== undefined ? ` and at most ${def.max}` : "";
      throw valueError(def, origin, raw, `has ${p}; entries must be at least ${min}${bound}`);
    }
    out.push(n);
  }
  if (out.length < (def.minItems ?? 1)) {
    throw valueError(
      def,
      origin,
      raw,
      `has ${out.length} entr${out.length === 1 ? "y" : "ies"}; expected ${accepted}`,
    );
  }
  return out;
}

function parseBoolean(def: BooleanOption, raw: string, origin: ValueOrigin): boolean {
  const v = raw.trim().toLowerCase();
  if (v === "1" || v === "true") return true;
  if (v === "0" || v === "false") return false;
  throw valueError(def, origin, raw, `is not one of true, false, 1, 0`);
}

/**
 * Parses and validates one raw value of an option, as given by a flag or an
 * environment variable. Throws a one-line UsageError naming the flag, the
 * value and what is accepted.
 */
export function parseValue(
  def: OptionDef,
  raw: string,
  origin: ValueOrigin = { source: "flag" },
): OptionValue {
  let value: OptionValue;
  switch (def.kind) {
    case "int":
    case "float":
      value = parseNumber(def, raw, origin);
      break;
    case "intlist":
      value = parseIntList(def, raw, origin);
      break;
    case "boolean":
      value = parseBoolean(def, raw, origin);
      break;
    case "enum":
      if (def.removed && Object.hasOwn(def.removed, raw))
        throw valueError(def, origin, raw, def.removed[raw]);
      if (!def.values.includes(raw))
        throw valueError(def, origin, raw, `is not one of ${def.values.join(", ")}`);
      value = raw;
      break;
    case "path":
      if (raw.trim() === "") throw valueError(def, origin, raw, "is empty; expected a path");
      value = raw;
      break;
    case "string":
      if (def.pattern && !def.pattern.test(raw)) {
        throw valueError(def, origin, raw, `is not valid; expected ${describeAccepted(def)}`);
      }
      value = raw;
      break;
  }
  const problem = def.check ? (def.check as (v: OptionValue) => string | undefined)(value) : undefined;
  if (problem) throw valueError(def, origin, raw, problem);
  return value;
}
