#!/usr/bin/env bash
# Local images for machines that reach no image registry (CI here): made from
# this machine's own binaries and the shared libraries `ldd` lists, then
# `podman import`ed and tagged with the names the tests and compose ask for.
#
#   scripts/ci/podman-images.sh redis   # docker.io/library/redis:7 from Debian's redis-server (+ redis-cli)
#   scripts/ci/podman-images.sh node    # localhost/gradfleet-node:20: node, npm, sh, coreutils, CA certificates
#   scripts/ci/podman-images.sh prometheus  # docker.io/prom/prometheus:v2.55.1 from Debian's prometheus
#
# An image that already exists is kept (FORCE=1 rebuilds). Runs podman with the
# caller's CONTAINERS_CONF. Users with Docker pull the real images instead.
set -euo pipefail

# Copies each file (symlinks resolved) and every library `ldd` lists into $root, same paths.
copy_with_libs() {
  local root=$1
  shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    while read -r lib; do
      [[ -e "$root$lib" ]] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done < <(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true)
  done
}

# Common skeleton: /bin/sh (dash), /tmp, users root and node (1000), CA certificates.
skeleton() {
  local root=$1
  mkdir -p "$root"/{tmp,root,etc/ssl/certs,bin,usr/bin}
  chmod 1777 "$root/tmp"
  copy_with_libs "$root" /usr/bin/dash
  ln -sf /usr/bin/dash "$root/bin/sh"
  # Debian 12 has a merged /usr: /lib64 is /usr/lib64 on the host, keep both paths working.
  [[ -d "$root/lib64" || ! -d "$root/usr/lib64" ]] || ln -s usr/lib64 "$root/lib64"
  printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n' >"$root/etc/group"
  mkdir -p "$root/home/node" && chown 1000:1000 "$root/home/node"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
}

# podman import of $root's tar as $tag (extra tags after --), with --change lines from $changes[@].
import_root() {
  local root=$1 tag=$2
  shift 2
  local tar="$root.tar"
  tar -C "$root" -cf "$tar" .
  podman import --quiet "${changes[@]/#/--change=}" "$tar" "$tag" >/dev/null
  rm -f "$tar"
  local extra
  for extra in "$@"; do podman tag "$tag" "$extra"; done
}

want() {
  [[ "${FORCE:-}" == 1 ]] && return 0
  ! podman image exists "$1"
}

build_redis() {
  local tag=docker.io/library/redis:7
  want "$tag" || return 0
  local root
  root=$(mktemp -d)/root
  skeleton "$root"
  copy_with_libs "$root" "$(command -v redis-server)" "$(command -v redis-cli)"
  mkdir -p "$root/data" "$root/usr/local/bin"
  # As the official image: protected mode off (the container's port is the boundary).
  cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
if [ "$1" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
SH
  chmod +x "$root/usr/local/bin/docker-entrypoint.sh"
  ln -sf "$(command -v redis-server)" "$root/usr/local/bin/redis-server"
  changes=(
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
    'CMD ["redis-server"]'
    'EXPOSE 6379'
    'WORKDIR /data'
    'ENV PATH=/usr/local/bin:/usr/bin:/bin'
  )
  import_root "$root" localhost/redis:7 "$tag"
  rm -rf "$(dirname "$root")"
  echo "built $tag from $(command -v redis-server)" >&2
}

build_node() {
  local tag=localhost/gradfleet-node:20
  want "$tag" || return 0
  local root node npm_dir
  root=$(mktemp -d)/root
  skeleton "$root"
  node=$(readlink -f "$(command -v node)")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  copy_with_libs "$root" "$node" /usr/bin/mkdir /usr/bin/chown /usr/bin/chmod /usr/bin/rm /usr/bin/cp /usr/bin/ls /usr/bin/cat /usr/bin/env
  [[ "$node" == /usr/bin/node ]] || ln -sf "$node" "$root/usr/bin/node"
  mkdir -p "$root$(dirname "$npm_dir")"
  cp -a "$npm_dir" "$root$npm_dir"
  ln -sf "$npm_dir/bin/npm-cli.js" "$root/usr/bin/npm"
  ln -sf "$npm_dir/bin/npx-cli.js" "$root/usr/bin/npx"
  # The machine's CA bundle, trusted by node and npm (npm ci in the Dockerfile
  # reaches the registry through whatever TLS this machine trusts).
  changes=(
    'ENV PATH=/usr/local/bin:/usr/bin:/bin'
    'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt'
    'CMD ["node"]'
  )
  import_root "$root" "$tag"
  rm -rf "$(dirname "$root")"
  echo "built $tag from $node ($(node --version))" >&2
}

build_prometheus() {
  local tag=docker.io/prom/prometheus:v2.55.1
  want "$tag" || return 0
  local root
  root=$(mktemp -d)/root
  skeleton "$root"
  copy_with_libs "$root" "$(command -v prometheus)"
  mkdir -p "$root/prometheus" "$root/etc/prometheus"
  changes=(
    'ENTRYPOINT ["/usr/bin/prometheus"]'
    'CMD ["--config.file=/etc/prometheus/prometheus.yml","--storage.tsdb.path=/prometheus"]'
    'EXPOSE 9090'
    'WORKDIR /prometheus'
  )
  import_root "$root" localhost/prometheus:local "$tag"
  rm -rf "$(dirname "$root")"
  echo "built $tag from $(command -v prometheus) ($(prometheus --version 2>&1 | head -1))" >&2
}

for image in "$@"; do
  case "$image" in
    redis) build_redis ;;
    node) build_node ;;
    prometheus) build_prometheus ;;
    *)
      echo "podman-images.sh: unknown image $image (redis, node, prometheus)" >&2
      exit 2
      ;;
  esac
done
