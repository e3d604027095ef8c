#!/usr/bin/env bash
# Build the binaries of the local Kubernetes control plane used by the operator
# and e2e tests (see e2e/cluster.py and docs/development.md).
#
# Why this exists: our machines and CI have no Docker and no way to download
# prebuilt release binaries, but they reach the Go module proxy. So we build
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok
# and helm from source with `go build`, pinned in e2e/k8s-versions.env, into a
# cache OUTSIDE the repo keyed by those versions:
#
#     ${SSO_K8S_CACHE:-$HOME/.cache/sso-k8s}/<version-key>/bin/
#     ${SSO_K8S_CACHE:-$HOME/.cache/sso-k8s}/<version-key>/kwok/stages.yaml
#     ${SSO_K8S_CACHE:-$HOME/.cache/sso-k8s}/<version-key>/kwok/storageclass.yaml
#
# Each binary is skipped when it already exists, so a second run takes about a
# second. The Go wrapper modules are generated under <version-key>/src/, never
# in the repo; Go's module cache (GOMODCACHE) and build cache are Go's own.
#
# Usage: e2e/build-k8s-binaries.sh [--print-bin-dir | --print-cache-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/k8s-versions.env
source "$here/k8s-versions.env"

cache_root="${SSO_K8S_CACHE:-$HOME/.cache/sso-k8s}"
version_key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
cache_dir="$cache_root/$version_key"
bin_dir="$cache_dir/bin"
src_dir="$cache_dir/src"
kwok_dir="$cache_dir/kwok"

case "${1:-}" in
  --print-bin-dir) echo "$bin_dir"; exit 0 ;;
  --print-cache-dir) echo "$cache_dir"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print-bin-dir | --print-cache-dir]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "build-k8s-binaries: 'go' not found on PATH" >&2; exit 1; }
# Kubernetes 1.36, etcd 3.6.16, kwok 0.8 and helm 3.21 all declare `go 1.26.0`.
go_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
if [[ -z "$go_minor" || "$go_minor" -lt 26 ]]; then
  echo "build-k8s-binaries: needs Go >= 1.26, found $(go env GOVERSION)" >&2
  exit 1
fi

export CGO_ENABLED=0
# Never download another Go toolchain: the machine's Go (>= 1.26) is what we have.
export GOTOOLCHAIN=local
# -mod=mod: the generated wrapper modules resolve and record what they need.
export GOFLAGS="-mod=mod -buildvcs=false"
# Both compile jobs and the linker fit the 2-core, 24 GiB machines.
build_flags=(-p 2 -trimpath)

mkdir -p "$bin_dir" "$src_dir" "$kwok_dir"

# One build per cache dir at a time (make targets and pytest may race).
exec 9>"$cache_dir/.lock"
flock 9

log() { printf '[build-k8s-binaries] %s\n' "$*" >&2; }
now() { date +%s; }

t_start=$(now)
built_any=0

# new_wrapper NAME: a fresh, empty wrapper module in $src_dir/NAME (printed).
new_wrapper() {
  local dir="$src_dir/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && go mod init "local/sso-k8s-$1" >/dev/null 2>&1)
  echo "$dir"
}

# missing NAME...: prints the names whose binary is not in $bin_dir yet.
missing() {
  local n out=()
  for n in "$@"; do [[ -x "$bin_dir/$n" ]] || out+=("$n"); done
  echo "${out[@]:-}"
}

# ---------------------------------------------------------------- kubernetes
build_kubernetes() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local need
  need=$(missing "${cmds[@]}")
  if [[ -z "$need" ]]; then log "kubernetes $K8S_VERSION: cached"; return; fi
  local t0; t0=$(now)
  log "kubernetes $K8S_VERSION: building $need"
  local dir; dir=$(new_wrapper kubernetes)
  # k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...)
  # at v0.0.0 and maps them to ./staging/... with replace directives, which
  # `go install pkg@version` refuses. Generate the equivalent replace lines
  # from its own go.mod, pointing each to the published v0.X.Y tag.
  local gomod
  gomod=$(cd "$dir" && go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$K8S_VERSION")
  local staging_version="v0.${K8S_VERSION#v1.}"
  {
    grep -E '^godebug ' "$gomod" || true
    echo
    awk -v ver="$staging_version" '
      $0 ~ /^replace[[:space:]]*\(/ { inblock = 1; next }
      inblock && $0 ~ /^\)/ { inblock = 0; next }
      {
        line = $0
        sub(/^replace[[:space:]]+/, "", line)
        if ((inblock || $0 ~ /^replace[[:space:]]/) && line ~ /=>[[:space:]]*\.\/staging\//) {
          split(line, f, /[[:space:]]+/)
          mod = (f[1] == "" ? f[2] : f[1])
          printf "replace %s => %s %s\n", mod, mod, ver
        }
      }' "$gomod"
  } >>"$dir/go.mod"
  local n_repl; n_repl=$(grep -c '^replace ' "$dir/go.mod")
  log "kubernetes: $n_repl staging replace lines -> $staging_version"
  [[ "$n_repl" -gt 0 ]] || { log "no staging replaces found in $gomod"; exit 1; }
  local pkgs=() c
  for c in $need; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$dir" && go get -tool "${pkgs[@]/%/@$K8S_VERSION}")
  local major minor
  major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local out_dir="$src_dir/kubernetes/out"
  mkdir -p "$out_dir"
  (cd "$dir" && go build "${build_flags[@]}" -ldflags "$ldflags" -o "$out_dir/" "${pkgs[@]}")
  for c in $need; do mv -f "$out_dir/$c" "$bin_dir/$c"; done
  log "kubernetes: built in $(($(now) - t0)) s"
  built_any=1
}

