#!/bin/sh
# Regenerate the real Postfix outputs beside each table (needs postmap/postalias 3.7 installed).
# Each case: table (or aliases), keys (one per line); outputs: *.stdout, *.stderr, *.rc.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# OUT=DIR writes the outputs there instead (tests run this script with Postern first in PATH).
out=${OUT:-$here}
cf=$(mktemp -d); : > "$cf/main.cf"
run() { # case out-prefix command...
  c=$1; p=$2; shift 2
  mkdir -p "$out/$c"; w=$(mktemp -d); cp "$here/$c"/table "$here/$c"/aliases "$w/" 2>/dev/null
  (cd "$w" && "$@" >"$out/$c/$p.stdout" 2>"$out/$c/$p.stderr"; echo $? >"$out/$c/$p.rc")
  rm -rf "$w"
}
run postmap-basic build sh -c "postmap -c $cf lmdb:table && postmap -c $cf -s lmdb:table"
run postmap-basic query sh -c "postmap -c $cf lmdb:table 2>/dev/null; printf 'k1\nK2\nnope\n\"quoted key\"\n' | postmap -c $cf -q - lmdb:table"
run postmap-basic miss sh -c "postmap -c $cf lmdb:table 2>/dev/null; postmap -c $cf -q nope lmdb:table"
for c in regexp pcre; do
  run $c query sh -c "for k in joe@example.com foo abc Cx uy q; do postmap -c $cf -q \$k $c:table 2>/dev/null; echo \"rc=\$?\"; done; postmap -c $cf -q zzz $c:table"
done
run cidr query sh -c "for k in 192.168.1.7 10.0.0.1 10.0.0.2 11.1.1.1 2001:db8::1 ::1 junk; do postmap -c $cf -q \$k cidr:table 2>/dev/null; echo \"rc=\$?\"; done; postmap -c $cf -q 1.1.1.1 cidr:table"
run postalias build sh -c "postalias -c $cf lmdb:aliases && postalias -c $cf -s lmdb:aliases | grep -v '^YP_'"
run postmap-dups build sh -c "postmap -c $cf lmdb:table; postmap -c $cf -s lmdb:table; postmap -c $cf -r lmdb:table; postmap -c $cf -s lmdb:table; postmap -c $cf -w lmdb:table; postmap -c $cf -s lmdb:table"
run postmap-dups incremental sh -c "postmap -c $cf lmdb:table 2>/dev/null; printf 'k2 new\\nk9 v9\\nbad\\n  cont\\nK9 again\\nnovalue\\n' | postmap -c $cf -i lmdb:table; echo rc=\$?; postmap -c $cf -s lmdb:table; printf 'k9 r\\nk2 r2\\n' | postmap -c $cf -i -r lmdb:table; postmap -c $cf -s lmdb:table; printf 'new x\\n' | postmap -c $cf -i lmdb:fresh; echo rc=\$?; postmap -c $cf -s lmdb:fresh"
run postalias-incremental build sh -c "postalias -c $cf lmdb:aliases; printf 'a2: other\\nbad\\nnew: a1\\n' | postalias -c $cf -i lmdb:aliases; echo rc=\$?; postalias -c $cf -s lmdb:aliases | grep -v '^YP_'"
rm -rf "$cf"
