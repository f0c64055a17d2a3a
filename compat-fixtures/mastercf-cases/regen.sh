#!/bin/sh
# Record what the real Postfix 3.7 `postconf` does for each case in this directory.
# Each case: master.cf, optional main.cf (empty when absent), cmd (postconf arguments, one
# per line, without -c). Outputs: out, err, rc and, when master.cf changed, master.cf.after.
# The scratch config directory is written as @DIR@ in out/err.
set -e
cd "$(dirname "$0")"
for c in */; do
  c=${c%/}
  s=/tmp/postern-mastercf-case/$c
  rm -rf "$s"; mkdir -p "$s"
  [ -f "$c/master.cf" ] && cp "$c/master.cf" "$s/master.cf"
  if [ -f "$c/main.cf" ]; then cp "$c/main.cf" "$s/main.cf"; else : > "$s/main.cf"; fi
  set --
  while IFS= read -r a; do set -- "$@" "$a"; done < "$c/cmd"
  rc=0
  LANG=C postconf -c "$s" "$@" > "$c/out" 2> "$c/err" || rc=$?
  echo "$rc" > "$c/rc"
  sed -i "s#$s#@DIR@#g" "$c/out" "$c/err"
  rm -f "$c/master.cf.after"
  if [ -f "$c/master.cf" ] && ! cmp -s "$c/master.cf" "$s/master.cf"; then
    cp "$s/master.cf" "$c/master.cf.after"
  fi
done
