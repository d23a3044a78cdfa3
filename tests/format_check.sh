#!/bin/sh
# Every C++ file under version control is formatted as .clang-format says
# (clang-format 14, Debian's). Fix with:
#   git ls-files '*.cc' '*.h' | xargs clang-format -i
cd "$(dirname "$0")/.." || exit 1
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "not a git checkout: skipped"
  exit 77
fi
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror
