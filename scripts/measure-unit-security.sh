#!/usr/bin/env bash
# Measures `systemd-analyze security` of the rendered units under a booted systemd:
# boots a throwaway Debian 12 systemd-nspawn container (no network of its own), which
# runs the analysis once at boot and powers off. Needs root, debootstrap and
# systemd-container (scripts/install-test-deps.sh); the first run debootstraps (a few
# minutes). Usage: scripts/measure-unit-security.sh [ROOTFS_DIR]   (as root)
set -euo pipefail
ROOT=${1:-/var/tmp/gourmetgram-security-rootfs}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}

if [ ! -x "$ROOT/usr/bin/systemctl" ]; then
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$ROOT" "$MIRROR" >/dev/null
fi
chroot "$ROOT" id gourmetgram >/dev/null 2>&1 ||
  chroot "$ROOT" useradd --system --home-dir /var/lib/gourmetgram --shell /usr/sbin/nologin gourmetgram
mkdir -p "$ROOT/opt/gourmetgram/venv/bin" "$ROOT/opt/gourmetgram/app"
printf '#!/bin/sh\nexit 0\n' > "$ROOT/opt/gourmetgram/venv/bin/gourmetgram"
chmod 755 "$ROOT/opt/gourmetgram/venv/bin/gourmetgram"

report="$ROOT/root/security.txt"
: > "$report"
for device in auto cpu; do
  PYTHONPATH=$REPO "$PY" - "$ROOT/etc/systemd/system" "$device" <<'PY'
import sys
from gourmetgram.host.configs import render_units
from gourmetgram.host.layout import host_layout
from gourmetgram.host.stack import load_stack
for name, text in render_units(load_stack({"api_device": sys.argv[2]}), host_layout({})).items():
    open(f"{sys.argv[1]}/{name}", "w").write(text)
PY
  cat > "$ROOT/etc/systemd/system/gg-measure.service" <<UNIT
[Unit]
Description=Measure the exposure of the GourmetGram units, then power off
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "api_device=$device" >> /root/security.txt; for u in food11-api@canary.service gourmetgram-web.service; do systemd-analyze security --no-pager \$\$u | grep Overall >> /root/security.txt; done; systemctl poweroff'
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf /etc/systemd/system/gg-measure.service "$ROOT/etc/systemd/system/multi-user.target.wants/gg-measure.service"
  timeout 300 systemd-nspawn --quiet --register=no --keep-unit --private-network --console=pipe \
    -D "$ROOT" -b </dev/null >/dev/null 2>&1
done
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/gg-measure.service"
cat "$report"
