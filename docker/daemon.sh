# shellcheck shell=bash
# A private Docker daemon for lockkit's docker-mode tests, sourced by
# docker/build-images.sh and .ci/run (not run on its own).
#
# The daemon leaves the host's networking as it was: no bridge
# (`--bridge=none`), no iptables or ip6tables rules, no IP forwarding, no
# masquerading. Containers therefore run with host networking only, each
# server on a loopback port of its own. It has its own data root (images
# persist there between runs: a warm machine rebuilds nothing), exec root,
# socket and pidfile, so it neither touches nor is touched by a system
# Docker.
#
#   lockkit_dockerd_start   starts it (unless one of ours already runs on
#                           the socket) and exports DOCKER_HOST
#   lockkit_dockerd_stop    stops it by its PID, if this shell started it
#
# LOCKKIT_DOCKER_ROOT (default /var/lib/lockkit-docker) holds the data root
# and the daemon's log; LOCKKIT_DOCKER_RUN (default /run/lockkit-docker)
# the exec root, the socket and the pidfile.

LOCKKIT_DOCKER_ROOT=${LOCKKIT_DOCKER_ROOT:-/var/lib/lockkit-docker}
LOCKKIT_DOCKER_RUN=${LOCKKIT_DOCKER_RUN:-/run/lockkit-docker}
LOCKKIT_DOCKERD_PID=""

# Whether process $1 runs (a zombie, exited but not yet reaped, does not).
lockkit_alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

lockkit_dockerd_socket() {
    printf 'unix://%s/docker.sock\n' "$LOCKKIT_DOCKER_RUN"
}

lockkit_dockerd_start() {
    local sock pidfile log pid i
    sock=$(lockkit_dockerd_socket)
    pidfile=$LOCKKIT_DOCKER_RUN/dockerd.pid
    log=$LOCKKIT_DOCKER_ROOT/dockerd.log
    export DOCKER_HOST=$sock
    if DOCKER_HOST=$sock docker version >/dev/null 2>&1; then
        # One of ours from an earlier run still serves this socket: use it,
        # and leave it running (this shell did not start it).
        echo "dockerd: reusing the daemon on $sock (pid $(cat "$pidfile" 2>/dev/null || echo '?'))"
        return 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd is missing: apt-get install -y docker.io" >&2; return 1; }
    mkdir -p "$LOCKKIT_DOCKER_ROOT/data" "$LOCKKIT_DOCKER_RUN"
    dockerd \
        --data-root "$LOCKKIT_DOCKER_ROOT/data" \
        --exec-root "$LOCKKIT_DOCKER_RUN/exec" \
        --pidfile "$pidfile" \
        --host "$sock" \
        --bridge=none \
        --iptables=false \
        --ip6tables=false \
        --ip-forward=false \
        --ip-masq=false \
        >"$log" 2>&1 </dev/null &
    pid=$!
    for i in $(seq 1 300); do
        if DOCKER_HOST=$sock docker version >/dev/null 2>&1; then
            LOCKKIT_DOCKERD_PID=$pid
            echo "dockerd: started (pid $pid) on $sock, data in $LOCKKIT_DOCKER_ROOT/data"
            return 0
        fi
        if ! lockkit_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            echo "dockerd exited while starting; its log ($log):" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "dockerd did not answer on $sock within 60 s; its log ($log):" >&2
    tail -n 30 "$log" >&2
    LOCKKIT_DOCKERD_PID=$pid
    lockkit_dockerd_stop
    return 1
}

lockkit_dockerd_stop() {
    local pid=$LOCKKIT_DOCKERD_PID i containerd
    [ -n "$pid" ] || return 0
    LOCKKIT_DOCKERD_PID=""
    containerd=$(cat "$LOCKKIT_DOCKER_RUN/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || return 0
    # dockerd stops its containers and its containerd before it exits.
    for i in $(seq 1 300); do
        if ! lockkit_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            lockkit_dockerd_unmount
            echo "dockerd: stopped (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    echo "dockerd (pid $pid) did not stop within 30 s: killing it and its containerd" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -z "$containerd" ] || kill -KILL "$containerd" 2>/dev/null || true
    lockkit_dockerd_unmount
}

# Mounts the stopped daemon left under its exec root and data root (dockerd
# 20.10 leaves the bind mount of the host's network namespace at
# exec/netns/default), deepest first.
lockkit_dockerd_unmount() {
    local point
    awk -v run="$LOCKKIT_DOCKER_RUN/" -v root="$LOCKKIT_DOCKER_ROOT/" \
        'index($5, run) == 1 || index($5, root) == 1 { print $5 }' /proc/self/mountinfo |
        sort -r |
        while read -r point; do
            umount "$point" 2>/dev/null || true
        done
}
