#!/usr/bin/env bash
# The container image, built and run: what a user with Docker does first
# (deploy/README.md), done here on Podman's Docker-API socket with Debian's
# docker-compose 1.29. Called by .ci/run after `npm test` (needs dist/, which
# `npm test` builds).
#
#  1. images: redis:7, prom/prometheus and a Node 20 base image made from this
#     machine's own binaries (scripts/ci/podman-images.sh; no registry here),
#     then the project's Dockerfile built with NODE_IMAGE set to that base;
#  2. deploy/docker-compose.yml: Redis, Prometheus and 3 worker replicas up; when
#     every worker is ready they are frozen (podman pause), the coordinator is
#     started, Prometheus must report up == 1 for the coordinator and the 3
#     workers (dns_sd_configs), then the workers are thawed and the run trains
#     to the end: the coordinator's weightsSha256 must equal `train --workers 0`
#     with the same flags, and all 3 workers must have delivered shards;
#     `down -v` must leave no container, network or volume of the project;
#  3. again, with a worker container SIGKILLed mid-run: same bits.
# Prints the time of each part. Stops everything it started, however it ends.
# FORCE=1 remakes the local images and builds without the layer cache (the
# times of a fresh machine).
#
# Needs root on Debian (podman rootful; scripts/ci/system-packages.sh installs
# podman, runc, docker-compose, the CNI dnsname plugin compose's service
# names need, and catatonit for the services' `init: true`). With Docker instead, follow deploy/README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

started=$SECONDS
part_started=$SECONDS
part() {
  local now=$SECONDS
  if [[ -n "${part_name:-}" ]]; then
    printf '    (%s: %d s)\n' "$part_name" $((now - part_started))
  fi
  part_name=$1
  part_started=$now
  printf '\n--> compose-check: %s\n' "$1"
}
fail() {
  echo "compose-check: FAILED: $*" >&2
  exit 1
}

part "system packages"
# dnsname: service names resolve on compose's network (CNI); catatonit: `init: true`.
bash scripts/ci/system-packages.sh golang-github-containernetworking-plugin-dnsname catatonit
[[ -f dist/src/cli/main.js ]] || npm run build

export CONTAINERS_CONF=$ROOT/scripts/ci/containers.conf
work=$(mktemp -d /tmp/gradfleet-compose-XXXXXX)
socket=$work/podman.sock
export DOCKER_HOST=unix://$socket
# Compose names everything after the project: what `down` must remove.
project=gfci$$
compose=(docker-compose -p "$project" -f deploy/docker-compose.yml --env-file "$work/run.env")
service_pid=
health_pid=

cleanup() {
  local code=$?
  set +e
  if [[ -S "$socket" ]]; then
    # Thaw anything frozen first: a paused container cannot be removed.
    podman ps -q --filter "label=com.docker.compose.project=$project" --filter status=paused |
      xargs -r podman unpause >/dev/null 2>&1
    "${compose[@]}" down -v --remove-orphans -t 0 >/dev/null 2>&1
    podman ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  fi
  [[ -n "$health_pid" ]] && kill "$health_pid" 2>/dev/null
  if [[ -n "$service_pid" ]]; then
    kill "$service_pid" 2>/dev/null
    wait "$service_pid" 2>/dev/null
  fi
  rm -rf "$work"
  printf '\ncompose-check: %s in %d s\n' "$([[ $code == 0 ]] && echo passed || echo "failed ($code)")" $((SECONDS - started))
  exit "$code"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# The runs: a small one, and for the worker killed mid-run a longer, heavier
# one (600 steps of the reference kernel on 784-128-64-10, several ms each, a
# few seconds in all), so that the run is still going when the kill comes
# however fast the fast kernel and the step path get (600 steps of the small
# model took under a second, less than the polling below needs to see them).
RUN_SMALL=(--epochs 2 --train-limit 6000 --test-limit 1000 --batch 100 --shards 4 --seed 7)
RUN_LONG=(--epochs 2 --train-limit 30000 --test-limit 1000 --batch 100 --shards 4 --seed 7 --kernel ref --layers 784,128,64,10)
# The same settings as compose's environment (GRADFLEET_<FLAG>), plus JSON output.
write_env() {
  local file=$1
  shift
  : >"$file"
  while (($# > 0)); do
    local name=${1#--}
    printf 'GRADFLEET_%s=%s\n' "$(tr a-z- A-Z_ <<<"$name")" "$2" >>"$file"
    shift 2
  done
  printf 'GRADFLEET_JSON=true\nGRADFLEET_STEP_TIMEOUT=10\n' >>"$file"
  # The first step waits for all three workers: "every worker delivered
  # shards" must not depend on how fast each container loads MNIST (a short
  # run can end before a slow one joins).
  printf 'GRADFLEET_MIN_WORKERS=3\n' >>"$file"
}
write_env "$work/run.env" "${RUN_SMALL[@]}"

# GET on the Podman socket or a host URL, with node (no curl on a fresh machine).
http_get() {
  node -e '
    const http = require("node:http");
    const [target, path] = process.argv.slice(1);
    const opts = target.startsWith("/") ? { socketPath: target, path } : new URL(target);
    const req = http.get(opts, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => { process.stdout.write(body); process.exit(res.statusCode === 200 ? 0 : 1); });
    });
    req.setTimeout(5000, () => req.destroy());
    req.on("error", () => process.exit(1));
  ' "$@"
}

# Polls `cmd...` every second until it succeeds; fails naming `what` after `limit` seconds.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what: not within $limit s"
    sleep "$POLL"
  done
}
POLL=1

# A Prometheus instant query's value count where the value is 1, e.g. `up{job="worker"} == 1`.
prom_count() {
  http_get "http://127.0.0.1:9090/api/v1/query?query=$(node -p 'encodeURIComponent(process.argv[1])' "$1")" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(r.status==="success"?r.data.result.length:-1)})'
}
prom_has() { [[ "$(prom_count "$1" 2>/dev/null || echo -1)" == "$2" ]]; }

