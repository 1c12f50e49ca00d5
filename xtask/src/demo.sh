# The demo, run by `cargo xtask demo` as root inside the kernel lab.
#
# A ClusterIP (10.96.0.10:80) is bound on the dummy interface kube-ipvs0, as
# kube-proxy's IPVS mode lays it out, and an IPVS virtual server with the
# round-robin scheduler forwards (masquerade) to two "pods": network
# namespaces serving HTTP with busybox httpd. A client namespace then makes
# real HTTP requests to the ClusterIP. The virtual server is programmed with
# ipvsadm until the kipvs controller exists.
set -euo pipefail
ip() { /usr/sbin/ip "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv4.vs.conntrack=1

step "kube-ipvs0 holds the ClusterIP"
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.10/32 dev kube-ipvs0
ip -br addr show dev kube-ipvs0

step "two pods and a client, each in its own network namespace"
# name, netns-side address, host-side address
for spec in "pod-a 10.244.1.2 10.244.1.1" "pod-b 10.244.2.2 10.244.2.1" "client 10.0.9.2 10.0.9.1"; do
  set -- $spec
  ip netns add "$1"
  ip link add "h-$1" type veth peer name eth0 netns "$1"
  ip addr add "$3/24" dev "h-$1"
  ip link set "h-$1" up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set lo up
  ip -n "$1" link set eth0 up
  ip -n "$1" route add default via "$3"
  echo "  $1: $2"
done
for pod in pod-a pod-b; do
  mkdir -p "/tmp/www-$pod"
  echo "$pod" > "/tmp/www-$pod/index.html"
  ip netns exec "$pod" busybox httpd -p 8080 -h "/tmp/www-$pod"
done

step "the virtual server: ipvsadm -A -t 10.96.0.10:80 -s rr, two real servers"
ipvsadm -A -t 10.96.0.10:80 -s rr
ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m
ipvsadm -a -t 10.96.0.10:80 -r 10.244.2.2:8080 -m
ipvsadm -Ln

step "six HTTP requests from the client to http://10.96.0.10/"
answers=""
for i in 1 2 3 4 5 6; do
  a=$(ip netns exec client curl -sS --max-time 5 http://10.96.0.10/)
  echo "  request $i -> $a"
  answers="$answers $a"
done

step "IPVS counted them"
ipvsadm -Ln --stats

expected=" pod-a pod-b pod-a pod-b pod-a pod-b"
alternate=" pod-b pod-a pod-b pod-a pod-b pod-a"
if [ "$answers" = "$expected" ] || [ "$answers" = "$alternate" ]; then
  echo; echo "demo: the requests alternated between the two pods (round-robin)"
else
  echo; echo "demo: FAILED: expected strict alternation, got:$answers" >&2
  exit 1
fi
