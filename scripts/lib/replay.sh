# The scratch root the replays run in (sourced, bash), and what their transcripts are made
# of: scripts/guide-replay and scripts/swap-replay set REPLAY_NAME (the script's name),
# REPLAY_TAG (the temp directory's), WORK (their files in the scratch root) and optionally
# REPLAY_TOOLS (more commands the host must have) and REPLAY_EXTRA_BIN (programs copied
# into the scratch root's /usr/sbin), define root_stage, and end with replay_main "$@".
#
# Stage 1 (host_stage, on the host): checks, a temp directory, stage 2 in new private
# mount, network, pid, UTS and IPC namespaces; when it returns, nothing of the scratch
# root may be left on the host (step host-clean). Stage 2 (namespace_stage): a tmpfs on
# the temp directory, an overlay over / on it, fresh /proc, /sys, /dev, /tmp and /run, the
# network (loopback, the box's address $BOX_ADDR on a veth whose other end is a second
# namespace for the roaming client $CLIENT_ADDR), the sources and binary copied to $SRC,
# then chroot into stage 3 (root_stage). Everything stage 2 made goes with the namespace.
#
# Stage 3's transcript: `section`, `step` (remembers where the syslog is), `run` (shows a
# command as typed and what it printed), `pass`/`fail`/`skip ID TEXT` (one line
# "[PASS] ID — TEXT" per step, which the tests read; a failure shows the syslog lines
# written since the step began).

REPLAY_USER=alice
REPLAY_PASS='Tr0ub4dor&3'
BOX_ADDR=198.51.100.1
CLIENT_ADDR=198.51.100.2
SINK_PORT=2525
SRC=/usr/local/src/postern # where the sources sit inside the scratch root
PY=/usr/bin/python3        # Debian's python, with python3-aiosmtpd

die() {
	echo "$REPLAY_NAME: $*" >&2
	exit 2
}

