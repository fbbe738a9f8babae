#!/usr/bin/env bash
# Provides a CPython newer than this Debian release carries (3.13, 3.14, 3.15)
# without changing the system: Debian unstable's own binary packages of that
# CPython and of the C library it was built against are downloaded with a
# private apt configuration, unpacked (not installed) into a prefix, and the
# interpreter is pointed at that prefix's loader and libraries. Prints the
# interpreter's path.
#
#   scripts/debian-cpython.sh 3.14 [PREFIX]    default PREFIX: ~/.cache/otel-alloc-cpython/3.14
#
# Extensions build against it with CFLAGS=-I$PREFIX/usr/include (Debian keeps
# pyconfig.h apart from the other headers). Needs root for apt-get (patchelf is
# installed when missing); everything else happens in PREFIX and a temp dir.
set -euo pipefail
version=${1:?usage: debian-cpython.sh VERSION [PREFIX]}
prefix=${2:-$HOME/.cache/otel-alloc-cpython/$version}
python=$prefix/usr/bin/python$version

usable() { [ -x "$python" ] && "$python" -c 'import ssl, sqlite3, ctypes, venv' >/dev/null 2>&1; }

if ! usable; then
    if ! command -v patchelf >/dev/null; then
        apt-get update -qq >&2 && apt-get install -y -qq patchelf >/dev/null
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
    # The Debian mirror this machine's apt already uses, suite unstable.
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "debian-cpython.sh: no Debian mirror in the apt sources" >&2; exit 1; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" \
        >"$work/sources.list"
    apt=(apt-get -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root)
    "${apt[@]}" update -qq >&2
    (cd "$work/debs" && "${apt[@]}" download -qq \
        "python$version" "python$version-minimal" "libpython$version" \
        "libpython$version-minimal" "libpython$version-stdlib" "libpython$version-dev" \
        "python$version-dev" libc6 libexpat1 libffi8 liblzma5 libzstd1 libssl3t64 libsqlite3-0 \
        libuuid1 zlib1g libbz2-1.0 libmpdec4 libncursesw6 libtinfo6 libreadline8t64 libgcc-s1 >&2)
    rm -rf "$prefix"
    mkdir -p "$prefix"
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
    libdir=$prefix/usr/lib/x86_64-linux-gnu
    patchelf --force-rpath --set-interpreter "$libdir/ld-linux-x86-64.so.2" --set-rpath "$libdir" \
        "$python"
    "$python" -c 'import ssl, sqlite3, ctypes' >&2
fi
echo "$python"
