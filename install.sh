#!/usr/bin/env bash
# Install mngr from this checkout for the current user:
#   - a virtual environment at ${XDG_DATA_HOME:-~/.local/share}/mngr/venv (non-editable),
#   - a link ~/.local/bin/mngr,
#   - the completion script for $SHELL (bash, zsh or fish), unless --no-completion.
# Running it again upgrades in place. `install.sh --uninstall` removes exactly what it added
# (listed in the manifest next to the venv); host data under the data directory is kept.
# MNGR_PYTHON=/path/to/python picks the interpreter (default: the first python3.11+ found).
set -euo pipefail

usage() {
    echo "usage: install.sh [--no-completion] [--with server,modal,provision] [--uninstall]"
}

completion=1
uninstall=0
extras=""
expect_extras=0
for arg in "$@"; do
    if ((expect_extras)); then
        extras=$arg
        expect_extras=0
        continue
    fi
    case "$arg" in
        --no-completion) completion=0 ;;
        --with) expect_extras=1 ;;
        --with=*) extras=${arg#--with=} ;;
        --uninstall) uninstall=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; echo "install.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
if ((expect_extras)); then
    usage >&2; echo "install.sh: --with needs a list of extras, e.g. --with server" >&2; exit 2
fi
if [[ -n $extras && ! $extras =~ ^(server|modal|provision)(,(server|modal|provision))*$ ]]; then
    echo "install.sh: unknown extras '$extras' (known: server, modal, provision)" >&2
    exit 2
fi

if [[ -z ${HOME:-} || ! -d $HOME ]]; then
    echo "install.sh: HOME is not set to an existing directory" >&2
    exit 1
fi