# ---------------------------------------------------------------------- etcd
build_etcd() {
  if [[ -x "$bin_dir/etcd" ]]; then log "etcd $ETCD_VERSION: cached"; return; fi
  local t0; t0=$(now)
  log "etcd $ETCD_VERSION: building"
  local dir; dir=$(new_wrapper etcd)
  (cd "$dir" && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  (cd "$dir" && go build "${build_flags[@]}" -ldflags "-s -w" -o "$dir/etcd" go.etcd.io/etcd/server/v3)
  mv -f "$dir/etcd" "$bin_dir/etcd"
  log "etcd: built in $(($(now) - t0)) s"
  built_any=1
}

# ---------------------------------------------------------------------- kwok
build_kwok() {
  if [[ -x "$bin_dir/kwok" ]]; then log "kwok $KWOK_VERSION: cached"; return; fi
  local t0; t0=$(now)
  log "kwok $KWOK_VERSION: building"
  local dir; dir=$(new_wrapper kwok)
  (cd "$dir" && go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  local c=sigs.k8s.io/kwok/pkg/consts
  (cd "$dir" && go build "${build_flags[@]}" \
    -ldflags "-s -w -X $c.Version=$KWOK_VERSION -X $c.KubeVersion=$K8S_VERSION" \
    -o "$dir/kwok" sigs.k8s.io/kwok/cmd/kwok)
  mv -f "$dir/kwok" "$bin_dir/kwok"
  log "kwok: built in $(($(now) - t0)) s"
  built_any=1
}

# kwok's standalone binary has no stages built in ("no stages found"): take the
# fast node/pod/volume stages from the kwok module source into one file.
extract_kwok_stages() {
  if [[ -s "$kwok_dir/stages.yaml" && -s "$kwok_dir/storageclass.yaml" ]]; then
    log "kwok stages: cached"
    return
  fi
  local dir
  dir=$(cd "$src_dir" && GOFLAGS='' go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
  local stage="$dir/kustomize/stage"
  local files=(
    node/fast/node-initialize.yaml
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml
    pod/fast/pod-complete.yaml
    pod/fast/pod-delete.yaml
    volume/fast/pvc-provision.yaml
    volume/fast/pv-bind.yaml
    volume/fast/pvc-delete.yaml
    volume/fast/pv-delete.yaml
  )
  local f tmp="$kwok_dir/stages.yaml.tmp"
  : >"$tmp"
  for f in "${files[@]}"; do
    [[ -s "$stage/$f" ]] || { log "missing kwok stage $stage/$f"; exit 1; }
    { echo "---"; echo "# from sigs.k8s.io/kwok@$KWOK_VERSION kustomize/stage/$f"; cat "$stage/$f"; } >>"$tmp"
  done
  mv -f "$tmp" "$kwok_dir/stages.yaml"
  # The kwok-volume StorageClass (its provisioner is the pvc-provision stage);
  # it already carries the is-default-class annotation.
  install -m 0644 "$stage/volume/fast/storage-class.yaml" "$kwok_dir/storageclass.yaml"
  log "kwok stages: extracted ${#files[@]} stages to $kwok_dir/stages.yaml"
}

# ---------------------------------------------------------------------- helm
build_helm() {
  if [[ -x "$bin_dir/helm" ]]; then log "helm $HELM_VERSION: cached"; return; fi
  local t0; t0=$(now)
  log "helm $HELM_VERSION: building"
  local dir; dir=$(new_wrapper helm)
  (cd "$dir" && go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  # As helm's Makefile: the default Kubernetes version (for .Capabilities and
  # lint) is derived from the client-go it is built with (v0.X -> 1.X).
  local cg kmaj kmin
  cg=$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
  kmaj=$(($(echo "$cg" | sed -E 's/^v([0-9]+)\..*/\1/') + 1))
  kmin=$(echo "$cg" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local p
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=$kmaj -X $p.k8sVersionMinor=$kmin"
  done
  (cd "$dir" && go build "${build_flags[@]}" -ldflags "$ldflags" -o "$dir/helm" helm.sh/helm/v3/cmd/helm)
  mv -f "$dir/helm" "$bin_dir/helm"
  log "helm: built in $(($(now) - t0)) s"
  built_any=1
}

build_etcd
build_kwok
extract_kwok_stages
build_kubernetes
build_helm

total=$(($(now) - t_start))
if [[ "$built_any" == 1 ]]; then
  log "done (cold: built what was missing) in ${total} s -> $bin_dir"
else
  log "done (warm: all cached) in ${total} s -> $bin_dir"
fi
