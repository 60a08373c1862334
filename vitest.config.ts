import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Podman for the testcontainers Redis where there is no Docker (CI here).
    globalSetup: ["test/helpers/container-runtime.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Integration tests start real processes; two cores are all we have.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
  },
});
