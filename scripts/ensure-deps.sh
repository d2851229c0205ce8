#!/usr/bin/env bash
# Installs what building Sundial needs from the system, when it is missing:
# libclang (bindgen for librocksdb-sys), a C++ compiler, and iproute2 and
# iptables for the chaos suite. protoc is vendored
# through the protoc-bin-vendored crate, so it is not needed here.
set -euo pipefail

missing=()
# Match libclang itself: libclang-cpp (installed with some LLVM packages) is a
# different library and does not satisfy bindgen.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 \
  && ! ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
  missing+=(libclang-dev)
fi
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# The chaos suite (chaos-tests/) puts each node in a network namespace
# (iproute2) and cuts links with iptables.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)

if (( ${#missing[@]} )); then
  echo "ensure-deps: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