# ---------------------------------------------------------------------------------------
# Stage 1, on the host: check, make the temp directory, run stage 2 in new namespaces.
host_stage() {
	local binary="" verbose=0 then=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--binary) binary=${2:-}; shift 2 || die "--binary needs a path" ;;
		--verbose) verbose=1; shift ;;
		--then) then=${2:-}; shift 2 || die "--then needs commands" ;;
		-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
		*) die "unknown option: $1" ;;
		esac
	done
	if [ "$(id -u)" != 0 ]; then
		echo "$REPLAY_NAME: skipped: must run as root (namespaces, chroot, useradd)" >&2
		exit 77
	fi
	local repo
	repo=$(cd "$(dirname "$0")/.." && pwd) || die "cannot find the repository"
	[ -n "$binary" ] || binary=$repo/target/release/postern
	[ -x "$binary" ] || die "no postern binary at $binary (cargo build --release)"
	binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
	local t
	for t in unshare chroot ip nsenter mount dpkg-reconfigure debconf-set-selections useradd chpasswd ${REPLAY_TOOLS:-}; do
		command -v "$t" >/dev/null || die "$t not found (.ci/run installs what the replays need)"
	done
	for t in /usr/lib/postfix/sbin/master /usr/sbin/dovecot /usr/sbin/saslauthd "$PY"; do
		[ -x "$t" ] || die "$t not found: install the packages .ci/run installs"
	done
	"$PY" -c 'import aiosmtpd' 2>/dev/null || die "python3-aiosmtpd is not installed (.ci/run installs it)"

	local tmp
	tmp=$(mktemp -d /tmp/postern-$REPLAY_TAG.XXXXXX) || die "mktemp failed"
	echo "scratch: $tmp (overlay over /, private mount, network, pid and UTS namespaces)"
	local pid=""
	# A signal stops the namespace: unshare ignores SIGINT and SIGTERM while it waits, so it
	# is killed; --kill-child takes its first process with it, and the kernel the rest of
	# the namespace. Then the (empty, on the host) temp directory goes.
	trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"; exit 130' INT TERM HUP
	unshare --mount --propagation private --net --pid --uts --ipc --fork --kill-child --mount-proc \
		/bin/bash "$0" --in-namespace "$tmp" "$repo" "$binary" "$verbose" "$then" &
	pid=$!
	wait "$pid"
	local rc=$?
	pid=""
	# The overlay and tmpfs lived in the private mount namespace only: the host sees the
	# empty directory. Anything else is a leak. The namespace's processes die with its
	# first one (SIGKILL from the kernel): give them a moment.
	local left="" n=50 p
	while [ $n -gt 0 ]; do
		left=""
		for p in /proc/[0-9]*; do
			case "$(readlink "$p/root" 2>/dev/null)" in
			"$tmp"/*) left="$left ${p#/proc/}" ;;
			esac
		done
		[ -z "$left" ] && break
		sleep 0.1
		n=$((n - 1))
	done
	if [ -n "$left" ]; then
		echo "[FAIL] host-clean — processes left in the scratch root:$left"
		rc=1
	elif grep -qF "$tmp" /proc/self/mountinfo; then
		echo "[FAIL] host-clean — mounts left on the host:"
		grep -F "$tmp" /proc/self/mountinfo | sed 's/^/    /'
		rc=1
	elif [ -n "$(ls -A "$tmp" 2>/dev/null)" ]; then
		echo "[FAIL] host-clean — files left in $tmp on the host:"
		ls -la "$tmp" | sed 's/^/    /'
		rc=1
	else
		echo "[PASS] host-clean — no mount, process or file of the scratch root left on the host"
	fi
	rm -rf "$tmp"
	exit $rc
}

# ---------------------------------------------------------------------------------------
# Stage 2, first process of the new namespaces: build the scratch root, the network, then
# chroot into stage 3. Everything here disappears with the namespace.
namespace_stage() {
	local tmp=$1 repo=$2 binary=$3 verbose=$4 then=$5
	trap 'die "setting up the scratch root failed: line $LINENO: $BASH_COMMAND"' ERR
	set -e
	mount -t tmpfs -o mode=0700 "postern-$REPLAY_TAG" "$tmp"
	mkdir "$tmp/upper" "$tmp/work" "$tmp/root"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/upper,workdir=$tmp/work" "$tmp/root"
	local r=$tmp/root
	# The overlay shows the root file system only, not what is mounted on it.
	local f
	for f in /etc/passwd /etc/postfix/master.cf /usr/lib/postfix/sbin/master /var/lib/dpkg/status; do
		[ -e "$r$f" ] || die "$f is not on the root file system (a separate mount?): the scratch root, an overlay over /, would not have it"
	done
	mount -t proc proc "$r/proc"
	mount -t sysfs sysfs "$r/sys"
	mount -t tmpfs -o mode=0755,nosuid dev "$r/dev"
	local d
	for d in null zero full random urandom tty; do
		touch "$r/dev/$d"
		mount --bind "/dev/$d" "$r/dev/$d"
	done
	mkdir -m 755 "$r/dev/pts"
	mkdir -m 1777 "$r/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"
	ln -s pts/ptmx "$r/dev/ptmx"
	ln -s /proc/self/fd "$r/dev/fd"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp"
	# /run as on any box (a tmpfs; here the host's may be one, or a plain directory): the
	# same start on every host.
	mount -t tmpfs -o mode=0755,nosuid,nodev run "$r/run"
	mkdir -m 1777 "$r/run/lock"

	# The machine: its name, loopback, its address on a link to the roaming client.
	hostname master
	ip link set lo up
	unshare --net sleep infinity &
	local client=$! n=50
	while [ "$(readlink /proc/$client/ns/net)" = "$(readlink /proc/self/ns/net)" ] && [ $n -gt 0 ]; do
		sleep 0.1
		n=$((n - 1))
	done
	ip link add veth0 type veth peer name veth1
	ip link set veth1 netns "$client"
	ip addr add "$BOX_ADDR" peer "$CLIENT_ADDR" dev veth0
	ip link set veth0 up
	nsenter -t "$client" -n ip link set lo up
	nsenter -t "$client" -n ip addr add "$CLIENT_ADDR" peer "$BOX_ADDR" dev veth1
	nsenter -t "$client" -n ip link set veth1 up

	# The sources as an admin would unpack them, and the binary built from them.
	mkdir -p "$r$SRC/target/release" "$r$SRC/compat-fixtures/dovecot/f7-1.0-fedora"
	cp -a "$repo/scripts" "$repo/man" "$r$SRC/"
	cp "$repo/compat-fixtures/dovecot/f7-1.0-fedora/dovecot.conf" \
		"$r$SRC/compat-fixtures/dovecot/f7-1.0-fedora/"
	cp "$binary" "$r$SRC/target/release/postern"
	# Commands a replay brings along (REPLAY_EXTRA_BIN: paths), into the box's /usr/sbin.
	for f in ${REPLAY_EXTRA_BIN:-}; do
		cp "$f" "$r/usr/sbin/"
	done
	set +e
	trap - ERR

	chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb SHELL=/bin/bash USER=root LOGNAME=root \
		REPLAY_CLIENT_PID="$client" REPLAY_VERBOSE="$verbose" REPLAY_THEN="$then" \
		/bin/bash "$SRC/scripts/$REPLAY_NAME" --in-root
	exit $?
}


# ---------------------------------------------------------------------------------------
# Stage 3, inside the scratch root: the box, the guide, the checks.

FAILED=0
PASSED=0
SKIPPED=0
LOG=/var/log/syslog
LOGMARK=0
OUT=/tmp/$REPLAY_NAME.out

section() { printf '\n== %s\n' "$*"; }
note() { printf '   (%s)\n' "$*"; }

# Words as a shell would need them typed.
shquote() {
	local w out=""
	for w in "$@"; do
		case "$w" in
		'' | *[!A-Za-z0-9_./:=,@%+-]*) out="$out '${w//\'/\'\\\'\'}'" ;;
		*) out="$out $w" ;;
		esac
	done
	printf '%s' "${out# }"
}

# run CMD…: show it as typed at the root prompt, run it, show what it printed and its
# exit status if not 0. Returns the status; the output stays in $OUT.
run() {
	printf '# %s\n' "$(shquote "$@")"
	"$@" >"$OUT" 2>&1 </dev/null
	local rc=$?
	sed 's/^/    /' "$OUT"
	[ $rc -eq 0 ] || printf '    (exit %d)\n' $rc
	return $rc
}

# Start a step: remember where the syslog is, so a failure shows what was logged.
step() {
	LOGMARK=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
	printf '\n-- %s\n' "$*"
}

pass() {
	local id=$1
	shift
	PASSED=$((PASSED + 1))
	printf '[PASS] %s — %s\n' "$id" "$*"
}

skip() {
	local id=$1
	shift
	SKIPPED=$((SKIPPED + 1))
	printf '[SKIP] %s — %s\n' "$id" "$*"
}

# fail ID TEXT: the step failed; show the syslog lines written since the step began.
fail() {
	local id=$1
	shift
	FAILED=$((FAILED + 1))
	printf '[FAIL] %s — %s\n' "$id" "$*"
	sleep 0.2 # let the daemons' last datagrams reach the log
	if [ -s "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt "$LOGMARK" ]; then
		echo "    syslog since the step began:"
		tail -c +"$((LOGMARK + 1))" "$LOG" | sed 's/^/    log: /'
	else
		echo "    (nothing in the syslog since the step began)"
	fi
}

# check ID TEXT CMD…: run CMD (shown), pass if it exits 0 (an init script's verdict: its
# words depend on the function library it finds, Fedora's, LSB's or none).
check() {
	local id=$1 text=$2 rc
	shift 2
	run "$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		pass "$id" "$text: exit 0: $(tr -s ' \n' ' ' <"$OUT")"
	else
		fail "$id" "$text: exit $rc: $(tr -s ' \n' ' ' <"$OUT")"
	fi
}

# The dialogue client: a telnet at the keyboard, as the guide uses it.
chat() { "$PY" "$WORK/chat.py" "$@"; }
# The same from the roaming client's address.
chat_foreign() { nsenter -t "$REPLAY_CLIENT_PID" -n "$PY" "$WORK/chat.py" "$@"; }


logged() {
	local g missing n=30
	while :; do
		missing=()
		for g in "$@"; do
			tail -c +"$((LOGMARK + 1))" "$LOG" | {
				while IFS= read -r line; do
					# shellcheck disable=SC2053 # $g is a pattern
					[[ $line == $g ]] && exit 0
				done
				exit 1
			} || missing+=("$g")
		done
		[ ${#missing[@]} -eq 0 ] && return 0
		n=$((n - 1))
		[ $n -gt 0 ] || break
		sleep 0.1
	done
	for g in "${missing[@]}"; do
		echo "    !! not in the syslog: $g"
	done
	return 1
}

# wait_for SECONDS CMD…: poll until CMD succeeds.
wait_for() {
	local n=$(($1 * 10))
	shift
	while [ $n -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# processes_of EXE: the processes running EXE, as "PID COMMAND LINE" lines.
processes_of() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case "$exe" in
		"$1" | "$1 (deleted)") printf '%s %s\n' "${p#/proc/}" "$(tr '\0' ' ' <"$p/cmdline")" ;;
		esac
	done
}
postern_processes() { processes_of /usr/sbin/postern; }

write_helpers() {
	mkdir -p "$WORK"
	# chat.py: one SMTP/POP3/IMAP dialogue, printed as S:/C: lines.
	cat >"$WORK/chat.py" <<'PYEOF'
"""chat.py HOST PORT STEP...: a telnet-style dialogue, printed line by line.

STEP is one of
  C:TEXT   send TEXT and CRLF (printed as C: TEXT)
  S:GLOB   read one line; it must match GLOB (fnmatch, case-sensitive: [*] for a star)
  U:GLOB   read lines until one matches GLOB (all printed)
  F:GLOB   one of the lines read by the last U matches GLOB
Exit 0 when every expectation held, 1 when one did not (the rest is not sent), 3 when
the connection was refused, 4 on another connection error or a timeout.
"""
import fnmatch
import socket
import sys

host, port, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
try:
    sock = socket.create_connection((host, port), timeout=10)
except ConnectionRefusedError as e:
    print(f"    !! connect {host}:{port}: {e.strerror}")
    sys.exit(3)
except OSError as e:
    print(f"    !! connect {host}:{port}: {e}")
    sys.exit(4)
sock.settimeout(15)
rf = sock.makefile("rb")


def readline():
    try:
        raw = rf.readline(100000)
    except (socket.timeout, OSError) as e:
        print(f"    !! read: {e or 'timeout'}")
        sys.exit(4)
    if not raw:
        print("    !! the server closed the connection")
        sys.exit(1)
    line = raw.decode("utf-8", "replace").rstrip("\r\n")
    print(f"    S: {line}")
    return line


block = []
for st in steps:
    kind, arg = st[:2], st[2:]
    if kind == "C:":
        print(f"    C: {arg}")
        sock.sendall(arg.encode() + b"\r\n")
    elif kind == "S:":
        line = readline()
        if not fnmatch.fnmatchcase(line, arg):
            print(f"    !! expected: {arg}")
            sys.exit(1)
    elif kind == "U:":
        block = []
        while True:
            line = readline()
            block.append(line)
            if fnmatch.fnmatchcase(line, arg):
                break
    elif kind == "F:":
        if not any(fnmatch.fnmatchcase(l, arg) for l in block):
            print(f"    !! no line matched: {arg}")
            sys.exit(1)
    else:
        print(f"    !! bad step: {st}")
        sys.exit(2)
sock.close()
PYEOF
	# syslogd.py: the box's syslog daemon (/dev/log, datagrams), to one file, each line
	# with the host name after the time stamp as rsyslog writes it.
	cat >"$WORK/syslogd.py" <<'PYEOF'
import os
import socket
import sys

path, out = sys.argv[1], sys.argv[2]
host = socket.gethostname().split(".")[0].encode()
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(out, "ab", buffering=0) as f:
    while True:
        d = s.recv(65536).rstrip(b"\n\0")
        if d.startswith(b"<") and b">" in d[:5]:
            d = d[d.index(b">") + 1:]
        if len(d) > 16 and d[15:16] == b" ":
            d = d[:16] + host + b" " + d[16:]
        f.write(d + b"\n")
PYEOF
	write_listing
}

# listing.py (written by write_helpers): the mailbox as POP3 and IMAP show it, one line
# per message.
write_listing() {
	cat >"$WORK/listing.py" <<'PYEOF'
"""listing.py pop3|imap|flag USER PASS [N FLAG]

pop3: "N UIDL" for each message (UIDL, nothing else: RETR and TOP may set \\Seen).
imap: "UIDVALIDITY V" then "UID U FLAGS (...) Message-ID" for each message, read with
      EXAMINE and BODY.PEEK (nothing changes; \\Recent, a property of the session, is
      left out).
flag: STORE N +FLAGS (FLAG) in INBOX.
Exit 3 when nothing listens on the port.
"""
import imaplib
import poplib
import re
import socket
import sys

mode, user, pw = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    if mode == "pop3":
        p = poplib.POP3("127.0.0.1", 110, timeout=10)
        p.user(user)
        p.pass_(pw)
        for line in p.uidl()[1]:
            print(line.decode())
        p.quit()
    else:
        m = imaplib.IMAP4("127.0.0.1", 143, timeout=10)
        m.login(user, pw)
        if mode == "flag":
            m.select("INBOX")
            typ, _ = m.store(sys.argv[4], "+FLAGS", "(%s)" % sys.argv[5])
            print("STORE", typ)
        else:
            typ, data = m.select("INBOX", readonly=True)
            v = m.response("UIDVALIDITY")[1][0].decode()
            print("UIDVALIDITY", v)
            typ, data = m.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for item in data:
                if not isinstance(item, tuple):
                    continue
                head = item[0].decode()
                uid = re.search(r"UID (\d+)", head).group(1)
                flags = re.search(r"FLAGS \(([^)]*)\)", head)
                flags = " ".join(sorted(f for f in (flags.group(1).split() if flags else []) if f != "\\Recent"))
                mid = item[1].decode().strip().split(None, 1)[-1]
                print(f"UID {uid} FLAGS ({flags}) {mid}")
        m.logout()
except ConnectionRefusedError:
    sys.exit(3)
except (OSError, imaplib.IMAP4.error, poplib.error_proto) as e:
    print("error:", e)
    sys.exit(1)
PYEOF
}

# listing MODE FILE: the listing, shown and kept in FILE; fails as listing.py does.
listing() {
	printf '# python3 listing.py %s %s …\n' "$1" "$REPLAY_USER"
	"$PY" "$WORK/listing.py" "$1" "$REPLAY_USER" "$REPLAY_PASS" >"$2" 2>&1
	local rc=$?
	sed 's/^/    /' "$2"
	return $rc
}

# deferred ID: the message with Message-ID <ID@…> waits in the deferred queue, with the
# refused connection as its reason in mailq.
deferred() {
	grep -rqs -e "$1" /var/spool/postfix/deferred &&
		mailq 2>/dev/null | grep -q 'Connection refused'
}

# sink_start: the loopback SMTP sink standing for the remote MTA (127.0.0.1:$SINK_PORT, a
# Maildir in $WORK/sink); sink_stop stops it.
sink_start() {
	mkdir -p "$WORK/sink/tmp" "$WORK/sink/new" "$WORK/sink/cur"
	"$PY" -m aiosmtpd -n -l "127.0.0.1:$SINK_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/sink" \
		>>"$WORK/sink.log" 2>&1 &
	SINK_PID=$!
	wait_for 10 "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $SINK_PORT), 1).close()" 2>/dev/null
}

sink_stop() {
	kill "$SINK_PID" 2>/dev/null
	wait "$SINK_PID" 2>/dev/null
}

# box_debian WHEN: the scratch root made into "a Debian box set up for Postfix, Dovecot and
# saslauthd": its host name and address as the installer writes them, a syslog daemon on
# /dev/log (into $LOG), /run holding what the packages' installation left there, Postfix
# configured by its package as "Internet Site" for master.planetnet.net (steps
# box-postfix; Debian's main.cf kept as $WORK/main.cf.debian), and a mail user
# $REPLAY_USER with a password (box-user).
box_debian() {
	section "The box: Debian 12 with postfix, dovecot and sasl2-bin, $1"
	note "the host name and address, as the installer writes them"
	echo master >/etc/hostname
	printf '127.0.1.1\tmaster.planetnet.net master\n' >>/etc/hosts
	# A syslog daemon: everything Postern, saslauthd and dovecot log lands in $LOG.
	rm -f /dev/log
	"$PY" "$WORK/syslogd.py" /dev/log "$LOG" &
	wait_for 5 test -S /dev/log || echo "    (no /dev/log: the syslog stays empty)"
	# /run is empty: put back what the packages' installation left there, their
	# dpkg-statoverride run directories (sasl2-bin: /var/run/saslauthd root:sasl 0710).
	local u g m d
	while read -r u g m d; do
		case "$d" in
		/run/* | /var/run/*)
			mkdir -p "$d" && chown "$u:$g" "$d" && chmod "$m" "$d"
			note "$(ls -ld "$d")"
			;;
		esac
	done < <(dpkg-statoverride --list)
	# No pid file of a service of the host counts: nothing runs in the scratch root yet.
	rm -f /var/spool/postfix/pid/master.pid /var/lib/postfix/master.lock

	step "Postfix as its package configures it: Internet Site, master.planetnet.net"
	local policy=/usr/sbin/policy-rc.d
	printf '#!/bin/sh\nexit 101\n' >$policy
	chmod 755 $policy
	rm -f /etc/postfix/main.cf
	printf '%s\n' "postfix postfix/main_mailer_type select Internet Site" \
		"postfix postfix/mailname string master.planetnet.net" | debconf-set-selections
	if DEBIAN_FRONTEND=noninteractive run dpkg-reconfigure -f noninteractive postfix &&
		[ -f /etc/postfix/main.cf ]; then
		pass box-postfix "Debian's main.cf: $(grep -E '^(myhostname|mynetworks|smtpd_relay_restrictions) ' /etc/postfix/main.cf | paste -sd';' -)"
	else
		fail box-postfix "dpkg-reconfigure postfix did not write /etc/postfix/main.cf"
	fi
	rm -f $policy
	cp /etc/postfix/main.cf "$WORK/main.cf.debian"

	step "A mail user with a password"
	id "$REPLAY_USER" >/dev/null 2>&1 || run useradd -m -s /bin/bash "$REPLAY_USER"
	printf '# echo %s | chpasswd\n' "$(shquote "$REPLAY_USER:$REPLAY_PASS")"
	if printf '%s:%s\n' "$REPLAY_USER" "$REPLAY_PASS" | chpasswd; then
		pass box-user "$(id "$REPLAY_USER")"
	else
		fail box-user "chpasswd failed"
	fi
}

# replay_main ARGS…: the stage this invocation is.
replay_main() {
	case "${1:-}" in
	--in-namespace)
		shift
		namespace_stage "$@"
		;;
	--in-root)
		root_stage
		;;
	*)
		host_stage "$@"
		;;
	esac
}