# pip (also the one venv runs to bootstrap itself) must leave nothing behind in HOME.
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
xdg_dir() { # VAR DEFAULT: a relative XDG value is ignored, as the spec (and mngr) say
    local value="${!1:-}"
    if [[ $value == /* ]]; then echo "$value"; else echo "$2"; fi
}
data_home="$(xdg_dir XDG_DATA_HOME "$HOME/.local/share")"
config_home="$(xdg_dir XDG_CONFIG_HOME "$HOME/.config")"
cache_dir="$(xdg_dir XDG_CACHE_HOME "$HOME/.cache")/mngr"
data_dir="$data_home/mngr"
venv="$data_dir/venv"
manifest="$data_dir/install-manifest"
bin_dir="$HOME/.local/bin"
link="$bin_dir/mngr"

say() { echo "mngr install: $*"; }
die() { echo "mngr install: error: $*" >&2; exit 1; }

# --- the manifest: one "KIND<TAB>PATH" line per thing this script created ------------------

record() { # KIND PATH
    if ! { [[ -f $manifest ]] && grep -qxF "$1"$'\t'"$2" "$manifest"; }; then
        printf '%s\t%s\n' "$1" "$2" >>"$manifest"
    fi
}

make_dir() { # create DIR and any missing parents, remembering each one created
    local dir="$1" missing=()
    while [[ ! -d $dir ]]; do
        missing=("$dir" ${missing[@]+"${missing[@]}"})  # (bash 3.2: empty array + set -u)
        dir="$(dirname "$dir")"
    done
    ((${#missing[@]})) || return 0
    mkdir -p -- "$1"
    local d
    for d in "${missing[@]}"; do record dir "$d"; done  # the data dir (manifest) is made first
}

# --- uninstall ------------------------------------------------------------------------------

if ((uninstall)); then
    if [[ ! -f $manifest ]]; then
        say "nothing to remove: no install manifest at $manifest"
        exit 0
    fi
    # What mngr made lives on after it: say so before the program that could list it goes.
    if [[ -x $venv/bin/mngr ]]; then
        # A list refreshes mngr's cache of host names: give it a throwaway one.
        scratch="$(mktemp -d)"
        hosts="$(XDG_CACHE_HOME="$scratch" "$venv/bin/mngr" --timeout 15 host list -q 2>/dev/null |
            tr '\n' ' ' || true)"
        rm -rf -- "$scratch"
        if [[ -n ${hosts// /} ]]; then
            say "kept: hosts that still exist and may still run (and cost): ${hosts% }"
        fi
    fi
    if [[ -f $config_home/mngr/settings.toml ]]; then
        say "kept: settings $config_home/mngr/settings.toml"
    fi
    say "kept: snapshots (docker images, AMIs, local archives) and any host data under $data_dir"
    if [[ -d $cache_dir ]]; then  # names for tab completion, rebuilt by any list
        rm -rf -- "$cache_dir"
        say "removed: cache $cache_dir"
    fi
    # Reverse order: files and links first, then the directories that held them.
    entries=()
    while IFS= read -r line; do entries=("$line" ${entries[@]+"${entries[@]}"}); done <"$manifest"
    for entry in ${entries[@]+"${entries[@]}"}; do
        kind="${entry%%$'\t'*}"
        path="${entry#*$'\t'}"
        case "$kind" in
            venv) # only ever the venv this script makes, and only if it is one
                if [[ $path == "$venv" && -f $path/pyvenv.cfg ]]; then
                    rm -rf -- "$path"
                    say "removed $path"
                fi
                ;;
            link)
                if [[ -L $path ]]; then rm -f -- "$path"; say "removed $path"; fi ;;
            file)
                if [[ -f $path ]]; then rm -f -- "$path"; say "removed $path"; fi ;;
        esac
    done
    rm -f -- "$manifest"
    for entry in ${entries[@]+"${entries[@]}"}; do
        kind="${entry%%$'\t'*}"
        path="${entry#*$'\t'}"
        if [[ $kind == dir && -d $path ]]; then
            if rmdir -- "$path" 2>/dev/null; then
                say "removed empty directory $path"
            else
                say "kept $path (not empty)"
            fi
        fi
    done
    say "uninstalled"
    exit 0
fi

# --- python -----------------------------------------------------------------------------------

is_new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

python=""
if [[ -n ${MNGR_PYTHON:-} ]]; then
    is_new_enough "$MNGR_PYTHON" ||
        die "MNGR_PYTHON=$MNGR_PYTHON is not a Python 3.11 or newer interpreter"
    python="$MNGR_PYTHON"
else
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 && is_new_enough "$candidate"; then
            python="$(command -v "$candidate")"
            break
        fi
    done
    [[ -n $python ]] || die "mngr needs Python 3.11 or newer, and none was found on PATH" \
        "(tried python3, python3.13, python3.12, python3.11); install one, or set MNGR_PYTHON"
fi
[[ -f $checkout/pyproject.toml ]] || die "$checkout does not look like a mngr checkout"

# --- the virtual environment ---------------------------------------------------------------

make_dir "$data_dir"
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv" ||
        die "could not create a virtual environment with $python (on Debian/Ubuntu: apt install python3-venv)"
    record venv "$venv"
    say "created virtual environment $venv (with $("$python" --version 2>&1))"
else
    record venv "$venv"
fi

# Build from a clean copy: an in-tree build would write build/ into the checkout and could
# ship stale files left there by an earlier build.
source_copy="$(mktemp -d)"
trap 'rm -rf -- "$source_copy"' EXIT
tar -C "$checkout" -cf - --exclude=.git --exclude=build --exclude=dist --exclude='*.egg-info' \
    --exclude=.venv --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache . |
    tar -C "$source_copy" -xf -
pip=("$venv/bin/python" -m pip --quiet)
# pip always reinstalls from a directory, so a second run picks up the checkout's changes.
target=$source_copy
[[ -z $extras ]] || target="$source_copy[$extras]"
"${pip[@]}" install "$target" || die "pip could not install mngr${extras:+[$extras]} from $checkout"
say "installed $("$venv/bin/mngr" --version) from $checkout into $venv"

# --- the command ------------------------------------------------------------------------------

make_dir "$bin_dir"
if [[ -L $link && "$(readlink "$link")" == "$venv/bin/mngr" ]]; then
    say "$link already links to $venv/bin/mngr"
elif [[ -e $link || -L $link ]]; then
    die "$link exists and is not mngr's link; remove it and run install.sh again"
else
    ln -s "$venv/bin/mngr" "$link"
    record link "$link"
    say "linked $link -> $venv/bin/mngr"
fi
case ":${PATH:-}:" in
    *":$bin_dir:"*) ;;
    *) say "note: $bin_dir is not on PATH; add it, e.g. export PATH=\"$bin_dir:\$PATH\"" ;;
esac

# --- completion -----------------------------------------------------------------------------

install_completion() { # SHELL TARGET
    local source_file="$checkout/completions/mngr.$1" target="$2"
    [[ -f $source_file ]] || die "missing $source_file"
    make_dir "$(dirname "$target")"
    if [[ -f $target ]] && ! grep -q "Generated by \`python -m mngr.completion_gen\`" "$target"; then
        say "kept $target: it was not written by mngr"
        return
    fi
    cp "$source_file" "$target"
    record file "$target"
    say "installed $1 completion: $target"
}

if ((completion)); then
    shell_name="$(basename "${SHELL:-}")"
    case "$shell_name" in
        bash)
            install_completion bash "$data_home/bash-completion/completions/mngr"
            say "note: bash-completion loads it in new shells; without bash-completion add" \
                "'source \"$data_home/bash-completion/completions/mngr\"' to ~/.bashrc"
            ;;
        zsh)
            zfunc="$data_home/zsh/site-functions"
            install_completion zsh "$zfunc/_mngr"
            say "note: add 'fpath=(\"$zfunc\" \$fpath)' to ~/.zshrc before compinit runs"
            ;;
        fish)
            install_completion fish "$config_home/fish/completions/mngr.fish"
            ;;
        *)
            say "no completion installed for shell '${shell_name:-unknown}';" \
                "'mngr completion bash|zsh|fish' prints a script"
            ;;
    esac
fi

say "done; try: $link --version"
