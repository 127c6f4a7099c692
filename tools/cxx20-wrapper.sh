#!/usr/bin/env bash
# Compiler wrapper for building mmcv 2.1.0's C++ ops against torch >= 2.10.
# mmcv's setup.py hard-codes -std=c++14/-std=c++17, but torch >= 2.10 headers need C++20.
# This wrapper rewrites those flags and forwards everything else to the real compiler.
real="${ATTMASK_REAL_CXX:-g++}"
args=()
for a in "$@"; do
  case "$a" in
    -std=c++14|-std=c++17|-std=gnu++14|-std=gnu++17) args+=("-std=c++20") ;;
    *) args+=("$a") ;;
  esac
done
exec "$real" "${args[@]}"
