#!/usr/bin/env bash
# Run the atheris harnesses, each seeded with a corpus built from the samples.
#
# Usage: fuzz/run.sh RUNS [TARGET ...]
#   RUNS     inputs per harness (libFuzzer -runs); -1 runs until MAX_SECONDS
#   TARGET   b2mml, b2mml_fields, flatfile, x12, edifact (default: all)
# Environment:
#   PLANTBUS_SAMPLES  sample folder (default: ../shared/samples beside the repository)
#   MAX_SECONDS       stop each harness after this many seconds (default: no limit)
#   RSS_LIMIT_MB      memory limit per harness process in MiB (default: 2048)
#   TIMEOUT_SECONDS   limit for one input in seconds (default: 10)
#   FUZZ_OUT          folder for crash inputs and logs (default: a new temp folder)
#   FUZZ_KNOWN_ERRORS comma-separated exception class names to let pass, so that
#                     an open finding does not hide the next one (atheris has
#                     no working libFuzzer fork mode to go on after a crash)
# The corpus lives in a temp folder and is deleted at the end; findings stay
# in FUZZ_OUT.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-$repo/.venv/bin/python}"
samples="${PLANTBUS_SAMPLES:-$repo/../shared/samples}"
runs="${1:?usage: fuzz/run.sh RUNS [TARGET ...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(b2mml b2mml_fields flatfile x12 edifact)
fi
out="${FUZZ_OUT:-$(mktemp -d -t plantbus-fuzz-out.XXXXXX)}"
mkdir -p "$out"
corpus_root="$(mktemp -d -t plantbus-fuzz-corpus.XXXXXX)"
trap 'rm -rf "$corpus_root"' EXIT

seed() {
    # Fill the corpus folder of a target with seeds: the sample files of its
    # format, or inputs written here where the samples have none.
    local target="$1" folder="$corpus_root/$1"
    mkdir -p "$folder"
    case "$target" in
        b2mml_fields)
            # The harness reads the samples itself, so the seed bytes only
            # choose the elements to change and their new text.
            printf '\0\1\2\3' >"$folder/seed" ;;
        b2mml)
            find "$samples/b2mml/examples" -name '*.xml' -size -200k \
                -exec cp {} "$folder/" \; ;;
        x12)
            find "$samples/edi/x12" -name '*.txt' -exec cp {} "$folder/" \; ;;
        edifact)
            find "$samples/edi/edifact" -name '*.edi' -exec cp {} "$folder/" \; ;;
        flatfile)
            # The samples contain no CSV or fixed-width exports, so the seeds are
            # written here in the layouts that fuzz_flatfile.py declares.
            printf 'C;Auftrag;Artikel;Menge;ME;Ende\r\nC;WO-1;FG-1;1.234,5;kg;02.03.2026 14:05\r\nC;"WO;2";FG-\xe4;12,5;u;29.03.2026 02:30\r\n' \
                >"$folder/seed-csv"
            printf 'FWO-1      FG-1        12,500kg 20260302140500\nFWO-2      FG-2         3,000u  2026030215\n' \
                >"$folder/seed-fixed" ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    harness="$here/fuzz_$target.py"
    if [ ! -f "$harness" ]; then
        echo "skip $target: $harness does not exist" >&2
        continue
    fi
    seed "$target"
    options=(
        "-runs=$runs"
        "-rss_limit_mb=${RSS_LIMIT_MB:-2048}"
        "-timeout=${TIMEOUT_SECONDS:-10}"
        "-max_len=65536"
        "-artifact_prefix=$out/$target-"
        "-print_final_stats=1"
    )
    if [ -n "${MAX_SECONDS:-}" ]; then
        options+=("-max_total_time=$MAX_SECONDS")
    fi
    echo "== $target: $python $harness ${options[*]} <corpus>" >&2
    start=$(date +%s)
    if ! "$python" "$harness" "${options[@]}" "$corpus_root/$target" \
        >"$out/$target.log" 2>&1; then
        echo "!! $target found a failure; see $out/$target.log" >&2
        status=1
    fi
    echo "== $target: $(( $(date +%s) - start )) s; $(grep -E '^stat::number_of_executed_units' "$out/$target.log" || true)" >&2
done
echo "logs and findings: $out" >&2
exit $status