containers_of() { podman ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }
workers_ready() {
  local n=0 id
  for id in $(containers_of worker); do
    podman logs "$id" 2>&1 | grep -q '"msg":"worker ready"' && n=$((n + 1))
  done
  ((n == 3))
}

part "podman system service"
setpriv_cmd=()
command -v setpriv >/dev/null && setpriv_cmd=(setpriv --pdeathsig TERM)
"${setpriv_cmd[@]}" podman system service --time=0 "unix://$socket" >"$work/service.log" 2>&1 &
service_pid=$!
ping_service() { http_get "$socket" /_ping >/dev/null; }
wait_until 60 "podman system service answering on $socket" ping_service

# Podman runs HEALTHCHECKs from systemd timers; a machine without systemd (CI
# containers) never runs them, and compose's `condition: service_healthy`
# would wait for ever. Run them here instead, every 2 s, for this project only.
(
  while sleep 2; do
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$project" --filter status=running); do
      podman healthcheck run "$id" >/dev/null 2>&1 || true
    done
  done
) &
health_pid=$!

part "images: redis:7, prometheus, Node base (from this machine's binaries)"
bash scripts/ci/podman-images.sh redis prometheus node

part "docker build of the Dockerfile (NODE_IMAGE=localhost/gradfleet-node:20)"
# --format docker keeps the Dockerfile's HEALTHCHECK. Tagged as compose's
# `gradfleet:local` under both names a short name may resolve to.
podman build -q ${FORCE:+--no-cache} --format docker --build-arg NODE_IMAGE=localhost/gradfleet-node:20 \
  -t localhost/gradfleet:local -t docker.io/library/gradfleet:local . >"$work/build.log" 2>&1 ||
  {
    tail -n 40 "$work/build.log" >&2
    fail "podman build"
  }

part "references: train --workers 0 with the same flags"
reference_of() {
  node bin/gradfleet.js train --workers 0 "$@" --json | tail -n 1 |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).weightsSha256))'
}
reference=$(reference_of "${RUN_SMALL[@]}")
echo "${RUN_SMALL[*]}: weightsSha256 $reference"
reference_long=$(reference_of "${RUN_LONG[@]}")
echo "${RUN_LONG[*]}: weightsSha256 $reference_long"

