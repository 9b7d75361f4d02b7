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
    local wall=$(($(ms_now) - t0))
    wait
    local cpu=$((($(cpu_ticks) - c0) * 1000 / hz))
    WALL[$form]+="$wall " CPU[$form]+="$cpu "
    podman rm -f -t 0 $(podman ps -aq --filter "name=$TAG-$form-") >/dev/null 2>&1
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
