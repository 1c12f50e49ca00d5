# The demo, run by `cargo xtask demo` as root inside the kernel lab.
#
# Three "pods" (network namespaces serving HTTP on 9376 with busybox httpd,
# each answering its own name) and a client namespace. kipvs runs in
# manifest mode on /payload/manifests: the `hostnames` Service (ClusterIP
# 10.96.0.10:80 → 9376) and its EndpointSlice, plain Kubernetes YAML. kipvs
# binds the ClusterIP on kube-ipvs0 and programs IPVS; the client then makes
# real HTTP requests. Then one pod is removed from the manifest and kipvs
# applies just that change.
set -euo pipefail
ip() { /usr/sbin/ip "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "three pods and a client, each in its own network namespace"
# name, netns-side address, host-side address
for spec in "hostnames-pod-a 10.244.1.2 10.244.1.1" "hostnames-pod-b 10.244.2.2 10.244.2.1" \
            "hostnames-pod-c 10.244.3.2 10.244.3.1" "client 10.0.9.2 10.0.9.1"; do
  set -- $spec
  ip netns add "$1"
  ip link add "h-${1: -5}" type veth peer name eth0 netns "$1"
  ip addr add "$3/24" dev "h-${1: -5}"
  ip link set "h-${1: -5}" up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set lo up
  ip -n "$1" link set eth0 up
  ip -n "$1" route add default via "$3"
  echo "  $1: $2"
done
for pod in hostnames-pod-a hostnames-pod-b hostnames-pod-c; do
  mkdir -p "/tmp/www-$pod"
  echo "$pod" > "/tmp/www-$pod/index.html"
  ip netns exec "$pod" busybox httpd -p 9376 -h "/tmp/www-$pod"
done

step "kipvs proxy --manifests /payload/manifests (the hostnames Service + EndpointSlice)"
mkdir -p /tmp/manifests
cp /payload/manifests/*.yaml /tmp/manifests/
kipvs proxy --manifests /tmp/manifests --hostname-override lab --ip-families ipv4 > /tmp/kipvs.log 2>&1 &
KIPVS=$!
for i in $(seq 1 100); do
  ipvsadm -Ln | grep -q '10.244.3.2:9376' && break
  sleep 0.1
done
sed 's/^/  kipvs| /' /tmp/kipvs.log
ip -br addr show dev kube-ipvs0
ipvsadm -Ln

step "kipvs list: the same table, with the Service of each virtual server"
kipvs list

step "six HTTP requests from the client to http://10.96.0.10/"
answers=""
for i in 1 2 3 4 5 6; do
  a=$(ip netns exec client curl -sS --max-time 5 http://10.96.0.10/)
  echo "  request $i -> $a"
  answers="$answers $a"
done

step "remove hostnames-pod-c from the EndpointSlice (edit the manifest)"
# The endpoint is four lines: addresses, conditions, nodeName, targetRef.
awk '/addresses: \[10.244.3.2\]/{skip=4} skip>0{skip--; next} {print}' /tmp/manifests/hostnames.yaml > /tmp/hostnames.yaml
mv /tmp/hostnames.yaml /tmp/manifests/hostnames.yaml
# pod-c leaves: weight 0 at once (no new connection goes to it), deleted
# when its connections are gone.
for i in $(seq 1 100); do
  ipvsadm -Ln | grep -Eq '10.244.3.2:9376 +Masq +1 ' || break
  sleep 0.1
done
tail -n 1 /tmp/kipvs.log | sed 's/^/  kipvs| /'
ipvsadm -Ln

step "kipvs explain default/hostnames: why each endpoint is (not) a real server"
kipvs explain default/hostnames
after=""
for i in 1 2 3 4; do
  a=$(ip netns exec client curl -sS --max-time 5 http://10.96.0.10/)
  echo "  request $i -> $a"
  after="$after $a"
done
kill $KIPVS
wait $KIPVS 2>/dev/null || true

step "kipvs stopped (SIGTERM): the kernel keeps every rule"
ipvsadm -Ln | tail -n +4

rotation() { # the answers are the three pods in a fixed rotation
  set -- $1
  [ "$1" != "$2" ] && [ "$2" != "$3" ] && [ "$1" != "$3" ] && [ "$4" = "$1" ] && [ "$5" = "$2" ] && [ "$6" = "$3" ]
}
if rotation "$answers" && ! echo "$after" | grep -q hostnames-pod-c && [ "$(echo $after | tr ' ' '\n' | sort -u | wc -l)" = 2 ]; then
  echo; echo "demo: the requests went round-robin over the three pods; after the edit, over the two left"
else
  echo; echo "demo: FAILED: before:$answers after:$after" >&2
  exit 1
fi
