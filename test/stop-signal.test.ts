/**
 * StopSignal: the first request is the stop, subscribers hear every request,
 * and its hold on the process's signals is counted, so that handing it over
 * (a coordinator publishing its run, then the session) never leaves a signal
 * without a listener (Node drops one that arrives in such a gap).
 */
import { describe, expect, it } from "vitest";
import { StopSignal } from "../src/run/stop-signal.js";

describe("StopSignal", () => {
  it("keeps the first signal and tells subscribers of repeats", () => {
    const stop = new StopSignal();
    const heard: string[] = [];
    stop.subscribe((signal, repeat) => heard.push(`${signal}${repeat ? " again" : ""}`));
    expect(stop.requested).toBe(false);
    stop.request("SIGTERM");
    stop.request("SIGINT");
    expect(stop.signal).toBe("SIGTERM");
    expect(heard).toEqual(["SIGTERM", "SIGINT again"]);
  });

  it("tells a late subscriber of a stop asked for before it came, once, as a first request", () => {
    const stop = new StopSignal();
    stop.request("SIGINT");
    stop.request("SIGINT");
    const heard: [string, boolean][] = [];
    const unsubscribe = stop.subscribe((signal, repeat) => heard.push([signal, repeat]));
    unsubscribe();
    stop.request("SIGTERM");
    expect(heard).toEqual([["SIGINT", false]]);
  });

  it("holds the process's signals while anyone does, with no gap in a hand-over", () => {
    const before = process.listenerCount("SIGTERM");
    const sigintBefore = process.listenerCount("SIGINT");
    const stop = new StopSignal();
    const early = stop.listenToProcess();
    expect(process.listenerCount("SIGTERM")).toBe(before + 1);
    const session = stop.listenToProcess();
    early();
    early(); // letting go twice counts once
    expect(process.listenerCount("SIGTERM")).toBe(before + 1);
    process.emit("SIGTERM", "SIGTERM");
    expect(stop.signal).toBe("SIGTERM");
    session();
    expect(process.listenerCount("SIGTERM")).toBe(before);
    expect(process.listenerCount("SIGINT")).toBe(sigintBefore);
  });
});
