#!/bin/sh
# The Debian packages labvmm's tests use, installed in one go (the README's test command and
# .ci/run call this). Already installed: nothing to do, no sudo asked. Not root: sudo.
# To need one more package, add it to PACKAGES with what uses it.
set -eu

PACKAGES="
qemu-system-misc          # qemu-system-riscv64: the reference machine of the differential tests
qemu-utils                # qemu-img: disk images (qcow2) for the block backends
device-tree-compiler      # dtc: checks the device trees labvmm writes
chromium                  # the browser tests drive JupyterLab in it (playwright)
fonts-dejavu-core         # ... with a font, for readable screenshots
opensbi                   # fw_jump/fw_dynamic firmware for the real-kernel guests
u-boot-qemu               # U-Boot for QEMU's virt machine, booted by the real-kernel tests
gcc-riscv64-linux-gnu     # the cross compiler for Linux, xv6 and the guest rebuild check
libc6-dev-riscv64-cross   # ... and its C library headers
linux-source-6.1          # the Linux kernel built for the Linux guest
dosfstools                # mkfs.vfat: disk images
mtools                    # mcopy: files into FAT images without mounting
e2fsprogs                 # mke2fs: ext2/ext4 disk images
tshark                    # reads the virtual switch's pcap captures
make                      # kernel and xv6 builds
bc                        # ... Linux's build needs bc,
flex                      # flex,
bison                     # bison
cpio                      # and cpio (the initramfs)
xz-utils                  # unpacks linux-source's tarball
"
#: node and npm, for the JupyterHub test's proxy (below), which comes from npm. Checked by
#: command, not by package: a machine whose Node.js comes from elsewhere (NodeSource's nodejs
#: ships npm inside it and conflicts with Debian's npm package) already has both.
NODE_PACKAGES="nodejs npm"
#: From npm, not Debian: JupyterHub's proxy, for the class-server test (deploy/jupyterhub).
NPM_PACKAGES="configurable-http-proxy"

names=$(printf '%s\n' "$PACKAGES" | sed 's/#.*//' | tr -s ' \n' '  ')

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "debian-packages.sh: this is not a Debian or Ubuntu system; install these yourself (tests that need one skip, naming it):$names" >&2
    exit 0
fi

missing=""
for name in $names; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$name" 2>/dev/null)" != "installed" ]; then
        missing="$missing $name"
    fi
done
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing="$missing $NODE_PACKAGES"
fi
npm_missing=""
for name in $NPM_PACKAGES; do
    command -v "$name" >/dev/null 2>&1 || npm_missing="$npm_missing $name"
done
if [ -z "$missing" ] && [ -z "$npm_missing" ]; then
    echo "debian-packages.sh: all $(echo $names | wc -w) Debian packages (and the npm ones) the tests use are installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "debian-packages.sh: not root and no sudo; as root run: apt-get install -y --no-install-recommends$missing; npm install -g$npm_missing" >&2
    exit 1
fi
if [ -n "$missing" ]; then
    echo "debian-packages.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    $as_root apt-get update
    # shellcheck disable=SC2086
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
if [ -n "$npm_missing" ]; then
    echo "debian-packages.sh: installing from npm:$npm_missing"
    # shellcheck disable=SC2086
    $as_root npm install -g $npm_missing
fi
