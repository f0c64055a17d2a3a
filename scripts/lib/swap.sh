# Shared by scripts/swap-in and scripts/swap-out (sourced, bash): how this box starts,
# stops and enables services, which lookup tables its main.cf names, and the transcript
# both scripts print. Nothing here changes the box by itself.
#
# The services are the box's own names: postfix, dovecot, saslauthd; on Fedora the MTA is
# postern while Postern is swapped in (scripts/install, LAYOUTS). Each is driven the way
# the box drives it:
#   start/stop   `service NAME start|stop` (systemctl when systemd runs, else the init
#                script), else systemctl, else /etc/init.d/NAME
#   running      `systemctl is-active` when systemd runs, else the init script's status
#                (LSB: 0 is running)
#   at boot      systemctl is-enabled/enable/disable when systemctl is there (on Debian it
#                also keeps the SysV links in step through systemd-sysv-install; it works
#                on a box that is not booted with systemd too), else chkconfig (Fedora's
#                SysV era: --add, on, off), else update-rc.d (defaults, enable, disable)

SWAP_STATE_DIR=/var/lib/postern/swap
SWAP_STATE=$SWAP_STATE_DIR/state
INSTALL_RECORD=/var/lib/postern/install/record
DRY=${DRY:-no}
SWAP_FAILED=0

swap_die() {
	echo "$SWAP_PROG: $*" >&2
	exit 1
}

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

swap_step() { printf '\n== %s\n' "$*"; }
swap_note() { printf '   (%s)\n' "$*"; }

# act CMD…: a step that changes the box: shown as typed at the root prompt, run (not on
# --dry-run), its output indented; returns its status.
act() {
	printf '# %s\n' "$(shquote "$@")"
	[ "$DRY" = yes ] && return 0
	show_output "$@"
}

# look CMD…: a command that changes nothing (a check, or a --dry-run): shown and run,
# also on --dry-run.
look() {
	printf '# %s\n' "$(shquote "$@")"
	show_output "$@"
}

show_output() {
	# (into a file, not a pipe: a daemon started here may keep its stdout open for good)
	local out rc
	out=$(mktemp) || return 1
	"$@" >"$out" 2>&1 </dev/null
	rc=$?
	sed 's/^/    /' "$out"
	rm -f "$out"
	[ $rc -eq 0 ] || printf '    (exit %d)\n' $rc
	return $rc
}

# must CMD…: act, and a failure is remembered (the script exits 1 at the end).
must() {
	act "$@" || {
		SWAP_FAILED=1
		return 1
	}
}

systemd_running() { [ -d /run/systemd/system ]; }

# The init script of NAME, if the box has one.
init_script() {
	local d
	for d in /etc/rc.d/init.d /etc/init.d; do
		if [ -x "$d/$1" ]; then
			echo "$d/$1"
			return 0
		fi
	done
	return 1
}

unit_exists() {
	local d
	for d in /etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
		[ -e "$d/$1.service" ] && return 0
	done
	return 1
}

svc_exists() { init_script "$1" >/dev/null || unit_exists "$1"; }

svc_running() {
	if systemd_running; then
		systemctl is-active --quiet "$1.service"
	elif [ "$1" = postfix ] || [ "$1" = postern ]; then
		# (postfix status: Debian's init script says 0 when main.cf is missing)
		/usr/sbin/postfix status >/dev/null 2>&1 </dev/null
	elif init_script "$1" >/dev/null; then
		"$(init_script "$1")" status >/dev/null 2>&1 </dev/null
	else
		return 1
	fi
}

svc_enabled() {
	local s
	if command -v systemctl >/dev/null 2>&1; then
		s=$(systemctl is-enabled "$1.service" 2>/dev/null)
		case "$s" in enabled | enabled-runtime) return 0 ;; esac
		return 1
	elif command -v chkconfig >/dev/null 2>&1; then
		chkconfig --list "$1" 2>/dev/null | grep -q -E '[2345]:on'
	else
		ls /etc/rc[2345].d/S[0-9][0-9]"$1" >/dev/null 2>&1
	fi
}

svc_enable() {
	if command -v systemctl >/dev/null 2>&1; then
		must systemctl enable "$1.service"
	elif command -v chkconfig >/dev/null 2>&1; then
		must chkconfig --add "$1" && must chkconfig "$1" on
	elif command -v update-rc.d >/dev/null 2>&1; then
		must update-rc.d "$1" defaults && must update-rc.d "$1" enable
	else
		echo "   (no systemctl, chkconfig or update-rc.d: $1 not enabled at boot)"
	fi
}

svc_disable() {
	if command -v systemctl >/dev/null 2>&1; then
		must systemctl disable "$1.service"
	elif command -v chkconfig >/dev/null 2>&1; then
		must chkconfig "$1" off
	elif command -v update-rc.d >/dev/null 2>&1; then
		must update-rc.d "$1" disable
	fi
}

# svc_forget NAME: NAME's SysV boot links removed (its init script is about to go):
# systemctl disable leaves the K links of a SysV script.
svc_forget() {
	init_script "$1" >/dev/null || return 0
	if command -v chkconfig >/dev/null 2>&1; then
		must chkconfig --del "$1"
	elif command -v update-rc.d >/dev/null 2>&1; then
		must update-rc.d -f "$1" remove
	fi
}

# svc ACTION NAME: start or stop NAME as the box does.
svc() {
	if command -v service >/dev/null 2>&1; then
		act service "$2" "$1"
	elif systemd_running; then
		act systemctl "$1" "$2.service"
	elif init_script "$2" >/dev/null; then
		act "$(init_script "$2")" "$1"
	else
		echo "   (no way to $1 $2 on this box)"
		return 1
	fi
}

# The layout scripts/install will use (or used).
swap_layout() { "$SWAP_DIR/install" --print-layout; }

# map_list POSTCONF: the indexed lookup tables the configuration names and whose source
# file exists, one "postalias|postmap TYPE:FILE" per line: every hash:, btree:, lmdb:,
# cdb:, dbm:, sdbm: in `postconf -nx` (main.cf), `postconf -Px` (master.cf -o overrides)
# and the alias_maps/alias_database values (their defaults when main.cf does not set
# them), proxy: prefixes and all. A table named in alias_maps or alias_database is built
# with postalias, the others with postmap, as Postfix's own tools and newaliases do.
map_list() {
	local pc=$1 aliases tok file tool
	aliases=$("$pc" -hx alias_maps alias_database 2>/dev/null | tr ', \t' '\n\n\n')
	{
		"$pc" -nx 2>/dev/null
		"$pc" -Px 2>/dev/null
		"$pc" -x alias_maps alias_database 2>/dev/null
	} | grep -oE '(hash|btree|lmdb|cdb|dbm|sdbm):[^ ,}]+' | sort -u | while read -r tok; do
		file=${tok#*:}
		[ -f "$file" ] || continue
		tool=postmap
		printf '%s\n' "$aliases" | grep -qxF -e "$tok" -e "proxy:$tok" && tool=postalias
		echo "$tool $tok"
	done
}

# build_maps BINDIR POSTCONF: build each table of map_list with BINDIR's postalias/postmap.
build_maps() {
	local bindir=$1 pc=$2 tool tok n=0
	while read -r tool tok; do
		must "$bindir/$tool" "$tok"
		n=$((n + 1))
	done < <(map_list "$pc")
	[ $n -gt 0 ] || echo "   (no hash:, btree:, lmdb:, cdb:, dbm: or sdbm: table with a source file in the configuration)"
}

# The daemons' processes, as "PID COMMAND" lines: EXE's (a path) or Postern's.
processes_of() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case "$exe" in
		"$1" | "$1 (deleted)") printf '%s %s\n' "${p#/proc/}" "$(tr '\0' ' ' <"$p/cmdline")" ;;
		esac
	done
}

# wait_gone SECONDS EXE: until no process runs EXE.
wait_gone() {
	local n=$(($1 * 10))
	while [ $n -gt 0 ]; do
		[ -z "$(processes_of "$2")" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# queue_deviations POSTCONF: how queue_directory (and data_directory) differ from the
# owners and modes Postfix's postfix-files gives them (what `postfix set-permissions`
# would change there), one line each, at most 3 files per directory: a directory with
# the wrong owner, group or permission bits, or in a directory postfix-files marks
# recursive (r: active, deferred, defer, incoming, …) a file or directory mail_owner does
# not own. Nothing printed: the queue is as Postfix wants it.
queue_deviations() {
	local pc=$1 qd dd mo sg cd path type owner group mode flags st want
	qd=$("$pc" -h queue_directory) dd=$("$pc" -h data_directory)
	mo=$("$pc" -h mail_owner) sg=$("$pc" -h setgid_group) cd=$("$pc" -h config_directory)
	[ -f "$cd/postfix-files" ] || return 0
	grep -E '^\$(queue|data)_directory(/[^:]*)?:d:' "$cd/postfix-files" |
		while IFS=: read -r path type owner group mode flags; do
			path=${path/\$queue_directory/$qd}
			path=${path/\$data_directory/$dd}
			owner=${owner/\$mail_owner/$mo}
			group=${group/\$setgid_group/$sg}
			[ -d "$path" ] || continue
			st=$(stat -c '%U %G %a' "$path")
			want="$owner ${group/#-/*} $mode"
			# (the last three digits: a set-group-ID bit dpkg-statoverride adds is not a deviation)
			# (data_directory: the owner only; Debian's package makes it 0755)
			if [ "${st%% *}" != "$owner" ] || { [ "$group" != - ] && [ "$(echo "$st" | cut -d' ' -f2)" != "$group" ]; } ||
				{ [ "$path" != "$dd" ] && [ "$(printf '%03d' "$(echo "$st" | cut -d' ' -f3)" | tail -c 3)" != "$mode" ]; }; then
				echo "$path: $st (Postfix: $want)"
			fi
			case "$flags" in
			*r*)
				find "$path" -mindepth 1 ! -user "$owner" -printf '%p: %u %g %m (Postfix: owner '"$owner"')\n' 2>/dev/null | head -3
				;;
			esac
		done
}

# postfix_files_paths POSTCONF: the existing paths Postfix's postfix-files names outside
# queue_directory and data_directory (commands, daemons, configuration, man pages …),
# with its $name parameters expanded: what `postfix set-permissions` also changes.
postfix_files_paths() {
	local pc=$1 cd v path
	cd=$("$pc" -h config_directory)
	[ -f "$cd/postfix-files" ] || return 0
	local -a vars
	# (longest names first, so that no name is replaced inside a longer one)
	mapfile -t vars < <(grep -v '^#' "$cd/postfix-files" | cut -d: -f1 | grep -o '\$[a-z_]*' | tr -d '$' |
		sort -u | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2)
	local -A val
	for v in "${vars[@]}"; do
		val[$v]=$("$pc" -h "$v" 2>/dev/null)
	done
	grep -v '^#' "$cd/postfix-files" | cut -d: -f1 | grep -v -e '^\$queue_directory' -e '^\$data_directory' |
		while read -r path; do
			for v in "${vars[@]}"; do
				path=${path//\$$v/${val[$v]}}
			done
			[ -e "$path" ] && echo "$path"
		done | sort -u
}
