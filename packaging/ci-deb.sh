#!/usr/bin/env bash
# CI: package the binary `cargo test --workspace` just built (dev profile: no second
# build), install it, check it, purge it, and check that nothing is left behind.
# Needs root (dpkg). Prints how long packaging and the round trip took.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

WRIT_PACKAGE_PROFILE=dev WRIT_PACKAGE_NO_BUILD=1 packaging/build.sh --deb-only
deb=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/writ_*.deb | head -1)
built=$(date +%s)

dpkg -i "$deb"
writ --version
getent passwd writ >/dev/null && getent passwd writ-agent >/dev/null
writ config check /etc/writ/server.toml
writ config check /etc/writ/agent.toml
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /usr/lib/systemd/system/writ-server.service \
        /usr/lib/systemd/system/writ-agent.service
else
    echo "systemd-analyze not installed: units not verified after installation"
fi

dpkg --purge writ
left=""
for p in /usr/bin/writ /usr/lib/systemd/system/writ-server.service \
    /usr/lib/systemd/system/writ-agent.service /etc/writ /var/lib/writ /var/lib/writ-agent \
    /usr/share/doc/writ; do
    if [ -e "$p" ]; then left="$left $p"; fi
done
for u in writ writ-agent; do
    if getent passwd "$u" >/dev/null || getent group "$u" >/dev/null; then left="$left user:$u"; fi
done
if [ -n "$left" ]; then
    echo "dpkg --purge left behind:$left" >&2
    exit 1
fi
end=$(date +%s)
echo "packaging: .deb built in $((built - start))s, install/check/purge in $((end - built))s"
