#!/bin/sh
# The paper's Table 1 for the default model (docs/eval.md, "The full table"): full MMLU (5-shot),
# ARC-Easy and ARC-Challenge test sets (0-shot) for five variants, one resumable command each.
# Re-run after any stop: each command skips the questions already in its samples files.
#   OUT: where each variant's run lives (OUT/<label>/); TQM: where the containers are written.
#   LIMIT / SAMPLE: lm-eval --limit / our --sample for a quicker table (empty: full test sets).
#   EXTRA: more flags for every `tinyqmoe eval` (e.g. "--workers 2 --threads 1").
# Prompts run with f32 activations (--prefill-path f32): the table compares weight quantization, and the
# compressed containers then give the 8-bit run's answers exactly (they hold the same int8 weights).
# The 4-bit (uint4) container multiplies int8 activations whatever --prefill-path says (docs/eval.md):
# its run takes --prefill-path int8, the same values through the int8 panel (3-4x the row tiles' speed on
# long prompts) within float rounding.
set -e
BIN=${BIN:-.venv/bin}
OUT=${OUT:-benchmarks/eval_results/full}
TQM=${TQM:-eval-out/models}
TASKS=arc_challenge,arc_easy,mmlu
LIM="${LIMIT:+--limit $LIMIT} ${SAMPLE:+--sample $SAMPLE} ${EXTRA:-}"
SEL="--prefill-path f32 $LIM"
mkdir -p "$TQM"
[ -f "$TQM/smol-lzw.tqm" ]  || $BIN/tinyqmoe compress default -o "$TQM/smol-lzw.tqm" --bits 8 --codec lzw
[ -f "$TQM/smol-zstd.tqm" ] || $BIN/tinyqmoe compress default -o "$TQM/smol-zstd.tqm" --bits 8 --codec zstd
[ -f "$TQM/smol-4bit.tqm" ] || $BIN/tinyqmoe compress default -o "$TQM/smol-4bit.tqm" --bits 4 --group 32
$BIN/tinyqmoe eval default:f32  --tasks $TASKS $SEL --output "$OUT/Original"
$BIN/tinyqmoe eval default:int8 --tasks $TASKS $SEL --output "$OUT/8-bit"
$BIN/tinyqmoe eval "$TQM/smol-lzw.tqm"  --tasks $TASKS $SEL --output "$OUT/Compressed-LZW"
$BIN/tinyqmoe eval "$TQM/smol-zstd.tqm" --tasks $TASKS $SEL --output "$OUT/Compressed-zstd"
$BIN/tinyqmoe eval "$TQM/smol-4bit.tqm" --tasks $TASKS --prefill-path int8 $LIM --output "$OUT/4-bit-g32"
# The table: the scoring is done above, so this only pairs the stored samples (each run keeps its own
# --prefill-path, recorded in its run.json).
$BIN/tinyqmoe eval --compare Original=default:f32 8-bit=default:int8 "Compressed-LZW=$TQM/smol-lzw.tqm" \
    "Compressed-zstd=$TQM/smol-zstd.tqm" "4-bit-g32=$TQM/smol-4bit.tqm" --tasks $TASKS $LIM \
    --output "$OUT/table" --variants-dir "$OUT"
