# bash completion for quiesce(8).
# Hand-written (clap_complete is not a dependency); tests/package.rs checks
# that every command and option of `quiesce --help` appears here.

# Files and directories: bash-completion's _filedir when loaded (it quotes
# and handles ~), else plain compgen, so the function works on its own.
_quiesce_files() {
    if declare -F _filedir >/dev/null; then
        _filedir "$@"
    elif [ "${1-}" = -d ]; then
        COMPREPLY=($(compgen -d -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}

_quiesce() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
    fi

    local commands="check pre post freeze snapshot thaw recover audit hook help"
    local global_opts="--config --apps-dir --host-config --extension-config --bridge --json -v --verbose --run-dir
        --state-dir --post-due --vmbackup-conf --policy --no-sandbox --syslog-socket --syslog-facility
        --trail --journal-socket --metrics-dir --workload-conf --takeover-dir
        --group --groups-dir --group-member --group-join -h --help"

    # Options that take a value: complete the value, not another option.
    case $prev in
        --config | --host-config | --extension-config | --vmbackup-conf | --policy | \
            --syslog-socket | --journal-socket | --workload-conf)
            _quiesce_files
            return
            ;;
        --run-dir | --mount | --state-dir | --metrics-dir | --apps-dir | --takeover-dir | --groups-dir)
            _quiesce_files -d
            return
            ;;
        --syslog-facility)
            COMPREPLY=($(compgen -W "authpriv auth daemon user local0 local1
                local2 local3 local4 local5 local6 local7" -- "$cur"))
            return
            ;;
        --trail)
            COMPREPLY=($(compgen -W "auto journal syslog both" -- "$cur"))
            return
            ;;
        --max-freeze | --post-due | --group | --group-member | --group-join)
            return
            ;;
        --hook)
            COMPREPLY=($(compgen -W "qemu-ga vmware gce aws-dlm" -- "$cur"))
            return
            ;;
    esac

    # The command, and whether a `--` (start of CMD) was already typed.
    local i command="" dashdash=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --config | --host-config | --extension-config | --vmbackup-conf | --policy | \
                --syslog-socket | --run-dir | --mount | --syslog-facility | \
                --trail | --journal-socket | --state-dir | --metrics-dir | \
                --apps-dir | --max-freeze | --post-due | --workload-conf | --hook | --takeover-dir | \
                --group | --groups-dir | --group-member | --group-join)
                ((i++))
                ;;
            --)
                dashdash=$i
                break
                ;;
            -*) ;;
            *)
                [ -z "$command" ] && command=${words[i]}
                ;;
        esac
    done

    # After `--`: the snapshot command and its arguments.
    if [ -n "$dashdash" ]; then
        if ((cword == dashdash + 1)); then
            COMPREPLY=($(compgen -c -- "$cur"))
        else
            _quiesce_files
        fi
        return
    fi

    local opts=$global_opts
    case $command in
        "")
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$global_opts -V --version" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            fi
            return
            ;;
        check) opts="$opts --mount --hook" ;;
        thaw) opts="$opts --mount" ;;
        hook)
            if [[ $cur != -* ]]; then
                case $prev in
                    hook | --mount | --max-freeze) ;;
                    qemu-ga) COMPREPLY=($(compgen -W "freeze thaw" -- "$cur")); return ;;
                    vmware) COMPREPLY=($(compgen -W "freeze freezeFail thaw" -- "$cur")); return ;;
                    gce) COMPREPLY=($(compgen -W "pre post" -- "$cur")); return ;;
                    aws-dlm) COMPREPLY=($(compgen -W "pre-script post-script dry-run" -- "$cur")); return ;;
                    *) return ;;
                esac
                [[ $prev == --mount || $prev == --max-freeze ]] || {
                    COMPREPLY=($(compgen -W "qemu-ga vmware gce aws-dlm" -- "$cur"))
                    return
                }
            fi
            opts="$opts --mount --max-freeze"
            ;;
        freeze | snapshot) opts="$opts --mount --max-freeze --" ;;
        recover) opts="$opts --retry" ;;
        pre | post | audit) ;;
        help)
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
            ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}

complete -F _quiesce quiesce
