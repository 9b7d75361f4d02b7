#!/usr/bin/env bash
# bench/podman-start.sh [N...]: what one container start costs this host, the
# part of a podman cold start that is not ours. For N stage containers started
# at once (`podman run -d`, the stem's image, --cpus 0.35 --memory 512m, as
# `splitinfer bench --runtime podman` starts them), prints the wall time until
# every one answers /readyz and the host CPU time spent meanwhile (all of
# /proc/stat: podman, conmon, runc, netavark and its iptables runs, and the
# functions themselves), in four forms:
#   published   the port published on 127.0.0.1, on a network with DNS
#   by-address  no port published (probed at its address), network with DNS
#   no-dns      no port published, network without DNS (what the bench does)
#   host        --network host, each on its own host port ($PORT, probed on
#               127.0.0.1): no bridge, no netavark, no iptables; the price
#               of the network
#   exit        --network none, the function replaced by `--version`, which
#               prints and exits: until `podman run` returns. What a
#               container costs before any program of ours runs, the floor
#               under every podman cold start (not in FORMS by default)
# N defaults to "1 6" (the baseline's function alone, the pipeline's five and
# its gateway); each form runs REPS times (3), interleaved, and prints its
# medians. Needs root (the host routes to the bridge) and the image of
# `make images PLAN=pipeline`. Not a CI test: it prints times.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/build/containers.conf}
[ -f "$CONTAINERS_CONF" ] || printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
IMG=${IMG:-localhost/splitinfer-stage-stem:latest}
podman image exists "$IMG" || { echo "podman-start: $IMG missing: make images PLAN=pipeline" >&2; exit 1; }
NS=${NS:-"1 6"}
[ $# -gt 0 ] && NS="$*"
TAG=ps$$
ERR=$(mktemp) # podman run's own stderr (conmon's syslog complaints); shown on failure
cleanup() {
    podman rm -f -t 0 $(podman ps -aq --filter "name=$TAG-") >/dev/null 2>&1 || true
    podman network rm -f "$TAG-dns" "$TAG-nodns" >/dev/null 2>&1 || true
    rm -f "$ERR"
}
trap cleanup EXIT
podman network create "$TAG-dns" >/dev/null
podman network create --disable-dns "$TAG-nodns" >/dev/null
subnet() { podman network inspect "$1" --format '{{range .Subnets}}{{.Subnet}} {{end}}' | cut -d. -f1-3; }
declare -A BASE=([dns]=$(subnet "$TAG-dns") [nodns]=$(subnet "$TAG-nodns"))
cpu_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; } # user nice system irq softirq
ms_now() { echo $(($(date +%s%N) / 1000000)); }
hz=$(getconf CLK_TCK)

url() { # form base i: where function i answers
    if [ "$1" = host ]; then echo "http://127.0.0.1:$((HOSTPORT + $3))"; else echo "http://$2.$((10 + $3)):8080"; fi
}

run() { # form n
    local form=$1 n=$2 net=dns
    [ "$form" = no-dns ] && net=nodns
    local base=${BASE[$net]} c0 t0 i left
    c0=$(cpu_ticks) t0=$(ms_now)
    if [ "$form" = exit ]; then
        for ((i = 1; i <= n; i++)); do
            podman run --name "$TAG-$form-$i" --network none --cpus 0.35 --memory 512m \
                --log-driver k8s-file "$IMG" --version >/dev/null 2>>"$ERR" &
        done
        wait
        finish "$form" "$t0" "$(ms_now)" "$c0"
        return
    fi
    for ((i = 1; i <= n; i++)); do
        local netargs=(--network "$TAG-$net" --ip "$base.$((10 + i))")
        [ "$form" = published ] && netargs+=(-p "127.0.0.1::8080")
        [ "$form" = host ] && netargs=(--network host -e "PORT=$((HOSTPORT + i))")
        podman run -d --name "$TAG-$form-$i" "${netargs[@]}" \
            --cpus 0.35 --memory 512m --log-driver k8s-file \
            "$IMG" stage --segment stem --threads 1 >/dev/null 2>>"$ERR" &
    done
    declare -A up=()
    left=$n
    while ((left > 0)); do
        for ((i = 1; i <= n; i++)); do
            [ -n "${up[$i]:-}" ] && continue
            if curl -sf -m 1 -o /dev/null "$(url "$form" "$base" "$i")/readyz"; then
                up[$i]=1 left=$((left - 1))
            fi
        done
        (($(ms_now) - t0 < 60000)) || { echo "podman-start: not ready in 60 s" >&2; cat "$ERR" >&2; exit 1; }
        sleep 0.01
    done
    local t1
    t1=$(ms_now)
    wait # the podman run -d processes, done once their containers started
    finish "$form" "$t0" "$t1" "$c0"
}

finish() { # form t0 t1 c0: records the wall time t1 - t0 and the CPU time since c0; removes the containers
    local wall=$(($3 - $2))
    local cpu=$((($(cpu_ticks) - $4) * 1000 / hz))
    WALL[$1]+="$wall " CPU[$1]+="$cpu "
    podman rm -f -t 0 $(podman ps -aq --filter "name=$TAG-$1-") >/dev/null 2>&1
    sleep 1 # the removals' own work done before the next measurement
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
REPS=${REPS:-3}
FORMS=${FORMS:-"published by-address no-dns host"}
HOSTPORT=${HOSTPORT:-28100} # host form: function i on 127.0.0.1:HOSTPORT+i
for n in $NS; do
    declare -A WALL=() CPU=()
    for ((r = 0; r < REPS; r++)); do
        for form in $FORMS; do run "$form" "$n"; done
    done
    for form in $FORMS; do
        w=$(echo "${WALL[$form]}" | median) c=$(echo "${CPU[$form]}" | median)
        printf '%-11s n=%-2d all ready %5d ms  host CPU %5d ms (%d per container)   [walls: %s]\n' \
            "$form" "$n" "$w" "$c" $((c / n)) "${WALL[$form]% }"
    done
done
