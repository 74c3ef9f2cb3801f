#!/usr/bin/env bash
# The test command. Installs the Debian packages the tests drive (kernel source, build tools, the three
# cross compilers), then runs every test of the workspace. Kernel trees and compiled corpus objects are
# cached in ${KLPX_CACHE:-~/.cache/klpx} and reused by later runs.
#
# --quick: the contributors' tier: the unit tests, the fixture corpus, cli, link survival and the
# patch-form planning (patch_forms without its two kernel builds): no kernel tree, no download, a few
# minutes after the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [ "${1:-}" = --quick ]; then
    quick=1
    shift
fi

packages=(linux-source-6.12 make gcc flex bison bc libelf-dev libssl-dev xz-utils
          gcc-aarch64-linux-gnu gcc-powerpc64le-linux-gnu gcc-s390x-linux-gnu
          qemu-system-x86 qemu-system-ppc qemu-system-misc busybox-static cpio ccache
          patch quilt git gcc-12 dwarves gcc-arm-linux-gnueabihf rpm cpio openssl man-db kmod systemd binutils
          clang-16 lld-16 llvm-16 distcc dpkg-dev debhelper rsync)
if ((quick)); then
    # What the quick tier runs: the kernel source (unpacked, never built), the four compilers and
    # binutils of the fixture corpus and link survival, the patch tools, man, systemd-analyze, and
    # busybox (a unit test runs the guest script's functions with it).
    packages=(linux-source-6.12 xz-utils gcc gcc-aarch64-linux-gnu gcc-powerpc64le-linux-gnu
              gcc-s390x-linux-gnu binutils patch quilt git diffutils man-db systemd busybox-static)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ((quick)); then
    cargo test --workspace --lib --bins "$@"
    exec cargo test --no-fail-fast --test fixture_corpus --test cli --test link_survival \
        --test patch_forms "$@" -- --skip build_
fi

cargo test --workspace --no-fail-fast "$@"
