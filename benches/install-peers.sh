#!/bin/sh
# Installs the peers that `cargo bench --bench compare` measures sssonector against:
# HAProxy (mode tcp) and nginx with its stream module. Idempotent: it installs only what is
# missing and never starts the system services' daemons on purpose (the bench runs its own
# instances with generated configs).
set -eu

need=""
command -v haproxy >/dev/null 2>&1 || need="$need haproxy"
command -v nginx >/dev/null 2>&1 || need="$need nginx"
# Debian builds the stream module as a loadable .so in its own package.
if [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ] && ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
    need="$need libnginx-mod-stream"
fi

if [ -z "$need" ]; then
    echo "install-peers: haproxy and nginx (with stream) already installed"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-peers: installing$need"
# The package lists may be stale in a fresh container; refresh them only when needed.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $need || {
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $need
}
haproxy -v | head -n 1
nginx -v
