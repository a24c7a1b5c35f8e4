#!/usr/bin/env bash
# Makes sure the real services the tests talk to are up (Redis, PostgreSQL,
# RabbitMQ, NATS with JetStream, Mosquitto), starting any that stopped with
# the machine's own commands. Idempotent.
set -euo pipefail

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "services: $name did not come up" >&2; return 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 150); do port_open 5672 && break; sleep 0.2; done
  port_open 5672 || { echo "services: RabbitMQ did not come up" >&2; exit 1; }
fi

if ! port_open 4222; then
  echo "services: starting NATS (JetStream)"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for NATS port_open 4222
fi

if ! port_open 1883; then
  echo "services: starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_for Mosquitto port_open 1883
fi

# Programs the tests and benches start themselves: dnsmasq (a real DNS
# server for the `dns` name resolver's tests), nginx (the reference proxy
# of the invocation bench), iptables (transparent mode's rules, tested
# in network namespaces) and etcd (3-member clusters on loopback for the
# etcd coordination engine). Installed from Debian's packages once.
need=()
command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "services: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
