#!/usr/bin/env bash
# What the tests need beyond npm packages, installed when missing.
#
# Runs before every `npm test` (the `pretest` script) and from scripts/ci/compose-check.sh.
# Each package is checked by a command or file it provides, so a machine that has
# everything does no apt work and prints nothing. When something is missing:
#   - as root on Debian or Ubuntu (apt-get present): installs it quietly, with
#     --no-install-recommends, and without starting any service (policy-rc.d);
#   - anywhere else: prints ONE line naming the packages and the command to
#     install them, and exits 1 before any test runs.
# Arguments: extra packages to require (by package name), e.g. debootstrap.
#   GRADFLEET_SKIP_SYSTEM_PACKAGES=1 skips the whole check (you know better).
set -euo pipefail

[[ "${GRADFLEET_SKIP_SYSTEM_PACKAGES:-}" == 1 ]] && exit 0
# Debian and Ubuntu only (and bash 4 for the table below): elsewhere, one line.
if [[ "$(uname -s)" != Linux ]] || ((BASH_VERSINFO[0] < 4)) || ! command -v dpkg-query >/dev/null 2>&1; then
  echo "gradfleet tests: system packages not checked here (not Debian/Ubuntu); the tests need redis-server, promtool and prometheus, /usr/bin/chromium, openssl, docker-compose, kubectl, and Docker or podman" >&2
  exit 0
fi

# package -> what proves it is installed: a command on PATH, or an absolute path.
#   redis-server       integration tests start private servers, and build the test image of redis:7
#   prometheus         promtool checks deploy/ configs; prometheus.test.ts runs a real server
#   chromium           the live page's end-to-end browser test (playwright-core drives it)
#   openssl            the TLS test makes its own CA and server certificate
#   fonts-dejavu-core  fonts for the browser test's screenshots
#   docker-compose     validates deploy/docker-compose.yml (`config`); compose-check runs it
#   kubernetes-client  kubectl kustomize builds deploy/k8s (Debian's kubectl 1.20)
#   podman, runc       the container runtime testcontainers talks to when no Docker is there
declare -A proof=(
  [redis-server]=redis-server
  [prometheus]=promtool
  [chromium]=/usr/bin/chromium
  [openssl]=openssl
  [fonts-dejavu-core]=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
  [docker-compose]=docker-compose
  [kubernetes-client]=kubectl
)
# A machine with Docker (a socket or DOCKER_HOST) runs the container tests on it;
# only one without needs Podman.
if [[ -z "${DOCKER_HOST:-}" && ! -S /var/run/docker.sock ]]; then
  proof[podman]=podman
  proof[runc]=runc
fi
for extra in "$@"; do
  case "$extra" in
    debootstrap) proof[debootstrap]=debootstrap ;;
    golang-github-containernetworking-plugin-dnsname) proof[$extra]=/usr/lib/cni/dnsname ;;
    catatonit) proof[$extra]=/usr/libexec/podman/catatonit ;;
    *) proof[$extra]="dpkg:$extra" ;;
  esac
done

present() {
  case "$1" in
    dpkg:*) dpkg-query -W -f='${Status}' "${1#dpkg:}" 2>/dev/null | grep -q "ok installed" ;;
    /*) [[ -e "$1" ]] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for pkg in "${!proof[@]}"; do
  present "${proof[$pkg]}" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort)

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "gradfleet tests need system packages that are missing: ${missing[*]}; install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "gradfleet tests: installing ${missing[*]} (apt-get, quiet)..." >&2
started=$SECONDS
log=$(mktemp)
# Package scripts must not start services (prometheus and redis-server would run
# as daemons on their default ports): policy-rc.d exit 101 forbids it. Only add
# one for this install when the machine has none, and remove it afterwards.
own_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
cleanup() {
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  rm -f "$log"
}
trap cleanup EXIT
if ! {
  apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
} >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "gradfleet tests: apt-get could not install ${missing[*]} (output above)" >&2
  exit 1
fi
for pkg in "${missing[@]}"; do
  if ! present "${proof[$pkg]}"; then
    echo "gradfleet tests: $pkg was installed but ${proof[$pkg]} is still missing" >&2
    exit 1
  fi
done
echo "gradfleet tests: installed ${missing[*]} in $((SECONDS - started)) s" >&2
