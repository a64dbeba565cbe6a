#!/usr/bin/env bash
# Installs the Debian packages the tests run for real (nginx, prometheus, promtool,
# alertmanager, chromium, systemd-nspawn...). Services are not started on install:
# the tests start their own copies on free loopback ports.
set -euo pipefail
PACKAGES=(
  nginx-light
  prometheus
  prometheus-alertmanager
  prometheus-node-exporter
  prometheus-process-exporter
  prometheus-nginx-exporter
  chromium
  chromium-driver
  systemd-container
  debootstrap
  openssh-client
  libjemalloc2
  wrk
  curl
  postgresql
  mtail
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
# policy-rc.d 101 = "do not start services from maintainer scripts".
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
