#!/usr/bin/env bash
# Copy the pinned NiiVue release into xaimed/report/assets/niivue/, with its licence and the
# licences of the packages bundled into it. Run at release time (needs npm and the npm
# registry); the result is committed, so installing xaimed never needs npm or the network.
#
# The UMD build is used: it is a classic script, which browsers run from file:// pages, where
# ES modules are refused (they are fetched with CORS, which file:// does not allow).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${NIIVUE_VERSION:-0.69.0}
DEST=xaimed/report/assets/niivue
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
  --ignore-scripts "@niivue/niivue@$VERSION")
PKG="$WORK/node_modules/@niivue/niivue"
test "$(node -p "require('$PKG/package.json').version")" = "$VERSION"

mkdir -p "$DEST"
cp "$PKG/dist/niivue.umd.js" "$DEST/niivue.umd.js"
# The npm package carries no LICENSE file; its package.json declares BSD-2-Clause by "niivue
# authors". Write that licence's standard text with that holder.
LICENSE_ID=$(node -p "require('$PKG/package.json').license")
test "$LICENSE_ID" = "BSD-2-Clause"
cat > "$DEST/LICENSE" <<'TEXT'
NiiVue (https://github.com/niivue/niivue), redistributed unmodified as niivue.umd.js.
License: BSD-2-Clause (as declared by the package's package.json)

Copyright (c) niivue authors
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of
   conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials provided
   with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT
OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
TEXT

# The UMD build bundles NiiVue's dependencies: list each with its licence text.
{
  echo "Packages bundled into niivue.umd.js (@niivue/niivue $VERSION dependencies), with their licences."
  for dep in $(node -p "Object.keys(require('$PKG/package.json').dependencies || {}).join(' ')"); do
    dir="$WORK/node_modules/$dep"
    [ -d "$dir" ] || continue
    echo
    echo "================================================================================"
    echo "$dep $(node -p "require('$dir/package.json').version") ($(node -p "JSON.stringify(require('$dir/package.json').license || '')"))"
    echo "================================================================================"
    for f in "$dir"/LICEN[CS]E* "$dir"/licen[cs]e* "$dir"/COPYING*; do
      [ -f "$f" ] && cat "$f"
    done
  done
} > "$DEST/THIRD-PARTY-LICENSES"
echo "$VERSION" > "$DEST/VERSION"
echo "NiiVue $VERSION copied to $DEST"
