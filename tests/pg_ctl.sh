#!/usr/bin/env bash
# pg_ctl for the tests' PostgreSQL server (pytest-postgresql runs it). PostgreSQL will not run
# as root, so under root this hands the data directory (and the folder holding it and the
# log) to the postgres user, lets that user reach them, and runs pg_ctl as postgres.
set -euo pipefail

find_bindir() {
    local dir
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $dir && -x $dir/pg_ctl ]]; then
        echo "$dir"
        return
    fi
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null \
        | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/pg_ctl ]]; then
        echo "$dir"
        return
    fi
    dir=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
    if [[ -x $dir/pg_ctl ]]; then
        echo "$dir"
        return
    fi
    echo "pg_ctl.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 127
}

pg_ctl="$(find_bindir)/pg_ctl"
if [[ $(id -u) -ne 0 ]]; then
    exec "$pg_ctl" "$@"
fi

# the folders pg_ctl writes in: the data directory's parent and the log file's
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    -D | --pgdata | -l | --log)
        path=${args[i + 1]:-}
        [[ -n $path ]] || continue
        folder=$(dirname "$path")
        mkdir -p "$folder"
        chown postgres: "$folder"
        [[ -e $path ]] && chown -R postgres: "$path"
        # postgres must pass through the folders above (search only, no listing)
        up=$(dirname "$folder")
        while [[ $up != / ]]; do
            chmod o+x "$up"
            up=$(dirname "$up")
        done
        ;;
    esac
done
exec runuser -u postgres -- "$pg_ctl" "${args[@]}"
