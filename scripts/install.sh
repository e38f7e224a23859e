#!/usr/bin/env bash
# Install advgui from this checkout (editable), plus, on Debian/Ubuntu, the system libraries Qt needs
# when they are missing (a desktop has them; containers and CI machines often don't).
#   bash scripts/install.sh          the app
#   bash scripts/install.sh --test   the app, the test tools (pytest, pytest-qt, scikit-learn, Jinja2, pyrage) and
#                                    the optional 'models' (timm, transformers, ONNX), 'explain' (Captum,
#                                    matplotlib) and 'cluster' (Ray) extras, so the tests of those features run too
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
case "${1:-}" in
  --test) extras="[test,models,explain,cluster]" ;;
  --bench) extras="[test,bench,models,explain,cluster]" ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--test|--bench]" >&2; exit 2 ;;
esac

if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1; then
  # library -> Debian package; the first group is enough for offscreen use, the rest for a real window
  declare -A pkg=(
    [libGL.so.1]=libgl1 [libEGL.so.1]=libegl1 [libfontconfig.so.1]=libfontconfig1
    [libxkbcommon.so.0]=libxkbcommon0 [libdbus-1.so.3]=libdbus-1-3 [libglib-2.0.so.0]=libglib2.0-0
    [libxkbcommon-x11.so.0]=libxkbcommon-x11-0 [libxcb-cursor.so.0]=libxcb-cursor0
    [libxcb-icccm.so.4]=libxcb-icccm4 [libxcb-keysyms.so.1]=libxcb-keysyms1 [libxcb-shape.so.0]=libxcb-shape0
  )
  missing=()
  cache=$(ldconfig -p 2>/dev/null || true)
  for lib in "${!pkg[@]}"; do
    grep -q "$lib" <<<"$cache" || missing+=("${pkg[$lib]}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
      echo "install.sh: installing Qt's system libraries: ${missing[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "install.sh: Qt needs these system packages; ask an administrator to run:" >&2
      echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
    fi
  fi
fi

python3 -m pip install --disable-pip-version-check -q -e ".${extras}"
echo "install.sh: advgui installed ($(python3 -c 'import advgui; print(advgui.__version__)'))"
