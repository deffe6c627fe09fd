#!/usr/bin/env bash
# Two machines on one: a 2-rank data-parallel training whose ranks live in two network namespaces
# joined by a virtual Ethernet cable (veth), MPI talking TCP between them, compared with the same
# training in one process. Needs root (ip netns) and iproute2; CI runs it (.ci/run).
#
# What stands in for what: a namespace is a host with its own network stack and address
# (10.77.0.1, 10.77.0.2); the veth pair is the cable; LAUNCH (below) plays ssh, starting MPI's proxy
# "on" the other host. On real machines the same command is
#   mpiexec -hosts host1,host2 -n 2 -ppn 1 python -m minitransformer train ...
# with passwordless ssh between the hosts and the checkout (and data) at the same path on both.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
NS1=mt-host1 NS2=mt-host2 IP1=10.77.0.1 IP2=10.77.0.2
[ "$(id -u)" = 0 ] || { echo "two_namespaces.sh: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || { echo "two_namespaces.sh: needs iproute2 (apt-get install iproute2)" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS1" 2>/dev/null || true; ip netns del "$NS2" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cleanup; WORK=$(mktemp -d)

# two hosts and a cable
ip netns add "$NS1"; ip netns add "$NS2"
ip link add mt-veth1 type veth peer name mt-veth2
ip link set mt-veth1 netns "$NS1"; ip link set mt-veth2 netns "$NS2"
ip -n "$NS1" addr add "$IP1/24" dev mt-veth1; ip -n "$NS2" addr add "$IP2/24" dev mt-veth2
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
ip -n "$NS1" link set mt-veth1 up; ip -n "$NS2" link set mt-veth2 up

# the "ssh" of MPI's launcher: run the command inside the host's namespace, under its own hostname
# (MPI tells hosts apart by name; the same name would make it use shared memory between them)
LAUNCH="$WORK/launch.sh"
cat > "$LAUNCH" <<LAUNCHER
#!/usr/bin/env bash
while [[ "\$1" == -* ]]; do shift; done          # ssh options (-x)
host="\$1"; shift
case "\$host" in $IP1) ns=$NS1;; $IP2) ns=$NS2;; *) echo "no such host \$host" >&2; exit 1;; esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$ns; \$*"
LAUNCHER
chmod +x "$LAUNCH"

spec() { echo "{\"out\": \"$WORK/run-$1\", \"data\": \"$WORK/text.txt\", \"weights\": \"$WORK/$1.npz\", \"steps\": 4, \"dtype\": \"float64\"}"; }
sent() { ip netns exec "$NS1" cat /sys/class/net/mt-veth1/statistics/tx_bytes; }

before=$(sent)
# UCX_TLS=tcp: the two namespaces share one kernel, so MPI could find shared memory; real hosts cannot
timeout 60 ip netns exec "$NS1" env HYDRA_IFACE=mt-veth1 UCX_TLS=tcp \
    mpiexec -launcher ssh -launcher-exec "$LAUNCH" -hosts "$IP1,$IP2" -n 2 -ppn 1 \
    "$PYTHON" tests/mpi/train_run.py "$(spec two-hosts)"
after=$(sent)
timeout 60 "$PYTHON" tests/mpi/train_run.py "$(spec one-process)" >/dev/null

"$PYTHON" - "$WORK" $((after - before)) <<'PY'
import json, sys
import numpy as np
work, sent = sys.argv[1], int(sys.argv[2])
one, two = np.load(f"{work}/one-process.npz"), np.load(f"{work}/two-hosts.npz")
summary = json.loads(open(f"{work}/two-hosts.json").read())
worst = max(float(np.abs(one[k] - two[k]).max()) for k in one)
n, steps, R = summary["parameters"], summary["steps"], summary["ranks"]
ring = steps * 2 * (R - 1) / R * n * 8            # bytes one rank sends for the gradient all-reduces
print(f"2 ranks on 2 hosts (network namespaces, MPI over TCP) vs 1 process: largest weight difference {worst:.1e}")
print(f"rank 0 sent {sent:,} bytes over the cable; the ring all-reduce of the gradients alone is {ring:,.0f} "
      f"({n:,} float64 parameters, {steps} steps)")
assert summary["ranks"] == 2 and worst < 1e-12, worst
assert sent >= ring, "the gradients did not travel over the cable"
PY
