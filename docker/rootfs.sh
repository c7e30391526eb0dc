#!/bin/sh
# Assembles the runtime image's root file system under DEST from a built sssonector
# binary: the binary (stripped), exactly the shared libraries `ldd` lists for it (with the
# dynamic loader), the example config and a passwd/group naming the non-root user. Both
# image builds run it: docker/Dockerfile in its Rust build stage, docker/build-local.sh on
# the host. So the two images have the same layout, whichever glibc built the binary.
# POSIX sh: the Rust image has no bash guarantee we rely on.
set -eu
bin=${1:?usage: rootfs.sh BINARY DEST}
dest=${2:?usage: rootfs.sh BINARY DEST}
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$dest/usr/local/bin" "$dest/etc/sssonector"
cp "$bin" "$dest/usr/local/bin/sssonector"
# Debug info is most of a release binary (the release profile keeps line tables for
# backtraces on the host); the image ships without it.
strip --strip-debug "$dest/usr/local/bin/sssonector"
chmod 0755 "$dest/usr/local/bin/sssonector"

# Each line of ldd is `name => /path (addr)` or `/path (addr)` (the loader); linux-vdso
# has no file. Libraries are copied to the path ldd names, following symlinks, because
# the loader looks them up there.
ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u |
while read -r lib; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done
if ! ldd "$bin" | grep -q 'libc\.so'; then
  echo "rootfs.sh: ldd lists no libc for $bin; is it a static binary? (then it needs no library)" >&2
fi

install -m 0644 "$here/config.yaml" "$dest/etc/sssonector/config.yaml"
# A name for UID/GID 65532 (the distroless `nonroot` convention): tools that print users
# show it, and `USER 65532` needs no entry but reads better with one.
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$dest/etc/group"
# glibc resolves upstream host names through NSS; files first, so /etc/hosts entries
# (Docker's --add-host, Kubernetes hostAliases) win over DNS as on any host.
printf 'hosts: files dns\n' >"$dest/etc/nsswitch.conf"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf"
