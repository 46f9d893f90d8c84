#!/usr/bin/env bash
# Builds the server images of lockkit's docker-mode tests
# (LOCKKIT_TEST_PROVISION=docker) from Debian packages, without any
# container registry:
#
#   lockkit-test/debian:bookworm       debootstrap --variant=minbase from the
#                                      Debian mirror this machine's apt uses
#   lockkit-test/<server>:<version>    redis, postgres, mariadb, etcd,
#   lockkit-test/<server>:latest       zookeeper: docker/<server>/Dockerfile
#                                      on that base (what the fixtures use)
#
# Idempotent: an image whose recipe (its directory here and the base image)
# has not changed is kept, so a second run builds nothing. Uses the daemon
# that DOCKER_HOST (or Docker's default socket) names; when none answers, it
# starts a private one (docker/daemon.sh: no bridge, no iptables, no IP
# forwarding) and stops it, by its PID, at the end. Needs root for
# debootstrap. Prints what it built and what it kept.
#
# Environment: LOCKKIT_DEBIAN_MIRROR overrides the mirror read from
# /etc/apt/sources.list{,.d/*}; LOCKKIT_DEBIAN_SUITE (default bookworm) the
# Debian release; LOCKKIT_DOCKER_ROOT / LOCKKIT_DOCKER_RUN as in daemon.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/daemon.sh
. "$here/daemon.sh"

suite=${LOCKKIT_DEBIAN_SUITE:-bookworm}
base=lockkit-test/debian:$suite
servers=(redis postgres mariadb etcd zookeeper)
# The Debian package whose version names each server's image.
declare -A package=(
    [redis]=redis-server
    [postgres]='postgresql-[0-9]*'
    [mariadb]=mariadb-server
    [etcd]=etcd-server
    [zookeeper]=zookeeper
)
export DOCKER_BUILDKIT=0 # the classic builder: no BuildKit needed on the daemon

command -v docker >/dev/null || { echo "the docker client is missing: apt-get install -y docker.io" >&2; exit 1; }
if ! docker version >/dev/null 2>&1; then
    echo "no Docker daemon answers${DOCKER_HOST:+ on $DOCKER_HOST}: starting a private one"
    lockkit_dockerd_start
    trap lockkit_dockerd_stop EXIT
fi

# `deb URI SUITE COMPONENTS` for every entry of apt's sources (one-line
# and deb822 formats) whose suite is $suite, $suite-updates or
# $suite-security: what this machine's apt already uses.
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                uri = $i; dist = $(i + 1)
                if (dist == s || dist == s "-updates" || dist == s "-security") print "deb " uri " " dist " main"
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^#/) continue
                    key = line; sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    key = tolower(key)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                if (enabled == "no" || types !~ /(^|[ \t])deb([ \t]|$)/) next
                n = split(uris, u, /[ \t]+/); m = split(suites, d, /[ \t]+/)
                for (j = 1; j <= m; j++)
                    if (d[j] == s || d[j] == s "-updates" || d[j] == s "-security")
                        for (k = 1; k <= n; k++) if (u[k] != "") print "deb " u[k] " " d[j] " main"
            }' "$f"
    done
}

built=()
kept=()

# The base image: a minimal Debian made with debootstrap, with apt pointed
# at this machine's mirrors and services never started by package scripts.
if docker image inspect "$base" >/dev/null 2>&1; then
    kept+=("$base")
else
    command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
    sources=$(apt_sources | awk '!seen[$0]++')
    mirror=${LOCKKIT_DEBIAN_MIRROR:-$(awk -v s="$suite" '$3 == s { print $2; exit }' <<<"$sources")}
    [ -n "$mirror" ] || { echo "no '$suite' entry in apt's sources: set LOCKKIT_DEBIAN_MIRROR" >&2; exit 1; }
    [ -n "$sources" ] || sources="deb $mirror $suite main"
    work=$(mktemp -d "${TMPDIR:-/tmp}/lockkit-debootstrap.XXXXXX")
    trap 'rm -rf "$work"; lockkit_dockerd_stop' EXIT
    echo "debootstrap --variant=minbase $suite from $mirror"
    started=$SECONDS
    debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        exit 1
    }
    printf '%s\n' "$sources" >"$work/rootfs/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    tar -C "$work/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
    rm -rf "$work"
    echo "built $base in $((SECONDS - started)) s"
    built+=("$base")
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

for server in "${servers[@]}"; do
    image=lockkit-test/$server
    dir=$here/$server
    recipe=$( (echo "$base_id"; cd "$dir" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
    current=$(docker image inspect -f '{{index .Config.Labels "lockkit.recipe"}}' "$image:latest" 2>/dev/null || true)
    if [ "$current" = "$recipe" ]; then
        kept+=("$image:latest ($(docker image inspect -f '{{index .Config.Labels "lockkit.version"}}' "$image:latest"))")
        continue
    fi
    echo "building $image (recipe $recipe)"
    started=$SECONDS
    log=$(mktemp "${TMPDIR:-/tmp}/lockkit-build-$server.XXXXXX")
    if ! docker build --network host --label "lockkit.recipe=$recipe" -t "$image:build" "$dir" >"$log" 2>&1; then
        echo "building $image failed; the end of its log ($log):" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    rm -f "$log"
    # The upstream version of the package: no epoch, no Debian revision.
    versions=$(docker run --rm --network none --entrypoint dpkg-query "$image:build" \
        -W -f '${Version}\n' "${package[$server]}")
    version=$(grep -m1 . <<<"$versions")
    version=${version#*:}
    version=${version%%-*}
    version=${version%%+*}
    # Stamp the version into a label (a one-line Dockerfile on the built image).
    printf 'FROM %s\nLABEL lockkit.version=%s\n' "$image:build" "$version" |
        docker build -q -t "$image:$version" -t "$image:latest" - >/dev/null 2>&1
    docker rmi "$image:build" >/dev/null
    echo "built $image:$version in $((SECONDS - started)) s"
    built+=("$image:$version (also :latest)")
done
# Images that lost their tags to a rebuild.
docker image prune -f --filter label=lockkit.recipe >/dev/null

echo
echo "built: ${built[*]:-nothing}"
for k in "${kept[@]}"; do echo "kept:  $k"; done
