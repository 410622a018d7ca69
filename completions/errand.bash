# bash completion for errand, errand-broker and errand-worker (installed by meson install into
# share/bash-completion/completions). Subcommands and options are read from the program's own
# --help, so they never fall behind it.

_errand_help_words() {  # PROGRAM [SUBCOMMAND]: the long options its --help lists
    "$@" --help 2>/dev/null | grep -oE -- '(^|[ ,])--[a-z][a-z0-9-]*' | tr -d ' ,' | sort -u
}

_errand_subcommands() {  # PROGRAM: the names under "Subcommands:" in its --help
    "$1" --help 2>/dev/null | awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {exit}'
}

_errand() {
    local cur prog sub word i
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prog=${COMP_WORDS[0]}
    # Past "--" the words are a job's command line: complete commands and files.
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ ${COMP_WORDS[i]} == -- ]]; then
            COMPREPLY=($(compgen -c -f -- "$cur"))
            return
        fi
    done
    case ${COMP_WORDS[COMP_CWORD - 1]} in
        --payload-file | --jsonl | --curve-server-key | --curve-key | --config | --db | --dir | --log-file)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        --state)
            COMPREPLY=($(compgen -W "scheduled ready running retrying succeeded dead cancelled expired blocked" -- "$cur"))
            return
            ;;
    esac
    sub=""
    if [[ ${prog##*/} == errand ]]; then
        local subs
        subs=$(_errand_subcommands "$prog")
        for ((i = 1; i < COMP_CWORD; i++)); do
            word=${COMP_WORDS[i]}
            if [[ $word != -* ]] && grep -qx -- "$word" <<<"$subs"; then
                sub=$word
                break
            fi
        done
        if [[ -z $sub && $cur != -* ]]; then
            COMPREPLY=($(compgen -W "$subs" -- "$cur"))
            return
        fi
    fi
    if [[ -n $sub ]]; then
        COMPREPLY=($(compgen -W "$({ _errand_help_words "$prog" "$sub"; _errand_help_words "$prog"; } | sort -u)" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_errand_help_words "$prog")" -- "$cur"))
    fi
}

complete -F _errand errand errand-broker errand-worker