# One run of the stack: workers up and ready, coordinator to the end. $1: kill a worker mid-run.
run_stack() {
  local kill_one=$1
  # Prometheus without its depends_on (that would start the coordinator now).
  { "${compose[@]}" up -d --no-build --scale worker=3 redis worker &&
    "${compose[@]}" up -d --no-build --no-deps prometheus; } >"$work/up.log" 2>&1 ||
    {
      cat "$work/up.log" >&2
      fail "docker-compose up"
    }
  wait_until 300 "3 workers ready" workers_ready
  wait_until 120 "Prometheus: up == 1 for the 3 workers (dns_sd_configs)" prom_has 'up{job="worker"} == 1' 3
  if [[ $kill_one == 0 ]]; then
    # Frozen workers take no shard, so the coordinator waits, and Prometheus
    # can see it however fast the run would be.
    containers_of worker | xargs podman pause >/dev/null
  fi
  "${compose[@]}" up -d --no-build --no-deps coordinator >>"$work/up.log" 2>&1 || fail "coordinator did not start"
  local coordinator
  coordinator=$(containers_of coordinator)
  if [[ $kill_one == 0 ]]; then
    wait_until 120 "Prometheus: up == 1 for the coordinator" prom_has 'up{job="coordinator"} == 1' 1
    echo "Prometheus: up == 1 for the coordinator and 3 workers"
    containers_of worker | xargs podman unpause >/dev/null
  else
    # Mid-run: some steps done. Freeze the workers so that the run cannot end
    # meanwhile, SIGKILL one, thaw the others.
    steps_done() {
      local n
      n=$(http_get http://127.0.0.1:9464/metrics 2>/dev/null | awk '/^gradfleet_steps_total /{print $2}')
      [[ -n "$n" ]] && ((${n%.*} >= 5))
    }
    # Polled often: the kill should come early in the run.
    POLL=0.2
    wait_until 300 "coordinator at step 5" steps_done
    mapfile -t ids < <(containers_of worker)
    podman pause "${ids[@]}" >/dev/null
    [[ "$(podman inspect -f '{{.State.Running}}' "$coordinator")" == true ]] ||
      fail "the run ended before the kill (make RUN_LONG longer for this machine)"
    local at
    at=$(http_get http://127.0.0.1:9464/metrics | awk '/^gradfleet_steps_total /{print $2}')
    podman unpause "${ids[0]}" >/dev/null
    podman kill -s KILL "${ids[0]}" >/dev/null
    podman unpause "${ids[@]:1}" >/dev/null
    echo "SIGKILLed worker container ${ids[0]:0:12} with $at of $expected_steps steps done"
  fi
  local code
  code=$(timeout 900 podman wait "$coordinator") || fail "coordinator still running after 15 min"
  podman logs "$coordinator" >"$work/coordinator.out" 2>"$work/coordinator.err"
  [[ "$code" == 0 ]] || {
    tail -n 20 "$work/coordinator.err" >&2
    fail "coordinator exited $code"
  }
  summary=$(grep '"weightsSha256"' "$work/coordinator.out" | tail -n 1)
  sha=$(node -p 'JSON.parse(process.argv[1]).weightsSha256' "$summary")
  seen=$(node -p 'JSON.parse(process.argv[1]).workersSeen' "$summary")
  echo "coordinator: weightsSha256 $sha, workersSeen $seen"
  local want=$reference
  [[ $kill_one == 1 ]] && want=$reference_long
  [[ "$sha" == "$want" ]] || fail "weightsSha256 $sha differs from train --workers 0 ($want)"
}

part "compose up: Redis, Prometheus, 3 workers, coordinator; train to the end"
run_stack 0
[[ "$seen" == 3 ]] || fail "workersSeen $seen: not every worker delivered shards"
# Each worker's own count, as Prometheus scraped it (the workers stay up after the run).
wait_until 60 "Prometheus: gradfleet_worker_shards_total > 0 for 3 workers" \
  prom_has 'sum by (instance) (gradfleet_worker_shards_total) > 0' 3
echo "every worker delivered shards (coordinator's workersSeen and each worker's gradfleet_worker_shards_total)"

part "compose down -v: nothing of the project left"
"${compose[@]}" down -v -t 10 >"$work/down.log" 2>&1 || {
  cat "$work/down.log" >&2
  fail "docker-compose down"
}
left="$(podman ps -aq --filter "label=com.docker.compose.project=$project")"
left+="$(podman network ls -q --filter "label=com.docker.compose.project=$project")"
left+="$(podman volume ls -q --filter "label=com.docker.compose.project=$project")"
[[ -z "$left" ]] || fail "left after down: $left"
echo "no container, network or volume of project $project left"

part "compose up again, a longer run; a worker container SIGKILLed mid-run"
write_env "$work/run.env" "${RUN_LONG[@]}"
expected_steps=600
run_stack 1
"${compose[@]}" down -v -t 10 >"$work/down.log" 2>&1 || fail "docker-compose down"
part "done"
