#!/bin/sh
# Regenerates the image's lock files from pyproject.toml, with uv (pip install uv):
#   deploy/requirements.lock        the runtime dependencies ([project] dependencies), every
#                                   platform's wheels hashed (--universal: amd64 and arm64 hosts);
#   deploy/build-requirements.lock  what builds the wheel ([build-system] requires).
# Run after changing either list; tests/project/test_lock.py fails until the locks match it again.
# Add --upgrade to move every pin to the newest allowed version.
set -eu
cd "$(dirname "$0")/.."
common="--python-version 3.11 --generate-hashes --quiet --custom-compile-command deploy/lock.sh"
# shellcheck disable=SC2086
uv pip compile pyproject.toml --universal $common "$@" -o deploy/requirements.lock
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
    | uv pip compile - $common "$@" -o deploy/build-requirements.lock
